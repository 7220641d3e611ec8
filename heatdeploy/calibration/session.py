"""ORT session settings for heatdeploy's INT8 QDQ models, shared by the checks here and the runtime.

ORT's ``WeightBiasQuantization`` graph transformer gives every Conv/ConvTranspose/Gemm that reads a
DequantizeLinear output per-tensor INT8 weights at session creation, even when the quantizer was told to
keep that node FP32. Measured on the reference net: a layer kept FP32 by the sensitivity pass came back
as a QLinearConv, another ran as a float conv on per-tensor INT8 weights. Disabling it keeps FP32 layers
FP32; the INT8 layers are untouched (their weights are already quantized per channel).
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)
METADATA_KEY = "heatdeploy.ort.disabled_optimizers"  # written into the INT8 model for the runtime
LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
}


def int8_session(path: Path, *, level: str = "all", optimized_path: Path | None = None,
                 keep_fp32_layers: bool = True) -> ort.InferenceSession:
    """A CPU session as deployment should create it for an INT8 model (optionally saving the optimised graph)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = LEVELS[level]
    so.log_severity_level = 3  # NCHWc's 'hardware specific model' notice is expected when saving
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    disabled = list(DISABLED_OPTIMIZERS) if keep_fp32_layers else []
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
