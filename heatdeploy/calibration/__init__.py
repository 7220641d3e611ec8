"""INT8 calibration: data sources, ORT QDQ quantization, engine-neutral ranges and their cache.

Modules: ``sources`` (images/video/arrays/synthetic through the runtime preprocess), ``collect``
(streaming ORT calibration), ``graph`` (what stays FP32, what ORT runs INT8), ``sensitivity``
(per-layer keypoint damage), ``quantize`` (the pipeline and its report), ``ranges`` (calibration.json,
TensorRT cache), ``cache`` (skip repeated calibration), ``session`` (ORT settings for INT8 models).
Names are imported lazily so ``import heatdeploy.calibration`` does not pull in onnxruntime.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# ORT INT8 activations: asymmetric (fewer Q/DQ pairs, closer to FP32 on ORT's CPU kernels) unless the target
# needs zero point 0 (TensorRT asks for symmetric). The one default every quantizer and caller uses.
SYMMETRIC_ACTIVATIONS = False
# OpenVINO INT8's quantization-aware fine-tuning (calibration/qat.py): off by default, see exporters/openvino.py.
QAT_MODES = ("off", "auto", "on")

_EXPORTS = {
    "CalibrationError": "sources",
    "CalibrationSource": "sources",
    "open_source": "sources",
    "QuantizeReport": "quantize",
    "quantize_onnx_int8": "quantize",
    "extract_ranges": "ranges",
    "write_calibration_json": "ranges",
    "load_calibration_json": "ranges",
    "write_trt_cache": "ranges",
    "CalibrationCache": "cache",
    "DISABLED_OPTIMIZERS": "session",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'heatdeploy.calibration' has no attribute {name!r}")
    return getattr(import_module(f"heatdeploy.calibration.{module}"), name)
