"""Parity metrics on hand-made arrays: what is counted, and the formulas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from heatdeploy.datasets import Truth
from heatdeploy.parity import KeypointSet, compare_keypoints, cosine_similarity, existence_flips, snr_db
from heatdeploy.parity.result import jsonable
from heatdeploy.parity.tensors import TensorAccumulator

NAMES = ("a", "b", "c")


def _set(coords_hm: np.ndarray, present: np.ndarray, stride: float = 4.0) -> KeypointSet:
    """A KeypointSet whose input px are stride x heatmap px and image px equal input px."""
    hm = np.asarray(coords_hm, np.float32)
    pres = np.asarray(present, bool)
    inp = hm * stride
    return KeypointSet(coords_hm=hm, coords_in=inp, coords_img=inp.copy(), present=pres,
                       presence=pres.astype(np.float32), scores=np.ones(pres.shape, np.float32),
                       peaks=np.rint(np.nan_to_num(hm, nan=-1)).astype(np.int32))


SIZES = np.array([[64, 48], [64, 48]])  # diagonal 80 px


def test_displacement_only_on_keypoints_fp32_calls_present():
    ref = np.zeros((2, 3, 2), np.float32) + 5
    cand = ref.copy()
    cand[0, 0] += [3.0, 4.0]  # 5 px, present in FP32
    cand[1, 1] += [0.3, 0.4]  # 0.5 px, present in FP32
    cand[0, 2] += [300, 400]  # absent in FP32: its coordinates mean nothing and must not count
    ref_present = np.array([[True, True, False], [False, True, False]])
    c = compare_keypoints(_set(ref, ref_present), _set(cand, ref_present), SIZES, NAMES)
    m = c.metrics
    assert m.keypoints_compared == 3 and m.keypoints_total == 6
    assert m.mean_displacement_hm == pytest.approx(5.5 / 3)  # (5 + 0 + 0.5) / 3
    assert m.max_displacement_hm == pytest.approx(5.0)
    assert m.mean_displacement_in == pytest.approx(4 * 5.5 / 3)  # stride 4
    assert m.p95_displacement_hm == pytest.approx(np.percentile([5, 0, 0.5], 95))
    assert m.within_hm == {"1": pytest.approx(2 / 3), "2": pytest.approx(2 / 3)}
    rows = {r.name: r for r in c.per_keypoint}
    assert rows["a"].compared == 1 and rows["a"].mean_displacement_hm == pytest.approx(5.0)
    assert rows["b"].compared == 2 and rows["b"].mean_displacement_hm == pytest.approx(0.25)
    assert rows["c"].compared == 0 and math.isnan(rows["c"].mean_displacement_hm)
    assert c.image_mean_hm[0] == pytest.approx(2.5) and c.image_mean_hm[1] == pytest.approx(0.5)


def test_flips_are_counted_per_keypoint_in_both_directions():
    ref_p = np.array([[True, True, False], [True, False, False], [True, True, True], [False, False, True]])
    cand_p = np.array([[False, True, True], [False, False, False], [True, True, True], [False, True, True]])
    lost, gained = existence_flips(ref_p, cand_p)
    assert lost.tolist() == [2, 0, 0]
    assert gained.tolist() == [0, 1, 1]
    coords = np.zeros((4, 3, 2), np.float32)
    m = compare_keypoints(_set(coords, ref_p), _set(coords, cand_p), np.tile(SIZES[:1], (4, 1)), NAMES).metrics
    assert (m.flips_lost, m.flips_gained) == (2, 2)
    assert m.existence_agreement == pytest.approx(8 / 12)
    assert m.worst_flip_keypoint == "a" and m.worst_flip_rate == pytest.approx(0.5)


def test_argmax_and_pck_vs_reference():
    ref = np.full((2, 3, 2), 10.0, np.float32)
    cand = ref.copy()
    cand[0, 0, 0] += 1.0  # argmax moves; 4 image px < 0.05 * 80
    cand[1, 2, 1] += 2.0  # 8 image px > 4
    present = np.ones((2, 3), bool)
    m = compare_keypoints(_set(ref, present), _set(cand, present), SIZES, NAMES).metrics
    assert m.argmax_agreement == pytest.approx(4 / 6)
    assert m.pck_vs_reference == pytest.approx(5 / 6)


def test_truth_pck_and_drop_in_points():
    truth_kp = np.full((2, 3, 2), 10.0, np.float32)
    ref = np.full((2, 3, 2), 10.0, np.float32) / 4  # heatmap px; image px = 10 = truth
    cand = ref.copy()
    cand[0, 0] += 5.0  # 20 image px each axis: outside PCK@0.05 of an 80 px diagonal
    present = np.ones((2, 3), bool)
    visible = np.array([[True, True, False], [True, True, True]])
    truth = Truth(truth_kp, present, visible)
    m = compare_keypoints(_set(ref, present), _set(cand, present), SIZES, NAMES, truth).metrics
    assert m.truth_keypoints == 5
    assert m.pck_truth_reference == pytest.approx(1.0)
    assert m.pck_truth_candidate == pytest.approx(4 / 5)
    assert m.pck_drop_points == pytest.approx(20.0)
    assert m.existence_accuracy_reference == 1.0


def test_non_finite_candidate_is_infinitely_far_not_ignored():
    ref = np.zeros((1, 3, 2), np.float32)
    cand = ref.copy()
    cand[0, 1] = np.nan
    present = np.ones((1, 3), bool)
    m = compare_keypoints(_set(ref, present), _set(cand, present), SIZES[:1], NAMES).metrics
    assert math.isinf(m.mean_displacement_hm) and math.isinf(m.max_displacement_hm)
    assert math.isinf(m.p95_displacement_hm)


def test_nothing_present_gives_undefined_displacement():
    coords = np.zeros((2, 3, 2), np.float32)
    absent = np.zeros((2, 3), bool)
    m = compare_keypoints(_set(coords, absent), _set(coords, absent), SIZES, NAMES).metrics
    assert m.keypoints_compared == 0 and math.isnan(m.mean_displacement_hm)
    assert m.existence_agreement == 1.0


def test_snr_and_cosine_formulas():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 3, 8, 6))
    noise = 0.1 * rng.standard_normal(ref.shape)
    expected = 10 * np.log10((ref ** 2).sum() / (noise ** 2).sum())
    assert snr_db(ref, ref + noise) == pytest.approx(expected)
    assert snr_db(ref, ref) == math.inf
    assert snr_db(ref, 2 * ref) == pytest.approx(0.0)  # error as large as the signal
    assert cosine_similarity(ref, 3 * ref) == pytest.approx(1.0)
    assert cosine_similarity(ref, -ref) == pytest.approx(-1.0)
    a = np.array([1.0, 0.0])
    assert cosine_similarity(a, np.array([0.0, 1.0])) == pytest.approx(0.0)
    assert cosine_similarity(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine_similarity(np.zeros(3), np.ones(3)) == 0.0


def test_streaming_tensor_metrics_match_whole_array_formulas():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((10, 2, 4, 4)).astype(np.float32)
    cand = (ref + 0.01 * rng.standard_normal(ref.shape)).astype(np.float16)
    acc = TensorAccumulator("heatmaps")
    for i in range(0, 10, 3):  # uneven batches
        acc.update(ref[i:i + 3], cand[i:i + 3], histogram=True)
    t = acc.result()
    r64, c64 = ref.astype(np.float64), cand.astype(np.float64)
    assert t.shape == [10, 2, 4, 4] and t.candidate_dtype == "float16"
    assert t.snr_db == pytest.approx(snr_db(r64, c64))
    assert t.cosine == pytest.approx(cosine_similarity(r64, c64))
    assert t.max_abs_error == pytest.approx(np.abs(c64 - r64).max())
    assert t.mean_abs_error == pytest.approx(np.abs(c64 - r64).mean())
    assert acc.hist.sum() + acc.zeros == ref.size
    assert acc.per_image_snr().shape == (10,)


def test_json_has_no_nan_or_infinity():
    doc = jsonable({"a": math.inf, "b": math.nan, "c": np.float32(1.5), "d": np.arange(2), "e": np.bool_(True)})
    assert doc == {"a": "inf", "b": None, "c": 1.5, "d": [0, 1], "e": True}
    json.loads(json.dumps(doc), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
