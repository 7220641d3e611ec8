"""Streaming throughput of ``heatdeploy run VIDEO`` against the bare engine on the same frames, in one run.

A video is written from the shipped evaluation images (resized to the frame size asked for, MJPG). Each
round runs, back to back and alternating which goes first:

- **bare**: ``backend.infer`` at batch 1 on every frame, already preprocessed (the engine's own throughput);
- **stream**: the streaming pipeline (runtime/stream.py) from the video file: decode, preprocess, engine,
  keypoint decoding, JSON Lines sink, with its stages in their own threads.

It prints the median fps of both, their ratio (target: stream >= 0.95x bare) with each round's ratio and the
load average, and the streaming pipeline's mean time per frame in each stage (the stages overlap, so they can
add up to more than the frame time). With ``--ideal-engine`` the engine is replaced by a call that sleeps the
bare engine's median time with the GIL released and returns fixed outputs: what is left below 1.0 is the
stream's own cost to the engine thread (GIL waits, hand-overs), apart from the CPU its other stages take.
Then the batch-1 overhead of ``Pipeline.predict`` over the bare engine call (what ``heatdeploy bench`` calls
overhead; target <= 1.08), on a frame already at the input size and on a full-size frame, as the median
of paired ratios with the order rotating, and beside it preprocess + engine with no decoding: the floor that
any decoder, in Python or in the engine, adds to.
Without ``--bundle`` the reference model is exported to a temporary folder first (needs torch).

    nice -n 10 python benchmarks/stream.py [--bundle DIR] [--artifact NAME] [--frames 200] [--size 640x480]
        [--threads 1] [--rounds 3] [--ideal-engine]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

TARGET = 0.95  # streaming fps / bare engine fps
OVERHEAD = 1.08  # Pipeline.predict / bare engine call at batch 1


def write_clip(path: Path, frames: int, size: tuple[int, int]) -> Path:
    from heatdeploy.models.evalset import EVAL_DIR
    from heatdeploy.runtime.sources import find_images, load_image

    files = find_images(Path(EVAL_DIR))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    for i in range(frames):
        writer.write(cv2.resize(load_image(files[i % len(files)]), size))
    writer.release()
    return path


def bare_fps(pipe, tensors: list[np.ndarray]) -> float:
    t0 = time.perf_counter()
    for x in tensors:
        pipe.infer(x)
    return len(tensors) / (time.perf_counter() - t0)


def ideal_engine(pipe, tensors: list[np.ndarray]):
    """An engine stand-in: sleeps the real engine's median call time (GIL released), returns fixed outputs."""
    outputs = pipe.infer(tensors[0])
    times = []
    for x in tensors[:30]:
        t0 = time.perf_counter()
        pipe.infer(x)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)

    def infer(tensor: np.ndarray) -> dict[str, np.ndarray]:
        time.sleep(seconds)
        return dict(outputs)

    return infer


def overhead(pipe, image: np.ndarray, iters: int = 60) -> tuple[float, float, float, dict[str, float]]:
    """``Pipeline.predict`` at batch 1 vs the bare engine call on the same frame, in rotating order, with a third
    arm that preprocesses and calls the engine but decodes nothing (the floor any decode adds to): (median paired
    ratio predict/bare, median paired ratio floor/bare, bare ms, median ms per pipeline stage)."""
    feeds = {pipe.spec.input.name: pipe.preprocess([image]).tensor}
    arms = ("bare", "pipe", "floor")
    ratios, floors, bare, stages = [], [], [], {"preprocess": [], "infer": [], "decode": [], "total": []}
    for i in range(iters + 3):
        times = {}
        for what in arms[i % 3:] + arms[:i % 3]:
            t0 = time.perf_counter()
            if what == "bare":
                pipe.backend.infer(feeds)
            elif what == "floor":
                pipe.infer(pipe.preprocess([image]).tensor)
            else:
                pred = pipe.predict([image], batch_size=1)
            times[what] = time.perf_counter() - t0
        if i >= 3:  # warm-up
            ratios.append(times["pipe"] / times["bare"])
            floors.append(times["floor"] / times["bare"])
            bare.append(times["bare"])
            for k in ("preprocess", "infer", "decode"):
                stages[k].append(pred.timings[k])
            stages["total"].append(times["pipe"])
    return (statistics.median(ratios), statistics.median(floors), 1e3 * statistics.median(bare),
            {k: 1e3 * statistics.median(v) for k, v in stages.items()})


def stream_once(pipe, clip: Path, out: Path):
    from heatdeploy.runtime.sinks import JsonlSink
    from heatdeploy.runtime.sources import open_source
    from heatdeploy.runtime.stream import StreamConfig, run_stream

    stats = run_stream(pipe, open_source([str(clip)]), [JsonlSink(out)], StreamConfig(batch_size=1))
    return stats.frames / stats.elapsed, stats.per_frame_ms()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, help="bundle or .onnx (default: export the reference model)")
    ap.add_argument("--artifact", help="artifact name in the bundle, e.g. openvino-int8 (default: FP32)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--size", default="640x480", help="frame size WxH of the generated video")
    ap.add_argument("--threads", type=int, default=1, help="engine threads (0: engine default)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ideal-engine", action="store_true",
                    help="a GIL-free sleep of the bare engine's time instead of the engine (see above)")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))

    from heatdeploy.runtime import Pipeline
    from heatdeploy.runtime.backends.base import thread_options
    from heatdeploy.runtime.sources import open_source

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bundle = args.bundle
        if bundle is None:
            from heatdeploy.api import export_bundle

            bundle = export_bundle("reference", tmp / "bundle")
        probe = Pipeline.load(bundle, artifact=args.artifact)
        pipe = Pipeline.load(bundle, artifact=args.artifact, options=thread_options(probe.backend_name,
                                                                                     args.threads))
        clip = write_clip(tmp / "clip.avi", args.frames, size)
        tensors = [pipe.preprocess([f.image]).tensor for f in open_source([str(clip)])]
        bare_fps(pipe, tensors[:5])  # warm-up
        if args.ideal_engine:
            pipe.infer = ideal_engine(pipe, tensors)
        bare, streamed, stages = [], [], []
        for r in range(args.rounds):
            order = ("bare", "stream") if r % 2 == 0 else ("stream", "bare")
            for what in order:
                if what == "bare":
                    bare.append(bare_fps(pipe, tensors))
                else:
                    fps, ms = stream_once(pipe, clip, tmp / "p.jsonl")
                    streamed.append(fps)
                    stages.append(ms)
        b, s = statistics.median(bare), statistics.median(streamed)
        print(f"{pipe.backend_name} {pipe.artifact.name if pipe.artifact else bundle}, {args.frames} frames "
              f"{size[0]}x{size[1]}, {args.threads or 'default'} engine thread(s), {args.rounds} interleaved rounds")
        print(f"bare engine (batch 1, preprocessed tensors): {b:7.1f} fps   rounds: "
              + ", ".join(f"{v:.1f}" for v in bare))
        print(f"streaming (video -> JSON Lines):            {s:7.1f} fps   rounds: "
              + ", ".join(f"{v:.1f}" for v in streamed))
        ratio = s / b
        print(f"stream / bare: {ratio:.3f} (target >= {TARGET}) {'met' if ratio >= TARGET else 'NOT met'}; "
              f"rounds {', '.join(f'{x / y:.3f}' for x, y in zip(streamed, bare, strict=True))}; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
              + ("; ideal engine" if args.ideal_engine else ""))
        per_stage = {k: statistics.median(m[k] for m in stages) for k in stages[0]}
        print("streaming ms/frame per stage (overlapping threads): "
              + "  ".join(f"{k} {v:.2f}" for k, v in per_stage.items()))
        if args.ideal_engine:  # Pipeline.predict would call the stand-in, the bare call the engine
            return 0
        first = next(iter(open_source([str(clip)]))).image
        for label, image in (("a frame at the input size", cv2.resize(first, (pipe.spec.input.width,
                                                                               pipe.spec.input.height))),
                             (f"a {size[0]}x{size[1]} frame", first)):
            ratio_o, floor, bare_ms, st = overhead(pipe, image)
            print(f"Pipeline.predict / bare engine at batch 1, {label}: {ratio_o:.3f} (target <= {OVERHEAD}; "
                  f"bare {bare_ms:.2f} ms; " + ", ".join(f"{k} {v:.2f}" for k, v in st.items()) + " ms); "
                  f"preprocess + engine alone, no decoding: {floor:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
