"""Per-layer INT8 sensitivity in keypoint terms: quantize one layer, decode, compare with FP32.

Tensor error says little about a heatmap model: what matters is whether the decoded peak moves. Each
candidate layer is quantized alone (every other layer FP32) with the already-measured ranges, run on a
few calibration batches through ORT's optimised INT8 kernels, and decoded with the runtime's codec;
the mean keypoint displacement (heatmap px) against FP32 and the existence flip rate decide whether the
layer stays FP32. One quantization per layer: the pass is capped in layers and seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heatdeploy.calibration.session import int8_session
from heatdeploy.spec import ModelSpec

Outputs = list[dict[str, np.ndarray]]


@dataclass
class Agreement:
    """How far candidate keypoints are from the FP32 ones, over the keypoints the parity gate compares."""

    mean_px: float
    max_px: float
    flip_rate: float  # share of (image, keypoint) whose present flag differs
    keypoints: int
    existence_error: float = 0.0  # mean |existence probability - FP32's|: how far decisions moved, flipped or not

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_model(path: Path, input_name: str, batches: Sequence[np.ndarray],
              output_names: Sequence[str]) -> Outputs:
    """Outputs of an ONNX model on each batch, through the session deployment uses (INT8 kernels)."""
    sess = int8_session(path)
    names = list(output_names)
    return [dict(zip(names, sess.run(names, {input_name: b}), strict=True)) for b in batches]


def keypoint_agreement(spec: ModelSpec, reference: Outputs, candidate: Outputs) -> Agreement:
    """Decode both with the runtime's codec and judge them with the parity gate's own keypoint agreement."""
    from heatdeploy.parity import decode_keypoints
    from heatdeploy.parity import keypoint_agreement as gate_agreement

    dists: list[np.ndarray] = []
    flips = total = 0
    drift = 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        n = len(next(iter(ref.values())))
        eye = np.broadcast_to(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (n, 2, 3))
        agree = gate_agreement(spec, decode_keypoints(spec, ref, eye), decode_keypoints(spec, cand, eye))
        dists.append(agree.displacement_hm)
        flips += int(agree.flips.sum())
        total += agree.flips.size
        drift += float(agree.presence_error.sum())
    d_all = np.concatenate(dists) if dists else np.zeros(0)
    return Agreement(mean_px=float(d_all.mean()) if d_all.size else 0.0,
                     max_px=float(d_all.max()) if d_all.size else 0.0,
                     flip_rate=flips / max(total, 1), keypoints=int(d_all.size),
                     existence_error=drift / max(total, 1))


@dataclass
class LayerResult:
    """One row of the sensitivity table."""

    node: str
    op_type: str
    tested: bool
    kept_fp32: bool = False
    mean_px: float | None = None
    max_px: float | None = None
    flip_rate: float | None = None
    existence_error: float | None = None
    seconds: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sensitivity_pass(
    layers: Sequence[tuple[str, str]],
    quantize_only: Callable[[str, Path], None],
    evaluate: Callable[[Path], Agreement],
    workdir: Path,
    *,
    threshold_px: float,
    flip_threshold: float,
    max_layers: int,
    budget_s: float,
    priority: dict[str, float] | None = None,
) -> tuple[list[LayerResult], str]:
    """Test layers one at a time (highest ``priority`` first); return the table (graph order) and a note.

    A layer is kept FP32 when its single-layer displacement exceeds ``threshold_px`` or its existence
    flip rate exceeds ``flip_threshold``. Layers beyond ``max_layers`` or the time budget stay INT8
    and are listed as untested.
    """
    order = list(layers)
    if priority:  # capped by count or by time, the likeliest culprits are tested first
        order.sort(key=lambda nt: -priority.get(nt[0], 0.0))
    start = time.perf_counter()
    results: dict[str, LayerResult] = {}
    stopped = ""
    for i, (name, op) in enumerate(order):
        if i >= max_layers:
            stopped = stopped or f"capped at {max_layers} layers"
            results[name] = LayerResult(name, op, tested=False, note=stopped)
            continue
        if time.perf_counter() - start > budget_s:
            stopped = f"time budget {budget_s:.0f} s reached"
            results[name] = LayerResult(name, op, tested=False, note=stopped)
            continue
        t0 = time.perf_counter()
        path = workdir / f"only_{i}.onnx"
        quantize_only(name, path)
        agree = evaluate(path)
        path.unlink(missing_ok=True)
        kept = agree.mean_px > threshold_px or agree.flip_rate > flip_threshold
        results[name] = LayerResult(name, op, tested=True, kept_fp32=kept, mean_px=agree.mean_px,
                                    max_px=agree.max_px, flip_rate=agree.flip_rate,
                                    existence_error=agree.existence_error, seconds=time.perf_counter() - t0)
    table = [results[name] for name, _ in layers]  # back in graph order
    tested = sum(r.tested for r in table)
    kept = sum(r.kept_fp32 for r in table)
    note = (f"tested {tested}/{len(table)} layers in {time.perf_counter() - start:.1f} s; "
            f"{kept} kept FP32 (mean displacement > {threshold_px} heatmap px or existence flips > "
            f"{flip_threshold:.0%})")
    if stopped:
        note += f"; {stopped}, the rest stay INT8 untested"
    return table, note
