"""Models trained elsewhere, through the CLI: a fixed-batch-1 ONNX (what tf2onnx writes) through export, run,
parity and ``--format openvino``, and a ``.tflite --format openvino`` bundle's parity (no onnx-fp32 in it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from heatdeploy.bundle import Bundle
from heatdeploy.cli import app

pytest.importorskip("onnx")
if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the shared tiny model lives in tests/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
runner = CliRunner()
N_IMAGES = 5  # not a multiple of any batch below but 1, so the last chunk is padded


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A batch-1 ONNX, its spec and N_IMAGES images with a bright blob each (so keypoints differ per image)."""
    from tiny_onnx import build_tiny_onnx, tiny_spec

    root = tmp_path_factory.mktemp("fixed")
    model = build_tiny_onnx(root / "fixed.onnx", batch=1)
    spec = root / "spec.json"
    spec.write_text(tiny_spec("fixed").to_json())
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i in range(N_IMAGES):
        im = rng.integers(0, 120, (90, 70, 3), dtype=np.uint8)
        cv2.circle(im, (int(rng.integers(10, 60)), int(rng.integers(10, 80))), 6, (255, 255, 255), -1)
        cv2.imwrite(str(images / f"im{i}.png"), im)
    return {"model": model, "spec": spec, "images": images}


def _records(bundle: Path, images: Path, *extra: object) -> list[dict]:
    res = _invoke("run", bundle, images, "--json", *extra)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_graph_is_fixed_batch(fixed: dict[str, Path]) -> None:
    """The fixture really hard-codes batch 1: the bare engine refuses a batch of 2 (what the runtime chunks)."""
    from heatdeploy.runtime.backends.base import BackendError, load_backend

    backend = load_backend("onnxruntime", str(fixed["model"]))
    with pytest.raises(BackendError):
        backend.infer({"image": np.zeros((2, 3, 64, 48), np.float32)})
    assert backend.input_shapes["image"][0] == 1


@pytest.fixture(scope="module")
def int8_bundle(fixed: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fixed_bundle") / "bundle"
    res = _invoke("export", fixed["model"], "--spec", fixed["spec"], "--precision", "int8", "--calib",
                  fixed["images"], "--out", out, "--budget-s", "60")
    assert res.exit_code == 0, res.output
    assert {a.name for a in Bundle.load(out).artifacts} >= {"onnx-fp32", "onnx-int8"}
    return out


def test_run_any_batch_on_fixed_batch_graph(int8_bundle: Path, fixed: dict[str, Path]) -> None:
    """Batches of 4 (one full chunk + a padded one) and 8 give the frame-by-frame keypoints, one record each."""
    one = _records(int8_bundle, fixed["images"], "--batch", "1", "--artifact", "onnx-fp32")
    assert len(one) == N_IMAGES
    xy = [[(k["x"], k["y"]) for k in r["keypoints"]] for r in one]
    assert len({tuple(map(tuple, p)) for p in xy}) > 1  # not every image gives the same keypoints
    for batch in ("4", "8"):
        assert _records(int8_bundle, fixed["images"], "--batch", batch, "--artifact", "onnx-fp32") == one


def test_parity_int8_on_fixed_batch_graph(int8_bundle: Path, fixed: dict[str, Path], tmp_path: Path) -> None:
    res = _invoke("parity", int8_bundle, "--candidate", "onnx-int8", "--data", fixed["images"], "--batch", "3",
                  "--no-floor")
    assert res.exit_code in (0, 1), res.output  # a verdict, not "could not run"
    assert f"onnx-int8 vs onnx-fp32 (default) on {N_IMAGES} images" in res.output


def test_parity_batch_must_be_positive(int8_bundle: Path, fixed: dict[str, Path]) -> None:
    res = _invoke("parity", int8_bundle, "--candidate", "onnx-int8", "--data", fixed["images"], "--batch", "0")
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "batch" in lines[0], res.output


@pytest.mark.openvino
def test_openvino_export_keeps_fixed_batch(fixed: dict[str, Path], tmp_path: Path) -> None:
    """--format openvino (INT8 through NNCF) on a batch-1 graph: the IRs keep batch 1, the export's checks and
    float-part choice run, the FP32 IR runs 5 frames as ORT does, and parity of the INT8 IR gives a verdict."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    out = tmp_path / "bundle"
    res = _invoke("export", fixed["model"], "--spec", fixed["spec"], "--format", "openvino", "--precision", "int8",
                  "--calib", fixed["images"], "--out", out)
    assert res.exit_code == 0, res.output
    bundle = Bundle.load(out)
    assert bundle.artifact("openvino-fp32").notes["dynamic_batch"] is False
    assert bundle.artifact("openvino-int8").notes["dynamic_batch"] is False
    res = _invoke("parity", out, "--candidate", "openvino-int8", "--data", fixed["images"], "--batch", "4",
                  "--no-floor")
    assert res.exit_code in (0, 1) and f"on {N_IMAGES} images" in res.output, res.output
    ov_records = _records(out, fixed["images"], "--artifact", "openvino-fp32", "--batch", "4")
    ort_records = _records(out, fixed["images"], "--artifact", "onnx-fp32", "--batch", "1")
    assert len(ov_records) == N_IMAGES
    got = np.array([[(k["x"], k["y"]) for k in r["keypoints"]] for r in ov_records])
    want = np.array([[(k["x"], k["y"]) for k in r["keypoints"]] for r in ort_records])
    np.testing.assert_allclose(got, want, atol=0.02)


@pytest.mark.openvino
def test_tflite_openvino_bundle_parity_falls_back_to_its_fp32(blazepose_tflite: Path, tmp_path: Path) -> None:
    """A .tflite --format openvino bundle has no onnx-fp32: parity's default reference is its openvino-fp32,
    and a reference it lacks is refused naming the FP32 artifacts it has."""
    pytest.importorskip("openvino")
    from heatdeploy.models.blazepose import blazepose_spec_dict, write_blazepose_images

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(blazepose_spec_dict()))
    images = tmp_path / "images"
    write_blazepose_images(images, 4, seed=0)
    out = tmp_path / "bundle"
    res = _invoke("export", blazepose_tflite, "--spec", spec, "--format", "openvino", "--precision", "fp16",
                  "--out", out)
    assert res.exit_code == 0, res.output
    assert [a.name for a in Bundle.load(out).artifacts] == ["openvino-fp32", "openvino-fp16"]
    res = _invoke("parity", out, "--candidate", "openvino-fp16", "--data", images, "--no-floor")
    assert res.exit_code == 0, res.output
    assert "openvino-fp16 vs openvino-fp32" in res.output
    res = _invoke("parity", out, "--candidate", "openvino-fp16", "--data", images, "--reference", "onnx-nope")
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "onnx-nope" in lines[0] and "openvino-fp32" in lines[0] and "--reference" in lines[0]


def test_fixed_batch_2_pads_the_last_chunk(fixed: dict[str, Path], tmp_path: Path) -> None:
    """A graph fixed at batch 2 given 1, 3 and 5 frames: the last chunk is padded, the padding dropped, and every
    frame's keypoints are what the dynamic-batch graph (same weights) gives."""
    import onnx
    from tiny_onnx import build_tiny_onnx, tiny_spec

    from heatdeploy.runtime import Pipeline
    from heatdeploy.spec import METADATA_KEY

    paths = {}
    for name, batch in (("fixed2", 2), ("dynamic", "N")):
        path = build_tiny_onnx(tmp_path / f"{name}.onnx", batch=batch)
        model = onnx.load(str(path))
        onnx.helper.set_model_props(model, {METADATA_KEY: tiny_spec(name).to_json()})
        onnx.save(model, str(path))
        paths[name] = path
    two, dyn = Pipeline.load(paths["fixed2"]), Pipeline.load(paths["dynamic"])
    assert two.fixed_batch == 2 and dyn.fixed_batch is None
    images = sorted(fixed["images"].glob("*.png"))
    for n in (1, 3, 5):
        got, want = two.predict(images[:n], batch_size=8), dyn.predict(images[:n], batch_size=8)
        assert got.keypoints.shape == (n, 3, 2) and got.outputs["heatmaps"].shape[0] == n
        np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-4)
        np.testing.assert_allclose(got.presence, want.presence, atol=1e-5)
