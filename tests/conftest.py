"""Shared fixtures: a bundle of the reference architecture (random weights, so tests need no training)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
PRIVATE_CACHE = ("calibration", "openvino")  # folders whose tests write heatdeploy's cache (ORT ranges, ...)


@pytest.fixture(autouse=True)
def _private_cache(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests in PRIVATE_CACHE folders never touch the user's ~/.cache: HEATDEPLOY_CACHE is their tmp_path."""
    if request.path.relative_to(TESTS).parts[0] in PRIVATE_CACHE:
        tmp_path = request.getfixturevalue("tmp_path")
        monkeypatch.setenv("HEATDEPLOY_CACHE", str(tmp_path / "hdcache"))


@pytest.fixture(scope="session")
def random_reference_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Export the reference net with seeded random weights through the module:factory path."""
    import torch

    from heatdeploy.api import export_bundle
    from heatdeploy.models.reference import ReferencePoseNet, reference_spec

    root = tmp_path_factory.mktemp("refbundle")
    torch.manual_seed(0)
    torch.save(ReferencePoseNet().state_dict(), root / "weights.pt")
    reference_spec().save(root / "spec.json")
    return export_bundle("heatdeploy.models.reference:ReferencePoseNet", root / "bundle",
                         weights=str(root / "weights.pt"), spec_path=str(root / "spec.json"))


@pytest.fixture(scope="session")
def blazepose_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MediaPipe's pose_landmark_full.tflite (pip downloads the mediapipe wheel once; sha256 pinned).

    Cached under $HEATDEPLOY_CACHE/models when that is set (CI and developers keep it between runs), else
    in this session's temporary folder, never in the user's ~/.cache.
    """
    import os

    from heatdeploy.models.blazepose import fetch_blazepose

    dest = None if os.environ.get("HEATDEPLOY_CACHE") else tmp_path_factory.mktemp("blazepose")
    return fetch_blazepose(dest)


RUNTIME_BUNDLE_ENV = "HEATDEPLOY_TEST_BUNDLE"  # an exported FP32 bundle: lets runtime tests run without torch/onnx


@pytest.fixture(scope="session")
def runtime_bundle(request: pytest.FixtureRequest) -> Path:
    """An FP32 ONNX bundle of the reference architecture, read-only: ``$HEATDEPLOY_TEST_BUNDLE`` when set (CI's
    runtime-only venv, which has no torch to export one), else :func:`random_reference_bundle`."""
    import os

    given = os.environ.get(RUNTIME_BUNDLE_ENV)
    if given:
        path = Path(given)
        if not (path / "manifest.json").is_file():
            raise pytest.UsageError(f"{RUNTIME_BUNDLE_ENV}={given}: not a bundle; export one with "
                                    "'heatdeploy export reference --out DIR'")
        return path
    return request.getfixturevalue("random_reference_bundle")


@pytest.fixture(scope="session")
def cli_error_line() -> Callable[..., str]:
    """Run ``heatdeploy ARGS...``: it must exit 2 printing exactly one ``error:`` line, which is returned."""
    from typer.testing import CliRunner

    from heatdeploy.cli import app

    runner = CliRunner()

    def run(*args: object) -> str:
        res = runner.invoke(app, [str(a) for a in args])
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
        return lines[0]

    return run
