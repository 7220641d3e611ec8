"""INT8 on real models, per engine: ours / stock / bf16 / f32 on accuracy and speed, side by side, one run.

For each model (the shipped reference, the MobileNet test model, BlazePose full, and the zoo's BlazePose
lite / heavy from npm ``@mediapipe/pose``): one FP32 bundle, then on the same calibration frames
heatdeploy's default ORT INT8, stock ``quantize_static`` defaults, heatdeploy's default OpenVINO INT8,
stock ``nncf.quantize`` defaults, OpenVINO bf16 and OpenVINO f32. Each is judged by the parity gate
(default tolerance) against ORT FP32 on the same evaluation frames, and all are timed at batch 1, 1
thread, bare engine calls, interleaved round-robin (so load from other processes hits all alike) — the
ratios are the result, not the milliseconds. Printed per model and engine: mean / p95 displacement (heatmap
px), existence flips, pass/fail, ms, speed vs the engine's own f32 and vs OpenVINO bf16.

    nice -n 10 python benchmarks/int8_real.py [--models reference,mobilenet,blazepose-full,blazepose-lite]

Slow on 2 shared cores: minutes per model (the per-layer sensitivity passes dominate; their results are
cached under ``$HEATDEPLOY_CACHE``). No figure is asserted here; tests pin the comparisons that hold.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("reference", "mobilenet", "blazepose-full", "blazepose-lite", "blazepose-heavy")
DEFAULT_MODELS = ("reference", "mobilenet", "blazepose-full", "blazepose-lite")
# candidate artifact -> (engine, recipe)
CANDIDATES = {
    "onnx-fp32": ("ORT", "f32"), "onnx-int8": ("ORT", "ours INT8"), "onnx-int8-stock": ("ORT", "stock INT8"),
    "openvino-fp32": ("OpenVINO", "f32"), "openvino-bf16": ("OpenVINO", "bf16"),
    "openvino-int8": ("OpenVINO", "ours INT8"), "openvino-int8-stock": ("OpenVINO", "stock INT8"),
}
ROUNDS, PER_ROUND = 15, 3


@dataclass
class Row:
    artifact: str
    engine: str
    recipe: str
    mean_hm: float
    p95_hm: float
    flips: int
    decisions: int
    passed: bool
    ms: float = float("nan")
    note: str = ""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build(model: str, root: Path, n_calib: int, n_eval: int) -> tuple[Path, Any, str]:
    """(bundle with onnx-fp32, evaluation data for parity, calibration string)."""
    from heatdeploy.api import export_bundle

    if model == "reference":
        return Path(export_bundle("reference", root / "bundle")), None, "synthetic:128"
    if model == "mobilenet":
        from heatdeploy.models.mobilenet import eval_images, export_mobilenet_bundle

        return export_mobilenet_bundle(root / "bundle"), eval_images(n_eval), "synthetic:128"
    from heatdeploy.models.blazepose import write_blazepose_images
    from heatdeploy.models.zoo import fetch, zoo_spec

    root.mkdir(parents=True, exist_ok=True)
    zoo_spec(model).save(root / "spec.json")
    write_blazepose_images(root / "calib", n_calib, seed=0)
    write_blazepose_images(root / "eval", n_eval, seed=1)
    bundle = export_bundle(str(fetch(model)), root / "bundle", spec_path=str(root / "spec.json"))
    return Path(bundle), str(root / "eval"), str(root / "calib")


def add_candidates(bundle: Path, calib: str, budget_s: float = 300.0) -> dict[str, str]:
    """Every candidate artifact; returns artifact -> note (the INT8 records' one-line summaries).

    heatdeploy's OpenVINO INT8 is the default path: the post-training mix, and QAT by distillation as a
    candidate when that mix does not hold the gate faster than bf16 (``budget_s`` bounds its training)."""
    from heatdeploy.calibration.artifact import add_onnx_int8
    from heatdeploy.calibration.stock import add_stock_int8, add_stock_nncf
    from heatdeploy.exporters.openvino import add_openvino_artifact

    notes: dict[str, str] = {}
    steps = (("onnx-int8", lambda: add_onnx_int8(bundle, calib)), ("onnx-int8-stock", lambda: add_stock_int8(
        bundle, calib)), ("openvino-fp32", lambda: add_openvino_artifact(bundle, "fp32")),
        ("openvino-bf16", lambda: add_openvino_artifact(bundle, "bf16")),
        ("openvino-int8", lambda: add_openvino_artifact(bundle, "int8", calib=calib, budget_s=budget_s)),
        ("openvino-int8-stock", lambda: add_stock_nncf(bundle, calib)))
    for name, step in steps:
        t0 = time.perf_counter()
        out = step()
        log(f"  {name} built in {time.perf_counter() - t0:.0f} s")
        cal = getattr(out, "calibration", None) or {}
        if name == "openvino-int8":
            fp = cal.get("float_part") or {}
            notes[name] = f"float part {fp.get('chosen', '?')}; " + "; ".join(cal.get("notes", [])[-2:])
            qat = cal.get("qat")
            if qat:
                notes[name] += (f"; QAT {'chosen' if qat.get('chosen') else 'not chosen'} ({qat.get('why')})"
                                + (f": {qat['summary']}" if qat.get("summary") else ""))
    return notes


def judge(bundle: Path, data: Any, limit: int) -> dict[str, Row]:
    from heatdeploy.parity import run_parity

    rows = {}
    for name, (engine, recipe) in CANDIDATES.items():
        if name == "onnx-fp32":
            rows[name] = Row(name, engine, recipe, 0.0, 0.0, 0, 0, True)
            continue
        r = run_parity(bundle, name, data=data, limit=limit)  # the default gate, FP32 noise floor included
        km = r.keypoints
        rows[name] = Row(name, engine, recipe, km.mean_displacement_hm, km.p95_displacement_hm,
                         km.flips_lost + km.flips_gained, int(getattr(km, "decisions", 0) or 0), r.passed)
    return rows


def time_all(bundle: Path, rows: dict[str, Row]) -> None:
    """Batch-1, 1-thread bare engine calls, round-robin over every candidate; median ms into the rows."""
    from heatdeploy.bundle import Bundle
    from heatdeploy.runtime.backends import onnxruntime as ort_backend
    from heatdeploy.runtime.backends import openvino as ov_backend
    from heatdeploy.runtime.backends.base import thread_options

    b = Bundle.load(bundle)
    spec = b.spec
    inp = spec.input
    feeds = {inp.name: np.random.default_rng(7).random(inp.tensor_shape(1), dtype=np.float32)}
    engines = {}
    for name, (engine, _) in CANDIDATES.items():
        path = b.path_of(b.artifact(name))
        if engine == "ORT":
            engines[name] = ort_backend.load(path, {**thread_options("onnxruntime", 1), "inter_op_threads": 1})
        else:
            engines[name] = ov_backend.load(path, thread_options("openvino", 1))
    for e in engines.values():
        for _ in range(3):
            e.infer(feeds)
    times: dict[str, list[float]] = {k: [] for k in engines}
    for r in range(ROUNDS):
        order = list(engines) if r % 2 == 0 else list(reversed(engines))
        for k in order:
            t0 = time.perf_counter()
            for _ in range(PER_ROUND):
                engines[k].infer(feeds)
            times[k].append((time.perf_counter() - t0) * 1e3 / PER_ROUND)
    for k, v in times.items():
        rows[k].ms = float(np.median(v))


def print_model(model: str, rows: dict[str, Row], notes: dict[str, str], seconds: float) -> None:
    bf16 = rows["openvino-bf16"].ms
    print(f"\n{model} (built and measured in {seconds:.0f} s; batch 1, 1 thread, interleaved; parity vs ORT FP32)")
    print(f"{'engine':<9} {'recipe':<11} {'mean hm px':>10} {'p95 hm px':>9} {'flips':>6} {'gate':>5} {'ms':>8} "
          f"{'vs f32':>7} {'vs OV bf16':>10}")
    for row in rows.values():
        f32 = rows["onnx-fp32" if row.engine == "ORT" else "openvino-fp32"].ms
        print(f"{row.engine:<9} {row.recipe:<11} {row.mean_hm:10.3f} {row.p95_hm:9.3f} {row.flips:6d} "
              f"{'PASS' if row.passed else 'FAIL':>5} {row.ms:8.2f} {f32 / row.ms:6.2f}x {bf16 / row.ms:9.2f}x")
    for name, note in notes.items():
        print(f"  {name}: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated, of {', '.join(MODELS)} (heavy: slow)")
    parser.add_argument("--calib", type=int, default=64, help="calibration frames (BlazePose models)")
    parser.add_argument("--eval", type=int, default=64, help="evaluation frames (the reference: of its eval split)")
    parser.add_argument("--budget-s", type=float, default=300.0, help="OpenVINO INT8: QAT training time budget")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    with tempfile.TemporaryDirectory(prefix="heatdeploy-int8real-") as tmp:
        for model in models:
            t0 = time.perf_counter()
            log(f"{model}: building")
            bundle, data, calib = build(model, Path(tmp) / model, args.calib, args.eval)
            notes = add_candidates(bundle, calib, args.budget_s)
            log(f"{model}: parity")
            rows = judge(bundle, data, args.eval)
            log(f"{model}: timing")
            time_all(bundle, rows)
            print_model(model, rows, notes, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
