"""Frame sources for ``heatdeploy run``: image files and folders, video files, cameras, URLs, GStreamer.

Every source yields :class:`Frame` objects one at a time, so memory does not grow with the length of a
stream. Image files are read only when they are regular files (a FIFO named ``x.jpg`` would block a read
forever), and their size is checked from the file header before decoding, so a 50000x50000 PNG is refused
in one line instead of being allocated. This module holds the one image reader of the runtime.
"""

from __future__ import annotations

import math
import os
import re
import stat
import struct
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from heatdeploy.errors import HeatdeployError
from heatdeploy.runtime.preprocess import ImageError, to_bgr8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                  ".gif")


def _env_int(name: str, default: int) -> int:
    """A positive integer from the environment; anything else keeps the default (imports must not fail)."""
    try:
        value = int(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


# An upper bound that still admits 100-megapixel photos; above it decoding alone would take gigabytes.
MAX_PIXELS = _env_int("HEATDEPLOY_MAX_PIXELS", 1 << 27)
MAX_BYTES = _env_int("HEATDEPLOY_MAX_IMAGE_BYTES", 512 << 20)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# ANYCOLOR|ANYDEPTH keeps 16-bit and grey images as they are (normalised in to_bgr8) but, unlike
# IMREAD_UNCHANGED, still applies the EXIF orientation, so phone photos are not decoded sideways.
_IMREAD_FLAGS = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
_FIX = "pass a JPEG, PNG, BMP or WebP file"
_KINDS = "an image, a folder of images, a video file, a camera index (0), /dev/videoN, an rtsp:// or http:// URL, " \
         "or a GStreamer pipeline ending in appsink"


class SourceError(HeatdeployError, ValueError):
    """A source that cannot be opened or read; the message names it and the fix."""


class SkippedInputWarning(UserWarning):
    """An input that is not a regular file (FIFO, device, socket) or not an image; it was not read."""


@dataclass
class Frame:
    """One frame of a source: ``name`` is unique within a run (overlay file names use it)."""

    index: int  # position in the run, from 0
    image: np.ndarray  # BGR uint8 [H, W, 3]
    name: str
    timestamp: float | None = None  # seconds: video position, or since the start of a live stream
    source: str = ""  # the file or stream it came from


# --- reading one image ---------------------------------------------------------------------------


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP or WebP header, or None when the format is not recognised."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if chunk == b"VP8L":
            b = int.from_bytes(data[21:25], "little")
            return 1 + (b & 0x3FFF), 1 + ((b >> 14) & 0x3FFF)
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        return None
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def _check_pixels(where: object, w: int, h: int) -> None:
    if w * h > MAX_PIXELS:
        raise ImageError(f"{where}: {w}x{h} pixels is above the limit of {MAX_PIXELS:,} pixels; downscale it "
                         "(or raise HEATDEPLOY_MAX_PIXELS)")


def is_regular_file(path: str | os.PathLike[str]) -> bool:
    """True for a regular file (after symlinks); FIFOs, devices, sockets and folders are not."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_file_bytes(path: str | os.PathLike[str], limit: int = MAX_BYTES) -> bytes:
    """Bytes of a regular file, opened non-blocking and checked with fstat, so a FIFO never blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageError(f"{path}: not a readable image (file not found); {_FIX}") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: not a readable image (it is a directory); {_FIX}") from None
    except OSError as exc:
        raise ImageError(f"{path}: not a readable image ({exc.strerror or exc}); {_FIX}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(f"{path}: not a readable image (it is a directory); {_FIX}")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{path}: not a readable image (not a regular file: {_kind(st.st_mode)}); {_FIX}")
        if st.st_size > limit:
            raise ImageError(f"{path}: {st.st_size:,} bytes is above the limit of {limit:,} bytes for one image; "
                             "downscale it (or raise HEATDEPLOY_MAX_IMAGE_BYTES)")
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            return f.read(limit + 1)
    except OSError as exc:
        raise ImageError(f"{path}: not a readable image ({exc.strerror or exc}); {_FIX}") from None
    finally:
        if fd >= 0:
            os.close(fd)


def decode_image(data: bytes | np.ndarray, where: object) -> np.ndarray:
    """Encoded bytes -> BGR uint8; the header size is checked first and OpenCV errors become ImageError."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if buf.size == 0:
        raise ImageError(f"{where}: not a readable image (empty file); {_FIX}")
    size = _header_size(bytes(buf[:65536]))
    if size is not None:
        _check_pixels(where, *size)
    try:
        image = cv2.imdecode(buf, _IMREAD_FLAGS)
    except cv2.error as exc:
        reason = str(exc).strip().splitlines()[-1][:120]
        raise ImageError(f"{where}: not a readable image (OpenCV: {reason}); {_FIX}") from None
    if image is None:
        raise ImageError(f"{where}: not a readable image (unknown format or corrupt data); {_FIX}")
    _check_pixels(where, image.shape[1], image.shape[0])
    return to_bgr8(image, where=str(where))


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as BGR uint8 ``[H, W, 3]``; decoding from bytes copes with non-ASCII paths."""
    return decode_image(read_file_bytes(path), path)


def check_image_header(path: Path) -> None:
    """Cheap up-front check (a few KB read): a known image format within the pixel and byte limits."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise ImageError(f"{path}: not a readable image ({exc.strerror or exc}); {_FIX}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced by a FIFO or device since it was listed
            raise ImageError(f"{path}: not a readable image (not a regular file: {_kind(st.st_mode)}); {_FIX}")
        if st.st_size > MAX_BYTES:
            raise ImageError(f"{path}: {st.st_size:,} bytes is above the limit of {MAX_BYTES:,} bytes for one "
                             "image; downscale it (or raise HEATDEPLOY_MAX_IMAGE_BYTES)")
        head = os.read(fd, 65536)
    finally:
        os.close(fd)
    if not head:
        raise ImageError(f"{path}: not a readable image (empty file); {_FIX}")
    size = _header_size(head)
    if size is None:
        if head[:2] != b"\xff\xd8":  # a JPEG whose size marker lies past the first 64 KB is still fine
            raise ImageError(f"{path}: not a readable image (unknown format or corrupt data); {_FIX}")
        return
    _check_pixels(path, *size)


# --- finding images ------------------------------------------------------------------------------


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _skip(path: Path, why: str) -> None:
    warnings.warn(f"{path}: skipped ({why}); only regular image files are read", SkippedInputWarning,
                  stacklevel=3)


def find_images(folder: Path) -> list[Path]:
    """Regular image files under ``folder`` (recursive, sorted); others that look like images are skipped."""
    found: list[Path] = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            mode = os.stat(p).st_mode
        except OSError as exc:
            _skip(p, exc.strerror or "cannot stat")
            continue
        if stat.S_ISREG(mode):
            found.append(p)
        else:
            _skip(p, _kind(mode))
    return found


def _stat_mode(path: str | os.PathLike[str]) -> int:
    """``st_mode`` of a command-line SOURCE, or a SourceError saying it is missing or unreadable."""
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file or folder; pass {_KINDS}") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from None


def expand_images(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders expanded (recursively, sorted) to their regular image files."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        mode = _stat_mode(p)
        if stat.S_ISDIR(mode):
            found = find_images(p)
            if not found:
                raise SourceError(f"no images found in {p} (looked for {', '.join(IMAGE_SUFFIXES)}, recursively); "
                                  "pass a folder that holds images")
            out += found
        elif stat.S_ISREG(mode):
            out.append(p)
        else:
            _skip(p, _kind(mode))
    return out


def unique_names(paths: Sequence[Path]) -> list[str]:
    """File stems made unique (``x``, ``x-2``, ...) so that two inputs never share an overlay file."""
    used: set[str] = set()
    names = []
    for p in paths:
        name, n = p.stem, 1
        while name in used:
            n += 1
            name = f"{p.stem}-{n}"
        used.add(name)
        names.append(name)
    return names


# --- sources -------------------------------------------------------------------------------------


def has_gstreamer() -> bool:
    """Whether this OpenCV build has its GStreamer backend (JetPack's does; pip's wheels do not)."""
    return bool(re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()))


class ImageSource:
    """Image files read one at a time; every header is checked up front, so a bad file fails before any work."""

    kind = "images"

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        self.files = expand_images(paths)
        if not self.files:
            raise SourceError(f"no images to read in {', '.join(map(str, paths))} (every input was skipped); "
                              f"pass {_KINDS}")
        for f in self.files:
            check_image_header(f)
        self.names = unique_names(self.files)
        self.fps: float | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def total(self) -> int | None:
        return len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        for i, (f, name) in enumerate(zip(self.files, self.names, strict=True)):
            yield Frame(i, load_image(f), name, None, str(f))

    def close(self) -> None:
        pass


class VideoSource:
    """A video file, camera, URL or GStreamer pipeline through ``cv2.VideoCapture``, one frame at a time."""

    kind = "video"

    def __init__(self, target: str | int, api: int = cv2.CAP_ANY, label: str | None = None,
                 live: bool = False) -> None:
        self.target, self.api, self.live = target, api, live
        self.label = label or str(target)
        self.cap = cv2.VideoCapture(target, api)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"{self.label}: cannot be opened as a video stream; {self._fix()}")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if np.isfinite(fps) and 0 < fps < 1000 else None
        count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.total = int(count) if not live and np.isfinite(count) and count > 0 else None
        self.stem = Path(str(target)).stem if isinstance(target, str) and not live else "frame"

    def _fix(self) -> str:
        if isinstance(self.target, int) or self.label.startswith("/dev/"):
            return "check the camera is connected and not in use by another program"
        if self.api == cv2.CAP_GSTREAMER:
            if not has_gstreamer():
                return ("this OpenCV is built without GStreamer (pip's wheels are): on a Jetson use JetPack's "
                        "OpenCV (a venv made with --system-site-packages, without opencv-python-headless)")
            return "check the pipeline with gst-launch-1.0 (it must end in appsink and give BGR frames)"
        if self.live:
            return "check the URL and that the stream is reachable from this machine"
        return "check the file is a video OpenCV can decode (mp4, avi, mkv, ...)"

    def __iter__(self) -> Iterator[Frame]:
        start = time.monotonic()
        i = 0
        try:
            while True:
                ok, image = self.cap.read()
                if not ok or image is None:
                    return
                if self.live:
                    ts = time.monotonic() - start
                else:
                    ms = self.cap.get(cv2.CAP_PROP_POS_MSEC)
                    ts = ms / 1000.0 if math.isfinite(ms) and ms >= 0 else (i / self.fps if self.fps else None)
                yield Frame(i, to_bgr8(image, where=self.label), f"{self.stem}_{i:06d}", ts, self.label)
                i += 1
        finally:
            self.close()

    def close(self) -> None:
        self.cap.release()


class ChainSource:
    """Several sources one after another, with one frame index and unique names across them."""

    def __init__(self, sources: Sequence[ImageSource | VideoSource]) -> None:
        self.sources = list(sources)
        self.kind = "images" if all(s.kind == "images" for s in self.sources) else "video"
        self.fps = next((s.fps for s in self.sources if s.fps), None)
        totals = [s.total for s in self.sources]
        self.total = None if any(t is None for t in totals) else sum(totals)  # type: ignore[misc]

    def __iter__(self) -> Iterator[Frame]:
        i, used = 0, set()
        for s in self.sources:
            for f in s:
                name, n = f.name, 1
                while f.name in used:
                    n += 1
                    f.name = f"{name}-{n}"
                used.add(f.name)
                f.index = i
                i += 1
                yield f

    def close(self) -> None:
        for s in self.sources:
            s.close()


def classify(arg: str) -> str:
    """'gstreamer', 'url', 'camera', 'video', 'images' or 'skip' for one command-line SOURCE."""
    if "!" in arg and "appsink" in arg:
        return "gstreamer"
    if _URL.match(arg):
        return "url"
    if arg.isdigit():
        return "camera"
    mode = _stat_mode(arg)
    if stat.S_ISCHR(mode) and os.path.basename(arg).startswith("video"):
        return "camera"
    if stat.S_ISDIR(mode):
        return "images"
    if not stat.S_ISREG(mode):
        return "skip"
    return "video" if Path(arg).suffix.lower() in VIDEO_SUFFIXES else "images"


def open_source(args: Sequence[str | os.PathLike[str]]) -> ImageSource | VideoSource | ChainSource:
    """Command-line SOURCEs -> one frame source (arguments are strings: a URL must not go through Path)."""
    groups: list[ImageSource | VideoSource] = []
    images: list[str] = []

    def flush() -> None:
        if images:
            groups.append(ImageSource(list(images)))
            images.clear()

    for raw in args:
        arg = os.fspath(raw)
        kind = classify(arg)
        if kind == "images":
            images.append(arg)
            continue
        if kind == "skip":
            _skip(Path(arg), _kind(os.stat(arg).st_mode))
            continue
        flush()
        if kind == "camera":
            target: str | int = int(arg) if arg.isdigit() else arg
            groups.append(VideoSource(target, cv2.CAP_ANY, live=True))
        elif kind == "gstreamer":
            groups.append(VideoSource(arg, cv2.CAP_GSTREAMER, label="GStreamer pipeline", live=True))
        elif kind == "url":
            groups.append(VideoSource(arg, cv2.CAP_FFMPEG, live=True))
        else:
            groups.append(VideoSource(arg))
    flush()
    if not groups:
        raise SourceError(f"no frames to read: every input was skipped ({', '.join(map(os.fspath, args))}); "
                          f"pass {_KINDS}")
    return groups[0] if len(groups) == 1 else ChainSource(groups)


__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "ChainSource", "Frame", "ImageSource", "SkippedInputWarning",
           "SourceError", "VideoSource", "classify", "decode_image", "expand_images", "find_images",
           "load_image", "open_source", "read_file_bytes", "unique_names"]
