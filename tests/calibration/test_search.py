"""The latency-measured mix search: the fastest mix within the keypoint budget is kept, FP32 included.

Two layers of test: the search logic on injected figures (non-monotone latencies, a mix that fails on
held-back frames, FP32 winning), then the real pipeline on the tiny model — once with latencies injected by a
deterministic rule (fewer INT8 layers = slower) so the choice is checkable, once end to end with real timing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import onnx
import pytest

import heatdeploy.calibration.search as search_mod
from heatdeploy.calibration.quantize import quantize_onnx_int8
from heatdeploy.calibration.search import FP32, SearchBudget, rank_layers, search_mix
from heatdeploy.calibration.sources import open_source
from heatdeploy.spec import ModelSpec

BUDGET = SearchBudget(mean_px=0.5, flip_rate=0.01, source="test")
TIGHT = SearchBudget(mean_px=0.05, flip_rate=0.01, source="test: tighter than the tiny model's all-INT8 error")


def _agree(mean: float, flips: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(mean_px=mean, max_px=2 * mean, flip_rate=flips)


class FakeMixes:
    """Mixes named by the layers they keep FP32; error and latency from tables (missing = the default)."""

    def __init__(self, errors: Mapping[frozenset[str], float], latency: Mapping[frozenset[str], float],
                 holdout: Mapping[frozenset[str], float] | None = None, default_error: float = 1.0,
                 default_ms: float = 5.0) -> None:
        self.errors, self.latency, self.holdout = errors, latency, holdout or {}
        self.default_error, self.default_ms = default_error, default_ms
        self.kept: dict[str, frozenset[str]] = {}

    def build(self, kept: Sequence[str], name: str) -> Path:
        self.kept[name] = frozenset(kept)
        return Path(name)

    def evaluate(self, path: Path) -> SimpleNamespace:
        return _agree(self.errors.get(self.kept[str(path)], self.default_error))

    def verify(self, path: Path) -> SimpleNamespace:
        key = self.kept[str(path)]
        return _agree(self.holdout.get(key, self.errors.get(key, self.default_error)))

    def time(self, paths: Mapping[str, Path]) -> dict[str, Any]:
        ms = {n: (10.0 if n == FP32 else self.latency.get(self.kept[str(p)], self.default_ms))
              for n, p in paths.items()}
        return {"median_ms": ms, "rounds": 1}


def _run(fake: FakeMixes, ranked: Sequence[str], seeds: Mapping[str, Sequence[str]] | None = None) -> Any:
    return search_mix(ranked, build=fake.build, evaluate=fake.evaluate, verify=fake.verify, latency=fake.time,
                      fp32_path=Path("fp32"), budget=BUDGET, time_budget_s=60.0, seeds=seeds)


def test_bisection_finds_the_shortest_holding_prefix() -> None:
    ranked = ["a", "b", "c", "d", "e", "f"]
    errors = {frozenset(ranked[:k]): (0.1 if k >= 3 else 0.9) for k in range(7)}
    latency = {frozenset(ranked[:k]): 3.0 + k for k in range(7)}
    result = _run(FakeMixes(errors, latency), ranked)
    assert result.chosen == "revert-3" and result.kept == ["a", "b", "c"]
    assert result.recommended == "int8" and "1.67x" in result.note
    names = {p.name for p in result.points}
    assert {"int8-all", "revert-6", FP32} <= names and len(names) <= 2 + 3 + 1  # bisection, not a linear walk


def test_the_fastest_measured_holding_mix_wins_not_the_fewest_reverted() -> None:
    ranked = ["a", "b", "c", "d"]
    errors = {frozenset(ranked[:k]): (0.1 if k >= 2 else 0.9) for k in range(5)} | {frozenset({"c"}): 0.2}
    latency = {frozenset(ranked[:k]): 4.0 + k for k in range(5)} | {frozenset({"c"}): 5.5}
    result = _run(FakeMixes(errors, latency), ranked, seeds={"threshold-rule": ["c"]})
    holding = [p for p in result.points if p.holds and p.name != FP32]
    assert result.chosen == "threshold-rule"  # 5.5 ms beats revert-2's 6.0 ms
    assert min(p.latency_ms for p in holding) == next(p.latency_ms for p in result.points if p.name == result.chosen)
    fronts = {p.name for p in result.points if p.pareto}
    assert {"threshold-rule", "revert-2"} <= fronts  # faster / closer
    assert "revert-4" not in fronts  # as close as revert-2 and slower


def test_a_mix_failing_on_held_back_frames_is_passed_over() -> None:
    ranked = ["a", "b", "c", "d"]
    errors = {frozenset(ranked[:k]): (0.1 if k >= 1 else 0.9) for k in range(5)}
    latency = {frozenset(ranked[:k]): 4.0 + k for k in range(5)}
    result = _run(FakeMixes(errors, latency, holdout={frozenset({"a"}): 0.8}), ranked)
    first = next(p for p in result.points if p.name == "revert-1")
    assert first.holdout is not None and not first.holdout["holds"]
    assert result.chosen == "revert-2" and result.recommended == "int8"


def test_fp32_is_recommended_when_no_holding_mix_beats_it() -> None:
    ranked = ["a", "b"]
    errors = {frozenset(): 0.9, frozenset({"a"}): 0.9, frozenset({"a", "b"}): 0.1}
    latency = {frozenset(): 6.0, frozenset({"a"}): 8.0, frozenset({"a", "b"}): 11.0}
    result = _run(FakeMixes(errors, latency), ranked)
    assert result.recommended == "fp32"
    assert result.note.startswith("no INT8 mix holds the budget faster than FP32 on this device")
    assert result.chosen == "revert-2"  # the INT8 artifact written is still the fastest one that holds
    assert any(p.name == FP32 and p.pareto for p in result.points)


def test_ranking_is_error_per_millisecond_saved() -> None:
    rows = [{"node": "big", "tested": True, "mean_px": 0.4, "flip_rate": 0.0},
            {"node": "small", "tested": True, "mean_px": 0.2, "flip_rate": 0.0},
            {"node": "add", "tested": True, "mean_px": 0.05, "flip_rate": 0.0},
            {"node": "clean", "tested": True, "mean_px": 0.0, "flip_rate": 0.0},
            {"node": "untested", "tested": False}]
    ranked = rank_layers(rows, {"big": 4.0, "small": 0.5, "add": 0.0})
    # 0.05/~0, 0.2/0.5, 0.4/4; a clean layer is never reverted; an untested one comes last, still reachable
    assert [d["node"] for d in ranked] == ["add", "small", "big", "untested"]
    assert ranked[-1]["untested"] and ranked[-1]["score"] is None


# --- the real pipeline on the tiny model -------------------------------------------------------------


def _int8_layers(path: Path) -> int:
    """Compute layers whose weight is dequantized (run INT8) in a QDQ file."""
    model = onnx.load(str(path))
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm")
               and len(n.input) > 1 and n.input[1] in dq_out)


def _rule_latency(paths: Mapping[str, Path], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Deterministic stand-in for timing: FP32 10 ms, each INT8 compute layer saves 2 ms."""
    return {"median_ms": {n: 10.0 - 2.0 * _int8_layers(p) for n, p in paths.items()}, "rounds": 0}


def _source(spec: ModelSpec, image_dir: Path) -> Any:
    return open_source(spec, str(image_dir), 24, 0, 10)


def test_budget_forces_layers_back_and_the_fastest_holding_mix_is_written(
        tiny_model: Path, image_dir: Path, spec: ModelSpec, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_mod, "measure_latency", _rule_latency)
    import heatdeploy.calibration.quantize as quant_mod

    monkeypatch.setattr(quant_mod, "grouped_convs", lambda model, exclude=(): ["conv2"])  # as if depthwise
    out = tmp_path / "m.onnx"
    lines: list[str] = []
    report = quantize_onnx_int8(tiny_model, out, spec, _source(spec, image_dir), method="minmax", calib_batch=4,
                                use_cache=False, tolerance=TIGHT, progress=lines.append,
                                search_holdout_batches=0)  # held-back checks: tested above on fixed figures
    found = report.search
    assert found is not None
    points = {p["name"]: p for p in found["points"]}
    assert not points["int8-all"]["holds"]  # the budget forces layers back
    holding = [p for p in points.values() if p["holds"] and p["name"] != FP32]
    fastest = min(p["latency_ms"] for p in holding)
    assert points[found["chosen"]]["latency_ms"] == fastest
    assert 0 < len(found["kept"]) and all(n in report.excluded for n in found["kept"])
    assert report.final is not None and report.final["mean_px"] <= TIGHT.mean_px  # the written file holds it
    assert _int8_layers(out) == round((10.0 - fastest) / 2.0)  # the file written is the chosen mix
    assert found["recommended"] == ("int8" if fastest * search_mod.MIN_GAIN < 10.0 else "fp32")
    assert any(line.startswith("search: timing") for line in lines) and any("sensitivity:" in ln for ln in lines)
    assert any(name.startswith("dw-fp32+") and "conv2" in p["kept_layers"] for name, p in points.items())


def test_search_runs_end_to_end_with_real_timing(tiny_model: Path, image_dir: Path, spec: ModelSpec,
                                                 tmp_path: Path) -> None:
    report = quantize_onnx_int8(tiny_model, tmp_path / "r.onnx", spec, _source(spec, image_dir), method="minmax",
                                calib_batch=4, use_cache=False, tolerance=BUDGET, budget_s=60)
    found = report.search
    assert found is not None and found["latency"]["rounds"] >= search_mod.LATENCY_ROUNDS[0]
    points = {p["name"]: p for p in found["points"]}
    assert FP32 in points and all(p["latency_ms"] > 0 for p in points.values())
    holding = [p for p in points.values() if p["holds"] and p["name"] != FP32]
    if holding:
        assert points[found["chosen"]]["latency_ms"] == min(p["latency_ms"] for p in holding)
    fp32_ms = points[FP32]["latency_ms"]
    if found["recommended"] == "fp32":
        assert "no INT8 mix holds the budget faster than FP32" in found["note"]
    else:
        assert points[found["chosen"]]["latency_ms"] * search_mod.MIN_GAIN < fp32_ms
    assert set(found["profile"]) >= {"fp32", "int8"} and found["profile"]["int8"]["total_ms"] > 0
    assert any(p["pareto"] for p in points.values())


def test_a_bisection_with_depthwise_kept_float_can_win() -> None:
    """ORT's INT8 depthwise kernels can be slower than FP32's: the mix keeping them FP32 is searched too."""
    ranked = ["a", "b", "x"]
    errors = {frozenset(): 0.9, frozenset({"a", "b", "x"}): 0.0, frozenset({"a"}): 0.9, frozenset({"a", "b"}): 0.1,
              frozenset({"x"}): 0.9, frozenset({"x", "a"}): 0.1, frozenset({"x", "a", "b"}): 0.0}
    latency = {k: 4.0 + len(k) - (2.5 if "x" in k else 0.0) for k in errors}
    fake = FakeMixes(errors, latency)
    result = search_mix(ranked, build=fake.build, evaluate=fake.evaluate, verify=fake.verify, latency=fake.time,
                        fp32_path=Path("fp32"), budget=BUDGET, time_budget_s=60.0, always={"dw/": ["x"]})
    assert result.chosen == "dw/revert-1" and set(result.kept) == {"x", "a"}
    assert "revert-2" in {p.name for p in result.points}  # the plain bisection ran as well
