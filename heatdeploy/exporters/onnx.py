"""torch -> ONNX with the spec embedded, a portable offline optimisation, and an on-the-spot parity check.

Exporter choice: torch's dynamo exporter only emits opset >= 18 and cannot down-convert ReduceMean, so
opset <= 17 goes through the TorchScript exporter (``dynamo=False``) and opset >= 18 through dynamo.
torch, onnx and onnxruntime are imported inside the functions, so the spec helpers here
(:func:`embed_spec`, :func:`read_spec`, :func:`check_spec_against_graph`) stay cheap to import.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heatdeploy.errors import HeatdeployError
from heatdeploy.fsutil import atomic_path
from heatdeploy.spec import METADATA_KEY, ModelSpec, SpecError

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch

log = logging.getLogger(__name__)

MIN_OPSET = 11  # older opsets lack the Resize/ReduceMean forms heatmap heads need
DYNAMO_MIN_OPSET = 18
BATCH_AXIS = "N"
_DEFAULT_DOMAINS = ("", "ai.onnx")


class OnnxExportError(HeatdeployError, RuntimeError):
    """The export ran but produced something that cannot be trusted; the message says what and why."""


class OnnxFileError(HeatdeployError, ValueError):
    """An ONNX file that cannot be read; the one-line message names the file."""


@dataclass
class OnnxExportReport:
    """What :func:`export_onnx` wrote and how far its outputs are from torch (goes into the manifest)."""

    path: Path
    opset: int
    exporter: str  # "torchscript" | "dynamo"
    max_abs_diff: dict[str, float]  # output name -> max |onnxruntime FP32 - torch|; {} when not checked
    optimized: bool  # the onnxruntime BASIC-level optimised graph was kept
    num_nodes: int
    tools: dict[str, str]
    notes: list[str] = field(default_factory=list)  # e.g. why the optimised graph was dropped


# --- spec <-> graph ------------------------------------------------------------------------------------
def embed_spec(model_proto: onnx.ModelProto, spec: ModelSpec) -> None:
    """Store the spec as compact JSON under ``metadata_props[METADATA_KEY]``, replacing an older one."""
    keep = [p for p in model_proto.metadata_props if p.key != METADATA_KEY]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(keep)
    entry = model_proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = spec.to_json(indent=None)


def read_spec(path_or_proto: str | Path | onnx.ModelProto) -> ModelSpec | None:
    """The spec embedded in an ONNX model, or None when it carries none (a bad spec raises SpecError)."""
    if isinstance(path_or_proto, (str, Path)):
        proto = load_model_proto(path_or_proto)
        source = f"{path_or_proto}: metadata {METADATA_KEY}"
    else:
        proto = path_or_proto
        source = f"ONNX metadata {METADATA_KEY}"
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return ModelSpec.from_json(prop.value, source)
    return None


def load_model_proto(path: str | Path, *, load_external_data: bool = False) -> onnx.ModelProto:
    """Read an ONNX file, turning every way it can be unreadable into a one-line OnnxFileError."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise OnnxFileError(f"{p}: no such ONNX file; check the path")
    try:
        proto = onnx.load(str(p), load_external_data=load_external_data)
    except Exception as exc:  # protobuf DecodeError, OSError, external-data errors, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OnnxFileError(f"{p}: not a readable ONNX model ({first}); re-export it") from None
    # protobuf parses some garbage without complaint: insist on the parts every model has
    if not proto.opset_import or not proto.graph.output:
        raise OnnxFileError(f"{p}: not a readable ONNX model (no graph outputs or opset); re-export it")
    return proto


def value_dims(value_info: onnx.ValueInfoProto) -> list[int | str | None] | None:
    """Shape as ints (static), strings (named dynamic) or None (unknown); None when the rank is unknown."""
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _fmt_shape(dims: list[int | str | None] | None) -> str:
    if dims is None:
        return "[?]"
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


def _fmt_values(values: Sequence[onnx.ValueInfoProto]) -> str:
    return ", ".join(f"{v.name} {_fmt_shape(value_dims(v))}" for v in values) or "(none)"


def graph_inputs(model_proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: old IR versions also list initializers as graph inputs."""
    init = {i.name for i in model_proto.graph.initializer}
    return [v for v in model_proto.graph.input if v.name not in init]


def _check_other_heads(spec: ModelSpec, by_out: dict[str, Any], outputs: Any) -> None:
    """SimCC, centre and landmark outputs: K and sizes the spec implies vs the graph's fixed dims."""
    k, si = spec.num_keypoints, spec.input
    want: dict[str, tuple[int | None, ...]] = {}
    if spec.simcc is not None:
        r = spec.simcc.split_ratio
        want[spec.simcc.x_name] = (None, k, round(si.width * r))
        want[spec.simcc.y_name] = (None, k, round(si.height * r))
    if spec.centers is not None:
        c = spec.centers
        h, w = si.height // c.stride, si.width // c.stride
        nchw = c.layout == "NCHW"
        want[c.name] = (None, 1, h, w) if nchw else (None, h, w, 1)
        want[c.offsets] = (None, 2 * k, h, w) if nchw else (None, h, w, 2 * k)
    if spec.landmarks is not None:
        want[spec.landmarks.name] = (None, k * len(spec.landmarks.fields))
    for name, shape in want.items():
        dims = value_dims(by_out[name])
        if dims is None:
            continue
        if len(dims) != len(shape) or any(isinstance(g, int) and w is not None and g != w
                                          for g, w in zip(dims, shape, strict=True)):
            raise SpecError(f"output {name!r} is {_fmt_shape(dims)} but the spec implies "
                            f"{_fmt_shape([BATCH_AXIS, *shape[1:]])} ({k} keypoints); the graph outputs are: "
                            f"{_fmt_values(outputs)}")


def check_spec_against_graph(model_proto: onnx.ModelProto, spec: ModelSpec) -> None:
    """Raise SpecError when the spec does not describe this graph, saying what the graph actually has.

    Checks the input name and its static dims against layout/H/W/C, that every spec output exists,
    the heatmap channel count (or the ``heatmap.channels`` selection) against the keypoints, the
    heatmap size against input size / stride, and the existence width (K per keypoint, 1 per instance).
    Dynamic (named or unknown) dims are not checked.
    """
    inputs = graph_inputs(model_proto)
    outputs = list(model_proto.graph.output)
    by_in = {v.name: v for v in inputs}
    by_out = {v.name: v for v in outputs}
    si, k = spec.input, spec.num_keypoints

    if si.name not in by_in:
        raise SpecError(f"spec names input {si.name!r} but the graph inputs are: {_fmt_values(inputs)}")
    dims = value_dims(by_in[si.name])
    if dims is not None:
        want = [None, si.channels, si.height, si.width] if si.layout == "NCHW" else \
               [None, si.height, si.width, si.channels]
        bad = len(dims) != 4 or any(
            isinstance(g, int) and w is not None and g != w for g, w in zip(dims, want, strict=True)
        )
        if bad:
            raise SpecError(
                f"spec input {si.name!r} is {si.layout} {_fmt_shape([BATCH_AXIS, *want[1:]])} but the graph "
                f"inputs are: {_fmt_values(inputs)}; fix input.layout/height/width/channels in the spec"
            )

    for name in spec.output_names:
        if name not in by_out:
            raise SpecError(f"spec names output {name!r} but the graph outputs are: {_fmt_values(outputs)}")

    _check_other_heads(spec, by_out, outputs)
    hs = spec.heatmap
    hdims = value_dims(by_out[hs.name]) if hs is not None else None
    if hs is not None and hdims is not None:
        if len(hdims) != 4:
            raise SpecError(f"heatmap {hs.name!r} must be 4-D ({hs.layout}) but the graph outputs are: "
                            f"{_fmt_values(outputs)}")
        c_axis, h_axis, w_axis = (1, 2, 3) if hs.layout == "NCHW" else (3, 1, 2)
        kc = hdims[c_axis]
        if isinstance(kc, int):
            if hs.channels is None and kc != k:
                raise SpecError(
                    f"heatmap {hs.name!r} has {kc} channels on axis {c_axis} (layout {hs.layout}) but the "
                    f"spec lists {k} keypoints; the graph outputs are: {_fmt_values(outputs)}"
                )
            if hs.channels is not None and (max(hs.channels) >= kc or min(hs.channels) < 0):
                raise SpecError(
                    f"heatmap.channels selects {list(hs.channels)} but heatmap {hs.name!r} has {kc} channels "
                    f"on axis {c_axis} (layout {hs.layout}); the graph outputs are: {_fmt_values(outputs)}"
                )
        for axis, size, label in ((h_axis, si.height, "height"), (w_axis, si.width, "width")):
            got = hdims[axis]
            if isinstance(got, int) and got not in (size // hs.stride, -(-size // hs.stride)):
                raise SpecError(
                    f"heatmap {hs.name!r} {label} is {got} but input {label} {size} / heatmap.stride "
                    f"{hs.stride} gives {size // hs.stride}; fix heatmap.stride or heatmap.layout (graph "
                    f"outputs: {_fmt_values(outputs)})"
                )

    if spec.existence is not None:
        es = spec.existence
        edims = value_dims(by_out[es.name])
        want_n = k if es.per == "keypoint" else 1
        if edims is not None and len(edims) >= 1 and all(isinstance(d, int) for d in edims[1:]):
            n = 1
            for d in edims[1:]:
                n *= int(d)  # type: ignore[arg-type]
            if n != want_n:
                raise SpecError(
                    f"existence {es.name!r} (per {es.per}) should be [N,{want_n}] but the graph outputs "
                    f"are: {_fmt_values(outputs)}; fix existence.per or the keypoint list"
                )


# --- export --------------------------------------------------------------------------------------------
def export_onnx(
    model: torch.nn.Module,
    spec: ModelSpec,
    out_path: Path,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    optimize: bool = True,
    check_against_torch: bool = True,
    atol: float = 1e-3,
) -> OnnxExportReport:
    """Export ``model`` to ``out_path`` as ONNX named and shaped per ``spec``; nothing is written on failure.

    Steps: torch outputs on a seeded batch-2 input -> export (TorchScript below opset 18, dynamo from 18)
    -> names/opset/spec checks + ``onnx.checker`` -> onnxruntime BASIC offline optimisation, kept only if
    its outputs match -> onnxruntime FP32 vs torch max-abs-diff per output (error above ``atol``) ->
    atomic write. The model is put in eval mode for the export and restored afterwards.
    """
    import onnx
    import onnxruntime as ort
    import torch

    from heatdeploy.exporters.onnx_ort import ort_basic_optimize, ort_run

    spec.validate()
    out_path = Path(out_path)
    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= max_opset:
        raise OnnxExportError(f"opset {opset} is not supported; choose {MIN_OPSET}..{max_opset}")
    names = list(spec.output_names)
    wrapped = _output_adapter(model, names)
    restore, can_train = _enter_eval(model)
    notes: list[str] = []
    try:
        x = _example_input(spec, batch=2)
        with torch.no_grad():
            ref = [t.detach().cpu().numpy() for t in wrapped(x)]  # fails early if forward raises
            exporter = "dynamo" if opset >= DYNAMO_MIN_OPSET else "torchscript"
            try:
                with _quiet_torch_export():
                    proto = _to_onnx(wrapped, x, spec, opset, dynamic_batch, exporter, can_train)
            except OnnxExportError:
                raise
            except Exception as exc:  # unsupported op, data-dependent shapes, ...: say which exporter failed
                first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                raise OnnxExportError(f"torch.onnx.export ({exporter}, opset {opset}) failed: "
                                      f"{type(exc).__name__}: {first}") from exc
    finally:
        restore()

    _check_names(proto, spec, exporter)
    if dynamic_batch:
        _check_dynamic_batch(proto, spec, exporter)
    _check_opset(proto, opset, "the exported model")
    embed_spec(proto, spec)
    check_spec_against_graph(proto, spec)
    _check_model(proto, "the exported model")
    feed_name = spec.input.name
    x_np = x.numpy()
    raw_out = ort_run(proto, {feed_name: x_np}, names)

    optimized = False
    if optimize:
        opt, why = ort_basic_optimize(proto, spec, opset, x_np, raw_out, atol)
        if opt is not None:
            notes.append(f"onnxruntime BASIC optimisation: {len(proto.graph.node)} -> {len(opt.graph.node)} "
                         "nodes")
            proto, optimized = opt, True
            raw_out = ort_run(proto, {feed_name: x_np}, names)
        else:
            notes.append(f"optimised graph dropped: {why}")
            log.warning("onnx export: optimised graph dropped (%s); keeping the unoptimised one", why)

    diffs: dict[str, float] = {}
    if check_against_torch:
        for name, got, want in zip(names, raw_out, ref, strict=True):
            if got.shape != want.shape:
                raise OnnxExportError(f"output {name!r}: onnxruntime shape {list(got.shape)} but torch "
                                      f"gives {list(want.shape)}")
            diffs[name] = _max_abs_diff(got, want)
        log.info("onnx export: max |onnxruntime - torch| per output: %s", diffs)
        bad = {n: d for n, d in diffs.items() if not d <= atol}  # NaN counts as bad
        if bad:
            raise OnnxExportError(
                "onnxruntime FP32 outputs differ from torch beyond atol="
                f"{atol:g}: " + ", ".join(f"{n} max abs diff {d:.3g}" for n, d in bad.items())
                + "; the graph does not reproduce the model (unsupported op or data-dependent control flow?)"
            )
    if dynamic_batch:
        one = ort_run(proto, {feed_name: x_np[:1]}, names)
        for name, got, want in zip(names, one, raw_out, strict=True):
            d = _max_abs_diff(got, want[:1]) if got.shape[1:] == want.shape[1:] else float("inf")
            if not d <= atol:
                raise OnnxExportError(
                    f"output {name!r} at batch 1 does not match batch 2 (max abs diff {d:.3g}); the graph "
                    "bakes in the batch size — make the model batch-agnostic or export with "
                    "dynamic_batch=False"
                )

    tools = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__}
    if exporter == "dynamo":
        try:
            import onnxscript

            tools["onnxscript"] = onnxscript.__version__
        except ImportError:  # pragma: no cover - dynamo cannot run without it
            pass
    with atomic_path(out_path) as tmp:
        onnx.save(proto, str(tmp))
    return OnnxExportReport(path=out_path, opset=opset, exporter=exporter, max_abs_diff=diffs,
                            optimized=optimized, num_nodes=len(proto.graph.node), tools=tools, notes=notes)


# --- helpers -------------------------------------------------------------------------------------------
def _output_adapter(model: torch.nn.Module, names: list[str]) -> torch.nn.Module:
    """Wrap ``model`` so it returns a tuple in ``spec.output_names`` order (dict outputs matched by key)."""
    import torch

    class _Outputs(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return _select_outputs(self.inner(x), names)

    wrapped = _Outputs(model)
    wrapped.training = False  # not .eval(): it recurses, and torch.export modules refuse train()/eval()
    return wrapped


def _select_outputs(out: Any, names: list[str]) -> tuple[Any, ...]:
    import torch

    if isinstance(out, torch.Tensor):
        outs: tuple[Any, ...] = (out,)
    elif isinstance(out, dict):
        missing = [n for n in names if n not in out]
        if missing:
            raise OnnxExportError(f"the model returns a dict with keys {sorted(map(str, out))} but the spec "
                                  f"names outputs {names}; missing {missing} — rename them in the spec")
        outs = tuple(out[n] for n in names)
    elif isinstance(out, (tuple, list)):
        outs = tuple(out)
    else:
        raise OnnxExportError(f"the model returns {type(out).__name__}; expected a tensor or a "
                              "tuple/list/dict of tensors")
    if len(outs) != len(names):
        raise OnnxExportError(f"the model returns {len(outs)} output(s) but the spec names {len(names)} "
                              f"({', '.join(names)}); set or remove the spec's existence head to match")
    for n, t in zip(names, outs, strict=True):
        if not isinstance(t, torch.Tensor):
            raise OnnxExportError(f"output {n!r} is a {type(t).__name__}, not a tensor")
    return outs


def _enter_eval(model: torch.nn.Module) -> tuple[Any, bool]:
    """Switch to eval mode; return (restore the old mode, whether the model accepts train()/eval())."""
    was_training = model.training
    try:
        model.eval()
    except NotImplementedError:  # unlifted torch.export program: its graph is already inference-only
        return (lambda: None), False
    return (lambda: model.train(was_training)), True


def _example_input(spec: ModelSpec, batch: int, seed: int = 0) -> torch.Tensor:
    """Seeded float32 input of roughly normalised image statistics, in the spec's layout."""
    import torch

    si = spec.input
    shape = (batch, si.channels, si.height, si.width) if si.layout == "NCHW" else \
            (batch, si.height, si.width, si.channels)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


@contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """Hide the exporters' deprecation / registration chatter; keep the model's TracerWarnings."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r".*feature will be removed.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        # PRESERVE on a model already in eval mode exports eval semantics; the warning assumes training
        warnings.filterwarnings("ignore", message=r".*constant folding be turned off.*", category=UserWarning)
        # torch.export programs check their input shapes with torch._check; tracing that check is harmless
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch$")
        names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")
        loggers = [logging.getLogger(n) for n in names]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, lvl in zip(loggers, levels, strict=True):
                lg.setLevel(lvl)


def _to_onnx(wrapped: torch.nn.Module, x: torch.Tensor, spec: ModelSpec, opset: int,
             dynamic_batch: bool, exporter: str, can_train: bool) -> onnx.ModelProto:
    import onnx
    import torch

    names = list(spec.output_names)
    in_name = spec.input.name
    if exporter == "torchscript":
        axes = {n: {0: BATCH_AXIS} for n in [in_name, *names]} if dynamic_batch else None
        buf = io.BytesIO()
        torch.onnx.export(
            wrapped, (x,), buf, dynamo=False, opset_version=opset, input_names=[in_name],
            output_names=names, dynamic_axes=axes, do_constant_folding=True,
            # EVAL also folds BatchNorm into Conv; it calls train(False), which torch.export modules refuse,
            # so those (inference-only graphs already) go through PRESERVE with the wrapper in eval mode
            training=torch.onnx.TrainingMode.EVAL if can_train else torch.onnx.TrainingMode.PRESERVE,
        )
        return onnx.load_from_string(buf.getvalue())
    shapes = ({0: torch.export.Dim(BATCH_AXIS)},) if dynamic_batch else None
    program = torch.onnx.export(
        wrapped, (x,), None, dynamo=True, opset_version=opset, input_names=[in_name], output_names=names,
        dynamic_shapes=shapes, verbose=False, optimize=True, external_data=False,
    )
    if program is None:  # pragma: no cover - dynamo always returns a program when f is None
        raise OnnxExportError("torch.onnx.export (dynamo) returned no program")
    return program.model_proto


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| in float64 (NaN propagates, so a NaN output never passes a tolerance)."""
    import numpy as np

    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _check_names(proto: onnx.ModelProto, spec: ModelSpec, exporter: str) -> None:
    got_in = [v.name for v in graph_inputs(proto)]
    got_out = [v.name for v in proto.graph.output]
    if got_in != [spec.input.name] or got_out != list(spec.output_names):
        raise OnnxExportError(
            f"the {exporter} exporter produced inputs {got_in} / outputs {got_out}, expected "
            f"[{spec.input.name!r}] / {list(spec.output_names)} (does the model return an input unchanged or "
            "the same tensor twice?)"
        )


def _check_dynamic_batch(proto: onnx.ModelProto, spec: ModelSpec, exporter: str) -> None:
    """The batch axis must stay symbolic; dynamo silently fixes it when the model (e.g. a .pt2) forbids it."""
    for v in [*graph_inputs(proto), *proto.graph.output]:
        dims = value_dims(v)
        if dims and isinstance(dims[0], int):
            raise OnnxExportError(
                f"the {exporter} exporter fixed the batch of {v.name!r} at {dims[0]} although a dynamic "
                "batch was asked; the model does not allow one (a .pt2 exported with a static batch?) — "
                "re-export it with a dynamic batch Dim, or pass dynamic_batch=False"
            )


def default_opset(proto: onnx.ModelProto) -> int | None:
    for imp in proto.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            return int(imp.version)
    return None


def _check_opset(proto: onnx.ModelProto, opset: int, what: str) -> None:
    got = default_opset(proto)
    if got != opset:
        raise OnnxExportError(f"{what} declares default-domain opset {got}, but opset {opset} was asked; "
                              "pick an opset this torch exporter honours (<= 17 TorchScript, >= 18 dynamo)")


def _check_model(proto: onnx.ModelProto, what: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise OnnxExportError(f"{what} fails onnx.checker: {first}") from None
