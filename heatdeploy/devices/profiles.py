"""Device profiles: one TOML file per target that picks backend, precision, builder and session options.

A profile is data, not code, so a user can copy one, change a value (say ``dla_core = 0``) and pass the
file's path wherever a profile name is accepted. Every key is checked against :data:`SCHEMA` when the file
is loaded: a typo or a wrong type stops with one line naming the file and the key, instead of quietly
building an engine with a default. The packaged profiles live in ``heatdeploy/devices/profiles/``.

Only the standard library is imported here: ``heatdeploy devices`` must work on a bare Jetson.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from heatdeploy.errors import HeatdeployError
from heatdeploy.fsutil import read_toml

PROFILE_DIR = Path(__file__).parent / "profiles"
SCHEMA_VERSION = 1
BACKENDS = ("onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
KINDS = ("jetson", "x86", "arm64")
INT8_MODES = ("auto", "explicit", "implicit")
ACTIVATION_TYPES = ("auto", "uint8", "int8")
GRAPH_OPTIMIZATION = ("all", "extended", "basic", "disable")
OV_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
DEFAULT_OPSET = 17  # the exporter's default: read by every target (TensorRT 8.5 included)
MIN_OPSET = 11


class DeviceProfileError(HeatdeployError, ValueError):
    """A profile that cannot be used; the one-line message names the file, the key and the fix."""


# --- schema -----------------------------------------------------------------------------------------
Check = Callable[[Any], str | None]  # returns what was expected when the value is wrong, else None


def _str(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty string"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _int(lo: int | None = None, hi: int | None = None) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool)
        ok = ok and (lo is None or v >= lo) and (hi is None or v <= hi)
        if ok:
            return None
        if lo is not None and hi is not None:
            return f"an integer in {lo}..{hi}"
        return f"an integer >= {lo}" if lo is not None else "an integer"
    return check


def _choice(*allowed: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in allowed else f"one of {', '.join(allowed)}"
    return check


def _str_list(v: Any) -> str | None:
    ok = isinstance(v, list) and all(isinstance(s, str) and s for s in v)
    return None if ok else "a list of strings"


_TOP: dict[str, Check] = {
    "schema_version": _int(SCHEMA_VERSION, SCHEMA_VERSION), "name": _str, "description": _str,
    "kind": _choice(*KINDS), "backend": _choice(*BACKENDS), "precision": _choice(*PRECISIONS),
    "threads": _int(0, 256), "max_opset": _int(MIN_OPSET, 30), "runtime_support": _str,
}
SCHEMA: dict[str, dict[str, Check]] = {
    "": _TOP,
    "match": {"arch": _str_list, "all_cpu_flags": _str_list, "any_cpu_flags": _str_list,
              "jetson_models": _str_list, "priority": _int(0, 1000)},
    "quantize": {"activation_type": _choice(*ACTIVATION_TYPES)},
    "tensorrt": {"version": _str, "int8_mode": _choice(*INT8_MODES), "workspace_mb": _int(16, 1 << 20),
                 "dla_core": _int(-1, 7), "gpu_fallback": _bool, "min_batch": _int(1, 4096),
                 "opt_batch": _int(1, 4096), "max_batch": _int(1, 4096), "timing_cache": _bool,
                 "builder_optimization_level": _int(0, 5), "fp32_heads": _bool, "tf32": _bool},
    "onnxruntime": {"providers": _str_list, "intra_op_threads": _int(0, 256), "inter_op_threads": _int(0, 256),
                    "graph_optimization": _choice(*GRAPH_OPTIMIZATION)},
    "openvino": {"device": _str, "performance_hint": _choice(*OV_HINTS), "num_streams": _int(0, 256),
                 "inference_precision": _choice("f32", "f16", "bf16")},
}
REQUIRED = ("schema_version", "name", "kind", "backend", "precision", "max_opset")


# --- the profile --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MatchRule:
    """When :func:`heatdeploy.devices.probe.recommend` picks this profile: every given condition must hold."""

    arch: tuple[str, ...] = ()
    all_cpu_flags: tuple[str, ...] = ()
    any_cpu_flags: tuple[str, ...] = ()
    jetson_models: tuple[str, ...] = ()  # substrings of /proc/device-tree/model, case-insensitive
    priority: int = 0  # the most specific profile wins


@dataclass(frozen=True)
class TensorRTOptions:
    """Builder options; :class:`heatdeploy.exporters.tensorrt.BuildConfig` turns them into TensorRT calls."""

    version: str = ""  # the TensorRT the target ships (calibration-cache header, trtexec hints)
    int8_mode: str = "auto"
    workspace_mb: int = 1024
    dla_core: int | None = None  # None: GPU only
    gpu_fallback: bool = True
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1
    timing_cache: bool = True
    builder_optimization_level: int | None = None  # None: TensorRT's default
    fp32_heads: bool = True
    tf32: bool = False  # an "fp32" engine computes in FP32, not TF32, so parity means what it says


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int | None = None  # None: the profile's ``threads``
    inter_op_threads: int | None = None
    graph_optimization: str = "all"


@dataclass(frozen=True)
class OpenVINOOptions:
    device: str = "CPU"
    performance_hint: str = "LATENCY"
    num_streams: int | None = None
    inference_precision: str | None = None


@dataclass(frozen=True)
class DeviceProfile:
    """A validated profile (see the module docstring)."""

    name: str
    kind: str
    backend: str
    precision: str
    max_opset: int
    description: str = ""
    threads: int = 0  # 0: the engine's default
    runtime_support: str = ""  # "" = heatdeploy's runtime runs on the device; else why not and what to do instead
    activation_type: str = "auto"  # INT8 activations for calibration/quantize.py
    match: MatchRule = field(default_factory=MatchRule)
    tensorrt: TensorRTOptions | None = None
    onnxruntime: OnnxRuntimeOptions | None = None
    openvino: OpenVINOOptions | None = None
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fail(where: str, key: str, msg: str) -> DeviceProfileError:
    return DeviceProfileError(f"{where}: {key}: {msg}")


def validate_document(doc: Mapping[str, Any], where: str) -> None:
    """Check a parsed TOML document against :data:`SCHEMA`; raise DeviceProfileError on the first problem."""
    for key in REQUIRED:
        if key not in doc:
            raise _fail(where, key, "required key missing")
    for key, value in doc.items():
        if isinstance(value, dict):
            if key not in SCHEMA or key == "":
                raise _fail(where, f"[{key}]", f"unknown section; known: {', '.join(s for s in SCHEMA if s)}")
            table = SCHEMA[key]
            for sub, v in value.items():
                _check_key(where, f"{key}.{sub}", table.get(sub), v, table)
        elif key in SCHEMA and key:
            raise _fail(where, key, f"expected a [{key}] table, got {value!r}")
        else:
            _check_key(where, key, _TOP.get(key), value, _TOP)


def _check_key(where: str, key: str, check: Check | None, value: Any, table: Mapping[str, Check]) -> None:
    if check is None:
        known = ", ".join(sorted(table))
        raise _fail(where, key, f"unknown key; known here: {known}")
    expected = check(value)
    if expected is not None:
        raise _fail(where, key, f"expected {expected}, got {value!r}")


def profile_from_document(doc: Mapping[str, Any], where: str, stem: str | None = None) -> DeviceProfile:
    """Validate ``doc`` and build the profile, with the cross-key rules a schema of single keys cannot say."""
    validate_document(doc, where)
    if stem is not None and doc["name"] != stem:
        raise _fail(where, "name", f"{doc['name']!r} must match the file name {stem!r}, so --device "
                                   f"{stem} and the profile agree")
    backend, precision = doc["backend"], doc["precision"]
    if backend not in doc and backend != "onnxruntime":
        raise _fail(where, f"[{backend}]", f"backend = {backend!r} needs a [{backend}] section with its options")
    trt = _tensorrt(doc["tensorrt"], precision, where) if "tensorrt" in doc else None
    ort_doc = doc.get("onnxruntime")
    ort = OnnxRuntimeOptions(**_tuples(ort_doc)) if ort_doc is not None else (
        OnnxRuntimeOptions() if backend == "onnxruntime" else None)
    ov = OpenVINOOptions(**doc["openvino"]) if "openvino" in doc else None
    match_doc = doc.get("match", {})
    match = MatchRule(**_tuples(match_doc))
    if doc["kind"] == "jetson" and not match.jetson_models and match_doc:
        raise _fail(where, "match.jetson_models", "a jetson profile must name the models it matches")
    return DeviceProfile(
        name=doc["name"], kind=doc["kind"], backend=backend, precision=precision, max_opset=doc["max_opset"],
        description=doc.get("description", ""), threads=doc.get("threads", 0),
        runtime_support=doc.get("runtime_support", ""),
        activation_type=doc.get("quantize", {}).get("activation_type", "auto"), match=match,
        tensorrt=trt, onnxruntime=ort, openvino=ov, path=where,
    )


def _tuples(d: Mapping[str, Any]) -> dict[str, Any]:
    """TOML arrays as tuples, so the frozen dataclasses stay hashable."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _tensorrt(d: Mapping[str, Any], precision: str, where: str) -> TensorRTOptions:
    opts = TensorRTOptions(**{k: v for k, v in d.items() if k != "dla_core"},
                           dla_core=None if d.get("dla_core", -1) < 0 else d["dla_core"])
    if not opts.min_batch <= opts.opt_batch <= opts.max_batch:
        raise _fail(where, "tensorrt.opt_batch", f"batches must satisfy min <= opt <= max, got "
                                                 f"{opts.min_batch} <= {opts.opt_batch} <= {opts.max_batch}")
    if opts.dla_core is not None and precision == "fp32":
        raise _fail(where, "tensorrt.dla_core", "DLA runs FP16 or INT8 only; set precision to fp16/int8 or "
                                                "dla_core = -1")
    if opts.version and not re.fullmatch(r"\d+(\.\d+){0,3}", opts.version):
        raise _fail(where, "tensorrt.version", f"expected a version like '10.3' or '8.5.2', got {opts.version!r}")
    return opts


# --- loading -------------------------------------------------------------------------------------------
def list_profiles() -> list[str]:
    """Names of the packaged profiles, sorted."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A packaged profile by name (``jetson-orin-nano``) or a TOML file by path; validated."""
    text = str(name_or_path)
    path = PROFILE_DIR / f"{text}.toml" if text in list_profiles() else Path(text).expanduser()
    if not path.is_file():
        raise DeviceProfileError(f"{text}: no such device profile; packaged profiles: {', '.join(list_profiles())}"
                                 " (or pass a path to a .toml file)")
    doc = read_toml(path, "device profile", DeviceProfileError)
    stem = path.stem if path.parent.resolve() == PROFILE_DIR.resolve() else None
    return profile_from_document(doc, str(path), stem)


def load_all() -> list[DeviceProfile]:
    """Every packaged profile, validated (the first bad one raises)."""
    return [load_profile(n) for n in list_profiles()]


def describe_profiles() -> list[dict[str, Any]]:
    """Rows for ``heatdeploy devices``: name, kind, backend, precision, threads, max opset, description."""
    return [{"name": p.name, "kind": p.kind, "backend": p.backend, "precision": p.precision,
             "threads": p.threads or "auto", "max_opset": p.max_opset,
             "description": p.description + (f" — {p.runtime_support}" if p.runtime_support else "")}
            for p in load_all()]


# --- what the profile means for each engine --------------------------------------------------------------
def session_options(profile: DeviceProfile, backend: str | None = None) -> dict[str, Any]:
    """Options for ``load_backend(backend, path, options)`` on this device (ORT or OpenVINO).

    ORT's keys are exactly those :mod:`heatdeploy.runtime.backends.onnxruntime` accepts; OpenVINO's map to
    its properties (INFERENCE_NUM_THREADS, PERFORMANCE_HINT, NUM_STREAMS, INFERENCE_PRECISION_HINT).
    TensorRT's session takes no options from the profile (its choices are baked into the engine).
    """
    name = backend or profile.backend
    if name == "onnxruntime":
        o = profile.onnxruntime or OnnxRuntimeOptions()
        opts: dict[str, Any] = {"providers": list(o.providers), "graph_optimization": o.graph_optimization}
        intra = o.intra_op_threads if o.intra_op_threads is not None else profile.threads
        if intra:
            opts["intra_op_threads"] = intra
        if o.inter_op_threads is not None:
            opts["inter_op_threads"] = o.inter_op_threads
        return opts
    if name == "openvino":
        v = profile.openvino or OpenVINOOptions()
        opts = {"device": v.device, "performance_hint": v.performance_hint}
        if profile.threads:
            opts["num_threads"] = profile.threads
        if v.num_streams is not None:
            opts["num_streams"] = v.num_streams
        if v.inference_precision is not None:
            opts["inference_precision"] = v.inference_precision
        return opts
    if name == "tensorrt":
        return {}
    raise DeviceProfileError(f"{profile.path or profile.name}: no session options for backend {name!r}; "
                             f"choose one of {', '.join(BACKENDS)}")


def resolve_opset(profile: DeviceProfile | None, requested: int | None = None) -> tuple[int, str]:
    """The ONNX opset to export for the target, and why; a request above the profile's limit is an error.

    TensorRT 8.5 (JetPack 5) cannot parse opset 18+, so exporting one for a Xavier NX would only fail later,
    on the device; failing here names the fix.
    """
    if profile is None:
        opset = requested if requested is not None else DEFAULT_OPSET
        return opset, "no device profile: the exporter's choice"
    if requested is None:
        opset = min(DEFAULT_OPSET, profile.max_opset)
        return opset, f"default {DEFAULT_OPSET}, capped by {profile.name}'s max_opset {profile.max_opset}"
    if requested > profile.max_opset:
        raise DeviceProfileError(f"{profile.path or profile.name}: max_opset: {profile.name} reads ONNX opset <= "
                                 f"{profile.max_opset}, but opset {requested} was asked; export with --opset "
                                 f"{profile.max_opset} or lower")
    return requested, f"requested, within {profile.name}'s max_opset {profile.max_opset}"


__all__ = [
    "DeviceProfile", "DeviceProfileError", "MatchRule", "OnnxRuntimeOptions", "OpenVINOOptions", "SCHEMA",
    "TensorRTOptions", "describe_profiles", "list_profiles", "load_all", "load_profile", "profile_from_document",
    "resolve_opset", "session_options", "validate_document",
]
