"""The one rule for what INT8 keeps float, over a neutral graph view every engine side builds.

A heatmap that comes back on an 8-bit grid steps sub-pixel decoding, and saturating ops (Sigmoid,
Softmax...) crowd their outputs into a range 8 bits resolve badly. So, on every engine: walking back from
each graph output, every layer up to and including the head's last compute layer (the "head tail") stays
float, so does any layer that reads an output tensor, and so does every saturating op. ORT's ONNX graph
(:mod:`heatdeploy.calibration.graph`), OpenVINO's IR (:mod:`heatdeploy.calibration.nncf_quantize`) and
TensorRT's network (:mod:`heatdeploy.exporters.tensorrt`) only turn their graph into :class:`LayerInfo`
rows; which op plays which role is written once, in :data:`ROLES`.

Pure Python over tuples: no engine is imported here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

COMPUTE = "compute"  # the layers that carry the INT8 speed-up; a head's tail ends at the first one
SATURATING = "saturating"  # kept float wherever they are
MOVE = "move"  # only moves/reshapes/casts values: an output produced through them is still the producer's value
SKIP = "skip"  # constants, shape arithmetic, Q/DQ: never given a precision, never walked through
OTHER = "other"

# The one op table, keyed by the op type lower-cased, as ONNX, OpenVINO and TensorRT (LayerInfo kinds) spell it.
ROLES: dict[str, str] = {
    **dict.fromkeys(("conv", "convtranspose", "gemm", "matmul",  # ONNX
                     "convolution", "groupconvolution", "convolutionbackpropdata",  # OpenVINO
                     "groupconvolutionbackpropdata",
                     "deconv"), COMPUTE),  # TensorRT (conv, matmul as above)
    **dict.fromkeys(("sigmoid", "softmax", "logsoftmax", "hardsigmoid", "hsigmoid"), SATURATING),
    **dict.fromkeys(("reshape", "flatten", "squeeze", "unsqueeze", "transpose", "identity", "cast", "convert"),
                    MOVE),
    **dict.fromkeys(("constant", "shape", "quantize", "dequantize", "quantizelinear", "dequantizelinear",
                     "parameter", "result"), SKIP),
}


def role(kind: str) -> str:
    """The role of an op type (any engine's spelling) in the float-scope rule."""
    return ROLES.get(kind.lower(), OTHER)


def kinds(of_role: str) -> tuple[str, ...]:
    """The op types (lower-cased) the table gives ``of_role``."""
    return tuple(k for k, r in ROLES.items() if r == of_role)


@dataclass(frozen=True)
class LayerInfo:
    """A layer as the rule sees it: its name, op type as the engine spells it, and tensor names in and out.

    ``constant``: computed from constants only (a weight decompression subgraph): treated as SKIP.
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    constant: bool = False

    @property
    def role(self) -> str:
        return SKIP if self.constant else role(self.kind)


def output_tails(layers: Sequence[LayerInfo], outputs: Iterable[str], *, move_only: bool = False,
                 last_compute: bool | Collection[str] = True) -> dict[str, str]:
    """Layers whose quantization would quantize a graph output (or what reads it), with the reason for each.

    From each output tensor, walk back through producers up to the first compute layer. ``move_only``
    walks only through value-moving ops (any other op is included and ends the walk). ``last_compute``
    names the outputs whose compute layer itself is included (True: all, False: none): an engine that puts
    quantizers on a layer's inputs only (OpenVINO) hands float values on from an INT8 head conv.
    """
    producer = {t: layer for layer in layers for t in layer.outputs}
    readers: dict[str, list[LayerInfo]] = {}
    for layer in layers:
        for t in layer.inputs:
            readers.setdefault(t, []).append(layer)
    reasons: dict[str, str] = {}
    for head in outputs:
        keep_compute = last_compute if isinstance(last_compute, bool) else head in set(last_compute)
        stack, seen = [head], set()
        while stack:
            tensor = stack.pop()
            layer = producer.get(tensor)
            if layer is None or layer.name in seen or layer.role == SKIP:
                continue
            seen.add(layer.name)
            r = layer.role
            if r == COMPUTE and not keep_compute:
                continue  # INT8 inside, float out: the ops after it are what keep the values float
            if tensor == head:
                why = f"{layer.kind} produces graph output {head!r}"
            elif r == COMPUTE:
                why = f"last {layer.kind} of head {head!r}: INT8 here costs the head's precision"
            else:
                why = f"{layer.kind} after the last conv of head {head!r}"
            reasons.setdefault(layer.name, why)
            if r == COMPUTE or (move_only and r != MOVE):
                continue
            stack.extend(layer.inputs)
        for reader in readers.get(head, []):
            if reader.role != SKIP:
                reasons.setdefault(reader.name, f"{reader.kind} reads graph output {head!r}")
    return reasons


def saturating_layers(layers: Iterable[LayerInfo]) -> dict[str, str]:
    """Every saturating op (Sigmoid/Softmax...): its outputs crowd into a range 8 bits resolve badly."""
    return {layer.name: f"{layer.kind}: saturating output, kept float by the heatmap-aware default"
            for layer in layers if layer.role == SATURATING}


def float_layers(layers: Sequence[LayerInfo], outputs: Iterable[str], mode: str = "base",
                 last_compute: bool | Collection[str] = True) -> dict[str, str]:
    """Layer name -> why it stays float. ``base``: head tails + saturating ops; ``none``: only what keeps
    the outputs' values float (tails through value-moving ops)."""
    if mode not in ("base", "none"):
        raise ValueError(f"float scope mode {mode!r}: choose base or none")
    outs = list(outputs)
    scope = output_tails(layers, outs, move_only=mode == "none", last_compute=last_compute)
    if mode == "base":
        for name, why in saturating_layers(layers).items():
            scope[name] = f"{scope[name]}; {why}" if name in scope else why
    return scope


def constant_flags(layers: Sequence[LayerInfo], constants: Collection[str] = ()) -> list[LayerInfo]:
    """``layers`` (in topological order) with ``constant`` set on those computed only from constants.

    One forward pass, no recursion: deep graphs (hundreds of layers) cannot overflow the stack.
    ``constants``: tensor names known constant (initializers); a SKIP-role producer with no inputs counts too.
    """
    const_tensors = set(constants)
    out = []
    for layer in layers:
        is_const = layer.constant or layer.kind.lower() == "constant" or (
            bool(layer.inputs) and all(t in const_tensors for t in layer.inputs))
        if is_const:
            const_tensors.update(layer.outputs)
        out.append(layer if is_const == layer.constant else LayerInfo(layer.name, layer.kind, layer.inputs,
                                                                       layer.outputs, is_const))
    return out


__all__ = [
    "COMPUTE", "LayerInfo", "MOVE", "OTHER", "ROLES", "SATURATING", "SKIP", "constant_flags", "float_layers",
    "kinds", "output_tails", "role", "saturating_layers",
]
