"""ONNX Runtime vs OpenVINO on the shipped reference model: FP32, bf16 and INT8, measured side by side.

One run builds its own bundle from the shipped reference in a temporary folder (ONNX FP32 export, ORT
INT8 with ``quantize_onnx_int8``, OpenVINO f32 / bf16 / NNCF INT8 from the same synthetic calibration
data), loads every engine through the runtime backends exactly as deployment does, and times them on the
very same input tensors (the first images of the shipped evaluation split, preprocessed once):

- batch 1 and 8, with 1 thread and with all threads, synchronous ``infer``: latency p50 / p90 and
  throughput (images per second = batch / mean latency);
- OpenVINO async (``AsyncInferQueue`` through ``infer_many``, THROUGHPUT hint) at batch 1, all threads,
  against ORT FP32 sync timed in the same rounds;
- each ratio to ORT FP32 in the same setting: p50 speed-up (ORT FP32 p50 / engine p50) and throughput.

Engines are timed round-robin (a few runs of each, then the next, repeated), so a load change on a shared
machine hits every engine alike rather than whichever ran last. The default run takes 2-3 minutes on
2 cores.

    python benchmarks/engines.py [--rounds 8] [--calib-size 128] [--json results.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

BATCHES = (1, 8)
WARMUP = 3


@dataclass
class Row:
    engine: str
    batch: int
    threads: int
    mode: str  # sync | async
    p50_ms: float
    p90_ms: float
    images_per_s: float
    runs: int
    max_abs_diff_heatmaps: float | None = None  # vs ORT FP32 on the same batch
    speedup_p50: float | None = None  # ORT FP32 p50 / this p50
    throughput_ratio: float | None = None  # this images/s / ORT FP32 images/s


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_bundle(root: Path, calib_size: int) -> tuple[Any, dict[str, Any]]:
    """Reference -> ONNX FP32, ORT INT8 (if missing), OpenVINO f32 / bf16 / INT8; returns the bundle + timings."""
    from heatdeploy.api import export_bundle
    from heatdeploy.bundle import Bundle
    from heatdeploy.exporters.openvino import add_openvino_artifact, summary_line
    from heatdeploy.runtime.backends.openvino import core

    timings: dict[str, Any] = {}
    t0 = time.perf_counter()
    export_bundle("reference", root)
    timings["export_onnx_s"] = time.perf_counter() - t0
    bundle = Bundle.load(root)
    if not any(a.name == "onnx-int8" for a in bundle.artifacts):
        t0 = time.perf_counter()
        _add_ort_int8(bundle, calib_size)
        timings["ort_int8_s"] = time.perf_counter() - t0
    caps = [str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    precisions = ["fp32", "int8"] + (["bf16"] if "BF16" in caps else [])
    if "BF16" not in caps:
        log("this CPU has no bf16: the OpenVINO bf16 row is left out")
    for p in precisions:
        t0 = time.perf_counter()
        art = add_openvino_artifact(root, p, calib="synthetic", calib_size=calib_size, seed=0)
        timings[f"openvino_{p}_s"] = time.perf_counter() - t0
        log(summary_line(art))
    return Bundle.load(root), timings


def _add_ort_int8(bundle: Any, calib_size: int) -> None:
    """ORT INT8 from the same synthetic calibration data (heatmap-aware base rule; no sensitivity pass)."""
    from heatdeploy.calibration.quantize import quantize_onnx_int8
    from heatdeploy.calibration.sources import open_source

    src = bundle.path_of(bundle.artifact("onnx-fp32"))
    out = bundle.root / "model.int8.onnx"
    source = open_source(bundle.spec, "synthetic", size=calib_size, seed=0)
    report = quantize_onnx_int8(src, out, bundle.spec, source, keep_fp32="base", use_cache=False)
    log(f"onnx-int8: {report.summary()}")
    bundle.add_file(out, "model.int8.onnx", name="onnx-int8", format="onnx", precision="int8",
                    backend="onnxruntime", tools={"onnxruntime": report.options["onnxruntime"]},
                    calibration=report.to_manifest())
    bundle.save()


def inputs(spec: Any, n: int) -> np.ndarray:
    """The first ``n`` shipped evaluation images, preprocessed once by the runtime's preprocessor."""
    from heatdeploy.models.evalset import EVAL_DIR, read_labelled_set
    from heatdeploy.runtime.preprocess import Preprocessor, load_image

    split = read_labelled_set(EVAL_DIR)
    images = [load_image(f) for f in split.files[:n]]
    return Preprocessor(spec.input)(images).tensor.astype(np.float32)


def engines(bundle: Any, threads: int) -> dict[str, tuple[Any, str]]:
    """Label -> (backend, input name) for every engine present, each limited to ``threads`` threads."""
    from heatdeploy.runtime.backends.base import load_backend

    ort = {"intra_op_threads": threads, "inter_op_threads": 1}
    ov = {"num_threads": threads, "num_streams": 1, "performance_hint": "LATENCY"}
    table = [("ORT FP32", "onnx-fp32", ort), ("ORT INT8", "onnx-int8", ort), ("OpenVINO f32", "openvino-fp32", ov),
             ("OpenVINO bf16", "openvino-bf16", ov), ("OpenVINO INT8", "openvino-int8", ov)]
    out = {}
    names = {a.name for a in bundle.artifacts}
    for label, name, opts in table:
        if name in names:
            art = bundle.artifact(name)
            out[label] = (load_backend(art.backend, str(bundle.path_of(art)), opts), bundle.spec.input.name)
    return out


def time_sync(runners: dict[str, Callable[[], Any]], rounds: int, per_round: int) -> dict[str, list[float]]:
    """Round-robin timing: ``per_round`` runs of each engine, then the next, ``rounds`` times."""
    for fn in runners.values():
        for _ in range(WARMUP):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for label, fn in runners.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                samples[label].append(time.perf_counter() - t0)
    return samples


def sync_rows(bundle: Any, x8: np.ndarray, threads: int, rounds: int) -> list[Row]:
    loaded = engines(bundle, threads)
    rows: list[Row] = []
    for batch in BATCHES:
        x = np.ascontiguousarray(x8[:batch])
        runners = {label: (lambda b=b, n=n, x=x: b.infer({n: x})) for label, (b, n) in loaded.items()}
        ref = loaded["ORT FP32"][0].infer({loaded["ORT FP32"][1]: x})["heatmaps"]
        diffs = {label: float(np.max(np.abs(b.infer({n: x})["heatmaps"] - ref))) for label, (b, n) in loaded.items()}
        per_round = 4 if batch == 1 else 1
        log(f"timing batch {batch}, {threads} thread(s): {', '.join(loaded)}")
        samples = time_sync(runners, rounds, per_round)
        for label, s in samples.items():
            arr = np.asarray(s) * 1000.0
            rows.append(Row(label, batch, threads, "sync", float(np.percentile(arr, 50)), float(np.percentile(arr, 90)),
                            batch / (arr.mean() / 1000.0), len(arr), diffs[label]))
    return rows


def async_rows(bundle: Any, x8: np.ndarray, threads: int, images: int, rounds: int = 3) -> list[Row]:
    """OpenVINO AsyncInferQueue at batch 1 with the THROUGHPUT hint (streams chosen by OpenVINO).

    Its ratio is taken against ORT FP32 timed in the same rounds (sync, batch 1, same images), so a load
    change between the sync table and this phase does not leak into the ratio. Medians over rounds.
    """
    from heatdeploy.runtime.backends.base import load_backend

    feeds = [{"image": np.ascontiguousarray(x8[i % len(x8)][None])} for i in range(images)]
    ort_art = bundle.artifact("onnx-fp32")
    ort = load_backend("onnxruntime", str(bundle.path_of(ort_art)), {"intra_op_threads": threads})
    runners: dict[str, Callable[[], Any]] = {"ORT FP32": lambda: [ort.infer(f) for f in feeds]}
    streams: dict[str, str] = {}
    for label, name in (("OpenVINO f32", "openvino-fp32"), ("OpenVINO INT8", "openvino-int8")):
        art = bundle.artifact(name)
        backend = load_backend("openvino", str(bundle.path_of(art)),
                               {"performance_hint": "THROUGHPUT", "num_threads": threads})
        streams[label] = backend.properties().get("NUM_STREAMS", "?")
        runners[label] = lambda b=backend: b.infer_many(feeds)
    for fn in runners.values():
        fn()  # warm-up
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for label, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            rates[label].append(images / (time.perf_counter() - t0))
    base = float(np.median(rates["ORT FP32"]))
    rows = []
    for label in ("OpenVINO f32", "OpenVINO INT8"):
        rate = float(np.median(rates[label]))
        rows.append(Row(f"{label} async ({streams[label]} streams)", 1, threads, "async", float("nan"),
                        float("nan"), rate, images * rounds, throughput_ratio=rate / base))
    return rows


def add_ratios(rows: list[Row]) -> None:
    base = {(r.batch, r.threads): r for r in rows if r.engine == "ORT FP32"}
    for r in rows:
        b = base.get((r.batch, r.threads))
        if b is None:
            continue
        if r.mode == "sync":  # async rows carry a ratio against ORT FP32 timed in their own rounds
            r.speedup_p50 = b.p50_ms / r.p50_ms
            r.throughput_ratio = r.images_per_s / b.images_per_s


def print_table(rows: list[Row], header: dict[str, Any]) -> None:
    print(f"# heatdeploy engines benchmark — {header['model']}")
    for k in ("cpu", "cores", "openvino", "onnxruntime", "ov_cpu_capabilities", "loadavg_before", "loadavg_after"):
        print(f"#   {k}: {header.get(k)}")
    cols = ("engine", "batch", "threads", "p50 ms", "p90 ms", "img/s", "p50 speed-up vs ORT FP32",
            "throughput vs ORT FP32", "max|Δ heatmap| vs ORT FP32")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")

    def f(v: float | None, fmt: str, unit: str = "") -> str:
        return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt) + unit

    for r in rows:
        print(f"| {r.engine} | {r.batch} | {r.threads} | {f(r.p50_ms, '.2f')} | {f(r.p90_ms, '.2f')} | "
              f"{f(r.images_per_s, '.1f')} | {f(r.speedup_p50, '.2f', 'x')} | {f(r.throughput_ratio, '.2f', 'x')} | "
              f"{f(r.max_abs_diff_heatmaps, '.2e')} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=8, help="round-robin rounds per setting (default 8)")
    ap.add_argument("--calib-size", type=int, default=128, help="synthetic calibration images for both INT8s")
    ap.add_argument("--async-images", type=int, default=48, help="images per OpenVINO async run (0: skip)")
    ap.add_argument("--json", type=Path, help="also write the rows and the header as JSON")
    ap.add_argument("--keep", type=Path, help="build the bundle here and keep it (default: a temp dir)")
    args = ap.parse_args(argv)

    import onnxruntime
    import openvino as ov

    from heatdeploy.runtime.backends.openvino import core

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="heatdeploy-bench-"))
    root = args.keep or tmp / "bundle"
    try:
        if args.keep is not None and root.exists():
            shutil.rmtree(root)
        bundle, build = build_bundle(root, args.calib_size)
        x8 = inputs(bundle.spec, max(BATCHES))
        cores = os.cpu_count() or 1
        header = {
            "model": f"{bundle.spec.name} {bundle.spec.input.height}x{bundle.spec.input.width}",
            "cpu": _cpu_name(), "cores": cores, "openvino": ov.get_version().split("-")[0],
            "onnxruntime": onnxruntime.__version__,
            "ov_cpu_capabilities": ",".join(str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
            "loadavg_before": _loadavg(), "build_s": {k: round(v, 1) for k, v in build.items()},
        }
        rows: list[Row] = []
        for threads in sorted({1, cores}):
            rows += sync_rows(bundle, x8, threads, args.rounds)
        if args.async_images:
            rows += async_rows(bundle, x8, cores, args.async_images)
        add_ratios(rows)
        header["loadavg_after"] = _loadavg()
        header["total_s"] = round(time.perf_counter() - t_start, 1)
        print_table(rows, header)
        print(f"# build {header['build_s']}; total {header['total_s']} s")
        if args.json:
            args.json.write_text(json.dumps({"header": header, "rows": [asdict(r) for r in rows]}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
