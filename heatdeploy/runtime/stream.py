"""A bounded streaming pipeline: reader -> preprocess -> engine -> decode + sinks, each stage in its own thread.

Stages hand batches over through small bounded queues, so decoding a frame, preprocessing the next and
running the engine on a third overlap (OpenCV and the engines release the GIL), and no more than a few
frames are ever in memory however long the stream. The pieces are the ``Pipeline``'s own preprocessor,
backend and decoder: streaming adds no second implementation of any of them.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np

from heatdeploy.errors import HeatdeployError
from heatdeploy.runtime.boxes import BoxFile, Crops, crops, full_frame_box, track_box
from heatdeploy.runtime.pipeline import Pipeline, Prediction
from heatdeploy.runtime.sinks import FrameResult, JsonlSink, OverlaySink, RecordsSink, Sink, VideoSink
from heatdeploy.runtime.smoothing import OneEuroFilter
from heatdeploy.runtime.sources import Frame

STAGES = ("read", "preprocess", "infer", "decode", "sinks")
_END = object()


class StreamError(HeatdeployError, ValueError):
    """A streaming option that cannot work with this model or input; the message says which and why."""


@dataclass
class _Failed:
    exc: BaseException


@dataclass
class StreamStats:
    """Frames done, throughput and the mean time per frame of each stage (seconds)."""

    frames: int = 0
    started: float = field(default_factory=time.perf_counter)
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    interrupted: bool = False
    _recent: deque = field(default_factory=lambda: deque(maxlen=64), repr=False)

    def add(self, stage: str, seconds: float) -> None:
        self.stage_s[stage] += seconds

    def frame_done(self, n: int = 1) -> None:
        self.frames += n
        self._recent.append((time.perf_counter(), self.frames))

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def fps(self) -> float:
        """Throughput over the last frames (the whole run while it is short)."""
        if len(self._recent) >= 2 and self._recent[-1][0] > self._recent[0][0]:
            (t0, f0), (t1, f1) = self._recent[0], self._recent[-1]
            return (f1 - f0) / (t1 - t0)
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    def per_frame_ms(self) -> dict[str, float]:
        return {k: 1e3 * v / max(self.frames, 1) for k, v in self.stage_s.items()}

    def line(self) -> str:
        stages = "  ".join(f"{k} {v:.1f}" for k, v in self.per_frame_ms().items())
        return f"{self.frames} frames  {self.fps:.1f} fps  ms/frame: {stages}"

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "seconds": round(self.elapsed, 3),
                "fps": round(self.frames / self.elapsed, 2) if self.elapsed > 0 else 0.0,
                "ms_per_frame": {k: round(v, 3) for k, v in self.per_frame_ms().items()},
                "interrupted": self.interrupted}


# --- the pipeline --------------------------------------------------------------------------------


@dataclass
class StreamConfig:
    """How to stream: batch size, frame limit, queue depth, boxes, smoothing and overlay labels."""

    batch_size: int = 1
    max_frames: int | None = None
    depth: int = 2  # batches waiting between two stages
    boxes: Callable[[Frame], np.ndarray | None] | None = None
    smooth: OneEuroFilter | None = None
    labels: str = "none"
    fps: float | None = None  # for timestamps when the source has none (images)
    track: bool = False  # crop each frame around the previous frame's keypoints (top-down models)
    track_min_present: float = 0.3  # fraction of keypoints present below which tracking falls back


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            continue
    return _END


def _stage(fn: Callable[[], None], out: queue.Queue, stop: threading.Event) -> threading.Thread:
    def body() -> None:
        try:
            fn()
        except BaseException as exc:  # handed to the main thread, which re-raises it
            _put(out, _Failed(exc), stop)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


class Stream:
    """Runs ``source`` through ``pipe`` into ``sinks``; :meth:`run` returns the stats (also on Ctrl-C)."""

    def __init__(self, pipe: Pipeline, source: Any, sinks: Sequence[Sink], config: StreamConfig | None = None,
                 on_progress: Callable[[StreamStats], None] | None = None) -> None:
        self.pipe, self.source, self.sinks = pipe, source, list(sinks)
        self.cfg = config or StreamConfig()
        if self.cfg.batch_size < 1:
            raise StreamError(f"batch size {self.cfg.batch_size}: expected 1 or more")
        if self.cfg.smooth is not None and pipe.spec.multi_instance:
            raise StreamError("--smooth: this model finds several people per frame without identities across "
                              "frames, so their keypoints cannot be filtered over time; drop --smooth")
        if self.cfg.boxes is not None and pipe.spec.multi_instance:
            raise StreamError("--boxes: this model finds the people in a frame itself (bottom-up); boxes are for "
                              "top-down models; drop --boxes")
        if self.cfg.track and pipe.spec.multi_instance:
            raise StreamError("--track: this model finds several people per frame; tracking one box from the "
                              "previous frame needs a single-person (top-down) model")
        if self.cfg.track and self.cfg.batch_size != 1:
            raise StreamError(f"--track needs batch size 1 (got {self.cfg.batch_size}): each frame's box comes "
                              "from the frame before")
        self.on_progress = on_progress
        self._next_box: queue.Queue = queue.Queue(1)  # tracking: main thread -> preprocess, one box per frame
        self.stats = StreamStats()
        self._stop = threading.Event()
        self._tracked = False  # tracking: the first frame has no previous one
        depth = max(1, self.cfg.depth)
        self._frames: queue.Queue = queue.Queue(depth * self.cfg.batch_size)
        self._prepped: queue.Queue = queue.Queue(depth)
        self._inferred: queue.Queue = queue.Queue(depth)

    # each stage reads its input queue until _END, then passes _END on
    def _read(self) -> None:
        it: Iterator[Frame] = iter(self.source)
        n = 0
        try:
            while self.cfg.max_frames is None or n < self.cfg.max_frames:
                t0 = time.perf_counter()
                frame = next(it, None)
                if frame is None:
                    break
                self.stats.add("read", time.perf_counter() - t0)
                if not _put(self._frames, frame, self._stop):
                    return
                n += 1
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        _put(self._frames, _END, self._stop)

    def _preprocess(self) -> None:
        done = False
        while not done:
            frames: list[Frame] = []
            while len(frames) < self.cfg.batch_size:
                item = _get(self._frames, self._stop)
                if isinstance(item, _Failed):
                    _put(self._prepped, item, self._stop)
                    return
                if item is _END:
                    done = True
                    break
                frames.append(item)
            if frames:
                boxes = self._boxes(frames)
                if boxes is _END:
                    return
                t0 = time.perf_counter()
                cut = crops(frames, boxes, self.pipe.spec.input.resize == "crop")
                batch = self.pipe.preprocess(cut.images, cut.boxes) if cut.images else None
                self.stats.add("preprocess", time.perf_counter() - t0)
                if not _put(self._prepped, (frames, batch, cut), self._stop):
                    return
        _put(self._prepped, _END, self._stop)

    def _boxes(self, frames: list[Frame]) -> Any:
        """Each frame's boxes: the user's, else (tracking) the previous frame's, else None (the whole frame)."""
        boxes = [None if self.cfg.boxes is None else self.cfg.boxes(f) for f in frames]
        if self.cfg.track and self._tracked:
            tracked = _get(self._next_box, self._stop)  # waits for the previous frame's keypoints
            if tracked is _END:
                return _END
            boxes[0] = tracked if boxes[0] is None else boxes[0]  # a user box for this frame wins
        self._tracked = True
        return boxes

    def _infer(self) -> None:
        while True:
            item = _get(self._prepped, self._stop)
            if item is _END or isinstance(item, _Failed):
                _put(self._inferred, item, self._stop)
                return
            frames, batch, cut = item
            t0 = time.perf_counter()
            outputs = None if batch is None else self.pipe.infer(batch.tensor)
            self.stats.add("infer", time.perf_counter() - t0)
            if not _put(self._inferred, (frames, batch, cut, outputs), self._stop):
                return

    def run(self) -> StreamStats:
        """Stream until the source ends, ``max_frames`` is reached, an error (re-raised) or Ctrl-C."""
        stop = self._stop
        threads = [_stage(self._read, self._frames, stop), _stage(self._preprocess, self._prepped, stop),
                   _stage(self._infer, self._inferred, stop)]
        last = 0.0
        restore = self._catch_sigint()
        failed = True
        try:
            while not self.stats.interrupted:
                try:
                    item = self._inferred.get(timeout=0.05)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                if isinstance(item, _Failed):
                    raise item.exc
                self._finish(*item)
                if self.on_progress is not None and time.perf_counter() - last > 0.25:
                    last = time.perf_counter()
                    self.on_progress(self.stats)
            failed = False
        except KeyboardInterrupt:
            self.stats.interrupted = True
            failed = False
        finally:
            if restore is not None:
                signal.signal(signal.SIGINT, restore)
            stop.set()
            for t in threads:
                t.join(timeout=2.0)
            if not threads[0].is_alive():  # a reader stuck in a stalled stream's read: not released under it
                self.source_close()
            self._close_sinks(failed)
        if self.on_progress is not None:
            self.on_progress(self.stats)
        return self.stats

    def _catch_sigint(self) -> Any:
        """Ctrl-C sets a flag checked between frames, so no frame is half written to the sinks.

        Returns the previous handler (None when not on the main thread, where KeyboardInterrupt is caught).
        """
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum: int, frame: Any) -> None:
            if self.stats.interrupted:  # a second Ctrl-C: the stream did not stop (a hung camera?); leave now
                raise KeyboardInterrupt
            self.stats.interrupted = True

        return signal.signal(signal.SIGINT, handler)

    def source_close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    def _close_sinks(self, failed: bool) -> None:
        """Close every sink; after an error, sinks with ``discard`` (whole-file outputs) write nothing."""
        errors = []
        for s in self.sinks:
            try:
                discard = getattr(s, "discard", None)
                discard() if failed and discard is not None else s.close()
            except Exception as exc:  # close every sink, then report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]

    def _finish(self, frames: list[Frame], batch: Any, cut: Crops, outputs: dict[str, np.ndarray] | None) -> None:
        t0 = time.perf_counter()
        spec = self.pipe.spec
        pred = None if batch is None else self.pipe.decode(outputs, batch.transforms, batch.image_sizes)  # type: ignore[arg-type]
        last_single = cut.counts[-1] == 1 and not cut.several[-1]
        if self.cfg.track:  # from the raw keypoints: smoothing must not steer the crop
            box = track_box(pred.keypoints[-1], pred.present[-1], self.cfg.track_min_present) \
                if pred is not None and last_single else None
            _put(self._next_box, box, self._stop)
        starts = list(accumulate(cut.counts, initial=0))  # first crop of each frame (plain ints: no numpy call)
        if self.cfg.smooth is not None and pred is not None:
            self._smooth(pred, [(f, starts[i]) for i, f in enumerate(frames)
                                if cut.counts[i] == 1 and not cut.several[i]])
        t1 = time.perf_counter()
        self.stats.add("decode", t1 - t0)
        records = _BatchRecords(pred, spec.keypoints)  # built on first use: only the JSON sinks need them
        for i, frame in enumerate(frames):
            a, b = starts[i], starts[i + 1]
            sl = slice(a, b) if cut.several[i] else a
            k = spec.num_keypoints
            arrays = (pred.keypoints[sl], pred.scores[sl], pred.presence[sl], pred.present[sl]) if pred is not None \
                else (np.zeros((0, k, 2)), np.zeros((0, k)), np.zeros((0, k)), np.zeros((0, k), bool))
            make = partial(self._record, frame, cut, i, a, b, records)
            result = FrameResult(frame, make, *arrays, spec.skeleton, spec.keypoints, self.cfg.labels)
            for s in self.sinks:
                s.write(result)
        self.stats.add("sinks", time.perf_counter() - t1)
        self.stats.frame_done(len(frames))

    def _record(self, frame: Frame, cut: Crops, i: int, a: int, b: int, records: _BatchRecords) -> dict[str, Any]:
        """Frame ``i``'s JSON record: its crops ``a:b`` of the batch (one person, or a list of instances)."""
        rec: dict[str, Any] = {"frame": frame.index, "name": frame.name, "timestamp": _round(frame.timestamp),
                               ("image" if self.source.kind == "images" else "source"): frame.source}
        box = None if cut.boxes is None else [[round(float(v), 2) for v in bx] for bx in cut.boxes[a:b]]
        if cut.several[i]:
            h, w = frame.image.shape[:2]
            rec |= {"height": h, "width": w, "instances": [{"box": bx, "keypoints": r["keypoints"]}
                                                           for bx, r in zip(box or [], records()[a:b], strict=True)]}
        else:
            rec |= ({"box": box[0]} if box else {}) | records()[a]
        return rec

    def _smooth(self, pred: Prediction, single: list[tuple[Frame, int]]) -> None:
        """Filter the frames with one person, in order (each depends on the one before)."""
        assert self.cfg.smooth is not None
        fps = self.cfg.fps or 30.0
        for f, j in single:
            t = f.timestamp if f.timestamp is not None else f.index / fps
            pred.keypoints[j] = self.cfg.smooth(pred.keypoints[j], t, pred.present[j][:, None])


class _BatchRecords:
    """A batch's per-crop records (``Prediction.to_records``), made once on the first call."""

    def __init__(self, pred: Prediction | None, names: Sequence[str]) -> None:
        self.pred, self.names = pred, names
        self._records: list[dict[str, Any]] | None = None

    def __call__(self) -> list[dict[str, Any]]:
        if self._records is None:
            self._records = [] if self.pred is None else self.pred.to_records(self.names)
        return self._records


def default_sinks(source: Any, out: Path | None, *, jsonl: str | None = None, video: Path | None = None,
                  overlays: bool = True, keep_records: bool = False) -> tuple[list[Sink], RecordsSink]:
    """The outputs of ``heatdeploy run``: ``out/predictions.jsonl`` always; for images ``predictions.json``
    and ``overlays/``, for streams ``annotated.mp4`` (or ``video``); ``jsonl`` ('-': stdout) in addition.
    """
    images = source.kind == "images"
    records = RecordsSink(out / "predictions.json" if out is not None and images else None)
    sinks: list[Sink] = [records] if images and (keep_records or out is not None) else []
    if jsonl is not None:
        sinks.append(JsonlSink(None if jsonl == "-" else Path(jsonl)))
    if out is not None:
        sinks.append(JsonlSink(out / "predictions.jsonl"))
        if images and overlays:
            sinks.append(OverlaySink(out / "overlays"))
    if video is None and out is not None and not images:
        video = out / "annotated.mp4"
    if video is not None:
        sinks.append(VideoSink(video, source.fps))
    return sinks, records


def _round(t: float | None) -> float | None:
    return None if t is None else round(float(t), 4)


def run_stream(pipe: Pipeline, source: Any, sinks: Sequence[Sink], config: StreamConfig | None = None,
               on_progress: Callable[[StreamStats], None] | None = None) -> StreamStats:
    """Stream every frame of ``source`` through ``pipe`` into ``sinks``; see :class:`Stream`."""
    return Stream(pipe, source, sinks, config, on_progress).run()


__all__ = ["STAGES", "BoxFile", "Stream", "StreamConfig", "StreamError", "StreamStats", "default_sinks",
           "full_frame_box", "run_stream", "track_box"]  # BoxFile, full_frame_box, track_box: from runtime.boxes
