"""OpenVINO INT8's float part (f32 or bf16) is a measured per-model choice, recorded and honoured at load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.openvino
ov = pytest.importorskip("openvino", reason="openvino is not installed: pip install 'heatdeploy[openvino]'")
pytest.importorskip("nncf", reason="nncf is not installed: pip install 'heatdeploy[openvino]'")

from heatdeploy.bundle import Bundle  # noqa: E402
from heatdeploy.calibration import ov_float_part  # noqa: E402
from heatdeploy.calibration.ov_float_part import choose_float_part, has_bf16  # noqa: E402
from heatdeploy.calibration.sources import open_source  # noqa: E402
from heatdeploy.exporters.openvino import add_openvino_artifact, convert_onnx  # noqa: E402


@pytest.fixture
def models(tiny_bundle: Path) -> tuple[ov.Model, ov.Model, object, list[np.ndarray]]:
    from heatdeploy.calibration.nncf_quantize import quantize_openvino_int8

    b = Bundle.load(tiny_bundle)
    fp32, _ = convert_onnx(b.path_of(b.artifact("onnx-fp32")), b.spec)
    int8, _ = quantize_openvino_int8(fp32, b.spec, open_source(b.spec, "synthetic", size=16, seed=0),
                                     keep_fp32="base")
    batches = list(open_source(b.spec, "synthetic", size=16, seed=1).batches(8))
    return fp32, int8, b.spec, batches


def test_both_float_parts_are_measured(models: tuple) -> None:
    fp32, int8, spec, batches = models
    choice = choose_float_part(fp32, int8, spec, batches)
    names = [p["name"] for p in choice.points]
    assert names[:2] == ["fp32@f32", "int8@f32"]
    assert ("int8@bf16" in names) == has_bf16()
    assert all(p["ms"] > 0 for p in choice.points) and choice.images == 16
    held = {p["name"]: p["holds"] for p in choice.points}
    assert choice.chosen in ("f32", "bf16") and (choice.chosen == "f32" or held["int8@bf16"])
    assert any("OpenVINO f32" in n for n in choice.notes)  # the speed verdict is recorded


def test_f32_is_kept_when_nothing_holds(models: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    fp32, int8, spec, batches = models
    monkeypatch.setattr(ov_float_part, "MAX_MEAN_HM_PX", -1.0)  # no candidate can hold this
    choice = choose_float_part(fp32, int8, spec, batches, time_it=False)
    assert choice.chosen == "f32" and choice.rt_precision == "f32"
    assert not any(p["holds"] for p in choice.points if p["name"] != "fp32@f32")


def test_bf16_is_kept_when_it_holds(models: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    if not has_bf16():
        pytest.skip("this CPU has no bf16: the choice is f32 by construction")
    fp32, int8, spec, batches = models
    monkeypatch.setattr(ov_float_part, "MAX_MEAN_HM_PX", 1e9)
    monkeypatch.setattr(ov_float_part, "MIN_EXISTENCE_AGREEMENT", 0.0)
    choice = choose_float_part(fp32, int8, spec, batches, time_it=False)
    assert choice.chosen == "bf16" and choice.rt_precision == "bf16,f32"
    assert choose_float_part(fp32, int8, spec, batches, requested="f32", time_it=False).chosen == "f32"


def test_artifact_records_and_compiles_with_the_choice(tiny_bundle: Path) -> None:
    from heatdeploy.runtime.backends.openvino import load

    art = add_openvino_artifact(tiny_bundle, "int8", calib="synthetic", calib_size=16, keep_fp32="base")
    fp = art.calibration["float_part"]
    assert art.notes["inference_precision"] == fp["rt_precision"]
    backend = load(Bundle.load(tiny_bundle).path_of(art))
    assert backend.inference_precision == fp["chosen"]
    forced = add_openvino_artifact(tiny_bundle, "int8", calib="synthetic", calib_size=16, keep_fp32="base",
                                   float_part="f32")
    assert forced.notes["inference_precision"] == "f32"
    assert load(Bundle.load(tiny_bundle).path_of(forced)).inference_precision == "f32"
