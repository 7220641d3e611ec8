"""TFLite input: .tflite -> OpenVINO IR in a bundle (no extra package), -> ONNX via the 'tflite' extra.

The model is MediaPipe's BlazePose GHUM full (the ``blazepose_tflite`` session fixture fetches it), so these
run a real NHWC, depthwise-heavy, fp16-weight TFLite graph, not a toy.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from heatdeploy.bundle import Bundle
from heatdeploy.cli import app
from heatdeploy.exporters.tflite import TfliteError, tflite_to_onnx, tflite_to_openvino
from heatdeploy.models.blazepose import blazepose_images, blazepose_spec, blazepose_spec_dict

ov = pytest.importorskip("openvino")
pytestmark = pytest.mark.openvino
runner = CliRunner()
OUTPUTS = {"Identity": (195,), "Identity_1": (1,), "Identity_2": (256, 256, 1), "Identity_3": (64, 64, 39),
           "Identity_4": (117,)}


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("bpspec") / "spec.json"
    p.write_text(json.dumps(blazepose_spec_dict()))
    return p


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Four real frames as the model's input (RGB in [0, 1], NHWC)."""
    images, _ = blazepose_images(4, seed=7)
    return np.stack([im[..., ::-1] for im in images]).astype(np.float32) / 255


def _direct(tflite: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """OpenVINO f32 on the .tflite itself, one frame at a time (its batch is 1)."""
    cm = ov.Core().compile_model(ov.convert_model(str(tflite)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    runs = [{k.get_any_name(): v for k, v in cm(x[i:i + 1]).items()} for i in range(len(x))]
    return {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}

ErrorLine = Callable[..., str]  # the cli_error_line fixture (tests/conftest.py)


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_openvino_bundle_matches_direct_openvino(blazepose_tflite: Path, spec_file: Path, tmp_path: Path,
                                                      frames: np.ndarray) -> None:
    out = tmp_path / "bundle"
    res = _invoke("export", blazepose_tflite, "--spec", spec_file, "--format", "openvino", "--out", out)
    assert res.exit_code == 0, res.output
    bundle = Bundle.load(out)  # verifies the xml and bin hashes
    assert [a.name for a in bundle.artifacts] == ["openvino-fp32"]
    art = bundle.artifacts[0]
    assert art.backend == "openvino" and art.notes["source"] == "tflite" and art.notes["dynamic_batch"]
    assert bundle.info["source_format"] == "tflite" and bundle.spec == blazepose_spec()
    assert max(art.notes["check"]["max_abs_diff"].values()) == 0.0

    from heatdeploy.exporters.openvino import read_ir_spec
    from heatdeploy.runtime.backends.openvino import load

    assert read_ir_spec(bundle.path_of(art)) == bundle.spec
    backend = load(bundle.path_of(art))
    assert backend.inference_precision == "f32"
    got = backend.infer({"input_1": frames})  # the whole batch at once: the IR's batch is dynamic
    want = _direct(blazepose_tflite, frames)
    for name, shape in OUTPUTS.items():
        assert got[name].shape == (len(frames), *shape)
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-4 * (1 + np.abs(want[name]).max()))


def test_tflite_to_openvino_fp16_file(blazepose_tflite: Path, tmp_path: Path, frames: np.ndarray) -> None:
    xml = tflite_to_openvino(blazepose_tflite, tmp_path / "ir" / "pose.xml", spec=blazepose_spec(), precision="fp16")
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in xml.parent.iterdir()) == ["pose.bin", "pose.xml"]  # no temporary left
    assert xml.with_suffix(".bin").stat().st_size < 1.2 * blazepose_tflite.stat().st_size  # f16 weights (f32: 2x)
    cm = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = {k.get_any_name(): v for k, v in cm(frames[:1]).items()}
    want = _direct(blazepose_tflite, frames[:1])
    assert np.abs(got["Identity"] - want["Identity"])[0].reshape(39, 5)[:33, :2].max() < 1.0  # px


def test_missing_spec_is_one_line(cli_error_line: ErrorLine, blazepose_tflite: Path, tmp_path: Path) -> None:
    line = cli_error_line("export", blazepose_tflite, "--format", "openvino", "--out", tmp_path / "b")
    assert str(blazepose_tflite) in line and "--spec" in line and "heatdeploy spec infer" in line
    assert not (tmp_path / "b").exists()


def test_not_a_tflite_fails_clearly(cli_error_line: ErrorLine, spec_file: Path, tmp_path: Path) -> None:
    fake = tmp_path / "model.tflite"
    fake.write_bytes(b"PK\x03\x04 this is a zip, not a flatbuffer")
    for fmt in ("openvino", "onnx"):
        line = cli_error_line("export", fake, "--spec", spec_file, "--format", fmt, "--out", tmp_path / "b")
        assert str(fake) in line and "not a TFLite model" in line
    with pytest.raises(TfliteError, match="not a TFLite model"):
        tflite_to_openvino(fake, tmp_path / "x.xml")
    line = cli_error_line("export", tmp_path / "none.tflite", "--spec", spec_file, "--out", tmp_path / "b")
    assert "no such .tflite file" in line
    assert not (tmp_path / "b").exists()


def test_missing_converter_names_the_extra(cli_error_line: ErrorLine, blazepose_tflite: Path, spec_file: Path,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tflite2onnx", None)  # import fails as if not installed
    line = cli_error_line("export", blazepose_tflite, "--spec", spec_file, "--format", "onnx",
                          "--out", tmp_path / "b")
    assert line == (f"error: {blazepose_tflite}: converting TFLite to ONNX needs the 'tflite' extra: pip install "
                    "'heatdeploy[tflite]' (or use --format openvino, which reads .tflite directly)")
    assert not (tmp_path / "b").exists()


def test_onnx_conversion_matches_openvino(blazepose_tflite: Path, tmp_path: Path, frames: np.ndarray) -> None:
    pytest.importorskip("tflite2onnx", reason="the 'tflite' extra is not installed")
    ort = pytest.importorskip("onnxruntime")
    from heatdeploy.exporters.onnx import read_spec

    out = tmp_path / "pose.onnx"
    report = tflite_to_onnx(blazepose_tflite, out, spec=blazepose_spec())
    assert read_spec(out) == blazepose_spec() and report["opset"] == 17
    assert any("batch dimension made dynamic" in n for n in report["notes"]), report["notes"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in sess.get_inputs()] == [("input_1", ["N", 256, 256, 3])]
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input_1": frames}), strict=True))
    want = _direct(blazepose_tflite, frames)
    for name, shape in OUTPUTS.items():
        assert got[name].shape == (len(frames), *shape)
    body = (got["Identity"] - want["Identity"]).reshape(-1, 39, 5)[:, :33, :2]
    assert np.abs(body).max() < 0.01  # px
    assert np.abs(got["Identity_1"] - want["Identity_1"]).max() < 1e-5
    assert np.abs(got["Identity_3"] - want["Identity_3"]).max() < 1e-3


def test_cli_onnx_bundle(blazepose_tflite: Path, spec_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("tflite2onnx", reason="the 'tflite' extra is not installed")
    out = tmp_path / "bundle"
    res = _invoke("export", blazepose_tflite, "--spec", spec_file, "--format", "onnx", "--out", out)
    assert res.exit_code == 0, res.output
    art = Bundle.load(out).artifact("onnx-fp32")
    assert art.notes["converter"].startswith("tflite2onnx") and art.notes["imported_from"] == str(blazepose_tflite)


@pytest.mark.slow
def test_cli_openvino_int8_bundle(blazepose_tflite: Path, spec_file: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """INT8 through NNCF from the .tflite: openvino-fp32 (the parity reference) and openvino-int8."""
    pytest.importorskip("nncf")
    from heatdeploy.models.blazepose import write_blazepose_images

    monkeypatch.setenv("HEATDEPLOY_CACHE", str(tmp_path / "cache"))
    calib = tmp_path / "calib"
    write_blazepose_images(calib, 12, seed=0)
    out = tmp_path / "bundle"
    res = _invoke("export", blazepose_tflite, "--spec", spec_file, "--format", "openvino", "--precision", "int8",
                  "--calib", calib, "--out", out)
    assert res.exit_code == 0, res.output
    bundle = Bundle.load(out)
    assert [a.name for a in bundle.artifacts] == ["openvino-fp32", "openvino-int8"]
    int8 = bundle.artifact("openvino-int8")
    assert int8.calibration["calibration"]["kind"] == "folder" and int8.calibration["calibration"]["count"] == 12
    # the float part's precision is a measured choice (f32 unless bf16 holds the gate there), recorded in both
    assert int8.notes["inference_precision"] == int8.calibration["float_part"]["rt_precision"] and "nncf" in int8.tools
    assert "INT8" in res.output
