"""decode_outputs: every head family from raw engine outputs, on analytic tensors with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from heatdeploy.parity import KeypointSet, compare_keypoints, decode_keypoints, pair_instances
from heatdeploy.runtime.heads import decode_outputs, grid_stride
from heatdeploy.spec import (
    CentersSpec,
    ExistenceSpec,
    HeatmapSpec,
    InputSpec,
    LandmarksSpec,
    ModelSpec,
    SimCCSpec,
    SpecError,
)

H, W = 64, 48
INPUT = InputSpec(height=H, width=W)


def _gauss(h: int, w: int, x: float, y: float, sigma: float = 1.5) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)).astype(np.float32)


def test_simcc_head_decodes_sub_bin_points_in_input_pixels() -> None:
    spec = ModelSpec(keypoints=("a", "b"), input=INPUT, heatmap=None, existence=None,
                     simcc=SimCCSpec(split_ratio=2.0)).validate()
    truth = np.array([[[10.3, 20.7], [30.55, 5.2]]])  # input px
    bx, by = np.arange(W * 2), np.arange(H * 2)
    x = -((bx[None, None] - truth[..., 0:1] * 2) ** 2) / 8.0  # logit parabola = Gaussian log-softmax
    y = -((by[None, None] - truth[..., 1:2] * 2) ** 2) / 8.0
    dec = decode_outputs(spec, {"simcc_x": x.astype(np.float32), "simcc_y": y.astype(np.float32)})
    np.testing.assert_allclose(dec.coords, truth, atol=1e-3)
    np.testing.assert_allclose(dec.coords_hm, truth * 2, atol=2e-3)  # bins: the SimCC grid
    assert grid_stride(spec) == 0.5
    assert dec.present.all()  # sigmoid(max logit 0) = 0.5 >= score threshold 0.1
    assert spec.output_names == ("simcc_x", "simcc_y")


def test_simcc_bin_count_mismatch_names_the_fix() -> None:
    spec = ModelSpec(keypoints=("a",), input=INPUT, heatmap=None, existence=None, simcc=SimCCSpec(split_ratio=2.0))
    with pytest.raises(ValueError, match="split_ratio"):
        decode_outputs(spec, {"simcc_x": np.zeros((1, 1, W * 3), np.float32),
                              "simcc_y": np.zeros((1, 1, H * 3), np.float32)})


def test_landmarks_are_refined_by_their_heatmap_not_replaced() -> None:
    spec = ModelSpec(keypoints=("a", "b"), input=INPUT,
                     heatmap=HeatmapSpec(name="hm", layout="NHWC", activation="probabilities"),
                     existence=ExistenceSpec(name="flag", per="instance", activation="probabilities"),
                     landmarks=LandmarksSpec(name="lm", fields=("x", "y", "vis"), refine_kernel=9)).validate()
    h, w = spec.heatmap_size
    peaks = [(5.0, 7.0), (8.0, 3.0)]  # heatmap px, away from the borders
    hm = np.stack([_gauss(h, w, *p) for p in peaks], axis=-1)[None]  # NHWC
    hm[0, :, :, 1] *= 0.3  # keypoint b's heatmap is too weak to refine (< 0.5)
    regressed_hm = np.array([[5.8, 6.5], [7.0, 3.5]])
    regressed_in = (regressed_hm + 0.5) * 4 - 0.5
    flat = np.concatenate([regressed_in, np.zeros((2, 1))], axis=1).reshape(1, 6).astype(np.float32)
    dec = decode_outputs(spec, {"hm": hm, "lm": flat, "flag": np.array([[0.9]], np.float32)})
    np.testing.assert_allclose(dec.coords_hm[0, 0], peaks[0], atol=0.05)  # refined onto the bump
    np.testing.assert_allclose(dec.coords_hm[0, 1], regressed_hm[1], atol=1e-5)  # kept: weak heatmap
    np.testing.assert_allclose(dec.coords[0, 1], regressed_in[1], atol=1e-4)
    assert dec.present.all() and dec.presence[0, 0] == pytest.approx(0.9)


def test_landmarks_without_heatmap_use_normalised_coords_and_presence_field() -> None:
    spec = ModelSpec(keypoints=("a",), input=INPUT, heatmap=None, existence=None,
                     landmarks=LandmarksSpec(name="lm", fields=("x", "y", "presence"), coords="normalized"))
    dec = decode_outputs(spec.validate(), {"lm": np.array([[0.5, 0.25, -3.0]], np.float32)})
    np.testing.assert_allclose(dec.coords[0, 0], [W * 0.5, H * 0.25])
    assert not dec.present[0, 0]  # sigmoid(-3) < 0.5


def _centre_outputs() -> tuple[ModelSpec, dict[str, np.ndarray], np.ndarray]:
    spec = ModelSpec(keypoints=("a", "b"), input=INPUT, heatmap=None, existence=None,
                     centers=CentersSpec(activation="probabilities", threshold=0.3)).validate()
    h, w = spec.centers_size
    centres = [[(3, 4), (9, 11)], [(6, 6)]]  # (x, y) per image
    maps = np.zeros((2, 1, h, w), np.float32)
    offsets = np.zeros((2, 4, h, w), np.float32)
    offsets[:, 0], offsets[:, 1], offsets[:, 2], offsets[:, 3] = -1.0, 2.0, 1.5, -0.5  # a=(-1,2), b=(1.5,-0.5)
    for i, cs in enumerate(centres):
        for j, (x, y) in enumerate(cs):
            maps[i, 0] = np.maximum(maps[i, 0], (0.9 - 0.2 * j) * _gauss(h, w, x, y, 1.0))
    truth = np.array([[[2.0, 6.0], [4.5, 3.5]], [[8.0, 13.0], [10.5, 10.5]]])  # image 0 instances (hm px)
    return spec, {"centers": maps, "offsets": offsets}, truth


def test_centre_head_finds_each_instance_with_its_keypoints() -> None:
    spec, outputs, truth = _centre_outputs()
    dec = decode_outputs(spec, outputs)
    m = spec.centers.max_instances  # type: ignore[union-attr]
    assert dec.coords.shape == (2, m, 2, 2) and dec.instance_scores is not None
    found = dec.present.any(axis=-1)
    assert found.sum(axis=1).tolist() == [2, 1]
    np.testing.assert_allclose(dec.coords_hm[0, :2], truth, atol=1e-5)
    np.testing.assert_allclose(dec.coords_hm[1, 0], [[5.0, 8.0], [7.5, 5.5]], atol=1e-5)
    np.testing.assert_allclose(dec.coords[0, 0, 0], (truth[0, 0] + 0.5) * 4 - 0.5)
    assert dec.instance_scores[0, 0] == pytest.approx(0.9, abs=1e-5) and dec.instance_scores[1, 1] == 0.0


def test_instances_are_paired_whatever_their_order_and_missing_ones_are_flips() -> None:
    spec, outputs, _ = _centre_outputs()
    eye = np.broadcast_to(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (2, 2, 3))
    ref = decode_keypoints(spec, outputs, eye)
    cand_out = {k: v.copy() for k, v in outputs.items()}
    h, w = spec.centers_size
    # candidate: image 0's weaker instance now scores higher (order swaps) and image 1's instance is lost
    cand_out["centers"][0, 0] = np.maximum(0.5 * _gauss(h, w, 3, 4, 1.0), 0.95 * _gauss(h, w, 9, 11, 1.0))
    cand_out["centers"][1, 0] = 0.0
    cand = decode_keypoints(spec, cand_out, eye)
    r, c, img = pair_instances(ref, cand)
    assert img.tolist() == [0, 0, 1]
    np.testing.assert_allclose(r.coords_hm[:2], c.coords_hm[:2])  # matched across the swapped order
    assert not c.present[2].any() and np.isnan(c.coords_hm[2]).all()
    paired = r.present.any(axis=1) & c.present.any(axis=1)
    sizes = np.full((3, 2), 64)
    cmp = compare_keypoints(r, c, sizes, spec.keypoints, paired=paired)
    assert cmp.metrics.mean_displacement_hm == 0.0 and cmp.metrics.keypoints_compared == 4
    assert cmp.metrics.flips_lost == 2 and cmp.metrics.flips_gained == 0


def test_keypoint_set_rows_keep_dtypes() -> None:
    spec, outputs, _ = _centre_outputs()
    eye = np.broadcast_to(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (2, 2, 3))
    ks = decode_keypoints(spec, outputs, eye)
    r, _, _ = pair_instances(ks, ks)
    assert isinstance(r, KeypointSet) and r.present.dtype == bool and r.peaks.dtype == np.int32


@pytest.mark.parametrize("patch, fragment", [
    ({"simcc": {}, "heatmap": None, "landmarks": {}}, "cannot be combined"),
    ({"simcc": {}}, "has no heatmap output"),
    ({"heatmap": None}, "no localisation head"),
    ({"centers": {}}, "instance score is its existence"),
    ({"centers": {"name": "heatmaps"}, "existence": None}, "used for more than one head"),
    ({"landmarks": {"fields": ["x", "z"]}}, "must name 'x' and 'y'"),
    ({"centers": {"pool_kernel": 2}, "existence": None}, "centers.pool_kernel"),
])
def test_head_combinations_are_validated(patch: dict, fragment: str) -> None:
    data = ModelSpec(keypoints=("a", "b")).to_dict()
    data.update(patch)
    with pytest.raises(SpecError, match=fragment):
        ModelSpec.from_dict(data, "spec.json")


def test_new_sections_round_trip_json() -> None:
    spec = ModelSpec(keypoints=("a", "b"), existence=None, centers=CentersSpec(snap_distance=2.0)).validate()
    assert ModelSpec.from_json(spec.to_json()) == spec
    spec2 = ModelSpec(keypoints=("a",), heatmap=None, existence=None, simcc=SimCCSpec(split_ratio=1.5)).validate()
    assert ModelSpec.from_json(spec2.to_json()) == spec2


def test_multi_instance_records_and_overlays_list_found_instances_only() -> None:
    from heatdeploy.runtime.draw import draw_keypoints
    from heatdeploy.runtime.pipeline import Prediction

    spec, outputs, _ = _centre_outputs()
    dec = decode_outputs(spec, outputs)
    pred = Prediction(keypoints=dec.coords, scores=dec.scores, presence=dec.presence, present=dec.present,
                      image_sizes=np.array([[H, W], [H, W]]), keypoints_input=dec.coords,
                      instance_scores=dec.instance_scores)
    recs = pred.to_records(spec.keypoints)
    assert [len(r["instances"]) for r in recs] == [2, 1]
    assert recs[0]["instances"][0]["score"] == pytest.approx(0.9, abs=1e-4)
    assert [k["name"] for k in recs[1]["instances"][0]["keypoints"]] == ["a", "b"]
    blank = np.zeros((H, W, 3), np.uint8)
    one = draw_keypoints(blank, dec.coords[1], dec.presence[1], dec.present[1], ((0, 1),), legend=False)
    two = draw_keypoints(blank, dec.coords[0], dec.presence[0], dec.present[0], ((0, 1),), legend=False)
    assert 0 < (one > 0).sum() < (two > 0).sum()  # two instances draw more than one


def test_landmark_presence_field_and_instance_flag_combine() -> None:
    spec = ModelSpec(keypoints=("a", "b"), input=INPUT, heatmap=None,
                     existence=ExistenceSpec(name="flag", per="instance", activation="probabilities"),
                     landmarks=LandmarksSpec(name="lm", fields=("x", "y", "presence"))).validate()
    flat = np.array([[1, 2, 4.0, 3, 4, -4.0], [1, 2, 4.0, 3, 4, 4.0]], np.float32)  # b out of frame in image 0
    dec = decode_outputs(spec, {"lm": flat, "flag": np.array([[0.9], [0.2]], np.float32)})
    assert dec.present.tolist() == [[True, False], [False, False]]  # image 1: no pose at all
    np.testing.assert_allclose(dec.presence[0, 0], 0.9 / (1 + np.exp(-4.0)), rtol=1e-5)


@pytest.mark.parametrize("refine_kernel", [7, 0])
@pytest.mark.parametrize("activation", ["logits", "probabilities"])
def test_decoder_without_peaks_equals_the_full_decode(refine_kernel: int, activation: str) -> None:
    """The pipeline's decoder (no peaks: no pass over whole maps, a logit map's sigmoid on the windows only)
    gives exactly what decode_outputs gives, peaks aside; for the heatmap head too."""
    from heatdeploy.runtime.heads import head_decoder

    spec = ModelSpec(keypoints=("a", "b", "c"), input=INPUT,
                     heatmap=HeatmapSpec(name="hm", layout="NHWC", activation=activation, align="udp"),
                     existence=ExistenceSpec(name="flag", per="instance", activation="probabilities"),
                     landmarks=LandmarksSpec(name="lm", fields=("x", "y", "presence"), refine_kernel=refine_kernel,
                                             refine_min_score=0.3)).validate()
    h, w = spec.heatmap_size
    rng = np.random.default_rng(0)
    hm = np.stack([_gauss(h, w, 5.2, 7.7), _gauss(h, w, 0.4, 3.1), _gauss(h, w, 9.0, 14.6)], axis=-1)[None]
    hm = np.concatenate([hm, hm[..., ::-1]]) * 30.0 - 12.0 + rng.normal(0, 0.5, (2, h, w, 3)).astype(np.float32)
    flat = rng.uniform(-4, 52, (2, 9)).astype(np.float32)
    outputs = {"hm": hm, "lm": flat, "flag": np.array([[0.9], [0.4]], np.float32)}
    full, fast = decode_outputs(spec, outputs), head_decoder(spec, peaks=False)(outputs)
    assert fast.peaks is None and full.peaks is not None
    for f in ("coords_hm", "coords", "scores", "presence", "present"):
        np.testing.assert_array_equal(getattr(fast, f), getattr(full, f), err_msg=f)

    heat = ModelSpec(keypoints=("a", "b", "c"), input=INPUT, heatmap=HeatmapSpec(name="hm", layout="NHWC",
                                                                                  activation=activation)).validate()
    full, fast = decode_outputs(heat, outputs), head_decoder(heat, peaks=False)(outputs)
    for f in ("coords_hm", "coords", "scores", "presence", "present", "peaks"):
        np.testing.assert_array_equal(getattr(fast, f), getattr(full, f), err_msg=f)
