"""INT8 keypoint accuracy, ours vs stock, side by side against FP32's own noise floor (one run, same frames).

For the MobileNet-style test model (and BlazePose with ``--blazepose``): one FP32 bundle, then every
candidate from the real path on the same calibration frames — heatdeploy's default ORT INT8
(``add_onnx_int8``), stock ``quantize_static`` defaults, heatdeploy's OpenVINO INT8, stock
``nncf.quantize`` defaults, and OpenVINO bf16 as a precision much finer than INT8 — each judged by
``run_parity`` on the same evaluation frames against ORT FP32. Printed per candidate: mean displacement
(grid px), the same on the keypoints FP32 holds under a +-0.5-level input dither (parity's floor), argmax
jumps there, existence flips; then ours/stock ratios (the earlier ">= 5x less than stock" targets are
retired: bf16 itself is not 5x better than stock on the MobileNet; ``int8_real.py`` adds speed and the zoo).
Quantization results and the fetched BlazePose file are cached
(``~/.cache/heatdeploy``), as for ``int8_speed.py``.

Why the floor: a displacement mean carries argmax jumps between near-equal peaks, which any perturbation
causes; when stock already sits within a few times the floor, "Nx better than stock" can ask for less error
than FP32 has against itself.

    nice -n 10 python benchmarks/int8_accuracy.py [--blazepose] [--weights mobilenet.pt]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Line:
    name: str
    mean: float
    mean_stable: float
    jumps_stable: int
    flips: int

    def row(self) -> str:
        return f"{self.name:<24} {self.mean:9.3f} {self.mean_stable:13.3f} {self.jumps_stable:13d} {self.flips:8d}"


def _line(result: Any) -> Line:
    km, f = result.keypoints, result.floor
    return Line(result.candidate.name, km.mean_displacement_hm, f.candidate_mean_stable_hm, f.candidate_jumps_stable,
                km.flips_lost + km.flips_gained)


def _mobilenet(root: Path, weights: str | None = None) -> tuple[Path, Any, str]:
    from heatdeploy.models.mobilenet import eval_images, export_mobilenet_bundle

    return export_mobilenet_bundle(root / "bundle", weights), eval_images(64), "synthetic:128"


def _blazepose(root: Path) -> tuple[Path, Any, str]:
    """As tests/models/test_blazepose_int8.py builds it: the .tflite from the mediapipe wheel (cached)."""
    from heatdeploy.api import export_bundle
    from heatdeploy.models.blazepose import blazepose_spec, fetch_blazepose, write_blazepose_images

    root.mkdir(parents=True, exist_ok=True)
    blazepose_spec().save(root / "spec.json")
    write_blazepose_images(root / "calib", 64, seed=0)
    write_blazepose_images(root / "eval", 64, seed=1)
    bundle = export_bundle(str(fetch_blazepose()), root / "bundle", spec_path=str(root / "spec.json"))
    return Path(bundle), str(root / "eval"), str(root / "calib")


def measure(model: str, root: Path, weights: str | None = None) -> None:
    from heatdeploy.calibration.artifact import add_onnx_int8
    from heatdeploy.calibration.stock import NNCF_STOCK_NAME, STOCK_NAME, add_stock_int8, add_stock_nncf
    from heatdeploy.exporters.openvino import add_openvino_artifact
    from heatdeploy.parity import run_parity

    t0 = time.perf_counter()
    bundle, data, calib = _mobilenet(root, weights) if model == "mobilenet" else _blazepose(root)
    add_onnx_int8(bundle, calib)
    add_stock_int8(bundle, calib)
    add_openvino_artifact(bundle, "int8", calib=calib)
    add_stock_nncf(bundle, calib)
    add_openvino_artifact(bundle, "bf16")
    names = ("onnx-int8", STOCK_NAME, "openvino-int8", NNCF_STOCK_NAME, "openvino-bf16")
    results = {n: run_parity(bundle, n, data=data) for n in names}
    lines = {n: _line(r) for n, r in results.items()}
    floor = results["onnx-int8"].floor
    frames = results["onnx-int8"].keypoints.images
    print(f"\n{model}: {frames} evaluation frames, calibration {Path(calib).name}; "
          f"built and measured in {time.perf_counter() - t0:.0f} s")
    print(f"FP32 floor (reference vs itself, +-0.5 input level dither): mean {floor.mean_displacement_hm:.3f} grid px, "
          f"{floor.jumps} jumps > 1 px, {floor.flips} flips; {floor.stable_keypoints} keypoints held")
    print(f"{'candidate':<24} {'mean (px)':>9} {'held: mean':>13} {'held: jumps':>13} {'kp flips':>8}")
    for line in lines.values():
        print(line.row())
    for ours, stock in (("onnx-int8", STOCK_NAME), ("openvino-int8", NNCF_STOCK_NAME)):
        o, s = lines[ours], lines[stock]
        print(f"{ours} vs {stock}: {s.mean / o.mean:.2f}x less displacement, flips {o.flips} vs {s.flips}; on held "
              f"keypoints {s.mean_stable / o.mean_stable:.2f}x")
    bf = lines["openvino-bf16"]
    print(f"openvino-bf16 (finer than INT8) vs {STOCK_NAME}: {lines[STOCK_NAME].mean / bf.mean:.2f}x; "
          f"vs {NNCF_STOCK_NAME}: {lines[NNCF_STOCK_NAME].mean / bf.mean:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blazepose", action="store_true", help="also BlazePose (slow: ~10 min on 2 cores)")
    parser.add_argument("--weights", help="MobileNet weights other than the shipped ones (a state_dict .pt)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="heatdeploy-int8acc-") as tmp:
        for model in ("mobilenet", "blazepose") if args.blazepose else ("mobilenet",):
            measure(model, Path(tmp) / model, args.weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
