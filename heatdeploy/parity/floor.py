"""FP32's own noise floor: how far the reference's keypoints move when the input changes by half a level.

Why: a heatmap with two near-equal peaks jumps under any perturbation, and an existence logit a hair
from its threshold flips under any perturbation, so a candidate's mean displacement and flip count mix
quantization error with coin tosses the quantizer cannot avoid. Parity dithers the very tensor both engines
get by uniform noise of +-0.5 input level (finer than the 8-bit camera itself resolves) and runs the
reference once more:

- the floor: reference vs dithered reference (displacement, argmax jumps, existence flips); a candidate
  whose figures sit near it is as close to FP32 as FP32 is to itself;
- stable keypoints: those the dither moved <= ``STABLE_HM_PX`` and did not flip; the candidate's
  displacement on them carries no coin-toss jumps (single-instance heads; multi-instance rows are
  matched separately for each side, so there only the floor itself is reported);
- flip margins: for each candidate flip, how far FP32's existence probability was from its threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from heatdeploy.parity.keypoints import Comparison

STABLE_HM_PX = 0.5  # a keypoint the dither moved farther than this is not decided by FP32 either
JUMP_HM_PX = 1.0  # a displacement beyond one heatmap pixel is an argmax jump, not sub-pixel drift
DITHER_LEVELS = 0.5  # +- input levels (8-bit steps) of the uniform dither


def dither(tensor: np.ndarray, step: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``tensor`` plus uniform noise of +-``DITHER_LEVELS`` input levels (``step``: tensor units per level)."""
    noise = rng.uniform(-DITHER_LEVELS, DITHER_LEVELS, tensor.shape).astype(np.float32)
    return (tensor + noise * np.asarray(step, np.float32)).astype(np.float32, copy=False)


@dataclass
class FloorMetrics:
    """The reference against itself dithered, and the candidate judged where FP32 is decided."""

    dither: str
    mean_displacement_hm: float
    p95_displacement_hm: float
    max_displacement_hm: float
    jumps: int  # keypoints the dither moved > JUMP_HM_PX
    flips: int  # existence decisions the dither flipped
    decisions: int  # existence decisions compared
    stable_keypoints: int | None = None  # compared keypoints the dither moved <= STABLE_HM_PX, unflipped
    candidate_mean_stable_hm: float | None = None
    candidate_p95_stable_hm: float | None = None
    candidate_jumps_stable: int | None = None  # stable keypoints the candidate moved > JUMP_HM_PX
    candidate_flips_stable: int | None = None  # candidate flips of decisions the dither did not flip
    candidate_flip_margin_min: float | None = None  # |FP32 probability - threshold| over the candidate's flips
    candidate_flip_margin_median: float | None = None

    def line(self, candidate_mean_hm: float) -> str:
        """One sentence for the CLI and the report."""
        ratio = candidate_mean_hm / self.mean_displacement_hm if self.mean_displacement_hm > 0 else math.inf
        text = (f"FP32 floor ({self.dither}): mean {self.mean_displacement_hm:.3g} heatmap px, {self.jumps} jumps "
                f"> {JUMP_HM_PX:g} px, {self.flips} flips; candidate mean is {ratio:.3g}x the floor")
        if self.stable_keypoints is not None:
            text += (f"; on the {self.stable_keypoints} keypoints FP32 holds: mean "
                     f"{_fmt(self.candidate_mean_stable_hm)}, {self.candidate_jumps_stable} jumps, "
                     f"{self.candidate_flips_stable} flips of decisions FP32 holds")
        if self.candidate_flip_margin_min is not None:
            text += (f"; its flips had FP32 {_fmt(self.candidate_flip_margin_min)} (closest) / "
                     f"{_fmt(self.candidate_flip_margin_median)} (median) from the threshold")
        return text


def floor_metrics(floor: Comparison, candidate: Comparison | None, presence: np.ndarray | None,
                  threshold: float | None, note: str) -> FloorMetrics:
    """Summarise ``floor`` (reference vs dithered reference) and, given the candidate's comparison on the
    same rows (single-instance), the candidate on the keypoints and decisions the dither left alone.

    ``presence`` ``[N,K]``: the reference's existence probabilities, ``threshold`` its decision threshold
    (None: no margins).
    """
    d = floor.displacement_hm
    moved = d[floor.mask]
    finite = moved[np.isfinite(moved)]
    flipped = floor.lost | floor.gained
    out = FloorMetrics(
        dither=note,
        mean_displacement_hm=float(finite.mean()) if finite.size else math.nan,
        p95_displacement_hm=float(np.percentile(finite, 95)) if finite.size else math.nan,
        max_displacement_hm=float(finite.max()) if finite.size else math.nan,
        jumps=int((moved > JUMP_HM_PX).sum()), flips=int(flipped.sum()), decisions=int(flipped.size))
    if candidate is None:
        return out
    stable = floor.mask & candidate.mask & (np.nan_to_num(d, nan=np.inf) <= STABLE_HM_PX) & ~flipped
    dc = candidate.displacement_hm[stable]
    out.stable_keypoints = int(stable.sum())
    if dc.size:
        out.candidate_mean_stable_hm = float(dc.mean())
        out.candidate_p95_stable_hm = float(np.percentile(np.minimum(dc, 1e12), 95))
    out.candidate_jumps_stable = int((dc > JUMP_HM_PX).sum())
    cand_flips = candidate.lost | candidate.gained
    out.candidate_flips_stable = int((cand_flips & ~flipped).sum())
    if presence is not None and threshold is not None and cand_flips.any():
        margin = np.abs(presence[cand_flips].astype(np.float64) - threshold)
        out.candidate_flip_margin_min, out.candidate_flip_margin_median = float(margin.min()), float(np.median(margin))
    return out


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3g}"
