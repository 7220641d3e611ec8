"""What the user passed as data -> images in original pixels, plus ground truth when the data has it.

The one reader behind parity, eval and calibration: a labelled split (a folder with ``labels.json``), a
folder of images, one image, a video file (every n-th frame), a ``.npy``/``.npz`` of BGR uint8 images, or
``synthetic[:N]`` (the reference's own figures). Images load lazily, a batch at a time. The shipped
evaluation split is only the default for the shipped reference model: on any other model, data left out
is an error asking for ``--data`` (stick figures would measure nothing about a user's model).
Ground truth whose keypoint count differs from the model's is an error, never broadcast.

``heatdeploy.models`` (shipped split, synthetic renderer, labels format) is imported inside functions only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heatdeploy.errors import HeatdeployError
from heatdeploy.errortext import first_line
from heatdeploy.runtime.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES, find_images, load_image
from heatdeploy.spec import ModelSpec

ARRAY_SUFFIXES = (".npy", ".npz")
DEFAULT_SYNTHETIC = 32  # images for a bare data="synthetic"
DEFAULT_EVERY_N = 10  # video: every n-th frame
REFERENCE_SPEC_NAME = "heatdeploy-reference-pose"  # the shipped reference (models/reference.py; tested equal)
_NPZ_KEYS = ("images", "image", "frames")
_USAGE = ("pass a labelled split (folder with labels.json), a folder of images, a video, a .npy of BGR uint8 "
          "images, or 'synthetic[:N]'")


class DataError(HeatdeployError, ValueError):
    """The data argument cannot be used; the one-line message names it and the fix."""


@dataclass
class Truth:
    """Ground truth in original-image pixels."""

    keypoints: np.ndarray  # [N,K,2]
    present: np.ndarray  # [N,K] bool
    visible: np.ndarray  # [N,K] bool


@dataclass
class Dataset:
    """Images (files read lazily, video frames, or arrays) and their ground truth if any."""

    kind: str  # labelled | folder | video | array | synthetic
    source: str
    names: list[str]
    files: list[Path] | None = None
    arrays: Sequence[np.ndarray] | None = None
    frames: list[int] | None = None  # video: frame indices, read from ``source``
    truth: Truth | None = None
    truth_sizes: np.ndarray | None = None  # [N,2] (h, w) the labels were made for
    note: str = ""

    def __len__(self) -> int:
        return len(self.names)

    def load(self, start: int, stop: int) -> list[np.ndarray]:
        """Images ``start:stop`` as BGR uint8 arrays."""
        if self.arrays is not None:
            return [np.asarray(a) for a in self.arrays[start:stop]]
        if self.frames is not None:
            return [f for _, f in video_frames(Path(self.source), self.frames[start:stop])]
        assert self.files is not None
        return [load_image(f) for f in self.files[start:stop]]

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "images": len(self), "truth": self.truth is not None,
                "note": self.note}


# --- reading primitives (calibration's sources use these too) -------------------------------------


def image_files(root: Path) -> list[str]:
    """Relative POSIX paths of the regular image files under ``root`` (recursive, sorted; the runtime's rule)."""
    return [p.relative_to(root).as_posix() for p in find_images(root)]


def video_frame_count(path: Path) -> int:
    """Frames in a video file (counted by grabbing when the container does not say)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(f"{path}: OpenCV cannot open this video (unknown container or codec); convert it "
                            "to MP4 (H.264) or pass a folder of frames")
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if frames <= 0:
            frames = 0
            while cap.grab():
                frames += 1
        return frames
    finally:
        cap.release()


def video_frames(path: Path, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray | None]]:
    """(index, BGR frame or None when it cannot be decoded) for the ascending frame ``indices``."""
    import cv2

    if not len(indices):
        return
    wanted = set(int(i) for i in indices)
    cap = cv2.VideoCapture(str(path))
    try:
        for index in range(int(max(indices)) + 1):
            if not cap.grab():
                break  # the header over-counted; use what is there
            if index in wanted:
                ok, frame = cap.retrieve()
                yield index, (frame if ok else None)
    finally:
        cap.release()


def synthetic_images(n: int, height: int, width: int, seed: int) -> tuple[np.ndarray, Truth]:
    """``n`` of the reference's synthetic figures at ``height`` x ``width`` (seeded) and their truth."""
    from heatdeploy.models.synthetic import render_batch

    images, kps, present, visible = render_batch(np.random.default_rng(seed), n, height, width)
    return images, Truth(kps.astype(np.float32), present.astype(bool), visible.astype(bool))


def parse_synthetic(text: str, default: int) -> int | None:
    """'synthetic' -> default, 'synthetic:N' -> N; None when ``text`` does not name the synthetic set."""
    if text != "synthetic" and not text.startswith("synthetic:"):
        return None
    if text == "synthetic":
        return default
    try:
        n = int(text.split(":", 1)[1])
    except ValueError:
        n = 0
    if n < 1:
        raise DataError(f"{text!r}: expected 'synthetic' or 'synthetic:N' with N >= 1")
    return n


def open_array(path: Path, key: str | None, preferred: Sequence[str] = ()) -> tuple[np.ndarray, str | None]:
    """A ``.npy`` (memory-mapped) or one array of a ``.npz`` -> (array, the npz key used)."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False), key
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            if key is None:
                key = keys[0] if len(keys) == 1 else next((k for k in preferred if k in keys), None)
            if key is None:
                raise DataError(f"{path}: holds {len(keys)} arrays ({', '.join(keys)}) and none is named "
                                f"{' or '.join(repr(k) for k in preferred)}; save one array, or name it so")
            if key not in keys:
                raise DataError(f"{path}: no array {key!r}; it has {', '.join(keys)}")
            return npz[key], key
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read as a numpy array ({first_line(exc)}); save a plain array with "
                        "np.save / np.savez") from None


# --- what the user passed -> Dataset ---------------------------------------------------------------


def is_reference(spec: ModelSpec) -> bool:
    """Whether ``spec`` is the shipped reference model's: the only one the shipped split is truth for."""
    from heatdeploy.models.skeleton import KEYPOINTS

    return spec.name == REFERENCE_SPEC_NAME and tuple(spec.keypoints) == KEYPOINTS


def load_dataset(spec: ModelSpec, data: str | os.PathLike[str] | None = None, *, limit: int | None = None,
                 seed: int = 0, every_n: int = DEFAULT_EVERY_N, default_synthetic: int = DEFAULT_SYNTHETIC,
                 require_truth: bool = False) -> Dataset:
    """Images (+ truth) from ``data`` for a model of ``spec``; ``None`` is the shipped split (reference only).

    ``require_truth``: eval needs ground truth; data without it is an error naming what has it.
    """
    if limit is not None and limit < 1:
        raise DataError(f"limit: expected a positive number of images, got {limit}")
    text = "" if data is None else str(data).strip()
    if data is None:
        if not is_reference(spec):
            raise DataError(f"model {spec.name!r} is not the shipped reference, so the shipped evaluation split "
                            f"says nothing about it; {_USAGE} as --data")
        from heatdeploy.models.evalset import EVAL_DIR

        ds = _labelled(spec, EVAL_DIR, limit)
    elif (n := parse_synthetic(text, default_synthetic)) is not None:
        ds = _synthetic(spec, n if limit is None else min(n, limit), seed)
    else:
        ds = _from_path(spec, Path(text).expanduser(), limit, every_n)
    if require_truth and ds.truth is None:
        raise DataError(f"{ds.source}: no ground truth ({ds.note or ds.kind}); pass a labelled split (a folder "
                        "with labels.json), a COCO keypoints file (eval --data FILE.json --images DIR), or "
                        "'synthetic:N' for the reference model")
    return ds


def _from_path(spec: ModelSpec, path: Path, limit: int | None, every_n: int) -> Dataset:
    from heatdeploy.models.evalset import LABELS

    no_truth = "no ground truth: truth metrics omitted"
    if path.is_dir() and (path / LABELS).is_file():
        return _labelled(spec, path, limit)
    if path.is_dir():
        rel = image_files(path)[:limit]
        if not rel:
            raise DataError(f"{path}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}, recursively); "
                            f"{_USAGE}")
        return Dataset(kind="folder", source=str(path), names=rel, files=[path / r for r in rel], note=no_truth)
    if not path.is_file():
        raise DataError(f"{path}: not found; {_USAGE}")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return Dataset(kind="folder", source=str(path), names=[path.name], files=[path], note=no_truth)
    if suffix in VIDEO_SUFFIXES:
        if every_n < 1:
            raise DataError(f"every_n must be >= 1 (take every n-th frame), got {every_n}")
        frames = list(range(0, video_frame_count(path), every_n))[:limit]
        if not frames:
            raise DataError(f"{path}: the video has no frames; pass another video or a folder of images")
        return Dataset(kind="video", source=str(path), names=[f"frame-{i:06d}" for i in frames], frames=frames,
                       note=f"every {every_n}th frame; {no_truth}")
    if suffix in ARRAY_SUFFIXES:
        arr, key = open_array(path, None, _NPZ_KEYS)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[0] == 0:
            raise DataError(f"{path}: array {tuple(arr.shape)} {arr.dtype} is not images; save BGR uint8 images "
                            "as [N,H,W,3] (preprocessed float tensors are calibration input only)")
        arr = arr[:limit]
        where = f"{path}:{key}" if key else str(path)
        return Dataset(kind="array", source=where, names=[f"{path.stem}-{i:05d}" for i in range(len(arr))],
                       arrays=arr, note=no_truth)
    if suffix == ".json":
        raise DataError(f"{path}: a JSON file is labels, not images: a COCO keypoints file is read by 'heatdeploy "
                        f"eval --data FILE.json --images DIR'; here {_USAGE}")
    raise DataError(f"{path}: unknown data ({suffix or 'no suffix'}); {_USAGE}")


def _check_keypoints(spec: ModelSpec, k: int, where: str) -> None:
    if k != spec.num_keypoints:
        raise DataError(f"{where}: the ground truth has {k} keypoints, the model {spec.num_keypoints}; pass labels "
                        "made for this model, or a folder of images (no truth)")


def _labelled(spec: ModelSpec, root: Path, limit: int | None) -> Dataset:
    from heatdeploy.models.evalset import read_labelled_set

    try:
        split = read_labelled_set(root)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return labelled_dataset(spec, split, limit)


def labelled_dataset(spec: ModelSpec, split: Any, limit: int | None = None) -> Dataset:
    """A read labelled split (``models.evalset.LabelledSet``: files, keypoints, present, visible, image_sizes)."""
    n = len(split.files) if limit is None else min(limit, len(split.files))
    if n == 0:
        raise DataError(f"{split.root}: labels.json lists no images")
    _check_keypoints(spec, split.keypoints.shape[1], str(Path(split.root) / "labels.json"))
    truth = Truth(split.keypoints[:n], split.present[:n], split.visible[:n])
    return Dataset(kind="labelled", source=str(split.root), names=[Path(f).name for f in split.files[:n]],
                   files=[Path(f) for f in split.files[:n]], truth=truth, truth_sizes=split.image_sizes[:n])


def _synthetic(spec: ModelSpec, n: int, seed: int) -> Dataset:
    h, w = spec.input.height, spec.input.width
    images, truth = synthetic_images(n, h, w, seed)
    note = ""
    if truth.keypoints.shape[1] != spec.num_keypoints:  # the user asked for images, not for this truth
        note = (f"synthetic figures have {truth.keypoints.shape[1]} keypoints, the model {spec.num_keypoints}: "
                "images only, truth metrics omitted")
        truth = None
    return Dataset(kind="synthetic", source=f"synthetic:{n} (seed {seed}, {h}x{w})",
                   names=[f"synthetic-{i:04d}" for i in range(n)], arrays=list(images), truth=truth,
                   truth_sizes=np.tile(np.array([[h, w]], np.int64), (n, 1)) if truth else None, note=note)


__all__ = ["ARRAY_SUFFIXES", "DataError", "Dataset", "IMAGE_SUFFIXES", "Truth", "VIDEO_SUFFIXES", "image_files",
           "is_reference", "labelled_dataset", "load_dataset", "open_array", "parse_synthetic", "synthetic_images",
           "video_frames"]
