"""One Euro filter (Casiez et al., CHI 2012) for keypoints over time, vectorized over every coordinate.

A low-pass filter whose cutoff rises with speed: slow keypoints are smoothed hard (jitter gone), fast ones
follow with little lag. Units: cutoffs in Hz, ``beta`` in 1 / (image px), time in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    """Smoothing factor of a first-order low-pass with ``cutoff`` Hz sampled every ``dt`` s."""
    tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


@dataclass
class OneEuroFilter:
    """Filters arrays of one fixed shape (e.g. ``[K, 2]``) frame by frame.

    ``valid`` marks coordinates to filter; the others pass through and restart their filter, so a keypoint
    that reappears is not dragged from where it was last seen.
    """

    min_cutoff: float = 1.0
    beta: float = 0.01
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        for name in ("min_cutoff", "beta", "d_cutoff"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0 or (name != "beta" and v == 0):
                raise ValueError(f"One Euro {name} = {v}: expected a finite number > 0 (>= 0 for beta)")
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float, valid: np.ndarray | None = None) -> np.ndarray:
        """The filtered value of ``x`` observed at time ``t`` (seconds, increasing)."""
        x = np.asarray(x, dtype=np.float64)
        ok = np.isfinite(x) if valid is None else (np.broadcast_to(valid, x.shape) & np.isfinite(x))
        if self._x is None or self._x.shape != x.shape or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            self._seen = ok.copy()
            return x.astype(np.float32)
        dt = float(t) - self._t
        fresh = ok & ~self._seen  # first valid sample after an absence: restart there
        prev = np.where(fresh, x, self._x)
        dx = np.where(ok, (x - prev) / dt, 0.0)
        assert self._dx is not None
        dx_hat = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        a = _alpha(self.min_cutoff + self.beta * np.abs(dx_hat), dt)
        x_hat = prev + a * (x - prev)
        out = np.where(ok, x_hat, x)
        self._x = np.where(ok, out, self._x)
        self._dx = np.where(ok, dx_hat, 0.0)
        self._seen = ok
        self._t = float(t)
        return out.astype(np.float32)


__all__ = ["OneEuroFilter"]
