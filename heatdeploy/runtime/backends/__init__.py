"""Engine backends; each engine is imported only inside its own module."""

from heatdeploy.runtime.backends.base import Backend, BackendError, available_backends, load_backend

__all__ = ["Backend", "BackendError", "available_backends", "load_backend"]
