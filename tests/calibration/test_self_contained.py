"""The INT8 ONNX carries its own FP32 decisions: a plain ORT session, heatdeploy's runtime and OpenVINO agree.

ORT's default ``WeightBiasQuantization`` re-quantizes layers the quantizer kept FP32 when their input comes
from a scalar-scale DequantizeLinear; the file pins those layers (calibration/session.py). The control
quantizes with pinning switched off and must show the difference, so the check can fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import heatdeploy.calibration.quantize as quant_mod
from heatdeploy.calibration.quantize import quantize_onnx_int8
from heatdeploy.calibration.session import int8_session
from heatdeploy.calibration.sources import open_source
from heatdeploy.runtime.backends.onnxruntime import load as runtime_load
from heatdeploy.spec import ModelSpec

KEPT = ["conv2", "deconv"]  # mid-network layers between INT8 layers: the pattern ORT re-quantizes


def _inputs(n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.uniform(-1.0, 1.0, (n, 3, 64, 48)).astype(np.float32)


def _plain(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """What a user's ``onnxruntime.InferenceSession(model.int8.onnx)`` returns: no options at all."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})


def _strict(path: Path, x: np.ndarray) -> list[np.ndarray]:
    return int8_session(path, disable_weight_bias_quantization=True).run(None, {"image": x})


def _quantize(tiny_model: Path, image_dir: Path, spec: ModelSpec, out: Path) -> quant_mod.QuantizeReport:
    source = open_source(spec, str(image_dir), 16, 0, 10)
    return quantize_onnx_int8(tiny_model, out, spec, source, method="minmax", keep_fp32=KEPT, use_cache=False)


@pytest.fixture(scope="module")
def pinned(tiny_model: Path, image_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Path, quant_mod.QuantizeReport]:
    from calib_helpers import tiny_spec

    out = tmp_path_factory.mktemp("selfcontained") / "model.int8.onnx"
    return out, _quantize(tiny_model, image_dir, tiny_spec(), out)


def test_plain_ort_session_gives_the_runtime_outputs(pinned: tuple[Path, quant_mod.QuantizeReport]) -> None:
    path, report = pinned
    x = _inputs()
    plain = _plain(path, x)
    backend = runtime_load(path, {"intra_op_threads": 1})
    ours = backend.infer({"image": x})
    for name, value in zip(backend.output_names, plain, strict=True):
        np.testing.assert_allclose(ours[name], value, atol=1e-5, rtol=0)
    for a, b in zip(plain, _strict(path, x), strict=True):
        np.testing.assert_array_equal(a, b)  # WeightBiasQuantization finds nothing to rewrite
    assert report.self_contained is not None and report.self_contained["identical"]
    assert report.ops["summary"] == report.ops["without_setting"]


def test_kept_layers_stay_float_in_the_optimised_graph(pinned: tuple[Path, quant_mod.QuantizeReport],
                                                      tmp_path: Path) -> None:
    path, _ = pinned
    opt = tmp_path / "opt.onnx"
    int8_session(path, optimized_path=opt)
    ops = {n.name: n.op_type for n in onnx.load(str(opt)).graph.node}
    for name in KEPT:
        fused = [op for n, op in ops.items() if n.startswith(name) and "QLinear" in op]
        assert not fused, f"{name} ran as {fused}"
    assert any("QLinear" in op for op in ops.values())  # the INT8 layers still fuse
    meta = {p.key for p in onnx.load(str(path)).metadata_props}
    assert "heatdeploy.ort.disabled_optimizers" not in meta


def test_without_pinning_a_plain_session_requantizes(tiny_model: Path, image_dir: Path, spec: ModelSpec,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the same quantization left unpinned differs under default options."""
    monkeypatch.setattr(quant_mod, "pin_float_layers", lambda model: [])
    out = tmp_path / "unpinned.onnx"
    report = _quantize(tiny_model, image_dir, spec, out)
    x = _inputs()
    worst = max(float(np.abs(a - b).max()) for a, b in zip(_plain(out, x), _strict(out, x), strict=True))
    assert worst > 1e-3
    assert report.self_contained is not None and not report.self_contained["identical"]


def test_legacy_files_still_get_their_disabled_optimizer(tiny_model: Path, image_dir: Path, spec: ModelSpec,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file written before pinning names the optimizer in its metadata; the runtime honours it."""
    monkeypatch.setattr(quant_mod, "pin_float_layers", lambda model: [])
    out = tmp_path / "legacy.onnx"
    _quantize(tiny_model, image_dir, spec, out)
    model = onnx.load(str(out))
    model.metadata_props.add(key="heatdeploy.ort.disabled_optimizers", value="WeightBiasQuantization")
    onnx.save(model, str(out))
    x = _inputs()
    ours = runtime_load(out, {"intra_op_threads": 1}).infer({"image": x})
    for a, b in zip(ours.values(), _strict(out, x), strict=True):
        np.testing.assert_array_equal(a, b)


def test_openvino_reads_the_same_qdq_onnx(pinned: tuple[Path, quant_mod.QuantizeReport]) -> None:
    ov = pytest.importorskip("openvino", reason="openvino not installed")
    path, _ = pinned
    x = _inputs()
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled({"image": x})
    plain = _plain(path, x)
    names = [o.name for o in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_outputs()]
    for name, ref in zip(names, plain, strict=True):
        value = got[compiled.output(name)]
        # INT8 rounding order may differ by one quantization step somewhere; far below a keypoint's worth.
        assert float(np.abs(value - ref).max()) < 0.02 * max(1.0, float(np.abs(ref).max())), name
