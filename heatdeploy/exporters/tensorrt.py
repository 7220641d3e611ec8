"""TensorRT engines from a bundle's ONNX: prepared anywhere, built on the target, cached and checked.

A TensorRT engine is specific to the TensorRT version and the GPU that built it, so it is built on the
device. The work splits in two:

- :func:`prepare_tensorrt` (any machine with ``onnx``): writes ``tensorrt/build_config.json`` into the
  bundle (builder options from the device profile, sha256 of every input), the TensorRT calibration cache
  made from our engine-neutral ranges (implicit INT8: no calibration data is needed on the device), and a
  TensorRT-ready copy of the QDQ INT8 model (explicit INT8: biases folded to float, int8 zero points). It
  returns the one command to run on the device and the equivalent ``trtexec`` line.
- :func:`build_engine` (the device: TensorRT + a GPU; ``onnx`` not needed): parses the ONNX, sets FP16/INT8
  and the precision constraints that keep Sigmoid/Softmax and the head tails FP32, the optimisation profile
  for dynamic batch, workspace, DLA and timing cache, and writes the plan with a sidecar record under a cache
  key of (model hash, TensorRT version, GPU name, precision, options). A plan whose record no longer matches
  is rebuilt; one that is corrupt is detected by its sha256 (see :mod:`heatdeploy.runtime.backends.tensorrt`).

INT8 two ways: *explicit* (the QDQ model decides what is INT8; the only way in TensorRT 11, whose networks
are strongly typed) and *implicit* (FP32 model + our calibration cache; TensorRT 8.x/10.x as JetPack 5/6
ship them). ``int8_mode = "auto"`` picks per the TensorRT that does the build.

The decisions (profile -> builder plan, cache keys, layer precision, shapes, command lines, cache text) are
plain functions tested without TensorRT; only :func:`build_engine` touches it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from heatdeploy import __version__
from heatdeploy.bundle import Bundle, BundleError
from heatdeploy.calibration.float_scope import LayerInfo, float_layers
from heatdeploy.devices.profiles import DeviceProfile, TensorRTOptions
from heatdeploy.fsutil import atomic_write_bytes, atomic_write_text, sha256_file
from heatdeploy.runtime.backends.base import BackendError
from heatdeploy.runtime.backends.tensorrt import (
    ENGINE_FORMAT,
    ENGINE_SCHEMA,
    check_engine_record,
    dims_list,
    read_engine_record,
    sha256_bytes,
    sidecar_path,
    version_triple,
)

if TYPE_CHECKING:
    import onnx
    import tensorrt as trt

PRECISIONS = ("fp32", "fp16", "int8")
TRT_DIR = "tensorrt"  # inside the bundle
ENGINE_DIR = f"{TRT_DIR}/engines"
BUILD_CONFIG = f"{TRT_DIR}/build_config.json"
CALIB_CACHE = f"{TRT_DIR}/calibration.cache"
QDQ_MODEL = f"{TRT_DIR}/model.int8.qdq.onnx"
BUILD_FORMAT = "heatdeploy-tensorrt-build"
BUILD_SCHEMA = 1
# Bumped when build_engine changes what it does to a network (flags, constraints): part of every cache key.
BUILD_LOGIC = 1
CALIB_ALGORITHM = "EntropyCalibration2"  # the header ranges.trt_cache_text writes; our calibrator matches it
STRONG_TYPING_FROM = 11  # TensorRT 11: strongly typed networks only, explicit INT8 only


class TensorRTError(BackendError):
    """A TensorRT preparation or build that cannot go on; the one-line message names the file and the fix."""


# --- builder configuration (pure) ---------------------------------------------------------------------
@dataclass(frozen=True)
class BuildConfig:
    """What to build: precision plus the profile's builder options (everything here is JSON-able)."""

    precision: str
    int8_mode: str = "auto"  # auto | explicit | implicit; auto is resolved against the building TensorRT
    workspace_mb: int = 1024
    dla_core: int | None = None
    gpu_fallback: bool = True
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1
    timing_cache: bool = True
    builder_optimization_level: int | None = None
    fp32_heads: bool = True
    tf32: bool = False
    profile: str = ""  # informational: which device profile this came from
    target_tensorrt: str = ""  # informational: the TensorRT the profile expects on the device

    @classmethod
    def from_profile(cls, profile: DeviceProfile | None, precision: str | None = None, **overrides: Any) -> BuildConfig:
        """The profile's [tensorrt] options and precision (``precision`` overrides it); defaults without one."""
        opts = (profile.tensorrt if profile is not None else None) or TensorRTOptions()
        prec = precision or (profile.precision if profile is not None else "fp32")
        cfg = cls(precision=prec, int8_mode=opts.int8_mode, workspace_mb=opts.workspace_mb, dla_core=opts.dla_core,
                  gpu_fallback=opts.gpu_fallback, min_batch=opts.min_batch, opt_batch=opts.opt_batch,
                  max_batch=opts.max_batch, timing_cache=opts.timing_cache,
                  builder_optimization_level=opts.builder_optimization_level, fp32_heads=opts.fp32_heads,
                  tf32=opts.tf32, profile=profile.name if profile is not None else "",
                  target_tensorrt=opts.version)
        return replace(cfg, **overrides).validate()

    def validate(self) -> BuildConfig:
        if self.precision not in PRECISIONS:
            raise TensorRTError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.int8_mode not in ("auto", "explicit", "implicit"):
            raise TensorRTError(f"int8_mode {self.int8_mode!r}: choose auto, explicit or implicit")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise TensorRTError(f"batch range must satisfy 1 <= min <= opt <= max, got {self.min_batch}, "
                                f"{self.opt_batch}, {self.max_batch}")
        if self.dla_core is not None and self.precision == "fp32":
            raise TensorRTError("DLA runs FP16 or INT8 only; build fp16/int8 or leave dla_core unset")
        if self.workspace_mb < 1:
            raise TensorRTError(f"workspace_mb must be positive, got {self.workspace_mb}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "build config") -> BuildConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TensorRTError(f"{where}: unknown build option(s) {', '.join(unknown)}; prepare the bundle again "
                                "with this heatdeploy")
        try:
            return cls(**dict(data)).validate()
        except TypeError as exc:
            raise TensorRTError(f"{where}: malformed build options ({exc}); prepare the bundle again") from None


def trt_major(version: str) -> int:
    return version_triple(version)[0]


def resolve_int8_mode(requested: str, trt_version: str, *, have_cache: bool = True,
                      have_qdq: bool = True) -> tuple[str, str]:
    """(explicit | implicit, why) for an INT8 build with this TensorRT and these prepared inputs."""
    major = trt_major(trt_version)
    if major >= STRONG_TYPING_FROM:
        if requested == "implicit":
            raise TensorRTError(f"TensorRT {trt_version} has no implicit (calibrated) INT8; use int8_mode explicit "
                                "(the QDQ model)")
        if not have_qdq:
            raise TensorRTError(f"TensorRT {trt_version} needs explicit INT8 (a QDQ model) but none was prepared; "
                                "export an INT8 ONNX into the bundle and prepare again")
        return "explicit", f"TensorRT {major} is strongly typed: INT8 comes from the QDQ model"
    if requested == "explicit":
        if not have_qdq:
            raise TensorRTError("int8_mode explicit needs a QDQ model, and none was prepared; export an INT8 ONNX "
                                "into the bundle and prepare again")
        return "explicit", "requested: INT8 exactly where the QDQ model puts it"
    if requested == "implicit" or have_cache:
        if not have_cache:
            raise TensorRTError("int8_mode implicit needs the calibration cache, and none was prepared; prepare "
                                "the bundle again with calibration ranges")
        return "implicit", (f"TensorRT {major}.x: our ranges as a calibration cache, TensorRT picks INT8 per layer "
                            "(no calibration data on the device)")
    return "explicit", f"TensorRT {major}.x without a calibration cache: the QDQ model"


@dataclass(frozen=True)
class BuilderPlan:
    """Exactly what :func:`build_engine` will ask of TensorRT (names of enum members, so it is testable)."""

    source: str  # which prepared ONNX: "fp32" | "qdq" | "fp16"
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members
    builder_flags: tuple[str, ...]  # BuilderFlag members to set
    clear_flags: tuple[str, ...]  # BuilderFlag members to clear
    int8_mode: str | None
    calibration_cache: bool
    precision_constraints: bool  # set FP32 on Sigmoid/Softmax + head tails (weakly typed networks only)
    dla_core: int | None
    notes: tuple[str, ...] = ()


def builder_plan(config: BuildConfig, trt_version: str, *, int8_mode: str | None = None) -> BuilderPlan:
    """Profile options + precision + TensorRT version -> the builder plan.

    TensorRT < 10 needs EXPLICIT_BATCH; 10.x is always explicit batch; 11+ is strongly typed, so precision
    comes from the ONNX itself (an FP16 ONNX for fp16, the QDQ model for int8) and flags/constraints are
    not allowed. INT8 builds also allow FP16 for the layers INT8 does not cover, as trtexec --int8 --fp16.
    """
    major = trt_major(trt_version)
    strong = major >= STRONG_TYPING_FROM
    net = ("STRONGLY_TYPED",) if strong else (("EXPLICIT_BATCH",) if major < 10 else ())
    clear = () if config.tf32 else ("TF32",)
    notes: list[str] = []
    flags: list[str] = []
    mode: str | None = None
    source = "fp32"
    if config.precision == "fp16":
        if strong:
            source = "fp16"
            notes.append(f"TensorRT {major} is strongly typed: the FP16 ONNX decides the types")
        else:
            flags.append("FP16")
    elif config.precision == "int8":
        if int8_mode not in ("explicit", "implicit"):
            raise TensorRTError(f"an INT8 build needs int8_mode explicit or implicit (resolved), got {int8_mode!r}")
        mode = int8_mode
        if mode == "explicit":
            source = "qdq"
        if not strong:
            flags += ["INT8", "FP16"]
    constraints = config.fp32_heads and not strong and config.precision != "fp32"
    if constraints:
        flags.append("OBEY_PRECISION_CONSTRAINTS")
    if config.dla_core is not None and config.gpu_fallback:
        flags.append("GPU_FALLBACK")
    if config.dla_core is not None and config.min_batch != config.max_batch:
        notes.append("DLA needs static shapes: with a dynamic batch range the layers run on the GPU (fallback)")
    return BuilderPlan(source=source, network_flags=net, builder_flags=tuple(flags), clear_flags=clear,
                       int8_mode=mode, calibration_cache=mode == "implicit", precision_constraints=constraints,
                       dla_core=config.dla_core, notes=tuple(notes))


def engine_options(config: BuildConfig, plan: BuilderPlan, calibration_sha256: str | None = None) -> dict[str, Any]:
    """Everything besides model / TensorRT / GPU / precision that changes the engine (part of the cache key).

    The informational fields (profile name, target TensorRT) are left out: two profiles with the same options
    build the same engine.
    """
    opts = {k: v for k, v in config.to_dict().items() if k not in ("precision", "profile", "target_tensorrt")}
    opts["int8_mode"] = plan.int8_mode
    opts["builder_flags"] = list(plan.builder_flags)
    opts["network_flags"] = list(plan.network_flags)
    opts["calibration_sha256"] = calibration_sha256 if plan.calibration_cache else None
    opts["build_logic"] = BUILD_LOGIC
    return opts


def engine_cache_key(*, model_sha256: str, trt_version: str, gpu_name: str, precision: str,
                     options: Mapping[str, Any]) -> str:
    """sha256 of (model hash, TensorRT major.minor.patch, GPU name, precision, options) as canonical JSON."""
    payload = {"schema": ENGINE_SCHEMA, "model": model_sha256, "tensorrt": ".".join(map(str, version_triple(
        trt_version))), "gpu": gpu_name, "precision": precision, "options": dict(options)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def engine_path(bundle_dir: str | Path, key: str, precision: str = "") -> Path:
    """Where the engine for ``key`` lives: ``<bundle>/tensorrt/engines/<precision>-<key[:16]>.plan``."""
    name = f"{precision}-{key[:16]}.plan" if precision else f"{key[:16]}.plan"
    return Path(bundle_dir) / ENGINE_DIR / name


def find_cached_engine(bundle_dir: str | Path, key: str, precision: str, *, trt_version: str,
                       gpu_name: str) -> tuple[Path | None, list[str]]:
    """(plan, []) when a valid engine for ``key`` exists; (None, problems) when it is missing, stale or corrupt."""
    plan = engine_path(bundle_dir, key, precision)
    if not plan.is_file():
        return None, ["no engine built yet for these inputs"]
    try:
        record = read_engine_record(plan)
    except BackendError as exc:
        return None, [str(exc)]
    problems = check_engine_record(record, engine_sha256=sha256_file(plan), trt_version=trt_version,
                                   gpu_name=gpu_name, key=key)
    return (None, problems) if problems else (plan, [])


def engine_record(*, key: str, precision: str, int8_mode: str | None, trt_version: str, gpu_name: str,
                  compute_capability: str, model_sha256: str, engine: bytes, options: Mapping[str, Any],
                  inputs: Sequence[str], outputs: Sequence[str], fp32_layers: Mapping[str, str],
                  build_seconds: float, profile: str) -> dict[str, Any]:
    """The sidecar JSON written beside each plan (what :func:`check_engine_record` reads back)."""
    return {
        "format": ENGINE_FORMAT, "schema": ENGINE_SCHEMA, "key": key, "precision": precision, "int8_mode": int8_mode,
        "tensorrt": trt_version, "gpu": gpu_name, "compute_capability": compute_capability,
        "model_sha256": model_sha256, "engine_sha256": sha256_bytes(engine), "engine_size": len(engine),
        "options": dict(options), "inputs": list(inputs), "outputs": list(outputs),
        "fp32_layers": dict(fp32_layers), "profile": profile, "heatdeploy": __version__,
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"), "build_seconds": round(build_seconds, 2),
    }


# --- layer precision (pure) ------------------------------------------------------------------------------
def fp32_layers(layers: Sequence[LayerInfo], outputs: Iterable[str]) -> dict[str, str]:
    """Layers to pin to FP32, with the reason: the one float-scope rule
    (:mod:`heatdeploy.calibration.float_scope`) on TensorRT's layers, so TensorRT keeps FP32 what ORT and
    OpenVINO keep float. Constants, shape and Q/DQ layers are skipped.
    """
    return float_layers(layers, outputs, "base")


def profile_shapes(dims: Sequence[int], config: BuildConfig,
                   name: str = "input") -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], list[str]]:
    """(min, opt, max) shapes for the optimisation profile from the input dims (-1 = dynamic) and batch range.

    Only the batch axis may be dynamic (the spec fixes H, W and C); a static batch wins over the profile's
    range, with a note.
    """
    dims = list(dims)
    if not dims:
        raise TensorRTError(f"input {name!r} is a scalar; heatdeploy models take [N, ...] images")
    rest = dims[1:]
    if any(d < 0 for d in rest):
        raise TensorRTError(f"input {name!r} has dynamic non-batch dims {dims}; export with a fixed input size "
                            "(the spec's height/width/channels)")
    notes: list[str] = []
    if dims[0] >= 0:
        if (config.min_batch, config.max_batch) != (dims[0], dims[0]):
            notes.append(f"input {name!r} has a static batch {dims[0]}; the profile's batch range "
                         f"{config.min_batch}..{config.max_batch} does not apply (export with a dynamic batch)")
        static = tuple(dims)
        return static, static, static, notes
    lo, opt, hi = ((n, *rest) for n in (config.min_batch, config.opt_batch, config.max_batch))
    return lo, opt, hi, notes


# --- calibration cache and QDQ model (pure, or onnx only) ------------------------------------------------
def trt_tag(version: str) -> str:
    """TensorRT's NV_TENSORRT_VERSION as a calibration-cache header writes it (8.6.1 -> 8601, 10.3 -> 100300).

    ``heatdeploy.calibration.ranges.trt_version_tag`` is the reference; it is used when importable. The
    device that runs :func:`build_engine` may have no ``onnx`` (which that module imports), hence this
    fallback, tested equal to the reference.
    """
    try:
        from heatdeploy.calibration.ranges import trt_version_tag
    except ImportError:
        major, minor, patch = version_triple(version)
        return str(major * (10000 if major >= 10 else 1000) + minor * 100 + patch)
    return trt_version_tag(version)


def retag_calibration_cache(text: str, trt_version: str) -> str:
    """The same ranges with the header of the TensorRT that builds: TensorRT skips a cache tagged for another
    version (and then finds no calibration data)."""
    lines = text.splitlines()
    if not lines or not re.fullmatch(r"TRT-\w+-\w+", lines[0].strip()):
        raise TensorRTError("calibration cache: first line should be TRT-<version>-<algorithm>; prepare again")
    algorithm = lines[0].strip().split("-", 2)[2]
    if algorithm != CALIB_ALGORITHM:
        raise TensorRTError(f"calibration cache is for {algorithm}, heatdeploy's calibrator reads {CALIB_ALGORITHM}")
    return "\n".join([f"TRT-{trt_tag(trt_version)}-{algorithm}", *lines[1:]]) + "\n"


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
def build_engine_command(bundle_dir: str | Path, precision: str) -> str:
    """The one command to run on the device."""
    return shlex.join(["heatdeploy", "build-engine", str(bundle_dir), "--precision", precision])


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
    if cfg.builder_optimization_level is not None:
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


def load_build_config(bundle_dir: str | Path) -> dict[str, Any]:
    """``tensorrt/build_config.json`` of a bundle ({} when the bundle was never prepared)."""
    path = Path(bundle_dir) / BUILD_CONFIG
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TensorRTError(f"{path}: unreadable ({exc}); prepare the bundle again "
                            "(heatdeploy export --format tensorrt)") from None
    if not isinstance(data, dict) or data.get("format") != BUILD_FORMAT or data.get("schema") != BUILD_SCHEMA:
        raise TensorRTError(f"{path}: not a heatdeploy TensorRT build config (or an older schema); prepare again")
    return data


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
            if rel.endswith("calibration.json"):
                return bundle.path_of(rel)
    p = bundle.root / "calibration.json"
    return p if p.is_file() else None


def _save_onnx(model: onnx.ModelProto, path: Path) -> None:
    atomic_write_bytes(path, model.SerializeToString())


# --- where TensorRT can run -------------------------------------------------------------------------------
def tensorrt_status() -> tuple[bool, str]:
    """(True, TensorRT version + GPU) when an engine can be built here, else (False, why not)."""
    from heatdeploy.runtime.backends.tensorrt import machine_identity

    try:
        version, gpu, cc = machine_identity()
    except BackendError as exc:
        return False, str(exc)
    return True, f"TensorRT {version} on {gpu} (compute {cc})"


# --- build (the device) -----------------------------------------------------------------------------------
@dataclass
class BuildResult:
    engine: Path
    key: str
    cache_hit: bool
    seconds: float
    record: dict[str, Any]
    artifact: str | None = None
    notes: list[str] = field(default_factory=list)


def _checked_sources(root: Path, entry: Mapping[str, Any]) -> dict[str, Path]:
    """Prepared files by role, each checked against the sha256 recorded when prepared."""
    out = {}
    for role, item in entry["sources"].items():
        path = root / item["path"]
        if not path.is_file():
            raise TensorRTError(f"{path}: prepared for the TensorRT build but missing; prepare the bundle again")
        if sha256_file(path) != item["sha256"]:
            raise TensorRTError(f"{path}: changed since the TensorRT build was prepared (sha256 differs); prepare "
                                "the bundle again (heatdeploy export --format tensorrt)")
        out[role] = path
    return out


def default_timing_cache(trt_version: str, gpu_name: str) -> Path:
    """One timing cache per TensorRT version and GPU, shared by every bundle (that is what makes it pay)."""
    from heatdeploy.calibration.cache import default_cache_dir

    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    return default_cache_dir().parent / "tensorrt" / f"timing-{trt_tag(trt_version)}-{slug}.cache"


def build_engine(bundle_dir: str | Path, precision: str | None = None, *, profile: DeviceProfile | None = None,
                 force: bool = False, register: bool = True, timing_cache: str | Path | None = None,
                 log: Callable[[str], None] | None = None) -> BuildResult:
    """Build (or reuse) the engine for ``precision`` on this machine; needs TensorRT and a GPU.

    Uses the prepared ``tensorrt/build_config.json``; when the bundle was not prepared for ``precision`` and a
    ``profile`` is given, prepares it first (that step needs ``onnx``). A cached engine is reused only when its
    record matches the cache key and its sha256; otherwise it is rebuilt. ``register`` adds the engine to the
    bundle manifest as ``tensorrt-<precision>`` so ``heatdeploy run/parity`` can pick it.
    """
    say = log or (lambda _msg: None)
    root = Path(bundle_dir)
    bundle = Bundle.load(root, verify=False)  # the sources are checked below; a corrupt old engine is rebuilt
    builds = load_build_config(root).get("builds", {})
    if precision is None and len(builds) == 1:
        precision = next(iter(builds))
    if precision is None and profile is not None:
        precision = profile.precision
    if precision is None:
        raise TensorRTError(f"{root}: say which precision to build (--precision); prepared: "
                            f"{', '.join(builds) or 'none'}")
    stale_profile = profile is not None and precision in builds and builds[precision]["config"].get("profile") \
        != profile.name
    if precision not in builds or stale_profile:
        if profile is None:
            raise TensorRTError(f"{root}: not prepared for a {precision} TensorRT build; run heatdeploy export "
                                "--format tensorrt --device PROFILE on a machine with onnx, or pass --device here")
        try:
            prepare_tensorrt(root, precision, profile)
        except ImportError as exc:  # no onnx on the device
            raise TensorRTError(f"{root}: prepared for another profile (or not at all) and preparing here needs "
                                f"{exc.name}; prepare with --device {profile.name} on the export machine") from None
        builds = load_build_config(root)["builds"]
    entry = builds[precision]
    cfg = BuildConfig.from_dict(entry["config"], str(root / BUILD_CONFIG))
    sources = _checked_sources(root, entry)

    from heatdeploy.runtime.backends.tensorrt import cuda_api, import_tensorrt

    import_tensorrt()
    import tensorrt as trt

    cuda = cuda_api()
    trt_version, gpu_name, cc = trt.__version__, cuda.device_name(), cuda.compute_capability()
    mode = None
    if cfg.precision == "int8":
        mode, why = resolve_int8_mode(cfg.int8_mode, trt_version, have_cache="calibration_cache" in sources,
                                      have_qdq="qdq" in sources)
        say(f"INT8 {mode}: {why}")
    plan = builder_plan(cfg, trt_version, int8_mode=mode)
    if plan.source not in sources:
        raise TensorRTError(f"{root}: TensorRT {trt_version} builds {cfg.precision} from the {plan.source} ONNX, "
                            f"which was not prepared; add one to the bundle and prepare again")
    model_path = sources[plan.source]
    cal_sha = entry["sources"].get("calibration_cache", {}).get("sha256")
    options = engine_options(cfg, plan, cal_sha)
    model_sha = entry["sources"][plan.source]["sha256"]
    key = engine_cache_key(model_sha256=model_sha, trt_version=trt_version, gpu_name=gpu_name,
                           precision=cfg.precision, options=options)
    if not force:
        cached, why_not = find_cached_engine(root, key, cfg.precision, trt_version=trt_version, gpu_name=gpu_name)
        if cached is not None:
            record = read_engine_record(cached)
            say(f"engine cache hit: {cached}")
            name = _register(bundle, cached, record) if register else None
            return BuildResult(cached, key, True, 0.0, record, name, list(plan.notes))
        say(f"building: {why_not[0]}")

    t0 = time.perf_counter()
    messages: list[str] = []
    logger = _make_logger(messages)
    builder = trt.Builder(logger)
    flags = 0
    for flag in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, flag))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise TensorRTError(f"{model_path}: TensorRT {trt_version}'s ONNX parser failed: {'; '.join(errors[:3])}"
                            " (opset or operator not supported by this TensorRT?)")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb << 20)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan.clear_flags:
        if hasattr(trt.BuilderFlag, flag):
            config.clear_flag(getattr(trt.BuilderFlag, flag))
    if cfg.builder_optimization_level is not None and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = cfg.builder_optimization_level
    notes = list(plan.notes)
    if plan.dla_core is not None:
        if builder.num_DLA_cores <= plan.dla_core:
            raise TensorRTError(f"the profile asks for DLA core {plan.dla_core} but this device has "
                                f"{builder.num_DLA_cores}; set dla_core = -1 (GPU only) in the profile")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core

    opt_profile = builder.create_optimization_profile()
    in_name = entry["input"]["name"]
    tensor = next((network.get_input(i) for i in range(network.num_inputs) if network.get_input(i).name == in_name),
                  None)
    if tensor is None:
        raise TensorRTError(f"{model_path}: the network has no input {in_name!r}; prepare the bundle again")
    lo, opt, hi, shape_notes = profile_shapes(dims_list(tensor.shape), cfg, in_name)
    notes += shape_notes
    opt_profile.set_shape(in_name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
    config.add_optimization_profile(opt_profile)

    pinned: dict[str, str] = {}
    if plan.precision_constraints:
        pinned = _pin_fp32(network)
    if plan.calibration_cache:
        text = retag_calibration_cache(sources["calibration_cache"].read_text(encoding="utf-8"), trt_version)
        config.int8_calibrator = _make_calibrator(text.encode())
        config.set_calibration_profile(opt_profile)

    cache_file = Path(timing_cache) if timing_cache else default_timing_cache(trt_version, gpu_name)
    if cfg.timing_cache:
        blob = cache_file.read_bytes() if cache_file.is_file() else b""
        try:
            cache = config.create_timing_cache(blob) if blob else None
        except Exception:  # TensorRT raises a bare RuntimeError-like pybind11 error on a damaged blob
            cache = None
        if cache is None or not config.set_timing_cache(cache, False):
            if blob:  # from another TensorRT/GPU, or damaged: TensorRT says so in its log; start a fresh one
                notes.append(f"timing cache {cache_file} not usable here; a fresh one replaces it")
            config.set_timing_cache(config.create_timing_cache(b""), False)

    say(f"building {cfg.precision} engine with TensorRT {trt_version} on {gpu_name}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        errors = [m for m in messages if m.startswith(("ERROR", "INTERNAL"))]
        raise TensorRTError(f"{model_path}: TensorRT could not build the engine: {'; '.join(errors[-3:]) or 'no log'}")
    data = bytes(serialized)
    if cfg.timing_cache:
        atomic_write_bytes(cache_file, bytes(config.get_timing_cache().serialize()))
    seconds = time.perf_counter() - t0
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    record = engine_record(key=key, precision=cfg.precision, int8_mode=mode, trt_version=trt_version,
                           gpu_name=gpu_name, compute_capability=cc, model_sha256=model_sha, engine=data,
                           options=options, inputs=[in_name], outputs=outputs, fp32_layers=pinned,
                           build_seconds=seconds, profile=cfg.profile)
    dest = engine_path(root, key, cfg.precision)
    atomic_write_bytes(dest, data)
    atomic_write_text(sidecar_path(dest), json.dumps(record, indent=2))
    say(f"engine written: {dest} ({len(data) >> 10} KiB, {seconds:.0f} s)")
    name = _register(bundle, dest, record) if register else None
    return BuildResult(dest, key, False, seconds, record, name, notes)


def _register(bundle: Bundle, plan: Path, record: Mapping[str, Any]) -> str:
    """Record the engine in the manifest as ``tensorrt-<precision>`` (replacing an older build's entry)."""
    rel_plan = plan.relative_to(bundle.root).as_posix()
    side = sidecar_path(plan)
    name = f"tensorrt-{record['precision']}"
    bundle.add_file(plan, rel_plan, name=name, format="tensorrt-plan", precision=str(record["precision"]),
                    backend="tensorrt", tools={"tensorrt": str(record["tensorrt"]), "gpu": str(record["gpu"])},
                    extra={side.relative_to(bundle.root).as_posix(): side},
                    notes={"key": record["key"], "int8_mode": record.get("int8_mode")})
    bundle.save()
    return name


def _layer_kind(layer: trt.ILayer) -> str:
    """TensorRT's layer type as a :class:`LayerInfo` kind (Sigmoid is an ACTIVATION of type SIGMOID)."""
    import tensorrt as trt

    lt = trt.LayerType
    table = {lt.CONVOLUTION: "conv", lt.DECONVOLUTION: "deconv", lt.MATRIX_MULTIPLY: "matmul",
             lt.SOFTMAX: "softmax", lt.CONSTANT: "constant", lt.SHAPE: "shape", lt.QUANTIZE: "quantize",
             lt.DEQUANTIZE: "dequantize"}
    if hasattr(lt, "FULLY_CONNECTED"):  # TensorRT 8.x
        table[lt.FULLY_CONNECTED] = "matmul"
    if layer.type == lt.ACTIVATION:
        act = cast("trt.IActivationLayer", layer)
        act.__class__ = trt.IActivationLayer  # the Python API's documented downcast to read the activation type
        return {trt.ActivationType.SIGMOID: "sigmoid", trt.ActivationType.HARD_SIGMOID: "hardsigmoid"}.get(
            act.type, "other")
    return table.get(layer.type, "other")


def _pin_fp32(network: trt.INetworkDefinition) -> dict[str, str]:
    """Set FP32 precision and output types on the layers :func:`fp32_layers` picks; returns them with reasons."""
    import tensorrt as trt

    layers = []
    by_name = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins = tuple(t.name for j in range(layer.num_inputs) if (t := layer.get_input(j)) is not None)
        outs = tuple(layer.get_output(j).name for j in range(layer.num_outputs))
        layers.append(LayerInfo(layer.name, _layer_kind(layer), ins, outs))
        by_name[layer.name] = layer
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    pins = fp32_layers(layers, outputs)
    for name in pins:
        layer = by_name[name]
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in (trt.float32, trt.float16):
                layer.set_output_type(j, trt.float32)
    for i in range(network.num_outputs):
        out = network.get_output(i)
        if out.dtype in (trt.float32, trt.float16):
            out.dtype = trt.float32
    return pins


def _make_logger(sink: list[str]) -> trt.ILogger:
    """A TensorRT logger that keeps warnings and errors, so a failed build can say why."""
    import tensorrt as trt

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity <= trt.ILogger.Severity.WARNING:
                sink.append(f"{severity.name}: {msg}")

    return _Logger()


def _make_calibrator(cache: bytes) -> trt.IInt8Calibrator:
    """An entropy calibrator that only reads our cache: TensorRT never asks it for data."""
    import tensorrt as trt

    class _CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int]:
            return []  # no data: the cache covers every calibrated tensor

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    return _CacheCalibrator()


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
    "retag_calibration_cache", "tensorrt_qdq", "tensorrt_status", "trt_tag", "trtexec_command",
]
