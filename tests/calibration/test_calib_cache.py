"""The calibration cache: a second export with the same model, data and method does not calibrate again."""

from __future__ import annotations

from pathlib import Path

import pytest

from heatdeploy.calibration import collect as collect_mod
from heatdeploy.calibration.cache import CalibrationCache, cache_key, default_cache_dir
from heatdeploy.calibration.quantize import quantize_onnx_int8
from heatdeploy.calibration.sources import ImageFolderSource
from heatdeploy.spec import ModelSpec

OPTS = {"method": "minmax", "keep_fp32": "base"}


@pytest.fixture()
def calibrations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calibrator constructions: one per calibration actually run."""
    calls: list[int] = []
    real = collect_mod.create_calibrator

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(collect_mod, "create_calibrator", counting)
    return calls


def test_second_export_skips_calibration(tiny_model: Path, image_dir: Path, spec: ModelSpec, tmp_path: Path,
                                         calibrations: list[int]) -> None:
    source = ImageFolderSource(spec, image_dir, size=10, seed=1)
    first = quantize_onnx_int8(tiny_model, tmp_path / "a.onnx", spec, source, **OPTS)
    assert first.cache == "miss" and len(calibrations) == 1

    again = quantize_onnx_int8(tiny_model, tmp_path / "b.onnx", spec, ImageFolderSource(spec, image_dir, size=10,
                                                                                        seed=1), **OPTS)
    assert again.cache == "result" and len(calibrations) == 1
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    assert again.out_path == str(tmp_path / "b.onnx") and again.ranges == first.ranges
    assert again.calibration == first.calibration

    other_rule = quantize_onnx_int8(tiny_model, tmp_path / "c.onnx", spec, source,
                                    **{**OPTS, "keep_fp32": "none"})
    assert other_rule.cache == "ranges" and len(calibrations) == 1  # same ranges, new exclusions
    assert other_rule.calibration == first.calibration  # the record of the data that was actually read

    other_data = ImageFolderSource(spec, image_dir, size=10, seed=2)
    assert quantize_onnx_int8(tiny_model, tmp_path / "d.onnx", spec, other_data, **OPTS).cache == "miss"
    other_method = quantize_onnx_int8(tiny_model, tmp_path / "e.onnx", spec, source,
                                      **{**OPTS, "method": "percentile"})
    assert other_method.cache == "miss" and len(calibrations) == 3


def test_cache_can_be_turned_off(tiny_model: Path, image_dir: Path, spec: ModelSpec, tmp_path: Path,
                                 calibrations: list[int]) -> None:
    source = ImageFolderSource(spec, image_dir, size=6)
    for name in ("a", "b"):
        quantize_onnx_int8(tiny_model, tmp_path / f"{name}.onnx", spec, source, use_cache=False, **OPTS)
    assert len(calibrations) == 2
    assert not default_cache_dir().exists()


def test_damaged_entries_are_misses(tiny_model: Path, image_dir: Path, spec: ModelSpec, tmp_path: Path,
                                    calibrations: list[int]) -> None:
    source = ImageFolderSource(spec, image_dir, size=6)
    cache_dir = tmp_path / "cache"
    quantize_onnx_int8(tiny_model, tmp_path / "a.onnx", spec, source, cache_dir=cache_dir, **OPTS)
    (result,) = (cache_dir / "results").iterdir()
    (result / "model.onnx").write_bytes(b"tampered")
    (ranges,) = (cache_dir / "ranges").iterdir()
    (ranges / "meta.json").write_text("{ not json")
    report = quantize_onnx_int8(tiny_model, tmp_path / "b.onnx", spec, source, cache_dir=cache_dir, **OPTS)
    assert report.cache == "miss" and len(calibrations) == 2
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()


def test_cache_location_and_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEATDEPLOY_CACHE", str(tmp_path / "root"))
    assert default_cache_dir() == tmp_path / "root" / "calib"
    monkeypatch.delenv("HEATDEPLOY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "heatdeploy" / "calib"
    assert cache_key(a=1, b={"x": 2}) == cache_key(b={"x": 2}, a=1) != cache_key(a=2, b={"x": 2})
    assert CalibrationCache(tmp_path).load_ranges("0" * 64) is None
