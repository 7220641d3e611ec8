"""A synthetic keypoint data set: articulated figures drawn over real photographs.

Photographs come from scikit-image (shipped in the package, no download). Each sample has
COCO-17 keypoints with two labels: ``present`` (inside the frame: the existence target) and
``visible`` (present and not hidden by an occluder). Blur, scale, rotation, occlusion and
figures leaving the frame make it hard enough that INT8 damage shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from heatdeploy.models.skeleton import KEYPOINTS

K = len(KEYPOINTS)
_PHOTOS = ("astronaut", "cat", "chelsea", "coffee", "rocket", "immunohistochemistry",
           "hubble_deep_field", "retina", "colorwheel")
_GREY = ("camera", "coins", "horse", "moon", "page", "text", "grass", "gravel", "brick", "clock")

# Limb colours (BGR); left and right differ so the figure's sides can be told apart.
_LIMB = {
    "l_upper_arm": (0, 140, 255), "l_forearm": (0, 230, 255),
    "r_upper_arm": (255, 90, 0), "r_forearm": (255, 230, 0),
    "l_thigh": (40, 180, 40), "l_shin": (150, 255, 120),
    "r_thigh": (160, 0, 160), "r_shin": (230, 130, 255),
}


@dataclass
class Sample:
    image: np.ndarray  # HxWx3 BGR uint8
    keypoints: np.ndarray  # [K,2] float32 pixel coordinates (pixel centres at integers)
    present: np.ndarray  # [K] bool, inside the frame
    visible: np.ndarray  # [K] bool, present and not occluded


@lru_cache(maxsize=1)
def _backgrounds() -> tuple[np.ndarray, ...]:
    """Real photographs as BGR uint8; grey ones get a random-free fixed tint for variety."""
    import skimage.data as data

    out = []
    for name in _PHOTOS:
        img = getattr(data, name)()
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[..., :3]
        out.append(np.ascontiguousarray(img[..., ::-1]))
    tints = np.array([[1.0, 0.9, 0.8], [0.8, 0.95, 1.0], [0.9, 1.0, 0.85]])
    for i, name in enumerate(_GREY):
        g = getattr(data, name)().astype(np.float32)
        out.append(np.clip(g[..., None] * tints[i % 3], 0, 255).astype(np.uint8))
    return tuple(out)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    bgs = _backgrounds()
    img = bgs[rng.integers(len(bgs))]
    ih, iw = img.shape[:2]
    scale = rng.uniform(0.35, 1.0)
    ch = max(16, int(ih * scale))
    cw = max(16, min(iw, int(ch * w / h)))
    ch = min(ih, ch)
    y0 = rng.integers(0, ih - ch + 1)
    x0 = rng.integers(0, iw - cw + 1)
    crop = cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    gain = rng.uniform(0.6, 1.3, size=3)
    return np.clip(crop.astype(np.float32) * gain + rng.uniform(-30, 30), 0, 255).astype(np.uint8)


def _rot(a: np.ndarray) -> np.ndarray:
    """Unit vectors pointing 'down' rotated by angle a (radians), shape [..., 2]."""
    return np.stack([np.sin(a), np.cos(a)], axis=-1)


def _pose(rng: np.random.Generator) -> np.ndarray:
    """Keypoints [K,2] in body units (height ~1), neck at the origin, y down, facing the viewer."""
    p = np.zeros((K, 2))
    yaw = rng.uniform(-1, 1)
    head = np.array([0.0, -0.11])
    p[0] = head + [0.028 * yaw, 0.012]
    p[1] = head + [0.026 + 0.022 * yaw, -0.014]  # subject's left appears on image right
    p[2] = head + [-0.026 + 0.022 * yaw, -0.014]
    p[3] = head + [0.058 + 0.008 * yaw, -0.002]
    p[4] = head + [-0.058 + 0.008 * yaw, -0.002]
    sh = rng.uniform(0.09, 0.13)
    hip = rng.uniform(0.06, 0.09)
    torso = rng.uniform(0.27, 0.33)
    p[5], p[6] = [sh, 0.02], [-sh, 0.02]
    p[11], p[12] = [hip, torso], [-hip, torso]
    upper, fore = rng.uniform(0.13, 0.17), rng.uniform(0.12, 0.15)
    thigh, shin = rng.uniform(0.19, 0.24), rng.uniform(0.18, 0.23)
    # arms: angle from straight down, outward positive per side; elbows bend freely
    a_sh = rng.uniform(-0.6, 2.6, size=2) * np.array([1, -1])
    a_el = a_sh + rng.uniform(-2.2, 2.2, size=2)
    p[[7, 8]] = p[[5, 6]] + upper * _rot(a_sh)
    p[[9, 10]] = p[[7, 8]] + fore * _rot(a_el)
    a_hip = rng.uniform(-0.35, 1.1, size=2) * np.array([1, -1])
    a_knee = a_hip + rng.uniform(-1.6, 0.3, size=2) * np.array([1, -1])
    p[[13, 14]] = p[[11, 12]] + thigh * _rot(a_hip)
    p[[15, 16]] = p[[13, 14]] + shin * _rot(a_knee)
    return p


def _jitter(rng: np.random.Generator, color: tuple[int, int, int]) -> tuple[int, int, int]:
    c = np.clip(np.array(color) + rng.integers(-25, 26, size=3), 0, 255)
    return tuple(int(v) for v in c)


def _draw_figure(img: np.ndarray, kp: np.ndarray, unit: float, rng: np.random.Generator) -> None:
    """Draw torso, limbs and a face on img in place; kp in pixels, unit = pixels per body unit."""
    sub = 16  # cv2 shift bits for sub-pixel accurate drawing
    P = np.round(kp * sub).astype(np.int32)
    limb_w = max(2, int(unit * rng.uniform(0.03, 0.045)))
    cloth = _jitter(rng, tuple(int(v) for v in rng.integers(40, 220, size=3)))
    cv2.fillPoly(img, [P[[5, 6, 12, 11]]], cloth, cv2.LINE_AA, shift=4)
    limbs = [("l_thigh", 11, 13), ("l_shin", 13, 15), ("r_thigh", 12, 14), ("r_shin", 14, 16),
             ("l_upper_arm", 5, 7), ("l_forearm", 7, 9), ("r_upper_arm", 6, 8), ("r_forearm", 8, 10)]
    order = rng.permutation(len(limbs))
    for i in order:
        name, a, b = limbs[i]
        w = int(limb_w * (1.3 if "thigh" in name or "shin" in name else 1.0))
        cv2.line(img, tuple(P[a]), tuple(P[b]), _jitter(rng, _LIMB[name]), w, cv2.LINE_AA, shift=4)
    neck = np.round(((kp[5] + kp[6]) / 2) * sub).astype(np.int32)
    skin = _jitter(rng, ((140, 180, 230), (80, 120, 170), (60, 80, 110), (170, 200, 240))[rng.integers(4)])
    head_c = (kp[1] + kp[2]) / 2 + [0, 0.015 * unit]
    cv2.line(img, tuple(neck), tuple(np.round(head_c * sub).astype(np.int32)), skin, limb_w, cv2.LINE_AA,
             shift=4)
    for j in (3, 4):
        cv2.circle(img, tuple(P[j]), int(0.018 * unit * sub), _jitter(rng, (60, 60, 200)), -1, cv2.LINE_AA,
                   shift=4)
    axes = (int(0.052 * unit * sub), int(0.066 * unit * sub))
    cv2.ellipse(img, tuple(np.round(head_c * sub).astype(np.int32)), axes, 0, 0, 360, skin, -1,
                cv2.LINE_AA, shift=4)
    for j, col in ((1, (255, 255, 255)), (2, (255, 255, 255))):
        cv2.circle(img, tuple(P[j]), int(0.012 * unit * sub), col, -1, cv2.LINE_AA, shift=4)
        cv2.circle(img, tuple(P[j]), int(0.006 * unit * sub), (20, 20, 20), -1, cv2.LINE_AA, shift=4)
    cv2.circle(img, tuple(P[0]), int(0.009 * unit * sub), (40, 40, 160), -1, cv2.LINE_AA, shift=4)


def _occlude(img: np.ndarray, rng: np.random.Generator, kp: np.ndarray) -> np.ndarray:
    """Paste 1-2 occluders from another photograph; return a [K] mask of keypoints they hide."""
    h, w = img.shape[:2]
    hidden = np.zeros(K, bool)
    patch = _background(rng, h, w)
    for _ in range(rng.integers(1, 3)):
        mask = np.zeros((h, w), np.uint8)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ax, ay = rng.uniform(0.08, 0.25) * w, rng.uniform(0.06, 0.2) * h
        if rng.random() < 0.5:
            cv2.rectangle(mask, (int(cx - ax), int(cy - ay)), (int(cx + ax), int(cy + ay)), 255, -1)
        else:
            cv2.ellipse(mask, (int(cx), int(cy)), (int(ax), int(ay)), float(rng.uniform(0, 180)), 0, 360, 255,
                        -1)
        img[mask > 0] = patch[mask > 0]
        xi = np.clip(np.round(kp[:, 0]).astype(int), 0, w - 1)
        yi = np.clip(np.round(kp[:, 1]).astype(int), 0, h - 1)
        hidden |= mask[yi, xi] > 0
    return hidden


def render_sample(rng: np.random.Generator, height: int = 256, width: int = 192) -> Sample:
    """One image with one figure; the figure may be partly outside the frame."""
    img = _background(rng, height, width)
    body = _pose(rng)
    unit = height * rng.uniform(0.55, 0.95)  # pixels per body unit
    ang = rng.uniform(-0.6, 0.6) if rng.random() < 0.8 else rng.uniform(-np.pi, np.pi)
    c, s = np.cos(ang), np.sin(ang)
    centre_body = np.array([0.0, 0.2])
    pts = (body - centre_body) @ np.array([[c, s], [-s, c]]) * unit
    shift = np.array([width, height]) * (0.5 + rng.uniform(-0.3, 0.3, size=2))
    if rng.random() < 0.25:  # push the figure partly out of the frame: existence negatives
        shift += rng.choice([-1, 1], size=2) * rng.uniform(0.2, 0.45, size=2) * [width, height]
    kp = pts + shift
    _draw_figure(img, kp, unit, rng)
    present = (kp[:, 0] >= 0) & (kp[:, 0] <= width - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= height - 1)
    hidden = _occlude(img, rng, kp) if rng.random() < 0.4 else np.zeros(K, bool)
    if rng.random() < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.8))
    if rng.random() < 0.5:
        noise = rng.normal(0, rng.uniform(2, 10), img.shape)
        img = np.clip(img + noise, 0, 255).astype(np.uint8)
    return Sample(img, kp.astype(np.float32), present, present & ~hidden)


def render_batch(rng: np.random.Generator, n: int, height: int = 256,
                 width: int = 192) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n samples stacked: images [n,H,W,3] BGR, keypoints [n,K,2], present [n,K], visible [n,K]."""
    samples = [render_sample(rng, height, width) for _ in range(n)]
    return (np.stack([s.image for s in samples]), np.stack([s.keypoints for s in samples]),
            np.stack([s.present for s in samples]), np.stack([s.visible for s in samples]))
