"""Calibration data: images, video frames, preprocessed arrays or the synthetic set, as model-input batches.

Every image goes through the runtime's own :class:`~heatdeploy.runtime.preprocess.Preprocessor`, so the
ranges are measured on exactly what deployment feeds the model. Sources stream: ``batches()`` reads one
batch at a time and never holds the whole set. ``record()`` names exactly what was used (kind, path,
count, a hash of the file list or array file, seed, skipped files); ``fingerprint()`` is the part of it
that is known before reading and keys the calibration cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from heatdeploy.datasets import (
    ARRAY_SUFFIXES,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    DataError,
    image_files,
    open_array,
    parse_synthetic,
    video_frame_count,
    video_frames,
)
from heatdeploy.errors import HeatdeployError
from heatdeploy.fsutil import sha256_file
from heatdeploy.runtime.preprocess import ImageError, Preprocessor, load_image
from heatdeploy.spec import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_SYNTHETIC = 128  # images in the reference model's synthetic calibration set
_NPZ_KEYS = ("images", "inputs", "input", "x")  # tried after the spec's input name
_MAX_LISTED = 20  # skipped files named in the record; the count is always exact
_FIX = "pass a folder of JPEG/PNG/BMP/WebP images"


class CalibrationError(HeatdeployError, ValueError):
    """Calibration cannot proceed; the one-line message names the data (or model) and the fix."""




def seeded_subset(total: int, size: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of ``size`` out of ``total``, in ascending order (all if None)."""
    if size is None or size >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=size, replace=False))


class CalibrationSource(ABC):
    """A re-iterable stream of float32 model-input batches and the record of what it used."""

    kind: str = ""

    def __init__(self, spec: ModelSpec, *, path: Path | None, size: int | None, seed: int) -> None:
        if size is not None and size < 1:
            raise CalibrationError(f"--calib-size must be a positive number of samples, got {size}")
        self.spec = spec
        self.path = path
        self.size = size
        self.seed = int(seed)
        self.used = 0
        self.skipped: list[str] = []
        self._pre = Preprocessor(spec.input)

    # --- what subclasses provide -------------------------------------------------------------------
    @property
    @abstractmethod
    def count(self) -> int:
        """Samples the source plans to yield (before any unreadable ones are skipped)."""

    @abstractmethod
    def _sha256(self) -> str:
        """Hash of the data identity: file list + sizes, or the array/video file's bytes."""

    @abstractmethod
    def _batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield preprocessed float32 batches; append unreadable items to ``self.skipped``."""

    def _extra(self) -> dict[str, Any]:
        """Kind-specific identity fields (e.g. every_n for video) shared by record and fingerprint."""
        return {}

    # --- public -------------------------------------------------------------------------------------
    def batches(self, batch_size: int = 8) -> Iterator[np.ndarray]:
        """Stream the source as float32 batches in the model's input layout, ``batch_size`` at most each."""
        if batch_size < 1:
            raise CalibrationError(f"calibration batch size must be >= 1, got {batch_size}")
        self.used = 0
        self.skipped = []
        for batch in self._batches(batch_size):
            if not np.isfinite(batch).all():
                raise CalibrationError(f"{self._where()}: a sample holds NaN or infinity (after sample "
                                       f"{self.used}); calibration ranges would be meaningless — fix the data")
            self.used += len(batch)
            yield batch
        if self.skipped:
            shown = ", ".join(self.skipped[:3]) + (", ..." if len(self.skipped) > 3 else "")
            log.warning("%s: skipped %d of %d files that are not readable images (%s)",
                        self._where(), len(self.skipped), self.count, shown)
        if self.used == 0:
            raise CalibrationError(self._nothing_read())

    def fingerprint(self) -> dict[str, Any]:
        """What determines the calibration data, known before reading it: the cache key's data part."""
        return {
            "kind": self.kind,
            "sha256": self._sha256(),
            "count": self.count,
            "seed": self.seed,
            # a size larger than what there is takes everything, as no size does: the same data, the same key
            # (so OpenVINO's default 300 finds the ORT pass's cached result on a 64-image folder)
            "size": None if self.size is None or self.size > self.count else self.size,
            "input": asdict(self.spec.input),  # same files, other preprocessing -> other ranges
            **self._extra(),
        }

    def record(self) -> dict[str, Any]:
        """Exactly what was used, for the bundle: complete after ``batches()`` has been consumed."""
        return {
            "kind": self.kind,
            "path": None if self.path is None else str(self.path),
            "count": self.used or self.count,
            "planned": self.count,
            "sha256": self._sha256(),
            "hash_of": self._hash_of(),
            "seed": self.seed,
            "size": self.size,
            "skipped": len(self.skipped),
            "skipped_files": self.skipped[:_MAX_LISTED],
            **self._extra(),
        }

    # --- helpers ------------------------------------------------------------------------------------
    def _hash_of(self) -> str:
        return "file bytes"

    def _where(self) -> str:
        return str(self.path) if self.path is not None else self.kind

    def _nothing_read(self) -> str:
        return f"{self._where()}: no calibration samples could be read; {_FIX}"

    def _preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The runtime's preprocessing; for 'crop' models each image is taken as one person box."""
        boxes = None
        if self.spec.input.resize == "crop":
            boxes = np.array([[0.0, 0.0, img.shape[1] - 1.0, img.shape[0] - 1.0] for img in images])
        return self._pre(list(images), boxes).tensor


class ImageFolderSource(CalibrationSource):
    """Every JPEG/PNG/BMP/WebP under a folder (recursive), or a seeded random subset of them."""

    kind = "folder"

    def __init__(self, spec: ModelSpec, root: str | os.PathLike[str], *, size: int | None = None,
                 seed: int = 0) -> None:
        root = Path(root)
        if not root.is_dir():
            raise CalibrationError(f"{root}: not a folder; {_FIX}")
        super().__init__(spec, path=root, size=size, seed=seed)
        found = sorted(image_files(root))
        if not found:
            looked = ", ".join(IMAGE_SUFFIXES)
            raise CalibrationError(f"{root}: no images found (looked for {looked}, recursively, any case); "
                                   f"{_FIX}")
        self.found = len(found)
        self.files = [found[i] for i in seeded_subset(len(found), size, seed)]
        self._digest: str | None = None

    @property
    def count(self) -> int:
        return len(self.files)

    def _sha256(self) -> str:
        if self._digest is None:
            h = hashlib.sha256()
            for rel in self.files:
                h.update(f"{rel}\t{(self.path / rel).stat().st_size}\n".encode())  # type: ignore[operator]
            self._digest = h.hexdigest()
        return self._digest

    def _hash_of(self) -> str:
        return "sorted relative paths + sizes of the files used"

    def _extra(self) -> dict[str, Any]:
        return {"found": self.found}

    def _nothing_read(self) -> str:
        return (f"{self.path}: none of the {self.count} image files could be read (e.g. "
                f"{self.skipped[0] if self.skipped else '?'}); {_FIX}")

    def _batches(self, batch_size: int) -> Iterator[np.ndarray]:
        images: list[np.ndarray] = []
        for rel in self.files:
            try:
                images.append(load_image(self.path / rel))  # type: ignore[operator]
            except ImageError as exc:
                self.skipped.append(f"{rel} ({_reason(exc)})")
                continue
            if len(images) == batch_size:
                yield self._preprocess(images)
                images = []
        if images:
            yield self._preprocess(images)


def _reason(exc: ImageError) -> str:
    """The parenthesised cause from load_image's message, e.g. 'empty file'."""
    text = str(exc)
    start, end = text.find("("), text.find(")")
    return text[start + 1:end] if 0 <= start < end else text


class VideoSource(CalibrationSource):
    """Every n-th frame of a video file (a seeded subset of those frames with ``size``)."""

    kind = "video"

    def __init__(self, spec: ModelSpec, path: str | os.PathLike[str], *, every_n: int = 10,
                 size: int | None = None, seed: int = 0) -> None:
        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"{path}: video file not found; pass a video, an image folder, "
                                   ".npy/.npz or 'synthetic'")
        if every_n < 1:
            raise CalibrationError(f"every_n must be >= 1 (take every n-th frame), got {every_n}")
        super().__init__(spec, path=path, size=size, seed=seed)
        self.every_n = int(every_n)
        try:
            frames = video_frame_count(path)
        except DataError as exc:
            raise CalibrationError(str(exc)) from None
        candidates = np.arange(0, frames, self.every_n)
        self.frames = frames
        self.indices = [int(i) for i in candidates[seeded_subset(len(candidates), size, seed)]]
        if not self.indices:
            raise CalibrationError(f"{path}: the video has no frames; pass another video or an image folder")
        self._digest: str | None = None

    @property
    def count(self) -> int:
        return len(self.indices)

    def _sha256(self) -> str:
        if self._digest is None:
            self._digest = sha256_file(self.path)  # type: ignore[arg-type]
        return self._digest

    def _extra(self) -> dict[str, Any]:
        return {"every_n": self.every_n, "frames": self.frames}

    def _batches(self, batch_size: int) -> Iterator[np.ndarray]:
        images: list[np.ndarray] = []
        for index, frame in video_frames(self.path, self.indices):  # type: ignore[arg-type]
            if frame is None:
                self.skipped.append(f"frame {index} (cannot decode)")
                continue
            images.append(frame)
            if len(images) == batch_size:
                yield self._preprocess(images)
                images = []
        if images:
            yield self._preprocess(images)


class ArraySource(CalibrationSource):
    """Already preprocessed tensors from ``.npy`` or ``.npz``, shape-checked against the spec.

    ``.npy`` is memory-mapped, so batches come off the disk one at a time; numpy cannot map ``.npz``,
    whose array is loaded whole: use ``.npy`` for large sets.
    """

    kind = "array"

    def __init__(self, spec: ModelSpec, path: str | os.PathLike[str], *, key: str | None = None,
                 size: int | None = None, seed: int = 0) -> None:
        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"{path}: array file not found; pass a .npy/.npz of preprocessed tensors")
        super().__init__(spec, path=path, size=size, seed=seed)
        self.key = key
        arr = self._open()
        self._check(arr)
        self.total = int(arr.shape[0])
        self.indices = seeded_subset(self.total, size, seed)
        self._digest: str | None = None

    def _open(self) -> np.ndarray:
        """The array, memory-mapped for .npy so batches are read from disk one at a time."""
        try:
            arr, self.key = open_array(self.path, self.key, (self.spec.input.name, *_NPZ_KEYS))  # type: ignore[arg-type]
        except DataError as exc:
            raise CalibrationError(str(exc)) from None
        return arr

    def _check(self, arr: np.ndarray) -> None:
        inp = self.spec.input
        want = ((inp.channels, inp.height, inp.width) if inp.layout == "NCHW"
                else (inp.height, inp.width, inp.channels))
        dims = ",".join(str(d) for d in want)
        if arr.ndim != 4 or tuple(arr.shape[1:]) != want:
            raise CalibrationError(
                f"{self.path}: array shape {tuple(arr.shape)} does not match the model input [N,{dims}] "
                f"({inp.layout}, {inp.height}x{inp.width} from the spec); save preprocessed tensors of that "
                "shape, or pass a folder of images"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise CalibrationError(
                f"{self.path}: dtype {arr.dtype} is not preprocessed float data; save the model input "
                "tensors as float32 (after scaling and mean/std), or pass a folder of images"
            )
        if arr.shape[0] == 0:
            raise CalibrationError(f"{self.path}: the array holds no samples; pass a non-empty array")

    @property
    def count(self) -> int:
        return len(self.indices)

    def _sha256(self) -> str:
        if self._digest is None:
            h = sha256_file(self.path)  # type: ignore[arg-type]
            self._digest = h if self.key is None else hashlib.sha256(f"{h}:{self.key}".encode()).hexdigest()
        return self._digest

    def _extra(self) -> dict[str, Any]:
        return {"key": self.key, "found": self.total}

    def _batches(self, batch_size: int) -> Iterator[np.ndarray]:
        arr = self._open()
        for start in range(0, len(self.indices), batch_size):
            idx = self.indices[start:start + batch_size]
            yield np.ascontiguousarray(arr[idx], dtype=np.float32)




class SyntheticSource(CalibrationSource):
    """The reference model's own synthetic figures over photographs, rendered at the input size, seeded."""

    kind = "synthetic"

    def __init__(self, spec: ModelSpec, n: int = DEFAULT_SYNTHETIC, *, seed: int = 0) -> None:
        super().__init__(spec, path=None, size=n, seed=seed)
        self.n = int(n)
        self._digest: str | None = None

    @property
    def count(self) -> int:
        return self.n

    def _sha256(self) -> str:
        """The generator's source plus its parameters: the same inputs give the same images."""
        if self._digest is None:
            from heatdeploy.models import synthetic

            desc = {"generator": sha256_file(Path(synthetic.__file__)), "n": self.n, "seed": self.seed,
                    "h": self.spec.input.height, "w": self.spec.input.width}
            self._digest = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()
        return self._digest

    def _hash_of(self) -> str:
        return "generator source + n + seed + size"

    def _batches(self, batch_size: int) -> Iterator[np.ndarray]:
        from heatdeploy.models.synthetic import render_batch

        rng = np.random.default_rng(self.seed)
        h, w = self.spec.input.height, self.spec.input.width
        for start in range(0, self.n, batch_size):
            images = render_batch(rng, min(batch_size, self.n - start), h, w)[0]
            yield self._preprocess(list(images))


def open_source(spec: ModelSpec, data: str, size: int | None = None, seed: int = 0,
                every_n: int = 10) -> CalibrationSource:
    """Pick the source kind from ``data``: 'synthetic[:N]', a folder, a .npy/.npz, or a video file.

    ``size``: a seeded subset of at most that many samples; for plain 'synthetic' it sets the count.
    """
    text = str(data).strip()
    try:
        n = parse_synthetic(text, DEFAULT_SYNTHETIC)
    except DataError as exc:
        raise CalibrationError(str(exc)) from None
    if n is not None:
        if size is not None:  # 'synthetic:N' names the set; a subset size caps it, as for a folder
            n = size if text == "synthetic" else min(size, n)
        return SyntheticSource(spec, n, seed=seed)
    path = Path(text).expanduser()
    if path.is_dir():
        return ImageFolderSource(spec, path, size=size, seed=seed)
    suffix = path.suffix.lower()
    if suffix in ARRAY_SUFFIXES:
        return ArraySource(spec, path, size=size, seed=seed)
    if suffix in VIDEO_SUFFIXES:
        return VideoSource(spec, path, every_n=every_n, size=size, seed=seed)
    if not path.exists():
        raise CalibrationError(f"{path}: not found; pass a folder of images, a video, a .npy/.npz of "
                               "preprocessed tensors, or 'synthetic'")
    if suffix in IMAGE_SUFFIXES:
        raise CalibrationError(f"{path}: one image is too little to calibrate on; {_FIX}")
    raise CalibrationError(f"{path}: unknown calibration data ({suffix or 'no suffix'}); pass a folder of "
                           f"images, a video ({', '.join(VIDEO_SUFFIXES)}), a .npy/.npz, or 'synthetic'")
