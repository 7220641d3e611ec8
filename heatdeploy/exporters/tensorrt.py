"""TensorRT build plans from a bundle's ONNX: prepared anywhere, built on the target.

A TensorRT engine is specific to the TensorRT version and the GPU that built it, so it is built on the
device. The work splits in two:

- :func:`prepare_tensorrt` (here, any machine with ``onnx``): writes the build *plan* into the bundle —
  ``tensorrt/build_config.json`` (builder options from the device profile, sha256 of every input), the
  TensorRT calibration cache made from our engine-neutral ranges (implicit INT8: no calibration data is needed
  on the device), and a TensorRT-ready copy of the QDQ INT8 model (explicit INT8: biases folded to float, int8
  zero points). It returns the one command to run on the device and the equivalent ``trtexec`` line.
- the build itself runs on the device: :mod:`heatdeploy.runtime.backends.tensorrt_build` (``onnx`` not
  needed), cached under a key of (model, TensorRT, GPU and device identity, precision, options); the
  decisions both sides share live in :mod:`heatdeploy.runtime.backends.tensorrt_config`. :func:`build_engine`
  here is that build with this side's preparation and float-scope rule plugged in.

INT8 two ways: *explicit* (the QDQ model decides what is INT8; the only way in TensorRT 11, whose networks
are strongly typed) and *implicit* (FP32 model + our calibration cache; TensorRT 8.x/10.x as JetPack 5/6
ship them). ``int8_mode = "auto"`` picks per the TensorRT that does the build.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heatdeploy import __version__
from heatdeploy.bundle import Bundle, BundleError
from heatdeploy.calibration.float_scope import LayerInfo, float_layers
from heatdeploy.devices.profiles import DeviceProfile
from heatdeploy.fsutil import atomic_write_bytes, atomic_write_text, sha256_file
from heatdeploy.runtime.backends import tensorrt_build
from heatdeploy.runtime.backends.tensorrt_build import BuildResult, LayerRow, tensorrt_status
from heatdeploy.runtime.backends.tensorrt_config import (
    BUILD_CONFIG,
    BUILD_FORMAT,
    BUILD_SCHEMA,
    CALIB_CACHE,
    ENGINE_DIR,
    QDQ_MODEL,
    TRT_DIR,
    BuildConfig,
    BuilderPlan,
    TensorRTError,
    build_engine_command,
    builder_plan,
    engine_cache_key,
    engine_options,
    engine_path,
    engine_record,
    find_cached_engine,
    load_build_config,
    profile_shapes,
    resolve_int8_mode,
    retag_calibration_cache,
    trt_major,
    trt_tag,
)
from heatdeploy.runtime.backends.tensorrt_config import version_triple as _version_triple

if TYPE_CHECKING:
    import onnx

OPTIMIZATION_LEVEL_FROM = (8, 6)  # trtexec --builderOptimizationLevel arrived in TensorRT 8.6


# --- layer precision (pure) ------------------------------------------------------------------------------
def fp32_layers(layers: Sequence[LayerInfo], outputs: Iterable[str]) -> dict[str, str]:
    """Layers to pin to FP32, with the reason: the one float-scope rule
    (:mod:`heatdeploy.calibration.float_scope`) on TensorRT's layers, so TensorRT keeps FP32 what ORT and
    OpenVINO keep float. Constants, shape and Q/DQ layers are skipped.
    """
    return float_layers(layers, outputs, "base")


def cache_coverage(range_names: Iterable[str], graph_tensors: Iterable[str]) -> tuple[list[str], list[str]]:
    """(ranges that name a tensor of the graph, ranges that name none): TensorRT ignores the latter."""
    graph = set(graph_tensors)
    names = list(range_names)
    return [n for n in names if n in graph], [n for n in names if n not in graph]


def check_qdq_for_tensorrt(model: onnx.ModelProto) -> list[str]:
    """Why TensorRT's explicit INT8 would reject this QDQ model (empty when it accepts it).

    TensorRT quantizes symmetrically to int8 with zero point 0, and dequantizes only int8 (or fp8/int4)
    data: ORT's default x86 output (uint8 activations, zero point 128) and its int32 bias DequantizeLinear
    are both refused.
    """
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        data = inits.get(node.input[0])
        if node.op_type == "DequantizeLinear" and data is not None and data.data_type == TensorProto.INT32:
            problems.append(f"{node.name}: int32 DequantizeLinear (a quantized bias)")
            continue
        if zp is None:
            continue
        if zp.data_type != TensorProto.INT8:
            problems.append(f"{node.name}: {TensorProto.DataType.Name(zp.data_type).lower()} zero point")
        elif numpy_helper.to_array(zp).any():
            problems.append(f"{node.name}: non-zero zero point (asymmetric)")
    return problems


def tensorrt_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of an ORT QDQ model that TensorRT's explicit INT8 accepts, computing the same values.

    - int32 bias DequantizeLinear -> the float bias it dequantizes to (TensorRT keeps biases float anyway);
    - uint8 activations with zero point 128 (ORT's symmetric uint8) -> int8 with zero point 0: the same grid,
      shifted by 128, so every dequantized value is unchanged;
    - opset imports of domains no node uses are dropped (ORT's tools add several).
    Any other zero point is asymmetric and raises TensorRTError with the fix.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    notes: list[str] = []
    drop_nodes: list[onnx.NodeProto] = []
    drop_inits: set[str] = set()
    folded = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        data = inits[node.input[0]]
        if data.data_type != TensorProto.INT32:
            continue
        q = numpy_helper.to_array(data).astype(np.float64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        zp_name = node.input[2] if len(node.input) > 2 else ""
        zp = numpy_helper.to_array(inits[zp_name]).astype(np.float64) if zp_name in inits else 0.0
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if np.ndim(scale) == 1 and q.ndim > 1:
            shape = [1] * q.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
            zp = np.reshape(zp, shape) if np.ndim(zp) == 1 else zp
        value = ((q - zp) * scale).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        drop_nodes.append(node)
        drop_inits.update(n for n in node.input if n)
        folded += 1
    for node in drop_nodes:
        graph.node.remove(node)
    if folded:
        notes.append(f"{folded} int32 bias DequantizeLinear folded into float biases")

    still_used = {n for node in graph.node for n in node.input}
    converted = 0
    for t in list(graph.initializer):
        if t.name in drop_inits and t.name not in still_used:
            graph.initializer.remove(t)
            continue
        if t.data_type != TensorProto.UINT8 or t.name not in _zero_point_names(graph):
            continue
        zp = numpy_helper.to_array(t)
        if not np.all(zp == 128):
            raise TensorRTError(f"QDQ model: zero point {t.name!r} = {zp.ravel()[:4].tolist()} is asymmetric uint8; "
                                "TensorRT INT8 is symmetric — re-export with --format tensorrt, or run "
                                "'heatdeploy calibrate BUNDLE --symmetric'")
        t.CopyFrom(numpy_helper.from_array(np.zeros(zp.shape, np.int8), t.name))
        converted += 1
    if converted:
        notes.append(f"{converted} uint8 zero points (128) rewritten as int8 0: same grid, same values")
    used = {n.domain for n in graph.node} | {"", "ai.onnx"}
    kept = [o for o in out.opset_import if o.domain in used]
    if len(kept) != len(out.opset_import):
        notes.append(f"dropped unused opset imports: {', '.join(o.domain for o in out.opset_import if o not in kept)}")
        del out.opset_import[:]
        out.opset_import.extend(kept)
    left = check_qdq_for_tensorrt(out)
    if left:
        raise TensorRTError(f"QDQ model still has what TensorRT refuses: {'; '.join(left[:4])}")
    return out, notes


def _zero_point_names(graph: onnx.GraphProto) -> set[str]:
    return {n.input[2] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
            and len(n.input) > 2 and n.input[2]}


# --- command lines (pure) ---------------------------------------------------------------------------------
def trtexec_command(bundle_dir: str | Path, entry: Mapping[str, Any], *, input_name: str,
                    input_dims: Sequence[int], trt_version: str = "") -> str:
    """The equivalent trtexec line (run from anywhere; paths are inside the bundle).

    ``entry`` is one precision's record from ``build_config.json``. Layer names for the FP32 pins are the
    ONNX node names, which TensorRT's parser gives the layers it creates (a node it splits, e.g. Gemm, gets
    suffixed names that this line cannot know).
    """
    cfg = BuildConfig.from_dict(entry["config"])
    sources = entry["sources"]
    version = trt_version or cfg.target_tensorrt or "10.3"
    mode = None
    if cfg.precision == "int8":
        mode, _ = resolve_int8_mode(cfg.int8_mode, version, have_cache="calibration_cache" in sources,
                                    have_qdq="qdq" in sources)
    plan = builder_plan(cfg, version, int8_mode=mode)
    root = Path(bundle_dir)
    onnx_rel = sources[plan.source]["path"]
    args = ["trtexec", f"--onnx={root / onnx_rel}",
            f"--saveEngine={root / ENGINE_DIR / f'{cfg.precision}-trtexec.plan'}",
            f"--memPoolSize=workspace:{cfg.workspace_mb}"]
    lo, opt, hi, _ = profile_shapes(input_dims, cfg, input_name)
    if -1 in input_dims:
        for flag, shape in (("min", lo), ("opt", opt), ("max", hi)):
            args.append(f"--{flag}Shapes={input_name}:{'x'.join(map(str, shape))}")
    if "STRONGLY_TYPED" in plan.network_flags:
        args.append("--stronglyTyped")
    if "FP16" in plan.builder_flags:
        args.append("--fp16")
    if "INT8" in plan.builder_flags:
        args.append("--int8")
    if plan.calibration_cache:
        args.append(f"--calib={root / sources['calibration_cache']['path']}")
    if "TF32" in plan.clear_flags:
        args.append("--noTF32")
    if plan.precision_constraints and entry.get("fp32_layers"):
        names = sorted(entry["fp32_layers"])
        args += ["--precisionConstraints=obey", "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in names),
                 "--layerOutputTypes=" + ",".join(f"{n}:fp32" for n in names)]
    if plan.dla_core is not None:
        args.append(f"--useDLACore={plan.dla_core}")
        if cfg.gpu_fallback:
            args.append("--allowGPUFallback")
    if cfg.timing_cache:
        args.append(f"--timingCacheFile={root / TRT_DIR / 'timing.cache'}")
    if cfg.builder_optimization_level is not None and _version_triple(version)[:2] >= OPTIMIZATION_LEVEL_FROM:
        args.append(f"--builderOptimizationLevel={cfg.builder_optimization_level}")
    return shlex.join(args)


# --- prepare (any machine with onnx) ----------------------------------------------------------------------
@dataclass
class PreparedBuild:
    """What :func:`prepare_tensorrt` wrote and what to run on the device."""

    bundle: Path
    precision: str
    config: BuildConfig
    build_config: Path
    files: dict[str, str]  # role -> path inside the bundle (fp32, qdq, fp16, calibration_cache)
    command: str  # heatdeploy build-engine ...
    trtexec: str
    notes: list[str] = field(default_factory=list)


def prepare_tensorrt(bundle_dir: str | Path, precision: str | None = None, profile: DeviceProfile | None = None,
                     *, int8_mode: str | None = None, calibration: str | Path | None = None,
                     **overrides: Any) -> PreparedBuild:
    """Write everything the device needs to build ``precision`` into the bundle; return the commands.

    INT8 prepares both ways when it can: the TensorRT-ready QDQ model (from the bundle's INT8 ONNX artifact)
    and the calibration cache (from ``calibration`` / the bundle's calibration.json / the QDQ model's own
    scales), so the build picks what the device's TensorRT supports.
    """
    import onnx

    from heatdeploy.calibration.graph import output_tails, saturating_nodes
    from heatdeploy.calibration.ranges import extract_ranges, load_calibration_json, write_trt_cache
    from heatdeploy.exporters.onnx import default_opset

    root = Path(bundle_dir)
    bundle = Bundle.load(root, verify=False)  # only what is used is verified: a stale engine must not block this
    cfg = BuildConfig.from_profile(profile, precision, **({"int8_mode": int8_mode} if int8_mode else {}),
                                   **overrides)
    notes: list[str] = []
    fp32_art = bundle.artifact(format="onnx", precision="fp32")
    fp32_path = _verified(bundle, fp32_art)
    fp32 = onnx.load(str(fp32_path), load_external_data=False)
    opset = default_opset(fp32)
    if profile is not None and opset is not None and opset > profile.max_opset:
        raise TensorRTError(f"{fp32_path}: ONNX opset {opset} but {profile.name} reads opset <= {profile.max_opset}; "
                            f"re-export with --opset {profile.max_opset} --device {profile.name}")
    files: dict[str, str] = {"fp32": fp32_art.path}
    inp = bundle.spec.input
    dims = _input_dims(fp32, inp.name)

    if cfg.precision == "fp16":
        try:
            files["fp16"] = bundle.artifact(format="onnx", precision="fp16").path
        except BundleError:
            notes.append("no FP16 ONNX in the bundle: fine for TensorRT 8.x/10.x (FP16 flag); TensorRT 11 needs one")
    if cfg.precision == "int8":
        qdq_art = None
        try:
            qdq_art = bundle.artifact(format="onnx", precision="int8")
        except BundleError:
            pass
        ranges = None
        if calibration is not None:
            ranges = load_calibration_json(calibration)
        else:
            cal = _find_calibration_json(bundle, qdq_art)
            if cal is not None:
                ranges = load_calibration_json(cal)
        if qdq_art is not None:
            qdq = onnx.load(str(_verified(bundle, qdq_art)))
            fixed, qnotes = tensorrt_qdq(qdq)
            _save_onnx(fixed, root / QDQ_MODEL)
            files["qdq"] = QDQ_MODEL
            notes += [f"QDQ for TensorRT: {n}" for n in qnotes]
            if ranges is None:
                record = qdq_art.calibration or {}
                ranges = extract_ranges(qdq, method=str(record.get("method", "unknown")),
                                        data=record.get("calibration", {}))
                notes.append("calibration ranges read from the QDQ model's scales")
        if ranges is not None:
            write_trt_cache(ranges, root / CALIB_CACHE, trt_version=cfg.target_tensorrt or None)
            files["calibration_cache"] = CALIB_CACHE
            tensors = {i.name for i in fp32.graph.input} | {o for n in fp32.graph.node for o in n.output}
            hit, miss = cache_coverage(ranges["tensors"], tensors)
            if not hit:
                raise TensorRTError(f"{root}: none of the {len(miss)} calibrated tensors is in {fp32_art.path}; the "
                                    "ranges belong to another model — calibrate this bundle's model again")
            notes.append(f"calibration cache: ranges for {len(hit)} tensors of {fp32_art.path}"
                         + (f" ({len(miss)} names not in it, ignored by TensorRT)" if miss else ""))
        if "qdq" not in files and "calibration_cache" not in files:
            raise TensorRTError(f"{root}: an INT8 engine needs calibration, and the bundle has neither an INT8 ONNX "
                                "nor calibration.json; export INT8 first (calibration runs on this machine)")

    fp32_pins = {**output_tails(fp32), **saturating_nodes(fp32)} if cfg.fp32_heads else {}
    entry = {
        "config": cfg.to_dict(),
        "sources": {role: {"path": rel, "sha256": sha256_file(root / rel)} for role, rel in files.items()},
        "input": {"name": inp.name, "dims": dims},
        "outputs": list(bundle.spec.output_names),
        "fp32_layers": fp32_pins,
        "prepared": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "heatdeploy": __version__,
        "notes": notes,
    }
    data = load_build_config(root) or {"format": BUILD_FORMAT, "schema": BUILD_SCHEMA, "builds": {}}
    data["builds"][cfg.precision] = entry
    atomic_write_text(root / BUILD_CONFIG, json.dumps(data, indent=2))
    command = build_engine_command(bundle_dir, cfg.precision)
    trtexec = trtexec_command(bundle_dir, entry, input_name=inp.name, input_dims=dims)
    if "calibration_cache" in files:
        notes.append(f"trtexec reads {CALIB_CACHE} as tagged for TensorRT {cfg.target_tensorrt or '(this machine)'}; "
                     "build-engine retags it for the TensorRT it finds")
    return PreparedBuild(bundle=root, precision=cfg.precision, config=cfg, build_config=root / BUILD_CONFIG,
                         files=files, command=command, trtexec=trtexec, notes=notes)


def _verified(bundle: Bundle, art: Any) -> Path:
    """The artifact's path after checking its sha256 against the manifest."""
    path = bundle.path_of(art)
    if not path.is_file() or sha256_file(path) != art.sha256:
        raise TensorRTError(f"{path}: missing or changed since the bundle was written (sha256 differs from the "
                            "manifest); re-export the bundle")
    return path


def _input_dims(model: onnx.ModelProto, name: str) -> list[int]:
    for vi in model.graph.input:
        if vi.name == name:
            return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                    for d in vi.type.tensor_type.shape.dim]
    raise TensorRTError(f"the spec's input {name!r} is not an input of the ONNX model; fix the spec")


def _find_calibration_json(bundle: Bundle, qdq_art: Any) -> Path | None:
    """calibration.json: listed with the INT8 artifact, else at the bundle root."""
    if qdq_art is not None:
        for rel in qdq_art.extra_files:
            if rel.rsplit("/", 1)[-1].split(".")[0] == "calibration" and rel.endswith(".json"):  # .g<N> too
                return bundle.path_of(rel)
    p = bundle.root / "calibration.json"
    return p if p.is_file() else None


def _save_onnx(model: onnx.ModelProto, path: Path) -> None:
    atomic_write_bytes(path, model.SerializeToString())


# --- build on this machine ---------------------------------------------------------------------------------
def fp32_rows(rows: Sequence[LayerRow], outputs: Iterable[str]) -> dict[str, str]:
    """:func:`fp32_layers` over the device build's (name, kind, inputs, outputs) rows."""
    return fp32_layers([LayerInfo(*row) for row in rows], outputs)


def build_engine(bundle_dir: str | Path, precision: str | None = None, *, profile: DeviceProfile | None = None,
                 force: bool = False, register: bool = True, timing_cache: str | Path | None = None,
                 log: Callable[[str], None] | None = None) -> BuildResult:
    """:func:`heatdeploy.runtime.backends.tensorrt_build.build_engine`, preparing the bundle first when it was
    not prepared for ``precision``/``profile`` (needs ``onnx``), with the one float-scope rule."""
    return tensorrt_build.build_engine(bundle_dir, precision, profile=profile, force=force, register=register,
                                       timing_cache=timing_cache, log=log, prepare=prepare_tensorrt,
                                       pin_rule=fp32_rows)


# --- export --format tensorrt ------------------------------------------------------------------------------
@dataclass
class TensorRTExport:
    """The outcome of ``heatdeploy export --format tensorrt``: prepared always, built where possible."""

    prepared: PreparedBuild
    built: BuildResult | None
    status: str  # why it was (not) built here

    def lines(self) -> list[str]:
        """What the CLI prints."""
        p = self.prepared
        out = [f"TensorRT {p.precision} build prepared in {p.build_config}"]
        out += [f"  note: {n}" for n in p.notes]
        if self.built is not None:
            b = self.built
            out.append(f"engine {'reused' if b.cache_hit else 'built'}: {b.engine}"
                       + (f" (artifact {b.artifact})" if b.artifact else ""))
        else:
            out += [f"not built here: {self.status}", "on the device, run:", f"  {p.command}",
                    "or, with trtexec:", f"  {p.trtexec}"]
        return out


def export_tensorrt(bundle_dir: str | Path, precision: str | None = None, profile: DeviceProfile | None = None,
                    *, build: str = "auto", log: Callable[[str], None] | None = None) -> TensorRTExport:
    """Prepare the bundle; build the engine too when TensorRT and a GPU are here (``build``: auto|never|always)."""
    if build not in ("auto", "never", "always"):
        raise TensorRTError(f"build {build!r}: choose auto, never or always")
    prepared = prepare_tensorrt(bundle_dir, precision, profile)
    if build == "never":
        return TensorRTExport(prepared, None, "build=never")
    ok, status = tensorrt_status()
    if not ok and build == "auto":
        return TensorRTExport(prepared, None, status)
    built = build_engine(bundle_dir, prepared.precision, profile=profile, log=log)
    return TensorRTExport(prepared, built, status)


__all__ = [
    "BuildConfig", "BuildResult", "BuilderPlan", "LayerInfo", "PreparedBuild", "TensorRTError", "TensorRTExport",
    "build_engine", "build_engine_command", "builder_plan", "cache_coverage", "check_qdq_for_tensorrt",
    "engine_cache_key", "engine_options", "engine_path", "engine_record", "export_tensorrt", "find_cached_engine",
    "fp32_layers", "load_build_config", "prepare_tensorrt", "profile_shapes", "resolve_int8_mode",
    "retag_calibration_cache", "tensorrt_qdq", "tensorrt_status", "trt_major", "trt_tag", "trtexec_command",
    # re-exported from the runtime side, where the device build reads them
    "BUILD_CONFIG", "BUILD_FORMAT", "BUILD_SCHEMA", "CALIB_CACHE", "ENGINE_DIR", "QDQ_MODEL", "TRT_DIR",
]
