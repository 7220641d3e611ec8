"""Engine-neutral ranges read back from the QDQ model, calibration.json round trip, TensorRT cache text."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from heatdeploy.calibration.quantize import quantize_onnx_int8
from heatdeploy.calibration.ranges import (
    _amax,
    extract_ranges,
    load_calibration_json,
    parse_trt_cache,
    trt_cache_text,
    trt_version_tag,
    wide_tensors,
    write_calibration_json,
    write_trt_cache,
)
from heatdeploy.calibration.sources import CalibrationError, ImageFolderSource
from heatdeploy.spec import ModelSpec


@pytest.fixture(scope="module")
def int8_report(tiny_model: Path, image_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from calib_helpers import tiny_spec

    spec = tiny_spec()
    out = tmp_path_factory.mktemp("r") / "tiny.int8.onnx"
    return quantize_onnx_int8(tiny_model, out, spec, ImageFolderSource(spec, image_dir, size=12),
                              method="minmax", keep_fp32="base", use_cache=False)


def test_ranges_are_what_the_model_uses(int8_report) -> None:  # type: ignore[no-untyped-def]
    ranges = int8_report.ranges
    assert ranges["method"] == "minmax" and ranges["data"]["count"] == 12
    model = onnx.load(int8_report.out_path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    qnodes = {n.input[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    assert set(ranges["tensors"]) == set(qnodes) and "r1" in ranges["tensors"]
    for name, t in ranges["tensors"].items():
        scale = float(inits[qnodes[name].input[1]])
        assert t["qdq"]["scale"] == pytest.approx(scale)
        assert t["scale"] == pytest.approx(t["amax"] / 127)
        assert t["min"] <= t["max"]
        # min-max: the threshold is the observed |range| (ORT gives a Relu's input its output's range)
        assert t["amax"] <= max(abs(t["min"]), abs(t["max"])) * (1 + 1e-5)
    r1 = ranges["tensors"]["r1"]
    assert r1["min"] == 0.0 and r1["amax"] == pytest.approx(r1["max"], rel=1e-5)
    assert "weights" not in str(ranges["tensors"].keys())  # activations only


def test_calibration_json_round_trip(int8_report, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_calibration_json(int8_report.ranges, tmp_path / "calibration.json")
    assert load_calibration_json(path) == int8_report.ranges
    (tmp_path / "bad.json").write_text('{"tensors": {}}')
    with pytest.raises(CalibrationError, match="not a heatdeploy calibration.json"):
        load_calibration_json(tmp_path / "bad.json")


def test_trt_cache_text_format(int8_report, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_trt_cache(int8_report.ranges, tmp_path / "calibration.cache", trt_version="8.6.1")
    text = path.read_text()
    lines = text.splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert all(re.fullmatch(r".+: [0-9a-f]{8}", ln) for ln in lines[1:])
    header, scales = parse_trt_cache(text)
    assert header == lines[0] and scales.keys() == int8_report.ranges["tensors"].keys()
    for name, s in scales.items():
        assert s == pytest.approx(int8_report.ranges["tensors"][name]["scale"], rel=1e-6)
    # the documented encoding: amax 1.0 -> scale 1/127 -> big-endian float32 bits 3c010204
    one = {"tensors": {"data": {"scale": 1.0 / 127, "amax": 1.0, "min": 0.0, "max": 1.0}}}
    assert trt_cache_text(one, "8.6.1").splitlines()[1] == "data: 3c010204"
    assert struct.pack(">f", 1.0 / 127).hex() == "3c010204"


def test_trt_version_tags() -> None:
    assert trt_version_tag("8.6.1") == "8601"
    assert trt_version_tag("8.5.3.1") == "8503"
    assert trt_version_tag("10.3.0") == "100300"


def test_wide_tensors_are_flagged() -> None:
    tensors = {f"relu6_{i}": {"min": 0.0, "max": 6.0, "amax": 6.0} for i in range(9)}
    tensors["conv_out"] = {"min": -1800.0, "max": 400.0, "amax": 1800.0}
    median, wide = wide_tensors(tensors)
    assert median == 6.0 and [w["name"] for w in wide] == ["conv_out"] and wide[0]["ratio"] == 300.0


def test_amax_from_scale_and_zero_point() -> None:
    int8, uint8 = onnx.TensorProto.INT8, onnx.TensorProto.UINT8
    assert _amax(0.5, 0, int8) == 63.5  # symmetric int8: [-127, 127]
    assert _amax(2.0 / 255, 128, uint8) == pytest.approx(1.0)  # ORT's symmetric uint8: 255 steps over 2 amax
    assert _amax(0.1, 0, uint8) == pytest.approx(25.5)  # asymmetric uint8 from 0


def test_extract_ranges_without_observed_stats(int8_report, spec: ModelSpec) -> None:  # type: ignore[no-untyped-def]
    bare = extract_ranges(int8_report.out_path, method="minmax", data={})
    for name, t in bare["tensors"].items():
        assert t["max"] >= t["amax"] * 0.99 and np.isfinite(t["min"]), name
