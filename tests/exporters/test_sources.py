"""Model sources: module:factory + weights, .pt2, reference; every failure is a one-line SourceError."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from heatdeploy.exporters.sources import SourceError, load_torch_model
from heatdeploy.spec import SpecError

HERE = Path(__file__).parent
if str(HERE) not in sys.path:  # the helper is imported by name whatever pytest's import mode
    sys.path.insert(0, str(HERE))
import tiny_model  # noqa: E402


@pytest.fixture()
def spec_file(tmp_path: Path) -> Path:
    p = tmp_path / "spec.json"
    tiny_model.tiny_spec().save(p)
    return p


@pytest.fixture()
def trained_state(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """Weights that differ from build()'s seed, so a successful load is visible."""
    torch.manual_seed(123)
    sd = tiny_model.TinyHeatmapNet().state_dict()
    path = tmp_path / "weights.pt"
    torch.save(sd, path)
    return path, sd


def _one_line_error(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def _assert_weights(module: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    got = module.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_factory_with_weights_and_spec_file(trained_state, spec_file: Path) -> None:
    path, sd = trained_state
    module, spec = load_torch_model("tiny_model:build", weights=str(path), spec_path=str(spec_file))
    _assert_weights(module, sd)
    assert not module.training
    assert spec == tiny_model.tiny_spec()


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module."])
def test_checkpoint_wrappers_are_accepted(tmp_path: Path, trained_state, spec_file: Path, wrap: str) -> None:
    _, sd = trained_state
    path = tmp_path / "ckpt.pth"
    if wrap == "module.":
        torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    else:
        torch.save({wrap: sd, "epoch": 3}, path)
    module, _ = load_torch_model("tiny_model:build", weights=str(path), spec_path=str(spec_file))
    _assert_weights(module, sd)


def test_mismatched_keys_are_listed(tmp_path: Path, trained_state, spec_file: Path) -> None:
    _, sd = trained_state
    sd = dict(sd)
    sd.pop("existence.weight")
    sd["extra.head.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(SourceError) as err:
        load_torch_model("tiny_model:build", weights=str(path), spec_path=str(spec_file))
    msg = _one_line_error(err)
    assert str(path) in msg and "existence.weight" in msg and "extra.head.weight" in msg


def test_shape_mismatch(tmp_path: Path, spec_file: Path) -> None:
    path = tmp_path / "k4.pt"
    torch.save(tiny_model.TinyHeatmapNet(k=4).state_dict(), path)
    with pytest.raises(SourceError, match="shape mismatch") as err:
        load_torch_model("tiny_model:build", weights=str(path), spec_path=str(spec_file))
    assert "existence.weight [4, 8] vs model [3, 8]" in _one_line_error(err)


@pytest.mark.parametrize("content", [b"garbage bytes, not a torch file", None])
def test_corrupt_or_missing_weights(tmp_path: Path, spec_file: Path, content: bytes | None) -> None:
    path = tmp_path / "w.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SourceError) as err:
        load_torch_model("tiny_model:build", weights=str(path), spec_path=str(spec_file))
    assert str(path) in _one_line_error(err)


def test_weights_that_are_not_a_state_dict(tmp_path: Path, spec_file: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(SourceError, match="not a state_dict"):
        load_torch_model("tiny_model:build", weights=str(path), spec_path=str(spec_file))


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("no_such_module_xyz:build", "PYTHONPATH"),
        ("tiny_model:nope", "has no attribute 'nope'"),
        ("tiny_model:KEYPOINTS", "not callable"),
        ("tiny_model:not_a_model", "not a torch.nn.Module"),
        ("tiny_model:BrokenNet.forward", "raised TypeError"),
    ],
)
def test_bad_factories(ref: str, needle: str, spec_file: Path) -> None:
    with pytest.raises(SourceError) as err:
        load_torch_model(ref, spec_path=str(spec_file))
    msg = _one_line_error(err)
    assert needle in msg and ref in msg


def test_spec_from_module_attribute() -> None:
    module, spec = load_torch_model("tiny_model:build_with_spec")
    assert spec == tiny_model.tiny_spec()
    assert isinstance(module, tiny_model.TinyHeatmapNet)


def test_missing_spec_says_how_to_give_one() -> None:
    with pytest.raises(SourceError, match="--spec") as err:
        load_torch_model("tiny_model:build")
    assert "tiny_model:build" in _one_line_error(err)


def test_bad_spec_file_is_a_spec_error(tmp_path: Path) -> None:
    p = tmp_path / "spec.json"
    p.write_text('{"keypoints": []}')
    with pytest.raises(SpecError, match="keypoints"):
        load_torch_model("tiny_model:build", spec_path=str(p))


@pytest.fixture()
def pt2_file(tmp_path: Path) -> Path:
    model = tiny_model.build().eval()
    ep = torch.export.export(model, (torch.randn(2, 3, 32, 32),),
                             dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path / "tiny.pt2"
    torch.export.save(ep, str(path))
    return path


def test_pt2_loads_with_spec(pt2_file: Path, spec_file: Path) -> None:
    module, spec = load_torch_model(str(pt2_file), spec_path=str(spec_file))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        hm, ex = module(x)
        ref_hm, ref_ex = tiny_model.build().eval()(x)
    assert torch.allclose(hm, ref_hm, atol=1e-6) and torch.allclose(ex, ref_ex, atol=1e-6)
    assert spec == tiny_model.tiny_spec()


def test_pt2_needs_spec_and_takes_no_weights(pt2_file: Path, spec_file: Path) -> None:
    with pytest.raises(SourceError, match="--spec") as err:
        load_torch_model(str(pt2_file))
    assert str(pt2_file) in _one_line_error(err)
    with pytest.raises(SourceError, match="drop --weights"):
        load_torch_model(str(pt2_file), weights="w.pt", spec_path=str(spec_file))


def test_pt2_missing_or_corrupt(tmp_path: Path, spec_file: Path) -> None:
    missing = tmp_path / "nope.pt2"
    with pytest.raises(SourceError, match="no such .pt2 file"):
        load_torch_model(str(missing), spec_path=str(spec_file))
    corrupt = tmp_path / "corrupt.pt2"
    corrupt.write_bytes(b"not a zip archive")
    with pytest.raises(SourceError) as err:
        load_torch_model(str(corrupt), spec_path=str(spec_file))
    assert str(corrupt) in _one_line_error(err)


@pytest.mark.parametrize(("model", "needle"), [("model.pth", "--weights"), ("model.onnx", "already ONNX"),
                                               ("whatever", "unrecognised MODEL")])
def test_unrecognised_models(model: str, needle: str) -> None:
    with pytest.raises(SourceError, match=needle):
        load_torch_model(model)


def test_reference_unavailable_is_a_source_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "heatdeploy.models.reference", None)  # makes the import fail
    with pytest.raises(SourceError, match="reference model cannot be imported"):
        load_torch_model("reference")


def test_reference_loads_or_says_how_to_get_weights() -> None:
    ref = pytest.importorskip("heatdeploy.models.reference")
    shipped = getattr(ref, "WEIGHTS", None)
    if shipped is None:
        pytest.skip("heatdeploy.models.reference has no WEIGHTS path")
    if not Path(shipped).is_file():
        with pytest.raises(SourceError, match="MODEL 'reference'"):
            load_torch_model("reference")
        return
    module, spec = load_torch_model("reference")
    assert isinstance(module, torch.nn.Module) and not module.training
    assert spec.num_keypoints > 0


def test_reference_with_bad_weights(tmp_path: Path) -> None:
    pytest.importorskip("heatdeploy.models.reference")
    with pytest.raises(SourceError, match="no such weights file"):
        load_torch_model("reference", weights=str(tmp_path / "missing.pt"))
    path = tmp_path / "tiny.pt"
    torch.save(tiny_model.build().state_dict(), path)
    with pytest.raises(SourceError) as err:
        load_torch_model("reference", weights=str(path))
    assert str(path) in _one_line_error(err)
