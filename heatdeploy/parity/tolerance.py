"""Tolerance profiles: the TOML keys a parity gate checks, and what each one means.

A profile is a packaged name (``tolerances/{strict,default,loose}.toml``) or a user's TOML file that may
``extends`` another and override or switch off (``key = false``) single limits. ``[limits]`` are absolute;
``[floor]`` factors judge existence flips and displacement also against FP32's own dither floor, so a model
whose decisions FP32 itself cannot hold is not failed for them (see :func:`heatdeploy.parity.checks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heatdeploy.errors import HeatdeployError
from heatdeploy.fsutil import read_toml

PROFILES = ("strict", "default", "loose")
TOLERANCE_DIR = Path(__file__).parent / "tolerances"


class ToleranceError(HeatdeployError, ValueError):
    """A tolerance profile that cannot be used; the message names the file and the key."""



@dataclass(frozen=True)
class Limit:
    """One checkable limit: how it reads in a reason, its unit and which side is bad."""

    key: str
    label: str
    unit: str
    bound: str  # "max": value above the limit fails; "min": value below fails


LIMITS: dict[str, Limit] = {lim.key: lim for lim in (
    Limit("max_mean_displacement_hm", "mean displacement", "heatmap px", "max"),
    Limit("max_p95_displacement_hm", "p95 displacement", "heatmap px", "max"),
    Limit("max_max_displacement_hm", "max displacement", "heatmap px", "max"),
    Limit("min_existence_agreement", "existence agreement", "", "min"),
    Limit("max_keypoint_flip_rate", "existence flip rate", "", "max"),
    Limit("min_argmax_agreement", "heatmap argmax agreement", "", "min"),
    Limit("min_pck_vs_reference", "PCK vs FP32", "", "min"),
    Limit("max_pck_drop_points", "PCK drop vs ground truth", "points", "max"),
    Limit("min_snr_db", "SNR", "dB", "min"),
    Limit("min_cosine", "cosine similarity", "", "min"),
)}
_TOP_KEYS = ("name", "description", "extends", "metrics", "limits", "floor")
_METRIC_KEYS = ("within_hm_px", "pck_alpha")
# [floor] factors k: a limit also passes when the candidate stays within k x what FP32's dither floor moves.
FLOOR_KEYS = ("flip_factor", "displacement_factor")


@dataclass(frozen=True)
class Tolerance:
    """A named set of limits plus the metric settings they refer to."""

    name: str
    source: str  # the TOML file it came from
    limits: dict[str, float]
    within_hm_px: tuple[float, ...] = (1.0, 2.0)
    pck_alpha: float = 0.05
    description: str = ""
    floor: dict[str, float] = field(default_factory=dict)  # FLOOR_KEYS present -> factor k

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "description": self.description,
                "within_hm_px": list(self.within_hm_px), "pck_alpha": self.pck_alpha, "limits": dict(self.limits),
                "floor": dict(self.floor)}



def load_tolerance(profile: str | Path = "default") -> Tolerance:
    """A packaged profile by name (strict, default, loose) or a user TOML file."""
    return _load_tolerance(profile, depth=0)


def _load_tolerance(profile: str | Path, depth: int) -> Tolerance:
    text = str(profile)
    if text in PROFILES:
        path = TOLERANCE_DIR / f"{text}.toml"
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            if path.suffix == "" and "/" not in text and "\\" not in text:
                raise ToleranceError(f"unknown tolerance profile {text!r}: choose {', '.join(PROFILES)} "
                                     "or a TOML file path")
            raise ToleranceError(f"{path}: no such tolerance file; choose {', '.join(PROFILES)} or an "
                                 "existing TOML file")
    doc = read_toml(path, "tolerance profile", ToleranceError)
    return _parse_tolerance(doc, path, depth)


def _parse_tolerance(doc: dict[str, Any], path: Path, depth: int) -> Tolerance:
    where = str(path)
    _unknown(doc, _TOP_KEYS, where, "")
    base: Tolerance | None = None
    if "extends" in doc:
        ext = doc["extends"]
        if not isinstance(ext, str):
            raise ToleranceError(f"{where}: extends: expected a profile name or path, got {ext!r}")
        if depth >= 4:
            raise ToleranceError(f"{where}: extends: profiles extend each other more than 4 deep (a cycle?)")
        if ext in PROFILES:
            target = ext
        elif Path(ext).suffix or "/" in ext or "\\" in ext:
            target = ext if Path(ext).is_absolute() else str(path.parent / ext)  # relative to this file
        else:
            raise ToleranceError(f"{where}: extends: unknown tolerance profile {ext!r}; choose "
                                 f"{', '.join(PROFILES)} or a TOML file path")
        base = _load_tolerance(target, depth + 1)
    name = doc.get("name", base.name if base else path.stem)
    desc = doc.get("description", base.description if base else "")
    for key, val in (("name", name), ("description", desc)):
        if not isinstance(val, str):
            raise ToleranceError(f"{where}: {key}: expected a string, got {val!r}")

    metrics = doc.get("metrics", {})
    if not isinstance(metrics, dict):
        raise ToleranceError(f"{where}: metrics: expected a table [metrics], got {metrics!r}")
    _unknown(metrics, _METRIC_KEYS, where, "metrics.")
    within = metrics.get("within_hm_px", base.within_hm_px if base else (1.0, 2.0))
    if (not isinstance(within, (list, tuple)) or not within
            or not all(_is_number(v) and v > 0 for v in within)):
        raise ToleranceError(f"{where}: metrics.within_hm_px: expected a list of positive numbers, got {within!r}")
    alpha = metrics.get("pck_alpha", base.pck_alpha if base else 0.05)
    if not _is_number(alpha) or not 0.0 < alpha <= 1.0:
        raise ToleranceError(f"{where}: metrics.pck_alpha: expected a number in (0, 1], got {alpha!r}")

    raw = doc.get("limits", {})
    if not isinstance(raw, dict):
        raise ToleranceError(f"{where}: limits: expected a table [limits], got {raw!r}")
    _unknown(raw, tuple(LIMITS), where, "limits.")
    limits = dict(base.limits) if base else {}
    for key, val in raw.items():
        if val is False:  # switch off an inherited limit
            limits.pop(key, None)
            continue
        if not _is_number(val) or not math.isfinite(val):
            raise ToleranceError(f"{where}: limits.{key}: expected a number (or false to switch it off), "
                                 f"got {val!r}")
        if key in ("min_existence_agreement", "min_argmax_agreement", "min_pck_vs_reference", "min_cosine",
                   "max_keypoint_flip_rate") and not -1.0 <= val <= 1.0:
            raise ToleranceError(f"{where}: limits.{key}: a share, expected a number in [0, 1], got {val!r}")
        if key.startswith("max_") and key != "max_pck_drop_points" and val < 0:
            raise ToleranceError(f"{where}: limits.{key}: expected a non-negative number, got {val!r}")
        limits[key] = float(val)
    return Tolerance(name=name, source=where, limits=limits,
                     within_hm_px=tuple(sorted(float(v) for v in within)), pck_alpha=float(alpha),
                     description=desc, floor=_parse_floor(doc.get("floor", {}), base, where))


def _parse_floor(raw: Any, base: Tolerance | None, where: str) -> dict[str, float]:
    """``[floor]``: factor k per rule (>= 1: judged against k x the floor never loosens below FP32's own noise)."""
    if not isinstance(raw, dict):
        raise ToleranceError(f"{where}: floor: expected a table [floor], got {raw!r}")
    _unknown(raw, FLOOR_KEYS, where, "floor.")
    out = dict(base.floor) if base else {}
    for key, val in raw.items():
        if val is False:
            out.pop(key, None)
            continue
        if not _is_number(val) or not math.isfinite(val) or val < 1.0:
            raise ToleranceError(f"{where}: floor.{key}: expected a factor >= 1 (or false to switch the floor "
                                 f"rule off), got {val!r}")
        out[key] = float(val)
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _unknown(table: dict[str, Any], known: Sequence[str], where: str, prefix: str) -> None:
    bad = sorted(set(table) - set(known))
    if bad:
        raise ToleranceError(f"{where}: unknown key {prefix}{bad[0]}; known: "
                             f"{', '.join(prefix + k for k in known)}")



__all__ = ["FLOOR_KEYS", "LIMITS", "PROFILES", "TOLERANCE_DIR", "Limit", "Tolerance", "ToleranceError",
           "load_tolerance"]
