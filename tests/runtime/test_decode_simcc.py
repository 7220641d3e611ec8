"""SimCC decoding: analytic logit parabolas must decode back to their sub-bin vertex."""

from __future__ import annotations

import numpy as np
import pytest

from heatdeploy.runtime.decode_simcc import decode_simcc, refine_simcc, simcc_maximum

SPLIT = 2.0
LX, LY = 384, 512  # 192x256 input at split ratio 2


def parabola(mu: np.ndarray, length: int, s: float = 3.0) -> np.ndarray:
    """Logits -(i - mu)^2 / (2 s^2) over the bins: a log-Gaussian whose exact maximum is mu."""
    i = np.arange(length, dtype=np.float64)
    return (-((i - mu[..., None]) ** 2) / (2.0 * s * s)).astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def vertices(n: int = 2, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sub-bin vertices per batch item and keypoint, each different, away from the ends."""
    rng = np.random.default_rng(seed)
    mx = rng.uniform(10, LX - 10, size=(n, k)) + 0.37
    my = rng.uniform(10, LY - 10, size=(n, k)) + 0.61
    return mx, my


def test_logit_parabola_recovers_vertex() -> None:
    mx, my = vertices()
    coords, scores = decode_simcc(parabola(mx, LX), parabola(my, LY), SPLIT)
    assert coords.dtype == np.float32 and coords.shape == (2, 5, 2)
    np.testing.assert_allclose(coords[..., 0], mx / SPLIT, atol=1e-3)
    np.testing.assert_allclose(coords[..., 1], my / SPLIT, atol=1e-3)
    assert scores.shape == (2, 5) and scores.dtype == np.float32


def test_probability_variant_recovers_vertex() -> None:
    mx, my = vertices(seed=1)
    px, py = softmax(parabola(mx, LX)), softmax(parabola(my, LY))
    coords, _ = decode_simcc(px, py, SPLIT, log_domain=False)
    np.testing.assert_allclose(coords[..., 0], mx / SPLIT, atol=1e-3)
    np.testing.assert_allclose(coords[..., 1], my / SPLIT, atol=1e-3)


def test_probabilities_read_as_logits_are_off() -> None:
    # The domain flag matters: a Newton step on the raw probabilities is not exact for a Gaussian.
    mx, my = vertices(seed=2)
    px, py = softmax(parabola(mx, LX, s=1.0)), softmax(parabola(my, LY, s=1.0))
    right, _ = decode_simcc(px, py, SPLIT, log_domain=False)
    wrong, _ = decode_simcc(px, py, SPLIT, log_domain=True)
    assert np.abs(right[..., 0] - mx / SPLIT).max() < 1e-3
    assert np.abs(wrong[..., 0] - mx / SPLIT).max() > 1e-2


def test_without_refinement_gives_integer_bins() -> None:
    mx, my = vertices(seed=3)
    coords, _ = decode_simcc(parabola(mx, LX), parabola(my, LY), SPLIT, refine=False)
    np.testing.assert_array_equal(coords[..., 0] * SPLIT, np.rint(mx))
    np.testing.assert_array_equal(coords[..., 1] * SPLIT, np.rint(my))


def test_one_hot_gives_integer_bin_and_min_score() -> None:
    sx = np.zeros((2, 3, LX), dtype=np.float32)
    sy = np.zeros((2, 3, LY), dtype=np.float32)
    bx = np.array([[5, 100, 200], [7, 8, 300]])
    by = np.array([[9, 400, 11], [12, 13, 500]])
    np.put_along_axis(sx, bx[..., None], 0.9, axis=2)
    np.put_along_axis(sy, by[..., None], np.array([[0.4, 0.95, 0.9], [0.2, 0.99, 0.5]])[..., None], axis=2)
    for log_domain in (True, False):
        coords, scores = decode_simcc(sx, sy, SPLIT, log_domain=log_domain)
        # one-hot: log-domain has a symmetric neighbourhood (d1 = 0); probabilities floor to 1e-10 both sides
        np.testing.assert_array_equal(coords, np.stack([bx, by], axis=-1) / SPLIT)
        np.testing.assert_array_equal(scores, np.minimum(0.9, np.take_along_axis(sy, by[..., None], 2)[..., 0]))


def test_simcc_maximum_outputs() -> None:
    mx, my = vertices(n=3, k=4, seed=4)
    sx, sy = parabola(mx, LX) + 1.0, parabola(my, LY) + 2.0
    bins, max_x, max_y = simcc_maximum(sx, sy)
    assert bins.dtype == np.float32 and bins.shape == (3, 4, 2)
    np.testing.assert_array_equal(bins[..., 0], np.rint(mx))
    np.testing.assert_array_equal(bins[..., 1], np.rint(my))
    np.testing.assert_allclose(max_x, sx.max(axis=2))
    np.testing.assert_allclose(max_y, sy.max(axis=2))


def test_border_peaks_are_not_refined() -> None:
    mu = np.array([[0.3, LX - 1.3]])  # vertices inside the first and last bins
    sx = parabola(mu, LX)
    bins = np.array([[0, LX - 1]], dtype=np.float32)
    np.testing.assert_array_equal(refine_simcc(sx, bins, True), bins)


def test_flat_vectors_stay_finite() -> None:
    sx = np.zeros((2, 3, LX), dtype=np.float32)
    sy = np.full((2, 3, LY), -5.0, dtype=np.float32)
    for log_domain in (True, False):
        coords, scores = decode_simcc(sx, sy, SPLIT, log_domain=log_domain)
        assert np.isfinite(coords).all() and np.isfinite(scores).all()
        np.testing.assert_array_equal(coords, 0.0)  # argmax picks the first bin on ties
        np.testing.assert_array_equal(scores, -5.0)


def test_refine_drops_bad_steps() -> None:
    v = np.zeros((1, 4, 9), dtype=np.float32)
    v[0, 0, 3:6] = [0.0, 1.0, 0.0]  # symmetric max at 4 -> exactly 4
    v[0, 1, 3:6] = [0.0, -1.0, 0.0]  # a minimum (d2 > 0): dropped
    v[0, 2, 3:6] = [1.0, 1.0, 1.0]  # flat (d2 = 0): dropped
    v[0, 3, 3:6] = [0.0, 0.0, 4.0]  # bin 4 is not the max: step would exceed one bin -> dropped
    out = refine_simcc(v, np.full((1, 4), 4.0, dtype=np.float32), True)
    np.testing.assert_array_equal(out, 4.0)
    # a hand-computed case: taps (0, 2, 1): d1 = 0.5, d2 = -3 -> 4 + 1/6
    v2 = np.zeros((1, 1, 9), dtype=np.float32)
    v2[0, 0, 3:6] = [0.0, 2.0, 1.0]
    np.testing.assert_allclose(refine_simcc(v2, np.array([[4.0]]), True), 4.0 + 1.0 / 6.0, atol=1e-6)


def test_shape_errors_name_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 5, 384\).*\(2, 4, 512\)"):
        decode_simcc(np.zeros((2, 5, LX)), np.zeros((2, 4, LY)), SPLIT)
    with pytest.raises(ValueError, match=r"\(5, 384\).*\(2, 5, 512\)"):
        decode_simcc(np.zeros((5, LX)), np.zeros((2, 5, LY)), SPLIT)
    with pytest.raises(ValueError, match="split_ratio"):
        decode_simcc(np.zeros((1, 1, 4)), np.zeros((1, 1, 4)), 0.0)
