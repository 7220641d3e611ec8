"""heatdeploy: deploy heatmap keypoint models with existence heads to edge engines, with parity proof.

The library API mirrors the CLI: ``heatdeploy.export``, ``heatdeploy.calibrate``, ``heatdeploy.add``,
``heatdeploy.parity`` and ``heatdeploy.evaluate`` (see :mod:`heatdeploy.api`), plus ``heatdeploy.runtime.Pipeline``.
They load on first use, so ``import heatdeploy`` stays as light as the runtime needs.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "export", "calibrate", "add", "parity", "evaluate", "choose"]
_API = ("export", "calibrate", "add", "parity", "evaluate", "choose")


class ApiModule(types.ModuleType):
    """A submodule that shares its name with an API function (``heatdeploy.parity``, ``heatdeploy.evaluate``):
    calling the module calls :mod:`heatdeploy.api`'s function of that name, so both spellings keep working."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from heatdeploy import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


def make_callable(module_name: str) -> None:
    """Turn the loaded module ``module_name`` into an :class:`ApiModule` (call it at the module's end)."""
    sys.modules[module_name].__class__ = ApiModule


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'heatdeploy' has no attribute {name!r}")
    if importlib.util.find_spec(f"heatdeploy.{name}") is not None:  # a submodule of that name: made callable
        module = importlib.import_module(f"heatdeploy.{name}")
        if callable(module):
            return module
    return getattr(importlib.import_module("heatdeploy.api"), name)


def __dir__() -> list[str]:
    return sorted({*__all__, "ApiModule", "make_callable", *(n for n in globals() if n.startswith("__"))})
