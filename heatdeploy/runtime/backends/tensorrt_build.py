"""The TensorRT engine build, on the device: the bundle's prepared plan -> a cached, checked engine.

:mod:`heatdeploy.exporters.tensorrt` prepares the plan anywhere (it needs ``onnx``); this module runs where
TensorRT and a GPU are (``onnx`` not needed): parses the ONNX, sets FP16/INT8 and the precision constraints
that keep Sigmoid/Softmax and the head tails FP32, the optimisation profile for dynamic batch, workspace, DLA
and timing cache, and writes the plan with a sidecar record under a cache key of (model hash, TensorRT
version, GPU and device identity, precision, options). A plan whose record no longer matches is rebuilt.
TensorRT is imported inside the functions, so this imports (and its decisions test) anywhere.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from heatdeploy.bundle import Bundle
from heatdeploy.fsutil import atomic_write_bytes, atomic_write_text, cache_dir, sha256_file
from heatdeploy.runtime.backends.base import BackendError
from heatdeploy.runtime.backends.tensorrt import (
    cuda_api,
    device_identity,
    dims_list,
    import_tensorrt,
    machine_identity,
    read_engine_record,
    sidecar_path,
)
from heatdeploy.runtime.backends.tensorrt_config import (
    BUILD_CONFIG,
    BuildConfig,
    TensorRTError,
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
    trt_tag,
)

if TYPE_CHECKING:
    import tensorrt as trt

    from heatdeploy.devices.profiles import DeviceProfile

# a network layer as the float-scope rule reads it: (name, kind, input tensors, output tensors)
LayerRow = tuple[str, str, tuple[str, ...], tuple[str, ...]]
PinRule = Callable[[list[LayerRow], list[str]], dict[str, str]]


# --- where TensorRT can run -------------------------------------------------------------------------------
def tensorrt_status() -> tuple[bool, str]:
    """(True, TensorRT version + GPU) when an engine can be built here, else (False, why not)."""
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
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    return cache_dir("tensorrt") / f"timing-{trt_tag(trt_version)}-{slug}.cache"


def build_engine(bundle_dir: str | Path, precision: str | None = None, *, profile: DeviceProfile | None = None,
                 force: bool = False, register: bool = True, timing_cache: str | Path | None = None,
                 log: Callable[[str], None] | None = None, prepare: Callable[..., Any] | None = None,
                 pin_rule: PinRule | None = None) -> BuildResult:
    """Build (or reuse) the engine for ``precision`` on this machine; needs TensorRT and a GPU.

    Uses the prepared ``tensorrt/build_config.json``. When the bundle was not prepared for ``precision`` (or
    for another profile), ``prepare(bundle, precision, profile)`` prepares it first: the exporter passes its
    own (it needs ``onnx``); without one that is an error saying where to prepare. ``pin_rule(layers,
    outputs)`` picks the layers kept FP32 from the network's (name, kind, inputs, outputs) rows; without one
    the layers named in the prepared plan (the same rule, run on the ONNX) are pinned. A cached engine is
    reused only when its record matches the cache key, this device and its sha256; otherwise it is rebuilt.
    ``register`` adds the engine to the bundle manifest as ``tensorrt-<precision>`` so ``heatdeploy
    run/parity`` can pick it.
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
        if profile is None or prepare is None:
            raise TensorRTError(f"{root}: not prepared for a {precision} TensorRT build"
                                + (f" for {profile.name}" if profile is not None else "")
                                + "; run heatdeploy export --format tensorrt --device PROFILE on a machine with onnx"
                                + (", or pass --device here" if profile is None else ""))
        try:
            prepare(root, precision, profile)
        except ImportError as exc:  # no onnx on the device
            raise TensorRTError(f"{root}: prepared for another profile (or not at all) and preparing here needs "
                                f"{exc.name}; prepare with --device {profile.name} on the export machine") from None
        builds = load_build_config(root)["builds"]
    entry = builds[precision]
    cfg = BuildConfig.from_dict(entry["config"], str(root / BUILD_CONFIG))
    sources = _checked_sources(root, entry)

    import_tensorrt()
    import tensorrt as trt

    cuda = cuda_api()
    trt_version, gpu_name, cc = trt.__version__, cuda.device_name(), cuda.compute_capability()
    identity = device_identity(cuda)
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
                           precision=cfg.precision, options=options, device=identity)
    if not force:
        cached, why_not = find_cached_engine(root, key, cfg.precision, trt_version=trt_version, gpu_name=gpu_name,
                                             device=identity)
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
        pinned = _pin_fp32(network, pin_rule, entry.get("fp32_layers") or {})
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
                           build_seconds=seconds, profile=cfg.profile, device=identity)
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
    """TensorRT's layer type as the float-scope rule's kind (Sigmoid is an ACTIVATION of type SIGMOID)."""
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


def _pin_fp32(network: trt.INetworkDefinition, rule: PinRule | None,
              prepared: Mapping[str, str]) -> dict[str, str]:
    """Set FP32 precision and output types on the layers to keep FP32; returns them with reasons.

    ``rule`` picks them from the network's layers; without it, the layers the prepared plan names.
    """
    import tensorrt as trt

    rows: list[LayerRow] = []
    by_name = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins = tuple(t.name for j in range(layer.num_inputs) if (t := layer.get_input(j)) is not None)
        outs = tuple(layer.get_output(j).name for j in range(layer.num_outputs))
        rows.append((layer.name, _layer_kind(layer), ins, outs))
        by_name[layer.name] = layer
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    if rule is not None:
        pins = rule(rows, outputs)
    else:
        pins = {n: f"{why} (prepared plan)" for n, why in prepared.items() if n in by_name}
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


__all__ = ["BuildResult", "LayerRow", "PinRule", "build_engine", "default_timing_cache", "tensorrt_status"]
