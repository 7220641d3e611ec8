"""OpenVINO INT8's float part: f32 or bf16, chosen per model by measurement, with the speed it buys.

The layers NNCF leaves float (the float scope, the sensitive layers) run at the compiled inference
precision. bf16 there is much faster on CPUs with AMX/AVX512-BF16, but on landmark models the sensitive
layers are exactly the ones bf16 rounds too coarsely (issue 15 measured a bf16 float part moving landmarks
as far as bf16 alone). So both are compiled and measured against the FP32 model on held-back frames with
the gate's keypoint limits; the fastest that holds is kept, and f32 when neither holds.

The same run times the FP32 IR at f32 and bf16 (batch 1, 1 thread, interleaved), so the record says
whether INT8 pays on this device at all, and recommends the faster float precision when it does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import openvino as ov

from heatdeploy.spec import ModelSpec

CHOICES = ("auto", "f32", "bf16")
# The default parity gate's keypoint limits (parity tolerances, default.toml): the choice uses the same.
MAX_MEAN_HM_PX = 0.5
MIN_EXISTENCE_AGREEMENT = 0.99
ROUNDS, PER_ROUND = 7, 3  # interleaved timing: rounds x calls per candidate
MIN_GAIN = 1.05  # bf16 replaces the more accurate f32 float part only when clearly faster (not timing noise)


@dataclass
class FloatPartChoice:
    """What was measured and what was kept; ``points`` are (name, ms, mean px, existence agreement)."""

    chosen: str  # "f32" | "bf16"
    requested: str
    images: int
    points: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def rt_precision(self) -> str:
        """The IR's inference-precision preference: bf16 falls back to f32 on a CPU without it."""
        return "bf16,f32" if self.chosen == "bf16" else "f32"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rt_precision": self.rt_precision}


def _compile(model: ov.Model, precision: str) -> ov.CompiledModel:
    from heatdeploy.runtime.backends.openvino import core

    return core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                                               "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1})


def _outputs(compiled: ov.CompiledModel, names: Sequence[str], batches: Sequence[np.ndarray]) -> list[dict]:
    req = compiled.create_infer_request()
    out = []
    for b in batches:
        res = req.infer({0: b})
        out.append({n: np.asarray(res[compiled.output(n)]).copy() for n in names})
    return out


def _latency_ms(compiled: dict[str, ov.CompiledModel], x: np.ndarray) -> dict[str, float]:
    """Median batch-1 latency per compiled model, timed round-robin so load changes hit all alike."""
    from heatdeploy.runtime.timing import interleaved_ms

    reqs = {k: c.create_infer_request() for k, c in compiled.items()}
    timing = interleaved_ms({k: (lambda r=r: r.infer({0: x})) for k, r in reqs.items()}, rounds=(ROUNDS, ROUNDS),
                            warmup=1, per_round=PER_ROUND)
    return timing.median_ms


def has_bf16() -> bool:
    from heatdeploy.runtime.backends.openvino import core

    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def choose_float_part(fp32: ov.Model, int8: ov.Model, spec: ModelSpec, batches: Sequence[np.ndarray], *,
                      requested: str = "auto", time_it: bool = True) -> FloatPartChoice:
    """Measure INT8 with an f32 and a bf16 float part against FP32 on ``batches``; keep the fastest that
    holds the gate's keypoint limits (``requested`` f32/bf16 forces one, still measured)."""
    from heatdeploy.calibration.sensitivity import keypoint_agreement

    if requested not in CHOICES:
        raise ValueError(f"float part {requested!r}: choose one of {', '.join(CHOICES)}")
    names = list(spec.output_names)
    bf16 = has_bf16()
    compiled = {"fp32@f32": _compile(fp32, "f32"), "int8@f32": _compile(int8, "f32")}
    if bf16:
        compiled["fp32@bf16"] = _compile(fp32, "bf16")
        compiled["int8@bf16"] = _compile(int8, "bf16")
    ref = _outputs(compiled["fp32@f32"], names, batches)
    ms = _latency_ms(compiled, batches[0][:1]) if time_it else {}
    choice = FloatPartChoice(chosen="f32", requested=requested, images=int(sum(len(b) for b in batches)))
    holds: dict[str, bool] = {}
    for key, comp in compiled.items():
        ag = keypoint_agreement(spec, ref, _outputs(comp, names, batches)) if key != "fp32@f32" else None
        point = {"name": key, "ms": round(ms[key], 3) if key in ms else None,
                 "mean_hm_px": 0.0 if ag is None else round(ag.mean_px, 4),
                 "existence_agreement": 1.0 if ag is None else round(1.0 - ag.flip_rate, 5)}
        point["holds"] = (point["mean_hm_px"] <= MAX_MEAN_HM_PX
                          and point["existence_agreement"] >= MIN_EXISTENCE_AGREEMENT)
        holds[key] = point["holds"]
        choice.points.append(point)
    if requested != "auto":
        choice.chosen = requested if (requested == "f32" or bf16) else "f32"
    elif bf16 and holds.get("int8@bf16") and (not ms or ms["int8@bf16"] * MIN_GAIN < ms["int8@f32"]
                                              or not holds["int8@f32"]):
        choice.chosen = "bf16"
    if not bf16:
        choice.notes.append("float part f32: this CPU has no bf16")
    elif requested == "auto":
        why = ("holds the gate's keypoint limits and is faster" if choice.chosen == "bf16"
               else "the bf16 float part breaks the gate's keypoint limits" if not holds.get("int8@bf16")
               else "bf16 was not faster")
        choice.notes.append(f"float part {choice.chosen}: {why} (measured on {choice.images} held-back frames)")
    if ms:
        choice.notes += _verdict(ms, holds, f"int8@{choice.chosen}")
    return choice


def _verdict(ms: dict[str, float], holds: dict[str, bool], chosen: str) -> list[str]:
    """Whether INT8 pays here: compared with FP32 at f32 and (where the CPU has it) bf16; when a float
    precision that holds the gate's keypoint limits is faster, recommend it."""
    notes = [f"batch 1, 1 thread: INT8 {ms[chosen]:.2f} ms = {ms['fp32@f32'] / ms[chosen]:.2f}x OpenVINO f32"
             + (f", {ms['fp32@bf16'] / ms[chosen]:.2f}x bf16" if "fp32@bf16" in ms else "")
             + ("" if holds.get(chosen) else "; this INT8 does not hold the gate's keypoint limits on these frames")]
    better = sorted((ms[k], k) for k in ("fp32@bf16", "fp32@f32")
                    if k in ms and holds.get(k) and (ms[k] < ms[chosen] or not holds.get(chosen)))
    if better:
        t, best = better[0]
        artifact = "openvino-bf16" if best.endswith("bf16") else "openvino-fp32"
        notes.append(f"recommendation: deploy {artifact} ({t:.2f} ms, holds the gate's keypoint limits): on this CPU "
                     f"it is {'faster than' if t < ms[chosen] else 'as fast as'} this INT8"
                     + ("" if holds.get(chosen) else ", which does not hold them"))
    return notes


__all__ = ["CHOICES", "FloatPartChoice", "choose_float_part", "has_bf16"]
