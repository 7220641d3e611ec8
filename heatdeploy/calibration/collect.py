"""Activation ranges with ORT's own calibrators, fed one batch per ``collect_data`` call.

ORT's histogram calibrators keep every batch's intermediate outputs until the reader is exhausted and
only then build histograms: with one reader over the whole set that is tens of GB. Handing them a
one-batch reader per call makes them merge each batch into their histograms (MinMax into its running
range) and drop it, so memory is one batch of activations whatever the set size. The result is saved
in ORT's calibration-cache JSON, which ``quantize_static(calibration_cache_path=...)`` reads as is.

ORT's ``quantize_static`` cannot pass histogram sizes to its Entropy calibrator; with the defaults
(128 bins, 128 quantized bins) there is a single candidate threshold and the result equals MinMax.
Here the calibrator is built directly with ``num_bins`` / ``num_quantized_bins``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationMethod
from onnxruntime.quantization.calibrate import CalibrationDataReader, create_calibrator, save_tensors_data
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from heatdeploy.calibration.sources import CalibrationError

log = logging.getLogger(__name__)

METHODS = {
    "entropy": CalibrationMethod.Entropy,
    "minmax": CalibrationMethod.MinMax,
    "mean_minmax": CalibrationMethod.MinMax,  # per-sample min/max, averaged over samples (NNCF's MEAN_MINMAX)
    "percentile": CalibrationMethod.Percentile,
    "distribution": CalibrationMethod.Distribution,
}


@dataclass(frozen=True)
class CalibOptions:
    """How ranges are measured; everything here goes into the calibration cache key.

    ``num_quantized_bins`` 256: ORT's histogram spans [-T, T], so 256 quantized bins is the 8-bit grid
    over the candidate range (128 would model 7 bits and clip too hard). ``distribution`` is ORT's FP8
    calibrator; for INT8 its range is the histogram span, close to min-max.
    """

    method: str = "minmax"
    percentile: float = 99.99
    num_bins: int = 2048
    num_quantized_bins: int = 256

    def validate(self) -> CalibOptions:
        if self.method not in METHODS:
            raise CalibrationError(f"calibration method {self.method!r}: choose {', '.join(METHODS)} "
                                   "(MSE is not offered by onnxruntime)")
        if not 0.0 < self.percentile <= 100.0:
            raise CalibrationError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.method == "entropy" and not 0 < self.num_quantized_bins < self.num_bins:
            raise CalibrationError(f"entropy: num_quantized_bins ({self.num_quantized_bins}) must be below "
                                   f"num_bins ({self.num_bins}), or there is one candidate threshold and "
                                   "the result equals min-max")
        if self.method == "distribution" and self.num_bins < 512:
            raise CalibrationError(f"distribution: num_bins must be >= 512, got {self.num_bins}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Only the settings the method uses, so irrelevant ones do not split the cache."""
        d: dict[str, Any] = {"method": self.method}
        if self.method == "entropy":
            d.update(CalibNumBins=self.num_bins, CalibNumQuantizedBins=self.num_quantized_bins)
        elif self.method == "percentile":
            d.update(CalibPercentile=self.percentile, CalibNumBins=self.num_bins)
        elif self.method == "distribution":
            d.update(CalibNumBins=self.num_bins)
        return d

    def calibrator_options(self) -> dict[str, Any]:
        """``create_calibrator`` extra_options (its own key names)."""
        if self.method == "entropy":
            return {"num_bins": self.num_bins, "num_quantized_bins": self.num_quantized_bins}
        if self.method == "percentile":
            # |x| histogram: one threshold for symmetric INT8, as TensorRT's percentile calibrator.
            return {"num_bins": self.num_bins, "percentile": self.percentile, "symmetric": True}
        if self.method == "distribution":
            return {"num_bins": self.num_bins}
        if self.method == "mean_minmax":
            return {"symmetric": False, "moving_average": True}
        return {"symmetric": False}  # keep the observed min and max; the quantizer symmetrises


@dataclass
class CollectedRanges:
    """ORT's range file plus the observed min/max of each tensor, which thresholds alone lose."""

    tensors_path: Path
    observed: dict[str, tuple[float, float]]
    batches: int
    samples: int
    seconds: float


class _OneBatch(CalibrationDataReader):
    """A reader that yields one feed and is then exhausted."""

    def __init__(self, feed: dict[str, np.ndarray]) -> None:
        self._feed: dict[str, np.ndarray] | None = feed

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed, self._feed = self._feed, None
        return feed


def calibrated_op_types() -> list[str]:
    """The op types whose tensors ORT calibrates: what ``quantize_static`` uses by default."""
    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def _scalar(value: Any) -> float:
    return float(np.ravel(np.asarray(value))[0])


def collect_ranges(model_path: Path, input_name: str, batches: Iterable[np.ndarray], options: CalibOptions,
                   out_json: Path, workdir: Path) -> CollectedRanges:
    """Run ORT's calibrator over ``batches`` one at a time; save its ranges to ``out_json``."""
    options.validate()
    start = time.perf_counter()
    calibrator = create_calibrator(
        Path(model_path),
        calibrated_op_types(),
        augmented_model_path=str(Path(workdir) / "augmented.onnx"),
        calibrate_method=METHODS[options.method],
        extra_options=options.calibrator_options(),
    )
    n_batches = n_samples = 0
    mean = options.method == "mean_minmax"
    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints progress on every call
        for batch in batches:
            for feed in (np.split(batch, len(batch)) if mean else [batch]):
                # mean_minmax: one sample per call, and the moving average's weight set to 1/(n+1) makes
                # ORT's merge a running arithmetic mean of per-sample ranges (outliers of one image no longer
                # set the range for all; NNCF's default for activations)
                calibrator.averaging_constant = 1.0 / (n_samples + 1)
                calibrator.collect_data(_OneBatch({input_name: feed}))
                n_samples += len(feed) if mean else 0
            n_batches += 1
            n_samples += 0 if mean else len(batch)
        if n_batches == 0:
            raise CalibrationError("calibration data yielded no batches")
        tensors = calibrator.compute_data()
    if options.method in ("minmax", "mean_minmax"):
        observed = {k: (_scalar(v.range_value[0]), _scalar(v.range_value[1])) for k, v in tensors.items()}
    else:
        hist = calibrator.collector.histogram_dict  # (hist, edges, min, max[, threshold]) per tensor
        observed = {k: (_scalar(v[2]), _scalar(v[3])) for k, v in hist.items()}
    save_tensors_data(tensors, out_json)
    del calibrator
    return CollectedRanges(tensors_path=Path(out_json), observed=observed, batches=n_batches,
                           samples=n_samples, seconds=time.perf_counter() - start)


def tee_batches(batches: Iterator[np.ndarray], keep: list[np.ndarray], k: int) -> Iterator[np.ndarray]:
    """Pass batches through, keeping the first ``k`` for the sensitivity pass and the final check."""
    for batch in batches:
        if len(keep) < k:
            keep.append(batch)
        yield batch


def rebatch(batches: Iterator[np.ndarray], size: int | None) -> Iterator[np.ndarray]:
    """Exact-size batches for a model with a fixed batch dimension; a short tail is dropped."""
    if size is None:
        yield from batches
        return
    pending: list[np.ndarray] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += len(batch)
        while count >= size:
            joined = np.concatenate(pending)
            yield joined[:size]
            rest = joined[size:]
            pending, count = ([rest] if len(rest) else []), len(rest)
    if count:
        log.info("fixed batch %d: the last %d calibration samples were not used", size, count)


def first_batches(source: Any, batch: int, static: int | None, k: int) -> list[np.ndarray]:
    """The first ``k`` batches (ranges came from the cache, so the stream was not read)."""
    if k == 0:
        return []
    out: list[np.ndarray] = []
    stream = rebatch(source.batches(batch), static)
    for b in stream:
        out.append(b)
        if len(out) == k:
            break
    return out
