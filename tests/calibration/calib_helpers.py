"""Test helpers: a tiny heatmap + existence ONNX model (3 convs + deconv + sigmoid head + pooled existence
head, 64x48) built with onnx.helper and seeded weights, and smooth random images, so calibration tests run
in about a second on two cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from heatdeploy.spec import ModelSpec

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:  # the shared tiny model lives in tests/
    sys.path.insert(0, str(_TESTS))
from tiny_onnx import H, K, W, build_tiny_onnx  # noqa: E402
from tiny_onnx import tiny_spec as _tiny_spec  # noqa: E402

__all__ = ["H", "K", "W", "build_tiny_model", "tiny_spec", "write_images"]


def tiny_spec() -> ModelSpec:
    return _tiny_spec("tiny-calib")


def build_tiny_model(path: Path, seed: int = 0, batch: int | str = "N") -> Path:
    """image [N,3,64,48] -> heatmaps [N,3,16,12] (sigmoid) and existence logits [N,3] (one Gemm)."""
    return build_tiny_onnx(path, seed, batch)


def write_images(folder: Path, n: int, seed: int = 0, ext: str = ".png") -> list[Path]:
    """Smooth random colour images of assorted sizes (blobs on gradients), so activations vary."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(40, 90)), int(rng.integers(30, 70))
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.zeros((h, w, 3), np.float32)
        for c in range(3):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            img[..., c] = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(4, 20) ** 2))
        img += (rng.uniform(0, 60) * xx / w)[..., None]
        p = folder / f"img_{i:03d}{ext}"
        cv2.imwrite(str(p), np.clip(img, 0, 255).astype(np.uint8))
        paths.append(p)
    return paths
