"""Quantization-aware fine-tuning by distillation: an INT8 model trained to reproduce its own FP32 outputs.

Post-training INT8 cannot hold the keypoints of some depthwise-heavy models (BlazePose): the error is in the
activation grids of the stem and early blocks, and no range choice, bias correction or rounding search
fixes it. Fine-tuning the fake-quantized model (its weights, per-channel weight scales and per-tensor
activation ranges, LSQ-style with straight-through rounding) to match the FP32 model's outputs on the
unlabelled calibration frames lets the weights absorb the grids; no labels are needed.

The FP32 ONNX runs under torch through a small interpreter of its nodes (:class:`TorchGraph`; onnx2torch
needs torchvision, whose PyPI wheel does not load against the CPU torch this project pins). The result goes
back as a QDQ ONNX (int8 weights + DequantizeLinear; Quantize/DequantizeLinear on activations) that OpenVINO
reads as FakeQuantize and compiles INT8, so the engine runs exactly the grids that were trained. Quantizers
sit where NNCF puts them on OpenVINO (activation inputs of Conv/Gemm/MatMul/Add, per-channel weights),
outside the one float scope of :mod:`heatdeploy.calibration.float_scope`. torch is imported inside
functions: this module loads without it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from heatdeploy.calibration.nncf_quantize import WEIGHT_OPS, channel_axis, quant_sites
from heatdeploy.errors import HeatdeployError
from heatdeploy.spec import ModelSpec

log = logging.getLogger(__name__)

A_LEVELS = 255  # uint8 activations: q in [0, 255]
W_MAX = 127  # int8 weights, narrow range [-127, 127] (NNCF's symmetric weights)


class QatError(HeatdeployError, RuntimeError):
    """The model cannot be fine-tuned here (an op the interpreter does not run, a failed check)."""


@dataclass
class QatOptions:
    """Fine-tuning settings; ``budget_s`` bounds the training loop's wall time (``steps`` its length)."""

    steps: int = 300
    batch: int = 8
    lr: float = 2e-3  # Adam, for every trainable offset (all in units of a quantization step: see _Learner)
    budget_s: float = 300.0
    shift_px: int = 8
    gain: float = 0.1  # brightness/contrast jitter (relative)
    seed: int = 0


@dataclass
class QatReport:
    """What fine-tuning did: the manifest calibration record's ``qat`` entry."""

    steps: int
    seconds: float
    frames: int
    batch: int
    lr: float
    loss_before: float
    loss_after: float
    activation_quantizers: int
    weight_quantizers: int
    float_scope: int
    loss_terms: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"QAT by distillation: {self.steps} steps x {self.batch} on {self.frames} frames in "
                f"{self.seconds:.0f} s, loss {self.loss_before:.4g} -> {self.loss_after:.4g}; "
                f"{self.activation_quantizers} activation / {self.weight_quantizers} weight quantizers")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}


# --- the ONNX graph under torch ----------------------------------------------------------------------


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _needed(nodes: list[onnx.NodeProto], outputs: Sequence[str]) -> list[onnx.NodeProto]:
    """The nodes (in order) the ``outputs`` depend on."""
    want, keep = set(outputs), []
    for node in reversed(nodes):
        if want.intersection(node.output):
            keep.append(node)
            want.update(i for i in node.input if i)
    return keep[::-1]


class TorchGraph:
    """The ONNX graph's nodes run with torch ops, in order; weights/biases of compute ops are tensors to train.

    ``run(x, wq, aq)``: ``wq(name, w)`` / ``aq(tensor_name, t)`` are the quantizer hooks (identity for FP32).
    """

    SUPPORTED = ("Conv", "ConvTranspose", "Clip", "Relu", "Add", "Sub", "Mul", "Div", "Sigmoid", "Softmax",
                 "Transpose", "Reshape", "Flatten", "Concat", "Pad", "Resize", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "Gemm", "MatMul", "Identity")

    def __init__(self, model: onnx.ModelProto, outputs: Sequence[str] | None = None) -> None:
        import torch

        self.torch = torch
        graph = model.graph
        self.outputs = list(outputs) if outputs else [o.name for o in graph.output]
        self.nodes = _needed(list(graph.node), self.outputs)  # a branch no kept output reads is not run
        unknown = sorted({n.op_type for n in self.nodes} - set(self.SUPPORTED) - {"Constant"})
        if unknown:
            raise QatError(f"QAT: the ONNX graph has op(s) the torch interpreter does not run: {', '.join(unknown)}")
        self.consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in self.nodes:  # Constant nodes: values, not ops
            if node.op_type == "Constant":
                self.consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
        self.input = graph.input[0].name
        self.params: dict[str, Any] = {}  # weight/bias initializer -> float tensor (a base the learner offsets)
        for node in self.nodes:
            if node.op_type in WEIGHT_OPS:
                for name in node.input[1:]:
                    if name in self.consts:
                        self.params[name] = torch.from_numpy(np.array(self.consts[name], np.float32))
        self.tconsts = {k: torch.from_numpy(np.array(v)) for k, v in self.consts.items() if k not in self.params}

    def run(self, x: Any, wq: Callable[[str, Any], Any] | None = None, aq: Callable[[str, str, Any], Any] | None = None,
            values: dict[str, Any] | None = None) -> dict[str, Any]:
        """All tensors by name (``values``: overrides for params, e.g. the learner's current weights)."""
        env: dict[str, Any] = {self.input: x}
        values = values or {}

        def get(node: onnx.NodeProto, i: int) -> Any:
            name = node.input[i] if i < len(node.input) else ""
            if not name:
                return None
            if name in self.params:
                t = values.get(name, self.params[name])
                return wq(name, t) if wq is not None and i == 1 and node.op_type in WEIGHT_OPS else t
            t = env[name] if name in env else self.tconsts[name]
            if aq is not None and name in env:
                t = aq(node.name, name, t)
            return t

        for node in self.nodes:
            if node.op_type == "Constant":
                continue
            out = self._op(node, [get(node, i) for i in range(len(node.input))])
            env[node.output[0]] = out
        return env

    def _op(self, node: onnx.NodeProto, a: list[Any]) -> Any:  # noqa: C901 - one dispatch over ONNX op types
        torch, F = self.torch, self.torch.nn.functional
        op, at = node.op_type, _attrs(node)
        if op in ("Conv", "ConvTranspose"):
            pads = list(at.get("pads", [0, 0, 0, 0]))
            if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID") or a[0].dim() != 4:
                raise QatError(f"QAT: {op} {node.name}: only 2-D with explicit pads is supported")
            kw = dict(stride=tuple(at.get("strides", [1, 1])), dilation=tuple(at.get("dilations", [1, 1])),
                      groups=int(at.get("group", 1)))
            if op == "ConvTranspose":
                if pads[0] != pads[2] or pads[1] != pads[3]:
                    raise QatError(f"QAT: ConvTranspose {node.name}: asymmetric pads are not supported")
                return F.conv_transpose2d(a[0], a[1], a[2] if len(a) > 2 else None, padding=(pads[0], pads[1]),
                                          output_padding=tuple(at.get("output_padding", [0, 0])), **kw)
            x = F.pad(a[0], (pads[1], pads[3], pads[0], pads[2])) if any(pads) else a[0]
            return F.conv2d(x, a[1], a[2] if len(a) > 2 else None, **kw)
        if op == "Clip":
            lo = a[1] if len(a) > 1 and a[1] is not None else at.get("min")
            hi = a[2] if len(a) > 2 and a[2] is not None else at.get("max")
            return torch.clamp(a[0], None if lo is None else float(lo), None if hi is None else float(hi))
        simple = {"Relu": F.relu, "Sigmoid": torch.sigmoid, "Identity": lambda t: t,
                  "GlobalAveragePool": lambda t: t.mean(dim=tuple(range(2, t.dim())), keepdim=True)}
        if op in simple:
            return simple[op](a[0])
        binary = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div, "MatMul": torch.matmul}
        if op in binary:
            return binary[op](a[0], a[1])
        if op == "Softmax":
            return torch.softmax(a[0], dim=int(at.get("axis", -1)))
        if op == "Transpose":
            return a[0].permute(*at.get("perm", list(range(a[0].dim()))[::-1]))
        if op == "Reshape":
            shape = [int(s) for s in a[1].tolist()]
            shape = [a[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
            return a[0].reshape(shape)
        if op == "Flatten":
            axis = int(at.get("axis", 1))
            return a[0].reshape(int(np.prod(a[0].shape[:axis])), -1)
        if op == "Concat":
            return torch.cat([t for t in a if t is not None], dim=int(at["axis"]))
        if op == "Pad":
            if at.get("mode", b"constant") != b"constant":
                raise QatError(f"QAT: Pad {node.name} mode {at['mode']!r} is not supported")
            p = [int(v) for v in a[1].tolist()]
            n = len(p) // 2
            torch_pads: list[int] = []
            for d in reversed(range(n)):
                torch_pads += [p[d], p[d + n]]
            value = float(a[2]) if len(a) > 2 and a[2] is not None and a[2].numel() else 0.0
            return F.pad(a[0], torch_pads, value=value)
        if op == "Resize":
            return self._resize(node, at, a)
        if op in ("MaxPool", "AveragePool"):
            pads = list(at.get("pads", [0, 0, 0, 0]))
            if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID") or at.get("ceil_mode", 0):
                raise QatError(f"QAT: {op} {node.name}: auto_pad SAME / ceil_mode are not supported")
            x = F.pad(a[0], (pads[1], pads[3], pads[0], pads[2]),
                      value=float("-inf") if op == "MaxPool" else 0.0) if any(pads) else a[0]
            k, s = tuple(at["kernel_shape"]), tuple(at.get("strides", [1, 1]))
            return F.max_pool2d(x, k, s) if op == "MaxPool" else F.avg_pool2d(x, k, s)
        if op == "Gemm":
            x, w = a[0], a[1]
            x = x.t() if at.get("transA", 0) else x
            w = w.t() if at.get("transB", 0) else w
            y = at.get("alpha", 1.0) * (x @ w)
            return y + at.get("beta", 1.0) * a[2] if len(a) > 2 and a[2] is not None else y
        raise QatError(f"QAT: op {op} ({node.name}) is not supported")

    def _resize(self, node: onnx.NodeProto, at: dict[str, Any], a: list[Any]) -> Any:
        F = self.torch.nn.functional
        mode = at.get("mode", b"nearest").decode()
        ctm = at.get("coordinate_transformation_mode", b"half_pixel").decode()
        scales = a[2] if len(a) > 2 and a[2] is not None and a[2].numel() else None
        sizes = a[3] if len(a) > 3 and a[3] is not None and a[3].numel() else None
        kw: dict[str, Any] = {}
        if sizes is not None:
            kw["size"] = tuple(int(v) for v in sizes.tolist()[2:])
        elif scales is not None:
            kw["scale_factor"] = tuple(float(v) for v in scales.tolist()[2:])
        else:
            raise QatError(f"QAT: Resize {node.name} has neither scales nor sizes")
        if mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
            return F.interpolate(a[0], mode="bilinear", align_corners=ctm == "align_corners", **kw)
        if mode == "nearest" and ctm == "asymmetric" and at.get("nearest_mode", b"floor") == b"floor":
            return F.interpolate(a[0], mode="nearest", **kw)
        raise QatError(f"QAT: Resize {node.name} mode {mode}/{ctm} is not supported")


class Learner:
    """The fake-quant model's trainable state over a :class:`TorchGraph`.

    Every trainable tensor is an offset from the PTQ start in units that make one learning rate fit all:
    weights in their channel's initial quantization step, weight scales in log, activation range ends in
    the initial range width. At step 0 the model is PTQ INT8 with min/max ranges (the comparison point).
    """

    def __init__(self, graph: TorchGraph, model: onnx.ModelProto, acts: dict[str, set[str]], weights: list[str],
                 ranges: dict[str, tuple[float, float]]) -> None:
        torch = graph.torch
        self.g, self.torch, self.acts = graph, torch, acts
        self.runner = graph  # the graph run() executes (a pruned copy of ``graph`` for training)
        self.axis = {w: channel_axis(model, w) for w in weights}
        self.w0, self.s0, self.dw, self.ls = {}, {}, {}, {}
        for w in weights:
            base = graph.params[w]
            ax = self.axis[w] % base.dim()
            dims = tuple(d for d in range(base.dim()) if d != ax)
            amax = base.abs().amax(dim=dims, keepdim=True) if dims else base.abs()
            self.w0[w] = base
            self.s0[w] = torch.clamp(amax / W_MAX, min=1e-12)
            self.dw[w] = torch.zeros_like(base, requires_grad=True)
            self.ls[w] = torch.zeros_like(self.s0[w], requires_grad=True)
        self.biases = {n.input[2]: n.input[1] for n in model.graph.node
                       if n.op_type in WEIGHT_OPS and len(n.input) > 2 and n.input[2] in graph.params
                       and n.input[1] in self.w0}
        self.db = {b: torch.zeros_like(graph.params[b], requires_grad=True) for b in self.biases}
        self.a_s0, self.a_z0, self.a_ls, self.a_dz = {}, {}, {}, {}
        for t, (lo, hi) in ranges.items():
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            scale = max(hi - lo, 1e-6) / A_LEVELS
            self.a_s0[t], self.a_z0[t] = torch.tensor([scale]), torch.tensor([float(np.clip(round(-lo / scale), 0,
                                                                                                  A_LEVELS))])
            self.a_ls[t] = torch.zeros(1, requires_grad=True)
            self.a_dz[t] = torch.zeros(1, requires_grad=True)

    def param_groups(self, lr_w: float, lr_q: float) -> list[dict[str, Any]]:
        return [{"params": [*self.dw.values(), *self.db.values()], "lr": lr_w},
                {"params": [*self.ls.values(), *self.a_ls.values(), *self.a_dz.values()], "lr": lr_q}]

    def weight_scale(self, w: str) -> Any:
        return self.s0[w] * self.ls[w].exp()

    def weight(self, w: str) -> Any:
        return self.w0[w] + self.s0[w] * self.dw[w]

    def bias(self, b: str) -> Any:
        base, w = self.g.params[b], self.biases[b]
        fan_in = max(1, self.w0[w].numel() // max(1, base.numel()))
        return base + self.s0[w].reshape(base.shape) * (fan_in ** 0.5) * self.db[b]

    def _act(self, t: str) -> tuple[Any, Any]:
        """(scale, zero point as a float the quantizer rounds): the zero point moves in units of the range."""
        return self.a_s0[t] * self.a_ls[t].exp(), self.a_z0[t] + A_LEVELS * self.a_dz[t]

    def act_qparams(self, t: str) -> tuple[float, int]:
        """(scale, integer zero point in [0, 255]) of an activation quantizer, as the engine gets them."""
        scale, zero = self._act(t)
        return float(scale), int(np.clip(np.round(float(zero)), 0, A_LEVELS))

    def values(self) -> dict[str, Any]:
        return {**{w: self.weight(w) for w in self.w0}, **{b: self.bias(b) for b in self.db}}

    def wq(self, name: str, w: Any) -> Any:
        """Per-channel symmetric fake quant (LSQ: learned scale, straight-through rounding; torch's fused op)."""
        if name not in self.s0:
            return w
        s = self.weight_scale(name).reshape(-1)
        ax = self.axis[name] % w.dim()
        zero = self.torch.zeros(s.shape)
        return self.torch._fake_quantize_learnable_per_channel_affine(w, s, zero, ax, -W_MAX, W_MAX, 1.0)

    def aq(self, node: str, tensor: str, t: Any) -> Any:
        if node not in self.acts.get(tensor, ()) or tensor not in self.a_s0:
            return t
        scale, zero = self._act(tensor)
        return self.torch._fake_quantize_learnable_per_tensor_affine(t, scale, zero, 0, A_LEVELS, 1.0)

    def run(self, x: Any) -> dict[str, Any]:
        return self.runner.run(x, self.wq, self.aq, self.values())


# --- training -----------------------------------------------------------------------------------------


def collect_ranges(graph: TorchGraph, tensors: Sequence[str], frames: np.ndarray, batch: int = 8
                   ) -> dict[str, tuple[float, float]]:
    """Min/max of each tensor over ``frames`` under FP32 (the PTQ start of the activation quantizers)."""
    torch = graph.torch
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            env = graph.run(torch.from_numpy(np.ascontiguousarray(frames[i:i + batch])))
            for t in tensors:
                v = env[t]
                lo[t] = min(lo.get(t, np.inf), float(v.min()))
                hi[t] = max(hi.get(t, -np.inf), float(v.max()))
    return {t: (lo[t], hi[t]) for t in tensors}


def loss_kinds(spec: ModelSpec) -> dict[str, str]:
    """Output -> loss: the existence output BCE (on probabilities or logits as the spec says), landmarks MSE on
    their coordinates and BCE on their visibility/presence logits, others MSE."""
    kinds = {n: "mse" for n in spec.output_names}
    if spec.landmarks is not None:
        kinds[spec.landmarks.name] = "landmarks"
    if spec.existence is not None:
        kinds[spec.existence.name] = "bce-" + ("prob" if spec.existence.activation == "probabilities" else "logit")
    return kinds


def _scales(teacher: dict[str, np.ndarray], kinds: dict[str, str], spec: ModelSpec) -> dict[str, np.ndarray]:
    """Per output, the teacher's variance (per column for a 2-D output): MSE in units of the teacher's spread.

    Landmark coordinates are in the gate's own unit instead, one heatmap pixel: their spread across frames
    (where the person is) says nothing about how far a point may move."""
    out = {}
    for name, kind in kinds.items():
        t = teacher[name].astype(np.float64)
        if kind not in ("mse", "landmarks"):
            out[name] = np.ones(1, np.float32)
            continue
        var = t.var(axis=0) if t.ndim == 2 else np.array(t.var())
        out[name] = np.maximum(var, 1e-6 * max(float(np.mean(var)), 1e-12)).astype(np.float32)
        if kind == "landmarks" and spec.landmarks is not None:
            stride = float(spec.heatmap.stride) if spec.heatmap is not None else 1.0
            unit = stride if spec.landmarks.coords == "pixels" else stride / spec.input.width
            fields = spec.landmarks.fields
            coord = np.array([f not in ("visibility", "presence") for f in fields] * (t.shape[1] // len(fields)))
            out[name] = np.where(coord, np.float32(unit ** 2), out[name]).astype(np.float32)
    return out


def _kl_logits(torch: Any, s: Any, t: Any) -> Any:
    """KL(teacher || student) of Bernoulli decisions given as logits: 0 when they agree."""
    F = torch.nn.functional
    q = torch.sigmoid(t)
    return F.binary_cross_entropy_with_logits(s, q) - F.binary_cross_entropy_with_logits(t, q)


def distill_loss(torch: Any, student: dict[str, Any], teacher: dict[str, np.ndarray], kinds: dict[str, str],
                 scales: dict[str, np.ndarray], fields: Sequence[str] = ()) -> Any:
    """The sum over the decoded outputs of each term, every term in units of the teacher's own scale.

    ``fields``: the landmarks' per-point fields (visibility/presence are logits of decisions: KL, not MSE)."""
    F = torch.nn.functional
    total = 0.0
    present = None  # the teacher's per-frame existence: where a person is, coordinates mean something
    for name, kind in kinds.items():
        if kind.startswith("bce-"):
            p = torch.from_numpy(teacher[name].astype(np.float32)).reshape(len(teacher[name]), -1)[:, :1]
            present = p if kind == "bce-prob" else torch.sigmoid(p)
    for name, kind in kinds.items():
        s, t = student[name].float(), torch.from_numpy(teacher[name].astype(np.float32))
        if kind == "landmarks":
            n_f = len(fields)
            logit = torch.tensor([f in ("visibility", "presence") for f in fields] * (s.shape[1] // n_f))
            err = ((s - t).square() / torch.as_tensor(scales[name]))[:, ~logit]
            w = torch.ones(len(s), 1) if present is None else present
            total = total + (err * w).sum() / (w.sum() * err.shape[1] + 1e-6) + (
                _kl_logits(torch, s[:, logit], t[:, logit]) if logit.any() else 0)
        elif kind == "mse":
            total = total + ((s - t).square() / torch.as_tensor(scales[name])).mean()
        elif kind == "bce-prob":  # KL(teacher || student) of the Bernoulli decisions: 0 when they agree
            p = torch.clamp(s, 1e-6, 1 - 1e-6)
            q = torch.clamp(t, 1e-6, 1 - 1e-6)
            total = total + (F.binary_cross_entropy(p, q) - F.binary_cross_entropy(q, q))
        else:
            total = total + _kl_logits(torch, s, t)
    return total


def augment(x: np.ndarray, layout: str, rng: np.random.Generator, shift_px: int, gain: float) -> np.ndarray:
    """Mild jitter of preprocessed frames: a shift (edge-padded) and a brightness/contrast change per frame."""
    out = np.empty_like(x)
    hw = (1, 2) if layout == "NHWC" else (2, 3)
    for i in range(len(x)):  # once per training frame, not in the inference path
        dy, dx = (int(v) for v in rng.integers(-shift_px, shift_px + 1, size=2))
        pad = [(0, 0)] * (x.ndim - 1)
        pad[hw[0] - 1], pad[hw[1] - 1] = (max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))
        f = np.pad(x[i], pad, mode="edge")
        h, w = x.shape[hw[0]], x.shape[hw[1]]
        oy, ox = max(-dy, 0), max(-dx, 0)
        f = f[oy:oy + h, ox:ox + w] if layout == "NHWC" else f[:, oy:oy + h, ox:ox + w]
        g = 1.0 + float(rng.uniform(-gain, gain))
        out[i] = (f - f.mean()) * g + f.mean() + float(rng.uniform(-gain, gain)) * float(f.std())
    return out


@dataclass
class Finetuned:
    """The learner after training, the sites it quantizes, and the report."""

    learner: Learner
    report: QatReport
    model: onnx.ModelProto


def finetune(onnx_path: str | Path, spec: ModelSpec, frames: np.ndarray, opts: QatOptions | None = None,
             progress: Callable[[int, int, float], None] | None = None,
             start: tuple[dict[str, tuple[float, float]], dict[str, np.ndarray]] | None = None) -> Finetuned:
    """Distil the FP32 ONNX into its fake-quant self on ``frames`` (preprocessed, as the engine takes them).

    The teacher is ONNX Runtime on the FP32 file (the parity reference); the student the same graph under
    torch with quantizers. Stops at ``opts.steps`` or ``opts.budget_s``; ``progress(step, steps, loss)``.
    """
    import onnxruntime as ort
    import torch

    opts = opts or QatOptions()
    t_start = time.perf_counter()
    model = onnx.load(str(onnx_path))
    kinds = loss_kinds(spec)
    fields = tuple(spec.landmarks.fields) if spec.landmarks is not None else ()
    graph = TorchGraph(model)  # every output: a branch no loss reads (segmentation) is INT8 too, at PTQ ranges
    acts, weights, scope = quant_sites(model, spec)
    ranges = collect_ranges(graph, list(acts), frames)
    if start is not None:  # a PTQ's ranges and corrected biases (NNCF's): training starts from that model
        ranges.update({t: r for t, r in start[0].items() if t in ranges})
        for b, v in start[1].items():
            if b in graph.params and graph.params[b].numel() == v.size:
                graph.params[b] = graph.torch.from_numpy(np.array(v, np.float32).reshape(graph.params[b].shape))
    learner = Learner(graph, model, acts, weights, ranges)
    learner.runner = TorchGraph(model, list(kinds))  # training runs only what the loss reads
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # spinning threads starve torch's
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    torch.set_flush_denormal(True)
    names = list(kinds)

    def teach(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(names, {spec.input.name: x}), strict=True))

    held = frames[: min(len(frames), 16)]
    held_teacher = teach(held)
    scales = _scales(teach(frames[: min(len(frames), 64)]), kinds, spec)

    def held_loss() -> float:
        with torch.no_grad():
            vals = [float(distill_loss(torch, learner.run(torch.from_numpy(held[i:i + opts.batch])),
                                       {k: v[i:i + opts.batch] for k, v in held_teacher.items()}, kinds, scales,
                                       fields)) * len(held[i:i + opts.batch]) for i in range(0, len(held), opts.batch)]
        return float(sum(vals) / len(held))

    before = held_loss()
    optim = torch.optim.Adam(learner.param_groups(opts.lr, opts.lr / 5))
    rng = np.random.default_rng(opts.seed)
    t_train, step = time.perf_counter(), 0
    budget = max(0.0, opts.budget_s - (t_train - t_start))
    base_lr = [g["lr"] for g in optim.param_groups]
    while step < opts.steps:
        elapsed = time.perf_counter() - t_train
        frac = max(step / opts.steps, elapsed / budget if budget > 0 else 1.0)
        if frac >= 1.0:
            break
        for g, lr in zip(optim.param_groups, base_lr, strict=True):  # cosine to 0 by the step or time bound
            g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * frac))
        x = augment(frames[rng.choice(len(frames), size=min(opts.batch, len(frames)), replace=False)],
                    spec.input.layout, rng, opts.shift_px, opts.gain).astype(np.float32)
        loss = distill_loss(torch, learner.run(torch.from_numpy(x)), teach(x), kinds, scales, fields)
        optim.zero_grad()
        loss.backward()
        optim.step()
        step += 1
        if progress is not None:
            progress(step, opts.steps, float(loss.detach()))
    after = held_loss()
    notes = [] if step >= opts.steps else [f"stopped at {step}/{opts.steps} steps by the {opts.budget_s:g} s budget"]
    report = QatReport(steps=step, seconds=round(time.perf_counter() - t_start, 1), frames=len(frames),
                       batch=opts.batch, lr=opts.lr, loss_before=round(before, 6), loss_after=round(after, 6),
                       activation_quantizers=len(learner.a_s0), weight_quantizers=len(learner.w0),
                       float_scope=len(scope), loss_terms=kinds, notes=notes)
    log.info("%s", report.summary())
    return Finetuned(learner, report, model)


# --- back to ONNX: the trained grids as QDQ ------------------------------------------------------------


def write_qdq(tuned: Finetuned, path: str | Path) -> Path:
    """The fine-tuned model as a QDQ ONNX: int8 weights + DequantizeLinear, Q/DQ pairs on activations.

    OpenVINO reads each pair as a FakeQuantize with the same grid the training simulated.
    """
    torch, lr = tuned.learner.torch, tuned.learner
    model = onnx.ModelProto()
    model.CopyFrom(tuned.model)
    graph = model.graph
    with torch.no_grad():
        values = {k: v.detach().numpy() for k, v in lr.values().items()}
        wscale = {w: lr.weight_scale(w).detach().numpy() for w in lr.w0}
        aparams = {t: lr.act_qparams(t) for t in lr.a_s0}
    inits = {i.name: i for i in graph.initializer}
    new_inits, front = [], []
    for w, scale in wscale.items():
        q = np.clip(np.round(values[w] / scale), -W_MAX, W_MAX).astype(np.int8)
        graph.initializer.remove(inits[w])
        axis = lr.axis[w] % q.ndim
        new_inits += [numpy_helper.from_array(q, f"{w}__qat_q"),
                      numpy_helper.from_array(scale.reshape(-1).astype(np.float32), f"{w}__qat_s"),
                      numpy_helper.from_array(np.zeros(q.shape[axis], np.int8), f"{w}__qat_z")]
        front.append(helper.make_node("DequantizeLinear", [f"{w}__qat_q", f"{w}__qat_s", f"{w}__qat_z"], [w],
                                      name=f"{w}__qat_dq", axis=axis))
    for b in lr.db:
        inits[b].CopyFrom(numpy_helper.from_array(values[b].astype(np.float32), b))
    pairs: dict[str, list[onnx.NodeProto]] = {}
    for t, (scale, zero) in aparams.items():
        new_inits += [numpy_helper.from_array(np.array(scale, np.float32), f"{t}__qat_s"),
                      numpy_helper.from_array(np.array(zero, np.uint8), f"{t}__qat_z")]
        pairs[t] = [helper.make_node("QuantizeLinear", [t, f"{t}__qat_s", f"{t}__qat_z"], [f"{t}__qat_q"],
                                     name=f"{t}__qat_quantize"),
                    helper.make_node("DequantizeLinear", [f"{t}__qat_q", f"{t}__qat_s", f"{t}__qat_z"],
                                     [f"{t}__qat_dq"], name=f"{t}__qat_dequantize")]
    graph.initializer.extend(new_inits)
    nodes = list(front)
    for t in (i.name for i in graph.input):
        nodes += pairs.get(t, [])
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in pairs and node.name in lr.acts.get(name, ()):
                node.input[i] = f"{name}__qat_dq"
        nodes.append(node)
        for out in node.output:
            nodes += pairs.get(out, [])
    del graph.node[:]
    graph.node.extend(nodes)
    if all(op.version < 13 for op in model.opset_import if op.domain in ("", "ai.onnx")):
        raise QatError("QAT: per-channel DequantizeLinear needs opset >= 13; re-export the model with a newer opset")
    path = Path(path)
    onnx.save(model, str(path))
    return path


def qat_openvino(tuned: Finetuned, workdir: str | Path) -> Any:
    """The fine-tuned model as an ``ov.Model`` (via its QDQ ONNX in ``workdir``): FakeQuantize, INT8 compiled."""
    import openvino as ov

    return ov.convert_model(str(write_qdq(tuned, Path(workdir) / "model.qat.onnx")))


def progress_logger(every: float = 0.1) -> Callable[[int, int, float], None]:
    """A ``progress`` for :func:`finetune` that logs about every ``every`` of the steps (the CLI shows INFO)."""
    def report(step: int, steps: int, loss: float) -> None:
        if step == 1 or step == steps or step % max(1, int(steps * every)) == 0:
            log.info("QAT step %d/%d (batch loss %.4g)", step, steps, loss)

    return report


__all__ = ["Finetuned", "Learner", "QatError", "QatOptions", "QatReport", "TorchGraph", "finetune",
           "progress_logger", "qat_openvino", "quant_sites", "write_qdq"]
