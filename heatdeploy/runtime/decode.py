"""Heatmap codec: Gaussian targets for training and batched decoding for every engine's output.

Everything is numpy over whole ``[N, K, h, w]`` batches with no Python loop over instances or
keypoints, so decoding costs the same whatever engine produced the heatmaps. Coordinates are
``(x, y)``: x is the column, y the row; in heatmap pixels the centre of pixel ``(i, j)`` is at
``(j, i)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heatdeploy.errors import InputError, ModelOutputError
from heatdeploy.runtime.codecs.conventions import HeatmapConvention, codec_from_spec
from heatdeploy.runtime.codecs.refine import (  # noqa: F401  (re-exported: the decoders' public names)
    _DET_EPS,
    _LOG_FLOOR,
    DARK_MAX_STEP,
    argmax_2d,
    refine_dark,
    refine_dark_udp,
    refine_quarter,
    soft_argmax,
)
from heatdeploy.spec import ModelSpec


@dataclass
class Decoded:
    """Keypoints decoded from one batch; every array has the batch and keypoint axes first."""

    coords_hm: np.ndarray  # [N,K,2] float32, (x, y) in heatmap pixels
    coords: np.ndarray  # [N,K,2] float32, (x, y) in model-input pixels
    scores: np.ndarray  # [N,K] float32 heatmap peak value (after a sigmoid for logit heatmaps)
    presence: np.ndarray  # [N,K] float32 probability that the keypoint exists
    present: np.ndarray  # [N,K] bool: presence >= threshold
    peaks: np.ndarray | None = None  # [N,K,2] int32: the class (grid cell) each keypoint was put in
    # Multi-instance heads only: every array above gains an instance axis ([N,M,K,...]) and this is [N,M]
    # (0 for padding slots, whose present flags are all False).
    instance_scores: np.ndarray | None = None


# --- tensors in, [N,K,h,w] out ---------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Overflow-free logistic function (tanh form), float32 out; one new array, updated in place."""
    t = np.array(x, dtype=np.float32)
    t *= np.float32(0.5)
    np.tanh(t, out=t)
    t += np.float32(1.0)
    t *= np.float32(0.5)
    return t


def _check_heatmaps(heatmaps: np.ndarray, spec: ModelSpec, what: str) -> None:
    """Raise a ModelOutputError naming both shapes when heatmaps do not fit the spec."""
    k = spec.num_keypoints
    h, w = spec.heatmap_size
    if heatmaps.ndim != 4:
        raise ModelOutputError(f"{what}: expected a 4-D [N,K,h,w] array, got shape {heatmaps.shape}")
    if heatmaps.shape[1] != k:
        raise ModelOutputError(
            f"{what}: got {heatmaps.shape[1]} keypoint channels (shape {heatmaps.shape} as [N,K,h,w]) "
            f"but the spec has {k} keypoints ({', '.join(spec.keypoints)}); "
            "set heatmap.channels or heatmap.layout in the spec"
        )
    if heatmaps.shape[2:] != (h, w):
        raise ModelOutputError(
            f"{what}: heatmap size {heatmaps.shape[2]}x{heatmaps.shape[3]} (shape {heatmaps.shape} as "
            f"[N,K,h,w]) but the spec expects {h}x{w} (input {spec.input.height}x{spec.input.width} / "
            f"stride {spec.heatmap.stride})"
        )


def heatmap_view(raw: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The engine's heatmap output as float32 ``[N,K,h,w]`` following the spec's layout, copying nothing the
    layout does not force (NHWC gives a transposed view): for decoders that read a few pixels per map."""
    raw = np.asarray(raw)
    layout = spec.heatmap.layout
    if raw.ndim != 4:
        raise ModelOutputError(
            f"heatmap output {spec.heatmap.name!r}: expected a 4-D {layout} tensor, got shape {raw.shape}"
        )
    hm = raw.transpose(0, 3, 1, 2) if layout == "NHWC" else raw
    channels = spec.heatmap.channels
    if channels is not None:
        idx = np.asarray(channels, dtype=np.intp)
        c = hm.shape[1]
        if idx.size and (idx.min() < -c or idx.max() >= c):
            raise ModelOutputError(
                f"heatmap output {spec.heatmap.name!r}: heatmap.channels {list(channels)} out of range "
                f"for {c} channels (raw shape {raw.shape}, layout {layout})"
            )
        hm = hm[:, idx]
    _check_heatmaps(hm, spec, f"heatmap output {spec.heatmap.name!r} (raw shape {raw.shape}, {layout})")
    return hm.astype(np.float32, copy=False)


def select_heatmaps(raw: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Turn the engine's heatmap output into contiguous float32 ``[N,K,h,w]`` following the spec's layout."""
    return np.ascontiguousarray(heatmap_view(raw, spec), dtype=np.float32)


def existence_probability(raw: np.ndarray | None, spec: ModelSpec, n: int) -> np.ndarray | None:
    """Existence output ``[N,K]``, ``[N,1]`` or ``[N,K,1]`` -> float32 probabilities ``[N,K]``."""
    if raw is None:
        return None
    if spec.existence is None:
        raise ModelOutputError("got an existence output but the spec has no existence head (spec.existence)")
    ex = spec.existence
    k = spec.num_keypoints
    arr = np.asarray(raw, dtype=np.float32)
    if arr.ndim == 0 or arr.shape[0] != n:
        raise ModelOutputError(f"existence output {ex.name!r}: shape {arr.shape} does not match a batch of {n}")
    if arr.ndim > 2 and all(d == 1 for d in arr.shape[2:]):
        arr = arr.reshape(arr.shape[:2])
    want = 1 if ex.per == "instance" else k
    if arr.ndim == 1 and want == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != want:
        expected = f"[{n},1]" if ex.per == "instance" else f"[{n},{k}] or [{n},{k},1]"
        raise ModelOutputError(
            f"existence output {ex.name!r}: got shape {np.asarray(raw).shape}, expected {expected} "
            f"(existence.per = {ex.per!r}, {k} keypoints)"
        )
    prob = _sigmoid(arr) if ex.activation == "logits" else arr
    if prob.shape != (n, k):
        prob = np.broadcast_to(prob, (n, k))
    return np.ascontiguousarray(prob, dtype=np.float32)


# --- coordinate frames -----------------------------------------------------------------------------


def heatmap_to_input(coords_hm: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(x, y) in heatmap pixels -> (x, y) in model-input pixels, per the spec's convention (heatmap.align)."""
    return codec_from_spec(spec).to_input(coords_hm)


def input_to_heatmap(coords_in: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(x, y) in model-input pixels -> (x, y) in heatmap pixels; the inverse of heatmap_to_input."""
    return codec_from_spec(spec).to_heatmap(coords_in)


# --- the codec -------------------------------------------------------------------------------------


class HeatmapCodec:
    """The spec's codec: targets for training and keypoints from model output, by the spec's convention.

    A thin face over the convention object (:func:`codec_from_spec`) that adds what only the spec knows:
    logit heatmaps, the existence head and the presence threshold.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.num_keypoints = spec.num_keypoints
        self.heatmap_size = spec.heatmap_size
        self.sigma = float(spec.decoder.sigma)
        self.convention: HeatmapConvention = codec_from_spec(spec)

    def encode(self, keypoints_in: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints ``[N,K,2]`` in input px -> Gaussian targets ``[N,K,h,w]`` and weights ``[N,K]``.

        Each target is an unnormalised Gaussian (sigma in heatmap px) with value 1 at the keypoint, rendered
        by the spec's convention (sub-pixel for ours). Absent keypoints, non-finite ones and ones out of the
        Gaussian's reach get an all-zero target and weight 0.
        """
        kp = np.asarray(keypoints_in, dtype=np.float64)
        pres = np.asarray(present, dtype=bool)
        k = self.num_keypoints
        if kp.ndim != 3 or kp.shape[1:] != (k, 2) or pres.shape != kp.shape[:2]:
            raise InputError(
                f"encode: expected keypoints [N,{k},2] and present [N,{k}], got {kp.shape} and {pres.shape}"
            )
        return self.convention.encode(kp, pres)

    def decode(self, heatmaps: np.ndarray, existence: np.ndarray | None = None) -> Decoded:
        """Heatmaps ``[N,K,h,w]`` (+ raw existence output) -> coordinates, scores and presence.

        Coordinates are found on the probability map (a sigmoid is applied first for logit heatmaps;
        argmax and quarter are unaffected by it, DARK and soft-argmax assume it). Without an existence
        output (no head in the spec, or none passed) presence falls back to the peak score and
        ``decoder.score_threshold``.
        """
        spec = self.spec
        raw = np.asarray(heatmaps, dtype=np.float32)
        _check_heatmaps(raw, spec, "decode")
        n = raw.shape[0]
        logits = spec.heatmap.activation == "logits"
        name = spec.decoder.name
        hm = _sigmoid(raw) if name in ("dark", "soft_argmax") and logits else raw
        peaks, scores = argmax_2d(hm)
        coords_hm = self.convention.refine(hm, peaks)
        if logits and hm is raw:
            scores = _sigmoid(scores)
        coords = self.convention.to_input(coords_hm)

        presence = existence_probability(existence, spec, n)
        if presence is None:
            presence = scores.astype(np.float32, copy=True)
            threshold = spec.decoder.score_threshold
        else:
            threshold = spec.existence.threshold  # type: ignore[union-attr]
        return Decoded(
            coords_hm=coords_hm.astype(np.float32, copy=False),
            coords=coords.astype(np.float32, copy=False),
            scores=scores.astype(np.float32, copy=False),
            presence=presence,
            present=presence >= threshold,
            peaks=peaks.astype(np.int32),
        )
