"""FP32's noise floor in parity: the reference against itself on a half-level dither of the same tensor."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from heatdeploy.parity import KeypointSet, compare_keypoints, run_parity
from heatdeploy.parity.floor import DITHER_LEVELS, dither, floor_metrics

NAMES = ("a", "b", "c")
SIZES = np.array([[64, 48], [64, 48]])


def _set(coords_hm: np.ndarray, present: np.ndarray, presence: np.ndarray | None = None) -> KeypointSet:
    hm = np.asarray(coords_hm, np.float32)
    pres = np.asarray(present, bool)
    prob = pres.astype(np.float32) if presence is None else np.asarray(presence, np.float32)
    return KeypointSet(coords_hm=hm, coords_in=hm * 4, coords_img=hm * 4, present=pres, presence=prob,
                       scores=np.ones(pres.shape, np.float32), peaks=np.rint(hm).astype(np.int32))


def test_dither_stays_within_half_a_level_per_channel():
    rng = np.random.default_rng(0)
    x = np.zeros((4, 3, 8, 8), np.float32)
    step = np.array([1.0, 0.1, 0.01], np.float32).reshape(3, 1, 1)
    d = dither(x, step, rng)
    assert d.dtype == np.float32 and d.shape == x.shape
    for c, s in enumerate((1.0, 0.1, 0.01)):
        assert np.abs(d[:, c]).max() <= DITHER_LEVELS * s + 1e-7
        assert np.abs(d[:, c]).max() >= 0.4 * s  # it is not a no-op


def test_stable_keypoints_exclude_what_the_dither_moved_or_flipped():
    ref = np.full((2, 3, 2), 10.0, np.float32)
    present = np.array([[True, True, True], [True, True, False]])
    floor = ref.copy()
    floor[0, 0] += [2.0, 0.0]  # the dither makes FP32 itself jump: not stable
    floor_present = present.copy()
    floor_present[1, 1] = False  # the dither flips this decision: not stable, its candidate flip excused
    cand = ref.copy()
    cand[0, 0] += [3.0, 0.0]  # a jump where FP32 jumps too: not counted on the stable set
    cand[0, 1] += [0.0, 1.5]  # a jump where FP32 holds: counted
    cand_present = present.copy()
    cand_present[1, 1] = False  # flip of a decision the dither flipped: not a stable flip
    cand_present[0, 2] = False  # flip of a held decision: counted, FP32 probability 0.9
    presence = np.where(present, 0.9, 0.1)
    r = _set(ref, present, presence)
    fcmp = compare_keypoints(r, _set(floor, floor_present), SIZES, NAMES)
    ccmp = compare_keypoints(r, _set(cand, cand_present), SIZES, NAMES)
    f = floor_metrics(fcmp, ccmp, presence, 0.5, "test")
    assert f.jumps == 1 and f.flips == 1 and f.decisions == 6
    assert f.mean_displacement_hm == pytest.approx(2.0 / 5)  # 5 keypoints FP32 calls present
    assert f.stable_keypoints == 3  # (0,1), (0,2), (1,0)
    assert f.candidate_mean_stable_hm == pytest.approx(1.5 / 3)
    assert f.candidate_jumps_stable == 1 and f.candidate_flips_stable == 1
    assert f.candidate_flip_margin_min == pytest.approx(0.4) and f.candidate_flip_margin_median == pytest.approx(0.4)
    assert "candidate mean is" in f.line(ccmp.metrics.mean_displacement_hm)


def test_without_a_candidate_only_the_floor_is_reported():
    ref = np.full((1, 3, 2), 5.0, np.float32)
    present = np.ones((1, 3), bool)
    fcmp = compare_keypoints(_set(ref, present), _set(ref + 0.1, present), SIZES[:1], NAMES)
    f = floor_metrics(fcmp, None, None, None, "test")
    assert f.mean_displacement_hm == pytest.approx(math.hypot(0.1, 0.1), rel=1e-5)
    assert f.stable_keypoints is None and f.candidate_mean_stable_hm is None and f.jumps == 0


def test_identical_candidate_has_a_floor_and_nothing_above_it(same_result):
    f = same_result.floor
    assert f is not None and f.decisions > 0
    assert 0.0 <= f.mean_displacement_hm < 0.5  # half a level moves few keypoints
    assert f.stable_keypoints > 0
    assert f.candidate_mean_stable_hm == 0.0 and f.candidate_jumps_stable == 0 and f.candidate_flips_stable == 0
    assert f.candidate_flip_margin_min is None


def test_broken_candidate_is_far_above_the_floor(broken_run):
    r, _, out = broken_run
    f = r.floor
    assert f.candidate_mean_stable_hm > 10 * max(f.mean_displacement_hm, 1e-3)
    assert f.candidate_flips_stable > 0 and 0.0 <= f.candidate_flip_margin_min <= f.candidate_flip_margin_median
    assert "FP32 floor" in (out / "parity.html").read_text()
    saved = json.loads((out / "parity.json").read_text())
    assert saved["floor"]["stable_keypoints"] == f.stable_keypoints
    assert r.summary()["metrics"]["floor_mean_displacement_hm"] == pytest.approx(f.mean_displacement_hm)


def test_floor_can_be_switched_off(parity_bundle):
    r = run_parity(parity_bundle, "onnx-fp32-copy", limit=2, floor=False)
    assert r.floor is None and r.to_dict()["floor"] is None
    assert "floor_mean_displacement_hm" not in r.summary()["metrics"]


def test_cli_parity_reports_the_floor_and_can_skip_it(parity_bundle, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from heatdeploy.cli import app

    bundle = shutil.copytree(parity_bundle, tmp_path / "bundle")  # the CLI records parity in the manifest
    runner = CliRunner()
    for flag, expect in (("--floor", True), ("--no-floor", False)):
        out = tmp_path / flag
        res = runner.invoke(app, ["parity", str(bundle), "--candidate", "onnx-fp32-copy", "--limit", "3",
                                  "--out", str(out), flag])
        assert res.exit_code == 0, res.output
        saved = json.loads((out / "parity.json").read_text())
        assert (saved["floor"] is not None) == expect
        assert ("FP32 floor" in res.output) == expect
