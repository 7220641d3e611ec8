"""The backend contract: every engine is loaded by path, exposes named inputs and outputs, and reports the
spec its file embeds (ONNX ``metadata_props``, OpenVINO ``rt_info``) so a bare file runs like a bundle."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from heatdeploy.errors import HeatdeployError

if TYPE_CHECKING:
    from heatdeploy.spec import ModelSpec


class BackendError(HeatdeployError, RuntimeError):
    """An engine could not load or engage what was asked (never a silent fallback)."""


class Backend(Protocol):
    input_names: list[str]
    output_names: list[str]
    input_shapes: dict[str, list[Any]]  # per input; an int is a fixed dim, anything else (None, a name) dynamic

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def spec(self) -> ModelSpec | None: ...


# name -> (module inside heatdeploy.runtime.backends defining load(path, options), the engine's import name,
# the heatdeploy extra that installs it)
_MODULES = {
    "onnxruntime": ("heatdeploy.runtime.backends.onnxruntime", "onnxruntime", "onnxruntime"),
    "openvino": ("heatdeploy.runtime.backends.openvino", "openvino", "openvino"),
    "tensorrt": ("heatdeploy.runtime.backends.tensorrt", "tensorrt", "tensorrt"),
}
# which engines read a file, by suffix, in order of preference (OpenVINO reads ONNX itself)
_READERS = {".onnx": ("onnxruntime", "openvino"), ".xml": ("openvino",), ".plan": ("tensorrt",),
            ".engine": ("tensorrt",)}


def available_backends() -> list[str]:
    """Every backend heatdeploy knows, installed or not."""
    return list(_MODULES)


def engine_installed(name: str) -> bool:
    """True when the engine's Python package is importable (found without importing it: that is slow)."""
    if name not in _MODULES:
        return False
    try:
        spec = importlib.util.find_spec(_MODULES[name][1])
    except (ImportError, ValueError):
        return False
    # an empty namespace (tensorrt-stubs alone) is not the engine
    return spec is not None and spec.origin not in (None, "namespace")


def installed_backends() -> list[str]:
    """The backends whose engine is installed here, in heatdeploy's order of preference."""
    return [n for n in _MODULES if engine_installed(n)]


def extra_hint(name: str) -> str:
    """The one-line install fix for a backend's engine."""
    return f"pip install 'heatdeploy[{_MODULES[name][2]}]'" if name in _MODULES else "choose a known backend"


def readers_of(path: str | Path) -> tuple[str, ...]:
    """The backends that can open this file, by its suffix (empty when none can)."""
    return _READERS.get(Path(path).suffix.lower(), ())


def backend_for_file(path: str | Path, requested: str | None = None) -> str:
    """The backend to open a bare model file with: the one asked for, else the first installed reader."""
    readers = readers_of(path)
    if requested is not None:
        if requested in _MODULES and requested not in readers:
            raise BackendError(f"{path}: the {requested} backend does not read {Path(path).suffix or 'this'} files "
                               f"(it reads {', '.join(s for s, r in _READERS.items() if requested in r)}); "
                               "pass a file it reads or another backend")
        return requested
    if not readers:
        raise BackendError(f"{path}: not a model file heatdeploy runs (.onnx, .xml, .plan) nor a bundle directory; "
                           "pass a bundle or an exported model")
    for name in readers:
        if engine_installed(name):
            return name
    raise BackendError(f"{path}: no engine that reads it is installed; {extra_hint(readers[0])}"
                       + (f" (or heatdeploy[{_MODULES[readers[1]][2]}])" if len(readers) > 1 else ""))


def _module(name: str) -> Any:
    if name not in _MODULES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(_MODULES)}")
    try:
        return importlib.import_module(_MODULES[name][0])
    except ModuleNotFoundError as exc:
        raise BackendError(f"backend {name!r} needs the Python package {exc.name!r}: {extra_hint(name)}") from None
    except (ImportError, OSError, RuntimeError) as exc:  # installed but broken: a native library fails to load
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BackendError(f"backend {name!r}: its engine is installed but does not import ({first}); reinstall "
                           f"it ({extra_hint(name)}) or check its native libraries") from None


def check_feed_names(path: str, feeds: Mapping[str, Any], input_names: Sequence[str], what: str = "model") -> None:
    """``feeds`` must name exactly ``input_names``; else one BackendError listing the missing and unknown names."""
    missing = [n for n in input_names if n not in feeds]
    unknown = [n for n in feeds if n not in input_names]
    if missing or unknown:
        raise BackendError(f"{path}: feeds must name exactly the {what} inputs {input_names}; "
                           f"missing {missing}, unknown {unknown}")


def fixed_batch(backend: Backend, name: str) -> int | None:
    """The batch size input ``name`` hard-codes (tf2onnx writes 1), or None when the batch is dynamic.

    The runtime chunks every inference into this size, so a fixed-batch graph runs any batch the caller asks.
    """
    shape = getattr(backend, "input_shapes", {}).get(name)
    dim = shape[0] if shape else None
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


THREAD_KEYS = {"onnxruntime": "intra_op_threads", "openvino": "num_threads"}  # each backend's thread option


def thread_options(backend: str, threads: int) -> dict[str, Any]:
    """The load options that run ``backend`` on ``threads`` threads (0: the engine's default)."""
    key = THREAD_KEYS.get(backend)
    return {key: threads} if key and threads else {}


def load_backend(name: str, path: str, options: dict[str, Any] | None = None) -> Backend:
    """Import the engine's module only now, so ``import heatdeploy.runtime`` stays engine-free."""
    backend: Backend = _module(name).load(path, options or {})
    return backend


def read_spec_with(name: str, path: str | Path) -> ModelSpec | None:
    """The spec a model file embeds, read through backend ``name`` (None when the file carries none)."""
    spec: ModelSpec | None = _module(name).read_spec(str(path))
    return spec
