"""Parity: an FP32 reference artifact against a candidate (INT8, FP16, another engine) -> pass or fail.

Images are preprocessed once and the very same tensor goes to both engines, so every difference comes
from the engine and its precision, never from resizing or colour conversion. Both outputs go through
the same codec. Keypoint metrics use only keypoints the FP32 reference calls present: an absent
keypoint's coordinates come from the argmax of a flat map (or DARK's step on it) and mean nothing.
The verdict is checked against a named tolerance profile (``tolerances/*.toml``) and explained in
one line per failed limit, so it works as a CI gate (exit code 0/1).

Everything here is numpy over whole ``[N, K]`` arrays; the runtime's import rule holds (no torch/onnx).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from heatdeploy import __version__
from heatdeploy.bundle import Bundle
from heatdeploy.errors import HeatdeployError
from heatdeploy.fsutil import atomic_write_text, read_toml
from heatdeploy.runtime.heads import decode_outputs
from heatdeploy.runtime.metrics import diagonal, displacement, pck
from heatdeploy.runtime.parity_floor import DITHER_LEVELS, FloorMetrics, dither, floor_metrics
from heatdeploy.runtime.pipeline import Pipeline
from heatdeploy.runtime.preprocess import load_image, map_to_image
from heatdeploy.spec import ModelSpec

PROFILES = ("strict", "default", "loose")
TOLERANCE_DIR = Path(__file__).parent / "tolerances"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_SYNTHETIC = 32  # images for data="synthetic"
DEFAULT_WORST = 8  # images listed (and drawn) per worst-case list
# Non-finite candidate coordinates count as _FAR heatmap px inside percentiles; a percentile that lands
# beyond _INF_FROM (no heatmap is that large) is reported as inf.
_FAR = 1e12
_INF_FROM = 1e9
# |candidate - reference| histogram of the heatmap output: half-decade bins from 1e-8 to 10.
# Multi-instance heads: a candidate instance is the same instance as a reference one when their keypoints lie
# this close on average (grid px); farther, it counts as one instance lost and one gained.
MATCH_RADIUS = 4.0
HIST_EDGES = 10.0 ** np.arange(-8.0, 1.01, 0.5)


class ParityError(HeatdeployError, ValueError):
    """Parity cannot run on what was given; the one-line message names the input and the fix."""


class ToleranceError(HeatdeployError, ValueError):
    """A tolerance profile that cannot be used; the message names the file and the key."""


# --- tolerance profiles ----------------------------------------------------------------------------


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
_TOP_KEYS = ("name", "description", "extends", "metrics", "limits")
_METRIC_KEYS = ("within_hm_px", "pck_alpha")


@dataclass(frozen=True)
class Tolerance:
    """A named set of limits plus the metric settings they refer to."""

    name: str
    source: str  # the TOML file it came from
    limits: dict[str, float]
    within_hm_px: tuple[float, ...] = (1.0, 2.0)
    pck_alpha: float = 0.05
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "description": self.description,
                "within_hm_px": list(self.within_hm_px), "pck_alpha": self.pck_alpha, "limits": dict(self.limits)}


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
                     description=desc)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _unknown(table: dict[str, Any], known: Sequence[str], where: str, prefix: str) -> None:
    bad = sorted(set(table) - set(known))
    if bad:
        raise ToleranceError(f"{where}: unknown key {prefix}{bad[0]}; known: "
                             f"{', '.join(prefix + k for k in known)}")


# --- data ------------------------------------------------------------------------------------------


@dataclass
class Truth:
    """Ground truth in original-image pixels."""

    keypoints: np.ndarray  # [N,K,2]
    present: np.ndarray  # [N,K] bool
    visible: np.ndarray  # [N,K] bool


@dataclass
class ParityData:
    """The images parity runs on (files read lazily, or arrays) and their ground truth if any."""

    kind: str  # labelled | folder | synthetic
    source: str
    names: list[str]
    files: list[Path] | None = None
    arrays: list[np.ndarray] | None = None
    truth: Truth | None = None
    truth_sizes: np.ndarray | None = None  # [N,2] (h, w) the labels were made for
    note: str = ""

    def __len__(self) -> int:
        return len(self.names)

    def load(self, start: int, stop: int) -> list[np.ndarray]:
        """Images ``start:stop`` as BGR uint8 arrays."""
        if self.arrays is not None:
            return list(self.arrays[start:stop])
        assert self.files is not None
        return [load_image(f) for f in self.files[start:stop]]

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "images": len(self), "truth": self.truth is not None,
                "note": self.note}


def load_parity_data(spec: ModelSpec, data: str | Path | None = None, *, limit: int | None = None,
                     seed: int = 0) -> ParityData:
    """``None``: the shipped labelled split; a folder with labels.json; a folder of images; 'synthetic[:N]'."""
    if limit is not None and limit < 1:
        raise ParityError(f"limit: expected a positive number of images, got {limit}")
    text = "" if data is None else str(data).strip()
    if text == "synthetic" or text.startswith("synthetic:"):
        return _synthetic(spec, text, limit, seed)
    if data is None:
        from heatdeploy.models.evalset import EVAL_DIR

        path = EVAL_DIR
    else:
        path = Path(text).expanduser()
    from heatdeploy.models.evalset import LABELS

    if path.is_dir() and (path / LABELS).is_file():
        return _labelled(spec, path, limit)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ParityError(f"{path}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}, recursively); "
                              "pass a folder of images, a labelled split (labels.json) or 'synthetic'")
        files = files[:limit]
        return ParityData(kind="folder", source=str(path), names=[str(f.relative_to(path)) for f in files],
                          files=files, note="no ground truth: truth metrics omitted")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return ParityData(kind="folder", source=str(path), names=[path.name], files=[path],
                          note="no ground truth: truth metrics omitted")
    raise ParityError(f"{path}: not found or not usable; pass a labelled split folder (labels.json), a folder "
                      "of images, or 'synthetic[:N]'")


def _labelled(spec: ModelSpec, root: Path, limit: int | None) -> ParityData:
    from heatdeploy.models.evalset import read_labelled_set

    try:
        split = read_labelled_set(root)
    except ValueError as exc:
        raise ParityError(str(exc)) from None
    n = len(split.files) if limit is None else min(limit, len(split.files))
    if n == 0:
        raise ParityError(f"{root}: labels.json lists no images")
    truth, note = None, ""
    if split.keypoints.shape[1] == spec.num_keypoints:
        truth = Truth(split.keypoints[:n], split.present[:n], split.visible[:n])
    else:
        note = (f"labels have {split.keypoints.shape[1]} keypoints, the model {spec.num_keypoints}: "
                "truth metrics omitted")
    return ParityData(kind="labelled", source=str(root), names=[f.name for f in split.files[:n]],
                      files=list(split.files[:n]), truth=truth, truth_sizes=split.image_sizes[:n], note=note)


def _synthetic(spec: ModelSpec, text: str, limit: int | None, seed: int) -> ParityData:
    from heatdeploy.models.synthetic_spec import synthetic_count

    try:
        n = synthetic_count(text, DEFAULT_SYNTHETIC)
    except ValueError as exc:
        raise ParityError(str(exc)) from None
    if limit is not None:
        n = min(n, limit)
    from heatdeploy.models.synthetic import render_batch

    h, w = spec.input.height, spec.input.width
    images, kps, present, visible = render_batch(np.random.default_rng(seed), n, h, w)
    truth, note = None, ""
    if kps.shape[1] == spec.num_keypoints:
        truth = Truth(kps.astype(np.float32), present.astype(bool), visible.astype(bool))
    else:
        note = f"synthetic figures have {kps.shape[1]} keypoints, the model {spec.num_keypoints}: truth omitted"
    return ParityData(kind="synthetic", source=f"synthetic:{n} (seed {seed}, {h}x{w})",
                      names=[f"synthetic-{i:04d}" for i in range(n)], arrays=list(images), truth=truth,
                      truth_sizes=np.tile(np.array([[h, w]], np.int64), (n, 1)), note=note)


# --- tensor metrics --------------------------------------------------------------------------------


def snr_from_sums(signal_sq: float | np.ndarray, error_sq: float | np.ndarray) -> float | np.ndarray:
    """``10 log10(sum ref^2 / sum err^2)`` in dB; inf when the error is exactly zero."""
    s = np.asarray(signal_sq, np.float64)
    e = np.asarray(error_sq, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(e == 0, np.inf, 10.0 * np.log10(s / np.where(e == 0, 1.0, e)))
    return float(out) if out.ndim == 0 else out


def snr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-noise ratio of a candidate tensor, the reference being the signal."""
    r = np.asarray(reference, np.float64)
    d = np.asarray(candidate, np.float64) - r
    return float(snr_from_sums((r * r).sum(), (d * d).sum()))


def cosine_from_sums(dot: float, ref_sq: float, cand_sq: float) -> float:
    """Cosine of the angle between two flattened tensors; 1 if both are zero, 0 if only one is."""
    if ref_sq == 0.0 and cand_sq == 0.0:
        return 1.0
    if ref_sq == 0.0 or cand_sq == 0.0:
        return 0.0
    return float(dot / math.sqrt(ref_sq * cand_sq))


def cosine_similarity(reference: np.ndarray, candidate: np.ndarray) -> float:
    r = np.asarray(reference, np.float64).ravel()
    c = np.asarray(candidate, np.float64).ravel()
    return cosine_from_sums(float(r @ c), float(r @ r), float(c @ c))


@dataclass
class TensorMetrics:
    """How far one output tensor of the candidate is from the reference's, over all images."""

    name: str
    shape: list[int]  # per batch of all images: [N, ...]
    reference_dtype: str
    candidate_dtype: str
    max_abs_error: float
    mean_abs_error: float
    rmse: float
    cosine: float
    snr_db: float
    nonfinite: int  # non-finite values in the candidate's output


class _TensorAccumulator:
    """Running sums (float64) so the metrics need not keep every output in memory."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = self.nonfinite = 0
        self.sum_abs = self.max_abs = self.dot = self.ref_sq = self.cand_sq = self.err_sq = 0.0
        self.shape: list[int] = []
        self.dtypes = ("", "")
        self.img_ref_sq: list[np.ndarray] = []
        self.img_err_sq: list[np.ndarray] = []
        self.hist = np.zeros(len(HIST_EDGES) - 1, np.int64)
        self.zeros = 0

    def update(self, ref: np.ndarray, cand: np.ndarray, histogram: bool = False) -> None:
        ref, cand = np.asarray(ref), np.asarray(cand)
        if ref.shape != cand.shape:
            raise ParityError(f"output {self.name!r}: the candidate returns shape {list(cand.shape)}, the "
                              f"reference {list(ref.shape)}; they must match")
        r = ref.astype(np.float64)
        c = cand.astype(np.float64)
        d = c - r
        a = np.abs(d)
        n = r.shape[0] if r.ndim else 1
        self.dtypes = (str(ref.dtype), str(cand.dtype))
        self.shape = [(self.shape[0] if self.shape else 0) + n, *r.shape[1:]]
        self.count += r.size
        self.nonfinite += int(r.size - np.isfinite(c).sum())
        self.sum_abs += float(a.sum())
        self.max_abs = max(self.max_abs, float(a.max())) if a.size else self.max_abs
        if a.size and not np.isfinite(a).all():
            self.max_abs = math.inf
        self.dot += float((r * c).sum())
        self.ref_sq += float((r * r).sum())
        self.cand_sq += float((c * c).sum())
        self.err_sq += float((d * d).sum())
        self.img_ref_sq.append((r * r).reshape(n, -1).sum(axis=1))
        self.img_err_sq.append((d * d).reshape(n, -1).sum(axis=1))
        if histogram:
            finite = a[np.isfinite(a)]
            self.zeros += int((finite == 0).sum())
            nz = np.clip(finite[finite > 0], HIST_EDGES[0], HIST_EDGES[-1])
            self.hist += np.histogram(nz, bins=HIST_EDGES)[0]

    def result(self) -> TensorMetrics:
        cnt = max(self.count, 1)
        return TensorMetrics(
            name=self.name, shape=self.shape, reference_dtype=self.dtypes[0], candidate_dtype=self.dtypes[1],
            max_abs_error=self.max_abs, mean_abs_error=self.sum_abs / cnt, rmse=math.sqrt(self.err_sq / cnt),
            cosine=cosine_from_sums(self.dot, self.ref_sq, self.cand_sq),
            snr_db=float(snr_from_sums(self.ref_sq, self.err_sq)), nonfinite=self.nonfinite)

    def per_image_snr(self) -> np.ndarray:
        if not self.img_ref_sq:
            return np.zeros(0)
        return np.asarray(snr_from_sums(np.concatenate(self.img_ref_sq), np.concatenate(self.img_err_sq)))


# --- keypoint metrics ------------------------------------------------------------------------------


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


def _finite_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance [N,K]; a non-finite candidate coordinate is infinitely far, not 'nan' (which hides it)."""
    d = displacement(a, b)
    return np.where(np.isfinite(d), d, np.inf)


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
    mask = ref.present & np.isfinite(ref.coords_hm).all(axis=-1)
    if paired is not None:
        mask &= np.asarray(paired, bool)[:, None]
    d_hm = _finite_distance(ref.coords_hm, cand.coords_hm)
    d_in = _finite_distance(ref.coords_in, cand.coords_in)
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


# --- checks ----------------------------------------------------------------------------------------


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


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


def _check(key: str, label: str, value: float | None, limit: float, tol: str, why_undefined: str = "") -> Check:
    lim = LIMITS[key]
    unit = f" {lim.unit}" if lim.unit else ""
    if value is None or math.isnan(value):
        reason = f"{label}: undefined — {why_undefined or 'nothing to measure'} ({tol})"
        return Check(key, label, None, limit, lim.bound, lim.unit, "fail", reason)
    bad = value > limit if lim.bound == "max" else value < limit
    op = (">" if bad else "<=") if lim.bound == "max" else ("<" if bad else ">=")
    reason = f"{label} {_fmt(value)}{unit} {op} {_fmt(limit)} ({tol})"
    return Check(key, label, float(value), limit, lim.bound, lim.unit, "fail" if bad else "pass", reason)


def evaluate_checks(tol: Tolerance, km: KeypointMetrics, tensors: Sequence[TensorMetrics]) -> list[Check]:
    """Every limit of the profile, in the profile's order; truth limits are skipped without truth."""
    none_present = "FP32 calls no keypoint present on these images; use images where the model finds keypoints"
    checks: list[Check] = []
    for key, limit in tol.limits.items():
        lim = LIMITS[key]
        if key == "max_mean_displacement_hm":
            checks.append(_check(key, lim.label, km.mean_displacement_hm, limit, tol.name, none_present))
        elif key == "max_p95_displacement_hm":
            checks.append(_check(key, lim.label, km.p95_displacement_hm, limit, tol.name, none_present))
        elif key == "max_max_displacement_hm":
            checks.append(_check(key, lim.label, km.max_displacement_hm, limit, tol.name, none_present))
        elif key == "min_existence_agreement":
            checks.append(_check(key, lim.label, km.existence_agreement, limit, tol.name))
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


# --- the result ------------------------------------------------------------------------------------


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

    data: ParityData
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
                f"{km.images} images: mean displacement {_fmt(km.mean_displacement_hm)} heatmap px, "
                f"p95 {_fmt(km.p95_displacement_hm)}, existence agreement {_fmt(km.existence_agreement)}")
        if km.pck_drop_points is not None:
            text += f", PCK@{km.pck_alpha:g} drop {_fmt(km.pck_drop_points)} points"
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


# --- running ---------------------------------------------------------------------------------------


def _artifact_info(pipe: Pipeline) -> ArtifactInfo:
    a = pipe.artifact
    assert a is not None
    return ArtifactInfo(name=a.name, path=a.path, format=a.format, precision=a.precision,
                        backend=pipe.backend_name, sha256=a.sha256)


def _bundle_root(bundle: str | Path | Bundle) -> Path:
    root = bundle.root if isinstance(bundle, Bundle) else Path(bundle)
    if not root.is_dir():
        raise ParityError(f"{root}: not a bundle directory; parity compares two artifacts of one bundle made by "
                          "'heatdeploy export'")
    return root


def run_parity(bundle: str | Path | Bundle, candidate: str, *, reference: str = "onnx-fp32",
               data: str | Path | ParityData | None = None, tolerance: str | Path | Tolerance = "default",
               limit: int | None = None, batch_size: int = 8, backend: str | None = None,
               reference_backend: str | None = None, options: dict[str, Any] | None = None,
               reference_options: dict[str, Any] | None = None, within_hm_px: Sequence[float] | None = None,
               worst: int = DEFAULT_WORST, seed: int = 0, floor: bool = True,
               progress: Callable[[int, int], None] | None = None) -> ParityResult:
    """Run reference and candidate on the same preprocessed batches and check the tolerance.

    ``floor``: also run the reference on each batch dithered by +-0.5 input level and report FP32's own
    noise floor (:mod:`heatdeploy.runtime.parity_floor`); it costs one more reference inference per batch.
    ``progress(done, total)`` is called after each batch (for a progress bar).
    """
    t0 = time.perf_counter()
    tol = tolerance if isinstance(tolerance, Tolerance) else load_tolerance(tolerance)  # fail fast on bad TOML
    if batch_size < 1:
        raise ParityError(f"batch size: expected >= 1, got {batch_size}")
    within = tuple(sorted(float(v) for v in within_hm_px)) if within_hm_px else tol.within_hm_px
    root = _bundle_root(bundle)
    ref_pipe = Pipeline.load(root, artifact=reference, backend=reference_backend, options=reference_options)
    cand_pipe = Pipeline.load(root, artifact=candidate, backend=backend, options=options)
    spec = ref_pipe.spec
    pdata = data if isinstance(data, ParityData) else load_parity_data(spec, data, limit=limit, seed=seed)
    n = len(pdata)
    accs = {name: _TensorAccumulator(name) for name in spec.output_names}
    refs: list[KeypointSet] = []
    cands: list[KeypointSet] = []
    floors: list[KeypointSet] = []
    sizes: list[np.ndarray] = []
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch_size):
        images = pdata.load(start, min(start + batch_size, n))
        boxes = None
        if spec.input.resize == "crop":  # whole image as the person box, as calibration does
            boxes = np.array([[0.0, 0.0, im.shape[1] - 1.0, im.shape[0] - 1.0] for im in images])
        batch = ref_pipe.preprocess(images, boxes)  # once: both engines get this very tensor
        ref_out = ref_pipe.infer(batch.tensor)
        cand_out = cand_pipe.infer(batch.tensor)
        for name, acc in accs.items():
            acc.update(ref_out[name], cand_out[name], histogram=name == spec.primary_output)
        refs.append(decode_keypoints(spec, ref_out, batch.transforms))
        cands.append(decode_keypoints(spec, cand_out, batch.transforms))
        if floor:
            dithered = dither(batch.tensor, ref_pipe.preprocess.pixel_step, rng)
            floors.append(decode_keypoints(spec, ref_pipe.infer(dithered), batch.transforms))
        sizes.append(batch.image_sizes)
        if progress is not None:
            progress(min(start + batch_size, n), n)
    ref_set, cand_set = KeypointSet.concat(refs), KeypointSet.concat(cands)
    image_sizes = np.concatenate(sizes)
    floor_ref = (ref_set, KeypointSet.concat(floors)) if floors else None
    if pdata.truth is not None and pdata.truth_sizes is not None and not np.array_equal(image_sizes,
                                                                                        pdata.truth_sizes):
        raise ParityError(f"{pdata.source}: image sizes on disk differ from labels.json; regenerate the split")
    row_image = None
    if spec.multi_instance:  # rows are matched instances; labels of single-figure data do not apply
        ref_set, cand_set, row_image = pair_instances(ref_set, cand_set)
        paired = ref_set.present.any(axis=1) & cand_set.present.any(axis=1)
        cmp = per_image(compare_keypoints(ref_set, cand_set, image_sizes[row_image], spec.keypoints, None, within,
                                          tol.pck_alpha, paired), row_image, n)
    else:
        cmp = compare_keypoints(ref_set, cand_set, image_sizes, spec.keypoints, pdata.truth, within, tol.pck_alpha)
    floor_result = _floor(spec, floor_ref, cmp, image_sizes, within, tol.pck_alpha) if floor_ref else None
    tensors = [acc.result() for acc in accs.values()]
    hm_acc = accs[spec.primary_output]
    img_snr = hm_acc.per_image_snr()
    by_disp, by_flips = _worst(cmp, pdata, spec.keypoints, img_snr, worst)
    result = ParityResult(
        bundle=str(root), reference=_artifact_info(ref_pipe), candidate=_artifact_info(cand_pipe),
        data=pdata.record(), tolerance=tol, tensors=tensors, keypoints=cmp.metrics, per_keypoint=cmp.per_keypoint,
        worst_by_displacement=by_disp, worst_by_flips=by_flips,
        checks=evaluate_checks(tol, cmp.metrics, tensors), seconds=0.0, floor=floor_result,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        detail=ParityDetail(data=pdata, keypoint_names=spec.keypoints, skeleton=spec.skeleton, reference=ref_set,
                            candidate=cand_set, comparison=cmp, image_sizes=image_sizes,
                            heatmap_error_hist=hm_acc.hist.copy(), heatmap_error_zeros=hm_acc.zeros,
                            heatmap_snr_per_image=img_snr, row_image=row_image))
    result.seconds = time.perf_counter() - t0
    return result


def _floor(spec: ModelSpec, sets: tuple[KeypointSet, KeypointSet], cmp: Comparison, image_sizes: np.ndarray,
           within: Sequence[float], alpha: float) -> FloorMetrics:
    """The reference against itself dithered; the candidate on what the dither left alone (single instance)."""
    ref, dithered = sets
    note = f"uniform +-{DITHER_LEVELS:g} input level"
    if spec.multi_instance:
        r, d, rows = pair_instances(ref, dithered)
        paired = r.present.any(axis=1) & d.present.any(axis=1)
        fcmp = compare_keypoints(r, d, image_sizes[rows], spec.keypoints, None, within, alpha, paired)
        return floor_metrics(fcmp, None, None, None, note)
    fcmp = compare_keypoints(ref, dithered, image_sizes, spec.keypoints, None, within, alpha)
    return floor_metrics(fcmp, cmp, ref.presence, _decision_threshold(spec), note)


def _decision_threshold(spec: ModelSpec) -> float:
    """The probability the decoder's present flag compares with (existence head, else the peak score)."""
    if spec.existence is not None:
        return float(spec.existence.threshold)
    if spec.landmarks is not None and "presence" in spec.landmarks.fields:
        return 0.5
    return float(spec.decoder.score_threshold)


def _worst(cmp: Comparison, data: ParityData, names: Sequence[str], img_snr: np.ndarray,
           worst: int) -> tuple[list[WorstImage], list[WorstImage]]:
    """The images with the largest mean displacement, and with the most existence flips (only non-zero)."""
    mean_img = np.nan_to_num(cmp.image_mean_hm, nan=-1.0, posinf=np.inf)
    flips = (cmp.lost | cmp.gained).sum(axis=1)
    by_disp = np.argsort(-mean_img, kind="stable")[:worst]
    by_disp = by_disp[mean_img[by_disp] > 0]
    by_flip = np.argsort(-flips, kind="stable")[:worst]
    by_flip = by_flip[flips[by_flip] > 0]
    key_names = np.asarray(names, dtype=object)

    def entry(i: int) -> WorstImage:
        return WorstImage(index=int(i), name=data.names[i], mean_displacement_hm=float(cmp.image_mean_hm[i]),
                          max_displacement_hm=float(cmp.image_max_hm[i]), flips=int(flips[i]),
                          lost=list(key_names[cmp.lost[i]]), gained=list(key_names[cmp.gained[i]]),
                          heatmap_snr_db=float(img_snr[i]) if img_snr.size else math.nan)

    return [entry(i) for i in by_disp], [entry(i) for i in by_flip]


# --- outputs ---------------------------------------------------------------------------------------


def write_outputs(result: ParityResult, out: str | Path) -> dict[str, str]:
    """``parity.json`` and the self-contained ``parity.html`` under ``out`` (atomic writes)."""
    from heatdeploy.runtime.parity_report import write_html

    out = Path(out)
    html_path = out / "parity.html"
    json_path = out / "parity.json"
    result.files = {"json": str(json_path), "html": str(html_path)}
    write_html(result, html_path)
    atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2))
    return result.files


def record_in_manifest(bundle: str | Path | Bundle, result: ParityResult) -> Path:
    """Store the summary as ``parity`` of the candidate artifact and save the manifest.

    The bundle is re-read just before writing so a concurrent edit of another artifact is not lost.
    The sha256 in the summary ties the verdict to the exact candidate file it checked.
    """
    root = _bundle_root(bundle)
    b = Bundle.load(root, verify=False)
    art = b.artifact(result.candidate.name)
    art.parity = result.summary()
    return b.save()


def parity_command(bundle: str | Path, candidate: str, reference: str = "onnx-fp32",
                   data: str | Path | None = None, tolerance: str | Path = "default",
                   out: str | Path | None = None, *, limit: int | None = None, batch_size: int = 8,
                   backend: str | None = None, reference_backend: str | None = None,
                   options: dict[str, Any] | None = None, within_hm_px: Sequence[float] | None = None,
                   worst: int = DEFAULT_WORST, write_manifest: bool = True, floor: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> tuple[ParityResult, int]:
    """What ``heatdeploy parity`` does: run, write JSON + HTML, record in the manifest; exit code 0 pass, 1 fail."""
    result = run_parity(bundle, candidate, reference=reference, data=data, tolerance=tolerance, limit=limit,
                        batch_size=batch_size, backend=backend, reference_backend=reference_backend,
                        options=options, within_hm_px=within_hm_px, worst=worst, floor=floor, progress=progress)
    if out is not None:
        write_outputs(result, out)
    if write_manifest:
        record_in_manifest(bundle, result)
    return result, result.exit_code


def print_result(result: ParityResult, console: Any = None) -> None:
    """The verdict, the checks and the headline figures as rich tables (for the CLI)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    checks = Table(title=f"parity {result.candidate.name} vs {result.reference.name} — tolerance "
                         f"{result.tolerance.name}")
    for col in ("check", "value", "limit", "result"):
        checks.add_column(col, justify="left" if col == "check" else "right")
    for c in result.checks:
        style = {"pass": "green", "fail": "red", "skipped": "yellow"}[c.status]
        bound = "<=" if c.bound == "max" else ">="
        checks.add_row(c.label, _fmt(c.value), f"{bound} {_fmt(c.limit)}", f"[{style}]{c.status}[/{style}]")
    console.print(checks)
    km = result.keypoints
    figs = Table(title="figures")
    figs.add_column("metric")
    figs.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [
        ("images / keypoints compared", f"{km.images} / {km.keypoints_compared}"),
        ("displacement mean / p95 / max (heatmap px)",
         f"{_fmt(km.mean_displacement_hm)} / {_fmt(km.p95_displacement_hm)} / {_fmt(km.max_displacement_hm)}"),
        ("displacement mean / p95 / max (input px)",
         f"{_fmt(km.mean_displacement_in)} / {_fmt(km.p95_displacement_in)} / {_fmt(km.max_displacement_in)}"),
        *((f"within {t} heatmap px of FP32", _fmt(v)) for t, v in km.within_hm.items()),
        ("heatmap argmax agreement", _fmt(km.argmax_agreement)),
        (f"PCK@{km.pck_alpha:g} vs FP32", _fmt(km.pck_vs_reference)),
        ("existence agreement", _fmt(km.existence_agreement)),
        ("flips present->absent / absent->present", f"{km.flips_lost} / {km.flips_gained}"),
    ]
    if km.pck_drop_points is not None:
        rows.append((f"PCK@{km.pck_alpha:g} vs truth FP32 / candidate / drop (points)",
                     f"{_fmt(km.pck_truth_reference)} / {_fmt(km.pck_truth_candidate)} / "
                     f"{_fmt(km.pck_drop_points)}"))
    rows += [(f"{t.name}: SNR dB / cosine / max abs", f"{_fmt(t.snr_db)} / {t.cosine:.7g} / "
              f"{_fmt(t.max_abs_error)}") for t in result.tensors]
    for name, value in rows:
        figs.add_row(name, str(value))
    console.print(figs)
    if result.floor is not None:
        console.print(result.floor.line(km.mean_displacement_hm), highlight=False, soft_wrap=True)
    colour = "green" if result.passed else "red"
    console.print(f"[{colour}]{result.headline()}[/{colour}]", highlight=False, soft_wrap=True)
    for r in result.reasons:
        console.print(f"  - {r}", highlight=False, soft_wrap=True)


__all__ = [
    "Check", "KeypointMetrics", "KeypointRow", "ParityData", "ParityError", "ParityResult", "PROFILES",
    "TensorMetrics", "Tolerance", "ToleranceError", "compare_keypoints", "cosine_similarity", "evaluate_checks",
    "existence_flips", "load_parity_data", "load_tolerance", "parity_command", "print_result",
    "record_in_manifest", "run_parity", "snr_db", "write_outputs",
]
