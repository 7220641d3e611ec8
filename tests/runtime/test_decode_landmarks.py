"""Landmark vectors and heatmap refinement (MediaPipe BlazePose) on rendered sub-pixel Gaussians."""

from __future__ import annotations

import numpy as np
import pytest

from heatdeploy.runtime.decode_landmarks import refine_with_heatmap, split_landmarks

H, W = 64, 64
FIELDS = ("x", "y", "z", "visibility", "presence")


def gaussian(x: float, y: float, sigma: float = 1.5, amp: float = 1.0) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    return (amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma * sigma))).astype(np.float32)


def test_split_landmarks_keypoint_major() -> None:
    n, k = 2, 4
    flat = np.arange(n * k * 5, dtype=np.float64).reshape(n, k * 5)
    out = split_landmarks(flat, k, FIELDS)
    assert list(out) == list(FIELDS)
    for i, name in enumerate(FIELDS):
        assert out[name].shape == (n, k) and out[name].dtype == np.float32
        np.testing.assert_array_equal(out[name], flat[:, i::5])
    np.testing.assert_array_equal(out["y"][1], [21, 26, 31, 36])
    # extra singleton axes (e.g. [N,1,1,K*F]) are accepted
    np.testing.assert_array_equal(split_landmarks(flat.reshape(n, 1, 1, -1), k, FIELDS)["z"], out["z"])


def test_split_landmarks_errors_name_shape_k_f() -> None:
    with pytest.raises(ValueError, match=r"\(2, 19\).*K=4.*F=5"):
        split_landmarks(np.zeros((2, 19)), 4, FIELDS)
    with pytest.raises(ValueError, match="unique"):
        split_landmarks(np.zeros((2, 8)), 4, ("x", "x"))


def test_refines_sub_pixel_gaussian() -> None:
    true = np.array([30.3, 20.6])
    hm = gaussian(*true)[None, None]
    reg = (true + [1.0, -0.98])[None, None].astype(np.float32)  # 1.4 px away
    assert abs(np.hypot(*(reg[0, 0] - true)) - 1.4) < 0.01
    # a window wide enough that the bump is not truncated: the weighted mean is the centre
    refined, peak = refine_with_heatmap(reg, hm, kernel=15)
    assert refined.dtype == np.float32 and refined.shape == (1, 1, 2)
    np.testing.assert_allclose(refined[0, 0], true, atol=0.05)
    np.testing.assert_allclose(peak[0, 0], hm.max(), rtol=1e-6)
    # MediaPipe's 7x7 window centred 1.4 px off truncates the bump: better than the regression, but biased
    refined7, _ = refine_with_heatmap(reg, hm, kernel=7)
    err7 = np.hypot(*(refined7[0, 0] - true))
    assert 0.05 < err7 < 1.0
    # centred on the nearest pixel the 7x7 window is almost symmetric: close
    near, _ = refine_with_heatmap(np.rint(true)[None, None].astype(np.float32), hm, kernel=7)
    np.testing.assert_allclose(near[0, 0], true, atol=0.1)


def test_symmetric_window_is_exact() -> None:
    true = np.array([30.0, 20.0]) + 0.5  # exactly between four pixels: a 7x7 window at (30, 20) is off by 0.5
    hm = gaussian(30.0, 20.0)[None, None]
    refined, _ = refine_with_heatmap(true[None, None].astype(np.float32) - 0.2, hm, kernel=7)
    np.testing.assert_allclose(refined[0, 0], [30.0, 20.0], atol=1e-5)


def test_low_map_keeps_regressed_point() -> None:
    hm = gaussian(30.3, 20.6, amp=0.4)[None, None]
    reg = np.array([[[31.0, 20.0]]], dtype=np.float32)
    refined, peak = refine_with_heatmap(reg, hm, min_score=0.5)
    np.testing.assert_array_equal(refined, reg)
    assert 0.3 < peak[0, 0] < 0.4
    refined_low, _ = refine_with_heatmap(reg, hm, min_score=0.3)
    assert not np.array_equal(refined_low, reg)


def test_points_off_map_or_non_finite_are_kept() -> None:
    hm = np.stack([gaussian(0.0, 0.0), gaussian(63.0, 63.0), gaussian(10.0, 10.0), gaussian(10.0, 10.0)])[None]
    reg = np.array([[[-0.7, -0.4], [64.6, 63.0], [np.nan, 10.0], [1e9, -1e9]]], dtype=np.float32)
    refined, peak = refine_with_heatmap(reg, hm)
    np.testing.assert_array_equal(refined, reg)
    np.testing.assert_array_equal(peak, 0.0)


def test_border_window_is_clipped_and_finite() -> None:
    hm = np.stack([gaussian(0.2, 0.4), gaussian(63.0, 62.6), np.zeros((H, W), np.float32)])[None]
    reg = np.array([[[0.4, 0.0], [62.6, 63.3], [0.0, 63.0]]], dtype=np.float32)
    refined, peak = refine_with_heatmap(reg, hm)
    assert np.isfinite(refined).all() and np.isfinite(peak).all()
    # half the bump is cut off by the border, so the mean sits inside the map, pulled toward it
    assert (refined[0, :2] >= 0).all() and (refined[0, :2] <= 63).all()
    np.testing.assert_allclose(refined[0, 0], [0.2, 0.4], atol=1.0)
    np.testing.assert_allclose(refined[0, 1], [63.0, 62.6], atol=1.0)
    np.testing.assert_array_equal(refined[0, 2], reg[0, 2])  # all-zero map: sum 0 -> kept
    assert peak[0, 2] == 0.0


def test_batch_of_two_by_three_keypoints() -> None:
    truths = np.array([[[10.3, 12.7], [40.5, 33.2], [22.8, 50.1]], [[50.4, 8.6], [5.5, 5.5], [33.3, 33.3]]])
    amps = np.array([[1.0, 0.9, 0.2], [0.8, 1.0, 0.7]])  # one map too weak to refine
    hm = np.stack([np.stack([gaussian(*truths[b, k], amp=amps[b, k]) for k in range(3)]) for b in range(2)])
    rng = np.random.default_rng(0)
    reg = (truths + rng.uniform(-0.5, 0.5, truths.shape)).astype(np.float32)
    refined, peak = refine_with_heatmap(reg, hm, kernel=11)
    strong = amps >= 0.5
    err = np.linalg.norm(refined - truths, axis=-1)
    assert (err[strong] < 0.02).all()
    np.testing.assert_array_equal(refined[~strong], reg[~strong])
    assert peak.shape == (2, 3) and peak.dtype == np.float32
    np.testing.assert_allclose(peak, hm.max(axis=(2, 3)), rtol=1e-6)


def test_errors() -> None:
    with pytest.raises(ValueError, match="odd"):
        refine_with_heatmap(np.zeros((1, 1, 2)), np.zeros((1, 1, 8, 8)), kernel=4)
    with pytest.raises(ValueError, match=r"\(1, 2, 2\).*\(1, 1, 8, 8\)"):
        refine_with_heatmap(np.zeros((1, 2, 2)), np.zeros((1, 1, 8, 8)))


def test_nan_and_negative_pixels_weigh_nothing() -> None:
    clean = gaussian(30.3, 20.6)
    dirty = clean.copy()
    dirty[18, 28] = np.nan
    dirty[23, 33] = -0.5
    dirty[17, 30] = 0.0  # the NaN/negative pixels become 0, so zero this one in the reference too
    ref = clean.copy()
    ref[18, 28] = ref[23, 33] = ref[17, 30] = 0.0
    reg = np.array([[[30.0, 20.0]]], dtype=np.float32)
    got, peak = refine_with_heatmap(reg, dirty[None, None])
    want, _ = refine_with_heatmap(reg, ref[None, None])
    assert np.isfinite(got).all() and np.isfinite(peak).all()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_logit_windows_and_strided_maps_give_the_same_refinement() -> None:
    """Logits with the sigmoid applied in the windows, read through an NHWC view, equal the contiguous
    probability maps bit for bit."""
    from heatdeploy.runtime.decode import _sigmoid

    rng = np.random.default_rng(2)
    logits = np.stack([gaussian(20.3, 30.1), gaussian(62.6, 1.2), gaussian(5.0, 40.0, amp=0.2)]) * 25.0 - 9.0
    logits = (logits + rng.normal(0, 1.0, logits.shape)).astype(np.float32)[None]  # [1,K,H,W]
    pts = np.array([[[21.0, 29.4], [63.2, 0.7], [np.nan, 3.0]]], np.float32)
    want = refine_with_heatmap(pts, _sigmoid(logits), 7, 0.5)
    nhwc = np.ascontiguousarray(logits.transpose(0, 2, 3, 1))
    got = refine_with_heatmap(pts, nhwc.transpose(0, 3, 1, 2), 7, 0.5, logits=True)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
