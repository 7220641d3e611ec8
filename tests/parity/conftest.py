"""Fixtures for the parity tests: a private copy of the random-weight reference bundle with candidates.

Candidates: ``onnx-fp32-copy`` (the FP32 file again: parity must be exact) and ``onnx-int8-broken`` (ORT
QDQ INT8 whose activation QuantizeLinear scales are multiplied by 100: parity must fail). Runs use the
first 16 images of the shipped labelled split, so truth metrics are exercised too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

N_IMAGES = 16


def _break_scales(src: Path, dst: Path, factor: float = 100.0) -> int:
    """Multiply every activation QuantizeLinear scale initializer by ``factor``; returns how many."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    names = {n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[1] in inits}
    for name in names:
        arr = numpy_helper.to_array(inits[name]).astype(np.float32) * np.float32(factor)
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    onnx.save(model, str(dst))
    return len(names)


def _quantize_qdq(bundle_root: Path, out: Path) -> Path:
    """A plain ORT QDQ INT8 model calibrated (MinMax) on 4 images of the shipped split."""
    pytest.importorskip("onnx")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from heatdeploy.bundle import Bundle
    from heatdeploy.models.evalset import EVAL_DIR, read_labelled_set
    from heatdeploy.runtime.preprocess import Preprocessor, load_image

    b = Bundle.load(bundle_root)
    files = read_labelled_set(EVAL_DIR).files[-4:]  # not among the images parity runs on
    x = Preprocessor(b.spec.input)([load_image(f) for f in files]).tensor
    name = b.spec.input.name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{name: x[i:i + 1]} for i in range(len(x))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    quantize_static(str(b.path_of(b.artifact("onnx-fp32"))), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return out


@pytest.fixture(scope="session")
def parity_bundle(random_reference_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared bundle (never edit that one) with the two candidate artifacts added."""
    from heatdeploy.bundle import Bundle

    work = tmp_path_factory.mktemp("paritybundle")
    root = work / "bundle"
    shutil.copytree(random_reference_bundle, root)
    int8 = _quantize_qdq(root, work / "int8.onnx")
    assert _break_scales(int8, work / "broken.onnx") > 0
    b = Bundle.load(root)
    b.add_file(b.path_of(b.artifact("onnx-fp32")), "model-copy.onnx", name="onnx-fp32-copy", format="onnx",
               precision="fp32", backend="onnxruntime")
    b.add_file(work / "broken.onnx", "model-broken.onnx", name="onnx-int8-broken", format="onnx",
               precision="int8", backend="onnxruntime")
    b.save()
    return root


@pytest.fixture(scope="session")
def same_result(parity_bundle: Path):
    """FP32 against a byte-identical FP32 copy on 16 labelled images."""
    from heatdeploy.parity import run_parity

    return run_parity(parity_bundle, "onnx-fp32-copy", limit=N_IMAGES)


@pytest.fixture(scope="session")
def broken_run(parity_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """The CLI path on the broken candidate: JSON + HTML written, manifest updated. (result, code, out)."""
    from heatdeploy.parity import parity_command

    out = tmp_path_factory.mktemp("parityreport")
    result, code = parity_command(parity_bundle, "onnx-int8-broken", out=out, limit=N_IMAGES)
    return result, code, out
