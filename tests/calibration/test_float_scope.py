"""The one float-scope rule: the same answer on every engine's view, one op table, no recursion over depth."""

from __future__ import annotations

import numpy as np
import pytest

from heatdeploy.calibration.float_scope import (
    COMPUTE,
    MOVE,
    SATURATING,
    SKIP,
    LayerInfo,
    constant_flags,
    float_layers,
    role,
)


def _toy() -> list[LayerInfo]:
    return [
        LayerInfo("w", "Constant", (), ("w0",)),
        LayerInfo("wc", "Convert", ("w0",), ("w1",)),  # weight decompression: constant, never walked
        LayerInfo("conv1", "Convolution", ("image", "w1"), ("c1",)),
        LayerInfo("gate", "HSigmoid", ("c1",), ("g",)),
        LayerInfo("conv2", "Convolution", ("g", "w1"), ("c2",)),
        LayerInfo("act", "Relu", ("c2",), ("r",)),
        LayerInfo("head", "Convolution", ("r", "w1"), ("h",)),
        LayerInfo("shape", "Reshape", ("h",), ("heatmaps",)),
        LayerInfo("reader", "Sigmoid", ("heatmaps",), ("probs",)),
    ]


def test_one_table_covers_every_engines_spelling() -> None:
    for onnx_op, ov_op, trt_kind in [("Conv", "Convolution", "conv"), ("ConvTranspose", "ConvolutionBackpropData",
                                                                       "deconv"), ("MatMul", "MatMul", "matmul")]:
        assert role(onnx_op) == role(ov_op) == role(trt_kind) == COMPUTE
    for op in ("Sigmoid", "sigmoid", "Softmax", "SoftMax", "softmax", "LogSoftmax", "HardSigmoid", "HSigmoid",
               "hardsigmoid"):
        assert role(op) == SATURATING, op
    assert role("Reshape") == role("Flatten") == MOVE and role("dequantize") == role("DequantizeLinear") == SKIP
    assert role("Relu") not in (COMPUTE, SATURATING, MOVE, SKIP)


def test_rule_keeps_tails_readers_and_saturating_ops() -> None:
    layers = constant_flags(_toy())
    base = float_layers(layers, ["heatmaps"])
    assert set(base) == {"head", "shape", "reader", "gate"}
    assert "produces graph output 'heatmaps'" in base["shape"] and "last Convolution" in base["head"]
    assert "saturating" in base["gate"] and "reads graph output" in base["reader"]
    assert set(float_layers(layers, ["heatmaps"], "none")) == {"head", "shape", "reader"}
    # an engine that quantizes inputs only: the head's conv may run INT8 for outputs not decoded
    assert "head" not in float_layers(layers, ["heatmaps"], last_compute=[])
    with pytest.raises(ValueError, match="base or none"):
        float_layers(layers, ["heatmaps"], "auto")


def test_deep_ir_needs_no_recursion() -> None:
    """A chain far deeper than Python's recursion limit (the RecursionError NNCF's scope hit on a deep IR)."""
    ov = pytest.importorskip("openvino")
    from openvino import opset13 as ops

    from heatdeploy.calibration.nncf_quantize import float_scope, output_tails

    x = ops.parameter([1, 4], np.float32, name="x")
    y = x
    for i in range(3000):
        w = ops.convert(ops.constant(np.full((1, 4), 0.5, np.float16)), np.float32)  # decompression: constant
        y = ops.add(ops.multiply(y, w), w, name=f"add_{i}")
    y = ops.sigmoid(y, name="out_sigmoid")
    y.output(0).get_tensor().set_names({"out"})
    model = ov.Model([y], [x], "deep")
    scope = float_scope(model)
    assert "out_sigmoid" in scope and "add_0" in output_tails(model)  # the tail of a conv-free graph is all of it
    assert not any(name.startswith("Convert") or name.startswith("Constant") for name in scope)


def test_tensorrt_view_uses_the_same_rule() -> None:
    from heatdeploy.exporters.tensorrt import fp32_layers

    trt_layers = [LayerInfo("c", "conv", ("x",), ("y",)), LayerInfo("hs", "hardsigmoid", ("y",), ("z",)),
                  LayerInfo("h", "conv", ("z",), ("out",))]
    pins = fp32_layers(trt_layers, ["out"])
    assert set(pins) == {"h", "hs"}  # HardSigmoid is saturating on TensorRT too (it kept only sigmoid/softmax)
