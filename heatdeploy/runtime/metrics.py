"""Keypoint task metrics (pure numpy): PCK, displacement, existence agreement."""

from __future__ import annotations

import numpy as np


def diagonal(image_sizes: np.ndarray) -> np.ndarray:
    """Image diagonal in pixels per image from [N,2] (h, w) sizes: the PCK normaliser."""
    sizes = np.asarray(image_sizes, dtype=np.float64)
    return np.hypot(sizes[:, 0], sizes[:, 1])


def displacement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between two [N,K,2] keypoint sets -> [N,K]."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)


def pck(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, norm: np.ndarray,
        alpha: float = 0.05) -> float:
    """Share of masked keypoints within alpha * norm (per image) of the truth; nan if none masked."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return float("nan")
    ok = displacement(pred, truth) <= alpha * np.asarray(norm, np.float64)[:, None]
    return float(ok[mask].mean())


def existence_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Share of keypoint presence decisions that match the truth (or another model's decisions)."""
    return float((np.asarray(predicted, bool) == np.asarray(truth, bool)).mean())


def keypoint_report(pred: np.ndarray, present_pred: np.ndarray, truth: np.ndarray, present: np.ndarray,
                    visible: np.ndarray, image_sizes: np.ndarray, alpha: float = 0.05) -> dict[str, float]:
    """The accuracy figures quoted for a model against ground truth."""
    norm = diagonal(image_sizes)
    d = displacement(pred, truth)
    vis = np.asarray(visible, bool)
    return {
        f"pck@{alpha:g}_visible": pck(pred, truth, vis, norm, alpha),
        f"pck@{alpha:g}_present": pck(pred, truth, present, norm, alpha),
        "mean_error_px_visible": float(d[vis].mean()) if vis.any() else float("nan"),
        "existence_accuracy": existence_accuracy(present_pred, present),
        "keypoints_visible": int(vis.sum()),
        "keypoints_present": int(np.asarray(present, bool).sum()),
        "keypoints_total": int(np.asarray(present).size),
    }
