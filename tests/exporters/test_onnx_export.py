"""torch -> ONNX: opset honoured, names/batch/spec right, parity measured, nothing written on failure."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from heatdeploy.exporters.onnx import (
    OnnxExportError,
    OnnxFileError,
    check_spec_against_graph,
    default_opset,
    embed_spec,
    export_onnx,
    read_spec,
)
from heatdeploy.spec import METADATA_KEY, ExistenceSpec, HeatmapSpec, InputSpec, SpecError

HERE = Path(__file__).parent
if str(HERE) not in sys.path:  # the helper is imported by name whatever pytest's import mode
    sys.path.insert(0, str(HERE))
import tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    spec = tiny_model.tiny_spec()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    report = export_onnx(tiny_model.build(), spec, path, opset=17)
    return report, path, spec


def _run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"image": x}), strict=True))


def test_opset17_uses_torchscript_and_file_declares_17(exported) -> None:
    report, path, _ = exported
    proto = onnx.load(str(path))
    assert report.opset == 17 and report.exporter == "torchscript"
    assert default_opset(proto) == 17
    onnx.checker.check_model(proto)
    # portable: only standard operators, and no unused vendor domains left declared by the optimiser
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert {imp.domain for imp in proto.opset_import} <= {"", "ai.onnx"}
    assert report.num_nodes == len(proto.graph.node)
    assert report.path == path and set(report.tools) >= {"torch", "onnx", "onnxruntime"}


def test_names_and_dynamic_batch(exported) -> None:
    _, path, spec = exported
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == list(spec.output_names) == ["heatmaps", "existence"]
    for v in [*proto.graph.input, *proto.graph.output]:
        assert v.type.tensor_type.shape.dim[0].dim_param == "N"
    model = tiny_model.build().eval()
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal((n, 3, 32, 32), dtype=np.float32)
        got = _run(path, x)
        assert got["heatmaps"].shape == (n, 3, 8, 8) and got["existence"].shape == (n, 3)
        with torch.no_grad():
            hm, ex = model(torch.from_numpy(x))
        np.testing.assert_allclose(got["heatmaps"], hm.numpy(), atol=1e-5)
        np.testing.assert_allclose(got["existence"], ex.numpy(), atol=1e-5)


def test_parity_reported_per_output(exported) -> None:
    report, _, spec = exported
    assert set(report.max_abs_diff) == set(spec.output_names)
    assert all(0.0 <= d < 1e-5 for d in report.max_abs_diff.values())


def test_spec_round_trips_through_metadata(exported) -> None:
    _, path, spec = exported
    assert read_spec(path) == spec
    proto = onnx.load(str(path))
    assert [p.key for p in proto.metadata_props].count(METADATA_KEY) == 1
    assert read_spec(proto) == spec


def test_embed_spec_replaces_and_read_spec_absent_or_bad() -> None:
    proto = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    assert read_spec(proto) is None
    spec = tiny_model.tiny_spec()
    embed_spec(proto, spec)
    embed_spec(proto, dataclasses.replace(spec, name="second"))
    assert [p.key for p in proto.metadata_props] == [METADATA_KEY]
    assert read_spec(proto).name == "second"
    proto.metadata_props[0].value = "{not json"
    with pytest.raises(SpecError, match="not valid JSON"):
        read_spec(proto)


def test_dict_outputs_are_matched_by_key(tmp_path: Path) -> None:
    spec = tiny_model.tiny_spec()
    path = tmp_path / "dict.onnx"
    export_onnx(tiny_model.build_dict(), spec, path, opset=17, optimize=False)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    got = _run(path, x)
    with torch.no_grad():
        ref = tiny_model.build_dict().eval()(torch.from_numpy(x))
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["heatmaps", "existence"]
    np.testing.assert_allclose(got["existence"], ref["existence"].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["heatmaps"], ref["heatmaps"].numpy(), atol=1e-5)


def test_static_batch_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "static.onnx"
    report = export_onnx(tiny_model.build(), tiny_model.tiny_spec(), path, dynamic_batch=False)
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert report.max_abs_diff


class _NhwcNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model.build()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x.permute(0, 3, 1, 2))


def test_nhwc_input_layout(tmp_path: Path) -> None:
    spec = tiny_model.tiny_spec(layout="NHWC")
    path = tmp_path / "nhwc.onnx"
    export_onnx(_NhwcNet(), spec, path, optimize=False)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 32, 32, 3]
    assert read_spec(path).input.layout == "NHWC"


def test_export_restores_training_mode(tmp_path: Path) -> None:
    model = tiny_model.build().train()
    export_onnx(model, tiny_model.tiny_spec(), tmp_path / "m.onnx", optimize=False)
    assert model.training


def test_pt2_program_exports_at_opset17(tmp_path: Path) -> None:
    """An unlifted torch.export module refuses eval(); the TorchScript path must still handle it."""
    model = tiny_model.build().eval()
    x = torch.randn(2, 3, 32, 32)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    pt2 = tmp_path / "tiny.pt2"
    torch.export.save(ep, str(pt2))
    module = torch.export.load(str(pt2)).module()
    path = tmp_path / "pt2.onnx"
    report = export_onnx(module, tiny_model.tiny_spec(), path, opset=17)
    assert default_opset(onnx.load(str(path))) == 17 and report.max_abs_diff["heatmaps"] < 1e-5
    assert _run(path, np.zeros((3, 3, 32, 32), np.float32))["existence"].shape == (3, 3)


def test_opset18_uses_dynamo(tmp_path: Path) -> None:
    path = tmp_path / "o18.onnx"
    report = export_onnx(tiny_model.build(), tiny_model.tiny_spec(), path, opset=18)
    proto = onnx.load(str(path))
    assert report.exporter == "dynamo" and default_opset(proto) == 18
    assert [o.name for o in proto.graph.output] == ["heatmaps", "existence"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert read_spec(proto) == tiny_model.tiny_spec()
    assert max(report.max_abs_diff.values()) < 1e-5


def _no_leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_forward_error_leaves_no_file_and_keeps_old_one(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError, match="boom"):
        export_onnx(tiny_model.BrokenNet(), tiny_model.tiny_spec(), path)
    assert _no_leftovers(tmp_path) == []
    path.write_bytes(b"previous good export")
    with pytest.raises(RuntimeError, match="boom"):
        export_onnx(tiny_model.BrokenNet(), tiny_model.tiny_spec(), path)
    assert path.read_bytes() == b"previous good export"
    assert _no_leftovers(tmp_path) == ["model.onnx"]


def test_parity_failure_raises_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    with pytest.raises(OnnxExportError, match="differ from torch beyond atol"):
        export_onnx(tiny_model.build(), tiny_model.tiny_spec(), path, atol=-1.0, optimize=False)
    assert _no_leftovers(tmp_path) == []


def test_output_count_must_match_spec(tmp_path: Path) -> None:
    spec = dataclasses.replace(tiny_model.tiny_spec(), existence=None)
    with pytest.raises(OnnxExportError, match="returns 2 output"):
        export_onnx(tiny_model.build(), spec, tmp_path / "m.onnx")
    with pytest.raises(OnnxExportError, match="missing"):
        export_onnx(tiny_model.build_dict(), dataclasses.replace(
            tiny_model.tiny_spec(), heatmap=HeatmapSpec(name="heatmap")), tmp_path / "m.onnx")
    assert _no_leftovers(tmp_path) == []


def test_unsupported_opset(tmp_path: Path) -> None:
    with pytest.raises(OnnxExportError, match="opset 9 is not supported"):
        export_onnx(tiny_model.build(), tiny_model.tiny_spec(), tmp_path / "m.onnx", opset=9)


# --- check_spec_against_graph ------------------------------------------------------------------------
def test_check_spec_passes_on_matching_graph(exported) -> None:
    _, path, spec = exported
    check_spec_against_graph(onnx.load(str(path)), spec)


def test_check_spec_wrong_output_name_lists_real_outputs(exported) -> None:
    _, path, spec = exported
    bad = dataclasses.replace(spec, heatmap=HeatmapSpec(name="heatmap"))
    with pytest.raises(SpecError) as err:
        check_spec_against_graph(onnx.load(str(path)), bad)
    msg = str(err.value)
    assert "spec names output 'heatmap'" in msg
    assert "heatmaps [N,3,8,8], existence [N,3]" in msg


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (dict(keypoints=("a", "b", "c", "d")), "has 3 channels"),
        (dict(input=InputSpec(height=64, width=32)), "image [N,3,32,32]"),
        (dict(input=InputSpec(height=32, width=32, layout="NHWC")), "image [N,3,32,32]"),
        (dict(input=InputSpec(name="pixels", height=32, width=32)), "graph inputs are: image [N,3,32,32]"),
        (dict(heatmap=HeatmapSpec(stride=8)), "height is 8"),
        (dict(heatmap=HeatmapSpec(channels=(0, 1, 5))), "has 3 channels"),
        (dict(existence=ExistenceSpec(per="instance")), "existence [N,3]"),
    ],
)
def test_check_spec_mismatch_says_what_the_graph_has(exported, change: dict, found: str) -> None:
    _, path, spec = exported
    bad = dataclasses.replace(spec, **change)
    with pytest.raises(SpecError) as err:
        check_spec_against_graph(onnx.load(str(path)), bad)
    assert found in str(err.value)


def test_check_spec_accepts_channel_selection(exported) -> None:
    _, path, spec = exported
    check_spec_against_graph(onnx.load(str(path)), dataclasses.replace(
        spec, heatmap=HeatmapSpec(channels=(2, 1, 0))))


def test_read_spec_garbage_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"this is not an onnx model at all \x00\xff" * 10)
    with pytest.raises(OnnxFileError) as err:
        read_spec(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)

