import json
import shutil

import pytest

from heatdeploy.bundle import Bundle, BundleError, staged_dir
from heatdeploy.fsutil import sha256_file


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
    with pytest.raises(BundleError, match="does not match the manifest"):
        Bundle.load(dst)


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


def test_staged_dir_keeps_old_bundle_on_failure(tmp_path):
    final = tmp_path / "bundle"
    final.mkdir()
    (final / "keep").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_dir(final):
            raise RuntimeError("interrupted")
    assert (final / "keep").read_text() == "old"
