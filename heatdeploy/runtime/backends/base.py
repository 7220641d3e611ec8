"""The backend contract: every engine is loaded by path and exposes named inputs and outputs."""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from heatdeploy.errors import HeatdeployError


class BackendError(HeatdeployError, RuntimeError):
    """An engine could not load or engage what was asked (never a silent fallback)."""


class Backend(Protocol):
    input_names: list[str]
    output_names: list[str]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


# name -> module inside heatdeploy.runtime.backends; each module defines load(path, options)
_MODULES = {
    "onnxruntime": "heatdeploy.runtime.backends.onnxruntime",
    "openvino": "heatdeploy.runtime.backends.openvino",
    "tensorrt": "heatdeploy.runtime.backends.tensorrt",
    "torch": "heatdeploy.runtime.backends.torch",
}


def available_backends() -> list[str]:
    return list(_MODULES)


def load_backend(name: str, path: str, options: dict[str, Any] | None = None) -> Backend:
    """Import the engine's module only now, so ``import heatdeploy.runtime`` stays engine-free."""
    if name not in _MODULES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(_MODULES)}")
    try:
        mod = importlib.import_module(_MODULES[name])
    except ModuleNotFoundError as exc:
        raise BackendError(
            f"backend {name!r} needs the Python package {exc.name!r}: pip install 'heatdeploy[{name}]'"
        ) from None
    return mod.load(path, options or {})
