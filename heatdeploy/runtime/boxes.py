"""Person boxes for top-down models in a stream: a user's box file, tracking from the previous frame, and the
crops of one batch (a frame with several boxes is preprocessed once per box).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heatdeploy.errors import HeatdeployError
from heatdeploy.runtime.preprocess import BOX_PADDING
from heatdeploy.runtime.sources import Frame

_FORMAT = ('write {"frame name or index": [x1, y1, x2, y2]} (one person), [[x1, y1, x2, y2], ...] (several), '
           "[] (nobody) or null (the whole frame); or a list of those by frame index")


class BoxError(HeatdeployError, ValueError):
    """A boxes file that cannot be used; the message names it and the expected format."""


def full_frame_box(h: int, w: int) -> np.ndarray:
    """The box whose padded, aspect-fitted crop is exactly the letterboxed whole frame."""
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    hw, hh = w / 2.0 / BOX_PADDING, h / 2.0 / BOX_PADDING
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


def _parse(value: Any, where: str) -> np.ndarray | None:
    """None, one box ``[4]`` or several ``[M, 4]`` (M may be 0), checked finite and ordered."""
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is not None and arr.size == 0 and arr.ndim <= 2:  # [] or [[]]: nobody in this frame
        return arr.reshape(0, 4)
    if (arr is None or arr.shape[-1:] != (4,) or arr.ndim not in (1, 2) or not np.isfinite(arr).all()
            or (arr[..., 2:] < arr[..., :2]).any()):
        raise BoxError(f"{where} is {str(value)[:80]}; expected [x1, y1, x2, y2] with x2 >= x1, y2 >= y1, finite "
                       f"numbers; {_FORMAT}")
    return arr


class BoxFile:
    """``--boxes FILE``: the boxes of each frame, looked up by frame name, index or source file name."""

    def __init__(self, path: Path) -> None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise BoxError(f"{path}: not a readable boxes JSON ({str(exc)[:80]}); {_FORMAT}") from None
        if isinstance(data, list):
            data = {str(i): b for i, b in enumerate(data)}
        if not isinstance(data, dict):
            raise BoxError(f"{path}: expected a JSON object or list; {_FORMAT}")
        self.boxes = {str(k): _parse(v, f"{path}: box for {str(k)!r}") for k, v in data.items()}
        self.path = path

    def __call__(self, frame: Frame) -> np.ndarray | None:
        for key in (frame.name, str(frame.index), Path(frame.source).name):
            if key in self.boxes:
                return self.boxes[key]
        return None


def track_box(keypoints: np.ndarray, present: np.ndarray, min_present: float) -> np.ndarray | None:
    """The box around a frame's present keypoints, or None (use the full frame) when too few are present."""
    ok = np.asarray(present, bool) & np.isfinite(keypoints).all(axis=-1)
    if ok.sum() < max(2, int(np.ceil(min_present * len(ok)))):
        return None
    pts = keypoints[ok]
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)]).astype(np.float64)


@dataclass
class Crops:
    """What one batch of frames becomes: one image per crop, the crops' boxes, and crops per frame."""

    images: list[np.ndarray]
    boxes: np.ndarray | None  # [sum(counts), 4], or None: every frame whole (letterboxed)
    counts: list[int]  # crops of each frame (0: nobody in it, nothing to infer)
    several: list[bool]  # the frame's boxes came as a list of boxes: its record lists instances


def crops(frames: Sequence[Frame], boxes: Sequence[np.ndarray | None], always_boxes: bool) -> Crops:
    """Crops of ``frames`` given each frame's None / ``[4]`` / ``[M, 4]`` boxes (``always_boxes``: the model's
    resize is ``crop``, so a frame without boxes is cropped to its whole self)."""
    images: list[np.ndarray] = []
    rows: list[np.ndarray | None] = []
    counts, several = [], []
    for f, b in zip(frames, boxes, strict=True):
        many = b is not None and b.ndim == 2
        group: list[np.ndarray | None] = list(b) if many else [b]  # type: ignore[arg-type]
        images += [f.image] * len(group)
        rows += group
        counts.append(len(group))
        several.append(many)
    if all(r is None for r in rows) and not always_boxes:
        return Crops(images, None, counts, several)
    stacked = [full_frame_box(*img.shape[:2]) if r is None else r for img, r in zip(images, rows, strict=True)]
    return Crops(images, np.stack(stacked) if stacked else np.zeros((0, 4)), counts, several)


__all__ = ["BoxError", "BoxFile", "Crops", "crops", "full_frame_box", "track_box"]
