"""ONNX Runtime backend: a session on exactly the providers asked for, or a loud BackendError.

ORT quietly falls back to the CPU when a provider is missing or fails to initialise; for a deploy
tool that silently turns a GPU benchmark or an FP16 parity check into a CPU one, so both the
provider's availability and its engagement in the created session are checked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from heatdeploy.errortext import first_line
from heatdeploy.runtime.backends.base import BackendError, check_feed_names
from heatdeploy.spec import METADATA_KEY, ModelSpec

_OPTIMIZATION = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
_KNOWN_OPTIONS = (
    "providers",
    "provider_options",
    "intra_op_threads",
    "inter_op_threads",
    "graph_optimization",
)
# Errors that mean the file itself is at fault rather than a provider or an option.
_MODEL_ERRORS = ("InvalidProtobuf", "InvalidGraph", "NoSuchFile", "NoModel", "ModelLoaded")
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32,
    "tensor(uint32)": np.uint32,
    "tensor(int64)": np.int64,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}

Shape = list[int | str | None]


class OnnxRuntimeBackend:
    """One ORT session; ``infer`` takes and returns arrays by tensor name."""

    def __init__(self, path: str, session: ort.InferenceSession) -> None:
        self.path = path
        self.session = session
        inputs, outputs = session.get_inputs(), session.get_outputs()
        self.input_names: list[str] = [i.name for i in inputs]
        self.output_names: list[str] = [o.name for o in outputs]
        self.input_shapes: dict[str, Shape] = {i.name: list(i.shape) for i in inputs}
        self.output_shapes: dict[str, Shape] = {o.name: list(o.shape) for o in outputs}
        self.input_types: dict[str, str] = {i.name: i.type for i in inputs}
        self.output_types: dict[str, str] = {o.name: o.type for o in outputs}
        self.providers: list[str] = list(session.get_providers())

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; inputs are cast to the model's declared element type (e.g. float16 IO)."""
        prepared = self._prepare(feeds)
        try:
            results = self.session.run(self.output_names, prepared)
        except Exception as exc:  # ORT raises pybind11 types that share no useful base
            given = {k: list(v.shape) for k, v in prepared.items()}
            raise BackendError(
                f"{self.path}: onnxruntime failed to run ({first_line(exc)}); inputs expect "
                f"{self.input_shapes}, got {given}"
            ) from None
        return dict(zip(self.output_names, results, strict=True))

    def _prepare(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feed_names(self.path, feeds, self.input_names)
        out = {}
        for name in self.input_names:
            dtype = _DTYPES.get(self.input_types[name])
            arr = np.asarray(feeds[name])
            out[name] = np.ascontiguousarray(arr if dtype is None else arr.astype(dtype, copy=False))
        return out

    def metadata(self) -> dict[str, str]:
        """The ONNX custom metadata map (``metadata_props``), e.g. the embedded ``heatdeploy.spec``."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def spec(self) -> ModelSpec | None:
        """The ModelSpec embedded in the model's ``metadata_props`` (None when it carries none)."""
        return _spec_from_metadata(self.metadata(), self.path)

    def describe(self) -> dict[str, Any]:
        """What actually runs: engaged providers and the tensors' names, shapes and dtypes."""
        return {
            "backend": "onnxruntime",
            "version": ort.__version__,
            "path": self.path,
            "providers": list(self.providers),
            "inputs": [_tensor_info(n, self.input_shapes[n], self.input_types[n]) for n in self.input_names],
            "outputs": [
                _tensor_info(n, self.output_shapes[n], self.output_types[n]) for n in self.output_names
            ],
        }


def load(path: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> OnnxRuntimeBackend:
    """Create a session on the requested providers; raise BackendError if any is not engaged."""
    opts = dict(options or {})
    _reject_unknown(opts)
    providers = _providers(opts.get("providers"))
    provider_options = _provider_options(providers, opts.get("provider_options"))
    _require_available(providers)
    session = _create_session(str(path), _session_options(opts), providers, provider_options)
    _require_engaged(str(path), providers, session.get_providers())
    return OnnxRuntimeBackend(str(path), session)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ONNX custom metadata map of a model file, read through ORT so ``onnx`` is not needed."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # cheapest session
    session = _create_session(str(path), so, ["CPUExecutionProvider"], [{}])
    return dict(session.get_modelmeta().custom_metadata_map)


def read_spec(path: str | os.PathLike[str]) -> ModelSpec | None:
    """The spec embedded in a bare .onnx (None if it carries none), without the ``onnx`` package."""
    return _spec_from_metadata(read_metadata(path), str(path))


def _spec_from_metadata(meta: Mapping[str, str], where: str) -> ModelSpec | None:
    text = meta.get(METADATA_KEY)
    return None if text is None else ModelSpec.from_json(text, f"{where}: metadata {METADATA_KEY}")


# --- options -------------------------------------------------------------------------------------


def _reject_unknown(opts: Mapping[str, Any]) -> None:
    """A misspelt key (say ``provider``) would otherwise quietly run on the CPU."""
    unknown = sorted(set(opts) - set(_KNOWN_OPTIONS))
    if unknown:
        raise BackendError(
            f"onnxruntime: unknown option(s) {', '.join(unknown)}; known: {', '.join(_KNOWN_OPTIONS)}"
        )


def _providers(value: Any) -> list[str]:
    if value is None:
        return ["CPUExecutionProvider"]
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, Sequence) or not names or not all(isinstance(p, str) for p in names):
        raise BackendError(
            f"onnxruntime: providers must be a non-empty list of provider names, got {value!r}"
        )
    return list(names)


def _provider_options(providers: list[str], value: Any) -> list[dict[str, Any]]:
    """Accept a mapping ``{provider: {...}}`` (readable in profiles) or a list aligned with providers."""
    if value is None:
        return [{} for _ in providers]
    if isinstance(value, Mapping):
        stray = sorted(set(value) - set(providers))
        if stray:
            raise BackendError(
                f"onnxruntime: provider_options names {', '.join(stray)}, not in providers {providers}"
            )
        return [dict(value.get(p) or {}) for p in providers]
    if isinstance(value, Sequence) and len(value) == len(providers):
        return [dict(v or {}) for v in value]
    raise BackendError(
        "onnxruntime: provider_options must map provider name -> options, or be a list with one "
        f"entry per provider ({len(providers)})"
    )


def _session_options(opts: Mapping[str, Any]) -> ort.SessionOptions:
    so = ort.SessionOptions()
    level = opts.get("graph_optimization", "all")
    if level not in _OPTIMIZATION:
        raise BackendError(
            f"onnxruntime: graph_optimization must be one of {', '.join(_OPTIMIZATION)}, got {level!r}"
        )
    so.graph_optimization_level = _OPTIMIZATION[level]
    for key, attr in (
        ("intra_op_threads", "intra_op_num_threads"),
        ("inter_op_threads", "inter_op_num_threads"),
    ):
        n = opts.get(key)
        if n is None:
            continue
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise BackendError(
                f"onnxruntime: {key} must be a non-negative integer (0 = ORT default), got {n!r}"
            )
        setattr(so, attr, n)
    return so


# heatdeploy's INT8 files keep their FP32 layers FP32 under ORT's default optimizers (calibration/session.py
# pins them in the graph), so sessions use the defaults a plain InferenceSession uses. Files written before
# that name the optimizers to disable in this metadata key; the session is then remade without them.
LEGACY_OPTIMIZERS_KEY = "heatdeploy.ort.disabled_optimizers"


# --- session -------------------------------------------------------------------------------------


def _require_available(providers: list[str]) -> None:
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise BackendError(
            f"onnxruntime {ort.__version__}: provider(s) {', '.join(missing)} not available in this build "
            f"(available: {', '.join(available)}); install the matching onnxruntime package "
            "(e.g. onnxruntime-gpu) or choose an available provider"
        )


def _create_session(
    path: str, so: ort.SessionOptions, providers: list[str], provider_options: list[dict[str, Any]]
) -> ort.InferenceSession:
    if not Path(path).is_file():
        raise BackendError(f"{path}: not a loadable ONNX model (file not found); re-export it")
    try:
        session = ort.InferenceSession(path, sess_options=so, providers=providers,
                                       provider_options=provider_options)
        legacy = session.get_modelmeta().custom_metadata_map.get(LEGACY_OPTIMIZERS_KEY, "")
        if legacy:
            session = ort.InferenceSession(
                path, sess_options=so, providers=providers, provider_options=provider_options,
                disabled_optimizers=[n for n in legacy.split(",") if n],
            )
        return session
    except Exception as exc:  # ORT's pybind11 exceptions share no base narrower than Exception
        if type(exc).__name__ in _MODEL_ERRORS:
            raise BackendError(
                f"{path}: not a loadable ONNX model ({first_line(exc)}); re-export it"
            ) from None
        raise BackendError(
            f"{path}: onnxruntime could not create a session on {providers} ({first_line(exc)}); "
            "check the model's opset/operators and the providers' libraries"
        ) from None


def _require_engaged(path: str, requested: list[str], engaged: list[str]) -> None:
    """ORT logs and drops a provider that fails to initialise (missing CUDA/cuDNN/TensorRT libs)."""
    dropped = [p for p in requested if p not in engaged]
    if dropped:
        raise BackendError(
            f"{path}: onnxruntime did not engage {', '.join(dropped)} "
            f"(session runs on {', '.join(engaged)}); "
            "check that the provider's libraries (CUDA, cuDNN, TensorRT) load on this machine"
        )


def _tensor_info(name: str, shape: Shape, ort_type: str) -> dict[str, Any]:
    dtype = _DTYPES.get(ort_type)
    return {"name": name, "shape": list(shape), "dtype": np.dtype(dtype).name if dtype else ort_type}


