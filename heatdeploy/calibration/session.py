"""ORT sessions for heatdeploy's INT8 QDQ models, and the graph edit that makes the file carry its FP32 layers.

ORT's ``WeightBiasQuantization`` graph transformer (level 1, on by default) takes every Conv/ConvTranspose/
Gemm whose input comes from a DequantizeLinear with a *scalar* scale and whose output reaches a
QuantizeLinear (through Relu/Clip at most), and quantizes its float weight per tensor and its bias to
int32; the QDQ fusion then turns it into a QLinearConv. That undoes the quantizer's decision to keep the
layer FP32, in every plain ``onnxruntime.InferenceSession``. :func:`pin_float_layers` gives such a layer a
DequantizeLinear of its own with a per-channel scale (every channel the same value: the same numbers), which
the transformer's scalar-scale test rejects, so default session options run the file as quantized. The
runtime then needs no disabled optimizer; older files that still name one in their metadata get it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)
METADATA_KEY = "heatdeploy.ort.disabled_optimizers"  # read by the runtime on files written before pinning
PINNED_OPS = ("Conv", "ConvTranspose", "Gemm")  # what WeightBiasQuantization rewrites
LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
}


def int8_session(path: Path, *, level: str = "all", optimized_path: Path | None = None,
                 disable_weight_bias_quantization: bool = False) -> ort.InferenceSession:
    """A CPU session with ORT's default optimizers, as a plain deployment creates it (optionally saving the graph).

    ``disable_weight_bias_quantization`` is for the self-containment check only: a pinned file gives the
    same outputs either way.
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = LEVELS[level]
    so.log_severity_level = 3  # NCHWc's 'hardware specific model' notice is expected when saving
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    disabled = list(DISABLED_OPTIMIZERS) if disable_weight_bias_quantization else []
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def _input_channels(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> tuple[int, int] | None:
    """(axis, size) of input 0's channel axis for a Conv/ConvTranspose/Gemm with an initializer weight."""
    w = weights.get(node.input[1]) if len(node.input) > 1 else None
    if w is None:
        return None
    dims = list(w.dims)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv" and len(dims) >= 2:
        return 1, dims[1] * int(attrs.get("group", 1))
    if node.op_type == "ConvTranspose" and dims:
        return 1, dims[0]
    if node.op_type == "Gemm" and len(dims) == 2:
        k = dims[1] if attrs.get("transB", 0) else dims[0]
        return (0 if attrs.get("transA", 0) else 1), k
    return None


def pin_float_layers(model: onnx.ModelProto) -> list[str]:
    """Give each float Conv/ConvTranspose/Gemm fed by a scalar-scale DQ its own per-channel DQ; returns their names.

    A float layer here is one whose weight is a float initializer (the quantizer left it FP32). The new
    DequantizeLinear reads the same quantized tensor with the scalar scale and zero point repeated per
    channel, so the values are identical and only ORT's pattern match changes.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output if o}
    pinned: list[str] = []
    new_inits: list[onnx.TensorProto] = []
    insert: list[tuple[int, onnx.NodeProto]] = []
    for index, node in enumerate(graph.node):
        if node.op_type not in PINNED_OPS or len(node.input) < 2:
            continue
        weight = inits.get(node.input[1])
        if weight is None or weight.data_type != onnx.TensorProto.FLOAT:
            continue  # quantized (its weight comes from a DQ) or not a constant weight: not ours to pin
        dq = producer.get(node.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 2:
            continue
        scale = inits.get(dq.input[1])
        zero = inits.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        channels = _input_channels(node, inits)
        if scale is None or channels is None or int(np.prod(scale.dims, dtype=np.int64)) != 1:
            continue
        axis, size = channels
        base = f"{node.name}_pinned_input"
        s = numpy_helper.to_array(scale).reshape(-1)
        new_inits.append(numpy_helper.from_array(np.repeat(s, size).astype(s.dtype), f"{base}_scale"))
        inputs = [dq.input[0], f"{base}_scale"]
        if zero is not None:
            z = numpy_helper.to_array(zero).reshape(-1)
            new_inits.append(numpy_helper.from_array(np.repeat(z, size).astype(z.dtype), f"{base}_zero_point"))
            inputs.append(f"{base}_zero_point")
        insert.append((index, helper.make_node("DequantizeLinear", inputs, [f"{base}_dq"], f"{base}_dq", axis=axis)))
        node.input[0] = f"{base}_dq"
        pinned.append(node.name)
    for offset, (index, dq_node) in enumerate(insert):
        graph.node.insert(index + offset, dq_node)
    graph.initializer.extend(new_inits)
    if pinned:
        _drop_unused_nodes(graph)
    return pinned


def _drop_unused_nodes(graph: onnx.GraphProto) -> None:
    """Remove DequantizeLinear nodes whose output nobody reads any more (the shared DQ a pin replaced)."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [n for n in graph.node if n.op_type != "DequantizeLinear" or any(o in used for o in n.output)]
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)
        used = {i for n in graph.node for i in n.input}
        alive = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(alive)


def self_contained_check(model_path: Path, input_name: str, batches: Sequence[np.ndarray],
                         output_names: Sequence[str]) -> dict[str, Any]:
    """Largest output difference between ORT's default session and one with WeightBiasQuantization disabled.

    Zero says the file alone decides what runs FP32: a plain ``onnxruntime.InferenceSession`` gives the
    outputs the parity verdict was measured on.
    """
    names = list(output_names)
    plain = int8_session(model_path)
    strict = int8_session(model_path, disable_weight_bias_quantization=True)
    worst = {n: 0.0 for n in names}
    for b in batches:
        for n, a, c in zip(names, plain.run(names, {input_name: b}), strict.run(names, {input_name: b}),
                           strict=True):
            worst[n] = max(worst[n], float(np.max(np.abs(a.astype(np.float64) - c))) if a.size else 0.0)
    return {"max_abs_diff": worst, "identical": all(v == 0.0 for v in worst.values()),
            "batches": len(batches), "rule": "default ORT session vs WeightBiasQuantization disabled"}
