"""Draw predicted keypoints so that existence is visible: present points filled, absent ones crossed out.

Coordinates are drawn with sub-pixel precision (cv2's ``shift``), so a drawn dot sits where the
decoder put it, not up to half a pixel away.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from heatdeploy.runtime.preprocess import to_bgr8

# Distinct BGR colours; keypoint i always gets PALETTE[i % len(PALETTE)].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (75, 25, 230),
    (75, 180, 60),
    (25, 225, 255),
    (200, 130, 0),
    (48, 130, 245),
    (180, 30, 145),
    (240, 240, 70),
    (230, 50, 240),
    (60, 245, 210),
    (212, 190, 250),
    (128, 128, 0),
    (255, 190, 220),
    (40, 110, 170),
    (0, 0, 128),
    (195, 255, 170),
    (0, 128, 128),
    (180, 215, 255),
    (128, 0, 0),
)
ABSENT_COLOUR = (150, 150, 150)
_SHIFT = 4  # fractional bits for sub-pixel drawing
_ONE = 1 << _SHIFT
_FAR = 1e5  # px; coordinates beyond this are clipped before drawing
# Overlay label modes: none (default; 17+ labels make a face unreadable), names, scores (presence probability).
LABELS = ("none", "names", "scores")

Skeleton = Sequence[tuple[int, int]] | Sequence[Sequence[int]]


def keypoint_colour(index: int) -> tuple[int, int, int]:
    """The palette colour of keypoint ``index`` (consistent across images and runs)."""
    return PALETTE[index % len(PALETTE)]


def instance_skeleton(skeleton: Skeleton, k: int, m: int) -> tuple[tuple[int, int], ...]:
    """The skeleton of ``m`` instances drawn as one ``[M*K]`` point list."""
    return tuple((a + r * k, b + r * k) for r in range(m) for a, b in skeleton)


def draw_keypoints(
    image_bgr: np.ndarray,
    keypoints: np.ndarray,
    presence: np.ndarray,
    present: np.ndarray,
    skeleton: Skeleton = (),
    names: Sequence[str] | None = None,
    scores: np.ndarray | None = None,
    legend: bool = True,
    labels: str | None = None,
) -> np.ndarray:
    """Return a new BGR uint8 image with keypoints ``[K, 2]`` drawn; ``present [K]`` decides the style.

    Edges join present keypoints only; absent-but-predicted ones get a small grey hollow circle with
    an 'x'. ``labels``: ``none``, ``names`` (the keypoint name) or ``scores`` (presence probability);
    when not given, present points are labelled if ``names`` or ``scores`` is passed (name, presence, score).
    Multi-instance input (``[M, K, 2]``, ``[M, K]``) draws every instance some keypoint of is present.
    """
    if labels is not None and labels not in LABELS:
        raise ValueError(f"labels={labels!r}: choose one of {', '.join(LABELS)}")
    if np.ndim(keypoints) == 3:
        found = np.asarray(present, bool).any(axis=-1)
        m, k = int(found.sum()), np.shape(keypoints)[1]
        skeleton = instance_skeleton(skeleton, k, m)
        names = None if names is None else list(names) * m
        scores = None if scores is None else np.asarray(scores)[found].reshape(-1)
        keypoints, presence, present = (np.asarray(a)[found].reshape(m * k, *np.shape(a)[2:])
                                        for a in (keypoints, presence, present))
    canvas = to_bgr8(image_bgr).copy()
    kps, prob, flag = _check(keypoints, presence, present)
    finite = np.isfinite(kps).all(axis=1)
    kps = np.clip(np.nan_to_num(kps), -_FAR, _FAR)  # far-off points must not overflow cv2's int32
    radius, thickness = _sizes(canvas.shape[:2])
    _draw_edges(canvas, kps, flag & finite, skeleton, thickness)
    for i in np.flatnonzero(finite & ~flag):
        _draw_absent(canvas, kps[i], radius, thickness)
    for i in np.flatnonzero(finite & flag):
        cv2.circle(canvas, _fixed(kps[i]), radius * _ONE, keypoint_colour(int(i)), -1, cv2.LINE_AA, _SHIFT)
    if labels is None and (names is not None or scores is not None):
        _draw_labels(canvas, kps, prob, flag & finite, names, scores, radius)
    elif labels == "names":
        _draw_labels(canvas, kps, prob, flag & finite, names, None, radius, with_prob=False)
    elif labels == "scores":
        _draw_labels(canvas, kps, prob, flag & finite, None, None, radius, name=False)
    if legend:
        _draw_legend(canvas, f"present {int(flag.sum())}/{len(flag)}", radius)
    return canvas


def draw_batch(
    images: Sequence[np.ndarray],
    keypoints: np.ndarray,
    presence: np.ndarray,
    present: np.ndarray,
    skeleton: Skeleton = (),
    names: Sequence[str] | None = None,
    scores: np.ndarray | None = None,
    legend: bool = True,
) -> list[np.ndarray]:
    """``draw_keypoints`` for each image of a batch (``keypoints [N, K, 2]``, ``presence/present [N, K]``)."""
    if len(images) != len(keypoints):
        raise ValueError(f"draw_batch: {len(images)} images but keypoints for {len(keypoints)}")
    return [
        draw_keypoints(
            img,
            keypoints[n],
            presence[n],
            present[n],
            skeleton,
            names,
            None if scores is None else scores[n],
            legend,
        )
        for n, img in enumerate(images)
    ]


def _check(keypoints: np.ndarray, presence: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, ...]:
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.ndim != 2 or kps.shape[1] != 2:
        raise ValueError(f"keypoints: expected shape [K, 2], got {kps.shape}")
    prob = np.asarray(presence, dtype=np.float64).reshape(-1)
    flag = np.asarray(present, dtype=bool).reshape(-1)
    if prob.shape != (len(kps),) or flag.shape != (len(kps),):
        raise ValueError(
            f"presence and present: expected {len(kps)} values each, got {prob.shape[0]} and {flag.shape[0]}"
        )
    return kps, prob, flag


def _sizes(hw: tuple[int, ...]) -> tuple[int, int]:
    """Dot radius and line thickness that stay visible on a thumbnail and unobtrusive on a 4K frame."""
    side = max(hw[0], hw[1])
    return max(3, round(side / 120)), max(1, round(side / 400))


def _fixed(point: np.ndarray) -> tuple[int, int]:
    """Pixel-centre coordinates to cv2's fixed-point integers."""
    return int(round(point[0] * _ONE)), int(round(point[1] * _ONE))


def _draw_edges(
    canvas: np.ndarray, kps: np.ndarray, drawable: np.ndarray, skeleton: Skeleton, t: int
) -> None:
    for a, b in skeleton:
        if 0 <= a < len(kps) and 0 <= b < len(kps) and drawable[a] and drawable[b]:
            colour = tuple((np.add(keypoint_colour(a), keypoint_colour(b)) // 2).tolist())
            cv2.line(canvas, _fixed(kps[a]), _fixed(kps[b]), colour, t, cv2.LINE_AA, _SHIFT)


def _draw_absent(canvas: np.ndarray, point: np.ndarray, radius: int, t: int) -> None:
    """Grey hollow circle with an 'x': the model predicted a location but says the point is not there."""
    r = radius
    d = r * _ONE * 0.7
    x, y = point[0] * _ONE, point[1] * _ONE
    cv2.circle(canvas, _fixed(point), r * _ONE, ABSENT_COLOUR, t, cv2.LINE_AA, _SHIFT)
    for sx in (-1, 1):
        p0 = (int(round(x - sx * d)), int(round(y - d)))
        p1 = (int(round(x + sx * d)), int(round(y + d)))
        cv2.line(canvas, p0, p1, ABSENT_COLOUR, t, cv2.LINE_AA, _SHIFT)


def _draw_labels(
    canvas: np.ndarray,
    kps: np.ndarray,
    prob: np.ndarray,
    drawable: np.ndarray,
    names: Sequence[str] | None,
    scores: np.ndarray | None,
    radius: int,
    name: bool = True,
    with_prob: bool = True,
) -> None:
    font_scale = max(0.3, radius / 8)
    for i in np.flatnonzero(drawable):
        parts = [str(names[i]) if names is not None and len(names) > i else str(i)] if name else []
        parts += [f"{prob[i]:.2f}"] if with_prob else []
        text = " ".join(parts)
        if scores is not None:
            text += f" s{float(scores[i]):.2f}"
        org = (int(kps[i, 0]) + radius + 1, int(kps[i, 1]) - radius - 1)
        _outlined_text(canvas, text, org, font_scale, keypoint_colour(int(i)))


def _draw_legend(canvas: np.ndarray, text: str, radius: int) -> None:
    font_scale = max(0.4, radius / 6)
    thick = max(1, round(font_scale * 0.8))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
    pad = max(2, radius // 2)
    cv2.rectangle(canvas, (0, 0), (w + 2 * pad, h + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(
        canvas,
        text,
        (pad, pad + h),
        cv2.FONT_HERSHEY_SIMPLEX,
        font_scale,
        (255, 255, 255),
        thick,
        cv2.LINE_AA,
    )


def _outlined_text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: tuple) -> None:
    """Dark outline under coloured text keeps labels legible on any background."""
    thick = max(1, round(scale * 1.5))
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 1, cv2.LINE_AA)
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
