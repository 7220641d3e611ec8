"""SimCC decoding (RTMPose / MMPose ``SimCCLabel``): x and y are classified separately over 1-D bins.

A model with split ratio ``s`` predicts, per keypoint, a vector of ``L = s * W`` x-bins and one of
``s * H`` y-bins; the keypoint sits at ``bin / s`` in model-input pixels. Everything is numpy over whole
``[N, K, L]`` batches with no Python loop over instances or keypoints. Coordinates are ``(x, y)``.
"""

from __future__ import annotations

import numpy as np

# Probabilities are clamped here before the log (as MMPose clamps modulated heatmaps), so an exact 0
# gives a large finite negative log instead of -inf.
_LOG_FLOOR = 1e-10
# On a real peak the sub-bin maximum lies within 0.5 bin of the argmax; a longer Newton step means the
# neighbourhood is not a concave bump (noise, a plateau, a hand-picked bin that is not the argmax).
SIMCC_MAX_STEP = 1.0


def _check_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray) -> None:
    """Raise a ValueError naming both shapes unless they are [N,K,Lx] and [N,K,Ly] with Lx, Ly >= 1."""
    if simcc_x.ndim != 3 or simcc_y.ndim != 3 or simcc_x.shape[:2] != simcc_y.shape[:2]:
        raise ValueError(
            f"SimCC: expected simcc_x [N,K,Lx] and simcc_y [N,K,Ly] with the same N and K, "
            f"got simcc_x {simcc_x.shape} and simcc_y {simcc_y.shape}"
        )
    if simcc_x.shape[2] < 1 or simcc_y.shape[2] < 1:
        raise ValueError(
            f"SimCC: every vector needs at least one bin, got simcc_x {simcc_x.shape} and simcc_y {simcc_y.shape}"
        )


def simcc_maximum(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[N,K,Lx]``, ``[N,K,Ly]`` -> integer bins (bx, by) float32 ``[N,K,2]``, max_x ``[N,K]``, max_y ``[N,K]``.

    Ties go to the lowest bin (``np.argmax``), as in MMPose's ``get_simcc_maximum``.
    """
    sx = np.asarray(simcc_x, dtype=np.float32)
    sy = np.asarray(simcc_y, dtype=np.float32)
    _check_simcc(sx, sy)
    bx = sx.argmax(axis=2)
    by = sy.argmax(axis=2)
    max_x = np.take_along_axis(sx, bx[..., None], axis=2)[..., 0]
    max_y = np.take_along_axis(sy, by[..., None], axis=2)[..., 0]
    bins = np.stack([bx, by], axis=-1).astype(np.float32)
    return bins, max_x.astype(np.float32, copy=False), max_y.astype(np.float32, copy=False)


def refine_simcc(vectors: np.ndarray, bins: np.ndarray, log_domain: bool) -> np.ndarray:
    """Sub-bin peak by one 1-D Newton step on the log-probability at each bin: ``bin - d1 / d2``.

    ``d1``, ``d2`` are central differences at the bin. With ``log_domain=True`` ``vectors`` are logits
    (log-softmax differs from them by a per-vector constant, which no difference sees); with False they
    are probabilities and are logged with a 1e-10 floor. The step is dropped (the integer bin kept) where
    ``d2 >= 0`` (not a maximum), where it is non-finite or longer than one bin, and at bins 0 and L-1
    (no two-sided difference). Bins are rounded; out-of-range bins are returned unchanged.

    vectors ``[N,K,L]``, bins ``[N,K]`` -> refined bin position float32 ``[N,K]``.
    """
    v = np.asarray(vectors, dtype=np.float32)
    b = np.asarray(bins, dtype=np.float32)
    if v.ndim != 3 or b.shape != v.shape[:2]:
        raise ValueError(f"refine_simcc: expected vectors [N,K,L] and bins [N,K], got {v.shape} and {b.shape}")
    length = v.shape[2]
    out = b.copy()
    if length < 3 or b.size == 0:
        return out
    with np.errstate(invalid="ignore"):
        finite_bin = np.isfinite(b)
        idx = np.where(finite_bin, np.rint(b), 0.0).astype(np.intp)
        inner = finite_bin & (idx >= 1) & (idx <= length - 2)
        c = np.clip(idx, 1, length - 2)[..., None]
        # [N,K,3] taps at bin-1, bin, bin+1; float64 so a step on a near-flat top is not cancellation noise
        taps = np.take_along_axis(v, c + np.arange(-1, 2), axis=2).astype(np.float64)
        if not log_domain:
            taps = np.log(np.maximum(taps, _LOG_FLOOR))
        d1 = 0.5 * (taps[..., 2] - taps[..., 0])
        d2 = taps[..., 2] - 2.0 * taps[..., 1] + taps[..., 0]
        step = -d1 / np.where(d2 < 0, d2, -1.0)
        ok = inner & (d2 < 0) & np.isfinite(step) & (np.abs(step) <= SIMCC_MAX_STEP)
    out[ok] = (idx[ok] + step[ok]).astype(np.float32)
    return out


def decode_simcc(
    simcc_x: np.ndarray,
    simcc_y: np.ndarray,
    split_ratio: float,
    *,
    refine: bool = True,
    log_domain: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """SimCC vectors -> coordinates (x, y) in model-input px ``[N,K,2]`` float32 and raw scores ``[N,K]``.

    Coordinates are ``bin / split_ratio`` (MMPose convention: bin i covers input pixel i / s, no half-pixel
    shift). Scores are ``min(max_x, max_y)`` as MMPose's ``get_simcc_maximum``, in the vectors' own domain:
    the caller applies a sigmoid when they are logits. Unlike MMPose, coordinates are never set to -1 for
    scores <= 0; thresholding is the caller's.
    """
    if not (np.isfinite(split_ratio) and split_ratio > 0):
        raise ValueError(f"SimCC: split_ratio must be a positive number, got {split_ratio!r}")
    sx = np.asarray(simcc_x, dtype=np.float32)
    sy = np.asarray(simcc_y, dtype=np.float32)
    bins, max_x, max_y = simcc_maximum(sx, sy)
    if refine:
        bins = np.stack(
            [refine_simcc(sx, bins[..., 0], log_domain), refine_simcc(sy, bins[..., 1], log_domain)], axis=-1
        )
    coords = (bins.astype(np.float64) / float(split_ratio)).astype(np.float32)
    return coords, np.minimum(max_x, max_y)
