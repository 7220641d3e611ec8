"""Engine-neutral activation ranges (``calibration.json``) and the TensorRT calibration cache text.

The ranges are read back from the QDQ model's own scale / zero-point initializers, so they are exactly
what the ORT INT8 model uses; OpenVINO and TensorRT consume the same numbers. ``scale`` is the symmetric
INT8 scale ``amax / 127`` that TensorRT expects. Tensors whose range dwarfs the rest (e.g. 400-2000
next to ReLU6's 6) are flagged as ``wide``: 8 bits spread over such a range leave the common values a
handful of levels, so they are candidates for higher precision.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from heatdeploy.calibration.sources import CalibrationError
from heatdeploy.fsutil import atomic_write_text

FORMAT = "heatdeploy-calibration"
VERSION = 1
WIDE_FACTOR = 50.0  # a tensor is 'wide' when its range exceeds the median range by this factor
TRT_ALGORITHM = "EntropyCalibration2"
TRT_PLACEHOLDER = "8XXX"  # version tag when none is known; TensorRT skips a cache whose tag differs
_QRANGE = {onnx.TensorProto.INT8: (-128, 127), onnx.TensorProto.UINT8: (0, 255),
           onnx.TensorProto.INT16: (-32768, 32767), onnx.TensorProto.UINT16: (0, 65535)}


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _amax(scale: float, zero_point: int, dtype: int) -> float:
    """The threshold ORT quantized with: int8 symmetric is +-127 steps, uint8 symmetric 255 steps over 2 amax."""
    lo, hi = _QRANGE.get(dtype, (-128, 127))
    if lo < 0 and zero_point == 0:  # signed symmetric: ORT uses the restricted grid [-127, 127]
        return scale * hi
    if lo == 0 and abs(zero_point - (hi + 1) / 2) <= 0.5:  # unsigned symmetric: zero point 127/128
        return scale * (hi - lo) / 2
    return scale * max(abs(lo - zero_point), abs(hi - zero_point))


def extract_ranges(qdq_model: str | Path | onnx.ModelProto, *, method: str, data: dict[str, Any],
                   observed: dict[str, tuple[float, float]] | None = None,
                   wide_factor: float = WIDE_FACTOR) -> dict[str, Any]:
    """Per-tensor activation ranges from a QDQ model's QuantizeLinear nodes (weights are left out).

    ``observed`` (min, max seen in the calibration data) fills ``min``/``max``; without it they are the
    range the quantized tensor can represent.
    """
    model = qdq_model if isinstance(qdq_model, onnx.ModelProto) else onnx.load(str(qdq_model))
    inits = _initializers(model)
    tensors: dict[str, dict[str, Any]] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits or node.input[0] in tensors:
            continue
        scale_t = inits.get(node.input[1])
        if scale_t is None:
            continue
        scale = numpy_helper.to_array(scale_t)
        if scale.size != 1:
            continue  # per-channel activations are not a thing ORT emits; skip rather than guess
        zp_t = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        zp = int(np.ravel(numpy_helper.to_array(zp_t))[0]) if zp_t is not None else 0
        dtype = zp_t.data_type if zp_t is not None else onnx.TensorProto.UINT8
        s = float(np.ravel(scale)[0])
        amax = _amax(s, zp, dtype)
        lo, hi = _QRANGE.get(dtype, (-128, 127))
        seen = (observed or {}).get(node.input[0])
        tmin, tmax = (seen if seen is not None else ((lo - zp) * s, (hi - zp) * s))
        tensors[node.input[0]] = {
            "min": float(tmin), "max": float(tmax), "amax": amax, "scale": amax / 127.0,
            "qdq": {"scale": s, "zero_point": zp, "dtype": onnx.TensorProto.DataType.Name(dtype).lower()},
        }
    median, wide = wide_tensors(tensors, wide_factor)
    return {"format": FORMAT, "version": VERSION, "method": method, "data": data, "tensors": tensors,
            "median_amax": median, "wide_factor": wide_factor, "wide": wide}


def wide_tensors(tensors: dict[str, dict[str, Any]],
                 factor: float = WIDE_FACTOR) -> tuple[float, list[dict[str, Any]]]:
    """Median range and the tensors whose observed |range| exceeds ``factor`` x the median, widest first."""
    spans = {k: max(abs(v["min"]), abs(v["max"]), v["amax"]) for k, v in tensors.items()}
    positive = [s for s in spans.values() if s > 0]
    if not positive:
        return 0.0, []
    median = float(np.median(positive))
    wide = [{"name": k, "amax": s, "ratio": s / median} for k, s in spans.items() if s > factor * median]
    return median, sorted(wide, key=lambda w: -w["ratio"])


def write_calibration_json(ranges: dict[str, Any], path: str | Path) -> Path:
    """``calibration.json`` for the bundle (atomic)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(ranges, indent=2))
    return path


def load_calibration_json(path: str | Path) -> dict[str, Any]:
    """Read ``calibration.json`` back, checking it is one of ours."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{path}: unreadable calibration file ({exc}); re-run calibration") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("tensors"), dict):
        raise CalibrationError(f"{path}: not a heatdeploy calibration.json; re-run calibration")
    if data.get("version") != VERSION:
        raise CalibrationError(f"{path}: calibration format version {data.get('version')!r}, this "
                               f"heatdeploy reads {VERSION}; re-run calibration")
    return data


# --- TensorRT --------------------------------------------------------------------------------------


def trt_version_tag(version: str) -> str:
    """TensorRT's NV_TENSORRT_VERSION as the cache header writes it: 8.6.1 -> 8601, 10.3.0 -> 100300."""
    parts = [int(p) for p in version.split(".")[:3]] + [0, 0]
    major, minor, patch = parts[:3]
    return str(major * (10000 if major >= 10 else 1000) + minor * 100 + patch)


def _default_tag() -> str:
    try:
        import tensorrt  # type: ignore[import-not-found]

        return trt_version_tag(tensorrt.__version__)
    except Exception:  # not installed here: the target's builder must rewrite the tag
        return TRT_PLACEHOLDER


def trt_cache_text(ranges: dict[str, Any], trt_version: str | None = None) -> str:
    """``TRT-<tag>-EntropyCalibration2`` then ``name: <big-endian float32 hex of amax/127>`` per tensor."""
    tag = trt_version_tag(trt_version) if trt_version else _default_tag()
    lines = [f"TRT-{tag}-{TRT_ALGORITHM}"]
    for name, t in ranges["tensors"].items():
        scale = float(t["scale"])
        if not math.isfinite(scale) or scale <= 0:
            continue  # an all-zero tensor has no usable range; TensorRT then keeps it in higher precision
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"


def write_trt_cache(ranges: dict[str, Any], path: str | Path, trt_version: str | None = None) -> Path:
    """Write the TensorRT calibration cache (atomic) from the same ranges as ``calibration.json``."""
    path = Path(path)
    atomic_write_text(path, trt_cache_text(ranges, trt_version))
    return path


def parse_trt_cache(text: str) -> tuple[str, dict[str, float]]:
    """(header, {tensor: scale}) from TensorRT calibration cache text."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise CalibrationError("not a TensorRT calibration cache (first line should be TRT-<ver>-<algo>)")
    scales: dict[str, float] = {}
    for ln in lines[1:]:
        name, _, hexval = ln.rpartition(": ")
        scales[name] = struct.unpack(">f", bytes.fromhex(hexval.strip()))[0]
    return lines[0], scales
