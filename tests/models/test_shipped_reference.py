"""The shipped weights: exported through the real path and scored against the shipped ground truth."""

import pytest

from heatdeploy.api import eval_bundle, export_bundle
from heatdeploy.models.reference import WEIGHTS


@pytest.fixture(scope="module")
def shipped_bundle(tmp_path_factory):
    if not WEIGHTS.is_file():
        pytest.fail(f"{WEIGHTS} missing: the reference weights must ship with the package")
    return export_bundle("reference", tmp_path_factory.mktemp("shipped") / "bundle")


def test_shipped_reference_accuracy(shipped_bundle):
    report = eval_bundle(shipped_bundle)
    assert report["images"] >= 200
    assert report["pck@0.05_visible"] >= 0.85, report
    assert report["existence_accuracy"] >= 0.90, report
