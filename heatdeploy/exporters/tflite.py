"""TFLite models (``.tflite``) as export input: to OpenVINO IR directly, or to ONNX through tflite2onnx.

- **OpenVINO** reads ``.tflite`` itself (``openvino.convert_model``): no extra package. ``heatdeploy export
  MODEL.tflite --spec SPEC.json --format openvino`` writes ``openvino-fp32`` (the reference for parity) and,
  when asked, ``openvino-<precision>`` (fp16, bf16, or int8 through NNCF) straight from the TFLite graph.
- **ONNX** needs a converter. tflite2onnx (0.4.1, the ``tflite`` extra) is the light one that works on
  MediaPipe's BlazePose once one bug is worked around: it rewrites a Pad's paddings constant in place, so a
  constant shared by several Pads (as TFLite's converter emits them) is transformed twice and crashes; the
  transform is made idempotent here for the duration of the call. Its output is NCHW inside; the TFLite
  input/output layouts (NHWC) are restored with Transposes at the edges, so one spec serves the .tflite,
  its IR and its ONNX. Resizes with a fixed batch in their ``sizes`` get ``scales`` instead and the batch is
  made dynamic, checked by running batch 2 against two batch-1 runs (else the batch stays 1, noted).

A ``.tflite`` carries no heatdeploy spec: ``--spec`` is required. Errors are one-line SourceErrors.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from heatdeploy import __version__
from heatdeploy.errortext import cause_line
from heatdeploy.exporters.sources import SourceError
from heatdeploy.fsutil import atomic_path, sha256_file
from heatdeploy.spec import ModelSpec

if TYPE_CHECKING:
    import onnx
    import openvino as ov

    from heatdeploy.bundle import Artifact

log = logging.getLogger(__name__)

TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier at bytes 4..8 of every .tflite
EXTRA_HINT = "converting TFLite to ONNX needs the 'tflite' extra: pip install 'heatdeploy[tflite]'"
OV_PRECISIONS = ("fp32", "fp16", "bf16", "int8")
CHECK_SEED = 1234


class TfliteError(SourceError):
    """A .tflite that cannot be read or converted; the one-line message names the file and the fix."""


# --- reading --------------------------------------------------------------------------------------


def check_tflite(path: str | Path) -> Path:
    """The path, when it is a readable file with TFLite's flatbuffer identifier; else TfliteError."""
    p = Path(path)
    if not p.is_file():
        raise TfliteError(f"{p}: no such .tflite file; check the path")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise TfliteError(f"{p}: cannot read the file ({exc.strerror or exc})") from None
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise TfliteError(f"{p}: not a TFLite model (no 'TFL3' flatbuffer identifier); pass a .tflite written by "
                          "the TFLite converter")
    return p


def require_spec(path: str | Path, spec_path: str | Path | None) -> ModelSpec:
    """The spec from ``--spec``: a .tflite carries none."""
    if spec_path is None:
        raise TfliteError(f"{path}: a .tflite carries no heatdeploy spec; pass --spec SPEC.json (propose one with "
                          "'heatdeploy spec infer' on its ONNX, or write it by hand: see heatdeploy/spec.py)")
    return ModelSpec.load(spec_path)


# --- OpenVINO -------------------------------------------------------------------------------------


def convert_tflite_openvino(path: str | Path, spec: ModelSpec | None = None) -> tuple[ov.Model, list[str]]:
    """``openvino.convert_model`` on the .tflite; the spec's tensors must be the model's; batch made dynamic."""
    from heatdeploy.exporters.openvino import convert_file, dynamic_batch

    p = check_tflite(path)
    model = convert_file(p, "TFLite", TfliteError, "check its operators", limit=300)
    if spec is not None:
        _check_names(p, spec, {n for port in model.inputs for n in port.get_names()},
                     {n for port in model.outputs for n in port.get_names()})
        name = spec.input.name
    elif len(model.inputs) == 1:
        name = model.inputs[0].get_any_name()
    else:
        return model, []
    return model, dynamic_batch(model, name, "TFLite")


def tflite_to_openvino(path: str | Path, out_xml: str | Path, *, spec: ModelSpec | None = None,
                       precision: str = "fp32") -> Path:
    """Convert the .tflite to an OpenVINO IR at ``out_xml`` (+ ``.bin``), fp32 / fp16 / bf16.

    With ``spec`` the IR carries it in ``rt_info`` with the precision to compile at (as the bundle's IRs
    do); both files are written under temporary names and renamed into place (the .bin first).
    """
    from heatdeploy.exporters.openvino import embed_rt_info

    if precision not in ("fp32", "fp16", "bf16"):
        raise TfliteError(f"precision {precision!r}: tflite_to_openvino writes fp32, fp16 or bf16; INT8 needs "
                          "calibration data: use 'heatdeploy export MODEL.tflite --format openvino --precision int8'")
    model, _ = convert_tflite_openvino(path, spec)
    if spec is not None:
        embed_rt_info(model, spec, precision, {"source_tflite_sha256": sha256_file(Path(path))})
    out_xml = Path(out_xml)
    _save_ir(model, out_xml, compress_to_fp16=precision == "fp16")
    return out_xml


def _save_ir(model: ov.Model, out_xml: Path, *, compress_to_fp16: bool) -> None:
    import openvino as ov

    out_xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_xml.stem}.", suffix=".partial", dir=out_xml.parent))
    try:
        xml = tmp / out_xml.name
        ov.save_model(model, str(xml), compress_to_fp16=compress_to_fp16)
        for src, dest in ((xml.with_suffix(".bin"), out_xml.with_suffix(".bin")), (xml, out_xml)):
            with atomic_path(dest) as part:
                shutil.move(str(src), part)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_names(path: Path, spec: ModelSpec, inputs: set[str], outputs: set[str]) -> None:
    if spec.input.name not in inputs:
        raise TfliteError(f"{path}: the spec's input {spec.input.name!r} is not a model input "
                          f"({', '.join(sorted(inputs))}); fix input.name in the spec")
    wanted = list(spec.output_names)
    landmarks = getattr(spec, "landmarks", None)
    if landmarks is not None and landmarks.name not in wanted:
        wanted.append(landmarks.name)
    missing = [n for n in wanted if n not in outputs]
    if missing:
        raise TfliteError(f"{path}: spec output(s) {', '.join(missing)} not among the model outputs "
                          f"({', '.join(sorted(outputs))}); fix the output names in the spec")


# --- the bundle (--format openvino) ---------------------------------------------------------------


def export_tflite_openvino(model: str | Path, out: str | Path, *, spec_path: str | Path | None,
                           precision: str = "fp32", calib: str | None = None, calib_size: int | None = 300,
                           seed: int = 0, preset: str = "mixed", accuracy_control: float | None = None,
                           keep_fp32: str | Sequence[str] = "auto", force: bool = False) -> list[Artifact]:
    """A new bundle at ``out`` (staged, renamed into place) with ``openvino-fp32`` converted from the .tflite,
    plus ``openvino-<precision>`` when that is not fp32. Returns the artifacts written. A file or a foreign
    folder at ``out`` is replaced only with ``force``."""
    from heatdeploy.bundle import Bundle, staged_dir

    path = check_tflite(model)
    spec = require_spec(path, spec_path)
    if precision not in OV_PRECISIONS:
        raise TfliteError(f"precision {precision!r}: choose one of {', '.join(OV_PRECISIONS)}")
    arts = []
    with staged_dir(out, force=force) as tmp:
        bundle = Bundle.create(tmp, spec)
        bundle.info.update(source=str(model), source_format="tflite", source_sha256=sha256_file(path))
        bundle.save()
        for prec in ("fp32",) if precision == "fp32" else ("fp32", precision):
            arts.append(add_tflite_openvino_artifact(tmp, path, prec, calib=calib, calib_size=calib_size, seed=seed,
                                                     preset=preset, accuracy_control=accuracy_control,
                                                     keep_fp32=keep_fp32))
    return arts


def add_tflite_openvino_artifact(bundle_dir: str | Path, tflite: str | Path, precision: str, *,
                                 calib: str | None = None, calib_size: int | None = 300, seed: int = 0,
                                 preset: str = "mixed", accuracy_control: float | None = None,
                                 keep_fp32: str | Sequence[str] = "auto", check: bool = True) -> Artifact:
    """Convert the .tflite to OpenVINO at ``precision`` and record it in the bundle as ``openvino-<precision>``
    (same paths, rt_info and notes as :func:`heatdeploy.exporters.openvino.add_openvino_artifact`, whose NNCF
    step INT8 shares). ``check`` records the largest |IR - OpenVINO f32 on the .tflite| per output."""
    import openvino as ov

    from heatdeploy.bundle import Bundle
    from heatdeploy.exporters import openvino as ovx

    t0 = time.perf_counter()
    root = Path(bundle_dir)
    bundle = Bundle.load(root, verify=False)
    spec = bundle.spec
    path = check_tflite(tflite)
    digest = sha256_file(path)
    model, conv_notes = convert_tflite_openvino(path, spec)
    t_convert = time.perf_counter() - t0
    tools = {"openvino": ov.get_version(), "heatdeploy": __version__}
    calibration = None
    if precision == "int8":
        with tempfile.TemporaryDirectory(prefix="heatdeploy-tflite-int8-") as tmp:
            # keep_fp32=auto measures per-layer sensitivity on an ONNX graph: quantize that graph's IR
            via_onnx, onnx_path, note = (ovx.tflite_int8_source(path, spec, Path(tmp)) if keep_fp32 == "auto"
                                         else (None, None, ""))
            opts = ovx.NncfOptions(calib=calib, calib_size=calib_size, seed=seed, preset=preset,
                                   accuracy_control=accuracy_control, keep_fp32=keep_fp32)
            model, calibration, tools["nncf"] = ovx._quantize(via_onnx or model, bundle, opts, onnx_path=onnx_path,
                                                              no_onnx=note)
        if via_onnx is not None:
            calibration.setdefault("notes", []).insert(0, note)
    ovx.embed_rt_info(model, spec, precision, {"source_tflite_sha256": digest},
                      ovx.inference_precision(precision, calibration))
    notes: dict[str, Any] = {
        "source": "tflite", "source_sha256": digest,
        "inference_precision": ovx.inference_precision(precision, calibration), "weights": ovx.WEIGHTS[precision],
        "dynamic_batch": ovx.is_dynamic_batch(model, spec.input.name), "convert_s": round(t_convert, 3),
    }
    if conv_notes:
        notes["conversion"] = conv_notes
    art = ovx.save_ir(root, model, precision, tools=tools, calibration=calibration, notes=notes, started=t0,
                      check=(lambda xml: _check_against_tflite(xml, path, spec)) if check else None)
    return art


def summary_line(art: Artifact) -> str:
    """One line for the CLI: what was written and how far it is from OpenVINO f32 on the .tflite."""
    from heatdeploy.exporters import openvino as ovx

    return ovx.summary_line(art, "OpenVINO f32 on the .tflite")


def _seeded_inputs(spec: ModelSpec, n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(CHECK_SEED)
    return [rng.standard_normal(spec.input.tensor_shape(1)).astype(np.float32) for _ in range(n)]


def _ov_reference(tflite: Path) -> Any:
    """The .tflite compiled by OpenVINO on CPU at f32: the reference every converted artifact is checked against."""
    import openvino as ov

    from heatdeploy.runtime.backends.openvino import core

    return core().compile_model(ov.convert_model(str(tflite)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _outputs_of(spec: ModelSpec) -> list[str]:
    names = list(spec.output_names)
    landmarks = getattr(spec, "landmarks", None)
    if landmarks is not None and landmarks.name not in names:
        names.append(landmarks.name)
    return names


def _check_against_tflite(xml: Path, tflite: Path, spec: ModelSpec) -> dict[str, Any]:
    """Largest |IR - OpenVINO f32 on the .tflite| per output on two seeded inputs, at the IR's own precision."""
    from heatdeploy.runtime.backends.openvino import load

    backend = load(xml)
    ref = _ov_reference(tflite)
    names = _outputs_of(spec)
    diffs = dict.fromkeys(names, 0.0)
    for x in _seeded_inputs(spec):
        got = backend.infer({spec.input.name: x})
        want = {k.get_any_name(): v for k, v in ref(x).items()}
        for n in names:
            diffs[n] = max(diffs[n], float(np.max(np.abs(got[n].astype(np.float64) - want[n]))))
    return {"inputs": f"2 seeded N(0,1) tensors (seed {CHECK_SEED})", "reference": "OpenVINO f32 on the .tflite",
            "max_abs_diff": diffs, "compiled_precision": backend.inference_precision, "device": backend.device}


# --- ONNX (the 'tflite' extra) --------------------------------------------------------------------


def tflite_to_onnx(path: str | Path, out: str | Path, *, spec: ModelSpec | None = None,
                   opset: int | None = 17, check: bool = True) -> dict[str, Any]:
    """Convert the .tflite to ONNX at ``out`` (written atomically) with tflite2onnx; returns a report.

    The ONNX has the TFLite model's input/output names, shapes and layouts (NHWC kept), a dynamic batch where
    the graph allows it, opset ``opset`` (tflite2onnx emits 11; None keeps that) and, with ``spec``, the spec
    in its metadata. ``check`` compares ORT with OpenVINO f32 on the .tflite (when OpenVINO is installed):
    ``report["max_abs_diff"]`` per output.
    """
    import onnx

    p = check_tflite(path)
    try:
        import tflite2onnx
    except ImportError:
        raise TfliteError(f"{p}: {EXTRA_HINT} (or use --format openvino, which reads .tflite directly)") from None
    version = getattr(tflite2onnx, "__version__", "?")
    io = _tflite_io(p)
    with tempfile.TemporaryDirectory(prefix="heatdeploy-tflite2onnx-") as tmp:
        raw = Path(tmp) / "model.onnx"
        try:
            with _tflite2onnx_fixes():
                tflite2onnx.convert(str(p), str(raw))
            proto = onnx.load(str(raw))
        except Exception as exc:
            why = f"{type(exc).__name__}: {cause_line(exc, 200)}" if str(exc).strip() else type(exc).__name__
            raise TfliteError(f"{p}: tflite2onnx {version} cannot convert this model ({why}); use --format openvino "
                              "(OpenVINO reads .tflite directly) or export ONNX from the training framework") from None
    notes: list[str] = []
    _restore_layouts(proto, io, notes)
    _dynamic_batch(proto, io, notes)
    if opset is not None:
        proto = _upgrade_opset(proto, opset, p, notes)
    if spec is not None:
        from heatdeploy.exporters.onnx import check_spec_against_graph, embed_spec

        _check_names(p, spec, {n for n, _ in io["inputs"]}, {n for n, _ in io["outputs"]})
        check_spec_against_graph(proto, spec)
        embed_spec(proto, spec)
    proto.producer_name, proto.producer_version = "heatdeploy", __version__
    proto.doc_string = f"converted from {p.name} by tflite2onnx {version} via heatdeploy"
    report: dict[str, Any] = {"converter": f"tflite2onnx {version}", "opset": _default_opset(proto),
                              "notes": notes, "source_sha256": sha256_file(p)}
    if check:
        report.update(_check_onnx_against_openvino(proto, p, [n for n, _ in io["outputs"]]))
    out = Path(out)
    with atomic_path(out) as part:
        onnx.save(proto, str(part))
    return report


def import_tflite_onnx(src: Path, dest: Path, spec_path: str | None,
                       opset: int | None = 17) -> tuple[ModelSpec, dict[str, str], dict[str, Any]]:
    """``heatdeploy export MODEL.tflite --format onnx``: the ONNX at ``dest``; (spec, tools, notes) for the bundle."""
    import onnx

    spec = require_spec(src, spec_path)
    report = tflite_to_onnx(src, dest, spec=spec, opset=opset)
    tools = {"onnx": onnx.__version__, "converter": report["converter"]}
    return spec, tools, {"imported_from": str(src), **report}


@contextlib.contextmanager
def _tflite2onnx_fixes() -> Iterator[None]:
    """tflite2onnx 0.4.1: make Pad's paddings transform idempotent (a shared constant is visited once per Pad)
    and keep its per-tensor warnings (fp16 weights, folded to fp32 correctly) out of the user's log."""
    from tflite2onnx.op import padding

    original = padding.Padding.transform

    def transform(self: Any) -> None:
        pads = self.inputs[1]
        if getattr(pads, "_heatdeploy_transformed", False):
            return
        original(self)
        pads._heatdeploy_transformed = True

    logger = logging.getLogger("tflite2onnx")
    level = logger.level
    padding.Padding.transform = transform
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        padding.Padding.transform = original
        logger.setLevel(level)


def _tflite_io(path: Path) -> dict[str, list[tuple[str, list[int]]]]:
    """Names and shapes of the first subgraph's inputs and outputs, read with the ``tflite`` flatbuffer package."""
    import tflite

    buf = path.read_bytes()
    try:
        graph = tflite.Model.GetRootAsModel(buf, 0).Subgraphs(0)

        def tensors(idx: np.ndarray) -> list[tuple[str, list[int]]]:
            out = []
            for i in idx:
                t = graph.Tensors(int(i))
                name = t.Name().decode("utf-8")
                out.append((name, [int(d) for d in t.ShapeAsNumpy()]))
            return out

        return {"inputs": tensors(graph.InputsAsNumpy()), "outputs": tensors(graph.OutputsAsNumpy())}
    except Exception as exc:
        raise TfliteError(f"{path}: cannot read the TFLite graph ({type(exc).__name__}: {exc}); re-export the "
                          ".tflite") from None


def _restore_layouts(proto: onnx.ModelProto, io: dict[str, list[tuple[str, list[int]]]], notes: list[str]) -> None:
    """Transposes at the graph's edges so every input/output has the TFLite tensor's shape (NHWC) again."""
    from onnx import TensorProto, helper

    from heatdeploy.exporters.onnx import value_dims

    g = proto.graph
    for kind, values in (("input", g.input), ("output", g.output)):
        by_name = {v.name: v for v in values}
        for name, shape in io[f"{kind}s"]:
            v = by_name.get(name)
            dims = value_dims(v) if v is not None else None
            if v is None or dims is None or len(shape) != 4 or dims == shape:
                continue
            if dims != [shape[0], shape[3], shape[1], shape[2]]:
                raise TfliteError(f"{name}: tflite2onnx made the {kind} {dims} from TFLite {shape}; cannot restore it")
            inner = f"{name}__nchw"
            for node in g.node:
                node.input[:] = [inner if i == name else i for i in node.input]
                if kind == "output":
                    node.output[:] = [inner if o == name else o for o in node.output]
            if kind == "input":
                g.node.insert(0, helper.make_node("Transpose", [name], [inner], perm=[0, 3, 1, 2],
                                                  name=f"{name}__to_nchw"))
            else:
                g.node.append(helper.make_node("Transpose", [inner], [name], perm=[0, 2, 3, 1],
                                               name=f"{name}__to_nhwc"))
            v.CopyFrom(helper.make_tensor_value_info(name, v.type.tensor_type.elem_type or TensorProto.FLOAT, shape))
            notes.append(f"{kind} {name}: NHWC kept (Transpose {'to' if kind == 'input' else 'from'} tflite2onnx's "
                         "NCHW inside)")


def _dynamic_batch(proto: onnx.ModelProto, io: dict[str, list[tuple[str, list[int]]]], notes: list[str]) -> None:
    """Batch 1 -> 'N' where the graph allows it, verified with ORT (batch 2 == two batch-1 runs); else kept."""
    import onnx
    from onnx import numpy_helper

    g = proto.graph
    if any(shape[:1] != [1] for _, shape in io["inputs"]):
        return
    before = proto.SerializeToString()
    inits = {t.name: t for t in g.initializer}
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in list(g.value_info) + list(g.input)}
    for node in [n for n in g.node if n.op_type == "Resize" and len(n.input) == 4 and n.input[3] in inits]:
        sizes = numpy_helper.to_array(inits[node.input[3]]).astype(np.int64)
        src = shapes.get(node.input[0])
        if src is None or None in src or len(src) != len(sizes) or sizes[0] != 1 or src[0] != 1:
            continue
        scales = sizes.astype(np.float32) / np.asarray(src, dtype=np.float32)
        if not np.array_equal(np.floor(np.asarray(src) * scales).astype(np.int64), sizes):
            continue
        name = f"{node.name or node.output[0]}__scales"
        g.initializer.append(numpy_helper.from_array(scales, name))
        node.input[2], node.input[3] = name, ""
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]  # shapes recorded for batch 1; ORT and OpenVINO infer them again
    for v in list(g.input) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            dims[0].dim_param = "N"
    why = _batch_check(proto, io)
    if why is None:
        notes.append("batch dimension made dynamic ('N'; Resize sizes became scales), checked: batch 2 equals two "
                     "batch-1 runs")
        return
    proto.CopyFrom(onnx.load_from_string(before))
    notes.append(f"batch stays 1: {why}")


def _batch_check(proto: onnx.ModelProto, io: dict[str, list[tuple[str, list[int]]]]) -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed to check a dynamic batch"
    rng = np.random.default_rng(CHECK_SEED)
    feeds = {n: rng.random([2, *s[1:]], dtype=np.float32) for n, s in io["inputs"]}
    try:
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        both = sess.run(None, feeds)
        singles = [sess.run(None, {n: v[i:i + 1] for n, v in feeds.items()}) for i in range(2)]
    except Exception as exc:
        return f"ONNX Runtime fails on batch 2 ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]})"
    for j, out in enumerate(both):
        ref = np.concatenate([s[j] for s in singles])
        if out.shape != ref.shape or not np.allclose(out, ref, rtol=1e-4, atol=1e-4 * (1 + np.abs(ref).max())):
            return "batch 2 differs from two batch-1 runs"
    return None


def _default_opset(proto: onnx.ModelProto) -> int | None:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _upgrade_opset(proto: onnx.ModelProto, opset: int, path: Path, notes: list[str]) -> onnx.ModelProto:
    from onnx import version_converter

    have = _default_opset(proto)
    if have is None or have >= opset:
        return proto
    try:
        converted = version_converter.convert_version(proto, opset)
    except Exception as exc:
        notes.append(f"opset stays {have}: onnx's version converter failed to reach {opset} ({type(exc).__name__})")
        return proto
    notes.append(f"opset {have} -> {opset} (onnx version converter)")
    return converted


def _check_onnx_against_openvino(proto: onnx.ModelProto, tflite: Path, names: list[str]) -> dict[str, Any]:
    """Largest |ORT - OpenVINO f32 on the .tflite| per output on two seeded inputs."""
    try:
        import onnxruntime as ort
        import openvino  # noqa: F401
    except ImportError as exc:
        return {"check": f"skipped: {exc.name} not installed"}
    ref = _ov_reference(tflite)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    rng = np.random.default_rng(CHECK_SEED)
    diffs = dict.fromkeys(names, 0.0)
    for _ in range(2):
        x = rng.random(shape, dtype=np.float32)
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {inp.name: x}), strict=True))
        want = {k.get_any_name(): v for k, v in ref(x).items()}
        for n in names:
            diffs[n] = max(diffs[n], float(np.max(np.abs(got[n].astype(np.float64) - want[n]))))
    return {"check": "2 seeded U(0,1) inputs vs OpenVINO f32 on the .tflite", "max_abs_diff": diffs}


__all__ = [
    "EXTRA_HINT", "TfliteError", "add_tflite_openvino_artifact", "check_tflite", "convert_tflite_openvino",
    "export_tflite_openvino", "import_tflite_onnx", "require_spec", "summary_line", "tflite_to_onnx",
    "tflite_to_openvino",
]
