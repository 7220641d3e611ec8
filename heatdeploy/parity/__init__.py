"""Parity: an FP32 reference artifact against a candidate (INT8, FP16, another engine) -> pass or fail.

Engine-free (numpy, OpenCV, the runtime's pipeline and codec): no torch, onnx or engine at import, and
nothing from models, calibration or exporters. Where to look:

- ``keypoints``: what displacement means — the one keypoint agreement (also used by INT8 calibration);
- ``tensors``: raw-output metrics (SNR, cosine, errors); ``floor``: FP32's own dither floor;
- ``tolerance``: the TOML keys of a gate; ``checks``: each limit against its value, the floor rule;
- ``result``: the result dataclasses; ``run``: the run loop; ``report``: HTML, JSON, manifest, printing.
"""

from __future__ import annotations

from heatdeploy import make_callable
from heatdeploy.parity.checks import Check, evaluate_checks
from heatdeploy.parity.floor import FloorMetrics
from heatdeploy.parity.keypoints import (
    Agreement,
    Comparison,
    KeypointMetrics,
    KeypointRow,
    KeypointSet,
    compare_keypoints,
    compared_mask,
    decode_keypoints,
    existence_flips,
    keypoint_agreement,
    keypoint_distance,
    pair_instances,
)
from heatdeploy.parity.report import print_result, record_in_manifest, write_outputs
from heatdeploy.parity.result import ParityError, ParityResult
from heatdeploy.parity.run import parity_command, run_parity
from heatdeploy.parity.tensors import TensorMetrics, cosine_similarity, snr_db
from heatdeploy.parity.tolerance import PROFILES, Tolerance, ToleranceError, load_tolerance

__all__ = [
    "PROFILES", "Agreement", "Check", "Comparison", "FloorMetrics", "KeypointMetrics", "KeypointRow", "KeypointSet",
    "ParityError", "ParityResult", "TensorMetrics", "Tolerance", "ToleranceError", "compare_keypoints",
    "compared_mask", "cosine_similarity", "decode_keypoints", "evaluate_checks", "existence_flips",
    "keypoint_agreement", "keypoint_distance", "load_tolerance", "pair_instances", "parity_command",
    "print_result", "record_in_manifest", "run_parity", "snr_db", "write_outputs",
]

# ``heatdeploy.parity`` is this package and the API call ``heatdeploy.parity(bundle, candidate, ...)`` alike:
# calling the module runs heatdeploy.api.parity (imported on first call, so parity stays engine-free).
make_callable(__name__)
