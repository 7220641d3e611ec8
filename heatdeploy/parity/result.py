"""Parity results: the artifacts compared, the worst images, the verdict and every figure behind it.

These dataclasses are the contract between the run loop, the report and the manifest record; the JSON
form (:meth:`ParityResult.to_dict`) is what ``parity.json`` holds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from heatdeploy import __version__
from heatdeploy.bundle import Bundle
from heatdeploy.errors import HeatdeployError

if TYPE_CHECKING:
    from heatdeploy.datasets import Dataset
    from heatdeploy.parity.checks import Check
    from heatdeploy.parity.floor import FloorMetrics
    from heatdeploy.parity.keypoints import Comparison, KeypointMetrics, KeypointRow, KeypointSet
    from heatdeploy.parity.tensors import TensorMetrics
    from heatdeploy.parity.tolerance import Tolerance


class ParityError(HeatdeployError, ValueError):
    """Parity cannot run on what was given; the one-line message names the input and the fix."""


def bundle_root(bundle: str | Path | Bundle) -> Path:
    """The bundle's folder; a one-line error when there is none."""
    root = bundle.root if isinstance(bundle, Bundle) else Path(bundle)
    if not root.is_dir():
        raise ParityError(f"{root}: not a bundle directory; parity compares two artifacts of one bundle made by "
                          "'heatdeploy export'")
    return root


def fmt(v: float | None) -> str:
    """A figure for a sentence: 4 significant digits, n/a for missing, inf spelled out."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


@dataclass
class ArtifactInfo:
    name: str
    path: str
    format: str
    precision: str
    backend: str
    sha256: str


@dataclass
class WorstImage:
    index: int
    name: str
    mean_displacement_hm: float
    max_displacement_hm: float
    flips: int
    lost: list[str]  # keypoints FP32 calls present and the candidate absent
    gained: list[str]
    heatmap_snr_db: float


@dataclass
class ParityDetail:
    """The arrays the HTML report draws from; not part of the JSON."""

    data: Dataset
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    reference: KeypointSet
    candidate: KeypointSet
    comparison: Comparison
    image_sizes: np.ndarray
    heatmap_error_hist: np.ndarray
    heatmap_error_zeros: int
    heatmap_snr_per_image: np.ndarray
    row_image: np.ndarray | None = None  # multi-instance: the image of each reference/candidate row


@dataclass
class ParityResult:
    """The verdict and every figure behind it."""

    bundle: str
    reference: ArtifactInfo
    candidate: ArtifactInfo
    data: dict[str, Any]
    tolerance: Tolerance
    tensors: list[TensorMetrics]
    keypoints: KeypointMetrics
    per_keypoint: list[KeypointRow]
    worst_by_displacement: list[WorstImage]
    worst_by_flips: list[WorstImage]
    checks: list[Check]
    seconds: float
    created: str
    files: dict[str, str] = field(default_factory=dict)
    floor: FloorMetrics | None = None
    detail: ParityDetail | None = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        """One human-readable sentence per failed limit."""
        return [c.reason for c in self.checks if not c.passed]

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def headline(self) -> str:
        km = self.keypoints
        verdict = "PASS" if self.passed else "FAIL"
        text = (f"{verdict}: {self.candidate.name} vs {self.reference.name} ({self.tolerance.name}) on "
                f"{km.images} images: mean displacement {fmt(km.mean_displacement_hm)} heatmap px, "
                f"p95 {fmt(km.p95_displacement_hm)}, existence agreement {fmt(km.existence_agreement)}")
        if km.pck_drop_points is not None:
            text += f", PCK@{km.pck_alpha:g} drop {fmt(km.pck_drop_points)} points"
        return text

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "passed": self.passed, "reasons": self.reasons, "headline": self.headline(), "bundle": self.bundle,
            "reference": asdict(self.reference), "candidate": asdict(self.candidate), "data": self.data,
            "tolerance": self.tolerance.to_dict(), "checks": [asdict(c) for c in self.checks],
            "tensors": [asdict(t) for t in self.tensors], "keypoints": asdict(self.keypoints),
            "per_keypoint": [asdict(r) for r in self.per_keypoint],
            "worst_by_displacement": [asdict(w) for w in self.worst_by_displacement],
            "worst_by_flips": [asdict(w) for w in self.worst_by_flips],
            "floor": asdict(self.floor) if self.floor else None,
            "seconds": self.seconds, "created": self.created, "heatdeploy_version": __version__,
            "files": self.files,
        })

    def summary(self) -> dict[str, Any]:
        """The compact record stored in the manifest next to the candidate artifact."""
        km = self.keypoints
        metrics: dict[str, Any] = {
            "mean_displacement_hm": km.mean_displacement_hm, "p95_displacement_hm": km.p95_displacement_hm,
            "max_displacement_hm": km.max_displacement_hm, "mean_displacement_in": km.mean_displacement_in,
            "within_hm": km.within_hm, "argmax_agreement": km.argmax_agreement,
            f"pck@{km.pck_alpha:g}_vs_reference": km.pck_vs_reference,
            "existence_agreement": km.existence_agreement, "flips_lost": km.flips_lost,
            "flips_gained": km.flips_gained, "keypoints_compared": km.keypoints_compared,
        }
        if km.pck_drop_points is not None:
            metrics.update({f"pck@{km.pck_alpha:g}_truth_reference": km.pck_truth_reference,
                            f"pck@{km.pck_alpha:g}_truth_candidate": km.pck_truth_candidate,
                            "pck_drop_points": km.pck_drop_points})
        if self.floor is not None:
            metrics["floor_mean_displacement_hm"] = self.floor.mean_displacement_hm
            metrics["floor_flips"] = self.floor.flips
            if self.floor.stable_keypoints is not None:
                metrics["mean_displacement_stable_hm"] = self.floor.candidate_mean_stable_hm
                metrics["flips_stable"] = self.floor.candidate_flips_stable
        for t in self.tensors:
            metrics[f"{t.name}_snr_db"] = t.snr_db
            metrics[f"{t.name}_cosine"] = t.cosine
            metrics[f"{t.name}_max_abs_error"] = t.max_abs_error
        return jsonable({
            "passed": self.passed, "reasons": self.reasons, "checked": self.created,
            "reference": self.reference.name, "reference_sha256": self.reference.sha256,
            "candidate_sha256": self.candidate.sha256, "backend": self.candidate.backend,
            "tolerance": self.tolerance.name, "limits": self.tolerance.limits, "data": self.data,
            "metrics": metrics, "heatdeploy_version": __version__,
        })


def jsonable(obj: Any) -> Any:
    """Plain JSON types; infinities as the strings 'inf'/'-inf' and NaN as null (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(obj, Path):
        return str(obj)
    return obj



__all__ = ["ArtifactInfo", "ParityDetail", "ParityError", "ParityResult", "WorstImage", "bundle_root", "fmt",
           "jsonable"]
