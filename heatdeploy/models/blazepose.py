"""A real trained pose model for tests and measurements: MediaPipe's BlazePose GHUM full landmark model.

``pose_landmark_full.tflite`` (6.4 MB, Apache-2.0) ships inside the ``mediapipe==0.10.14`` wheel on PyPI.
:func:`fetch_blazepose` downloads that wheel with pip (any host Python: the platform is pinned, nothing is
installed), reads the one member out of it, checks a pinned sha256 and caches the file. It is the kind of
model users ship: NHWC, depthwise-heavy, fp16 weights, several heads in one graph.

Facts read from the model with OpenVINO (``openvino.convert_model`` on the .tflite):

- input ``input_1`` ``[1,256,256,3]`` float32, RGB in [0, 1] (a person crop, letterboxed with black);
- ``Identity`` ``[1,195]``: 39 landmarks x (x, y, z, visibility, presence), x/y in input pixels,
  visibility and presence as logits; 33 body points then 6 auxiliary ones;
- ``Identity_1`` ``[1,1]``: pose presence, a probability (the graph ends in a Sigmoid);
- ``Identity_2`` ``[1,256,256,1]``: segmentation logits;
- ``Identity_3`` ``[1,64,64,39]``: keypoint heatmaps (NHWC, stride 4), logits (no activation in the graph);
- ``Identity_4`` ``[1,117]``: world landmarks (39 x 3, metres).

:func:`blazepose_images` builds real frames for calibration and evaluation from scikit-image's sample
images: seeded augmentations of the two with people in them, plus ~20% frames without a person, so the
presence flag sees both classes. Measured with OpenVINO f32 on ``blazepose_images(200, seed=0)``: on the 160
person frames the flag averages 0.92 (96% above 0.5); on the 40 others 0.03 (all below 0.5, the highest 0.498).
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from heatdeploy.exporters.sources import SourceError
from heatdeploy.fsutil import atomic_write_bytes, cache_dir, sha256_file
from heatdeploy.models.fetch_tool import run_fetch_tool

if TYPE_CHECKING:
    from heatdeploy.spec import ModelSpec

WHEEL = "mediapipe==0.10.14"
MEMBER = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
FILENAME = "pose_landmark_full.tflite"
SHA256 = "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"
SIZE = 6_440_512
PIP_TIMEOUT_S = 600

INPUT = "input_1"
LANDMARKS = "Identity"  # [1,195]
PRESENCE = "Identity_1"  # [1,1] probability
SEGMENTATION = "Identity_2"  # [1,256,256,1] logits
HEATMAP = "Identity_3"  # [1,64,64,39] logits
WORLD = "Identity_4"  # [1,117]
SIZE_PX = 256
FIELDS = ("x", "y", "z", "visibility", "presence")

BODY_KEYPOINTS = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
AUX_KEYPOINTS = tuple(f"aux_{i}" for i in range(6))  # MediaPipe's ROI helpers (33, 34) and 4 unnamed ones
KEYPOINTS = BODY_KEYPOINTS + AUX_KEYPOINTS
SKELETON = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13), (13, 15),
    (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20),
    (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28), (27, 29), (28, 30), (29, 31),
    (30, 32), (27, 31), (28, 32),
)

# scikit-image sample images with a person, and without one: those whose augmented frames (30 each) kept the
# presence flag below 0.5 (coffee, colorwheel, text, clock, logo and grass reach 0.8-0.99 and are left out).
PERSON_IMAGES = ("astronaut", "camera")
# The person's crop in each (centre x, centre y, side; source px): started from MediaPipe's own ROI rule (a square
# around the hip centre, landmark 33, 2.5x its distance to the top point 34, iterated), the camera one tightened
# (side 520 -> 460) where the jittered crops kept the presence flag above 0.5 on all of 24 frames.
PERSON_ROI = {"astronaut": (190.0, 340.0, 650.0), "camera": (230.0, 300.0, 460.0)}
OTHER_IMAGES = ("chelsea", "rocket", "coins", "hubble_deep_field", "immunohistochemistry", "moon", "brick", "cell",
                "horse")


class BlazePoseError(SourceError):
    """The model could not be fetched or checked; the one-line message says why and what to do."""


# --- the model file ------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$HEATDEPLOY_CACHE/models``, else ``$XDG_CACHE_HOME/heatdeploy/models`` or ``~/.cache/heatdeploy/models``."""
    return cache_dir("models")


def fetch_blazepose(dest_dir: str | Path | None = None) -> Path:
    """Path of ``pose_landmark_full.tflite`` in ``dest_dir`` (default :func:`default_cache_dir`).

    A cached file whose sha256 matches is reused; otherwise pip downloads the mediapipe wheel (no install,
    no dependencies) into a temporary folder, the one member is read from it by its fixed name, its sha256
    is checked and it is written atomically. Raises BlazePoseError when pip cannot fetch it.
    """
    folder = Path(dest_dir).expanduser() if dest_dir is not None else default_cache_dir()
    target = folder / FILENAME
    if target.is_file() and sha256_file(target) == SHA256:
        return target
    with tempfile.TemporaryDirectory(prefix="heatdeploy-mediapipe-") as tmp:
        data = _member_from_wheel(_download_wheel(Path(tmp), folder))
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise BlazePoseError(f"{WHEEL}: {MEMBER} has sha256 {digest[:12]}…, expected {SHA256[:12]}…; the wheel "
                             "on the index is not the one this heatdeploy pins: report it, do not use the file")
    atomic_write_bytes(target, data)
    return target


def _download_wheel(tmp: Path, folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--only-binary=:all:",
           "--python-version", "3.11", "--platform", "manylinux_2_17_x86_64", "-d", str(tmp),
           "--disable-pip-version-check", "--quiet"]
    fix = (f"check access to PyPI (pip config / proxy), or put {FILENAME} (sha256 {SHA256[:12]}…, from the "
           f"{WHEEL} wheel) into {folder}")
    run_fetch_tool(cmd, label=WHEEL, tool="pip", thing="the wheel", fix=fix, error=BlazePoseError,
                   timeout=PIP_TIMEOUT_S)
    wheels = sorted(tmp.glob("mediapipe-0.10.14-*.whl"))
    if len(wheels) != 1:
        raise BlazePoseError(f"{WHEEL}: pip reported success but left {len(wheels)} mediapipe wheel(s); {fix}")
    return wheels[0]


def _member_from_wheel(wheel: Path) -> bytes:
    """The model's bytes, read by its fixed member name (no name from the archive becomes a path)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(MEMBER)
            if info.file_size != SIZE:
                raise BlazePoseError(f"{wheel.name}: {MEMBER} is {info.file_size} bytes, expected {SIZE}; "
                                     "the wheel is not the pinned one")
            return zf.read(info)
    except KeyError:
        raise BlazePoseError(f"{wheel.name}: has no {MEMBER}; the wheel is not the pinned one") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise BlazePoseError(f"{wheel.name}: not a readable wheel ({exc}); clear pip's cache "
                             "(pip cache remove mediapipe) and retry") from None


# --- the spec ------------------------------------------------------------------------------------


def landmarks_supported() -> bool:
    """Whether this heatdeploy's ModelSpec has the ``landmarks`` section."""
    from heatdeploy.spec import ModelSpec

    return "landmarks" in {f.name for f in fields(ModelSpec)}


def blazepose_spec_dict(landmarks: bool | None = None) -> dict[str, Any]:
    """The ModelSpec of pose_landmark_full.tflite as a dict (JSON-ready).

    ``landmarks``: include the ``landmarks`` section (the regressed 195-vector, refined by the heatmap);
    None includes it when this heatdeploy's ModelSpec knows the field. Without it the spec decodes the
    heatmap alone.
    """
    if landmarks is None:
        landmarks = landmarks_supported()
    d: dict[str, Any] = {
        "name": "mediapipe-blazepose-ghum-full",
        "keypoints": list(KEYPOINTS),
        "skeleton": [list(e) for e in SKELETON],
        "input": {"name": INPUT, "layout": "NHWC", "height": SIZE_PX, "width": SIZE_PX, "channels": 3,
                  "color": "RGB", "scale": 1.0 / 255.0, "mean": [0.0], "std": [1.0], "resize": "letterbox",
                  "pad_value": 0},
        # Alignment, measured on 160 person frames (1952 points with a heatmap peak >= 0.5): the heatmap's
        # weighted mean lands 2.73 px from the regressed landmark with "udp" (c * 255/63 px), 3.09 px with
        # "center" ((c + 0.5) * 4 - 0.5) and 2.98 px with MediaPipe's own c * 4 (RefineLandmarksFromHeatmap).
        "heatmap": {"name": HEATMAP, "layout": "NHWC", "stride": 4, "activation": "logits", "align": "udp"},
        "existence": {"name": PRESENCE, "per": "instance", "activation": "probabilities", "threshold": 0.5},
        "decoder": {"name": "dark", "sigma": 2.0},
    }
    if landmarks:
        d["landmarks"] = {"name": LANDMARKS, "fields": list(FIELDS), "coords": "pixels", "refine_kernel": 7,
                          "refine_min_score": 0.5}
    return d


def blazepose_spec(landmarks: bool | None = None) -> ModelSpec:
    """The ModelSpec (validated) of pose_landmark_full.tflite; see :func:`blazepose_spec_dict`."""
    from heatdeploy.spec import ModelSpec

    return ModelSpec.from_dict(blazepose_spec_dict(landmarks), "blazepose spec")


# --- real frames ---------------------------------------------------------------------------------


def blazepose_images(n: int, seed: int = 0, *, other_fraction: float = 0.2,
                     size: int = SIZE_PX) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` BGR uint8 frames ``[size, size, 3]`` and a bool array: does the frame show a person.

    Person frames are seeded augmentations (crop, scale, flip, rotation up to 12°, brightness and contrast)
    of scikit-image's ``astronaut`` and ``camera``; ``round(n * other_fraction)`` frames (at least one when
    n >= 2) are the same augmentations of images without a person. The order is shuffled by the seed.
    Needs scikit-image (the ``export`` extra).
    """
    import cv2

    if n < 1:
        raise ValueError(f"blazepose_images: n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    n_other = int(round(n * other_fraction))
    if n >= 2 and other_fraction > 0:
        n_other = max(n_other, 1)
    n_other = min(n_other, n - 1) if n > 1 else 0
    person = np.array([True] * (n - n_other) + [False] * n_other)
    rng.shuffle(person)
    sources = {name: _sample_image(name) for name in PERSON_IMAGES + OTHER_IMAGES}
    frames = []
    for i, is_person in enumerate(person):
        pool = PERSON_IMAGES if is_person else OTHER_IMAGES
        name = pool[i % len(pool)] if is_person else pool[int(rng.integers(len(pool)))]
        frames.append(_augment(sources[name], PERSON_ROI.get(name), rng, size, cv2))
    return frames, person


def write_blazepose_images(folder: str | Path, n: int, seed: int = 0, **kw: Any) -> list[Path]:
    """:func:`blazepose_images` as PNG files in ``folder`` (``person_0000.png`` / ``other_0001.png``), for
    ``--calib FOLDER``; each file written atomically."""
    import cv2

    folder = Path(folder)
    frames, person = blazepose_images(n, seed, **kw)
    paths = []
    for i, (img, p) in enumerate(zip(frames, person, strict=True)):
        ok, buf = cv2.imencode(".png", img)
        if not ok:
            raise RuntimeError("cv2.imencode failed on a generated frame")
        path = folder / f"{'person' if p else 'other'}_{i:04d}.png"
        atomic_write_bytes(path, buf.tobytes())
        paths.append(path)
    return paths


def _sample_image(name: str) -> np.ndarray:
    """A scikit-image sample as BGR uint8 (grey and RGBA converted)."""
    import cv2

    try:
        from skimage import data
    except ImportError:
        raise SourceError("blazepose_images needs scikit-image: pip install 'heatdeploy[export]'") from None
    img = np.asarray(getattr(data, name)())
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8) if img.dtype.kind == "f" else img.astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2BGR)


def _augment(img: np.ndarray, roi: tuple[float, float, float] | None, rng: np.random.Generator, size: int,
             cv2: Any) -> np.ndarray:
    """A square crop around ``roi`` (centre x, y and side, source px; None: the whole image) jittered in
    scale (0.85-1.15), position (8% of the side) and rotation (12°), flipped half the time, with brightness
    and contrast changes; pixels outside the source are black, as the model's own letterbox pads."""
    h, w = img.shape[:2]
    cx, cy, side = roi if roi is not None else (w / 2, h / 2, max(h, w) * rng.uniform(0.6, 1.0))
    side *= rng.uniform(0.85, 1.15)
    cx, cy = np.array([cx, cy]) + rng.uniform(-0.08, 0.08, 2) * side
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), rng.uniform(-12.0, 12.0), size / side)
    m[:, 2] += np.array([(size - 1) / 2 - cx, (size - 1) / 2 - cy])
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(0, 0, 0))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain, bias = rng.uniform(0.75, 1.25), rng.uniform(-20, 20)
    return np.clip(out.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)


__all__ = [
    "BlazePoseError", "KEYPOINTS", "blazepose_images", "blazepose_spec", "blazepose_spec_dict",
    "default_cache_dir", "fetch_blazepose", "write_blazepose_images",
]
