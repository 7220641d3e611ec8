"""``heatdeploy bench``: latency and throughput of every artifact in a bundle, split by stage.

Each configuration times the whole pipeline (preprocess / infer / decode) and a bare engine call
on the same preprocessed tensor, interleaved, so the pipeline's overhead over the engine is a ratio
measured side by side rather than two numbers from different moments of a noisy machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heatdeploy.bundle import Bundle
from heatdeploy.runtime.backends.base import BackendError, engine_installed, extra_hint, thread_options
from heatdeploy.runtime.pipeline import Pipeline
from heatdeploy.runtime.preprocess import load_image


@dataclass
class BenchRow:
    artifact: str
    backend: str
    precision: str
    batch: int
    threads: int  # 0: the engine's default (all cores)
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput_ips: float  # images per second at p50
    preprocess_ms: float
    infer_ms: float
    decode_ms: float
    bare_infer_p50_ms: float
    overhead: float  # pipeline p50 / bare engine p50 on the same input
    vs_first: float = 1.0  # p50 speed-up over the first artifact at the same batch and threads


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def bench_one(pipe: Pipeline, images: Sequence[np.ndarray], iters: int, warmup: int) -> dict[str, float]:
    """Interleave full-pipeline and bare-engine runs on the same images; medians per stage, ms."""
    batch = pipe.preprocess(images)
    for _ in range(warmup):
        pipe.infer(batch.tensor)
        pipe.predict(images, batch_size=len(images))
    total, bare, stages = [], [], {"preprocess": [], "infer": [], "decode": []}
    for _ in range(iters):
        t0 = time.perf_counter()
        pipe.infer(batch.tensor)
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pred = pipe.predict(images, batch_size=len(images))
        total.append(time.perf_counter() - t0)
        for k in stages:
            stages[k].append(pred.timings[k])
    return {"p50": _pct(total, 50), "p90": _pct(total, 90), "p99": _pct(total, 99), "bare": _pct(bare, 50),
            **{k: _pct(v, 50) for k, v in stages.items()}}


def default_artifacts(bundle: Bundle) -> list[str]:
    """Every artifact whose engine is installed here (a box with one engine times what it can run);
    BackendError naming the extra when there is none."""
    names = [a.name for a in bundle.artifacts if engine_installed(a.backend)]
    if not names:
        have = ", ".join(f"{a.name} ({a.backend})" for a in bundle.artifacts)
        first = bundle.artifacts[0].backend if bundle.artifacts else "onnxruntime"
        raise BackendError(f"{bundle.root}: no engine installed for its artifacts {have}; {extra_hint(first)}")
    return names


def run_bench(bundle_dir: str | Path, *, artifacts: Sequence[str] | None = None, batches: Sequence[int] = (1, 8),
              threads: Sequence[int] = (1, 0), iters: int = 30, warmup: int = 5,
              images: Sequence[str | Path] | None = None,
              progress: Callable[[str], None] | None = None) -> list[BenchRow]:
    """Benchmark the chosen (default: all) artifacts at each batch size and thread count."""
    from heatdeploy.models.evalset import EVAL_DIR, read_labelled_set

    bundle = Bundle.load(bundle_dir, verify=False)  # each Pipeline.load verifies the artifact it times
    names = list(artifacts) if artifacts else default_artifacts(bundle)
    files = list(images) if images else read_labelled_set(EVAL_DIR).files
    arrays = [load_image(f) for f in files[:max(batches)]]
    while len(arrays) < max(batches):
        arrays += arrays[: max(batches) - len(arrays)]
    rows: list[BenchRow] = []
    for t in threads:
        for name in names:
            art = bundle.artifact(name)
            pipe = Pipeline.load(bundle_dir, artifact=name, options=thread_options(art.backend, t))
            for b in batches:
                if progress:
                    progress(f"{name} batch {b} threads {t or 'all'}")
                m = bench_one(pipe, arrays[:b], iters, warmup)
                rows.append(BenchRow(name, art.backend, art.precision, b, t, m["p50"], m["p90"], m["p99"],
                                     b / m["p50"] * 1e3, m["preprocess"], m["infer"], m["decode"], m["bare"],
                                     m["p50"] / m["bare"]))
    for r in rows:
        first = next(x for x in rows if x.batch == r.batch and x.threads == r.threads)
        r.vs_first = first.p50_ms / r.p50_ms
    return rows


def bench_plot(rows: Sequence[BenchRow], path: Path) -> Path:
    """A PNG of p50 latency per artifact and configuration (OpenCV: no plotting dependency)."""
    import cv2

    from heatdeploy.fsutil import atomic_write_bytes
    from heatdeploy.parity.report import BAR_COLOUR, hbar_chart

    labels = [f"{r.artifact} b{r.batch} t{r.threads or 'all'}" for r in rows]
    img = hbar_chart(labels, [(np.array([r.p50_ms for r in rows]), BAR_COLOUR, "p50 ms")],
                     "latency p50 (ms), lower is better", width=640, row=20)
    ok, buf = cv2.imencode(".png", img)
    atomic_write_bytes(path, buf.tobytes())
    return path


def rows_to_dicts(rows: Sequence[BenchRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
