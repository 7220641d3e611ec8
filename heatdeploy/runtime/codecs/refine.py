"""Heatmap refinement primitives: integer argmax, quarter offset, DARK (MMPose and UDP variants), soft-argmax.

Pure numpy over whole ``[N, K, h, w]`` batches with no Python loop over instances or keypoints. Coordinates
are ``(x, y)`` in heatmap pixels: x is the column, y the row; the centre of pixel ``(i, j)`` is at ``(j, i)``.
The conventions in :mod:`heatdeploy.runtime.codecs.conventions` choose among these and map to input pixels.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import cv2
import numpy as np

from heatdeploy.errors import InputError

# DARK skips keypoints whose log-heatmap Hessian determinant is this close to zero (a flat
# neighbourhood: the Newton step would be arbitrary).
_DET_EPS = 1e-10
# MMPose clamps the modulated heatmap at this value before taking its log.
_LOG_FLOOR = 1e-10
# A guard against wild Newton steps only (heatmap px, per axis): a near-singular Hessian on a flat or
# quantized map sends the step far away, while a right step can exceed 1 px when noise or a broad peak
# moves the argmax off the true maximum. MMPose applies no bound at all; 3 px keeps every step it would
# take on a Gaussian bump and drops the ones that leave the peak's neighbourhood.
DARK_MAX_STEP = 3.0
# MMPose's DARK-UDP clips the modulated heatmap to this range before the log.
_UDP_LOG_RANGE = (1e-3, 50.0)

# The 13 points of the 5x5 neighbourhood that DARK's finite differences read (centre, +-1, +-2
# along each axis, and the four diagonal neighbours).
_DARK_TAPS = np.zeros((5, 5), dtype=bool)
_DARK_TAPS[2, :] = True
_DARK_TAPS[:, 2] = True
_DARK_TAPS[1:4, 1:4] = True


# --- refinements ----------------------------------------------------------------------------------


def argmax_2d(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer peak location (x, y) float32 ``[N,K,2]`` and peak value ``[N,K]`` of each map.

    One pass over the maps (the argmax); the peak values are gathered, not reduced again.
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = hm.shape
    flat = hm.reshape(n * k, h * w)
    idx = flat.argmax(axis=1)
    maxvals = flat[np.arange(n * k), idx]
    coords = np.empty((n * k, 2), dtype=np.float32)
    coords[:, 1], coords[:, 0] = np.divmod(idx, w)
    return coords.reshape(n, k, 2), maxvals.reshape(n, k)


def _grid_index(heatmaps: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat map index ``[M]`` and rounded integer x, y ``[M]`` of each keypoint (M = N*K); non-finite: -1."""
    n, k = heatmaps.shape[:2]
    c = np.rint(np.asarray(coords, dtype=np.float64).reshape(n * k, 2))
    xy = np.where(np.isfinite(c), c, -1.0).astype(np.intp).T
    return np.arange(n * k, dtype=np.intp), xy[0], xy[1]


QuarterBorder = Literal["neighbours", "mmpose"]


def refine_quarter(heatmaps: np.ndarray, coords: np.ndarray, border: QuarterBorder = "neighbours") -> np.ndarray:
    """Move each integer peak 0.25 px toward its higher neighbour along x and along y.

    ``border`` says where an axis is left alone: ``neighbours`` only where a neighbour is missing (the peak
    is on that axis's edge); ``mmpose`` as MMPose's ``refine_keypoints``, which also skips the second
    column / row (x refined only for ``1 < x < W-1`` and ``0 < y < H``; y likewise).
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = hm.shape
    maps = hm.reshape(n * k, h, w)
    m, x, y = _grid_index(hm, coords)
    if border == "mmpose":
        okx = (x > 1) & (x < w - 1) & (y > 0) & (y < h)
        oky = (y > 1) & (y < h - 1) & (x > 0) & (x < w)
    elif border == "neighbours":
        okx = (x > 0) & (x < w - 1) & (y >= 0) & (y < h)
        oky = (y > 0) & (y < h - 1) & (x >= 0) & (x < w)
    else:
        raise InputError(f"refine_quarter: border must be 'neighbours' or 'mmpose', got {border!r}")
    xc = np.clip(x, 1, max(w - 2, 0))
    yc = np.clip(y, 1, max(h - 2, 0))
    xr = np.clip(x, 0, w - 1)
    yr = np.clip(y, 0, h - 1)
    if w >= 3:
        dx = maps[m, yr, np.minimum(xc + 1, w - 1)] - maps[m, yr, xc - 1]
    else:
        dx = np.zeros(n * k, dtype=np.float32)
    if h >= 3:
        dy = maps[m, np.minimum(yc + 1, h - 1), xr] - maps[m, yc - 1, xr]
    else:
        dy = np.zeros(n * k, dtype=np.float32)
    offset = 0.25 * np.stack([np.sign(dx) * okx, np.sign(dy) * oky], axis=-1)
    out = np.asarray(coords, dtype=np.float32).reshape(n * k, 2) + offset.astype(np.float32)
    return out.reshape(n, k, 2)


@lru_cache(maxsize=32)
def _gaussian_kernel(kernel: int) -> np.ndarray:
    """The 1-D Gaussian cv2.GaussianBlur uses for this size with sigma 0 (derived from the size)."""
    if kernel < 1 or kernel % 2 == 0:
        raise InputError(f"DARK blur kernel must be a positive odd size, got {kernel}")
    g = cv2.getGaussianKernel(kernel, 0, ktype=cv2.CV_64F).ravel()
    g = 0.5 * (g + g[::-1])  # exactly symmetric
    g.setflags(write=False)
    return g


@lru_cache(maxsize=32)
def _band(kernel: int, size: int) -> np.ndarray:
    """Matrix T with ``v @ T`` = zero-padded 'same' convolution of a length-``size`` vector."""
    g = _gaussian_kernel(kernel)
    t = np.arange(size)[:, None] - np.arange(size)[None, :] + kernel // 2
    band = np.where((t >= 0) & (t < kernel), g[np.clip(t, 0, kernel - 1)], 0.0)
    band.setflags(write=False)
    return band


@lru_cache(maxsize=32)
def _dark_band(kernel: int) -> np.ndarray:
    """``[5, kernel + 4]``: row i blurs a peak's patch onto the i-th of the 5 positions DARK reads (offset i - 2)."""
    g = _gaussian_kernel(kernel)
    band = np.zeros((5, kernel + 4))
    for i in range(5):
        band[i, i:i + kernel] = g
    band.setflags(write=False)
    return band


@lru_cache(maxsize=32)
def _dark_tap_weights(kernel: int) -> np.ndarray:
    """``[(kernel + 4)^2, 13]``: a peak's flattened patch times this is the blurred map at DARK's 13 taps.

    The blur is separable and linear, so the tap at 5x5 position (i, j) is the patch weighted by the outer
    product of the band's rows i and j: one matrix product per frame instead of two and a reshape.
    """
    band = _dark_band(kernel)
    rows, cols = np.divmod(_DARK_TAP_INDEX, 5)
    weights = (band[rows][:, :, None] * band[cols][:, None, :]).reshape(len(rows), -1).T.copy()
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=32)
def _patch_offsets(kernel: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets ``[P]`` of a peak's patch rows/cols (``P = kernel + 4``) and their flat offsets ``[P * P]`` at w."""
    span = np.arange(-2 - kernel // 2, 3 + kernel // 2, dtype=np.intp)
    flat = (span[:, None] * w + span[None, :]).reshape(-1)
    span.setflags(write=False)
    flat.setflags(write=False)
    return span, flat


_DARK_TAP_INDEX = np.flatnonzero(_DARK_TAPS)  # the taps in a row-major 5x5 neighbourhood


def _dark_difference_matrix() -> np.ndarray:
    """``[13, 5]``: log values at the 13 taps times this are (dx, dy, dxx, dyy, dxy), MMPose's central differences."""
    d = np.zeros((25, 5))
    c = 12  # the centre of the row-major 5x5 neighbourhood; +-1 is x, +-5 is y
    d[[c + 1, c - 1], 0] = 0.5, -0.5
    d[[c + 5, c - 5], 1] = 0.5, -0.5
    d[[c + 2, c, c - 2], 2] = 0.25, -0.5, 0.25
    d[[c + 10, c, c - 10], 3] = 0.25, -0.5, 0.25
    d[[c + 6, c - 4, c + 4, c - 6], 4] = 0.25, -0.25, -0.25, 0.25
    out = d[_DARK_TAP_INDEX].copy()
    out.setflags(write=False)
    return out


_DARK_DIFFERENCES = _dark_difference_matrix()


def _dark_offsets(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Newton step ``-H^-1 g`` ``[M,2]`` from the log-heatmap derivatives ``g[M, 5]`` = (dx, dy, dxx, dyy, dxy).

    Also returns where the step is usable: the Hessian is not singular and the step is finite and bounded.
    """
    dx, dy, dxx, dyy, dxy = g.T
    det = dxx * dyy - dxy * dxy
    ok = np.absolute(det) > _DET_EPS
    safe = np.where(ok, det, 1.0)
    # Explicit 2x2 inverse: H^-1 = [[dyy, -dxy], [-dxy, dxx]] / det.
    offset = np.empty((len(det), 2))
    offset[:, 0] = dxy * dy - dyy * dx
    offset[:, 1] = dxy * dx - dxx * dy
    offset /= safe[:, None]
    ok &= np.logical_and.reduce(np.absolute(offset) <= DARK_MAX_STEP, axis=1)  # False for NaN and inf too
    return offset, ok


def refine_dark(heatmaps: np.ndarray, coords: np.ndarray, kernel: int) -> np.ndarray:
    """DARK (Zhang et al. 2020): Taylor-expand the Gaussian-modulated log-heatmap at each peak.

    Same semantics as MMPose's ``refine_keypoints_dark``: each map is zero-padded and blurred with
    cv2's Gaussian of size ``kernel`` (sigma derived from the size), rescaled to its original maximum,
    clamped at 1e-10 and logged; the offset ``-H^-1 g`` uses central differences at the (rounded)
    peak. Peaks closer than 2 px to a border, flat neighbourhoods (det ~ 0) and maps whose blur has no
    positive value keep their input coordinates.

    Only the ``(kernel + 4)^2`` patch around each peak is read: the blurred values at the 13 points the
    differences use are one matrix product of the patches, the differences another. The rescale factor
    multiplies the whole map, so it cancels in every derivative of the log unless the clamp bites. When the
    blurred taps are all above the clamp (the usual case) the rescale is skipped; a map whose maximum is below
    the clamp is flat after it (no step); the rare rest is blurred in full. Few array operations, because per
    frame each one costs more in cold code than in arithmetic.
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = hm.shape
    out = np.array(coords, dtype=np.float32).reshape(n * k, 2)
    taps = _dark_tap_weights(kernel)  # validates the size
    if h < 5 or w < 5 or n * k == 0:
        return out.reshape(n, k, 2)
    m, x, y = _grid_index(hm, coords)
    xc = np.minimum(np.maximum(x, 2), w - 3)
    yc = np.minimum(np.maximum(y, 2), h - 3)
    inside = (xc == x) & (yc == y)  # 2 <= x <= w - 3, as y (non-finite peaks are -1)

    # Gather each peak's (kernel + 4)^2 patch. Indices past a map's edge are wrapped (clipped at the
    # array's ends) and then zeroed by the mask, which is the zero padding.
    span, offsets = _patch_offsets(kernel, w)
    patch = hm.reshape(-1).take((m * (h * w) + yc * w + xc)[:, None] + offsets, mode="clip")  # [M, P * P]
    row_ok = (yc[:, None] + span).view(np.uintp) < h  # negative indices wrap to huge unsigned values
    col_ok = (xc[:, None] + span).view(np.uintp) < w
    patch *= (row_ok[:, :, None] & col_ok[:, None, :]).reshape(patch.shape)
    local = patch @ taps  # [M, 13] float64: the blurred map at the taps

    fast = np.minimum.reduce(local, axis=1) >= 2.0 * _LOG_FLOOR
    logs = np.log(np.maximum(local, _LOG_FLOOR))
    usable = inside
    slow = (inside & ~fast).nonzero()[0]
    if slow.size:
        maps = hm.reshape(-1, h, w)
        peak = np.maximum.reduce(maps[slow].reshape(slow.size, -1), axis=1)
        # Maximum under the clamp: the clamped log-map is flat (or NaN), so there is no step.
        usable[slow[~(peak >= _LOG_FLOOR)]] = False
        full = slow[peak >= _LOG_FLOOR]
        if full.size:
            full_logs, usable[full] = _dark_modulated_full(maps, full, x, y, kernel)
            logs[full] = full_logs[:, _DARK_TAP_INDEX]

    offset, ok = _dark_offsets(logs @ _DARK_DIFFERENCES)
    ok &= usable
    out[ok] += offset[ok].astype(np.float32)
    return out.reshape(n, k, 2)


def _dark_modulated_full(
    maps: np.ndarray, sel: np.ndarray, x: np.ndarray, y: np.ndarray, kernel: int
) -> tuple[np.ndarray, np.ndarray]:
    """Whole-map DARK modulation where the 1e-10 clamp matters: logs ``[S, 25]`` (5x5 row-major) and usable ``[S]``."""
    _, h, w = maps.shape
    sub = maps[sel].astype(np.float64)
    blurred = _band(kernel, h).T @ sub @ _band(kernel, w)
    bmax = blurred.max(axis=(1, 2))
    usable = bmax > 0
    scale = np.where(usable, sub.max(axis=(1, 2)) / np.where(usable, bmax, 1.0), 0.0)
    off = np.arange(-2, 3)
    rows = y[sel][:, None, None] + off[None, :, None]
    cols = x[sel][:, None, None] + off[None, None, :]
    local = blurred[np.arange(sel.size)[:, None, None], rows, cols].reshape(sel.size, 25)  # [S, row * col]
    logs = np.log(np.maximum(local * scale[:, None], _LOG_FLOOR))
    return logs, usable


def refine_dark_udp(heatmaps: np.ndarray, coords: np.ndarray, kernel: int) -> np.ndarray:
    """DARK as MMPose's UDP codec does it (``refine_keypoints_dark_udp``), batched.

    Differs from :func:`refine_dark` in three documented ways: the blurred, max-rescaled map is clipped to
    [1e-3, 50] before the log; derivatives use the 3x3 stencil (unit-step second differences) on the map
    edge-padded by one pixel, so border peaks are refined too; the Hessian gets ``eps * I`` added instead of
    a determinant test. Maps whose blur has no positive value and steps beyond ``DARK_MAX_STEP`` keep their
    input coordinates.
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = hm.shape
    out = np.array(coords, dtype=np.float32).reshape(n * k, 2)
    _gaussian_kernel(kernel)  # validates the size
    if n * k == 0 or h < 2 or w < 2:
        return out.reshape(n, k, 2)
    maps = hm.reshape(n * k, h, w).astype(np.float64)
    blurred = _band(kernel, h).T @ maps @ _band(kernel, w)
    bmax = blurred.max(axis=(1, 2))
    usable = bmax > 0
    scale = np.where(usable, maps.max(axis=(1, 2)) / np.where(usable, bmax, 1.0), 0.0)
    logs = np.log(np.clip(blurred * scale[:, None, None], *_UDP_LOG_RANGE))
    padded = np.pad(logs, ((0, 0), (1, 1), (1, 1)), mode="edge")
    m, x, y = _grid_index(hm, coords)
    xs = np.clip(x, 0, w - 1) + 1
    ys = np.clip(y, 0, h - 1) + 1

    def at(dy: int, dx: int) -> np.ndarray:
        return padded[m, ys + dy, xs + dx]

    c = at(0, 0)
    gx = 0.5 * (at(0, 1) - at(0, -1))
    gy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = at(0, 1) - 2.0 * c + at(0, -1) + np.finfo(np.float32).eps
    dyy = at(1, 0) - 2.0 * c + at(-1, 0) + np.finfo(np.float32).eps
    dxy = 0.5 * (at(1, 1) - at(0, 1) - at(1, 0) + 2.0 * c - at(0, -1) - at(-1, 0) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    safe = np.where(det != 0, det, 1.0)
    step = np.stack([-(dyy * gx - dxy * gy) / safe, -(dxx * gy - dxy * gx) / safe], axis=-1)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    ok = usable & inside & (det != 0) & np.isfinite(step).all(axis=-1) & (np.abs(step) <= DARK_MAX_STEP).all(axis=-1)
    out[ok] += step[ok].astype(np.float32)
    return out.reshape(n, k, 2)


def soft_argmax(heatmaps: np.ndarray, beta: float) -> np.ndarray:
    """Integral regression: expected (x, y) under ``softmax(beta * heatmap)`` over each map."""
    hm = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = hm.shape
    z = hm.reshape(n, k, h * w) * np.float32(beta)
    z -= z.max(axis=2, keepdims=True)
    np.exp(z, out=z)
    z = z.reshape(n, k, h, w)
    total = z.sum(axis=(2, 3))
    ex = z.sum(axis=2) @ np.arange(w, dtype=np.float32)
    ey = z.sum(axis=3) @ np.arange(h, dtype=np.float32)
    return (np.stack([ex, ey], axis=-1) / total[..., None]).astype(np.float32)
