"""Bounds on every number, string and list of a ModelSpec: finite, typed, and within what real models use.

A NaN scale gives NaN keypoints with exit 0, and a sigma of 1e6 or an input a million pixels high makes the
decoder allocate terabytes: each field is refused with the range it must be in, before anything runs. The
checks read the dataclasses generically (a field missing from a section is skipped), so every reader of a
spec (file, manifest, ONNX ``metadata_props``, OpenVINO ``rt_info``) gets them through ``ModelSpec.validate``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import fields, is_dataclass
from typing import Any

# "section.field" -> (low, high, integer); "field[]" bounds each element of a list field
RANGES: dict[str, tuple[float, float, bool]] = {
    "input.height": (8, 4096, True),
    "input.width": (8, 4096, True),
    "input.channels": (1, 3, True),
    "input.scale": (1e-6, 1e3, False),
    "input.mean[]": (-1e3, 1e3, False),
    "input.std[]": (1e-6, 1e3, False),
    "input.pad_value": (0, 255, True),
    "heatmap.stride": (1, 64, True),
    "heatmap.channels[]": (0, 4096, True),
    "existence.threshold": (0, 1, False),
    "simcc.split_ratio": (0.1, 16, False),
    "centers.stride": (1, 64, True),
    "centers.max_instances": (1, 1000, True),
    "centers.threshold": (0, 1, False),
    "centers.pool_kernel": (1, 63, True),
    "centers.nms_distance": (0, 1e4, False),
    "centers.snap_distance": (0, 1e4, False),
    "landmarks.refine_kernel": (0, 63, True),
    "landmarks.refine_min_score": (0, 1, False),
    "decoder.sigma": (0.1, 64, False),
    "decoder.blur_kernel": (0, 511, True),
    "decoder.score_threshold": (0, 1, False),
    "decoder.soft_argmax_beta": (1e-3, 1e3, False),
    "paf.offset": (0, 4096, True),
    "paf.max_people": (1, 1000, True),
    "paf.peak_threshold": (0, 1, False),
    "paf.pool_kernel": (1, 63, True),
    "paf.max_peaks": (1, 1000, True),
    "paf.samples": (1, 1000, True),
    "paf.min_alignment": (-1, 1, False),
    "paf.min_inliers": (0, 1, False),
    "paf.min_parts": (1, 1000, True),
    "paf.min_score": (0, 1e3, False),
}
MAX_KEYPOINTS = 1000
MAX_LIST = 10_000  # skeleton edges, limbs, channels
MAX_TEXT = 256  # a name's characters
SECTIONS = ("input", "heatmap", "existence", "simcc", "centers", "landmarks", "decoder", "paf")


def _fmt(x: float) -> str:
    return f"{x:g}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def check_number(where: str, value: Any, lo: float, hi: float, integer: bool) -> None:
    """``value`` must be a real (not bool) number, finite, an integer when asked, and in ``lo..hi``."""
    from heatdeploy.spec import SpecError

    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real)
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or not lo <= value <= hi:
        raise SpecError(f"{where}: expected {kind} in {_fmt(lo)}..{_fmt(hi)}, got {_short(value)}")


def check_text(where: str, value: Any, allow_empty: bool = False) -> None:
    from heatdeploy.spec import SpecError

    if not isinstance(value, str) or (not value and not allow_empty) or len(value) > MAX_TEXT or "\x00" in value:
        raise SpecError(f"{where}: expected a {'' if allow_empty else 'non-empty '}name of at most {MAX_TEXT} "
                        f"characters, got {_short(value)}")


def check_bounds(spec: Any) -> None:
    """Every field of ``spec`` typed, finite and in range (see :data:`RANGES`); raises SpecError."""
    from heatdeploy.spec import SpecError

    kps = spec.keypoints
    if not isinstance(kps, tuple) or not 1 <= len(kps) <= MAX_KEYPOINTS:
        raise SpecError(f"keypoints: expected 1..{MAX_KEYPOINTS} names, got {_short(kps)}")
    for i, k in enumerate(kps):
        check_text(f"keypoints[{i}]", k)
    check_text("name", spec.name, allow_empty=True)
    if not isinstance(spec.skeleton, tuple) or len(spec.skeleton) > MAX_LIST:
        raise SpecError(f"skeleton: expected at most {MAX_LIST} edges")
    for name in SECTIONS:
        sub = getattr(spec, name, None)
        if sub is not None and is_dataclass(sub):
            _check_section(name, sub)
    for name in ("heatmap", "centers", "paf"):
        sub = getattr(spec, name, None)
        stride = getattr(sub, "stride", None)
        if isinstance(stride, int) and stride > 0 and min(spec.input.height, spec.input.width) < stride:
            raise SpecError(f"{name}.stride: {stride} is more than the input size "
                            f"{spec.input.height}x{spec.input.width}, leaving an empty map; fix the stride or size")


def _check_section(name: str, sub: Any) -> None:
    from heatdeploy.spec import SpecError

    for f in fields(sub):
        where = f"{name}.{f.name}"
        value = getattr(sub, f.name)
        if where in RANGES:
            check_number(where, value, *RANGES[where])
        elif f"{where}[]" in RANGES:
            if value is None and f.default is None:
                continue
            if not isinstance(value, tuple) or not 1 <= len(value) <= MAX_LIST:
                raise SpecError(f"{where}: expected a list of 1..{MAX_LIST} numbers, got {_short(value)}")
            for i, v in enumerate(value):
                check_number(f"{where}[{i}]", v, *RANGES[f"{where}[]"])
        elif isinstance(f.default, bool):
            if not isinstance(value, bool):
                raise SpecError(f"{where}: expected true or false, got {_short(value)}")
        elif isinstance(f.default, str):
            check_text(where, value)
        elif isinstance(value, tuple):
            if len(value) > MAX_LIST:
                raise SpecError(f"{where}: expected at most {MAX_LIST} entries, got {len(value)}")
            for i, v in enumerate(value):
                if isinstance(v, tuple):
                    for j, x in enumerate(v):
                        check_number(f"{where}[{i}][{j}]", x, 0, 1 << 20, True)
                elif isinstance(v, str):
                    check_text(f"{where}[{i}]", v)
                else:
                    check_number(f"{where}[{i}]", v, -(1 << 20), 1 << 20, isinstance(v, numbers.Integral))
