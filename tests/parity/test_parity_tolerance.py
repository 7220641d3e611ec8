"""Tolerance profiles: the packaged ones, user TOML files, one-line errors, and the reasons they produce."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from heatdeploy.parity import (
    PROFILES,
    FloorMetrics,
    KeypointMetrics,
    TensorMetrics,
    ToleranceError,
    evaluate_checks,
    load_tolerance,
)


def _metrics(**kw) -> KeypointMetrics:
    base = dict(images=10, keypoints_total=170, keypoints_compared=120, mean_displacement_hm=0.1,
                p95_displacement_hm=0.4, max_displacement_hm=0.9, mean_displacement_in=0.4, p95_displacement_in=1.6,
                max_displacement_in=3.6, within_hm={"1": 1.0, "2": 1.0}, argmax_agreement=0.99, pck_alpha=0.05,
                pck_vs_reference=1.0, existence_agreement=1.0, flips_lost=0, flips_gained=0, worst_flip_rate=0.0,
                worst_flip_keypoint="nose", truth_keypoints=100, pck_truth_reference=0.9,
                pck_truth_candidate=0.9, pck_drop_points=0.0)
    base.update(kw)
    return KeypointMetrics(**base)


def _tensor(name: str = "heatmaps", snr: float = 30.0) -> TensorMetrics:
    return TensorMetrics(name=name, shape=[10, 17, 64, 48], reference_dtype="float32", candidate_dtype="float32",
                         max_abs_error=0.01, mean_abs_error=0.001, rmse=0.002, cosine=0.999, snr_db=snr,
                         nonfinite=0)


def test_packaged_profiles_load_and_are_ordered():
    tols = {name: load_tolerance(name) for name in PROFILES}
    d = tols["default"]
    assert d.limits == {"max_mean_displacement_hm": 0.5, "max_p95_displacement_hm": 2.0,
                        "min_existence_agreement": 0.99, "max_pck_drop_points": 1.0}
    assert d.within_hm_px == (1.0, 2.0) and d.pck_alpha == 0.05
    for key in d.limits:
        strict, loose = tols["strict"].limits[key], tols["loose"].limits[key]
        if key.startswith("max_"):
            assert strict <= d.limits[key] <= loose
        else:
            assert strict >= d.limits[key] >= loose
    assert load_tolerance().name == "default"


def test_user_profile_extends_overrides_and_switches_off(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('extends = "default"\nname = "mine"\n[metrics]\nwithin_hm_px = [0.5]\n'
                 '[limits]\nmax_mean_displacement_hm = 0.3\nmax_pck_drop_points = false\nmin_snr_db = 20\n')
    t = load_tolerance(p)
    assert t.name == "mine" and t.source == str(p)
    assert t.limits == {"max_mean_displacement_hm": 0.3, "max_p95_displacement_hm": 2.0,
                        "min_existence_agreement": 0.99, "min_snr_db": 20.0}
    assert t.within_hm_px == (0.5,)


def test_standalone_user_profile_has_only_its_limits(tmp_path):
    p = tmp_path / "gate.toml"
    p.write_text("[limits]\nmin_existence_agreement = 0.95\n")
    t = load_tolerance(str(p))
    assert t.name == "gate" and t.limits == {"min_existence_agreement": 0.95}


@pytest.mark.parametrize("text, message", [
    ("[limits\nmax_mean_displacement_hm = 1", "not valid TOML"),
    ("[limits]\nmax_mean_displacment_hm = 1\n", "unknown key limits.max_mean_displacment_hm"),
    ("[limits]\nmax_mean_displacement_hm = 'half'\n", "limits.max_mean_displacement_hm: expected a number"),
    ("[limits]\nmin_existence_agreement = 99\n", "limits.min_existence_agreement: a share"),
    ("[limits]\nmax_p95_displacement_hm = -1\n", "limits.max_p95_displacement_hm: expected a non-negative"),
    ("[metrics]\nwithin_hm_px = 2\n", "metrics.within_hm_px: expected a list"),
    ("[metrics]\npck_alpha = 5\n", "metrics.pck_alpha"),
    ("limits = 3\n", "limits: expected a table"),
    ("colour = 'red'\n", "unknown key colour"),
    ('extends = "nonexistent"\n', "extends: unknown tolerance profile 'nonexistent'"),
    ('extends = "base.toml"\n', "base.toml: no such tolerance file"),
])
def test_bad_toml_is_one_line_naming_file_and_key(tmp_path, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ToleranceError) as info:
        load_tolerance(p)
    msg = str(info.value)
    assert message in msg and "\n" not in msg
    assert msg.startswith(str(tmp_path))


def test_unknown_profile_and_missing_file():
    with pytest.raises(ToleranceError, match=r"unknown tolerance profile 'medium': choose strict, default, loose"):
        load_tolerance("medium")
    with pytest.raises(ToleranceError, match="no such tolerance file"):
        load_tolerance("conf/parity.toml")


def test_reasons_read_as_sentences():
    tol = load_tolerance("default")
    checks = evaluate_checks(tol, _metrics(mean_displacement_hm=3.2, existence_agreement=0.95), [_tensor()])
    failed = [c.reason for c in checks if not c.passed]
    assert failed == ["mean displacement 3.2 heatmap px > 0.5 (default)",
                      "existence agreement 0.95 < 0.99 (default)"]
    assert all(c.status == "pass" for c in checks if c.key == "max_p95_displacement_hm")


def test_truth_limit_is_skipped_without_truth_and_limits_at_the_edge_pass():
    tol = load_tolerance("default")
    m = _metrics(truth_keypoints=None, pck_truth_reference=None, pck_truth_candidate=None, pck_drop_points=None,
                 mean_displacement_hm=0.5)
    checks = {c.key: c for c in evaluate_checks(tol, m, [])}
    assert checks["max_pck_drop_points"].status == "skipped" and checks["max_pck_drop_points"].passed
    assert "no ground truth" in checks["max_pck_drop_points"].reason
    assert checks["max_mean_displacement_hm"].status == "pass"  # equal to the limit


def test_undefined_displacement_fails_and_tensor_limits_apply_per_output():
    tol = replace(load_tolerance("strict"))
    m = _metrics(keypoints_compared=0, mean_displacement_hm=math.nan, p95_displacement_hm=math.nan,
                 max_displacement_hm=math.nan, argmax_agreement=math.nan)
    checks = evaluate_checks(tol, m, [_tensor("heatmaps", 60.0), _tensor("existence", 12.0)])
    reasons = [c.reason for c in checks if not c.passed]
    assert any(r.startswith("mean displacement: undefined — FP32 calls no keypoint present") for r in reasons)
    assert "SNR of existence 12 dB < 40 (strict)" in reasons
    assert not any("SNR of heatmaps" in r for r in reasons)


# --- the floor rule (issue 15): absolute limits, and also k x FP32's own dither floor ---------------------


def _floor(flips: int, candidate_flips_stable: int | None, mean: float = 0.01, p95: float = 0.05) -> FloorMetrics:
    return FloorMetrics(dither="test", mean_displacement_hm=mean, p95_displacement_hm=p95, max_displacement_hm=1.0,
                        jumps=0, flips=flips, decisions=1248, stable_keypoints=1000, candidate_mean_stable_hm=0.1,
                        candidate_p95_stable_hm=0.2, candidate_jumps_stable=0,
                        candidate_flips_stable=candidate_flips_stable)


def test_default_profile_states_its_floor_rule_and_strict_has_none():
    assert load_tolerance("default").floor == {"flip_factor": 2.0, "displacement_factor": 2.0}
    assert load_tolerance("loose").floor == {"flip_factor": 3.0, "displacement_factor": 3.0}
    assert load_tolerance("strict").floor == {}


def test_existence_passes_by_the_floor_when_fp32_itself_flips_as_often():
    """Issue 15's landmark A: 21 flips of 1,248 (agreement 0.983 < 0.99), FP32's floor 18 flips."""
    tol = load_tolerance("default")
    km = _metrics(keypoints_total=1248, existence_agreement=1 - 21 / 1248, flips_lost=2, flips_gained=19)
    absolute = {c.key: c for c in evaluate_checks(tol, km, [])}["min_existence_agreement"]
    assert not absolute.passed  # no floor measured: the absolute limit alone
    c = {c.key: c for c in evaluate_checks(tol, km, [], _floor(18, 21))}["min_existence_agreement"]
    assert c.passed and c.value == 21 and c.limit == 36  # max(12.48 allowed, 2 x 18)
    assert c.reason == ("existence flips on decisions FP32 holds 21 flips <= max(12.48 allowed by agreement 0.99, "
                        "2 x 18 floor flips) (default)")


def test_existence_fails_when_flips_exceed_both_the_absolute_and_the_floor_allowance():
    tol = load_tolerance("default")
    km = _metrics(keypoints_total=1248, existence_agreement=1 - 40 / 1248)
    c = {c.key: c for c in evaluate_checks(tol, km, [], _floor(3, 40))}["min_existence_agreement"]
    assert not c.passed and c.limit == pytest.approx(12.48)  # 2 x 3 floor flips is below the absolute allowance
    off = replace(tol, floor={})
    c = {c.key: c for c in evaluate_checks(off, km, [], _floor(30, 40))}["min_existence_agreement"]
    assert not c.passed and c.label == "existence agreement"  # rule switched off: the absolute limit only


def test_displacement_limit_rises_to_k_times_the_floor_only_where_that_is_larger():
    tol = load_tolerance("default")
    km = _metrics(mean_displacement_hm=0.6, p95_displacement_hm=2.5)
    checks = {c.key: c for c in evaluate_checks(tol, km, [], _floor(0, 0, mean=0.35, p95=1.5))}
    assert checks["max_mean_displacement_hm"].passed and checks["max_mean_displacement_hm"].limit == 0.7
    assert checks["max_p95_displacement_hm"].passed and checks["max_p95_displacement_hm"].limit == 3.0
    checks = {c.key: c for c in evaluate_checks(tol, km, [], _floor(0, 0, mean=0.01, p95=0.05))}
    assert not checks["max_mean_displacement_hm"].passed and checks["max_mean_displacement_hm"].limit == 0.5
    assert checks["max_mean_displacement_hm"].reason == "mean displacement 0.6 heatmap px > 0.5 (default)"
    checks = {c.key: c for c in evaluate_checks(tol, _metrics(mean_displacement_hm=0.8), [], _floor(0, 0, mean=0.35))}
    assert checks["max_mean_displacement_hm"].reason == ("mean displacement 0.8 heatmap px > max(0.5, 2 x floor 0.35) "
                                                         "(default)")


def test_floor_factors_are_validated(tmp_path):
    p = tmp_path / "f.toml"
    p.write_text('extends = "default"\n[floor]\nflip_factor = 0.5\n')
    with pytest.raises(ToleranceError, match=r"f.toml: floor.flip_factor: expected a factor >= 1"):
        load_tolerance(p)
    p.write_text('extends = "default"\n[floor]\nflips = 2\n')
    with pytest.raises(ToleranceError, match="unknown key floor.flips"):
        load_tolerance(p)
    p.write_text('extends = "default"\n[floor]\nflip_factor = false\n')
    assert load_tolerance(p).floor == {"displacement_factor": 2.0}
