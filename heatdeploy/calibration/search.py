"""Tolerance-driven search for the fastest INT8 mix that still holds the user's keypoint budget.

The per-layer sensitivity pass says how far each layer alone moves keypoints; it cannot say what a layer's
INT8 is worth in time, and the threshold rule it applies keeps layers FP32 whatever they cost. Here the
budget is the parity gate's tolerance, and time is measured, not assumed: starting from all-INT8, layers are
ranked by keypoint error per millisecond their INT8 saves, reverted to FP32 in that order (bisection over the
ranked prefix: reverting more only costs speed) until the budget holds on the calibration frames; every mix
built, FP32 itself and the threshold rule's mix are timed side by side (batch 1, 1 thread, interleaved,
median), and the fastest one that holds, checked again on held-back frames, is kept. When no INT8 mix holding
the budget beats FP32 on this machine, the result says so and recommends FP32.

A reverted layer runs f32: ORT's CPU provider has no 16-bit QLinearConv (QUInt16/QInt16 QDQ leaves a float
Conv between Q/DQ pairs), so 16-bit activations are no cheaper fallback on this engine.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SEARCH_VERSION = 3  # in the calibration cache key: a changed search must not answer from an old result
FP32 = "fp32"
ALL_INT8 = "int8-all"
FLIP_COST_PX = 10.0  # one existence flip per keypoint weighs as much as this many grid px of displacement
LATENCY_ROUNDS = (5, 25)  # interleaved rounds per timing: at least, at most (runtime/timing.py)
LATENCY_SECONDS = 4.0  # a timing stops after this long once the minimum rounds are in
MIN_GAIN = 1.03  # INT8 is recommended only when it beats FP32 by more than timing noise
CONFIRM = 3  # holding mixes timed a second time before the choice


@dataclass(frozen=True)
class SearchBudget:
    """The keypoint budget a mix must hold: the parity gate's mean-displacement and existence limits."""

    mean_px: float = 0.5  # heatmap px, over keypoints FP32 reports
    flip_rate: float = 0.01  # share of existence decisions flipped (1 - agreement)
    source: str = "built-in defaults (the default parity tolerance)"
    # Share of each limit a mix may use on the few frames it is chosen and checked on: the gate runs on
    # other frames, and a mix chosen at the edge of the budget there falls over it on the gate's frames.
    margin: float = 0.5

    @classmethod
    def from_tolerance(cls, profile: str | Path = "default") -> SearchBudget:
        """Read the limits from a parity tolerance profile, so the search aims at what the gate checks."""
        try:
            from heatdeploy.parity.tolerance import load_tolerance
        except ImportError:  # an install without the parity package: the default gate's own figures
            return cls()
        tol = load_tolerance(profile)
        limits = dict(getattr(tol, "limits", {}) or {})
        mean = limits.get("max_mean_displacement_hm")
        agree = limits.get("min_existence_agreement")
        flip = limits.get("max_keypoint_flip_rate")
        flips = [v for v in (None if agree is None else 1.0 - float(agree), flip) if v is not None]
        return cls(mean_px=float(mean) if mean is not None else float("inf"),
                   flip_rate=min(flips) if flips else float("inf"), source=f"parity tolerance {profile!s}")

    def holds(self, agreement: Any) -> bool:
        return bool(agreement.mean_px <= self.mean_px * self.margin
                    and agreement.flip_rate <= self.flip_rate * self.margin)


@dataclass
class MixPoint:
    """One measured candidate: which layers it keeps FP32 beyond the base rule, its error and latency."""

    name: str
    kept: list[str]
    mean_px: float
    max_px: float
    flip_rate: float
    holds: bool
    latency_ms: float | None = None
    holdout: dict[str, Any] | None = None  # the same agreement on held-back frames (when checked)
    pareto: bool = False

    @property
    def error(self) -> float:
        return self.mean_px + FLIP_COST_PX * self.flip_rate

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kept"] = len(self.kept)
        d["kept_layers"] = list(self.kept)
        return d


@dataclass
class SearchResult:
    """The chosen mix, the measured points (latency vs displacement/flips) and why."""

    chosen: str
    kept: list[str]
    recommended: str  # "int8" or "fp32": what the bundle should deploy on this machine
    note: str
    points: list[MixPoint]
    ranking: list[dict[str, Any]]
    mixes_tested: int
    stopped: str = ""
    seconds: float = 0.0
    budget: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["points"] = [p.to_dict() for p in self.points]
        return d


# --- ranking ---------------------------------------------------------------------------------------


def layer_error(row: Mapping[str, Any]) -> float:
    """A sensitivity row's damage as one number: mean displacement plus the flip cost."""
    return float(row.get("mean_px") or 0.0) + FLIP_COST_PX * float(row.get("flip_rate") or 0.0)


def rank_layers(rows: Sequence[Mapping[str, Any]], saved_ms: Mapping[str, float],
                priority: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Tested layers by error per millisecond saved, worst first, then the untested: the order to revert them.

    A layer whose INT8 saves (almost) nothing goes first: keeping it FP32 costs no time. Layers the pass had
    no time to test come last (highest ``priority`` first), so reverting the whole list always reaches the
    base rule's float scope: an untested layer that alone flips existence is not out of the search's reach.
    """
    tested = [r for r in rows if r.get("tested") and layer_error(r) > 0.0]
    total = sum(max(v, 0.0) for v in saved_ms.values())
    floor = max(total, 1e-3) * 1e-3
    ranked = [{"node": r["node"], "op_type": r.get("op_type", ""), "error": layer_error(r),
               "saved_ms": float(saved_ms.get(r["node"], 0.0)),
               "score": layer_error(r) / max(float(saved_ms.get(r["node"], 0.0)), floor)} for r in tested]
    ranked.sort(key=lambda d: -d["score"])
    pending = [r for r in rows if not r.get("tested")]
    pending.sort(key=lambda r: -(priority or {}).get(str(r["node"]), 0.0))
    ranked += [{"node": r["node"], "op_type": r.get("op_type", ""), "error": None,
                "saved_ms": float(saved_ms.get(r["node"], 0.0)), "score": None, "untested": True} for r in pending]
    return ranked


def layer_macs(model: Any) -> dict[str, float]:
    """Multiply-accumulates per sample of each Conv/ConvTranspose/Gemm/MatMul (weight size when shapes are unknown)."""
    graph = model.graph
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    shapes: dict[str, list[int]] = {}
    for vi in [*graph.value_info, *graph.output, *graph.input]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    macs: dict[str, float] = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        w = weights.get(node.input[1])
        if w is None:
            continue
        size = float(np.prod(w))
        if node.op_type == "Conv":
            out = shapes.get(node.output[0], [])
            spatial = float(np.prod(out[2:])) if len(out) > 2 and all(out[2:]) else 1.0
            macs[node.name] = size * spatial
        elif node.op_type == "ConvTranspose":
            src = shapes.get(node.input[0], [])
            spatial = float(np.prod(src[2:])) if len(src) > 2 and all(src[2:]) else 1.0
            macs[node.name] = size * spatial
        else:
            macs[node.name] = size
    return macs


def grouped_convs(model: Any, exclude: Sequence[str] = ()) -> list[str]:
    """Conv nodes with ``group`` > 1 (depthwise and grouped), minus ``exclude``, in graph order."""
    skip = set(exclude)
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.name not in skip
            and any(a.name == "group" and a.i > 1 for a in n.attribute)]


def saved_ms_estimate(macs: Mapping[str, float], layers: Sequence[str], total_saved_ms: float) -> dict[str, float]:
    """Share the measured all-INT8 saving over the compute layers by their MACs (others save nothing)."""
    pool = {n: macs[n] for n in layers if n in macs}
    total = sum(pool.values())
    saved = max(total_saved_ms, 0.0)
    return {n: (saved * pool[n] / total if total > 0 and n in pool else 0.0) for n in layers}


# --- timing ----------------------------------------------------------------------------------------


def measure_latency(paths: Mapping[str, Path], input_name: str, x: np.ndarray, *,
                    rounds: tuple[int, int] = LATENCY_ROUNDS, seconds: float = LATENCY_SECONDS) -> dict[str, Any]:
    """Median ms per run of each model, batch ``len(x)``, 1 thread, interleaved (the order rotates each round).

    Running every candidate in every round spreads a busy neighbour's noise over all of them alike, so
    their ratios stay meaningful where absolute times do not: ``paired_ms`` is the first model's median
    times each model's median per-round ratio to it (the figure the search decides on).
    """
    import onnxruntime as ort

    from heatdeploy.runtime.timing import interleaved_ms

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sessions = {n: ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for n, p in paths.items()}
    feed = {input_name: np.ascontiguousarray(x)}
    t = interleaved_ms({n: (lambda s=s: s.run(None, feed)) for n, s in sessions.items()}, rounds=rounds,
                       seconds=seconds)
    return {**t.to_dict(), "batch": int(len(x)), "threads": 1}


def op_profile(path: Path, input_name: str, x: np.ndarray, runs: int = 10) -> dict[str, float]:
    """ORT's own per-op-type kernel time (ms per run, 1 thread) from ``enable_profiling``, largest first.

    Convolutions with ``group`` > 1 (depthwise) are counted apart ("QLinearConv/grouped"): whether the
    engine has fast INT8 kernels for them is what decides INT8 speed on mobile-style nets.
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="heatdeploy-prof-") as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prof")
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {input_name: np.ascontiguousarray(x)}
        sess.run(None, feed)
        for _ in range(runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
        graph = onnx.load(str(Path(tmp) / "optimized.onnx"), load_external_data=False).graph
    grouped = {n.name for n in graph.node
               if any(a.name == "group" and a.i > 1 for a in n.attribute)}
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            key = f"{op}/grouped" if name[: -len("_kernel_time")] in grouped else op
            per_op[key] += float(e.get("dur", 0)) / 1e3
    n = runs + 1
    return {k: round(v / n, 4) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])}


# --- the search ------------------------------------------------------------------------------------


def search_mix(
    ranked: Sequence[str],
    *,
    build: Callable[[Sequence[str], str], Path],
    evaluate: Callable[[Path], Any],
    latency: Callable[[Mapping[str, Path]], Mapping[str, Any]],
    fp32_path: Path,
    budget: SearchBudget,
    time_budget_s: float,
    verify: Callable[[Path], Any] | None = None,
    seeds: Mapping[str, Sequence[str]] | None = None,
    always: Mapping[str, Sequence[str]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SearchResult:
    """Find the fastest mix holding ``budget``; ``ranked`` = layers in the order to revert them to FP32.

    ``always``: extra bisections, each with a set of layers kept FP32 from the start (name prefix -> layers),
    e.g. the depthwise convolutions, whose INT8 kernels can be slower than FP32's.

    ``build(kept, name)`` writes the mix that keeps ``kept`` FP32 (beyond the base rule) and returns its path;
    ``evaluate``/``verify`` return an agreement (``mean_px``, ``max_px``, ``flip_rate``) on the calibration /
    held-back frames; ``latency`` times all given paths together (``{"median_ms": {name: ms}, ...}``, as
    :func:`measure_latency`). ``seeds`` are extra mixes to measure
    (e.g. the threshold rule's). The time budget stops the bisection; what was found by then is used.
    """
    say = progress or (lambda m: log.info("%s", m))
    start = time.perf_counter()
    points: dict[str, MixPoint] = {}
    paths: dict[str, Path] = {}
    stopped = ""

    def try_mix(name: str, kept: Sequence[str]) -> MixPoint:
        path = build(list(kept), name)
        a = evaluate(path)
        p = MixPoint(name, list(kept), float(a.mean_px), float(a.max_px), float(a.flip_rate), budget.holds(a))
        points[name], paths[name] = p, path
        say(f"search: {name} ({len(kept)} layers FP32): {p.mean_px:.3f} px mean, flips {p.flip_rate:.2%} "
            f"-> {'holds' if p.holds else 'over'} the budget")
        return p

    def out_of_time() -> bool:
        return time.perf_counter() - start > time_budget_s

    def bisect(prefix: str, base: Sequence[str]) -> str:
        """Shortest holding prefix of ``ranked`` (on top of ``base``); returns why it stopped, if it did."""
        order = [r for r in ranked if r not in set(base)]
        n = len(order)
        if try_mix(f"{prefix}{ALL_INT8}" if prefix else ALL_INT8, list(base)).holds or not n:
            return ""
        lo, hi = 0, n  # prefix lengths: lo fails (known), hi is tried next and is the most reverted
        if not try_mix(f"{prefix}revert-{n}", [*base, *order]).holds:
            return ""
        while hi - lo > 1:
            if out_of_time():
                return f"time budget {time_budget_s:.0f} s reached during the bisection"
            mid = (lo + hi) // 2
            if try_mix(f"{prefix}revert-{mid}", [*base, *order[:mid]]).holds:
                hi = mid
            else:
                lo = mid
        return ""

    stopped = bisect("", [])
    for prefix, base in (always or {}).items():
        if base and not out_of_time():
            stopped = bisect(prefix, list(base)) or stopped
    for name, kept in (seeds or {}).items():
        if any(set(p.kept) == set(kept) for p in points.values()):
            continue  # the same mix under another name: measured once
        if out_of_time():
            stopped = stopped or f"time budget {time_budget_s:.0f} s reached before mix {name!r}"
            continue
        try_mix(name, kept)

    say(f"search: timing {len(paths) + 1} candidates side by side (batch 1, 1 thread, interleaved)")
    timing = dict(latency({FP32: fp32_path, **paths}))
    timed = dict(timing.get("paired_ms", timing["median_ms"]))
    # The minimum of many noisy timings is biased low: the few fastest holding mixes are timed again,
    # alone with FP32, and those figures decide.
    first_pass = sorted((n for n, p in points.items() if p.holds), key=lambda n: timed[n])[:CONFIRM]
    if first_pass:
        again = dict(latency({FP32: fp32_path, **{n: paths[n] for n in first_pass}}))
        confirmed = dict(again.get("paired_ms", again["median_ms"]))
        timing["confirmed_ms"] = confirmed
        scale = timed[FP32] / confirmed[FP32]  # as ratios to FP32, on the first pass's FP32 figure
        timed.update({n: confirmed[n] * scale for n in first_pass})
    for name, p in points.items():
        p.latency_ms = float(timed[name])
    fp32_ms = float(timed[FP32])
    fp32_point = MixPoint(FP32, [], 0.0, 0.0, 0.0, True, latency_ms=fp32_ms)

    holding = sorted((p for p in points.values() if p.holds), key=lambda p: p.latency_ms or 0.0)
    chosen: MixPoint | None = None
    for p in holding:
        if verify is None:
            chosen = p
            break
        a = verify(paths[p.name])
        p.holdout = {"mean_px": float(a.mean_px), "max_px": float(a.max_px), "flip_rate": float(a.flip_rate),
                     "holds": budget.holds(a)}
        say(f"search: {p.name} on held-back frames: {a.mean_px:.3f} px mean, flips {a.flip_rate:.2%} -> "
            f"{'holds' if p.holdout['holds'] else 'over'}")
        if p.holdout["holds"]:
            chosen = p
            break
    all_points = [*points.values(), fp32_point]
    _mark_pareto(all_points)
    if chosen is not None and (chosen.latency_ms or 0.0) * MIN_GAIN < fp32_ms:
        recommended = "int8"
        note = (f"fastest mix holding the budget: {chosen.name}, {len(chosen.kept)} layers FP32, "
                f"{chosen.latency_ms:.2f} ms vs FP32 {fp32_ms:.2f} ms ({fp32_ms / chosen.latency_ms:.2f}x)")
    else:
        recommended = "fp32"
        held = chosen is not None
        best = chosen or min(points.values(), key=lambda p: p.error)
        chosen = best
        why = (f"fastest holding INT8 mix {best.name} runs {best.latency_ms:.2f} ms" if held else
               f"no INT8 mix held it (closest: {best.name}, {best.mean_px:.3f} px, {best.latency_ms:.2f} ms)")
        note = (f"no INT8 mix holds the budget faster than FP32 on this device: {why} vs FP32 {fp32_ms:.2f} ms; "
                "recommended artifact: FP32")
    if stopped:
        note += f"; {stopped}"
    say(f"search: {note}")
    return SearchResult(
        chosen=chosen.name, kept=list(chosen.kept), recommended=recommended, note=note, points=all_points,
        ranking=[], mixes_tested=len(points), stopped=stopped, seconds=time.perf_counter() - start,
        budget=asdict(budget), latency=timing,
    )


def fastest_mix(rows: Sequence[Mapping[str, Any]], macs: Mapping[str, float], *,
                build: Callable[[Sequence[str], str], Path], evaluate: Callable[[Path], Any],
                verify: Callable[[Path], Any] | None, fp32_path: Path, input_name: str, x: np.ndarray,
                budget: SearchBudget, time_budget_s: float, priority: Mapping[str, float] | None = None,
                grouped: Sequence[str] = (), progress: Callable[[str], None] | None = None) -> SearchResult:
    """The search on real timings: probe FP32 vs all-INT8, rank the sensitivity rows, search, record all.

    The probe's saving is shared over the compute layers by MACs to rank them (a layer's own saving is
    not timed alone: too costly per layer); every mix the search keeps is then timed for real. With
    ``grouped`` (depthwise) convolutions, a second bisection keeps them FP32 from the start: ORT's INT8
    depthwise kernels can be slower than its FP32 ones, which a MAC share cannot see.
    """
    say = progress or (lambda m: log.info("%s", m))
    probe_path = build([], "probe")
    probe = measure_latency({FP32: fp32_path, ALL_INT8: probe_path}, input_name, x, rounds=(5, 15), seconds=2.0)
    saved = probe["median_ms"][FP32] - probe["median_ms"][ALL_INT8]
    say(f"search: all-INT8 {probe['median_ms'][ALL_INT8]:.2f} ms vs FP32 {probe['median_ms'][FP32]:.2f} ms "
        f"(batch {len(x)}, 1 thread)")
    names = [str(r["node"]) for r in rows]
    ranking = rank_layers(rows, saved_ms_estimate(macs, names, saved), priority)
    seeds = {"threshold-rule": [str(r["node"]) for r in rows if r.get("kept_fp32")]}
    result = search_mix([d["node"] for d in ranking], build=build, evaluate=evaluate, verify=verify,
                        latency=lambda paths: measure_latency(paths, input_name, x), fp32_path=fp32_path,
                        budget=budget, time_budget_s=time_budget_s, seeds=seeds,
                        always={"dw-fp32+": list(grouped)} if grouped else None, progress=say)
    result.ranking = ranking
    result.latency["probe_ms"] = probe["median_ms"]
    result.profile["int8_all"] = _profile_summary(op_profile(probe_path, input_name, x))
    return result


def _profile_summary(ops: Mapping[str, float], top: int = 8) -> dict[str, Any]:
    return {"total_ms": round(sum(ops.values()), 3), "top": dict(list(ops.items())[:top])}


def profile_pair(fp32_path: Path, int8_path: Path, input_name: str, x: np.ndarray, top: int = 8) -> dict[str, Any]:
    """Per-op-type kernel ms of FP32 and the INT8 artifact (ORT profiling, 1 thread): where the time goes."""
    out: dict[str, Any] = {"method": "onnxruntime enable_profiling, 1 thread, ms per run by op type; runs one "
                                     "model after the other, so a shared machine's load skews them: the "
                                     "interleaved timings decide, this shows where time goes"}
    for name, path in (("fp32", fp32_path), ("int8", int8_path)):
        out[name] = _profile_summary(op_profile(path, input_name, x), top)
    return out


def _mark_pareto(points: Sequence[MixPoint]) -> None:
    """A point is on the front when no other point is at least as fast and as close, and better in one."""
    for p in points:
        p.pareto = not any(
            q is not p and (q.latency_ms or 0) <= (p.latency_ms or 0) and q.error <= p.error
            and ((q.latency_ms or 0) < (p.latency_ms or 0) or q.error < p.error) for q in points)
