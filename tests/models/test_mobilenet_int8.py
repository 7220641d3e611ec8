"""The MobileNet test model: heatdeploy's default INT8 against ORT's stock ``quantize_static`` defaults.

The issue asks that ours move keypoints at least 5x less than stock (mean displacement vs FP32) and flip
no presence decision on the evaluation frames. On the shipped weights (4,000 steps) ours flips none (stock
flips one frame). The 5x target is retired (issue 15: bf16 itself is only 6x better than stock here); ours
passing the default gate and flipping no more than stock is pinned instead, on ORT and OpenVINO. What else
holds: the output trap (presence logit and landmark vector on an 8-bit grid shared with pixel coordinates)
is >= 5x worse under stock, and the FP32 model is accurate enough for the comparison
to mean something.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heatdeploy.models.mobilenet import (
    HEIGHT,
    OUTPUTS,
    STOCK_NAME,
    WEIGHTS,
    WIDTH,
    eval_images,
    export_mobilenet_bundle,
    instance_present,
    landmark_agreement,
    model_stats,
)

CALIB = "synthetic:128"
EVAL_N = 64  # frames: ~15% figure-free, ~8% figures mostly outside (presence negatives)


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One FP32 export, both INT8 artifacts, parity of each on the same evaluation frames."""
    from heatdeploy.calibration.artifact import add_onnx_int8
    from heatdeploy.models.mobilenet import add_stock_int8
    from heatdeploy.parity import run_parity

    if not WEIGHTS.is_file():
        pytest.fail(f"{WEIGHTS} missing: the MobileNet weights must ship with the package")
    root = tmp_path_factory.mktemp("mobilenet")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEATDEPLOY_CACHE", str(root / "cache"))  # never the user's cache
        bundle = export_mobilenet_bundle(root / "bundle")
        _, report = add_onnx_int8(bundle, CALIB)
        add_stock_int8(bundle, CALIB)
    data = eval_images(EVAL_N)
    results = {name: run_parity(bundle, name, data=data) for name in ("onnx-int8", STOCK_NAME)}
    return {"bundle": bundle, "data": data, "report": report, "ours": results["onnx-int8"],
            "stock": results[STOCK_NAME]}


def _figures(result: Any) -> str:
    km = result.keypoints
    return (f"{result.candidate.name}: mean {km.mean_displacement_hm:.3f} / p95 {km.p95_displacement_hm:.3f} / "
            f"max {km.max_displacement_hm:.2f} heatmap px, PCK vs FP32 {km.pck_vs_reference:.3f}, existence "
            f"agreement {km.existence_agreement:.4f} (lost {km.flips_lost}, gained {km.flips_gained})")


def test_model_shape_and_size() -> None:
    """NHWC in, three outputs; small enough to ship (< 3 MB) and to be a light edge model."""
    import torch

    from heatdeploy.models.mobilenet import load_mobilenet

    model, spec = load_mobilenet()
    assert spec.input.layout == "NHWC" and spec.existence is not None and spec.existence.per == "instance"
    with torch.no_grad():
        out = model(torch.zeros(2, HEIGHT, WIDTH, 3))
    assert tuple(out) == OUTPUTS
    assert out["heatmaps"].shape == (2, 17, HEIGHT // 4, WIDTH // 4)
    assert out["presence"].shape == (2, 1) and out["landmarks"].shape == (2, 51)
    stats = model_stats(model)
    assert stats["params"] < 1_000_000 and stats["macs"] < 300_000_000, stats
    assert WEIGHTS.stat().st_size < 3 * 2**20


def test_fp32_is_meaningful(compared: dict[str, Any]) -> None:
    """The trained FP32 model finds figures and says when there is none: the comparison means something."""
    result, data = compared["ours"], compared["data"]
    km = result.keypoints
    ref_present = result.detail.reference.present[:, 0]
    truth = instance_present(data.truth.present)
    assert km.pck_truth_reference is not None and km.pck_truth_reference >= 0.6, _figures(result)
    assert (ref_present == truth).mean() >= 0.9
    # both presence classes occur in the FP32 decisions, or "no flip" would say nothing
    assert 0.1 <= ref_present.mean() <= 0.95, ref_present.mean()


def _flips(result: Any) -> int:
    return result.keypoints.flips_lost + result.keypoints.flips_gained


# The earlier ">= 5x less displacement than stock" target is retired (issue 15): on this synthetic-trained net
# OpenVINO bf16, a far finer format than INT8, is itself only 6x better than stock ORT (0.018 vs 0.106 heatmap px)
# and 3.1x better than stock NNCF, and 5x less than stock ORT (<= 0.021) is 3.3x FP32's own dither floor (0.0064).
# What a user is promised instead: ours passes the default gate and is no worse than stock on flips or displacement.
def test_ours_passes_the_gate_and_is_no_worse_than_stock(compared: dict[str, Any]) -> None:
    ours, stock = compared["ours"], compared["stock"]
    print("\n" + _figures(ours) + "\n" + _figures(stock))
    print("INT8 (ours): " + compared["report"].summary())
    o, s = ours.keypoints, stock.keypoints
    assert np.isfinite(o.mean_displacement_hm) and o.keypoints_compared > 0
    assert ours.passed, _figures(ours)
    assert _flips(ours) <= _flips(stock), (_figures(ours), _figures(stock))
    assert o.mean_displacement_hm <= s.mean_displacement_hm, (_figures(ours), _figures(stock))


# Measured: ours flips none of the 64 presence decisions; stock flips one frame (FP32 p 0.08 from the threshold).
def test_ours_flips_no_presence(compared: dict[str, Any]) -> None:
    o = compared["ours"].keypoints
    assert o.existence_agreement == 1.0 and o.flips_lost == 0 and o.flips_gained == 0, _figures(compared["ours"])


def test_ours_is_closer_where_fp32_holds(compared: dict[str, Any]) -> None:
    """On the keypoints FP32 holds under a half-level dither (parity's floor), ours jumps less than stock."""
    ours, stock = compared["ours"], compared["stock"]
    for r in (ours, stock):
        print("\n" + r.floor.line(r.keypoints.mean_displacement_hm))
    o, s = ours.floor, stock.floor
    assert o.stable_keypoints == s.stable_keypoints and o.stable_keypoints > 0.9 * ours.keypoints.keypoints_compared
    assert o.candidate_mean_stable_hm < s.candidate_mean_stable_hm
    assert o.candidate_jumps_stable < s.candidate_jumps_stable


def test_presence_trap_shows_in_logits(compared: dict[str, Any]) -> None:
    """Stock quantizes the regression Gemm's output, so the presence logit lives on a grid sized for pixel
    coordinates (steps of ~3 logits); ours keeps the Gemm FP32 and its error comes from the INT8 body only."""
    err = {name: {t.name: t for t in compared[name].tensors}["presence"] for name in ("ours", "stock")}
    print(f"\npresence logit max |error| / SNR: ours {err['ours'].max_abs_error:.3f} / {err['ours'].snr_db:.1f} dB, "
          f"stock {err['stock'].max_abs_error:.3f} / {err['stock'].snr_db:.1f} dB")
    assert err["ours"].max_abs_error * 5 <= err["stock"].max_abs_error
    assert err["ours"].snr_db >= err["stock"].snr_db + 14  # >= 5x in amplitude


def test_landmarks_output_survives_ours(compared: dict[str, Any]) -> None:
    """Parity does not compare the extra output; ours keeps its producer FP32, so pixels stay pixels."""
    bundle: Path = compared["bundle"]
    ours = landmark_agreement(bundle, "onnx-int8", compared["data"])
    stock = landmark_agreement(bundle, STOCK_NAME, compared["data"])
    print(f"\nlandmarks vs FP32: ours {ours}\n                   stock {stock}")
    assert ours["coord_mean_px"] < stock["coord_mean_px"]
    assert ours["visibility_flips"] <= stock["visibility_flips"]


@pytest.fixture(scope="module")
def compared_ov(compared: dict[str, Any]) -> dict[str, Any]:
    """Our OpenVINO INT8 (NNCF with heatdeploy's float scope) and stock ``nncf.quantize``, same calibration."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    from heatdeploy.calibration.stock import NNCF_STOCK_NAME, add_stock_nncf
    from heatdeploy.exporters.openvino import add_openvino_artifact
    from heatdeploy.parity import run_parity

    bundle = compared["bundle"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEATDEPLOY_CACHE", str(Path(bundle).parent / "cache"))
        add_openvino_artifact(bundle, "int8", calib=CALIB)
        add_stock_nncf(bundle, CALIB)
    return {name: run_parity(bundle, name, data=compared["data"]) for name in ("openvino-int8", NNCF_STOCK_NAME)}


# Measured (OpenVINO 2026.4, NNCF 3.4, this eval set): ours 0.052 vs stock nncf.quantize 0.051-0.055 heatmap px mean,
# no flip either; the retired 5x target (0.011) lay below what OpenVINO bf16 reaches (0.018). Pinned instead: ours
# passes the default gate, flips no more than stock NNCF and stays about as close (within 1.25x of its displacement).
def test_openvino_ours_passes_the_gate_and_is_no_worse_than_stock_nncf(compared_ov: dict[str, Any]) -> None:
    from heatdeploy.calibration.stock import NNCF_STOCK_NAME

    ours, stock = compared_ov["openvino-int8"], compared_ov[NNCF_STOCK_NAME]
    print("\n" + _figures(ours) + "\n" + _figures(stock))
    assert ours.passed, _figures(ours)
    assert _flips(ours) <= _flips(stock), (_figures(ours), _figures(stock))
    # NNCF's defaults leave no trap to close on this net (0.052 vs 0.051 px in one run): "about as close", not better
    assert ours.keypoints.mean_displacement_hm <= 1.25 * stock.keypoints.mean_displacement_hm, (_figures(ours),
                                                                                               _figures(stock))
