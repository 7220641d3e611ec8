"""End to end on the random-weight reference bundle: identical candidate passes, broken INT8 fails,
the report and the manifest record say so, data sources and the pytest helper work."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil

import cv2
import numpy as np
import pytest

from heatdeploy.bundle import Bundle, BundleError
from heatdeploy.datasets import DataError
from heatdeploy.parity import (
    ParityError,
    ToleranceError,
    evaluate_checks,
    load_tolerance,
    parity_command,
    run_parity,
)
from heatdeploy.testing import assert_parity

N_IMAGES = 16


# --- (a) the same FP32 model as candidate ------------------------------------------------------------


def test_identical_candidate_passes_with_zero_displacement(same_result):
    r = same_result
    km = r.keypoints
    assert r.passed and r.exit_code == 0 and r.reasons == []
    assert km.images == N_IMAGES and km.keypoints_compared > 0
    assert km.mean_displacement_hm == 0.0 and km.max_displacement_hm == 0.0 and km.max_displacement_in == 0.0
    assert km.existence_agreement == 1.0 and km.flips_lost == km.flips_gained == 0
    assert km.argmax_agreement == 1.0 and km.pck_vs_reference == 1.0
    assert km.pck_drop_points == 0.0 and km.truth_keypoints > 0  # the shipped split has labels
    assert {t.name for t in r.tensors} == {"heatmaps", "existence"}
    assert all(t.snr_db == math.inf and t.max_abs_error == 0.0 and t.cosine == pytest.approx(1.0)
               for t in r.tensors)
    assert r.worst_by_displacement == [] and r.worst_by_flips == []
    assert all(c.status == "pass" for c in r.checks)


# --- (b) the broken INT8 candidate -------------------------------------------------------------------


def test_broken_int8_fails_with_clear_reasons(broken_run):
    r, code, _ = broken_run
    assert not r.passed and code == 1
    heat = next(t for t in r.tensors if t.name == "heatmaps")
    assert heat.snr_db < 0.0  # the error is larger than the signal
    assert r.keypoints.existence_agreement < 1.0
    # the limit reads max(0.5, 2 x floor) where FP32's own dither floor (random weights: large) raises it
    assert any(re.fullmatch(r"mean displacement [\d.]+ heatmap px > (0\.5|max\(0\.5, 2 x floor [\d.]+\)) \(default\)",
                            s) for s in r.reasons)
    assert r.worst_by_displacement and r.worst_by_displacement[0].mean_displacement_hm > 1.0
    assert r.worst_by_flips and all(w.flips > 0 for w in r.worst_by_flips)
    # the same figures against a profile that also limits SNR give an SNR reason
    tol = load_tolerance("strict")
    reasons = [c.reason for c in evaluate_checks(tol, r.keypoints, r.tensors) if not c.passed]
    assert any(s.startswith("SNR of heatmaps -") and s.endswith("dB < 40 (strict)") for s in reasons)


# --- (d) the manifest records the summary -------------------------------------------------------------


def test_manifest_gets_the_parity_summary(broken_run, parity_bundle):
    r, _, _ = broken_run
    b = Bundle.load(parity_bundle)  # still verifies: the manifest is not covered by the hashes
    art = b.artifact("onnx-int8-broken")
    p = art.parity
    assert p is not None and p["passed"] is False and p["reasons"] == r.reasons
    assert p["reference"] == "onnx-fp32" and p["tolerance"] == "default"
    assert p["candidate_sha256"] == art.sha256
    assert p["reference_sha256"] == b.artifact("onnx-fp32").sha256
    assert p["data"]["images"] == N_IMAGES and p["data"]["truth"] is True
    assert p["metrics"]["mean_displacement_hm"] == pytest.approx(r.keypoints.mean_displacement_hm)
    assert b.artifact("onnx-fp32").parity is None


# --- (e) JSON + HTML ------------------------------------------------------------------------------------


def test_json_report_is_strict_json(broken_run):
    r, _, out = broken_run
    text = (out / "parity.json").read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc["passed"] is False and doc["reasons"] == r.reasons
    assert len(doc["per_keypoint"]) == 17 and {"name", "flips_lost", "flips_gained"} <= set(doc["per_keypoint"][0])
    assert doc["keypoints"]["images"] == N_IMAGES
    assert r.files == {"json": str(out / "parity.json"), "html": str(out / "parity.html")}
    assert not list(out.glob(".*.part"))  # atomic writes leave no temporary files


def test_html_report_is_self_contained_with_images(broken_run):
    r, _, out = broken_run
    page = (out / "parity.html").read_text()
    assert "FAIL" in page and "onnx-int8-broken" in page
    assert "floor rule: flip_factor 2, displacement_factor 2" in page  # the rule the checks applied
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    overlays = {w.index for w in r.worst_by_displacement + r.worst_by_flips}
    assert len(uris) == 4 + len(overlays)  # 2 histograms, 2 per-keypoint charts, each worst image once
    img = cv2.imdecode(np.frombuffer(base64.b64decode(uris[-1]), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and min(img.shape[:2]) >= 192
    assert not re.search(r'src="(?!data:)', page)  # nothing outside the page
    for reason in r.reasons:
        assert reason.replace(">", "&gt;").replace("<", "&lt;") in page


# --- data sources, same inputs, helper, errors ---------------------------------------------------------


def test_both_engines_get_the_very_same_tensor(parity_bundle, monkeypatch):
    from heatdeploy.runtime.pipeline import Pipeline

    seen: list[tuple[str, np.ndarray]] = []
    original = Pipeline.infer

    def spy(self, tensor):
        seen.append((self.artifact.name, tensor))
        return original(self, tensor)

    monkeypatch.setattr(Pipeline, "infer", spy)
    calls = []
    run_parity(parity_bundle, "onnx-fp32-copy", limit=5, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    # per batch: reference, candidate (the very same array), then the reference on the dithered copy (floor)
    assert [name for name, _ in seen] == ["onnx-fp32", "onnx-fp32-copy", "onnx-fp32"] * 3
    assert all(seen[i][1] is seen[i + 1][1] for i in range(0, len(seen), 3))
    assert all(seen[i + 2][1] is not seen[i][1] for i in range(0, len(seen), 3))
    assert calls == [(2, 5), (4, 5), (5, 5)]


def test_plain_image_folder_has_no_truth_metrics(parity_bundle, tmp_path):
    from heatdeploy.models.evalset import EVAL_DIR

    for f in sorted(EVAL_DIR.glob("*.jpg"))[:3]:
        shutil.copy(f, tmp_path / f.name)
    r = run_parity(parity_bundle, "onnx-fp32-copy", data=tmp_path)
    assert r.data["kind"] == "folder" and r.data["truth"] is False and r.keypoints.images == 3
    assert r.keypoints.pck_drop_points is None and r.keypoints.truth_keypoints is None
    skipped = [c for c in r.checks if c.status == "skipped"]
    assert [c.key for c in skipped] == ["max_pck_drop_points"] and r.passed


def test_synthetic_data_has_truth(parity_bundle):
    pytest.importorskip("skimage")
    r = run_parity(parity_bundle, "onnx-fp32-copy", data="synthetic:3")
    assert r.data["kind"] == "synthetic" and r.data["truth"] is True
    assert r.keypoints.images == 3 and r.keypoints.pck_drop_points == 0.0


def test_assert_parity_helper(parity_bundle, tmp_path):
    result = assert_parity(parity_bundle, candidate="onnx-fp32-copy", limit=4, tolerance="strict")
    assert result.passed
    with pytest.raises(AssertionError) as info:
        assert_parity(parity_bundle, candidate="onnx-int8-broken", limit=4, report=tmp_path / "rep")
    msg = str(info.value)
    assert "parity failed for onnx-int8-broken vs onnx-fp32" in msg and "p95 displacement" in msg
    assert (tmp_path / "rep" / "parity.html").is_file()
    manifest = Bundle.load(parity_bundle).artifact("onnx-fp32-copy")
    assert manifest.parity is None  # the helper does not edit the bundle it checks


def test_errors_are_clear_and_early(parity_bundle, tmp_path):
    with pytest.raises(ToleranceError, match="unknown tolerance profile 'medium'"):
        parity_command(parity_bundle, "onnx-fp32-copy", tolerance="medium")
    with pytest.raises(BundleError, match="no artifact matching"):
        run_parity(parity_bundle, "onnx-int4")
    with pytest.raises(ParityError, match="not a bundle directory"):
        run_parity(tmp_path / "nothing", "onnx-int8")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        run_parity(parity_bundle, "onnx-fp32-copy", data=tmp_path / "empty")
    with pytest.raises(DataError, match="synthetic:N"):
        run_parity(parity_bundle, "onnx-fp32-copy", data="synthetic:x")


def test_truth_for_another_keypoint_count_is_refused_before_any_inference(parity_bundle):
    from heatdeploy.datasets import Dataset, Truth

    images = [np.zeros((64, 48, 3), np.uint8)] * 2
    wrong = Truth(np.zeros((2, 5, 2), np.float32), np.ones((2, 5), bool), np.ones((2, 5), bool))
    data = Dataset(kind="labelled", source="mine", names=["a", "b"], arrays=images, truth=wrong)
    with pytest.raises(ParityError, match=r"mine: the ground truth is 2x5 .* need 2x17; pass truth made for"):
        run_parity(parity_bundle, "onnx-fp32-copy", data=data)
