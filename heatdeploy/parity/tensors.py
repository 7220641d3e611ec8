"""Tensor metrics: how far one raw output of the candidate is from the reference's (SNR, cosine, errors).

Running float64 sums over batches, so a parity run never keeps every output in memory; the primary
output also gets a histogram of |candidate - reference| for the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from heatdeploy.parity.result import ParityError

# |candidate - reference| histogram of the heatmap output: half-decade bins from 1e-8 to 10.
HIST_EDGES = 10.0 ** np.arange(-8.0, 1.01, 0.5)


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


class TensorAccumulator:
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


__all__ = ["HIST_EDGES", "TensorAccumulator", "TensorMetrics", "cosine_from_sums", "cosine_similarity", "snr_db",
           "snr_from_sums"]
