"""What displacement means: the one keypoint agreement the gate, the INT8 sensitivity pass and NNCF's
accuracy control all use.

A keypoint is compared only where FP32 calls it present with finite coordinates (:func:`compared_mask`):
an absent keypoint's coordinates are the argmax of a flat map and mean nothing. Displacement is the
distance between FP32's and the candidate's decoded point in the head's grid px (:func:`keypoint_distance`);
a non-finite candidate point is infinitely far, never NaN (which would hide it). Existence is compared on
every decision. Multi-instance heads are first paired instance by instance (:func:`pair_instances`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from heatdeploy.datasets import Truth
from heatdeploy.runtime.heads import decode_outputs
from heatdeploy.runtime.metrics import diagonal, displacement, pck
from heatdeploy.runtime.preprocess import map_to_image
from heatdeploy.spec import ModelSpec

# Non-finite candidate coordinates count as _FAR heatmap px inside percentiles; a percentile that lands
# beyond _INF_FROM (no heatmap is that large) is reported as inf.
_FAR = 1e12
_INF_FROM = 1e9
# Multi-instance heads: a candidate instance is the same instance as a reference one when their keypoints lie
# this close on average (grid px); farther, it counts as one instance lost and one gained.
MATCH_RADIUS = 4.0


@dataclass
class KeypointSet:
    """One engine's decoded keypoints for all images."""

    coords_hm: np.ndarray  # [N,K,2] heatmap px
    coords_in: np.ndarray  # [N,K,2] model-input px
    coords_img: np.ndarray  # [N,K,2] original-image px
    present: np.ndarray  # [N,K] bool
    presence: np.ndarray  # [N,K] existence probability
    scores: np.ndarray  # [N,K] heatmap peak
    peaks: np.ndarray  # [N,K,2] int heatmap argmax (x, y)

    @classmethod
    def concat(cls, parts: Sequence[KeypointSet]) -> KeypointSet:
        names = [f for f in cls.__dataclass_fields__]
        return cls(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in names})


def decode_keypoints(spec: ModelSpec, outputs: dict[str, np.ndarray], transforms: np.ndarray) -> KeypointSet:
    """Raw engine outputs -> keypoints in grid, input and image pixels with the runtime's decoder.

    Multi-instance heads give ``[N,M,K,...]`` arrays; :func:`pair_instances` turns two of those into rows.
    """
    dec = decode_outputs(spec, outputs)
    assert dec.peaks is not None
    return KeypointSet(coords_hm=dec.coords_hm, coords_in=dec.coords,
                       coords_img=map_to_image(dec.coords, transforms).astype(np.float32),
                       present=dec.present, presence=dec.presence, scores=dec.scores,
                       peaks=dec.peaks.astype(np.int32))


def _take_rows(ks: KeypointSet, img: np.ndarray, slot: np.ndarray) -> KeypointSet:
    """Rows ``[R,K]`` of a multi-instance set; slot -1 is an instance this side did not find."""
    have = slot >= 0
    s = np.where(have, slot, 0)

    def pick(a: np.ndarray, fill: Any) -> np.ndarray:
        rows = a[img, s]
        shape = (-1,) + (1,) * (rows.ndim - 1)
        return np.where(have.reshape(shape), rows, fill).astype(a.dtype)

    return KeypointSet(coords_hm=pick(ks.coords_hm, np.nan), coords_in=pick(ks.coords_in, np.nan),
                       coords_img=pick(ks.coords_img, np.nan), present=pick(ks.present, False),
                       presence=pick(ks.presence, 0.0), scores=pick(ks.scores, 0.0), peaks=pick(ks.peaks, -1))


def pair_instances(ref: KeypointSet, cand: KeypointSet,
                   radius: float = MATCH_RADIUS) -> tuple[KeypointSet, KeypointSet, np.ndarray]:
    """Match candidate instances to reference ones per image -> row sets ``[R,K]`` and each row's image.

    Greedy in the reference's score order (its slots are sorted), vectorised over images: a reference
    instance takes the nearest unclaimed candidate instance whose mean keypoint distance is within
    ``radius`` grid px. Unmatched instances on either side become rows the other side lacks, so they count
    as existence flips; slots empty on both sides are dropped (they would inflate agreement).
    """
    n, m = ref.present.shape[:2]
    valid_r = ref.present.any(axis=-1)
    valid_c = cand.present.any(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs: empty slots
        d = np.linalg.norm(ref.coords_hm[:, :, None] - cand.coords_hm[:, None], axis=-1)  # [N,M,M,K]
        dist = np.nanmean(d, axis=-1)
    dist = np.where(valid_r[:, :, None] & valid_c[:, None, :] & np.isfinite(dist), dist, np.inf)
    match = np.full((n, m), -1, dtype=np.intp)
    claimed = np.zeros((n, m), dtype=bool)
    rows = np.arange(n)
    for i in range(m):  # over instance slots (<= max_instances), every image at once
        di = np.where(claimed, np.inf, dist[:, i])
        j = di.argmin(axis=1)
        ok = di[rows, j] <= radius
        match[ok, i] = j[ok]
        claimed[rows[ok], j[ok]] = True
    ri, rs = np.nonzero(valid_r)
    ci, cs = np.nonzero(valid_c & ~claimed)
    img = np.concatenate([ri, ci])
    ref_slot = np.concatenate([rs, np.full(ci.size, -1)])
    cand_slot = np.concatenate([match[ri, rs], cs])
    order = np.argsort(img, kind="stable")
    img, ref_slot, cand_slot = img[order], ref_slot[order], cand_slot[order]
    return _take_rows(ref, img, ref_slot), _take_rows(cand, img, cand_slot), img


def per_image(cmp: Comparison, row_image: np.ndarray, n: int) -> Comparison:
    """Fold a comparison over instance rows back to images (worst-image lists, the report's overlays)."""
    k = cmp.lost.shape[1]
    dm = cmp.displacement_hm
    total = np.zeros(n)
    count = np.zeros(n)
    peak = np.full(n, np.nan)
    np.add.at(total, row_image, np.nansum(dm, axis=1))
    np.add.at(count, row_image, np.isfinite(dm).sum(axis=1) + np.isinf(dm).sum(axis=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.fmax.at(peak, row_image, np.nanmax(dm, axis=1))
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    lost = np.zeros((n, k), dtype=bool)
    gained = np.zeros((n, k), dtype=bool)
    np.logical_or.at(lost, row_image, cmp.lost)
    np.logical_or.at(gained, row_image, cmp.gained)
    cmp.metrics.images = n
    return Comparison(metrics=cmp.metrics, per_keypoint=cmp.per_keypoint, mask=cmp.mask,
                      displacement_hm=cmp.displacement_hm, image_mean_hm=mean, image_max_hm=peak, lost=lost,
                      gained=gained)


@dataclass
class KeypointMetrics:
    """Task-level agreement of the candidate with the reference (and both with the truth, if known)."""

    images: int
    keypoints_total: int
    keypoints_compared: int  # present per FP32: the displacement population
    mean_displacement_hm: float
    p95_displacement_hm: float
    max_displacement_hm: float
    mean_displacement_in: float
    p95_displacement_in: float
    max_displacement_in: float
    within_hm: dict[str, float]  # "N" heatmap px -> share of compared keypoints within N px of FP32
    argmax_agreement: float
    pck_alpha: float
    pck_vs_reference: float
    existence_agreement: float
    flips_lost: int  # FP32 present -> candidate absent
    flips_gained: int  # FP32 absent -> candidate present
    worst_flip_rate: float  # the largest per-keypoint (lost + gained) / images
    worst_flip_keypoint: str
    truth_keypoints: int | None = None  # visible keypoints in the ground truth
    pck_truth_reference: float | None = None
    pck_truth_candidate: float | None = None
    pck_drop_points: float | None = None  # (reference - candidate) * 100
    existence_accuracy_reference: float | None = None
    existence_accuracy_candidate: float | None = None


@dataclass
class KeypointRow:
    """One keypoint across all images."""

    name: str
    compared: int
    mean_displacement_hm: float
    p95_displacement_hm: float
    max_displacement_hm: float
    within_hm: dict[str, float]
    argmax_agreement: float
    existence_agreement: float
    flips_lost: int
    flips_gained: int
    pck_truth_reference: float | None = None
    pck_truth_candidate: float | None = None


@dataclass
class Comparison:
    """Everything compare_keypoints works out: totals, per keypoint, and per image for ranking."""

    metrics: KeypointMetrics
    per_keypoint: list[KeypointRow]
    mask: np.ndarray  # [N,K] compared
    displacement_hm: np.ndarray  # [N,K], nan where not compared, inf where the candidate is non-finite
    image_mean_hm: np.ndarray  # [N]
    image_max_hm: np.ndarray  # [N]
    lost: np.ndarray  # [N,K]
    gained: np.ndarray  # [N,K]


def compared_mask(ref: KeypointSet, paired: np.ndarray | None = None) -> np.ndarray:
    """``[N,K]`` keypoints whose displacement is measured: FP32 calls them present at a finite point (and, for
    multi-instance rows, both sides found the instance)."""
    mask = ref.present & np.isfinite(ref.coords_hm).all(axis=-1)
    if paired is not None:
        mask &= np.asarray(paired, bool)[:, None]
    return mask


def keypoint_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance [N,K]; a non-finite candidate coordinate is infinitely far, not 'nan' (which hides it)."""
    d = displacement(a, b)
    return np.where(np.isfinite(d), d, np.inf)


@dataclass
class Agreement:
    """The raw populations the gate judges, for callers that rank or search (INT8 sensitivity)."""

    displacement_hm: np.ndarray  # [M] grid px over the compared keypoints (inf: non-finite candidate)
    flips: np.ndarray  # [R,K] bool: existence decisions that differ
    presence_error: np.ndarray  # [R,K] |candidate existence probability - FP32's|


def keypoint_agreement(spec: ModelSpec, ref: KeypointSet, cand: KeypointSet) -> Agreement:
    """Pair instances when the head finds several, then the gate's mask, displacement and flips."""
    paired = None
    if spec.multi_instance:
        ref, cand, _ = pair_instances(ref, cand)
        paired = ref.present.any(axis=1) & cand.present.any(axis=1)
    mask = compared_mask(ref, paired)
    drift = np.abs(np.nan_to_num(cand.presence.astype(np.float64) - ref.presence, nan=0.0))
    return Agreement(displacement_hm=keypoint_distance(ref.coords_hm, cand.coords_hm)[mask],
                     flips=ref.present != cand.present, presence_error=drift)


def _summary(x: np.ndarray) -> tuple[float, float, float]:
    """Mean, p95 and max of a 1-D sample (nan when empty; inf survives)."""
    if x.size == 0:
        return math.nan, math.nan, math.nan
    p95 = float(np.percentile(np.minimum(x, _FAR), 95))
    return float(x.mean()), (math.inf if p95 >= _INF_FROM else p95), float(x.max())


def _share(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def compare_keypoints(ref: KeypointSet, cand: KeypointSet, image_sizes: np.ndarray, names: Sequence[str],
                      truth: Truth | None = None, within_hm_px: Sequence[float] = (1.0, 2.0),
                      alpha: float = 0.05, paired: np.ndarray | None = None) -> Comparison:
    """Keypoint agreement over the keypoints FP32 calls present; existence agreement over all of them.

    ``paired`` ``[N]`` (multi-instance rows): only rows where both sides found the instance have
    coordinates to compare; the others count through existence flips alone.
    """
    n, k = ref.present.shape
    mask = compared_mask(ref, paired)
    d_hm = keypoint_distance(ref.coords_hm, cand.coords_hm)
    d_in = keypoint_distance(ref.coords_in, cand.coords_in)
    mean_hm, p95_hm, max_hm = _summary(d_hm[mask])
    mean_in, p95_in, max_in = _summary(d_in[mask])
    compared = int(mask.sum())
    count_k = mask.sum(axis=0)
    within = {f"{t:g}": (float((d_hm[mask] <= t).mean()) if compared else math.nan) for t in within_hm_px}
    same_peak = (ref.peaks == cand.peaks).all(axis=-1)
    diag = diagonal(image_sizes)
    pck_ref = pck(cand.coords_img, ref.coords_img, mask, diag, alpha)

    agree = ref.present == cand.present
    lost = ref.present & ~cand.present
    gained = ~ref.present & cand.present
    flip_rate_k = (lost | gained).sum(axis=0) / max(n, 1)
    worst_k = int(np.argmax(flip_rate_k)) if k else 0

    # Per keypoint: NaN outside the compared set, so nan-reductions run over axis 0 with no loop.
    dm = np.where(mask, d_hm, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_k = np.nanmean(dm, axis=0)
        p95_k = np.nanpercentile(np.minimum(dm, _FAR), 95, axis=0)
        max_k = np.nanmax(dm, axis=0)
        image_mean = np.nanmean(dm, axis=1)
        image_max = np.nanmax(dm, axis=1)
    p95_k = np.where(p95_k >= _INF_FROM, np.inf, p95_k)
    within_k = {f"{t:g}": _share(((d_hm <= t) & mask).sum(axis=0), count_k) for t in within_hm_px}
    argmax_k = _share((same_peak & mask).sum(axis=0), count_k)
    exist_k = agree.mean(axis=0)
    lost_k, gained_k = lost.sum(axis=0), gained.sum(axis=0)

    metrics = KeypointMetrics(
        images=n, keypoints_total=n * k, keypoints_compared=compared,
        mean_displacement_hm=mean_hm, p95_displacement_hm=p95_hm, max_displacement_hm=max_hm,
        mean_displacement_in=mean_in, p95_displacement_in=p95_in, max_displacement_in=max_in,
        within_hm=within, argmax_agreement=float(same_peak[mask].mean()) if compared else math.nan,
        pck_alpha=alpha, pck_vs_reference=pck_ref, existence_agreement=float(agree.mean()),
        flips_lost=int(lost.sum()), flips_gained=int(gained.sum()),
        worst_flip_rate=float(flip_rate_k[worst_k]) if k else 0.0, worst_flip_keypoint=names[worst_k] if k else "")

    truth_k: tuple[np.ndarray, np.ndarray] | None = None
    if truth is not None:
        vis = np.asarray(truth.visible, bool)
        limit = alpha * diag[:, None]
        ok_ref = displacement(ref.coords_img, truth.keypoints) <= limit
        ok_cand = displacement(cand.coords_img, truth.keypoints) <= limit
        metrics.truth_keypoints = int(vis.sum())
        if vis.any():
            metrics.pck_truth_reference = float(ok_ref[vis].mean())
            metrics.pck_truth_candidate = float(ok_cand[vis].mean())
            metrics.pck_drop_points = 100.0 * (metrics.pck_truth_reference - metrics.pck_truth_candidate)
        metrics.existence_accuracy_reference = float((ref.present == truth.present).mean())
        metrics.existence_accuracy_candidate = float((cand.present == truth.present).mean())
        vis_k = vis.sum(axis=0)
        truth_k = (_share((ok_ref & vis).sum(axis=0), vis_k), _share((ok_cand & vis).sum(axis=0), vis_k))

    table = {
        "name": list(names), "compared": count_k.tolist(), "mean_displacement_hm": mean_k.tolist(),
        "p95_displacement_hm": p95_k.tolist(), "max_displacement_hm": max_k.tolist(),
        "argmax_agreement": argmax_k.tolist(), "existence_agreement": exist_k.tolist(),
        "flips_lost": lost_k.tolist(), "flips_gained": gained_k.tolist(),
    }
    within_cols = {t: v.tolist() for t, v in within_k.items()}
    truth_cols = (truth_k[0].tolist(), truth_k[1].tolist()) if truth_k else ([None] * k, [None] * k)
    rows = [KeypointRow(**{c: table[c][j] for c in table}, within_hm={t: within_cols[t][j] for t in within_cols},
                        pck_truth_reference=truth_cols[0][j], pck_truth_candidate=truth_cols[1][j])
            for j in range(k)]  # builds the report rows; every number above is already computed
    return Comparison(metrics=metrics, per_keypoint=rows, mask=mask, displacement_hm=dm, image_mean_hm=image_mean,
                      image_max_hm=image_max, lost=lost, gained=gained)


def existence_flips(ref_present: np.ndarray, cand_present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per keypoint ``[K]``: FP32 present -> candidate absent, and FP32 absent -> candidate present."""
    r = np.asarray(ref_present, bool)
    c = np.asarray(cand_present, bool)
    return (r & ~c).sum(axis=0), (~r & c).sum(axis=0)


__all__ = ["Agreement", "Comparison", "KeypointMetrics", "KeypointRow", "KeypointSet", "MATCH_RADIUS",
           "compare_keypoints", "compared_mask", "decode_keypoints", "existence_flips", "keypoint_agreement",
           "keypoint_distance", "pair_instances", "per_image"]
