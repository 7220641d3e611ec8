"""Charts for the reports, drawn with OpenCV into PNGs (embedded as base64): no plotting library, no network.

Bars for histograms and per-keypoint figures, and a scatter for latency-vs-error points (the INT8 search's
Pareto front).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import cv2
import numpy as np

# BGR colours. FP32 green and candidate magenta stay distinguishable for red-green colour blindness.
REF_COLOUR = (60, 170, 40)
CAND_COLOUR = (200, 40, 220)
LINK_COLOUR = (0, 215, 255)
LOST_COLOUR = (40, 40, 230)
GAINED_COLOUR = (0, 140, 255)
BAR_COLOUR = (190, 120, 40)
_INK = (50, 50, 50)
_GRID = (225, 225, 225)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def png_data_uri(image: np.ndarray) -> str:
    """BGR uint8 image -> ``data:image/png;base64,...`` for an <img> that needs no file beside the page."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.4, colour: tuple = _INK,
          align: str = "left") -> None:
    (w, _), _ = cv2.getTextSize(text, _FONT, scale, 1)
    x = org[0] - (w if align == "right" else w // 2 if align == "center" else 0)
    cv2.putText(img, text, (int(x), int(org[1])), _FONT, scale, colour, 1, cv2.LINE_AA)


def _nice(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v:.3g}"


def _count(v: float) -> str:
    """Axis label for a count: 12, 3.4k, 1.2M."""
    if v >= 1e6:
        return f"{v / 1e6:.3g}M"
    if v >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def vbar_chart(values: Sequence[float], labels: Sequence[str], title: str, xlabel: str,
               colour: tuple[int, int, int] = BAR_COLOUR, width: int = 640, height: int = 260,
               label_every: int = 1) -> np.ndarray:
    """Vertical bars (a histogram when ``labels`` are bin edges) with a linear count axis."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 48, 12, 28, 44
    pw, ph = width - left - right, height - top - bottom
    vals = np.nan_to_num(np.asarray(values, np.float64), nan=0.0, posinf=0.0)
    vmax = float(vals.max()) if vals.size and vals.max() > 0 else 1.0
    _text(img, title, (width // 2, 18), 0.5, align="center")
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + ph - int(round(frac * ph))
        cv2.line(img, (left, y), (left + pw, y), _GRID, 1)
        _text(img, _count(frac * vmax), (left - 4, y + 4), 0.35, align="right")
    n = max(len(vals), 1)
    bw = pw / n
    for i, v in enumerate(vals):  # drawing, one rectangle per bar
        h = int(round(v / vmax * ph))
        x0 = left + int(round(i * bw)) + 1
        x1 = left + int(round((i + 1) * bw)) - 1
        if h > 0:
            cv2.rectangle(img, (x0, top + ph - h), (max(x0, x1), top + ph), colour, -1)
    last = min(len(labels), len(vals)) - 1
    for i, lab in enumerate(labels[:len(vals)]):  # a tick at each labelled bar's left edge
        if lab and (i % max(label_every, 1) == 0 or i == last):
            x = left + int(round(i * bw))
            cv2.line(img, (x, top + ph), (x, top + ph + 3), _INK, 1)
            _text(img, lab, (x, top + ph + 15), 0.33, align="center")
    cv2.line(img, (left, top), (left, top + ph), _INK, 1)
    cv2.line(img, (left, top + ph), (left + pw, top + ph), _INK, 1)
    _text(img, xlabel, (left + pw // 2, height - 8), 0.4, align="center")
    return img


def hbar_chart(names: Sequence[str], series: Sequence[tuple[np.ndarray, tuple[int, int, int], str]],
               title: str, limit: float | None = None, limit_label: str = "", width: int = 460,
               row: int = 18) -> np.ndarray:
    """Horizontal bars per keypoint; several series are stacked (e.g. flips lost + gained)."""
    k = len(names)
    left, right, top, bottom = 110, 56, 44, 12
    height = top + bottom + row * max(k, 1)
    img = np.full((height, width, 3), 255, np.uint8)
    pw = width - left - right
    stack = np.zeros(k)
    arrays = [np.nan_to_num(np.asarray(v, np.float64), nan=0.0, posinf=0.0) for v, _, _ in series]
    total = np.sum(arrays, axis=0) if arrays else np.zeros(k)
    vmax = max(float(total.max()) if k else 0.0, limit or 0.0)
    vmax = vmax * 1.05 if vmax > 0 else 1.0
    _text(img, title, (width // 2, 16), 0.45, align="center")
    x_leg = left
    for _, colour, label in series:
        if label:
            cv2.rectangle(img, (x_leg, 24), (x_leg + 10, 34), colour, -1)
            _text(img, label, (x_leg + 14, 33), 0.35)
            x_leg += 24 + cv2.getTextSize(label, _FONT, 0.35, 1)[0][0]
    for arr, (_, colour, _) in zip(arrays, series, strict=True):
        for j in np.flatnonzero(arr > 0):  # drawing, one rectangle per bar
            y = top + j * row
            x0 = left + int(round(stack[j] / vmax * pw))
            x1 = left + int(round((stack[j] + arr[j]) / vmax * pw))
            cv2.rectangle(img, (x0, y + 3), (max(x1, x0 + 1), y + row - 3), colour, -1)
        stack += arr
    raw_total = np.sum([np.asarray(v, np.float64) for v, _, _ in series], axis=0) if series else np.zeros(k)
    for j, name in enumerate(names):
        y = top + j * row + row - 5
        _text(img, name[:16], (left - 6, y), 0.36, align="right")
        v = raw_total[j]
        _text(img, "n/a" if np.isnan(v) else _nice(float(v)),
              (left + int(round(min(total[j], vmax) / vmax * pw)) + 4, y), 0.33)
    cv2.line(img, (left, top), (left, top + row * k), _INK, 1)
    if limit is not None and limit > 0:
        x = left + int(round(limit / vmax * pw))
        for y in range(top, top + row * k, 6):  # dashed
            cv2.line(img, (x, y), (x, min(y + 3, top + row * k)), LOST_COLOUR, 1)
        _text(img, limit_label or _nice(limit), (x, top - 2), 0.33, LOST_COLOUR, align="center")
    return img


def scatter_chart(points: Sequence[tuple[float, float, str, tuple[int, int, int], bool]], title: str,
                  xlabel: str, ylabel: str, hline: float | None = None, hline_label: str = "",
                  width: int = 640, height: int = 320) -> np.ndarray:
    """Labelled points ``(x, y, label, colour, filled)`` on linear axes from 0, with an optional dashed limit."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 56, 16, 30, 44
    pw, ph = width - left - right, height - top - bottom
    xs = np.array([p[0] for p in points], np.float64) if points else np.zeros(1)
    ys = np.array([p[1] for p in points], np.float64) if points else np.zeros(1)
    finite = np.isfinite(xs) & np.isfinite(ys)
    xmax = float(xs[finite].max()) * 1.08 if finite.any() and xs[finite].max() > 0 else 1.0
    ymax = max(float(ys[finite].max()) if finite.any() else 0.0, hline or 0.0) * 1.1 or 1.0
    _text(img, title, (width // 2, 18), 0.5, align="center")
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + ph - int(round(frac * ph))
        x = left + int(round(frac * pw))
        cv2.line(img, (left, y), (left + pw, y), _GRID, 1)
        _text(img, _nice(frac * ymax), (left - 4, y + 4), 0.35, align="right")
        _text(img, _nice(frac * xmax), (x, top + ph + 15), 0.33, align="center")
    if hline is not None and hline > 0:
        y = top + ph - int(round(hline / ymax * ph))
        for x in range(left, left + pw, 8):  # dashed
            cv2.line(img, (x, y), (min(x + 4, left + pw), y), LOST_COLOUR, 1)
        _text(img, hline_label or _nice(hline), (left + pw - 2, y - 4), 0.33, LOST_COLOUR, align="right")
    for (x, y, label, colour, filled), ok in zip(points, finite, strict=True):  # drawing, one marker each
        if not ok:
            continue
        c = (left + int(round(x / xmax * pw)), top + ph - int(round(min(y, ymax) / ymax * ph)))
        cv2.circle(img, c, 5, colour, -1 if filled else 2, cv2.LINE_AA)
        if label:
            _text(img, label, (c[0] + 7, c[1] - 5), 0.33)
    cv2.line(img, (left, top), (left, top + ph), _INK, 1)
    cv2.line(img, (left, top + ph), (left + pw, top + ph), _INK, 1)
    _text(img, xlabel, (left + pw // 2, height - 8), 0.4, align="center")
    _text(img, ylabel, (8, top - 10), 0.36)
    return img
