"""FP32 OpenVINO IR -> INT8 with NNCF post-training quantization, heatmap-aware, on heatdeploy's data path.

The calibration samples come from :func:`heatdeploy.calibration.sources.open_source` — the same stream, the
same runtime preprocessing, the same record as the ORT quantizer — wrapped in an ``nncf.Dataset`` one
sample at a time (so NNCF's ``subset_size`` counts images, and its per-sample statistics are not mixed
with batching).

What stays float is the one rule of :mod:`heatdeploy.calibration.float_scope` (head tails, readers of
outputs, saturating ops), applied to the IR's own view so the names are the ones NNCF sees. They go to
NNCF as an ``IgnoredScope`` with a reason each.

``accuracy_control`` (a PCK drop budget in points) runs ``nncf.quantize_with_accuracy_control`` with
heatdeploy's keypoint metric as its validation function: PCK@alpha against ground truth when the
validation split is labelled, else against the FP32 model's own keypoints. The plain INT8 model is
measured first; only when it misses the budget does NNCF revert layers, and the report names each layer
that went back to float by comparing the two graphs (NNCF does not return that list).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any

import nncf
import numpy as np
import openvino as ov

from heatdeploy.calibration.float_scope import LayerInfo, constant_flags, float_layers, saturating_layers
from heatdeploy.calibration.float_scope import output_tails as _tails
from heatdeploy.calibration.sources import CalibrationError, CalibrationSource
from heatdeploy.spec import ModelSpec

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

COMPUTE_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
                 "MatMul")
PASS_THROUGH_TYPES = ("Reshape", "Squeeze", "Unsqueeze", "Transpose", "Convert")
# Ops a quantized activation passes through unchanged in kind (LPT keeps them in INT8 on CPU).
_ACTIVATION_PATH = PASS_THROUGH_TYPES + ("ReduceMean", "AvgPool", "MaxPool", "Concat")
_WEIGHT_PATH = ("Convert", "Multiply", "Subtract", "Reshape", "Transpose", "Unsqueeze", "Squeeze")
_LOW_BIT = ("i8", "u8", "i4", "u4")
PRESETS = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
TARGET_DEVICES = {d.value.lower(): d for d in nncf.TargetDevice}
KEEP_MODES = ("base", "none")
DEFAULT_VALIDATION = 200  # images the accuracy-control metric runs on
DEFAULT_RANKING = 100  # images NNCF's layer ranking runs on (it validates once per quantizer group)
MISSING_SHOWN = 5  # unknown keep_fp32 names named in the error; the rest are counted
DEFAULT_MAX_ITERATIONS = 20  # layers reverted one group at a time, each with a full validation


# --- what stays float ------------------------------------------------------------------------------


def _tensor(port: ov.Output) -> str:
    """A tensor's name in the float-scope view: its first name, else producer:index (unique in the IR)."""
    return port.get_any_name() if port.get_names() else f"{port.get_node().get_friendly_name()}:{port.get_index()}"


def layer_view(model: ov.Model) -> list[LayerInfo]:
    """The IR as the float-scope rule's neutral view; ops computed only from constants (weight
    decompression) are marked constant in one forward pass (no recursion over the graph's depth)."""
    rows = [LayerInfo(op.get_friendly_name(), op.get_type_name(),
                      tuple(_tensor(i.get_source_output()) for i in op.inputs()),
                      tuple(_tensor(o) for o in op.outputs()))
            for op in model.get_ordered_ops() if op.get_type_name() != "Result"]
    return constant_flags(rows)


def _outputs(model: ov.Model) -> list[str]:
    return [_tensor(r.input(0).get_source_output()) for r in model.get_results()]


def output_tails(model: ov.Model, *, through: Iterable[str] | None = None,
                 last_compute: bool | Collection[str] = True) -> dict[str, str]:
    """Ops whose quantization would quantize a graph output (or what reads it), with the reason for each:
    :func:`heatdeploy.calibration.float_scope.output_tails` on the IR (``through``: value-moving ops only).

    The compute op itself is included for the outputs ``last_compute`` names (True: all, False: none).
    NNCF puts FakeQuantize on an op's inputs, so an INT8 head conv still hands float values on when every
    op after it is ignored (ORT's QDQ, unlike this, also quantizes a quantized conv's output); what INT8
    weights and inputs cost is precision inside the head: the reference's heatmap SNR fell from 28.6 to
    17.1 dB with its last conv INT8. :func:`float_scope` therefore keeps the last layer float for the
    outputs the spec decodes and lets the others (segmentation maps, auxiliary vectors) run it INT8.
    """
    return _tails(layer_view(model), _outputs(model), move_only=through is not None, last_compute=last_compute)


def saturating_nodes(model: ov.Model) -> dict[str, str]:
    """Sigmoid/Softmax anywhere: their outputs crowd into a tiny range that 8 bits resolve badly."""
    return saturating_layers(layer_view(model))


def float_scope(model: ov.Model, keep_fp32: str | Sequence[str] = "base",
                decoded: Collection[str] | None = None) -> dict[str, str]:
    """IR op name -> why it stays float. ``base``: head tails + Sigmoid/Softmax; ``none``: only what keeps the
    outputs' values float (tails through reshapes); a list of names (or a name -> reason mapping): ``base``
    plus those ops.

    ``decoded``: the outputs the spec decodes; only their heads keep the last conv float (default: all).
    """
    mode, names = _keep_mode(keep_fp32)
    last: bool | Collection[str] = True if decoded is None else set(decoded)
    scope = float_layers(layer_view(model), _outputs(model), mode, last_compute=last)
    if names:
        known = [op.get_friendly_name() for op in model.get_ordered_ops()]
        missing = [n for n in names if n not in set(known)]
        if missing:
            shown = missing[:MISSING_SHOWN]  # one readable line even when a whole list is wrong
            hints = "; ".join(f"{n!r}" + (f" (did you mean {', '.join(map(repr, get_close_matches(n, known, 2)))}?)"
                                          if get_close_matches(n, known, 2) else "") for n in shown)
            if len(missing) > len(shown):
                hints += f" and {len(missing) - len(shown)} more of the {len(names)} given"
            raise CalibrationError(f"keep_fp32: no op named {hints} in the OpenVINO IR; names are the IR's "
                                   "friendly names (see the artifact's calibration record)")
        reasons = keep_fp32 if isinstance(keep_fp32, Mapping) else {}
        for n in names:
            scope.setdefault(n, str(reasons.get(n, "requested (keep_fp32)")))
    return scope


def _keep_mode(keep_fp32: str | Sequence[str]) -> tuple[str, list[str]]:
    if isinstance(keep_fp32, str):
        return (keep_fp32, []) if keep_fp32 in KEEP_MODES else ("base", [keep_fp32])
    names = [str(n) for n in keep_fp32]
    if len(names) == 1 and names[0] in KEEP_MODES:
        return names[0], []
    return "base", names


# --- what runs INT8 --------------------------------------------------------------------------------


def _reaches(port: ov.Output, through: Sequence[str], stop: Callable[[ov.Node], bool], depth: int = 8) -> bool:
    node = port.get_node()
    if stop(node):
        return True
    if depth == 0 or node.get_type_name() not in through:
        return False
    return any(_reaches(i.get_source_output(), through, stop, depth - 1) for i in node.inputs())


def _is_fq(node: ov.Node) -> bool:
    return node.get_type_name() in ("FakeQuantize", "FakeConvert")


def _is_low_bit_weight(node: ov.Node) -> bool:
    return _is_fq(node) or (node.get_type_name() == "Constant" and node.get_element_type().get_type_name()
                            in _LOW_BIT)


def layer_precisions(model: ov.Model) -> dict[str, str]:
    """Compute op name -> "int8" (activations and weights), "float", or which half is INT8."""
    out: dict[str, str] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() not in COMPUTE_TYPES:
            continue
        act = _reaches(op.input(0).get_source_output(), _ACTIVATION_PATH, _is_fq)
        wgt = op.get_input_size() > 1 and _reaches(op.input(1).get_source_output(), _WEIGHT_PATH,
                                                   _is_low_bit_weight)
        out[op.get_friendly_name()] = ("int8" if act and wgt else "float" if not (act or wgt)
                                       else "int8 activations, float weights" if act
                                       else "int8 weights, float activations")
    return out


def quantized_inputs(model: ov.Model, names: Iterable[str]) -> dict[str, bool]:
    """For each named op: does any of its inputs come (directly or through a reshape) from a FakeQuantize?"""
    wanted = set(names)
    return {op.get_friendly_name(): any(_reaches(i.get_source_output(), PASS_THROUGH_TYPES, _is_fq)
                                        for i in op.inputs())
            for op in model.get_ordered_ops() if op.get_friendly_name() in wanted}


# --- data ------------------------------------------------------------------------------------------


class SampleStream:
    """A re-iterable stream of single-sample ``[1, ...]`` model inputs over a CalibrationSource.

    The source is read in ``batch_size`` batches (preprocessing is batched) and handed to NNCF one sample
    at a time: its ``subset_size`` then counts images and its statistics are per sample.
    """

    def __init__(self, source: CalibrationSource, batch_size: int = 8) -> None:
        self.source = source
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.source.count

    def __iter__(self) -> Iterator[np.ndarray]:
        for batch in self.source.batches(self.batch_size):
            for i in range(len(batch)):
                yield np.ascontiguousarray(batch[i:i + 1], dtype=np.float32)


def compile_f32(model: ov.Model) -> ov.CompiledModel:
    """CPU, f32 precision: what validation must use (OpenVINO would pick bf16 on a bf16 CPU)."""
    from heatdeploy.runtime.backends.openvino import core

    return core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})


class KeypointValidator:
    """heatdeploy's keypoint metric as an NNCF validation function: PCK@alpha in points (0-100).

    Against ground truth (visible keypoints) when the split has it; otherwise against the FP32 model's
    keypoints (those FP32 calls present), so the FP32 model scores 100. Images are preprocessed once by
    the runtime's preprocessor; NNCF's data items are image indices.
    """

    def __init__(self, spec: ModelSpec, data: Any, fp32_model: ov.Model, *, alpha: float = 0.05,
                 batch_size: int = 8) -> None:
        from heatdeploy.runtime.metrics import diagonal
        from heatdeploy.runtime.preprocess import Preprocessor

        self.spec, self.alpha, self.batch_size = spec, float(alpha), int(batch_size)
        pre = Preprocessor(spec.input)
        tensors, transforms, sizes = [], [], []
        n = len(data)
        for start in range(0, n, self.batch_size):
            images = data.load(start, min(start + self.batch_size, n))
            boxes = None
            if spec.input.resize == "crop":  # whole image as the person box, as calibration and parity do
                boxes = np.array([[0.0, 0.0, im.shape[1] - 1.0, im.shape[0] - 1.0] for im in images])
            b = pre(images, boxes)
            tensors.append(b.tensor)
            transforms.append(b.transforms)
            sizes.append(np.asarray(b.image_sizes))
        if not tensors:
            raise CalibrationError(f"{data.source}: the validation split holds no images")
        self.tensors = np.concatenate(tensors).astype(np.float32)
        self.transforms = np.concatenate(transforms)
        self.image_sizes = np.concatenate(sizes)
        self.limit = self.alpha * diagonal(self.image_sizes)[:, None]
        self.data_record = data.record()
        truth = data.truth
        if truth is not None and np.asarray(truth.visible, bool).any():
            self.mode = "truth"
            self.target = np.asarray(truth.keypoints, np.float64)
            self.mask = np.asarray(truth.visible, bool)
        else:
            self.mode = "fp32"
            from heatdeploy.parity import compared_mask

            ref = self.keypoints(compile_f32(fp32_model))  # the parity gate's mask: FP32 present, finite
            self.target, self.mask = ref.coords_img.astype(np.float64), compared_mask(ref)
        self.name = (f"PCK@{self.alpha:g} vs ground truth (points)" if self.mode == "truth"
                     else f"PCK@{self.alpha:g} vs FP32 keypoints (points)")
        self.calls = 0

    def __len__(self) -> int:
        return len(self.tensors)

    def item(self, index: int) -> np.ndarray:
        """The model input for one data item (NNCF's transform_fn)."""
        return self.tensors[index:index + 1]

    def keypoints(self, compiled: ov.CompiledModel, indices: Sequence[int] | None = None) -> Any:
        """Decoded keypoints (runtime codec) of ``indices`` (all when None) for a compiled model."""
        from heatdeploy.parity import KeypointSet, decode_keypoints

        idx = np.arange(len(self.tensors)) if indices is None else np.asarray(list(indices), np.int64)
        request = compiled.create_infer_request()
        input_name = compiled.inputs[0].get_any_name()
        names = self.spec.output_names
        parts = []
        for start in range(0, len(idx), self.batch_size):
            chunk = idx[start:start + self.batch_size]
            res = request.infer({input_name: self.tensors[chunk]})
            outputs = {n: np.asarray(res[compiled.output(n)]) for n in names}
            parts.append(decode_keypoints(self.spec, outputs, self.transforms[chunk]))
        return KeypointSet.concat(parts)

    def per_item(self, compiled: ov.CompiledModel, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Correct and counted keypoints per item."""
        idx = np.asarray(list(indices), np.int64)
        kps = self.keypoints(compiled, idx)
        from heatdeploy.parity import keypoint_distance

        d = keypoint_distance(kps.coords_img.astype(np.float64), self.target[idx])  # the gate's displacement
        mask = self.mask[idx]
        ok = (d <= self.limit[idx]) & mask
        return ok.sum(axis=1), mask.sum(axis=1)

    def evaluate(self, compiled: ov.CompiledModel, indices: Sequence[int] | None = None) -> float:
        """The metric over ``indices`` (all when None)."""
        idx = range(len(self.tensors)) if indices is None else indices
        return self(compiled, idx)[0]

    def __call__(self, compiled: ov.CompiledModel, items: Iterable[Any]) -> tuple[float, list[float]]:
        """NNCF's ``validation_fn``: (metric, metric per item) — per item lets NNCF rank layers by metric."""
        self.calls += 1
        idx = [int(i) for i in items]
        ok, count = self.per_item(compiled, idx)
        total = int(count.sum())
        metric = 100.0 * float(ok.sum()) / total if total else 100.0
        per = np.where(count > 0, 100.0 * ok / np.maximum(count, 1), 100.0)
        return metric, [float(v) for v in per]


# --- the pipeline ----------------------------------------------------------------------------------


@dataclass
class NncfQuantizeReport:
    """What NNCF quantized, from which data, what stayed float and why, and what accuracy control did."""

    tool: str
    preset: str
    options: dict[str, Any]
    excluded: dict[str, str]  # IR op -> why it stays float (the IgnoredScope)
    calibration: dict[str, Any]  # the data record (same shape as the ORT quantizer's)
    layers: dict[str, str]  # compute op -> int8 | float | half
    accuracy_control: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def reverted(self) -> list[str]:
        """Layers accuracy control sent back to float."""
        return list((self.accuracy_control or {}).get("reverted_to_fp32", []))

    def summary(self) -> str:
        """One line: preset, data, INT8 layer count, float scope, accuracy control outcome."""
        n_int8 = sum(v == "int8" for v in self.layers.values())
        text = (f"NNCF INT8 ({self.preset}) on {self.calibration.get('count')} {self.calibration.get('kind')} samples: "
                f"{n_int8}/{len(self.layers)} compute layers INT8; {len(self.excluded)} ops kept float")
        ac = self.accuracy_control
        if ac:
            text += (f"; accuracy control ({ac['metric']}, budget {ac['max_drop']:g}): FP32 {ac['fp32']:.2f}, "
                     f"INT8 {ac['int8_before']:.2f} -> final {ac['final']:.2f}")
            text += (f"; reverted to FP32: {', '.join(self.reverted)}" if self.reverted
                     else "; no layer reverted")
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_manifest(self) -> dict[str, Any]:
        """The bundle's calibration record for the artifact."""
        return {**self.to_dict(), "summary": self.summary()}


QUANT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add")  # NNCF (OpenVINO CPU) quantizes their activation inputs
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
PROPAGATE_OPS = ("Pad", "MaxPool", "Transpose", "Reshape", "Flatten", "Identity")


# --- where NNCF's quantizers sit on OpenVINO, in ONNX terms (QAT's placement) ---------------------------


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    from onnx import helper  # onnx only where an ONNX graph is at hand

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def quant_sites(model: onnx.ModelProto, spec: ModelSpec) -> tuple[dict[str, set[str]], list[str], dict[str, str]]:
    """(activation tensor -> the nodes that read it quantized, quantized weight initializers, float scope).

    The float scope is OpenVINO INT8's own rule (head tails of the decoded outputs keep their last conv
    float, saturating ops stay float); a node in it reads float inputs.
    """
    from heatdeploy.calibration.graph import layer_view as onnx_layer_view

    scope = float_layers(onnx_layer_view(model), [o.name for o in model.graph.output], "base",
                         last_compute=set(spec.output_names))
    inits = {i.name for i in model.graph.initializer}
    consts = inits | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    acts: dict[str, set[str]] = {}
    weights: list[str] = []
    for node in model.graph.node:
        if node.op_type not in QUANT_OPS or node.name in scope:
            continue
        for i, name in enumerate(node.input):
            if not name:
                continue
            if name in consts:
                if i == 1 and node.op_type in WEIGHT_OPS and name in inits:
                    weights.append(name)
                continue
            acts.setdefault(name, set()).add(node.name)
    return _propagate_up(model, acts, consts), weights, scope


def _propagate_up(model: onnx.ModelProto, acts: dict[str, set[str]], consts: set[str]) -> dict[str, set[str]]:
    """Move a quantizer above the value-moving op that produced its tensor, as NNCF does on OpenVINO: a
    quantized Pad/MaxPool/Transpose runs INT8 (a Pad folds into the conv) instead of a float op followed by a
    standalone FakeQuantize. Only when every reader of the tensor was quantized there (same values)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, set[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, set()).add(n.name)
    moved = True
    while moved:
        moved = False
        for t in list(acts):
            node = producer.get(t)
            if node is None or node.op_type not in PROPAGATE_OPS or acts[t] != readers.get(t, set()):
                continue
            src = node.input[0]
            if src in consts:
                continue
            del acts[t]
            acts.setdefault(src, set()).add(node.name)
            moved = True
    return acts


def channel_axis(model: onnx.ModelProto, weight: str) -> int:
    """The output-channel axis of a weight: 0 for Conv and transB Gemm, 1 for ConvTranspose, else the last."""
    for node in model.graph.node:
        if len(node.input) > 1 and node.input[1] == weight:
            if node.op_type == "Conv" or (node.op_type == "Gemm" and _attrs(node).get("transB", 0)):
                return 0
            return 1 if node.op_type == "ConvTranspose" else -1
    return 0


def qat_start(ir: ov.Model, model: Any, spec: ModelSpec) -> tuple[dict[str, tuple[float, float]],
                                                                   dict[str, np.ndarray]]:
    """An NNCF INT8 IR's per-tensor activation ranges and bias-corrected biases, keyed by the ONNX tensors /
    bias initializers they belong to: QAT starts from that model, not from min/max without bias correction.

    OpenVINO keeps the ONNX tensor names on its ports; a quantizer NNCF put past a value-moving op
    (Pad, Transpose...) belongs to that op's input, as :func:`quant_sites` places it. ``model``: the
    ``onnx.ModelProto`` the IR was converted from."""
    acts = quant_sites(model, spec)[0]
    alias = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type in PROPAGATE_OPS}
    conv_bias = {n.output[0]: n.input[2] for n in model.graph.node if n.op_type in WEIGHT_OPS and len(n.input) > 2}
    ranges: dict[str, tuple[float, float]] = {}
    biases: dict[str, np.ndarray] = {}
    for op in ir.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "FakeQuantize" and op.input_value(1).get_node().get_type_name() == "Constant":
            lo, hi = (op.input_value(i).get_node().get_data() for i in (1, 2))
            if lo.size != 1:
                continue  # per-channel: a weight quantizer
            for t in op.input_value(0).get_names():
                while t in alias and t not in acts:
                    t = alias[t]
                if t in acts:
                    ranges.setdefault(t, (float(lo.min()), float(hi.max())))
        elif kind == "Add":
            names = [n for n in op.output(0).get_names() if n in conv_bias]
            consts = [op.input_value(i).get_node() for i in range(2)
                      if op.input_value(i).get_node().get_type_name() == "Constant"]
            if names and consts:
                biases[conv_bias[names[0]]] = consts[0].get_data().reshape(-1).astype(np.float32)
    return ranges, biases


def quantize_openvino_int8(
    model: ov.Model,
    spec: ModelSpec,
    source: CalibrationSource,
    *,
    preset: str = "mixed",
    subset_size: int | None = None,
    keep_fp32: str | Sequence[str] = "base",
    target_device: str = "any",
    fast_bias_correction: bool = True,
    calib_batch: int = 8,
    accuracy_control: float | None = None,
    validation: Any = None,
    pck_alpha: float = 0.05,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    ranking_subset_size: int | None = DEFAULT_RANKING,
    ranking_workers: int | None = 1,
) -> tuple[ov.Model, NncfQuantizeReport]:
    """Quantize a float ``ov.Model`` with NNCF on ``source``; returns the INT8 model and its report.

    ``preset``: "mixed" (symmetric weights, asymmetric activations: NNCF's advice for models with
    non-ReLU activations or biased inputs) or "performance" (symmetric both, fastest kernels).
    ``subset_size``: calibration samples NNCF uses (default: all the source yields).
    ``accuracy_control``: maximal PCK drop in points; needs ``validation`` (a Dataset from
    :func:`heatdeploy.datasets.load_dataset`). ``max_iterations`` bounds how many layer groups
    NNCF may revert, ``ranking_subset_size`` how many images rank them, ``ranking_workers`` its threads.
    """
    t_start = time.perf_counter()
    if preset not in PRESETS:
        raise CalibrationError(f"preset {preset!r}: choose {' or '.join(PRESETS)}")
    device = TARGET_DEVICES.get(str(target_device).lower())
    if device is None:
        raise CalibrationError(f"target_device {target_device!r}: choose one of {', '.join(TARGET_DEVICES)}")
    if accuracy_control is not None and (accuracy_control < 0 or not np.isfinite(accuracy_control)):
        raise CalibrationError(f"accuracy control: the PCK drop budget must be >= 0 points, got {accuracy_control}")
    if accuracy_control is not None and validation is None:
        raise CalibrationError("accuracy control needs a validation split (labelled folder, image folder or "
                               "synthetic:N)")
    if subset_size is not None and subset_size < 1:
        raise CalibrationError(f"subset_size must be >= 1, got {subset_size}")
    excluded = float_scope(model, keep_fp32, decoded=spec.output_names)
    ignored = nncf.IgnoredScope(names=sorted(excluded), validate=True)
    stream = SampleStream(source, calib_batch)
    subset = subset_size or max(1, source.count)
    dataset = nncf.Dataset(stream)
    common = dict(preset=PRESETS[preset], target_device=device, subset_size=subset,
                  fast_bias_correction=fast_bias_correction, ignored_scope=ignored)
    options: dict[str, Any] = {
        "preset": preset, "target_device": device.value, "subset_size": subset,
        "fast_bias_correction": fast_bias_correction, "keep_fp32": _keep_mode(keep_fp32)[0]
        if not _keep_mode(keep_fp32)[1] else sorted(_keep_mode(keep_fp32)[1]),
        "calib_batch": calib_batch, "samples_per_nncf_item": 1, "nncf": nncf.__version__,
        "openvino": ov.get_version(),
    }
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        quantized = nncf.quantize(model, dataset, **common)
    except nncf.ValidationError as exc:
        raise CalibrationError(f"NNCF refused the quantization settings ({exc})") from None
    timings["quantize_s"] = time.perf_counter() - t0
    record = source.record()
    plain_layers = layer_precisions(quantized)
    ac_record: dict[str, Any] | None = None
    notes: list[str] = []
    if accuracy_control is not None:
        quantized, ac_record = _accuracy_control(
            model, quantized, plain_layers, spec, dataset, common, validation, float(accuracy_control), pck_alpha,
            max_iterations, ranking_subset_size, ranking_workers, timings)
        if not ac_record["reached"]:
            notes.append(f"accuracy control did not reach the budget of {accuracy_control:g} points "
                         f"(final drop {ac_record['final_drop']:.2f}); the best model found is kept")
    layers = layer_precisions(quantized)
    lost = [n for n, v in plain_layers.items() if v != "int8" and n not in excluded]
    if lost:
        notes.append(f"layers NNCF left float on its own: {', '.join(lost)}")
    timings["total_s"] = time.perf_counter() - t_start
    report = NncfQuantizeReport(tool="nncf", preset=preset, options=options, excluded=excluded, calibration=record,
                                layers=layers, accuracy_control=ac_record, timings=timings, notes=notes)
    log.info("%s", report.summary())
    return quantized, report


def _accuracy_control(model: ov.Model, plain: ov.Model, plain_layers: dict[str, str], spec: ModelSpec,
                      dataset: nncf.Dataset, common: dict[str, Any], validation: Any, max_drop: float,
                      alpha: float, max_iterations: int, ranking_subset_size: int | None,
                      ranking_workers: int | None, timings: dict[str, float]) -> tuple[ov.Model, dict[str, Any]]:
    """Measure the plain INT8 model; if it misses the budget let NNCF revert layers; name what went back."""
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    t0 = time.perf_counter()
    validator = KeypointValidator(spec, validation, model, alpha=alpha)
    fp32_metric = validator.evaluate(compile_f32(model))
    before = validator.evaluate(compile_f32(plain))
    timings["validate_s"] = time.perf_counter() - t0
    n = len(validator)
    ranking = min(ranking_subset_size or n, n)
    record: dict[str, Any] = {
        "metric": validator.name, "mode": validator.mode, "max_drop": max_drop, "drop_type": "absolute (points)",
        "validation": validator.data_record, "images": n, "fp32": fp32_metric, "int8_before": before,
        "drop_before": fp32_metric - before, "max_iterations": max_iterations, "ranking_subset_size": ranking,
        "nncf_ran": False,
    }
    final_model = plain
    if fp32_metric - before > max_drop:
        t0 = time.perf_counter()
        val_data = nncf.Dataset(list(range(n)), validator.item)
        params = AdvancedAccuracyRestorerParameters(max_num_iterations=max_iterations, ranking_subset_size=ranking,
                                                    num_ranking_workers=ranking_workers)
        final_model = nncf.quantize_with_accuracy_control(
            model, dataset, val_data, validator, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=params, **common)
        record["nncf_ran"] = True
        timings["accuracy_control_s"] = time.perf_counter() - t0
    final = validator.evaluate(compile_f32(final_model)) if final_model is not plain else before
    final_layers = layer_precisions(final_model)
    record.update({
        "final": final, "final_drop": fp32_metric - final, "reached": fp32_metric - final <= max_drop,
        "reverted_to_fp32": [name for name, v in plain_layers.items() if v != "float"
                             and final_layers.get(name) == "float"],
        "partly_reverted": {name: final_layers[name] for name, v in plain_layers.items()
                            if v == "int8" and final_layers.get(name) not in ("int8", "float", None)},
        "validation_calls": validator.calls,
    })
    return final_model, record


__all__ = [
    "KeypointValidator", "NncfQuantizeReport", "PROPAGATE_OPS", "QUANT_OPS", "SampleStream", "WEIGHT_OPS",
    "channel_axis", "float_scope", "layer_precisions", "output_tails", "qat_start", "quant_sites",
    "quantize_openvino_int8", "quantized_inputs", "saturating_nodes",
]
