"""Checks: each limit of a tolerance against the measured value, with the sentence that explains it.

The floor rule (``[floor]`` in a profile): existence flips and displacement are judged also against FP32's
own dither floor. A candidate passes existence if its flips on the decisions FP32 holds under dither are
<= max(the flips the absolute agreement allows, flip_factor x the floor's flips); it passes mean (p95)
displacement if that is <= max(the absolute limit, displacement_factor x the floor's mean (p95)). Without
a measured floor only the absolute limits apply; multi-instance rows have no FP32-held decisions, so their
existence check stays absolute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from heatdeploy.parity.floor import FloorMetrics
from heatdeploy.parity.keypoints import KeypointMetrics
from heatdeploy.parity.result import fmt
from heatdeploy.parity.tensors import TensorMetrics
from heatdeploy.parity.tolerance import LIMITS, Tolerance


@dataclass
class Check:
    """One limit of the tolerance against the measured value, with the sentence that explains it."""

    key: str
    label: str
    value: float | None
    limit: float
    bound: str
    unit: str
    status: str  # pass | fail | skipped
    reason: str

    @property
    def passed(self) -> bool:
        return self.status != "fail"


def _check(key: str, label: str, value: float | None, limit: float, tol: str, why_undefined: str = "",
           unit: str | None = None, limit_text: str = "") -> Check:
    lim = LIMITS[key]
    unit = lim.unit if unit is None else unit
    shown = f" {unit}" if unit else ""
    if value is None or math.isnan(value):
        reason = f"{label}: undefined — {why_undefined or 'nothing to measure'} ({tol})"
        return Check(key, label, None, limit, lim.bound, unit, "fail", reason)
    bad = value > limit if lim.bound == "max" else value < limit
    op = (">" if bad else "<=") if lim.bound == "max" else ("<" if bad else ">=")
    reason = f"{label} {fmt(value)}{shown} {op} {limit_text or fmt(limit)} ({tol})"
    return Check(key, label, float(value), limit, lim.bound, unit, "fail" if bad else "pass", reason)


def _displacement_check(key: str, value: float, floor_value: float | None, limit: float, tol: Tolerance,
                        why: str) -> Check:
    """Mean/p95 displacement: the absolute limit, raised to k x FP32's own figure where that is larger (the
    reason names the raised limit only when it decides)."""
    label = LIMITS[key].label
    k = tol.floor.get("displacement_factor")
    plain = _check(key, label, value, limit, tol.name, why)
    if plain.passed or k is None or floor_value is None or not math.isfinite(floor_value) or k * floor_value <= limit:
        return plain
    fair = k * floor_value
    text = f"max({fmt(limit)}, {k:g} x floor {fmt(floor_value)})"
    return _check(key, label, value, max(limit, fair), tol.name, why, limit_text=text)


def _existence_check(limit: float, km: KeypointMetrics, floor: FloorMetrics | None, tol: Tolerance) -> Check:
    """Existence: agreement >= limit, or (floor rule) flips on FP32-held decisions within the fair count."""
    key = "min_existence_agreement"
    k = tol.floor.get("flip_factor")
    plain = _check(key, LIMITS[key].label, km.existence_agreement, limit, tol.name)
    if plain.passed or k is None or floor is None or floor.candidate_flips_stable is None:
        return plain  # stable flips <= all flips: passing the absolute limit passes the floor rule too
    allowed = (1.0 - limit) * km.keypoints_total
    fair = max(allowed, k * floor.flips)
    label = "existence flips on decisions FP32 holds"
    text = f"max({fmt(allowed)} allowed by agreement {fmt(limit)}, {k:g} x {floor.flips} floor flips)"
    c = _check("max_keypoint_flip_rate", label, float(floor.candidate_flips_stable), fair, tol.name, unit="flips",
               limit_text=text)
    c.key = key
    return c


def evaluate_checks(tol: Tolerance, km: KeypointMetrics, tensors: Sequence[TensorMetrics],
                    floor: FloorMetrics | None = None) -> list[Check]:
    """Every limit of the profile, in the profile's order; truth limits are skipped without truth."""
    none_present = "FP32 calls no keypoint present on these images; use images where the model finds keypoints"
    checks: list[Check] = []
    for key, limit in tol.limits.items():
        lim = LIMITS[key]
        if key == "max_mean_displacement_hm":
            checks.append(_displacement_check(key, km.mean_displacement_hm,
                                              floor.mean_displacement_hm if floor else None, limit, tol,
                                              none_present))
        elif key == "max_p95_displacement_hm":
            checks.append(_displacement_check(key, km.p95_displacement_hm,
                                              floor.p95_displacement_hm if floor else None, limit, tol,
                                              none_present))
        elif key == "max_max_displacement_hm":
            checks.append(_check(key, lim.label, km.max_displacement_hm, limit, tol.name, none_present))
        elif key == "min_existence_agreement":
            checks.append(_existence_check(limit, km, floor, tol))
        elif key == "max_keypoint_flip_rate":
            label = f"existence flip rate of {km.worst_flip_keypoint}"
            checks.append(_check(key, label, km.worst_flip_rate, limit, tol.name))
        elif key == "min_argmax_agreement":
            checks.append(_check(key, lim.label, km.argmax_agreement, limit, tol.name, none_present))
        elif key == "min_pck_vs_reference":
            label = f"PCK@{km.pck_alpha:g} vs FP32"
            checks.append(_check(key, label, km.pck_vs_reference, limit, tol.name, none_present))
        elif key == "max_pck_drop_points":
            label = f"PCK@{km.pck_alpha:g} drop vs ground truth"
            if km.pck_drop_points is None:
                why = ("the data has no ground truth" if km.truth_keypoints is None
                       else "the ground truth marks no keypoint visible")
                checks.append(Check(key, label, None, limit, lim.bound, lim.unit, "skipped",
                                    f"{label}: not checked — {why}"))
            else:
                checks.append(_check(key, label, km.pck_drop_points, limit, tol.name))
        elif key in ("min_snr_db", "min_cosine"):
            for t in tensors:
                value = t.snr_db if key == "min_snr_db" else t.cosine
                checks.append(_check(key, f"{lim.label} of {t.name}", value, limit, tol.name,
                                     f"the candidate's {t.name} has {t.nonfinite} non-finite values"))
    return checks


__all__ = ["Check", "evaluate_checks"]
