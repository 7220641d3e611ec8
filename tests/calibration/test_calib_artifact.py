"""Adding the INT8 artifact to a bundle: recorded with its ranges, or nothing at all when interrupted."""

import json
import shutil

import pytest

from heatdeploy.bundle import Bundle
from heatdeploy.calibration import artifact as artifact_mod


@pytest.fixture
def bundle_copy(random_reference_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(random_reference_bundle, dst)
    return dst


def test_int8_artifact_is_recorded_with_ranges(bundle_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("HEATDEPLOY_CACHE", str(tmp_path / "cache"))
    art, report = artifact_mod.add_onnx_int8(bundle_copy, "synthetic:8", keep_fp32="base",
                                             sensitivity_batches=0)
    b = Bundle.load(bundle_copy)  # verifies every hash, the range files included
    a = b.artifact("onnx-int8")
    assert a.precision == "int8" and set(a.extra_files) == {"calibration.json", "calibration.cache"}
    assert a.calibration["calibration"]["count"] == 8
    ranges = json.loads((bundle_copy / "calibration.json").read_text())
    assert ranges["tensors"]
    assert (bundle_copy / "calibration.cache").read_text().startswith("TRT-")


def test_interrupted_calibration_leaves_bundle_unchanged(bundle_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("HEATDEPLOY_CACHE", str(tmp_path / "cache"))
    before = sorted(p.name for p in bundle_copy.iterdir())
    manifest = (bundle_copy / "manifest.json").read_text()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    import heatdeploy.calibration.ranges as ranges_mod

    monkeypatch.setattr(ranges_mod, "write_trt_cache", boom)
    with pytest.raises(KeyboardInterrupt):
        artifact_mod.add_onnx_int8(bundle_copy, "synthetic:8", keep_fp32="base", sensitivity_batches=0)
    assert sorted(p.name for p in bundle_copy.iterdir()) == before
    assert (bundle_copy / "manifest.json").read_text() == manifest
    assert not list(bundle_copy.parent.glob("heatdeploy-int8-*"))
