"""Parity across engines: ORT FP32 as the reference, OpenVINO artifacts as candidates."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.openvino
ov = pytest.importorskip("openvino", reason="openvino is not installed: pip install 'heatdeploy[openvino]'")

from heatdeploy.bundle import Bundle  # noqa: E402
from heatdeploy.exporters.openvino import add_openvino_artifact  # noqa: E402
from heatdeploy.parity import parity_command, run_parity  # noqa: E402


def test_openvino_f32_matches_ort_fp32_on_the_reference_net(random_reference_bundle: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(random_reference_bundle, tmp_path / "bundle"))
    add_openvino_artifact(root, "fp32")
    result, code = parity_command(root, "openvino-fp32", limit=16)  # shipped eval split, first 16 images
    assert code == 0, result.reasons
    assert result.reference.backend == "onnxruntime" and result.candidate.backend == "openvino"
    km = result.keypoints
    assert km.mean_displacement_hm < 1e-3
    assert km.existence_agreement == 1.0
    for t in result.tensors:
        assert t.snr_db > 80.0, (t.name, t.snr_db)  # f32 vs f32: rounding only (bf16 would be ~40 dB)
    recorded = Bundle.load(root).artifact("openvino-fp32").parity
    assert recorded["passed"] and recorded["backend"] == "openvino"


def test_openvino_int8_candidate_just_works(tiny_bundle: Path) -> None:
    add_openvino_artifact(tiny_bundle, "int8", calib="synthetic", calib_size=16)
    result = run_parity(tiny_bundle, "openvino-int8", data="synthetic:8")
    assert result.candidate.backend == "openvino" and result.candidate.precision == "int8"
    assert result.reference.name == "onnx-fp32"
    assert result.keypoints.images == 8
    assert all(math.isfinite(t.snr_db) for t in result.tensors)
