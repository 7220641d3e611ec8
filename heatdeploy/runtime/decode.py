"""Heatmap codec: Gaussian targets for training and batched decoding for every engine's output.

Everything is numpy over whole ``[N, K, h, w]`` batches with no Python loop over instances or
keypoints, so decoding costs the same whatever engine produced the heatmaps. Coordinates are
``(x, y)``: x is the column, y the row; in heatmap pixels the centre of pixel ``(i, j)`` is at
``(j, i)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from heatdeploy.errors import ModelOutputError
from heatdeploy.spec import ModelSpec

# DARK skips keypoints whose log-heatmap Hessian determinant is this close to zero (a flat
# neighbourhood: the Newton step would be arbitrary).
_DET_EPS = 1e-10
# MMPose clamps the modulated heatmap at this value before taking its log.
_LOG_FLOOR = 1e-10
# A Newton step longer than this (heatmap px, per axis) means the log-heatmap is not a Gaussian
# bump at the peak (noise, a flat or quantized map): the step is then dropped. On a real Gaussian
# the sub-pixel peak lies within 0.5 px of the argmax, so correct peaks are never affected.
DARK_MAX_STEP = 1.0

# The 13 points of the 5x5 neighbourhood that DARK's finite differences read (centre, +-1, +-2
# along each axis, and the four diagonal neighbours).
_DARK_TAPS = np.zeros((5, 5), dtype=bool)
_DARK_TAPS[2, :] = True
_DARK_TAPS[:, 2] = True
_DARK_TAPS[1:4, 1:4] = True


@dataclass
class Decoded:
    """Keypoints decoded from one batch; every array has the batch and keypoint axes first."""

    coords_hm: np.ndarray  # [N,K,2] float32, (x, y) in heatmap pixels
    coords: np.ndarray  # [N,K,2] float32, (x, y) in model-input pixels
    scores: np.ndarray  # [N,K] float32 heatmap peak value (after a sigmoid for logit heatmaps)
    presence: np.ndarray  # [N,K] float32 probability that the keypoint exists
    present: np.ndarray  # [N,K] bool: presence >= threshold
    peaks: np.ndarray | None = None  # [N,K,2] int32: the class (grid cell) each keypoint was put in
    # Multi-instance heads only: every array above gains an instance axis ([N,M,K,...]) and this is [N,M]
    # (0 for padding slots, whose present flags are all False).
    instance_scores: np.ndarray | None = None


# --- tensors in, [N,K,h,w] out ---------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Overflow-free logistic function (tanh form), float32 out."""
    x = np.asarray(x, dtype=np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32, copy=False)


def _check_heatmaps(heatmaps: np.ndarray, spec: ModelSpec, what: str) -> None:
    """Raise a ModelOutputError naming both shapes when heatmaps do not fit the spec."""
    k = spec.num_keypoints
    h, w = spec.heatmap_size
    if heatmaps.ndim != 4:
        raise ModelOutputError(f"{what}: expected a 4-D [N,K,h,w] array, got shape {heatmaps.shape}")
    if heatmaps.shape[1] != k:
        raise ModelOutputError(
            f"{what}: got {heatmaps.shape[1]} keypoint channels (shape {heatmaps.shape} as [N,K,h,w]) "
            f"but the spec has {k} keypoints ({', '.join(spec.keypoints)}); "
            "set heatmap.channels or heatmap.layout in the spec"
        )
    if heatmaps.shape[2:] != (h, w):
        raise ModelOutputError(
            f"{what}: heatmap size {heatmaps.shape[2]}x{heatmaps.shape[3]} (shape {heatmaps.shape} as "
            f"[N,K,h,w]) but the spec expects {h}x{w} (input {spec.input.height}x{spec.input.width} / "
            f"stride {spec.heatmap.stride})"
        )


def select_heatmaps(raw: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Turn the engine's heatmap output into float32 ``[N,K,h,w]`` following the spec's layout."""
    raw = np.asarray(raw)
    layout = spec.heatmap.layout
    if raw.ndim != 4:
        raise ModelOutputError(
            f"heatmap output {spec.heatmap.name!r}: expected a 4-D {layout} tensor, got shape {raw.shape}"
        )
    hm = raw.transpose(0, 3, 1, 2) if layout == "NHWC" else raw
    channels = spec.heatmap.channels
    if channels is not None:
        idx = np.asarray(channels, dtype=np.intp)
        c = hm.shape[1]
        if idx.size and (idx.min() < -c or idx.max() >= c):
            raise ModelOutputError(
                f"heatmap output {spec.heatmap.name!r}: heatmap.channels {list(channels)} out of range "
                f"for {c} channels (raw shape {raw.shape}, layout {layout})"
            )
        hm = hm[:, idx]
    _check_heatmaps(hm, spec, f"heatmap output {spec.heatmap.name!r} (raw shape {raw.shape}, {layout})")
    return np.ascontiguousarray(hm, dtype=np.float32)


def existence_probability(raw: np.ndarray | None, spec: ModelSpec, n: int) -> np.ndarray | None:
    """Existence output ``[N,K]``, ``[N,1]`` or ``[N,K,1]`` -> float32 probabilities ``[N,K]``."""
    if raw is None:
        return None
    if spec.existence is None:
        raise ModelOutputError("got an existence output but the spec has no existence head (spec.existence)")
    ex = spec.existence
    k = spec.num_keypoints
    arr = np.asarray(raw, dtype=np.float32)
    if arr.ndim == 0 or arr.shape[0] != n:
        raise ModelOutputError(f"existence output {ex.name!r}: shape {arr.shape} does not match a batch of {n}")
    if arr.ndim > 2 and all(d == 1 for d in arr.shape[2:]):
        arr = arr.reshape(arr.shape[:2])
    want = 1 if ex.per == "instance" else k
    if arr.ndim == 1 and want == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != want:
        expected = f"[{n},1]" if ex.per == "instance" else f"[{n},{k}] or [{n},{k},1]"
        raise ModelOutputError(
            f"existence output {ex.name!r}: got shape {np.asarray(raw).shape}, expected {expected} "
            f"(existence.per = {ex.per!r}, {k} keypoints)"
        )
    prob = _sigmoid(arr) if ex.activation == "logits" else arr
    return np.ascontiguousarray(np.broadcast_to(prob, (n, k)), dtype=np.float32)


# --- coordinate frames -----------------------------------------------------------------------------


def _udp_scale(spec: ModelSpec) -> np.ndarray:
    """Heatmap px per input px along (x, y) for UDP alignment (corner pixels map onto each other)."""
    h, w = spec.heatmap_size
    return np.array(
        [(w - 1) / max(spec.input.width - 1, 1), (h - 1) / max(spec.input.height - 1, 1)], dtype=np.float64
    )


def heatmap_to_input(coords_hm: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(x, y) in heatmap pixels -> (x, y) in model-input pixels, per the spec's alignment."""
    c = np.asarray(coords_hm, dtype=np.float64)
    if spec.heatmap.align == "udp":
        out = c / _udp_scale(spec)
    else:
        s = spec.heatmap.stride
        out = (c + 0.5) * s - 0.5
    return out.astype(np.float32)


def input_to_heatmap(coords_in: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(x, y) in model-input pixels -> (x, y) in heatmap pixels; the inverse of heatmap_to_input."""
    c = np.asarray(coords_in, dtype=np.float64)
    if spec.heatmap.align == "udp":
        out = c * _udp_scale(spec)
    else:
        s = spec.heatmap.stride
        out = (c + 0.5) / s - 0.5
    return out.astype(np.float32)


# --- decoders --------------------------------------------------------------------------------------


def argmax_2d(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer peak location (x, y) float32 ``[N,K,2]`` and peak value ``[N,K]`` of each map."""
    hm = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    coords = np.stack([idx % w, idx // w], axis=-1).astype(np.float32)
    return coords, maxvals.astype(np.float32, copy=False)


def _grid_index(heatmaps: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat map index ``[M]`` and rounded integer x, y ``[M]`` of each keypoint (M = N*K)."""
    n, k = heatmaps.shape[:2]
    c = np.rint(np.asarray(coords, dtype=np.float64).reshape(n * k, 2))
    c = np.nan_to_num(c, nan=-1.0, posinf=-1.0, neginf=-1.0)
    x = c[:, 0].astype(np.intp)
    y = c[:, 1].astype(np.intp)
    return np.arange(n * k, dtype=np.intp), x, y


def refine_quarter(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Move each integer peak 0.25 px toward its higher neighbour along x and along y."""
    hm = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = hm.shape
    maps = hm.reshape(n * k, h, w)
    m, x, y = _grid_index(hm, coords)
    okx = (x > 0) & (x < w - 1) & (y >= 0) & (y < h)
    oky = (y > 0) & (y < h - 1) & (x >= 0) & (x < w)
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
        raise ValueError(f"DARK blur kernel must be a positive odd size, got {kernel}")
    g = cv2.getGaussianKernel(kernel, 0, ktype=cv2.CV_64F).ravel()
    g = 0.5 * (g + g[::-1])  # exactly symmetric, so _conv5 may pair taps
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


def _conv5(a: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
    """Valid convolution of ``a`` (length ``len(g) + 4`` along ``axis``) with symmetric ``g`` -> 5 values.

    Loops over the kernel's taps (not over keypoints): each step is one contiguous multiply-add over
    every keypoint, which beats a threaded BLAS call of this shape on a busy CPU.
    """
    r = g.size // 2

    def part(start: int) -> np.ndarray:
        return a[(slice(None),) * axis + (slice(start, start + 5),)]

    out = part(r) * np.float32(g[r])
    for t in range(r):
        pair = part(t) + part(2 * r - t)
        pair *= np.float32(g[t])
        out += pair
    return out


def _dark_offsets(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Newton step ``-H^-1 g`` ``[M,2]`` from log-heatmap neighbourhoods ``v[row, col, M]`` (5x5).

    Also returns where the step is usable: the Hessian is not singular and the step is finite.
    """
    c = v[2, 2]
    dx = 0.5 * (v[2, 3] - v[2, 1])
    dy = 0.5 * (v[3, 2] - v[1, 2])
    dxx = 0.25 * (v[2, 4] - 2.0 * c + v[2, 0])
    dyy = 0.25 * (v[4, 2] - 2.0 * c + v[0, 2])
    dxy = 0.25 * (v[3, 3] - v[1, 3] - v[3, 1] + v[1, 1])
    det = dxx * dyy - dxy * dxy
    ok = np.abs(det) > _DET_EPS
    safe = np.where(ok, det, 1.0)
    # Explicit 2x2 inverse: H^-1 = [[dyy, -dxy], [-dxy, dxx]] / det.
    ox = -(dyy * dx - dxy * dy) / safe
    oy = -(dxx * dy - dxy * dx) / safe
    offset = np.stack([ox, oy], axis=-1)
    ok &= np.isfinite(offset).all(axis=-1) & (np.abs(offset) <= DARK_MAX_STEP).all(axis=-1)
    return offset, ok


def refine_dark(heatmaps: np.ndarray, coords: np.ndarray, kernel: int) -> np.ndarray:
    """DARK (Zhang et al. 2020): Taylor-expand the Gaussian-modulated log-heatmap at each peak.

    Same semantics as MMPose's ``refine_keypoints_dark``: each map is zero-padded and blurred with
    cv2's Gaussian of size ``kernel`` (sigma derived from the size), rescaled to its original maximum,
    clamped at 1e-10 and logged; the offset ``-H^-1 g`` uses central differences at the (rounded)
    peak. Peaks closer than 2 px to a border, flat neighbourhoods (det ~ 0) and maps whose blur has no
    positive value keep their input coordinates.

    Only the ``(kernel + 4)^2`` patch around each peak is blurred. The rescale factor multiplies the
    whole map, so it cancels in every derivative of the log unless the clamp bites. When the blurred
    values DARK reads are all above the clamp (the usual case) the rescale is skipped; a map whose
    maximum is below the clamp is flat after it (no step); the rare rest is blurred in full.
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = hm.shape
    out = np.array(coords, dtype=np.float32).reshape(n * k, 2)
    g = _gaussian_kernel(kernel)  # validates the size
    if h < 5 or w < 5 or n * k == 0:
        return out.reshape(n, k, 2)
    m, x, y = _grid_index(hm, coords)
    inside = (x >= 2) & (x <= w - 3) & (y >= 2) & (y <= h - 3)
    xc = np.clip(x, 2, w - 3)
    yc = np.clip(y, 2, h - 3)

    # Gather each peak's (kernel + 4)^2 patch. Indices past a map's edge are wrapped (clipped at the
    # array's ends) and then zeroed by the masks, which is the zero padding.
    span = np.arange(-2 - kernel // 2, 3 + kernel // 2, dtype=np.intp)
    offsets = span[:, None] * w + span[None, :]  # [row, col]
    idx = (m * (h * w) + yc * w + xc)[:, None, None] + offsets
    patch = hm.reshape(-1).take(idx, mode="clip")  # [M, row, col]
    cols = xc[:, None] + span
    rows = yc[:, None] + span
    col_ok = ((cols >= 0) & (cols < w)).T  # [col, M]
    row_ok = ((rows >= 0) & (rows < h)).T  # [row, M]
    # To [col, row, M] so every convolution step below runs over contiguous memory.
    patch_t = np.empty((span.size, span.size, n * k), dtype=np.float32)
    np.multiply(patch.transpose(2, 1, 0), col_ok[:, None, :], out=patch_t)

    blur_x = _conv5(patch_t, g, axis=0)  # [col(5), row, M]
    blur_x *= row_ok
    local = _conv5(blur_x, g, axis=1).transpose(1, 0, 2).astype(np.float64)  # [row(5), col(5), M]

    with np.errstate(invalid="ignore"):
        fast = local[_DARK_TAPS].min(axis=0) >= 2.0 * _LOG_FLOOR
        logs = np.log(np.maximum(local, _LOG_FLOOR))
    usable = inside.copy()
    slow = np.flatnonzero(inside & ~fast)
    if slow.size:
        maps = hm.reshape(-1, h, w)
        peak = maps[slow].max(axis=(1, 2))
        # Maximum under the clamp: the clamped log-map is flat (or NaN), so there is no step.
        usable[slow[~(peak >= _LOG_FLOOR)]] = False
        full = slow[peak >= _LOG_FLOOR]
        if full.size:
            logs[:, :, full], usable[full] = _dark_modulated_full(maps, full, x, y, kernel)

    offset, ok = _dark_offsets(logs)
    ok &= usable
    out[ok] += offset[ok].astype(np.float32)
    return out.reshape(n, k, 2)


def _dark_modulated_full(
    maps: np.ndarray, sel: np.ndarray, x: np.ndarray, y: np.ndarray, kernel: int
) -> tuple[np.ndarray, np.ndarray]:
    """Whole-map DARK modulation where the 1e-10 clamp matters: logs ``[5,5,S]`` and usable ``[S]``."""
    _, h, w = maps.shape
    sub = maps[sel].astype(np.float64)
    blurred = _band(kernel, h).T @ sub @ _band(kernel, w)
    bmax = blurred.max(axis=(1, 2))
    usable = bmax > 0
    scale = np.where(usable, sub.max(axis=(1, 2)) / np.where(usable, bmax, 1.0), 0.0)
    off = np.arange(-2, 3)
    rows = y[sel] + off[:, None, None]
    cols = x[sel] + off[None, :, None]
    local = blurred[np.arange(sel.size), rows, cols]  # [row, col, S]
    logs = np.log(np.maximum(local * scale, _LOG_FLOOR))
    return logs, usable


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


# --- the codec -------------------------------------------------------------------------------------


class HeatmapCodec:
    """One object for both sides: Gaussian targets for training, keypoints from model output."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.num_keypoints = spec.num_keypoints
        self.heatmap_size = spec.heatmap_size
        self.sigma = float(spec.decoder.sigma)

    def encode(self, keypoints_in: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints ``[N,K,2]`` in input px -> Gaussian targets ``[N,K,h,w]`` and weights ``[N,K]``.

        Each target is an unnormalised Gaussian (sigma in heatmap px) with value 1 at the exact
        sub-pixel keypoint, i.e. a label-smoothed one-hot. Absent keypoints, non-finite ones and ones
        more than 3 sigma outside the heatmap get an all-zero target and weight 0.
        """
        kp = np.asarray(keypoints_in, dtype=np.float64)
        pres = np.asarray(present, dtype=bool)
        if kp.ndim != 3 or kp.shape[1:] != (self.num_keypoints, 2) or pres.shape != kp.shape[:2]:
            k = self.num_keypoints
            raise ValueError(
                f"encode: expected keypoints [N,{k},2] and present [N,{k}], got {kp.shape} and {pres.shape}"
            )
        h, w = self.heatmap_size
        mu = input_to_heatmap(kp, self.spec).astype(np.float64)
        reach = 3.0 * self.sigma
        finite = np.isfinite(mu).all(axis=-1)
        mu = np.where(finite[..., None], mu, 0.0)
        lo = np.array([-reach, -reach])
        hi = np.array([w - 1 + reach, h - 1 + reach])
        near = ((mu > lo) & (mu < hi)).all(axis=-1)
        weights = (pres & finite & near).astype(np.float32)
        inv = -0.5 / (self.sigma * self.sigma)
        gx = np.exp(inv * (np.arange(w) - mu[..., 0:1]) ** 2) * weights[..., None]  # [N,K,w]
        gy = np.exp(inv * (np.arange(h) - mu[..., 1:2]) ** 2)  # [N,K,h]
        targets = (gy[..., :, None] * gx[..., None, :]).astype(np.float32)
        return targets, weights

    def decode(self, heatmaps: np.ndarray, existence: np.ndarray | None = None) -> Decoded:
        """Heatmaps ``[N,K,h,w]`` (+ raw existence output) -> coordinates, scores and presence.

        Coordinates are found on the probability map (a sigmoid is applied first for logit heatmaps;
        argmax and quarter are unaffected by it, DARK and soft-argmax assume it). Without an existence
        output (no head in the spec, or none passed) presence falls back to the peak score and
        ``decoder.score_threshold``.
        """
        spec = self.spec
        raw = np.asarray(heatmaps, dtype=np.float32)
        _check_heatmaps(raw, spec, "decode")
        n = raw.shape[0]
        logits = spec.heatmap.activation == "logits"
        name = spec.decoder.name

        if name in ("dark", "soft_argmax") and logits:
            hm = _sigmoid(raw)
            coords_hm, scores = argmax_2d(hm)
        else:
            hm = raw
            coords_hm, scores = argmax_2d(raw)
            if logits:
                scores = _sigmoid(scores)
        peaks = coords_hm.astype(np.int32)

        if name == "quarter":
            coords_hm = refine_quarter(hm, coords_hm)
        elif name == "dark":
            coords_hm = refine_dark(hm, coords_hm, spec.decoder.kernel_size())
        elif name == "soft_argmax":
            coords_hm = soft_argmax(hm, spec.decoder.soft_argmax_beta)
        elif name != "argmax":
            raise ValueError(f"decoder.name: unknown decoder {name!r}")

        presence = existence_probability(existence, spec, n)
        if presence is None:
            presence = scores.astype(np.float32, copy=True)
            threshold = spec.decoder.score_threshold
        else:
            threshold = spec.existence.threshold  # type: ignore[union-attr]
        return Decoded(
            coords_hm=coords_hm.astype(np.float32, copy=False),
            coords=heatmap_to_input(coords_hm, spec),
            scores=scores.astype(np.float32, copy=False),
            presence=presence,
            present=presence >= threshold,
            peaks=peaks,
        )
