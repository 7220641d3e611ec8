"""Graph rules for INT8: which nodes stay float, which layers are worth testing, what ORT really runs.

ORT's quantizer quantizes graph outputs like any other tensor, so a heatmap would come back with 8-bit
resolution and sub-pixel decoding would see steps. What stays float is the one rule of
:mod:`heatdeploy.calibration.float_scope` (head tails, readers of outputs, saturating ops); this module
only turns the ONNX graph into that rule's :class:`~heatdeploy.calibration.float_scope.LayerInfo` view.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx

from heatdeploy.calibration.float_scope import MOVE, SATURATING, LayerInfo, constant_flags, kinds, saturating_layers
from heatdeploy.calibration.float_scope import output_tails as _tails

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # the layers that carry the INT8 speed-up
SATURATING_OPS = kinds(SATURATING)  # lower-cased, from the one op table
# Ops that only move or reshape values (lower-cased, from the one op table).
PASS_THROUGH_OPS = kinds(MOVE)
# Ops ORT quantizes with a new output scale of their own (not the input's): a residual sum or a pooled
# vector on one 8-bit grid can hurt alone. Measured on BlazePose: the quantized Add feeding its heads alone
# turned two non-person frames (pose flag 0.000) into persons (1.000); no single conv did.
REQUANTIZING_OPS = ("Add", "Mul", "Concat", "AveragePool", "GlobalAveragePool")

# What ORT's optimised graph runs, by op type (any domain).
_INT8_CONV = {"QLinearConv", "ConvInteger", "QLinearConvTranspose", "NhwcQLinearConv"}
_FLOAT_CONV = {"Conv", "FusedConv", "ConvTranspose", "NhwcFusedConv", "NhwcConv"}
_INT8_MATMUL = {"QLinearMatMul", "MatMulInteger", "QGemm", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
_FLOAT_MATMUL = {"MatMul", "Gemm", "FusedGemm", "FusedMatMul"}


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def layer_view(model: onnx.ModelProto) -> list[LayerInfo]:
    """The ONNX graph as the float-scope rule's neutral view (initializer-only nodes marked constant)."""
    graph = model.graph
    rows = [LayerInfo(n.name, n.op_type, tuple(i for i in n.input if i), tuple(o for o in n.output if o))
            for n in graph.node]
    return constant_flags(rows, {t.name for t in graph.initializer})


def output_tails(model: onnx.ModelProto, *, through: Iterable[str] | None = None) -> dict[str, str]:
    """Nodes whose quantization would quantize a graph output, with the reason for each.

    From each output, walk back through producers, stopping at (and including) the first compute layer;
    with ``through`` (e.g. :data:`PASS_THROUGH_OPS`) the walk goes only through value-moving ops. Nodes
    that read an output tensor are included too.
    """
    return _tails(layer_view(model), [o.name for o in model.graph.output], move_only=through is not None)


def saturating_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Sigmoid/Softmax anywhere: their outputs crowd into a tiny range that 8 bits resolve badly."""
    return saturating_layers(layer_view(model))


def compute_layers(model: onnx.ModelProto, exclude: Iterable[str] = (),
                   op_types: Iterable[str] = COMPUTE_OPS) -> list[onnx.NodeProto]:
    """Conv/ConvTranspose/Gemm/MatMul nodes (or ``op_types``) in graph order, minus ``exclude``."""
    skip, ops = set(exclude), set(op_types)
    return [n for n in model.graph.node if n.op_type in ops and n.name not in skip]


def name_nodes(model: onnx.ModelProto) -> int:
    """Give unnamed (or duplicate-named) nodes unique names, since exclusion lists go by name."""
    seen: set[str] = set()
    renamed = 0
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            base = node.name or f"{node.op_type}_{i}"
            name, k = base, 0
            while name in seen:
                k += 1
                name = f"{base}_{k}"
            node.name = name
            renamed += 1
        seen.add(node.name)
    return renamed


def float_islands(model: onnx.ModelProto, excluded: Iterable[str], op_types: Iterable[str]) -> dict[str, str]:
    """Non-compute nodes (pooling, Relu, Add...) that touch no INT8 compute layer, with the reason.

    ORT quantizes such ops on their own: between two FP32 layers that only adds Q/DQ round-trips, and
    the Q/DQ on a shared input also reaches the FP32 layers reading it. Nodes linked by tensors form
    groups; a group with no quantized Conv/Gemm/MatMul at its edge stays FP32 as a whole.
    """
    skip = set(excluded)
    wanted = set(op_types)
    nodes = list(model.graph.node)
    is_compute = [n.op_type in COMPUTE_OPS for n in nodes]
    by_tensor: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in [*node.input, *node.output]:
            if name:
                by_tensor.setdefault(name, []).append(i)
    seen: set[int] = set()
    islands: dict[str, str] = {}
    for first, node in enumerate(nodes):
        if is_compute[first] or first in seen or node.name in skip:
            continue
        group, touches_int8, stack = [], False, [first]
        seen.add(first)
        while stack:
            i = stack.pop()
            group.append(i)
            for name in [*nodes[i].input, *nodes[i].output]:
                for j in by_tensor.get(name, []):
                    if is_compute[j]:
                        touches_int8 |= nodes[j].name not in skip
                    elif j not in seen and nodes[j].name not in skip:
                        seen.add(j)
                        stack.append(j)
        if not touches_int8:
            for i in group:
                if nodes[i].op_type in wanted:
                    islands[nodes[i].name] = f"{nodes[i].op_type} touches no INT8 layer (Q/DQ would be pure cost)"
    return islands


# --- what the optimised graph runs -----------------------------------------------------------------


@dataclass
class OpsSummary:
    """Which ops run INT8 after ORT's graph optimisation, and what Q/DQ/Transpose overhead is left."""

    level: str
    convs_int8: int = 0
    convs_float: int = 0
    matmuls_int8: int = 0
    matmuls_float: int = 0
    quantize: int = 0
    dequantize: int = 0
    transpose: int = 0
    simulated: list[str] = field(default_factory=list)  # quantized weights, float kernel: no speed-up
    without_setting: str = ""  # the same graph if WeightBiasQuantization stays on (calibration.session)
    op_counts: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """One line for logs and the bundle, e.g. 'convs INT8 15/19, float 4; Q/DQ left 45; Transpose 2'."""
        convs = self.convs_int8 + self.convs_float
        text = f"convs INT8 {self.convs_int8}/{convs}, float {self.convs_float}"
        if self.matmuls_int8 + self.matmuls_float:
            text += f"; gemm/matmul INT8 {self.matmuls_int8}/{self.matmuls_int8 + self.matmuls_float}"
        text += f"; Q/DQ left {self.quantize + self.dequantize}; Transpose {self.transpose}"
        if self.simulated:
            text += (f"; {len(self.simulated)} quantized layer(s) run as float ({', '.join(self.simulated[:4])}): "
                     "ORT has no INT8 kernel for them here")
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.line()}


def summarize_ops(model: onnx.ModelProto, level: str) -> OpsSummary:
    """Count INT8 vs float compute ops and leftover Q/DQ/Transpose in an (ORT-optimised) graph."""
    producer = _producers(model.graph)
    counts = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}"
                     for n in model.graph.node)
    s = OpsSummary(level=level, op_counts=dict(sorted(counts.items())))
    for node in model.graph.node:
        op = node.op_type
        if op in _INT8_CONV:
            s.convs_int8 += 1
        elif op in _FLOAT_CONV:
            s.convs_float += 1
        elif op in _INT8_MATMUL:
            s.matmuls_int8 += 1
        elif op in _FLOAT_MATMUL:
            s.matmuls_float += 1
        elif op == "QuantizeLinear":
            s.quantize += 1
        elif op == "DequantizeLinear":
            s.dequantize += 1
        elif op == "Transpose":
            s.transpose += 1
        if op in _FLOAT_CONV | _FLOAT_MATMUL and len(node.input) > 1:
            src = producer.get(node.input[1])  # the weight: dequantized means it was meant to be INT8
            if src is not None and src.op_type == "DequantizeLinear":
                s.simulated.append(node.name)
    return s
