"""Named heatmap conventions reproduce their trainers' published rules; DARK keeps right steps over 1 px.

The reference formulas below are written from MMPose's and MediaPipe's documented maths (MSRAHeatmap,
UDPHeatmap, the DARK kernel rule, RefineLandmarksFromHeatmap), one keypoint at a time, not from their code.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from heatdeploy.runtime.codecs import CODECS, codec_from_spec, mmpose_blur_kernel, pixel_centre_blur_kernel
from heatdeploy.runtime.codecs.refine import DARK_MAX_STEP, argmax_2d, refine_dark, refine_quarter
from heatdeploy.runtime.decode import HeatmapCodec, heatmap_to_input
from heatdeploy.runtime.heads import decode_outputs
from heatdeploy.spec import DecoderSpec, HeatmapSpec, LandmarksSpec, ModelSpec, SpecError

K = 5
W_IN, H_IN = 192, 256
W_HM, H_HM = 48, 64
NAMES = ("pixel-centre", "mmpose-msra", "mmpose-udp", "mediapipe")


def make_spec(align: str, sigma: float = 2.0, decoder: str = "dark") -> ModelSpec:
    return ModelSpec(keypoints=tuple(f"kp{i}" for i in range(K)), heatmap=HeatmapSpec(align=align),  # type: ignore[arg-type]
                     existence=None, decoder=DecoderSpec(name=decoder, sigma=sigma)).validate()  # type: ignore[arg-type]


def gaussian(mu_hm: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-|p - mu|^2 / 2 sigma^2) over the heatmap grid, one map per point ``[K,2]`` -> ``[1,K,h,w]``."""
    ys, xs = np.mgrid[0:H_HM, 0:W_HM]
    d2 = (xs[None] - mu_hm[:, 0, None, None]) ** 2 + (ys[None] - mu_hm[:, 1, None, None]) ** 2
    return np.exp(-d2 / (2 * sigma * sigma))[None].astype(np.float32)


def central_points(seed: int, margin_hm: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo = np.array([margin_hm, margin_hm]) * (W_IN / W_HM)
    hi = np.array([W_IN, H_IN]) - lo
    return rng.uniform(lo, hi, size=(K, 2))


# --- the DARK guard --------------------------------------------------------------------------------


def test_dark_keeps_a_right_step_longer_than_one_pixel() -> None:
    # sigma 3 at (20.3, 30.6) with seeded noise that moves the argmax to (19, 30): the right Newton step is
    # 1.3 px in x. A 1 px guard returned the integer peak (1.42 px off); MMPose returns the true peak.
    ys, xs = np.mgrid[0:64, 0:48]
    truth = np.array([20.3, 30.6])
    clean = np.exp(-((xs - truth[0]) ** 2 + (ys - truth[1]) ** 2) / (2 * 9.0))
    noisy = (clean + 0.03 * np.random.default_rng(197).standard_normal((64, 48))).astype(np.float32)[None, None]
    peaks, _ = argmax_2d(noisy)
    assert tuple(peaks[0, 0]) == (19.0, 30.0)
    got = refine_dark(noisy, peaks, mmpose_blur_kernel(3.0))[0, 0]
    assert np.abs(got - truth).max() < 0.05
    assert np.abs(got - peaks[0, 0]).max() > 1.0  # the step the old guard dropped


def test_dark_still_drops_wild_steps() -> None:
    # A tilted plane under the blur: near-zero curvature, the Newton step runs off the map.
    ys, xs = np.mgrid[0:32, 0:32]
    plane = (1.0 + 0.01 * xs + 0.0001 * ys).astype(np.float32)[None, None]
    peaks = np.array([[[16.0, 16.0]]], np.float32)
    got = refine_dark(plane, peaks, 11)
    assert np.abs(got - peaks).max() <= DARK_MAX_STEP


# --- kernels and border rules ------------------------------------------------------------------------


def test_mmpose_kernel_rule_gives_its_config_values() -> None:
    assert (mmpose_blur_kernel(2.0), mmpose_blur_kernel(3.0)) == (11, 17)
    # The documented rule, sigma = 0.3 * ((ks - 1) * 0.5 - 1) + 0.8, holds at those sizes exactly.
    for sigma, ks in ((2.0, 11), (3.0, 17)):
        assert math.isclose(0.3 * ((ks - 1) * 0.5 - 1) + 0.8, sigma, abs_tol=0.2)
    assert (pixel_centre_blur_kernel(2.0), pixel_centre_blur_kernel(3.0)) == (13, 19)
    assert codec_from_spec(make_spec("mmpose-msra", 3.0)).blur_kernel == 17
    assert codec_from_spec(make_spec("center", 3.0)).blur_kernel == 19  # old specs keep their kernel


def test_quarter_border_rules() -> None:
    # Peak in column 1 with a higher right neighbour: ours moves it, MMPose (1 < x < W-1) does not.
    hm = np.zeros((1, 2, 10, 10), np.float32)
    hm[0, 0, 5, 1], hm[0, 0, 5, 2] = 1.0, 0.5
    hm[0, 1, 0, 5], hm[0, 1, 0, 6], hm[0, 1, 1, 5] = 1.0, 0.5, 0.4  # row 0: MMPose leaves x alone too
    peaks, _ = argmax_2d(hm)
    np.testing.assert_array_equal(refine_quarter(hm, peaks)[0], [[1.25, 5.0], [5.25, 0.0]])
    np.testing.assert_array_equal(refine_quarter(hm, peaks, "mmpose")[0], [[1.0, 5.0], [5.0, 0.0]])


# --- MMPose MSRA and UDP from their documented formulas ----------------------------------------------


@pytest.mark.parametrize("sigma", [2.0, 3.0])
def test_mmpose_msra_decodes_a_rendered_point_within_001_px(sigma: float) -> None:
    # MSRAHeatmap (unbiased, DARK): target exp(-|p - k / s|^2 / 2 sigma^2), s = input / heatmap; decode x * s.
    kp = central_points(1, 4 * sigma)
    s = np.array([W_IN / W_HM, H_IN / H_HM])
    dec = HeatmapCodec(make_spec("mmpose-msra", sigma)).decode(gaussian(kp / s, sigma))
    assert np.abs(dec.coords[0] - kp).max() < 0.01
    # The same map under our pixel-centre rule lands (s - 1) / 2 = 1.5 input px off per axis.
    ours = HeatmapCodec(make_spec("pixel-centre", sigma)).decode(gaussian(kp / s, sigma))
    np.testing.assert_allclose(ours.coords[0] - kp, 1.5, atol=0.02)


@pytest.mark.parametrize("sigma", [2.0, 3.0])
def test_mmpose_udp_decodes_a_rendered_point_within_001_px(sigma: float) -> None:
    # UDPHeatmap: target at k * (w - 1) / (W - 1), pasted into a (6 sigma + 1)^2 window around the rounded
    # point; DARK-UDP on the blurred, clipped log map.
    kp = central_points(2, 4 * sigma)
    scale = np.array([(W_HM - 1) / (W_IN - 1), (H_HM - 1) / (H_IN - 1)])
    mu = kp * scale
    maps = gaussian(mu, sigma)
    ys, xs = np.mgrid[0:H_HM, 0:W_HM]
    centre = np.floor(mu + 0.5)
    window = (np.abs(xs[None] - centre[:, 0, None, None]) <= 3 * sigma) & (
        np.abs(ys[None] - centre[:, 1, None, None]) <= 3 * sigma)
    dec = HeatmapCodec(make_spec("mmpose-udp", sigma)).decode(maps * window[None])
    assert np.abs(dec.coords[0] - kp).max() < 0.01


def test_mmpose_msra_without_dark_renders_at_the_rounded_point() -> None:
    spec = make_spec("mmpose-msra", 2.0, decoder="argmax")
    kp = np.array([[[40.3, 61.9]] * K])  # heatmap (10.075, 15.475) -> rounded (10, 15)
    targets, weights = HeatmapCodec(spec).encode(kp, np.ones((1, K), bool))
    assert weights.all()
    assert targets[0, 0, 15, 10] == 1.0
    assert targets[0, 0, 15, 17] == 0.0  # 7 px away: outside MMPose's 3-sigma patch
    np.testing.assert_allclose(HeatmapCodec(spec).decode(targets).coords[0, 0], [40.0, 60.0])


# --- MediaPipe's RefineLandmarksFromHeatmap ------------------------------------------------------------


def mediapipe_refine(norm_xy: np.ndarray, logits: np.ndarray, kernel: int, min_conf: float) -> np.ndarray:
    """The calculator's documented rule, one landmark at a time: normalised (x, y) in, normalised out."""
    _, h, w = logits.shape
    out = norm_xy.copy()
    off = (kernel - 1) // 2
    for i, (x, y) in enumerate(norm_xy):
        col, row = int(x * w), int(y * h)  # C++ int(): truncation toward zero
        if not (0 <= col < w and 0 <= row < h):
            continue
        c0, c1 = max(0, col - off), min(w, col + off + 1)
        r0, r1 = max(0, row - off), min(h, row + off + 1)
        conf = 1.0 / (1.0 + np.exp(-logits[i, r0:r1, c0:c1].astype(np.float64)))
        total = conf.sum()
        if conf.max() >= min_conf and total > 0:
            cols, rows = np.meshgrid(np.arange(c0, c1), np.arange(r0, r1))
            out[i] = ((cols * conf).sum() / total / w, (rows * conf).sum() / total / h)
    return out


def landmark_spec(align: str) -> ModelSpec:
    return ModelSpec(
        keypoints=tuple(f"kp{i}" for i in range(K)), input=dataclasses.replace(ModelSpec(("a",)).input, width=256,
                                                                               height=256),
        heatmap=HeatmapSpec(name="hm", layout="NHWC", activation="logits", align=align),  # type: ignore[arg-type]
        existence=None, landmarks=LandmarksSpec(name="lm", fields=("x", "y"), coords="normalized",
                                                refine_kernel=7, refine_min_score=0.5),
    ).validate()


def test_mediapipe_window_matches_the_calculator() -> None:
    rng = np.random.default_rng(5)
    # Fractional heatmap positions above .5 put the rounded and the truncated window centre apart.
    hm_pts = np.floor(rng.uniform(8, 56, size=(K, 2))) + rng.uniform(0.55, 0.95, size=(K, 2))
    ys, xs = np.mgrid[0:64, 0:64]
    truth = hm_pts + rng.uniform(-1.0, 1.0, size=(K, 2))
    logits = (6.0 - ((xs[None] - truth[:, 0, None, None]) ** 2 + (ys[None] - truth[:, 1, None, None]) ** 2)
              ).astype(np.float32)
    norm = (hm_pts / 64.0).astype(np.float32)
    want = mediapipe_refine(norm.astype(np.float64), logits, 7, 0.5) * 256.0
    outputs = {"lm": norm.reshape(1, -1), "hm": logits.transpose(1, 2, 0)[None]}
    got = decode_outputs(landmark_spec("mediapipe"), outputs).coords[0]
    np.testing.assert_allclose(got, want, atol=1e-3)
    # Rounding the centre (as the other conventions do) reads a different window.
    rounded = decode_outputs(landmark_spec("pixel-centre"), outputs).coords[0]
    assert np.abs(rounded - want).max() > 0.1


def test_mediapipe_window_decodes_a_rendered_point_within_001_px() -> None:
    # A peaked map centred in its window: the weighted mean is the point, x_in = col * 256 / 64.
    truth_hm = np.array([[10.0, 20.0], [30.25, 12.2], [40.1, 40.4], [5.3, 50.0], [55.45, 33.0]])
    ys, xs = np.mgrid[0:64, 0:64]
    prob = np.exp(-((xs[None] - truth_hm[:, 0, None, None]) ** 2 + (ys[None] - truth_hm[:, 1, None, None]) ** 2)
                  / (2 * 0.8**2))
    logits = np.log(np.clip(prob, 1e-12, 1 - 1e-7) / (1 - np.clip(prob, 1e-12, 1 - 1e-7))).astype(np.float32)
    guess = (truth_hm + 0.3) / 64.0  # regressed point a little off, same truncated cell
    outputs = {"lm": guess.astype(np.float32).reshape(1, -1), "hm": logits.transpose(1, 2, 0)[None]}
    got = decode_outputs(landmark_spec("mediapipe"), outputs).coords[0]
    assert np.abs(got - truth_hm * 4.0).max() < 0.01


# --- every codec: encode and decode agree ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("decoder", ["dark", "quarter", "argmax"])
def test_encode_decode_round_trip(name: str, decoder: str) -> None:
    spec = make_spec(name, 2.0, decoder)
    codec = HeatmapCodec(spec)
    kp = central_points(3, 8.0)
    targets, weights = codec.encode(kp[None], np.ones((1, K), bool))
    assert weights.all() and targets.max() <= 1.0
    got = codec.decode(targets).coords[0]
    s = W_IN / W_HM
    tol = {"dark": 0.01, "quarter": 0.5 * s, "argmax": 0.5 * s}[decoder]  # one heatmap px = s input px
    assert np.abs(got - kp).max() <= tol + 1e-6, name
    back = codec.convention.to_input(codec.convention.to_heatmap(kp))
    np.testing.assert_allclose(back, kp, atol=1e-4)


def test_codecs_are_built_from_their_own_parameters() -> None:
    # No spec needed: the MMPose-style constructor (input size, heatmap size, sigma, decoder).
    codec = CODECS["mmpose-msra"]((W_IN, H_IN), (W_HM, H_HM), sigma=2.0, decoder="dark")
    kp = central_points(4, 8.0)[None]
    coords, _, _ = codec.decode(codec.encode(kp, np.ones((1, K), bool))[0])
    assert np.abs(coords - kp).max() < 0.01
    with pytest.raises(ValueError, match="decoder.name"):
        CODECS["mediapipe"]((W_IN, H_IN), (W_HM, H_HM), decoder="nearest")


def test_old_names_keep_their_meaning() -> None:
    pts = np.array([[0.0, 0.0], [47.0, 63.0]])
    np.testing.assert_allclose(heatmap_to_input(pts, make_spec("center")), [[1.5, 1.5], [189.5, 253.5]])
    np.testing.assert_allclose(heatmap_to_input(pts, make_spec("pixel-centre")), [[1.5, 1.5], [189.5, 253.5]])
    np.testing.assert_allclose(heatmap_to_input(pts, make_spec("udp")), [[0.0, 0.0], [191.0, 255.0]], atol=1e-4)
    np.testing.assert_allclose(heatmap_to_input(pts, make_spec("mmpose-msra")), [[0.0, 0.0], [188.0, 252.0]])
    assert make_spec("udp").heatmap.convention == "mmpose-udp"  # type: ignore[union-attr]
    with pytest.raises(SpecError, match="heatmap.align"):
        make_spec("openpose")


def dark_udp_reference(heatmaps: np.ndarray, coords: np.ndarray, kernel: int) -> np.ndarray:
    """DARK-UDP from its documented steps, one keypoint at a time: blur the zero-padded map, rescale to its
    maximum, clip to [1e-3, 50], log, pad one edge pixel, then a Newton step with 3x3 central differences and
    eps added to the Hessian's diagonal."""
    import cv2

    n_, k_, h, w = heatmaps.shape
    b = kernel // 2
    out = coords.astype(np.float64).copy()
    for n in range(n_):
        for k in range(k_):
            padded = np.zeros((h + 2 * b, w + 2 * b))
            padded[b:b + h, b:b + w] = heatmaps[n, k]
            blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[b:b + h, b:b + w]
            blurred *= heatmaps[n, k].max() / blurred.max()
            lg = np.pad(np.log(np.clip(blurred, 1e-3, 50.0)), 1, mode="edge")
            x, y = (int(v) + 1 for v in coords[n, k])
            dx = 0.5 * (lg[y, x + 1] - lg[y, x - 1])
            dy = 0.5 * (lg[y + 1, x] - lg[y - 1, x])
            dxx = lg[y, x + 1] - 2 * lg[y, x] + lg[y, x - 1]
            dyy = lg[y + 1, x] - 2 * lg[y, x] + lg[y - 1, x]
            dxy = 0.5 * (lg[y + 1, x + 1] - lg[y, x + 1] - lg[y + 1, x] + 2 * lg[y, x] - lg[y, x - 1]
                         - lg[y - 1, x] + lg[y - 1, x - 1])
            hessian = np.array([[dxx, dxy], [dxy, dyy]]) + np.finfo(np.float32).eps * np.eye(2)
            out[n, k] -= np.linalg.inv(hessian) @ np.array([dx, dy])
    return out


def test_dark_udp_matches_its_documented_steps_at_borders_and_on_noise() -> None:
    from heatdeploy.runtime.codecs.refine import refine_dark_udp

    rng = np.random.default_rng(11)
    ys, xs = np.mgrid[0:20, 0:24]
    maps = np.zeros((2, 4, 20, 24), np.float32)
    maps[0, 0] = np.exp(-((xs - 0.4) ** 2 + (ys - 9.3) ** 2) / 8.0)  # peak on the left border: refined too
    maps[0, 1] = np.exp(-((xs - 22.8) ** 2 + (ys - 19.2) ** 2) / 8.0)  # bottom-right corner
    maps[0, 2] = np.exp(-((xs - 11.3) ** 2 + (ys - 7.6) ** 2) / 18.0) + 0.05 * rng.random((20, 24))
    maps[0, 3] = 80.0 * np.exp(-((xs - 5.3) ** 2 + (ys - 5.6) ** 2) / 8.0)  # the 50 clip flattens the top
    maps[1] = rng.random((4, 20, 24)) * np.exp(-((xs - 12.0) ** 2 + (ys - 10.0) ** 2) / 60.0)
    peaks, _ = argmax_2d(maps)
    for kernel in (5, 11):
        got = refine_dark_udp(maps, peaks, kernel)
        want = dark_udp_reference(maps, peaks, kernel)
        kept = (np.abs(want - peaks) <= DARK_MAX_STEP).all(axis=-1)  # wild steps are dropped by the guard
        np.testing.assert_allclose(got[kept], want[kept], atol=1e-4, err_msg=f"kernel {kernel}")
        np.testing.assert_array_equal(got[~kept], peaks[~kept])
        assert kept.sum() >= 6
    assert np.abs(refine_dark_udp(maps, peaks, 11)[0, 0] - peaks[0, 0]).max() > 0.05  # border peak moved
