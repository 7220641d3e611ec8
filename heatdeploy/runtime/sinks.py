"""Where streamed predictions go: JSON Lines, an annotated video, overlay images, predictions.json.

Each sink opens its file on the first frame (a run that fails before any frame leaves nothing behind) and
writes as frames arrive, so a stopped run keeps everything up to the last frame. Files appear under their
final names only when complete (JSON Lines excepted: each line is flushed whole, and a reader may follow it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from heatdeploy.errors import HeatdeployError
from heatdeploy.runtime.draw import LABELS, draw_keypoints
from heatdeploy.runtime.sources import Frame


class SinkError(HeatdeployError, OSError):
    """An output that cannot be written; the message names the file and the fix."""


@dataclass
class FrameResult:
    """One frame's decoded keypoints (``[K, 2]``, or ``[M, K, 2]`` for multi-instance heads) and record.

    The JSON record is made on first use (``make_record``, or the record itself), so a stream writing only
    video builds none.
    """

    frame: Frame
    make_record: Callable[[], dict[str, Any]] | dict[str, Any]
    keypoints: np.ndarray
    scores: np.ndarray
    presence: np.ndarray
    present: np.ndarray
    skeleton: Sequence[tuple[int, int]] = ()
    names: Sequence[str] = ()
    labels: str = "none"
    _overlay: np.ndarray | None = field(default=None, repr=False)
    _record: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def record(self) -> dict[str, Any]:
        """The frame's JSON record (made once, shared by every sink that writes it)."""
        if self._record is None:
            made = self.make_record
            self._record = made if isinstance(made, dict) else made()
        return self._record

    def overlay(self) -> np.ndarray:
        """The frame with its keypoints drawn (computed once, shared by every sink that needs it)."""
        if self._overlay is None:
            self._overlay = draw_keypoints(self.frame.image, self.keypoints, self.presence, self.present,
                                           self.skeleton, names=self.names, scores=self.scores,
                                           labels=self.labels)
        return self._overlay


def _os_error(path: Path, exc: OSError) -> SinkError:
    return SinkError(f"{path}: cannot be written ({exc.strerror or exc}); pick a writable --out folder with "
                     "free space")


class JsonlSink:
    """One JSON object per line per frame, flushed as it is written (``path`` None: stdout)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._f: IO[str] | None = None
        self.count = 0

    def write(self, r: FrameResult) -> None:
        try:
            if self._f is None:
                if self.path is None:
                    import sys

                    self._f = sys.stdout
                else:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._f = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._f.write(json.dumps(r.record, separators=(",", ":")) + "\n")
            self._f.flush()
        except BrokenPipeError as exc:
            if self.path is not None:
                raise _os_error(self.path, exc) from None
            raise SinkError("stdout was closed early (broken pipe, e.g. '| head'); the frames before were "
                            "written") from None
        except OSError as exc:
            raise _os_error(self.path or Path("<stdout>"), exc) from None
        self.count += 1

    def close(self) -> None:
        if self._f is not None and self.path is not None:
            self._f.close()
        self._f = None


_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class VideoSink:
    """The annotated frames as a video (``cv2.VideoWriter``), written beside and renamed when closed."""

    def __init__(self, path: Path, fps: float | None) -> None:
        if path.suffix.lower() not in _FOURCC:
            raise SinkError(f"{path}: unknown video type; name it .mp4, .avi, .mov or .mkv")
        self.path, self.fps = path, fps or 30.0
        self._tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.count = 0

    def write(self, r: FrameResult) -> None:
        img = r.overlay()
        size = (img.shape[1], img.shape[0])
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*_FOURCC[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, size)
            if not self._writer.isOpened():
                self._writer = None
                raise SinkError(f"{self.path}: OpenCV cannot write this video type here; try .avi (MJPG)")
            self._size = size
        if size != self._size:  # frames of another size (a chain of sources): fit them to the first
            img = cv2.resize(img, self._size)
        self._writer.write(img)
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(self._tmp, self.path)


class OverlaySink:
    """One PNG per frame, named after the frame (names are unique within a run)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def write(self, r: FrameResult) -> None:
        from heatdeploy.fsutil import atomic_write_bytes

        ok, buf = cv2.imencode(".png", r.overlay())
        path = self.folder / f"{r.frame.name}.png"
        try:
            atomic_write_bytes(path, buf.tobytes())
        except OSError as exc:
            raise _os_error(path, exc) from None
        self.count += 1

    def close(self) -> None:
        pass


class RecordsSink:
    """All records in memory, written as one JSON list when closed (image runs: predictions.json)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []

    @property
    def count(self) -> int:
        return len(self.records)

    def write(self, r: FrameResult) -> None:
        self.records.append(r.record)

    def discard(self) -> None:
        """After an error: no predictions.json rather than one that looks complete (the JSON Lines hold the
        frames done)."""
        self.path = None

    def close(self) -> None:
        if self.path is None or not self.records:
            return
        from heatdeploy.fsutil import atomic_write_text

        try:
            atomic_write_text(self.path, json.dumps(self.records, indent=2))
        except OSError as exc:
            raise _os_error(self.path, exc) from None


Sink = JsonlSink | VideoSink | OverlaySink | RecordsSink

__all__ = ["LABELS", "FrameResult", "JsonlSink", "OverlaySink", "RecordsSink", "Sink", "SinkError", "VideoSink"]
