"""TensorRT build configuration and engine cache, pure logic shared by the exporter and the device build.

The exporter (:mod:`heatdeploy.exporters.tensorrt`) writes the build *plan* into a bundle
(``tensorrt/build_config.json``, calibration cache, TensorRT-ready QDQ model); the device
(:mod:`heatdeploy.runtime.backends.tensorrt_build`) resolves it against the TensorRT it has. Both need the
same decisions: profile -> builder options, the cache key of an engine, where it lives, its record.
Nothing here imports TensorRT, onnx or the calibration package, so it runs on a runtime-only Jetson.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heatdeploy import __version__
from heatdeploy.fsutil import sha256_file
from heatdeploy.runtime.backends.base import BackendError
from heatdeploy.runtime.backends.tensorrt import (
    ENGINE_FORMAT,
    ENGINE_SCHEMA,
    check_engine_record,
    read_engine_record,
    sha256_bytes,
    version_triple,
)

if TYPE_CHECKING:
    from heatdeploy.devices.profiles import DeviceProfile

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
        from heatdeploy.devices.profiles import TensorRTOptions  # profiles are data: TOML + dataclasses

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
                     options: Mapping[str, Any], device: Mapping[str, Any] | None = None) -> str:
    """sha256 of (model hash, TensorRT major.minor.patch, GPU name, device identity, precision, options).

    ``device`` (:func:`~heatdeploy.runtime.backends.tensorrt.device_identity`: compute capability, SM count,
    memory, board model) tells apart Jetson modules that share the GPU name "Orin".
    """
    payload = {"schema": ENGINE_SCHEMA, "model": model_sha256, "tensorrt": ".".join(map(str, version_triple(
        trt_version))), "gpu": gpu_name, "precision": precision, "options": dict(options)}
    if device:
        payload["device"] = dict(device)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def engine_path(bundle_dir: str | Path, key: str, precision: str = "") -> Path:
    """Where the engine for ``key`` lives: ``<bundle>/tensorrt/engines/<precision>-<key[:16]>.plan``."""
    name = f"{precision}-{key[:16]}.plan" if precision else f"{key[:16]}.plan"
    return Path(bundle_dir) / ENGINE_DIR / name


def find_cached_engine(bundle_dir: str | Path, key: str, precision: str, *, trt_version: str,
                       gpu_name: str, device: Mapping[str, Any] | None = None) -> tuple[Path | None, list[str]]:
    """(plan, []) when a valid engine for ``key`` exists; (None, problems) when it is missing, stale or corrupt."""
    plan = engine_path(bundle_dir, key, precision)
    if not plan.is_file():
        return None, ["no engine built yet for these inputs"]
    try:
        record = read_engine_record(plan)
    except BackendError as exc:
        return None, [str(exc)]
    problems = check_engine_record(record, engine_sha256=sha256_file(plan), trt_version=trt_version,
                                   gpu_name=gpu_name, key=key, device=device)
    return (None, problems) if problems else (plan, [])


def engine_record(*, key: str, precision: str, int8_mode: str | None, trt_version: str, gpu_name: str,
                  compute_capability: str, model_sha256: str, engine: bytes, options: Mapping[str, Any],
                  inputs: Sequence[str], outputs: Sequence[str], fp32_layers: Mapping[str, str],
                  build_seconds: float, profile: str, device: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The sidecar JSON written beside each plan (what :func:`check_engine_record` reads back)."""
    return {"device": dict(device or {"compute_capability": compute_capability}),
        "format": ENGINE_FORMAT, "schema": ENGINE_SCHEMA, "key": key, "precision": precision, "int8_mode": int8_mode,
        "tensorrt": trt_version, "gpu": gpu_name, "compute_capability": compute_capability,
        "model_sha256": model_sha256, "engine_sha256": sha256_bytes(engine), "engine_size": len(engine),
        "options": dict(options), "inputs": list(inputs), "outputs": list(outputs),
        "fp32_layers": dict(fp32_layers), "profile": profile, "heatdeploy": __version__,
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"), "build_seconds": round(build_seconds, 2),
    }


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


# --- calibration cache header (pure) --------------------------------------------------------------------
def trt_tag(version: str) -> str:
    """TensorRT's NV_TENSORRT_VERSION as a calibration-cache header writes it (8.6.1 -> 8601, 10.3 -> 100300).

    The device that builds may have no ``onnx`` (which ``heatdeploy.calibration.ranges`` imports), so the
    runtime side computes it itself; a test holds it equal to ``calibration.ranges.trt_version_tag``.
    """
    major, minor, patch = version_triple(version)
    return str(major * (10000 if major >= 10 else 1000) + minor * 100 + patch)


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



# --- command lines (pure) ---------------------------------------------------------------------------------
def build_engine_command(bundle_dir: str | Path, precision: str) -> str:
    """The one command to run on the device."""
    return shlex.join(["heatdeploy", "build-engine", str(bundle_dir), "--precision", precision])



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


__all__ = [
    "BUILD_CONFIG", "BUILD_FORMAT", "BUILD_LOGIC", "BUILD_SCHEMA", "CALIB_ALGORITHM", "CALIB_CACHE", "ENGINE_DIR",
    "PRECISIONS", "QDQ_MODEL", "STRONG_TYPING_FROM", "TRT_DIR", "BuildConfig", "BuilderPlan", "TensorRTError",
    "build_engine_command", "builder_plan", "engine_cache_key", "engine_options", "engine_path", "engine_record",
    "find_cached_engine", "load_build_config", "profile_shapes", "resolve_int8_mode", "retag_calibration_cache",
    "trt_major", "trt_tag",
]
