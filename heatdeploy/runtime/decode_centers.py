"""Multi-instance decoding from a centre heatmap plus per-keypoint offset fields (CenterNet multi-pose).

Each instance is a local peak of the centre map; its keypoints are the centre plus the offsets read at
the centre pixel, optionally snapped onto nearby peaks of per-keypoint heatmaps. Everything is numpy
over whole batches with fixed shapes ``[N, M, ...]`` (M = max_instances), with no Python loop over
images, instances or keypoints. Coordinates are ``(x, y)`` in heatmap pixels: x is the column, y the
row, and the centre of pixel ``(i, j)`` is at ``(j, i)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from heatdeploy.errors import InputError


def _check_kernel(kernel: int) -> None:
    """Max-pool windows must be odd so that every pixel sits at the centre of its own window."""
    if kernel < 1 or kernel % 2 == 0:
        raise InputError(f"peak kernel must be a positive odd size, got {kernel}")


def local_peaks(heat: np.ndarray, kernel: int = 3) -> np.ndarray:
    """``[N,h,w]`` -> bool ``[N,h,w]``: pixels equal to their ``kernel x kernel`` max-pool (CenterNet's NMS).

    The pool pads with -inf, so border pixels compete only with real neighbours. Plateaus keep every tied
    pixel (as CenterNet does); a constant map is all peaks, so thresholds should be > its value. NaN
    pixels count as -inf and are never peaks, nor are -inf pixels.

    One cv2 dilation runs over all maps stacked, with ``kernel // 2`` rows of -inf between maps so that no
    window reaches into the next map.
    """
    _check_kernel(kernel)
    hm = np.asarray(heat, dtype=np.float32)
    if hm.ndim != 3:
        raise InputError(f"local_peaks: expected a 3-D [N,h,w] array, got shape {hm.shape}")
    n, h, w = hm.shape
    clean = np.where(np.isnan(hm), np.float32(-np.inf), hm)
    if n * h * w == 0:
        return np.zeros(hm.shape, dtype=bool)
    r = kernel // 2
    stacked = np.full((n, h + r, w), -np.inf, dtype=np.float32)
    stacked[:, :h] = clean
    pooled = cv2.dilate(stacked.reshape(n * (h + r), w), np.ones((kernel, kernel), np.uint8),
                        borderType=cv2.BORDER_CONSTANT, borderValue=-np.inf)
    pooled = pooled.reshape(n, h + r, w)[:, :h]
    return (clean == pooled) & (clean > -np.inf)


def top_k_peaks(
    heat: np.ndarray, k: int, threshold: float, kernel: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[N,h,w]`` -> k highest local peaks: (x, y) int32 ``[N,k,2]``, scores float32 ``[N,k]``, valid bool ``[N,k]``.

    Scores are in descending order (ties by raster index). ``valid`` is ``score >= threshold`` on a real
    peak. Real peaks below the threshold keep their score and position (valid False); slots with no peak
    left (fewer than k peaks) are padding: valid False, score 0, xy 0.
    """
    hm = np.asarray(heat, dtype=np.float32)
    peaks = local_peaks(hm, kernel)
    n, h, w = hm.shape
    if k < 0:
        raise InputError(f"top_k_peaks: k must be >= 0, got {k}")
    hw = h * w
    masked = np.where(peaks, hm, np.float32(-np.inf)).reshape(n, hw)
    take = min(k, hw)
    if take == 0:
        cand = np.zeros((n, 0), dtype=np.intp)
    elif take < hw:
        cand = np.argpartition(-masked, take - 1, axis=1)[:, :take]
    else:
        cand = np.broadcast_to(np.arange(hw, dtype=np.intp), (n, hw))
    vals = np.take_along_axis(masked, cand, axis=1)
    order = np.lexsort((cand, -vals), axis=1)  # primary: score descending; ties: raster order
    idx = np.take_along_axis(cand, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    real = vals > -np.inf
    if take < k:  # the map has fewer pixels than k: pad
        extra = k - take
        idx = np.concatenate([idx, np.zeros((n, extra), dtype=np.intp)], axis=1)
        vals = np.concatenate([vals, np.full((n, extra), -np.inf, dtype=np.float32)], axis=1)
        real = np.concatenate([real, np.zeros((n, extra), dtype=bool)], axis=1)
    idx = np.where(real, idx, 0)
    scores = np.where(real, vals, np.float32(0.0)).astype(np.float32)
    xy = np.stack([idx % w, idx // w], axis=-1).astype(np.int32) if w else np.zeros((n, k, 2), dtype=np.int32)
    valid = real & (scores >= threshold)
    return xy, scores, valid


@dataclass
class Instances:
    """Instances decoded from one batch; M = max_instances slots per image, valid ones first."""

    coords_hm: np.ndarray  # [N,M,K,2] float32 keypoints (x, y) in heatmap px
    scores: np.ndarray  # [N,M] float32 instance (centre peak) score
    valid: np.ndarray  # [N,M] bool
    keypoint_scores: np.ndarray  # [N,M,K] float32 keypoint-heatmap value at the keypoint, else the instance score
    centers_hm: np.ndarray  # [N,M,2] float32 centre (x, y) in heatmap px


def _check_inputs(centers: np.ndarray, offsets: np.ndarray, keypoint_heatmaps: np.ndarray | None) -> None:
    """Raise a ValueError naming the shapes unless centers [N,h,w], offsets [N,K,2,h,w], heatmaps [N,K,h,w]."""
    ok = centers.ndim == 3 and offsets.ndim == 5 and offsets.shape[2] == 2
    ok = ok and offsets.shape[0] == centers.shape[0] and offsets.shape[3:] == centers.shape[1:]
    if keypoint_heatmaps is not None:
        ok = ok and keypoint_heatmaps.shape == offsets.shape[:2] + centers.shape[1:]
    if not ok:
        kh = None if keypoint_heatmaps is None else keypoint_heatmaps.shape
        raise InputError(
            "decode_centers: expected centers [N,h,w], offsets [N,K,2,h,w] and keypoint_heatmaps [N,K,h,w], "
            f"got centers {centers.shape}, offsets {offsets.shape}, keypoint_heatmaps {kh}"
        )


def _heat_at(maps: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Value of ``maps [N,K,h,w]`` at the rounded points ``pts [N,M,K,2]`` -> ``[N,M,K]``; 0 off the map."""
    n, k, h, w = maps.shape
    with np.errstate(invalid="ignore"):
        r = np.rint(np.nan_to_num(pts.astype(np.float64), nan=-1.0, posinf=-1.0, neginf=-1.0))
    x = np.clip(r[..., 0], -1, w).astype(np.intp)
    y = np.clip(r[..., 1], -1, h).astype(np.intp)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    ni = np.arange(n)[:, None, None]
    ki = np.arange(k)[None, None, :]
    vals = maps[ni, ki, np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)]
    return np.where(inside & np.isfinite(vals), vals, 0.0).astype(np.float32)


def decode_centers(
    centers: np.ndarray,
    offsets: np.ndarray,
    *,
    max_instances: int,
    threshold: float,
    kernel: int = 3,
    nms_distance: float = 0.0,
    keypoint_heatmaps: np.ndarray | None = None,
    snap_distance: float = 0.0,
    snap_threshold: float = 0.1,
) -> Instances:
    """Centre map ``[N,h,w]`` (probabilities) + offsets ``[N,K,2,h,w]`` -> up to ``max_instances`` poses per image.

    ``offsets[:, k]`` holds (dx, dy) from a centre pixel to keypoint k in heatmap px (CenterNet's ``hps``
    ``[N,2K,h,w]`` reshaped). Steps:

    1. the ``max_instances`` highest local peaks of the centre map (``top_k_peaks``); valid if >= threshold;
    2. keypoints = centre pixel + the offsets read at it;
    3. pose NMS (when ``nms_distance > 0``): instance j is suppressed if some valid instance i ranked before it
       has a mean keypoint distance to it below ``nms_distance``. This is Fast-NMS (one vectorised pass over
       the ``[N,M,M]`` distance matrix; an already-suppressed i still suppresses), not greedy NMS, so it can
       suppress slightly more than greedy would in chains of overlaps;
    4. snapping (when ``keypoint_heatmaps`` is given and ``snap_distance > 0``, as CenterNet
       ``multi_pose_decode``): each regressed keypoint moves to the nearest of the top ``max_instances`` local
       peaks of its heatmap with value >= ``snap_threshold`` if that peak is within ``snap_distance`` px.

    ``keypoint_scores`` is the keypoint heatmap at the (rounded) final keypoint, 0 off the map, when heatmaps
    are given, else the instance score. Invalid slots (below threshold, suppressed or padding) are sorted
    after the valid ones, keeping score order within each group; their contents are not meaningful.
    """
    c = np.asarray(centers, dtype=np.float32)
    off = np.asarray(offsets, dtype=np.float32)
    kh = None if keypoint_heatmaps is None else np.asarray(keypoint_heatmaps, dtype=np.float32)
    _check_inputs(c, off, kh)
    if max_instances < 0:
        raise InputError(f"decode_centers: max_instances must be >= 0, got {max_instances}")
    n, k = off.shape[:2]
    m = max_instances

    xy, scores, valid = top_k_peaks(c, m, threshold, kernel)  # [N,M,2], [N,M], [N,M]
    ni = np.arange(n)[:, None]
    gathered = off[ni, :, :, xy[..., 1], xy[..., 0]]  # advanced indices first -> [N,M,K,2]
    centers_hm = xy.astype(np.float32)
    coords = centers_hm[:, :, None, :] + gathered

    if nms_distance > 0 and m > 1:
        diff = coords[:, :, None] - coords[:, None, :]  # [N,M,M,K,2]
        dist = np.sqrt((diff * diff).sum(axis=-1)).mean(axis=-1)  # [N,M,M]
        earlier = np.triu(np.ones((m, m), dtype=bool), k=1)  # [i, j]: i ranked before j
        close = (dist < nms_distance) & earlier & valid[:, :, None]
        valid = valid & ~close.any(axis=1)

    if kh is not None:
        if snap_distance > 0 and m > 0:
            h, w = c.shape[1:]
            pxy, _, pvalid = top_k_peaks(kh.reshape(n * k, h, w), m, snap_threshold, kernel)
            pxy = pxy.reshape(n, 1, k, m, 2).astype(np.float32)  # [N,1,K,P,2]
            pvalid = pvalid.reshape(n, 1, k, m)
            d = np.sqrt(((coords[:, :, :, None, :] - pxy) ** 2).sum(axis=-1))  # [N,M,K,P]
            d = np.where(pvalid & np.isfinite(d), d, np.inf)
            best = d.argmin(axis=-1)  # [N,M,K]
            dmin = np.take_along_axis(d, best[..., None], axis=-1)[..., 0]
            target = np.take_along_axis(pxy, best[..., None, None], axis=3)[:, :, :, 0]  # [N,M,K,2]
            snap = dmin <= snap_distance
            coords = np.where(snap[..., None], target, coords)
        kp_scores = _heat_at(kh, coords)
    else:
        kp_scores = np.broadcast_to(scores[:, :, None], (n, m, k)).copy()

    order = np.argsort(~valid, axis=1, kind="stable")  # valid first, score order kept within each group
    return Instances(
        coords_hm=np.take_along_axis(coords, order[:, :, None, None], axis=1).astype(np.float32),
        scores=np.take_along_axis(scores, order, axis=1).astype(np.float32),
        valid=np.take_along_axis(valid, order, axis=1),
        keypoint_scores=np.take_along_axis(kp_scores, order[:, :, None], axis=1).astype(np.float32),
        centers_hm=np.take_along_axis(centers_hm, order[:, :, None], axis=1),
    )
