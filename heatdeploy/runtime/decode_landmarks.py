"""Regressed landmark vectors refined by a heatmap (MediaPipe BlazePose style).

The model regresses a flat ``[N, K*F]`` vector (x, y, z, visibility, presence per keypoint) and also
outputs a low-resolution heatmap per keypoint; MediaPipe's ``RefineLandmarksFromHeatmapCalculator``
replaces each regressed point by the heatmap-weighted mean of a small window around it. Everything is
numpy over whole batches with no Python loop over instances or keypoints. Coordinates are ``(x, y)`` in
heatmap pixels: the centre of pixel ``(i, j)`` is at ``(j, i)``.
"""

from __future__ import annotations

import numpy as np

from heatdeploy.errors import InputError
from heatdeploy.runtime.decode import _sigmoid


def split_landmarks(flat: np.ndarray, k: int, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``[N, K*F]`` keypoint-major (x0, y0, z0, v0, p0, x1, ...) -> ``{field: [N,K] float32}``.

    Any trailing shape with ``K*F`` values per batch item is accepted (e.g. ``[N,1,1,K*F]``).
    """
    arr = np.asarray(flat)
    f = len(fields)
    if len(set(fields)) != f:
        raise InputError(f"split_landmarks: field names must be unique, got {fields}")
    if arr.ndim < 1 or k < 1 or f < 1 or arr.size != arr.shape[0] * k * f:
        raise InputError(
            f"split_landmarks: shape {arr.shape} does not hold N x K x F = N x {k} x {f} values "
            f"(K={k} keypoints, F={f} fields {fields})"
        )
    per = arr.reshape(arr.shape[0], k, f)
    return {name: np.ascontiguousarray(per[:, :, i], dtype=np.float32) for i, name in enumerate(fields)}


def refine_with_heatmap(
    coords_hm: np.ndarray, heatmaps: np.ndarray, kernel: int = 7, min_score: float = 0.5,
    rounding: str = "round", logits: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe ``RefineLandmarksFromHeatmapCalculator``, vectorised over ``[N,K]``.

    For each keypoint take the ``kernel x kernel`` window of its probability heatmap centred on the rounded
    regressed point (``coords_hm [N,K,2]`` in heatmap px; ``heatmaps [N,K,h,w]``), clipped to the map. If the
    window's max >= ``min_score`` and its sum > 0, the refined point is the heatmap-weighted mean of the
    window's pixel coordinates; otherwise the regressed point is kept. Points that are non-finite or whose
    rounded position is off the map are kept too (window max 0), as MediaPipe skips them. Negative and NaN
    heatmap values weigh 0.

    The window is not re-centred on the peak, so a regressed point far from it gives a truncated, biased
    mean: the refinement is accurate only when the peak lies well inside the window.

    ``rounding`` picks the window centre: ``round`` (nearest pixel) or ``truncate`` (toward zero, as
    MediaPipe's ``int(x * hm_width)`` does; the ``mediapipe`` convention's rule).

    ``logits``: the maps are logits; the sigmoid is applied to the windows only (the same values as on the
    whole map, for the few pixels read). ``heatmaps`` may be any strided view (e.g. NHWC transposed): only
    the windows are read.

    Returns refined ``[N,K,2]`` float32 and the window max ``[N,K]`` float32.
    """
    if rounding not in ("round", "truncate"):
        raise InputError(f"refine_with_heatmap: rounding must be 'round' or 'truncate', got {rounding!r}")
    if kernel < 1 or kernel % 2 == 0:
        raise InputError(f"refine_with_heatmap: kernel must be a positive odd size, got {kernel}")
    hm = np.asarray(heatmaps, dtype=np.float32)
    pts = np.asarray(coords_hm, dtype=np.float32)
    if hm.ndim != 4 or pts.shape != hm.shape[:2] + (2,):
        raise InputError(
            f"refine_with_heatmap: expected coords_hm [N,K,2] and heatmaps [N,K,h,w], got {pts.shape} and {hm.shape}"
        )
    n, k, h, w = hm.shape
    if n * k == 0 or h * w == 0:
        return pts.copy(), np.zeros((n, k), dtype=np.float32)

    # ufuncs and their reduce rather than np.clip / .sum() / np.stack: per frame the calls cost more than the sums.
    finite = np.logical_and.reduce(np.isfinite(pts), axis=-1)
    safe = np.where(finite[..., None], pts, -1.0).astype(np.float64)
    r = np.trunc(safe) if rounding == "truncate" else np.rint(safe)
    cxy = np.minimum(np.maximum(r, -1), np.array([w, h])).astype(np.intp)  # [N,K,2]
    cx, cy = cxy[..., 0], cxy[..., 1]
    centred = finite & np.logical_and.reduce(cxy.view(np.uintp) < np.array([w, h], dtype=np.uintp), axis=-1)

    span = np.arange(-(kernel // 2), kernel // 2 + 1, dtype=np.intp)
    cols = cx[..., None, None] + span[None, :]  # [N,K,1,kw]
    rows = cy[..., None, None] + span[:, None]  # [N,K,kh,1]
    inside = (cols.view(np.uintp) < w) & (rows.view(np.uintp) < h)  # [N,K,kh,kw]; negatives wrap to huge
    b = np.arange(n)[:, None, None, None]
    c = np.arange(k)[None, :, None, None]
    win = hm[b, c, np.minimum(np.maximum(rows, 0), h - 1), np.minimum(np.maximum(cols, 0), w - 1)]  # [N,K,kh,kw]
    if logits:
        win = _sigmoid(win)
    win = np.where(inside & centred[..., None, None] & (win > 0), win, np.float32(0.0)).astype(np.float64)

    flat = win.reshape(n, k, -1)
    total = np.add.reduce(flat, axis=2)
    peak = np.maximum.reduce(flat, axis=2)
    denom = np.where(total > 0, total, 1.0)
    mean = np.empty((n, k, 2))
    mean[..., 0] = np.add.reduce(np.add.reduce(win, axis=2) * (cx[..., None] + span), axis=-1) / denom
    mean[..., 1] = np.add.reduce(np.add.reduce(win, axis=3) * (cy[..., None] + span), axis=-1) / denom
    use = centred & (peak >= min_score) & (total > 0)
    refined = np.where(use[..., None], mean, pts)
    return refined.astype(np.float32), peak.astype(np.float32)
