import json
import shutil

import numpy as np
import pytest

from heatdeploy.bundle import Bundle, BundleError, staged_dir
from heatdeploy.fsutil import sha256_file
from heatdeploy.runtime import Pipeline


def test_manifest_lists_hashes(random_reference_bundle):
    b = Bundle.load(random_reference_bundle)
    art = b.artifact(precision="fp32")
    assert art.format == "onnx" and art.backend == "onnxruntime"
    assert art.sha256 == sha256_file(b.path_of(art))
    assert art.notes["opset"] == 17
    assert max(art.notes["max_abs_diff_vs_torch"].values()) < 1e-3


def _copy(src, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    return dst


def test_hash_mismatch_is_refused(random_reference_bundle, tmp_path):
    dst = _copy(random_reference_bundle, tmp_path)
    with open(dst / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    b = Bundle.load(dst)  # loading reads the manifest; the artifact is hashed when it is used
    with pytest.raises(BundleError, match="does not match the manifest"):
        b.path_of(b.artifact("onnx-fp32"))
    with pytest.raises(BundleError, match="does not match the manifest"):
        Pipeline.load(dst)
    with pytest.raises(BundleError, match="does not match the manifest"):
        b.verify()


def test_broken_int8_does_not_stop_fp32(random_reference_bundle, tmp_path):
    dst = _copy(random_reference_bundle, tmp_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    Bundle.load(dst).add_file(junk, "model.int8.onnx", name="onnx-int8", format="onnx", precision="int8",
                              backend="onnxruntime")
    (dst / "model.int8.onnx").write_bytes(b"changed after the manifest")
    pred = Pipeline.load(dst).predict([np.zeros((64, 48, 3), np.uint8)])
    assert np.isfinite(pred.keypoints).all()
    with pytest.raises(BundleError, match="does not match the manifest"):
        Pipeline.load(dst, artifact="onnx-int8")


def test_issue_repro_interrupted_add_file_keeps_the_bundle(random_reference_bundle, tmp_path, monkeypatch):
    """Issue 14: the second atomic_copy inside Bundle.add_file raising KeyboardInterrupt bricked the bundle."""
    from heatdeploy import fsutil

    dst = _copy(random_reference_bundle, tmp_path)
    src = tmp_path / "a.onnx"
    shutil.copy(dst / "model.onnx", src)
    extra = tmp_path / "calibration.json"
    extra.write_text("{}")
    kw = dict(name="onnx-int8", format="onnx", precision="int8", backend="onnxruntime",
              extra={"calibration.json": extra})
    Bundle.load(dst).add_file(src, "model.int8.onnx", **kw)
    before = Bundle.load(dst).artifact("onnx-int8")
    src.write_bytes(src.read_bytes() + b"\0")  # a different INT8 the second time
    calls = []
    real = fsutil.atomic_copy

    def second_raises(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(fsutil, "atomic_copy", second_raises)
    with pytest.raises(KeyboardInterrupt):
        Bundle.load(dst).add_file(src, "model.int8.onnx", **kw)
    monkeypatch.undo()
    b = Bundle.load(dst)
    b.verify()  # FP32 and the old INT8 both intact
    assert b.artifact("onnx-int8") == before
    Pipeline.load(dst)
    Bundle.load(dst).add_file(src, "model.int8.onnx", **kw)  # and the next change goes through
    b = Bundle.load(dst)
    b.verify()
    assert b.artifact("onnx-int8").sha256 == fsutil.sha256_file(src)
    assert sorted(p.name for p in dst.iterdir()) == sorted(
        {"manifest.json", *(r.split("/")[0] for r in b.referenced())})


@pytest.mark.parametrize("bad", ["../outside.onnx", "/etc/passwd", "a/../../x"])
def test_paths_may_not_leave_bundle(random_reference_bundle, tmp_path, bad):
    dst = _copy(random_reference_bundle, tmp_path)
    m = json.loads((dst / "manifest.json").read_text())
    m["artifacts"][0]["path"] = bad
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="leaves the bundle"):
        Bundle.load(dst, verify=False)


def test_symlink_out_of_bundle_is_refused(random_reference_bundle, tmp_path):
    dst = _copy(random_reference_bundle, tmp_path)
    outside = tmp_path / "outside.onnx"
    shutil.copy(dst / "model.onnx", outside)
    (dst / "model.onnx").unlink()
    (dst / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle"):
        Bundle.load(dst)


def test_missing_manifest(tmp_path):
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.load(tmp_path)


def test_staged_dir_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "bundle"
    with pytest.raises(RuntimeError):
        with staged_dir(final) as tmp:
            (tmp / "half.onnx").write_bytes(b"x")
            raise RuntimeError("interrupted")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_staged_dir_keeps_old_bundle_on_failure(random_reference_bundle, tmp_path):
    final = _copy(random_reference_bundle, tmp_path)
    before = sorted(p.name for p in final.iterdir())
    with pytest.raises(RuntimeError):
        with staged_dir(final):
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in final.iterdir()) == before
    Bundle.load(final).verify()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_info_edited_in_place_is_saved_and_keeps_other_keys(random_reference_bundle, tmp_path):
    """The manifest snapshot must not alias the live ``info`` dict, or an in-place edit looks unchanged."""
    root = tmp_path / "b"
    shutil.copytree(random_reference_bundle, root)
    before = dict(Bundle.load(root).info)
    b = Bundle.load(root)
    b.info["deploy"] = {"artifact": "onnx-fp32"}
    b.save()
    after = Bundle.load(root).info
    assert after["deploy"] == {"artifact": "onnx-fp32"}
    assert {k: after[k] for k in before} == before
