"""ONNX Runtime INT8 vs FP32 latency on this CPU, for the reference model and the MobileNet test model.

Both artifacts come from the real path: ``export_bundle`` (the MobileNet through its own ONNX export,
which keeps its extra ``landmarks`` output) and ``add_onnx_int8(bundle, "synthetic:128")`` with its
defaults; sessions are made by the runtime's ONNX Runtime backend, as deployment makes them (ORT's default
optimisers: the INT8 file pins its FP32 layers itself). For each model, batch 1 and 8, 1 and 2 intra-op threads:
FP32 and INT8 run interleaved (alternating which goes first), on the same preprocessed synthetic
images, and the medians and p90s are printed side by side with their ratios. Also printed: what runs
INT8 after ORT's graph optimisation (the QuantizeReport's op summary).

1 thread is the figure to quote (target: reference INT8 >= 1.7x FP32); 2 threads on a 2-core machine
shared with other work are noisy. Quantization results are cached (``~/.cache/heatdeploy``), so a
second run spends its time measuring.

    nice -n 10 python benchmarks/int8_speed.py [--rounds-scale 1.0]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TARGET = 1.7  # reference INT8 speed-up over FP32 at 1 thread
BATCHES = (1, 8)
THREADS = (1, 2)
ROUNDS = {1: 60, 8: 16}  # interleaved rounds per (batch); each round runs FP32 once and INT8 once
ROUND_BUDGET_S = 12.0  # per configuration: stop early on a slow (busy) machine
WARMUP = 3


@dataclass
class Row:
    model: str
    batch: int
    threads: int
    fp32: np.ndarray  # seconds per run
    int8: np.ndarray

    def stats(self, t: np.ndarray) -> tuple[float, float]:
        return float(np.median(t)), float(np.percentile(t, 90))

    def line(self) -> str:
        f_med, f_p90 = self.stats(self.fp32)
        i_med, i_p90 = self.stats(self.int8)
        noisy = "  (noisy)" if self.threads > 1 else ""
        return (f"{self.model:<10} {self.batch:>5} {self.threads:>7}   {f_med * 1e3:8.2f} / {f_p90 * 1e3:8.2f}   "
                f"{i_med * 1e3:8.2f} / {i_p90 * 1e3:8.2f}   {f_med / i_med:5.2f}x / {f_p90 / i_p90:5.2f}x"
                f"   {len(self.fp32):>4}{noisy}")


def cpu_name() -> str:
    """CPU model and whether it has VNNI (the INT8 dot-product instructions ORT's kernels use)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
                platform.machine())
    flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    vnni = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags]
    return f"{name} ({', '.join(vnni) if vnni else 'no VNNI'})"


def build_bundles(root: Path, log: Callable[[str], None]) -> dict[str, tuple[Path, dict]]:
    """Reference and MobileNet bundles with onnx-fp32 and onnx-int8 (defaults); returns their op summaries."""
    from heatdeploy.api import export_bundle
    from heatdeploy.calibration.artifact import add_onnx_int8
    from heatdeploy.models.mobilenet import export_mobilenet_bundle

    out: dict[str, tuple[Path, dict]] = {}
    for name, export in (("reference", lambda p: export_bundle("reference", p)),
                         ("mobilenet", export_mobilenet_bundle)):
        t0 = time.perf_counter()
        bundle = root / name
        export(bundle)
        _, report = add_onnx_int8(bundle, "synthetic:128")
        log(f"{name}: bundle built in {time.perf_counter() - t0:.0f} s (INT8 cache: {report.cache})")
        out[name] = (bundle, {"ops": report.ops, "excluded": len(report.excluded), "final": report.final,
                              "search": report.search, "self_contained": report.self_contained})
    return out


def inputs_for(bundle: Path, n: int, seed: int = 7) -> np.ndarray:
    """``n`` preprocessed synthetic images in the model's input layout."""
    from heatdeploy.bundle import Bundle
    from heatdeploy.models.synthetic import render_batch
    from heatdeploy.runtime.preprocess import Preprocessor

    spec = Bundle.load(bundle).spec
    images, *_ = render_batch(np.random.default_rng(seed), n, spec.input.height, spec.input.width)
    return Preprocessor(spec.input)(list(images)).tensor


def measure(bundle: Path, model: str, batch: int, threads: int, x: np.ndarray, scale: float) -> Row:
    """Interleaved FP32/INT8 runs on sessions made like the runtime's; order alternates every round."""
    from heatdeploy.bundle import Bundle
    from heatdeploy.runtime.backends.onnxruntime import load

    b = Bundle.load(bundle)
    opts = {"intra_op_threads": threads, "inter_op_threads": 1}
    sessions = {p: load(b.path_of(b.artifact(name=f"onnx-{p}")), opts) for p in ("fp32", "int8")}
    name = b.spec.input.name
    feeds = {name: np.ascontiguousarray(x[:batch])}
    for s in sessions.values():
        for _ in range(WARMUP):
            s.infer(feeds)
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    rounds = max(3, int(ROUNDS[batch] * scale))
    start = time.perf_counter()
    for r in range(rounds):
        order = ("fp32", "int8") if r % 2 == 0 else ("int8", "fp32")
        for p in order:
            t0 = time.perf_counter()
            sessions[p].infer(feeds)
            times[p].append(time.perf_counter() - t0)
        if time.perf_counter() - start > ROUND_BUDGET_S * scale and r >= 4:
            break
    return Row(model, batch, threads, np.array(times["fp32"]), np.array(times["int8"]))


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds-scale", type=float, default=1.0, help="scale the number of interleaved rounds")
    args = ap.parse_args(argv)
    t_all = time.perf_counter()

    def log(s: str) -> None:
        print(s, flush=True)

    log(f"ONNX Runtime {ort.__version__} CPUExecutionProvider on {cpu_name()}")
    with tempfile.TemporaryDirectory(prefix="heatdeploy-int8-speed-") as tmp:
        bundles = build_bundles(Path(tmp), log)
        rows: list[Row] = []
        for model, (bundle, _) in bundles.items():
            x = inputs_for(bundle, max(BATCHES))
            for threads in THREADS:
                for batch in BATCHES:
                    rows.append(measure(bundle, model, batch, threads, x, args.rounds_scale))
    log("")
    log("latency per run, interleaved FP32/INT8 (ms); speed-up = FP32 / INT8")
    log(f"{'model':<10} {'batch':>5} {'threads':>7}   {'FP32 median / p90':>19}   {'INT8 median / p90':>19}   "
        f"{'speed-up med / p90':>18}   runs")
    for row in rows:
        log(row.line())
    log("2-thread rows: 2 cores shared with other work here, so they are noisy; quote 1 thread.")
    log("")
    log("what runs INT8 after ORT optimisation (level 'all', as the runtime's session):")
    for model, (_, info) in bundles.items():
        ops = info["ops"]
        counts = ops.get("op_counts", {})
        int8_ops = {k: v for k, v in counts.items() if any(t in k for t in ("QLinear", "Integer", "QGemm"))}
        final = info["final"]
        agree = (f"; vs FP32 {final['mean_px']:.3f} heatmap px mean, existence flips {final['flip_rate']:.1%}"
                 if final else "")
        log(f"  {model}: {ops.get('summary', '')}; {info['excluded']} nodes kept FP32{agree}")
        log(f"    INT8 kernels: {', '.join(f'{k} x{v}' for k, v in sorted(int8_ops.items())) or 'none'}")
        if ops.get("without_setting"):
            log(f"    (with ORT's WeightBiasQuantization disabled: {ops['without_setting']})")
        contained = info.get("self_contained")
        if contained:
            log(f"    plain onnxruntime.InferenceSession == runtime: {contained['identical']} "
                f"(max |diff| {max(contained['max_abs_diff'].values()):.2e})")
        found = info.get("search")
        if found:
            log(f"    search: {found['note']}")
            for pt in sorted(found["points"], key=lambda q: q["latency_ms"]):
                log(f"      {pt['name']:<16} {pt['kept']:>4} FP32  {pt['latency_ms']:8.2f} ms  {pt['mean_px']:.3f} px  "
                    f"flips {pt['flip_rate']:.2%}  {'holds' if pt['holds'] else 'over'}"
                    f"{'  pareto' if pt['pareto'] else ''}")
            prof = found.get("profile") or {}
            for side in ("fp32", "int8"):
                if side in prof:
                    top = ", ".join(f"{k} {v:.2f}" for k, v in list(prof[side]["top"].items())[:6])
                    log(f"      profile {side}: {prof[side]['total_ms']:.2f} ms/run ({top})")

    status = 0
    for row in rows:
        if row.model == "reference" and row.threads == 1:
            ratio = float(np.median(row.fp32) / np.median(row.int8))
            verdict = "meets" if ratio >= TARGET else "BELOW"
            log(f"reference, batch {row.batch}, 1 thread: INT8 {ratio:.2f}x FP32 — {verdict} the {TARGET}x target")
            if ratio < TARGET:
                status = 1
    log(f"total {time.perf_counter() - t_all:.0f} s")
    if status:
        print("note: a busy machine lowers INT8 speed-ups; re-run on a quiet one before concluding",
              file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
