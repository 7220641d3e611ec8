""".tflite -> OpenVINO INT8 gets the ``auto`` float scope (through the .tflite's ONNX), or says why not."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.openvino
pytest.importorskip("openvino", reason="openvino is not installed: pip install 'heatdeploy[openvino]'")
pytest.importorskip("nncf", reason="nncf is not installed: pip install 'heatdeploy[openvino]'")


@pytest.fixture
def tflite_bundle(blazepose_tflite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    from heatdeploy.bundle import Bundle
    from heatdeploy.models.blazepose import blazepose_spec, write_blazepose_images

    monkeypatch.setenv("HEATDEPLOY_CACHE", str(tmp_path / "cache"))
    calib = tmp_path / "calib"
    write_blazepose_images(calib, 8, seed=0)
    root = tmp_path / "bundle"
    Bundle.create(root, blazepose_spec()).save()
    return root, calib


@pytest.mark.slow
def test_tflite_int8_default_measures_sensitivity(blazepose_tflite: Path, tflite_bundle: tuple[Path, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tflite2onnx")
    import heatdeploy.calibration.sensitivity_scope as scope_mod
    from heatdeploy.exporters.tflite import add_tflite_openvino_artifact

    real = scope_mod.sensitive_onnx_nodes
    monkeypatch.setattr(scope_mod, "sensitive_onnx_nodes",  # a short pass: 1 batch, 20 layers
                        lambda path, spec, source: real(path, spec, source, sensitivity_batches=1,
                                                        sensitivity_max_layers=20))
    root, calib = tflite_bundle
    art = add_tflite_openvino_artifact(root, blazepose_tflite, "int8", calib=str(calib), calib_size=8)
    cal = art.calibration
    assert cal["options"]["keep_fp32"] == "auto"
    assert "tflite2onnx" in cal["notes"][0] and any("ORT per-layer sensitivity" in n for n in cal["notes"])
    assert any(why.startswith("ORT ") for why in cal["excluded"].values())  # measured layers reached NNCF


def test_tflite_int8_without_onnx_says_base(blazepose_tflite: Path, tflite_bundle: tuple[Path, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import heatdeploy.exporters.tflite as tfl

    def no_converter(path: object, *a: object, **k: object) -> None:
        raise tfl.TfliteError(f"{path}: ONNX from .tflite needs the 'tflite' extra")

    monkeypatch.setattr(tfl, "tflite_to_onnx", no_converter)
    root, calib = tflite_bundle
    art = tfl.add_tflite_openvino_artifact(root, blazepose_tflite, "int8", calib=str(calib), calib_size=8)
    note = art.calibration["notes"][0]
    assert "base scope" in note and "'tflite' extra" in note and "\n" not in note
    assert not any(why.startswith("ORT ") for why in art.calibration["excluded"].values())
