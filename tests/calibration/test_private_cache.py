"""The calibration and OpenVINO tests write heatdeploy's cache under their own tmp_path (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from heatdeploy.fsutil import cache_dir


def test_the_cache_is_this_tests_tmp_path(tmp_path: Path) -> None:
    assert cache_dir("ranges") == tmp_path / "hdcache" / "ranges"
