"""OpenVINO backend: an IR compiled on exactly the device and precision asked for, or a loud BackendError.

Two OpenVINO defaults would quietly change what a heatdeploy artifact means, so both are overridden:

- On CPUs with bf16 (AVX512-BF16, AMX) the CPU plugin runs an FP32 IR in **bf16** unless told otherwise
  (``INFERENCE_PRECISION_HINT``). heatdeploy's FP32 means f32, so the precision is always set explicitly:
  from the ``inference_precision`` option, else from the IR's ``rt_info`` (``heatdeploy/inference_precision``,
  written by the exporter: f32 for fp32 and int8 artifacts, bf16 for bf16, "f16,f32" for fp16), else f32.
- Asking for a precision the device lacks is *also* silent: on a CPU without FP16 arithmetic the f16 hint
  comes back as bf16. The compiled model's hint is read back and must equal the request.

A device that is not present (``GPU`` on a CPU-only box) raises with the list of devices that are; the
virtual devices (AUTO, MULTI, HETERO, BATCH) are refused because they choose a device on their own.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from heatdeploy.errortext import cause_line
from heatdeploy.runtime.backends.base import BackendError, check_feed_names
from heatdeploy.spec import METADATA_KEY, ModelSpec

RT_SECTION = "heatdeploy"  # rt_info section written by heatdeploy.exporters.openvino
RT_SPEC = (RT_SECTION, "spec")
RT_PRECISION = (RT_SECTION, "precision")  # the artifact's precision: fp32 | fp16 | bf16 | int8
RT_INFERENCE = (RT_SECTION, "inference_precision")  # preference list, e.g. "f32" or "f16,f32"
RT_FRAMEWORK_SPEC = ("framework", METADATA_KEY)  # ONNX metadata_props carried over by convert_model

# heatdeploy name -> (OpenVINO element type, the OPTIMIZATION_CAPABILITIES entry that says the device has it)
INFERENCE_PRECISIONS: dict[str, tuple[ov.Type, str]] = {
    "f32": (ov.Type.f32, "FP32"),
    "bf16": (ov.Type.bf16, "BF16"),
    "f16": (ov.Type.f16, "FP16"),
}
_ALIASES = {"fp32": "f32", "float32": "f32", "bf16": "bf16", "bfloat16": "bf16", "fp16": "f16", "float16": "f16"}
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
_KNOWN_OPTIONS = (
    "device",
    "performance_hint",
    "num_streams",
    "num_threads",
    "inference_precision",
    "num_requests",
    "config",
)
_DTYPES = {
    ov.Type.f32: np.float32,
    ov.Type.f16: np.float16,
    ov.Type.f64: np.float64,
    ov.Type.i8: np.int8,
    ov.Type.u8: np.uint8,
    ov.Type.i32: np.int32,
    ov.Type.i64: np.int64,
    ov.Type.boolean: np.bool_,
}

Shape = list[int | None]
log = logging.getLogger(__name__)

_core: ov.Core | None = None
_core_lock = threading.Lock()


def core() -> ov.Core:
    """One Core per process: creating it loads the plugins, which is slow and holds their threads."""
    global _core
    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


class OpenVinoBackend:
    """One compiled IR; ``infer`` takes and returns arrays by tensor name, ``infer_many`` runs them async."""

    def __init__(self, path: str, model: ov.Model, compiled: ov.CompiledModel, device: str,
                 inference_precision: str | None, precision_source: str, num_requests: int | None) -> None:
        self.path = path
        self.model = model
        self.compiled = compiled
        self.device = device
        self.inference_precision = inference_precision
        self.precision_source = precision_source
        self._num_requests = num_requests
        self._inputs = list(compiled.inputs)
        self._outputs = list(compiled.outputs)
        self.input_names: list[str] = [_port_name(p) for p in self._inputs]
        self.output_names: list[str] = [_port_name(p) for p in self._outputs]
        self.input_shapes: dict[str, Shape] = {n: _shape(p) for n, p in zip(self.input_names, self._inputs,
                                                                           strict=True)}
        self.output_shapes: dict[str, Shape] = {n: _shape(p) for n, p in zip(self.output_names, self._outputs,
                                                                            strict=True)}
        self.input_types: dict[str, np.dtype[Any]] = {
            n: np.dtype(_DTYPES.get(p.get_element_type(), np.float32))
            for n, p in zip(self.input_names, self._inputs, strict=True)}
        self._request = compiled.create_infer_request()
        self.adjusted: dict[str, tuple[str, str]] = {}  # performance settings OpenVINO changed: (asked, got)

    # --- inference -------------------------------------------------------------------------------
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once, synchronously; inputs are cast to the IR's element type."""
        prepared = self._prepare(feeds)
        try:
            # The call is synchronous, so the engine may read the caller's arrays in place (no input copy);
            # the outputs are copied out of the request's tensors, which the next call overwrites.
            results = self._request.infer(prepared, share_inputs=True)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line messages
            given = {k: list(v.shape) for k, v in prepared.items()}
            raise BackendError(f"{self.path}: OpenVINO failed to run on {self.device} ({cause_line(exc)}); "
                               f"inputs expect {self.input_shapes}, got {given}") from None
        return {name: results[port] for name, port in zip(self.output_names, self._outputs, strict=True)}

    def infer_many(self, feeds: Sequence[dict[str, np.ndarray]],
                   jobs: int | None = None) -> list[dict[str, np.ndarray]]:
        """Run many feeds with an ``AsyncInferQueue`` (results in input order): throughput, not latency.

        ``jobs`` parallel requests; default the ``num_requests`` option, else the compiled model's
        ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` (which follows the performance hint and streams).
        """
        prepared = [self._prepare(f) for f in feeds]
        n_jobs = jobs or self._num_requests or int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        results: list[dict[str, np.ndarray] | None] = [None] * len(prepared)
        errors: list[str] = []
        names, ports = self.output_names, self._outputs

        def done(request: ov.InferRequest, index: int) -> None:
            try:
                results[index] = {n: request.get_tensor(p).data.copy() for n, p in zip(names, ports, strict=True)}
            except Exception as exc:  # a callback must not raise into OpenVINO's thread
                errors.append(f"item {index}: {cause_line(exc)}")

        queue = ov.AsyncInferQueue(self.compiled, max(1, n_jobs))
        queue.set_callback(done)
        try:
            for i, item in enumerate(prepared):
                queue.start_async(item, i)
            queue.wait_all()
        except Exception as exc:
            raise BackendError(f"{self.path}: OpenVINO async inference failed on {self.device} "
                               f"({cause_line(exc)})") from None
        missing = [i for i, r in enumerate(results) if r is None]
        if errors or missing:
            raise BackendError(f"{self.path}: OpenVINO async inference lost results "
                               f"({'; '.join(errors[:3]) or f'{len(missing)} items without output'})")
        return results  # type: ignore[return-value]

    def _prepare(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feed_names(self.path, feeds, self.input_names)
        return {n: np.ascontiguousarray(np.asarray(feeds[n]).astype(self.input_types[n], copy=False))
                for n in self.input_names}

    # --- introspection ---------------------------------------------------------------------------
    def spec(self) -> ModelSpec | None:
        """The ModelSpec carried in the IR's rt_info, or None when it carries none."""
        return spec_from_model(self.model, self.path)

    def properties(self) -> dict[str, str]:
        """The compiled model's settings that decide speed and numerics, as OpenVINO reports them."""
        keys = ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
                "OPTIMAL_NUMBER_OF_INFER_REQUESTS", "EXECUTION_DEVICES")
        supported = set(self.compiled.get_property("SUPPORTED_PROPERTIES"))
        return {k: _prop_text(self.compiled.get_property(k)) for k in keys if k in supported}

    def describe(self) -> dict[str, Any]:
        """What actually runs: device, precision (and where it came from), hints, tensors."""
        return {
            "backend": "openvino",
            "version": ov.get_version(),
            "path": self.path,
            "device": self.device,
            "inference_precision": self.inference_precision,
            "inference_precision_from": self.precision_source,
            "properties": self.properties(),
            "adjusted_by_openvino": {k: {"asked": a, "got": g} for k, (a, g) in self.adjusted.items()},
            "inputs": [{"name": n, "shape": self.input_shapes[n], "dtype": self.input_types[n].name}
                       for n in self.input_names],
            "outputs": [{"name": n, "shape": self.output_shapes[n]} for n in self.output_names],
        }


def load(path: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> OpenVinoBackend:
    """Read the IR (or ONNX), compile it on the requested device with an explicit precision; verify what engaged."""
    opts = dict(options or {})
    _reject_unknown(opts)
    xml = Path(path)
    model = read_model(xml)
    c = core()
    device = _device(opts.get("device", "CPU"), c)
    precision, source = _inference_precision(opts.get("inference_precision"), model, device, c)
    config = _config(opts, device, precision, c)
    try:
        compiled = c.compile_model(model, device, config)
    except Exception as exc:
        raise BackendError(f"{xml}: OpenVINO could not compile the model for {device} with {config} "
                           f"({cause_line(exc)}); check the options against the device's properties") from None
    if precision is not None:
        got = _precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        if got != precision:  # e.g. f16 asked on a CPU without FP16 arithmetic comes back as bf16
            raise BackendError(f"{xml}: asked {device} for inference precision {precision} but the compiled model "
                               f"runs {got}; the device cannot run {precision} — choose another precision or device")
    backend = OpenVinoBackend(str(xml), model, compiled, device, precision, source, opts.get("num_requests"))
    backend.adjusted = _adjusted(config, compiled)
    for key, (asked, got) in backend.adjusted.items():
        log.warning("%s: asked %s for %s=%s, OpenVINO compiled %s (it caps streams/threads to the cores it "
                    "may use)", xml, device, key, asked, got)
    return backend


def _adjusted(config: Mapping[str, Any], compiled: ov.CompiledModel) -> dict[str, tuple[str, str]]:
    """Performance settings OpenVINO changed (it caps streams to threads); not numerics, so logged, not raised."""
    out = {}
    for key in ("NUM_STREAMS", "INFERENCE_NUM_THREADS"):
        asked = config.get(key)
        if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
            got = _prop_text(compiled.get_property(key))
            if got != str(asked):
                out[key] = (str(asked), got)
    return out


def read_model(path: str | os.PathLike[str]) -> ov.Model:
    """``Core.read_model`` of an IR (.xml + .bin) or an ONNX file, with one-line BackendErrors.

    OpenVINO reads ONNX itself and carries its ``metadata_props`` into rt_info, so a bare .onnx runs here
    with its embedded spec and no onnxruntime.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".xml", ".onnx"):
        raise BackendError(f"{path}: the OpenVINO backend reads IR (.xml + .bin) or ONNX; pass the .xml or .onnx file")
    if not path.is_file():
        raise BackendError(f"{path}: not found; re-export the artifact")
    args = [str(path)]
    if suffix == ".xml":
        weights = path.with_suffix(".bin")
        if not weights.is_file():
            raise BackendError(f"{path}: its weights {weights.name} are missing next to it; re-export the artifact")
        args.append(str(weights))
    try:
        return core().read_model(*args)
    except Exception as exc:
        raise BackendError(f"{path}: not a readable {'OpenVINO IR' if suffix == '.xml' else 'ONNX model'} "
                           f"({cause_line(exc)}); re-export it") from None


def spec_from_model(model: ov.Model, where: str = "IR") -> ModelSpec | None:
    """The spec from rt_info ``heatdeploy/spec``, else from the ONNX metadata OpenVINO carried over."""
    for key in (RT_SPEC, RT_FRAMEWORK_SPEC):
        text = rt_text(model, key)
        if text is not None:
            return ModelSpec.from_json(text, f"{where}: rt_info {'/'.join(key)}")
    return None


def read_spec(path: str | os.PathLike[str]) -> ModelSpec | None:
    """The spec embedded in a bare .xml or .onnx (None if it carries none)."""
    return spec_from_model(read_model(path), str(path))


def rt_text(model: ov.Model, key: Sequence[str]) -> str | None:
    """One rt_info value as text, or None when absent."""
    path = list(key)
    if not model.has_rt_info(path):
        return None
    return str(model.get_rt_info(path).astype(str))


def available_devices() -> list[str]:
    return list(core().available_devices)


# --- options -------------------------------------------------------------------------------------


def _reject_unknown(opts: Mapping[str, Any]) -> None:
    unknown = sorted(set(opts) - set(_KNOWN_OPTIONS))
    if unknown:
        raise BackendError(f"openvino: unknown option(s) {', '.join(unknown)}; known: {', '.join(_KNOWN_OPTIONS)}")


def _device(value: Any, c: ov.Core) -> str:
    if not isinstance(value, str) or not value:
        raise BackendError(f"openvino: device must be a device name such as CPU, GPU or NPU, got {value!r}")
    name = value.upper()
    available = list(c.available_devices)
    if name.split(":")[0].split(".")[0] in VIRTUAL_DEVICES:
        raise BackendError(f"openvino: device {value!r} picks a device by itself; name one of the available "
                           f"devices ({', '.join(available)})")
    # 'GPU' is present when any 'GPU.N' is; 'GPU.1' must be present itself.
    if name not in available and not any(d.split(".")[0] == name for d in available):
        raise BackendError(f"openvino {ov.get_version().split('-')[0]}: device {value!r} is not available on this "
                           f"machine (available: {', '.join(available) or 'none'}); choose one of those, or "
                           "install the device's driver")
    return name


def normalize_precision(value: str) -> str:
    """'fp32'/'float32' -> 'f32' etc.; a BackendError for anything else."""
    text = str(value).strip().lower()
    text = _ALIASES.get(text, text)
    if text not in INFERENCE_PRECISIONS:
        raise BackendError(f"openvino: inference_precision must be one of {', '.join(INFERENCE_PRECISIONS)}, "
                           f"got {value!r}")
    return text


def _capabilities(c: ov.Core, device: str) -> list[str] | None:
    try:
        return [str(x) for x in c.get_property(device, "OPTIMIZATION_CAPABILITIES")]
    except Exception:  # a plugin that does not report capabilities
        return None


def _supports_hint(c: ov.Core, device: str) -> bool:
    try:
        return "INFERENCE_PRECISION_HINT" in set(c.get_property(device, "SUPPORTED_PROPERTIES"))
    except Exception:
        return False


def _inference_precision(value: Any, model: ov.Model, device: str, c: ov.Core) -> tuple[str | None, str]:
    """The precision to compile with and where the choice came from; never the device's silent default."""
    caps = _capabilities(c, device)
    if value is not None:
        choice, source = normalize_precision(value), "option inference_precision"
        wanted = [choice]
    else:
        stored = rt_text(model, RT_INFERENCE)
        if stored:
            wanted = [normalize_precision(p) for p in stored.split(",") if p.strip()]
            source = f"IR rt_info {'/'.join(RT_INFERENCE)}={stored}"
        else:
            wanted, source = ["f32"], "default f32 (the IR names no inference precision)"
        # A preference list ("f16,f32" for FP16-weight IRs) takes the first the device can run.
        choice = next((p for p in wanted if caps is None or INFERENCE_PRECISIONS[p][1] in caps), wanted[-1])
    if not _supports_hint(c, device):
        if value is not None:
            raise BackendError(f"openvino: device {device} does not accept INFERENCE_PRECISION_HINT, so "
                               f"inference_precision={value!r} cannot be guaranteed; leave it out for this device")
        return None, f"device default ({device} has no INFERENCE_PRECISION_HINT)"
    if caps is not None and INFERENCE_PRECISIONS[choice][1] not in caps:
        raise BackendError(f"openvino: device {device} cannot run {choice} (its OPTIMIZATION_CAPABILITIES: "
                           f"{', '.join(caps)}; asked by {source}); choose a precision it lists")
    return choice, source


def _positive_int(key: str, value: Any, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise BackendError(f"openvino: {key} must be an integer >= {low}, got {value!r}")
    return value


def _config(opts: Mapping[str, Any], device: str, precision: str | None, c: ov.Core) -> dict[str, Any]:
    hint = str(opts.get("performance_hint", "LATENCY")).upper()
    if hint not in PERFORMANCE_HINTS:
        raise BackendError(f"openvino: performance_hint must be one of {', '.join(PERFORMANCE_HINTS)}, "
                           f"got {opts.get('performance_hint')!r}")
    config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    if opts.get("num_streams") is not None:
        streams = opts["num_streams"]
        if isinstance(streams, str) and streams.upper() in ("AUTO", "NUMA"):
            config["NUM_STREAMS"] = streams.upper()
        else:
            config["NUM_STREAMS"] = _positive_int("num_streams", streams)
    if opts.get("num_threads") is not None:
        config["INFERENCE_NUM_THREADS"] = _positive_int("num_threads", opts["num_threads"], allow_zero=True)
    if opts.get("num_requests") is not None:
        _positive_int("num_requests", opts["num_requests"])
    extra = opts.get("config") or {}
    if not isinstance(extra, Mapping):
        raise BackendError(f"openvino: config must map OpenVINO property names to values, got {extra!r}")
    clash = sorted(set(extra) & set(config))
    if clash:
        raise BackendError(f"openvino: config sets {', '.join(clash)}, which the named options already set; "
                           "use the named option")
    config.update(extra)
    try:
        supported = set(c.get_property(device, "SUPPORTED_PROPERTIES"))
    except Exception:
        supported = set()
    unsupported = [k for k in config if supported and k not in supported]
    if unsupported:
        raise BackendError(f"openvino: device {device} does not support {', '.join(unsupported)}; drop those "
                           "options for this device")
    return config


# --- helpers -------------------------------------------------------------------------------------


def _port_name(port: Any) -> str:
    names = port.get_names()
    return port.get_any_name() if names else port.get_node().get_friendly_name()


def _shape(port: Any) -> Shape:
    return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]


def _precision_name(value: Any) -> str:
    for name, (t, _) in INFERENCE_PRECISIONS.items():
        if value == t or str(value) in (str(t), t.get_type_name(), name):
            return name
    return str(value)


def _prop_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, ov.Type):
        return _precision_name(value)
    return str(value)


