"""The heatmap codec: targets rendered by encode must decode back to where they were put."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

import heatdeploy.runtime.codecs.refine as refine_module
from heatdeploy.runtime.decode import (
    Decoded,
    HeatmapCodec,
    argmax_2d,
    existence_probability,
    heatmap_to_input,
    input_to_heatmap,
    refine_dark,
    refine_quarter,
    select_heatmaps,
    soft_argmax,
)
from heatdeploy.spec import DecoderSpec, ExistenceSpec, HeatmapSpec, ModelSpec

K = 17
H, W = 64, 48  # default input 256x192 at stride 4


def make_spec(**changes: object) -> ModelSpec:
    spec = ModelSpec(keypoints=tuple(f"kp{i}" for i in range(K)))
    return dataclasses.replace(spec, **changes).validate()


def random_positions(rng: np.random.Generator, n: int, margin: float = 10.0) -> np.ndarray:
    """Sub-pixel (x, y) heatmap positions at least ``margin`` px from every border."""
    return rng.uniform([margin, margin], [W - 1 - margin, H - 1 - margin], size=(n, K, 2))


def render(spec: ModelSpec, mu_hm: np.ndarray) -> np.ndarray:
    """Targets from encode for keypoints given in heatmap px (all present)."""
    targets, weights = HeatmapCodec(spec).encode(
        heatmap_to_input(mu_hm, spec), np.ones(mu_hm.shape[:2], bool)
    )
    assert weights.all()
    return targets


# --- encode / decode round trips ------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_dark_recovers_subpixel_positions(sigma: float) -> None:
    rng = np.random.default_rng(0)
    spec = make_spec(decoder=DecoderSpec(name="dark", sigma=sigma))
    mu = random_positions(rng, 6)
    dec = HeatmapCodec(spec).decode(render(spec, mu))
    err = np.abs(dec.coords_hm - mu)
    assert err.max() < 0.05
    # The integer peak alone is off by up to half a pixel, so DARK did real work here.
    assert np.abs(argmax_2d(render(spec, mu))[0] - mu).mean() > 0.15
    np.testing.assert_allclose(dec.coords, heatmap_to_input(mu, spec), atol=0.05 * spec.heatmap.stride)
    np.testing.assert_allclose(
        dec.scores, np.exp(-((np.rint(mu) - mu) ** 2).sum(-1) / (2 * sigma**2)), atol=1e-5
    )


def test_quarter_offset_error_is_within_a_quarter_pixel() -> None:
    rng = np.random.default_rng(1)
    spec = make_spec(decoder=DecoderSpec(name="quarter"))
    mu = random_positions(rng, 6)
    heatmaps = render(spec, mu)
    quarter = HeatmapCodec(spec).decode(heatmaps).coords_hm
    peaks, _ = argmax_2d(heatmaps)
    assert np.abs(quarter - mu).max() <= 0.25 + 1e-4
    assert np.abs(quarter - mu).mean() < 0.7 * np.abs(peaks - mu).mean()
    # Every refined coordinate sits a quarter pixel from its integer peak (positions are never integral).
    np.testing.assert_allclose(np.abs(quarter - peaks), 0.25)


def test_soft_argmax_is_close_on_a_sharp_map() -> None:
    rng = np.random.default_rng(2)
    spec = make_spec(decoder=DecoderSpec(name="soft_argmax", sigma=3.0, soft_argmax_beta=20.0))
    mu = random_positions(rng, 4)
    heatmaps = render(spec, mu)
    dec = HeatmapCodec(spec).decode(heatmaps)
    assert np.abs(dec.coords_hm - mu).max() < 0.02
    # beta matters: with beta 1 the expectation is dragged toward the map centre.
    blunt = soft_argmax(heatmaps, 1.0)
    assert np.abs(blunt - mu).max() > 1.0


def test_argmax_is_exact_on_integer_positions() -> None:
    rng = np.random.default_rng(3)
    spec = make_spec(decoder=DecoderSpec(name="argmax"))
    mu = np.stack([rng.integers(0, W, (5, K)), rng.integers(0, H, (5, K))], axis=-1).astype(np.float64)
    dec = HeatmapCodec(spec).decode(render(spec, mu))
    np.testing.assert_array_equal(dec.coords_hm, mu.astype(np.float32))
    np.testing.assert_allclose(dec.scores, 1.0, atol=1e-6)
    assert dec.coords_hm.dtype == np.float32 and dec.coords.dtype == np.float32


def test_argmax_and_quarter_index_maps_independently() -> None:
    # Different peak per map; a mix-up between batch items or keypoints would show.
    heatmaps = np.zeros((3, K, H, W), np.float32)
    coords = np.zeros((3, K, 2), np.float32)
    for n in range(3):
        for k in range(K):
            x, y = (7 * n + 3 * k) % (W - 2) + 1, (5 * n + 2 * k) % (H - 2) + 1
            heatmaps[n, k, y, x] = 1.0 + n + k
            heatmaps[n, k, y, x + 1] = 0.5  # right neighbour higher than the left one
            coords[n, k] = (x, y)
    peaks, vals = argmax_2d(heatmaps)
    np.testing.assert_array_equal(peaks, coords)
    np.testing.assert_array_equal(vals, 1.0 + np.arange(3)[:, None] + np.arange(K)[None, :])
    np.testing.assert_array_equal(refine_quarter(heatmaps, peaks), coords + np.float32([0.25, 0.0]))


def test_quarter_leaves_border_peaks_where_a_neighbour_is_missing() -> None:
    heatmaps = np.zeros((1, 2, H, W), np.float32)
    heatmaps[0, 0, 5, 0], heatmaps[0, 0, 5, 1], heatmaps[0, 0, 6, 0] = 1.0, 0.5, 0.4
    heatmaps[0, 1, H - 1, W - 1], heatmaps[0, 1, H - 1, W - 2], heatmaps[0, 1, H - 2, W - 1] = 1.0, 0.5, 0.4
    peaks, _ = argmax_2d(heatmaps)
    np.testing.assert_array_equal(peaks[0], [[0, 5], [W - 1, H - 1]])
    # x has no left (right) neighbour: unchanged; y has both (none) -> toward the higher one (unchanged).
    np.testing.assert_array_equal(refine_quarter(heatmaps, peaks)[0], [[0, 5.25], [W - 1, H - 1]])


# --- DARK against a per-keypoint reference --------------------------------------------------------


def dark_reference(heatmaps: np.ndarray, coords: np.ndarray, kernel: int) -> np.ndarray:
    """MMPose's refine_keypoints_dark, one keypoint at a time (plus the documented skips)."""
    n_, k_, h, w = heatmaps.shape
    b = kernel // 2
    out = coords.astype(np.float64).copy()
    for n in range(n_):
        for k in range(k_):
            padded = np.zeros((h + 2 * b, w + 2 * b), np.float64)
            padded[b : b + h, b : b + w] = heatmaps[n, k]
            blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[b : b + h, b : b + w]
            if not blurred.max() > 0:
                continue
            hm = np.log(np.maximum(blurred * (heatmaps[n, k].max() / blurred.max()), 1e-10))
            x, y = (int(v) for v in np.rint(coords[n, k]))
            if not (1 < x < w - 2 and 1 < y < h - 2):
                continue
            dx = 0.5 * (hm[y, x + 1] - hm[y, x - 1])
            dy = 0.5 * (hm[y + 1, x] - hm[y - 1, x])
            dxx = 0.25 * (hm[y, x + 2] - 2 * hm[y, x] + hm[y, x - 2])
            dxy = 0.25 * (hm[y + 1, x + 1] - hm[y - 1, x + 1] - hm[y + 1, x - 1] + hm[y - 1, x - 1])
            dyy = 0.25 * (hm[y + 2, x] - 2 * hm[y, x] + hm[y - 2, x])
            hessian = np.array([[dxx, dxy], [dxy, dyy]])
            if abs(np.linalg.det(hessian)) > 1e-10:
                out[n, k] -= np.linalg.inv(hessian) @ np.array([dx, dy])
    return out


def test_dark_matches_reference_at_borders_and_where_the_clamp_bites(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    n, k, h, w = 2, 6, 20, 24
    heatmaps = np.zeros((n, k, h, w), np.float32)
    ys, xs = np.mgrid[:h, :w]
    # [0,0] peak 3 px from the left/top edges with a bright spike at the right edge of the previous
    # row: a gather that wrapped across the edge without zeroing would read it.
    heatmaps[0, 0] = np.exp(-((xs - 3.3) ** 2 + (ys - 2.8) ** 2) / 4.0)
    heatmaps[0, 0, 1, w - 1] = 50.0
    # [0,1] peak at the bottom-right corner region, next map starts with a bright row.
    heatmaps[0, 1] = np.exp(-((xs - (w - 3.6)) ** 2 + (ys - (h - 3.4)) ** 2) / 4.0)
    heatmaps[0, 2, 0, :] = 40.0
    heatmaps[0, 2] += np.exp(-((xs - 11.2) ** 2 + (ys - 12.7) ** 2) / 8.0).astype(np.float32)
    # [0,3] a single spike: with kernel 3 the blurred map is 0 two pixels away -> the 1e-10 clamp.
    heatmaps[0, 3, 9, 10] = 1.0
    heatmaps[0, 3, 9, 11] = 0.3
    # [0,4] all zero; [0,5] peak 1 px from the border (skipped).
    heatmaps[0, 5] = np.exp(-((xs - 1.2) ** 2 + (ys - 9.0) ** 2) / 4.0)
    # [1,*] tiny values (1e-9 scale) and a map with negative values around a peak.
    heatmaps[1, :4] = 1e-9 * np.exp(-((xs - 10.4) ** 2 + (ys - 8.6) ** 2) / 6.0)
    heatmaps[1, 4] = np.exp(-((xs - 12.6) ** 2 + (ys - 9.3) ** 2) / 6.0) - 0.3
    heatmaps[1, 5] = rng.random((h, w)) * 0.1 + np.exp(-((xs - 6.5) ** 2 + (ys - 14.2) ** 2) / 5.0)
    peaks, _ = argmax_2d(heatmaps)
    full_blur_maps = []
    original = refine_module._dark_modulated_full

    def spy(maps: np.ndarray, sel: np.ndarray, *args: object) -> object:
        full_blur_maps.extend(sel.tolist())
        return original(maps, sel, *args)

    monkeypatch.setattr(refine_module, "_dark_modulated_full", spy)
    for kernel in (3, 5, 11):
        got = refine_dark(heatmaps, peaks, kernel)
        want = dark_reference(heatmaps, peaks, kernel)
        np.testing.assert_allclose(got, want, atol=2e-4, err_msg=f"kernel {kernel}")
    # The clamp case went through the whole-map path and still took a step; the tiny maps were
    # decided without it; the skipped cases kept their integer peaks.
    assert 3 in full_blur_maps and not {6, 7, 8, 9} & set(full_blur_maps)
    assert np.abs(refine_dark(heatmaps, peaks, 3)[0, 3] - peaks[0, 3]).max() > 0.01
    np.testing.assert_array_equal(refine_dark(heatmaps, peaks, 11)[0, [4, 5]], peaks[0, [4, 5]])


def test_dark_rejects_an_even_kernel() -> None:
    heatmaps = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="odd"):
        refine_dark(heatmaps, np.zeros((1, 1, 2), np.float32), 4)


# --- tensors from engines -------------------------------------------------------------------------


def test_select_heatmaps_nhwc_with_channel_selection() -> None:
    rng = np.random.default_rng(5)
    order = tuple(int(c) for c in rng.permutation(K + 3)[:K])
    spec = make_spec(heatmap=HeatmapSpec(layout="NHWC", channels=order))
    raw = rng.random((2, H, W, K + 3)).astype(np.float16)
    got = select_heatmaps(raw, spec)
    assert got.shape == (2, K, H, W) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got[:, 4], raw[..., order[4]].astype(np.float32))
    np.testing.assert_array_equal(got, raw.transpose(0, 3, 1, 2)[:, list(order)].astype(np.float32))
    nchw = rng.random((2, K, H, W)).astype(np.float32)
    np.testing.assert_array_equal(select_heatmaps(nchw, make_spec()), nchw)


def test_shape_mismatch_names_the_shapes() -> None:
    spec = make_spec()
    with pytest.raises(ValueError, match=r"got 5 keypoint channels.*\(2, 5, 64, 48\).*17 keypoints"):
        select_heatmaps(np.zeros((2, 5, H, W), np.float32), spec)
    # An NHWC tensor read as NCHW: the channel axis is the heatmap height.
    with pytest.raises(ValueError, match=r"\(1, 64, 48, 17\)"):
        select_heatmaps(np.zeros((1, H, W, K), np.float32), spec)
    with pytest.raises(ValueError, match=r"heatmap size 32x24.*expects 64x48"):
        HeatmapCodec(spec).decode(np.zeros((1, K, 32, 24), np.float32))
    with pytest.raises(ValueError, match="out of range"):
        select_heatmaps(np.zeros((1, K, H, W), np.float32), make_spec(heatmap=HeatmapSpec(channels=(K,) * K)))


def test_existence_logits_probabilities_and_per_instance_broadcast() -> None:
    logits = np.array([[-2.0, 0.0, 3.0] + [0.0] * (K - 3), [4.0] * K], np.float32)
    want = 1.0 / (1.0 + np.exp(-logits))
    spec_logits = make_spec(existence=ExistenceSpec(activation="logits"))
    np.testing.assert_allclose(existence_probability(logits, spec_logits, 2), want, rtol=1e-6)
    np.testing.assert_allclose(existence_probability(logits[..., None], spec_logits, 2), want, rtol=1e-6)
    spec_probs = make_spec(existence=ExistenceSpec(activation="probabilities"))
    np.testing.assert_array_equal(existence_probability(want, spec_probs, 2), want.astype(np.float32))

    spec_inst = make_spec(existence=ExistenceSpec(per="instance", activation="logits"))
    per_instance = existence_probability(np.array([[0.0], [2.0]], np.float32), spec_inst, 2)
    assert per_instance.shape == (2, K)
    np.testing.assert_allclose(per_instance[0], 0.5)
    np.testing.assert_allclose(per_instance[1], 1.0 / (1.0 + np.exp(-2.0)), rtol=1e-6)

    assert existence_probability(None, spec_logits, 2) is None
    with pytest.raises(ValueError, match=r"got shape \(2, 1\), expected \[2,17\]"):
        existence_probability(np.zeros((2, 1), np.float32), spec_logits, 2)
    with pytest.raises(ValueError, match="batch of 3"):
        existence_probability(logits, spec_logits, 3)
    with pytest.raises(ValueError, match="no existence head"):
        existence_probability(logits, make_spec(existence=None), 2)


def test_decode_presence_from_existence_head() -> None:
    rng = np.random.default_rng(6)
    spec = make_spec(existence=ExistenceSpec(activation="logits", threshold=0.6))
    heatmaps = render(spec, random_positions(rng, 2))
    logits = np.linspace(-3.0, 3.0, 2 * K, dtype=np.float32).reshape(2, K)
    dec = HeatmapCodec(spec).decode(heatmaps, logits)
    assert isinstance(dec, Decoded)
    prob = 1.0 / (1.0 + np.exp(-logits))
    np.testing.assert_allclose(dec.presence, prob, rtol=1e-6)
    np.testing.assert_array_equal(dec.present, prob >= 0.6)
    assert 0 < dec.present.sum() < 2 * K


def test_decode_presence_falls_back_to_peak_score_without_existence_head() -> None:
    rng = np.random.default_rng(7)
    spec = make_spec(existence=None, decoder=DecoderSpec(name="dark", score_threshold=0.3))
    heatmaps = render(spec, random_positions(rng, 2))
    amplitude = np.linspace(0.0, 1.0, 2 * K, dtype=np.float32).reshape(2, K)
    dec = HeatmapCodec(spec).decode(heatmaps * amplitude[..., None, None])
    np.testing.assert_allclose(dec.presence, dec.scores)
    np.testing.assert_array_equal(dec.present, dec.scores >= 0.3)
    assert 0 < dec.present.sum() < 2 * K


def test_logit_heatmaps_give_sigmoid_scores_and_same_positions() -> None:
    rng = np.random.default_rng(8)
    mu = random_positions(rng, 2)
    prob_spec = make_spec()
    probs = np.clip(render(prob_spec, mu), 1e-6, 1 - 1e-6)
    logits = np.log(probs / (1 - probs))
    for name in ("argmax", "quarter", "dark"):
        decoder = DecoderSpec(name=name)
        by_prob = HeatmapCodec(dataclasses.replace(prob_spec, decoder=decoder)).decode(probs)
        logit_spec = make_spec(heatmap=HeatmapSpec(activation="logits"), decoder=decoder)
        by_logit = HeatmapCodec(logit_spec).decode(logits)
        np.testing.assert_allclose(by_logit.scores, by_prob.scores, atol=1e-5)
        np.testing.assert_allclose(by_logit.coords_hm, by_prob.coords_hm, atol=1e-3)


# --- encode ---------------------------------------------------------------------------------------


def test_encode_targets_and_weights() -> None:
    spec = make_spec(decoder=DecoderSpec(sigma=2.0))
    mu = np.full((1, K, 2), 20.0)
    mu[0, 1] = (20.5, 30.25)
    mu[0, 3] = (-30.0, 10.0)  # far outside the heatmap
    present = np.ones((1, K), bool)
    present[0, 2] = False
    targets, weights = HeatmapCodec(spec).encode(heatmap_to_input(mu, spec), present)
    assert targets.shape == (1, K, H, W) and targets.dtype == np.float32 and weights.dtype == np.float32
    assert targets[0, 0, 20, 20] == pytest.approx(1.0)
    assert targets[0, 0, 20, 22] == pytest.approx(np.exp(-4 / 8))
    assert targets[0, 1, 30, 20] == pytest.approx(np.exp(-(0.25 + 0.0625) / 8), rel=1e-5)
    np.testing.assert_array_equal(weights[0, [0, 1, 2, 3]], [1.0, 1.0, 0.0, 0.0])
    assert not targets[0, 2].any() and not targets[0, 3].any()
    with pytest.raises(ValueError, match="encode"):
        HeatmapCodec(spec).encode(np.zeros((1, K - 1, 2)), np.ones((1, K - 1), bool))


# --- coordinate frames ----------------------------------------------------------------------------


@pytest.mark.parametrize("align", ["center", "udp"])
def test_heatmap_input_round_trip(align: str) -> None:
    spec = make_spec(heatmap=HeatmapSpec(align=align))
    pts = np.random.default_rng(9).uniform(-5, 260, size=(3, K, 2))
    np.testing.assert_allclose(heatmap_to_input(input_to_heatmap(pts, spec), spec), pts, atol=1e-4)


def test_alignment_formulas() -> None:
    center = make_spec(heatmap=HeatmapSpec(align="center", stride=4))
    # Heatmap pixel 0 covers input pixels 0..3, so its centre is input 1.5.
    np.testing.assert_allclose(
        heatmap_to_input(np.array([[0.0, 0.0], [47.0, 63.0]]), center), [[1.5, 1.5], [189.5, 253.5]]
    )
    udp = make_spec(heatmap=HeatmapSpec(align="udp", stride=4))
    # UDP maps the corner pixels onto each other: input 191 (last column) -> heatmap 47.
    np.testing.assert_allclose(
        input_to_heatmap(np.array([[191.0, 255.0], [0.0, 0.0]]), udp), [[47.0, 63.0], [0.0, 0.0]]
    )
    np.testing.assert_allclose(input_to_heatmap(np.array([[95.5, 127.5]]), udp), [[23.5, 31.5]], atol=1e-5)
