"""Centre-heatmap multi-instance decoding on rendered Gaussians with known centres and offsets."""

from __future__ import annotations

import numpy as np
import pytest

from heatdeploy.runtime.decode_centers import Instances, decode_centers, local_peaks, top_k_peaks

H, W, K = 32, 40, 3
# offsets (dx, dy) from the centre to each keypoint, shared by all instances in these tests
OFFS = np.array([[-2.0, -3.0], [1.5, 0.25], [4.0, 2.0]], dtype=np.float32)


def gaussians(points: list[tuple[int, int, float]], sigma: float = 1.5) -> np.ndarray:
    """One [H,W] map with a peak of height `amp` at each integer (x, y); the max over the bumps."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    out = np.zeros((H, W), dtype=np.float64)
    for x, y, amp in points:
        out = np.maximum(out, amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma * sigma)))
    return out.astype(np.float32)


def constant_offsets(n: int) -> np.ndarray:
    return np.broadcast_to(OFFS[None, :, :, None, None], (n, K, 2, H, W)).astype(np.float32).copy()


IMG0 = [(10, 8, 0.9), (30, 20, 0.7), (5, 25, 0.5)]
IMG1 = [(20, 15, 0.8)]


def batch() -> np.ndarray:
    return np.stack([gaussians(IMG0), gaussians(IMG1)])


def test_recovers_centres_keypoints_and_order() -> None:
    inst = decode_centers(batch(), constant_offsets(2), max_instances=4, threshold=0.3)
    assert isinstance(inst, Instances)
    assert inst.coords_hm.shape == (2, 4, K, 2) and inst.coords_hm.dtype == np.float32
    assert inst.scores.shape == (2, 4) and inst.keypoint_scores.shape == (2, 4, K)
    assert inst.centers_hm.shape == (2, 4, 2) and inst.centers_hm.dtype == np.float32
    np.testing.assert_array_equal(inst.valid, [[True, True, True, False], [True, False, False, False]])
    np.testing.assert_array_equal(inst.centers_hm[0, :3], [[10, 8], [30, 20], [5, 25]])
    np.testing.assert_array_equal(inst.centers_hm[1, 0], [20, 15])
    np.testing.assert_allclose(inst.scores[0, :3], [0.9, 0.7, 0.5], rtol=1e-6)
    np.testing.assert_allclose(inst.scores[1, 0], 0.8, rtol=1e-6)
    np.testing.assert_array_equal(inst.coords_hm[0, :3], inst.centers_hm[0, :3, None, :] + OFFS)
    np.testing.assert_array_equal(inst.coords_hm[1, 0], inst.centers_hm[1, 0] + OFFS)
    # without keypoint heatmaps each keypoint's score is its instance's score
    np.testing.assert_array_equal(inst.keypoint_scores, np.broadcast_to(inst.scores[..., None], (2, 4, K)))
    for arr in (inst.coords_hm, inst.scores, inst.keypoint_scores, inst.centers_hm):
        assert np.isfinite(arr).all()


def test_threshold_leaves_none() -> None:
    inst = decode_centers(batch(), constant_offsets(2), max_instances=3, threshold=0.95)
    assert not inst.valid.any()
    assert inst.coords_hm.shape == (2, 3, K, 2)
    assert np.isfinite(inst.coords_hm).all()


def test_offsets_are_read_at_each_centre() -> None:
    off = np.zeros((1, K, 2, H, W), dtype=np.float32)
    off[0, :, 0, 8, 10] = [1.0, 2.0, 3.0]  # dx at the first centre only
    off[0, :, 1, 20, 30] = [-1.0, -2.0, -3.0]  # dy at the second only
    inst = decode_centers(gaussians(IMG0)[None], off, max_instances=3, threshold=0.3)
    np.testing.assert_array_equal(inst.coords_hm[0, 0], [[11, 8], [12, 8], [13, 8]])
    np.testing.assert_array_equal(inst.coords_hm[0, 1], [[30, 19], [30, 18], [30, 17]])
    np.testing.assert_array_equal(inst.coords_hm[0, 2], [[5, 25]] * K)


def test_nms_suppresses_duplicate_and_keeps_distant() -> None:
    # two maxima 2 px apart so both survive the 3x3 peak NMS; identical offsets make their poses 2 px apart
    heat = gaussians([(10, 8, 0.9), (12, 8, 0.85), (30, 20, 0.7)], sigma=0.6)[None]
    peaks_only = decode_centers(heat, constant_offsets(1), max_instances=3, threshold=0.3)
    assert peaks_only.valid.all()
    inst = decode_centers(heat, constant_offsets(1), max_instances=3, threshold=0.3, nms_distance=3.0)
    np.testing.assert_array_equal(inst.valid, [[True, True, False]])  # suppressed one sorted last
    np.testing.assert_array_equal(inst.centers_hm[0], [[10, 8], [30, 20], [12, 8]])
    np.testing.assert_allclose(inst.scores[0], [0.9, 0.7, 0.85], rtol=1e-6)
    # a tighter radius keeps everything
    loose = decode_centers(heat, constant_offsets(1), max_instances=3, threshold=0.3, nms_distance=1.5)
    assert loose.valid.all()


def test_nms_removes_duplicate_one_pixel_away() -> None:
    # a 1 px duplicate is removed by peak NMS already with kernel 3; with kernel 1 it survives to pose NMS
    heat = gaussians([(10, 8, 0.9), (30, 20, 0.7)], sigma=0.6)
    heat[8, 11] = 0.95  # a second maximum 1 px right of the first (kernel 1: every pixel is a peak)
    heat = heat[None]
    inst = decode_centers(heat, constant_offsets(1), max_instances=8, threshold=0.6, kernel=1, nms_distance=2.0)
    np.testing.assert_array_equal(inst.valid[0, :3], [True, True, False])
    np.testing.assert_array_equal(inst.centers_hm[0, :2], [[11, 8], [30, 20]])


def test_snapping_moves_near_points_only() -> None:
    heat = gaussians([(10, 8, 0.9)])[None]
    off = constant_offsets(1)
    off[0, 0, 0] = -2.3  # keypoint 0 regressed at (7.7, 5)
    kh = np.zeros((1, K, H, W), dtype=np.float32)
    true0 = (9, 5)  # 1.3 px from the regressed point: snapped
    kh[0, 0] = gaussians([(true0[0], true0[1], 0.8)])
    kh[0, 1] = gaussians([(10 + 2 + 2, 8 + 0, 0.6)])  # regressed (11.5, 8.25): ~2.5 px away, left alone
    kh[0, 2] = gaussians([(15, 10, 0.05)])  # 1 px from the regressed (14, 10) but below snap_threshold
    inst = decode_centers(
        heat, off, max_instances=2, threshold=0.3, keypoint_heatmaps=kh, snap_distance=2.0, snap_threshold=0.1
    )
    c = inst.coords_hm[0, 0]
    np.testing.assert_array_equal(c[0], true0)
    np.testing.assert_array_equal(c[1], [11.5, 8.25])
    np.testing.assert_array_equal(c[2], [14, 10])  # regressed (10+4, 8+2); the weak peak is no snap target
    np.testing.assert_allclose(inst.keypoint_scores[0, 0, 0], 0.8, rtol=1e-6)
    np.testing.assert_allclose(inst.keypoint_scores[0, 0, 1], kh[0, 1, 8, 12], rtol=1e-6)  # rounded (11.5, 8.25)
    np.testing.assert_allclose(inst.keypoint_scores[0, 0, 2], kh[0, 2, 10, 14], rtol=1e-6)
    # no snapping when snap_distance is 0, but scores still come from the heatmaps
    plain = decode_centers(heat, off, max_instances=2, threshold=0.3, keypoint_heatmaps=kh)
    np.testing.assert_allclose(plain.coords_hm[0, 0], [[7.7, 5], [11.5, 8.25], [14, 10]], rtol=1e-6)
    np.testing.assert_allclose(plain.keypoint_scores[0, 0, 0], kh[0, 0, 5, 8], rtol=1e-6)


def test_snapping_per_batch_item_and_off_map_scores() -> None:
    heat = np.stack([gaussians([(10, 8, 0.9)]), gaussians([(2, 2, 0.9)])])
    kh = np.zeros((2, K, H, W), dtype=np.float32)
    kh[0, 0] = gaussians([(9, 4, 0.8)])  # near image 0's keypoint 0 at (8, 5)
    kh[1, 0] = gaussians([(1, 0, 0.8)])  # image 1's keypoint 0 is at (0, -1): off the map, peak 1.41 px away
    inst = decode_centers(
        heat, constant_offsets(2), max_instances=1, threshold=0.3, keypoint_heatmaps=kh, snap_distance=1.5
    )
    np.testing.assert_array_equal(inst.coords_hm[:, 0, 0], [[9, 4], [1, 0]])
    np.testing.assert_allclose(inst.keypoint_scores[:, 0, 0], [0.8, 0.8], rtol=1e-6)
    # unsnapped off-map keypoint scores 0
    far = decode_centers(heat, constant_offsets(2), max_instances=1, threshold=0.3, keypoint_heatmaps=kh)
    assert far.keypoint_scores[1, 0, 0] == 0.0


def test_local_peaks_plateau_border_and_nan() -> None:
    heat = np.zeros((2, 6, 7), dtype=np.float32)
    heat[0, 2, 2:4] = 1.0  # a 2-pixel plateau: both kept
    heat[0, 0, 6] = 0.5  # a corner peak: padding is -inf, so it is kept
    heat[0, 5, 0] = np.nan
    heat[1] = 0.25  # flat: every pixel is a peak
    p = local_peaks(heat)
    expect0 = np.zeros((6, 7), dtype=bool)
    expect0[2, 2:4] = True
    expect0[0, 6] = True
    # zeros not within reach of any positive value are (tied) peaks too, as in CenterNet; NaN never is
    zeros = heat[0] == 0
    reach = np.zeros_like(zeros)
    for y, x in [(2, 2), (2, 3), (0, 6)]:
        reach[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = True
    expect0 |= zeros & ~reach
    np.testing.assert_array_equal(p[0], expect0)
    assert not p[0, 5, 0]
    assert p[1].all()
    assert local_peaks(heat, kernel=1)[0, :5].all()
    # maps with no finite value have no peaks
    void = np.full((1, 4, 4), -np.inf, dtype=np.float32)
    void[0, 1:3, 1:3] = np.nan
    assert not local_peaks(void).any()
    xy, scores, valid = top_k_peaks(void, k=3, threshold=-1.0)
    assert not valid.any() and (scores == 0).all() and (xy == 0).all()


def test_top_k_peaks_padding_and_threshold() -> None:
    heat = np.full((2, 5, 5), -1.0, dtype=np.float32)
    heat[0, 1, 1], heat[0, 3, 4] = 0.9, 0.4
    heat[1, 4, 0] = 0.7
    heat[:, 0, :] = -np.inf  # no peaks there
    xy, scores, valid = top_k_peaks(heat, k=30, threshold=0.5)
    assert xy.shape == (2, 30, 2) and xy.dtype == np.int32 and scores.dtype == np.float32
    np.testing.assert_array_equal(xy[0, :2], [[1, 1], [4, 3]])
    np.testing.assert_allclose(scores[0, :2], [0.9, 0.4])
    np.testing.assert_array_equal(valid[0, :2], [True, False])  # a real peak below threshold: kept, invalid
    np.testing.assert_array_equal(xy[1, 0], [0, 4])
    assert not valid[:, 2:].any() and not valid[1, 1:].any()
    assert (np.diff(scores[0, :2]) <= 0).all()
    # slots beyond the map size are padding
    np.testing.assert_array_equal(scores[:, 25:], 0.0)
    np.testing.assert_array_equal(xy[:, 25:], 0)
    assert np.isfinite(scores).all()


def test_top_k_peaks_matches_full_sort() -> None:
    rng = np.random.default_rng(0)
    heat = rng.random((3, 16, 16)).astype(np.float32)
    xy, scores, valid = top_k_peaks(heat, k=5, threshold=0.0)
    peaks = local_peaks(heat)
    for b in range(3):  # reference only
        ref = np.sort(heat[b][peaks[b]])[::-1][:5]
        np.testing.assert_allclose(scores[b], ref)
        np.testing.assert_allclose(heat[b, xy[b, :, 1], xy[b, :, 0]], ref)
    assert valid.all()


def test_empty_and_errors() -> None:
    inst = decode_centers(batch(), constant_offsets(2), max_instances=0, threshold=0.3)
    assert inst.coords_hm.shape == (2, 0, K, 2) and inst.valid.shape == (2, 0)
    with pytest.raises(ValueError, match=r"\(2, 32, 40\).*\(2, 3, 2, 32, 41\)"):
        decode_centers(batch(), np.zeros((2, K, 2, H, W + 1)), max_instances=2, threshold=0.3)
    with pytest.raises(ValueError, match="odd"):
        local_peaks(batch(), kernel=2)
