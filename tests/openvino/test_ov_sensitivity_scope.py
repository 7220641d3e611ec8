"""OpenVINO INT8 ``keep_fp32="auto"``: the ORT sensitivity pass's FP32 nodes, found in the IR by name."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.openvino
ov = pytest.importorskip("openvino", reason="openvino is not installed: pip install 'heatdeploy[openvino]'")
pytest.importorskip("nncf", reason="nncf is not installed: pip install 'heatdeploy[openvino]'")

from heatdeploy.bundle import Bundle  # noqa: E402
from heatdeploy.calibration.graph import COMPUTE_OPS  # noqa: E402
from heatdeploy.calibration.nncf_quantize import COMPUTE_TYPES, float_scope, layer_precisions  # noqa: E402
from heatdeploy.calibration.sensitivity_scope import ir_names, sensitive_onnx_nodes  # noqa: E402
from heatdeploy.calibration.sources import open_source  # noqa: E402
from heatdeploy.exporters.openvino import add_openvino_artifact  # noqa: E402


def _onnx(root: Path) -> Path:
    b = Bundle.load(root)
    return b.path_of(b.artifact("onnx-fp32"))


def test_every_sensitive_conv_is_found_in_the_ir(tiny_bundle: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A threshold below zero keeps every layer FP32; each ONNX conv maps to its IR Convolution, with the reason."""
    import onnx

    monkeypatch.setenv("HEATDEPLOY_CACHE", str(tmp_path / "cache"))
    onnx_path = _onnx(tiny_bundle)
    spec = Bundle.load(tiny_bundle).spec
    nodes, note = sensitive_onnx_nodes(onnx_path, spec, open_source(spec, "synthetic", size=16, seed=0),
                                       sensitivity_threshold=-1.0)
    convs = {n.name for n in onnx.load(str(onnx_path)).graph.node if n.op_type in COMPUTE_OPS}
    sensitive_convs = convs & set(nodes)  # every conv but the heads' last ones (FP32 by the base rule anyway)
    assert {"conv1", "conv2"} <= sensitive_convs and all(why.startswith("sensitivity") for why in nodes.values())
    assert "ORT per-layer sensitivity" in note and f"{len(nodes)} ONNX nodes kept float" in note
    model = ov.convert_model(str(onnx_path))
    names = ir_names(model, onnx_path, nodes)
    ir_convs = {op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in COMPUTE_TYPES}
    # the IR's layers themselves, not only their bias Adds (a ConvTranspose's layer has a generated name)
    assert len(ir_convs & set(names)) == len(sensitive_convs), (sorted(sensitive_convs), sorted(names))
    assert {"conv1/WithoutBiases", "conv2/WithoutBiases"} <= set(names)
    assert all(why.startswith("ORT sensitivity") for why in names.values())
    scope = float_scope(model, names)  # a name -> reason mapping: the reasons reach the record
    assert all(scope[n] == names[n] for n in names)


def test_auto_keeps_sensitive_layers_float_in_the_int8_ir(tiny_bundle: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """With every layer measured as sensitive, ``auto`` leaves no quantized conv; ``base`` quantizes them."""
    import heatdeploy.calibration.sensitivity_scope as scope_mod

    monkeypatch.setenv("HEATDEPLOY_CACHE", str(tmp_path / "cache"))
    real = scope_mod.sensitive_onnx_nodes
    monkeypatch.setattr(scope_mod, "sensitive_onnx_nodes",
                        lambda path, spec, source: real(path, spec, source, sensitivity_threshold=-1.0))
    auto = add_openvino_artifact(tiny_bundle, "int8", calib="synthetic", calib_size=16)
    assert auto.calibration["options"]["keep_fp32"] == "auto"
    assert any("ORT per-layer sensitivity" in n for n in auto.calibration["notes"])
    ir = ov.Core().read_model(str(Bundle.load(tiny_bundle).path_of(auto)))
    assert "int8" not in set(layer_precisions(ir).values())
    base = add_openvino_artifact(tiny_bundle, "int8", calib="synthetic", calib_size=16, keep_fp32="base")
    ir = ov.Core().read_model(str(Bundle.load(tiny_bundle).path_of(base)))
    assert "int8" in set(layer_precisions(ir).values())


@pytest.mark.parametrize("error", [ImportError("No module named 'onnxruntime'"), RuntimeError("shape inference")])
def test_auto_falls_back_to_base_when_ort_cannot_measure(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch,
                                                         error: Exception) -> None:
    """An OpenVINO-only install (or a graph ORT refuses) still exports INT8, with the base scope and a note."""
    import heatdeploy.calibration.sensitivity_scope as scope_mod

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(scope_mod, "sensitive_onnx_nodes", fail)
    art = add_openvino_artifact(tiny_bundle, "int8", calib="synthetic", calib_size=8)
    notes = art.calibration["notes"]
    assert any("keep_fp32=auto used the base scope" in n and str(error) in n for n in notes), notes
    ir = ov.Core().read_model(str(Bundle.load(tiny_bundle).path_of(art)))
    assert "int8" in set(layer_precisions(ir).values())
