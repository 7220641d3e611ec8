"""Pytest helpers for users: a parity test of your own model in three lines.

    from heatdeploy.testing import assert_parity

    def test_int8_matches_fp32():
        assert_parity("bundle/", candidate="onnx-int8", data="calib_images/", tolerance="default")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from heatdeploy.parity import ParityResult, Tolerance, run_parity, write_outputs


def assert_parity(bundle: str | Path, candidate: str, data: str | Path | None = None,
                  tolerance: str | Path | Tolerance = "default", *, reference: str = "onnx-fp32",
                  limit: int | None = None, backend: str | None = None, batch_size: int = 8,
                  within_hm_px: Sequence[float] | None = None, report: str | Path | None = None,
                  **kwargs: Any) -> ParityResult:
    """Run parity and raise ``AssertionError`` listing every failed limit; return the result when it passes.

    The bundle's manifest is left alone (a test should not edit what it checks). ``report``: a folder for
    parity.json + parity.html, written pass or fail, so a CI job can keep them as artifacts.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this helper's
    result = run_parity(bundle, candidate, reference=reference, data=data, tolerance=tolerance, limit=limit,
                        backend=backend, batch_size=batch_size, within_hm_px=within_hm_px, **kwargs)
    if report is not None:
        write_outputs(result, report)
    if not result.passed:
        where = f"; report: {result.files['html']}" if result.files else ""
        lines = "\n".join(f"  - {r}" for r in result.reasons)
        raise AssertionError(f"parity failed for {candidate} vs {reference} in {bundle} "
                             f"(tolerance {result.tolerance.name}, {result.keypoints.images} images){where}:\n"
                             f"{lines}")
    return result


__all__ = ["assert_parity"]
