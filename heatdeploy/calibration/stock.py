"""The baseline heatdeploy is measured against: ORT's ``quantize_static`` with its defaults.

Kept as an artifact (``onnx-int8-stock``) in the same bundle so parity compares both recipes on the same
inputs, calibration images and FP32 reference; only the quantization recipe differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

STOCK_NAME = "onnx-int8-stock"
STOCK_PATH = "model.int8-stock.onnx"


def add_stock_int8(bundle_dir: str | Path, calib: str = "synthetic:128", *, calib_size: int | None = None,
                   seed: int = 0, batch: int = 8) -> Any:
    """Add ORT's ``quantize_static`` with its defaults as artifact ``onnx-int8-stock``: the baseline.

    Stock = ``quant_pre_process`` then ``quantize_static(fp32, out, reader)`` and nothing else: QDQ,
    MinMax, per-tensor weights, asymmetric int8 activations, every quantizable op quantized (outputs'
    producers included). The reader feeds the same preprocessed calibration images as heatdeploy's
    default (``open_source`` on the same ``calib`` string), so only the quantization recipe differs.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from heatdeploy.bundle import Bundle
    from heatdeploy.calibration.collect import rebatch
    from heatdeploy.calibration.sources import open_source
    from heatdeploy.fsutil import working_dir

    bundle = Bundle.load(bundle_dir)
    fp32 = bundle.artifact(format="onnx", precision="fp32")
    source = open_source(bundle.spec, calib, calib_size, seed, 10)
    name = bundle.spec.input.name
    static = _static_batch(bundle.path_of(fp32), name)  # tf2onnx writes batch 1: feed exactly that

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(rebatch(source.batches(static or batch), static))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {name: x}

    with bundle.change() as tx:  # staged inside the bundle, one manifest swap
        tmp = tx.workdir
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / STOCK_PATH
        src = bundle.path_of(fp32).resolve()
        try:
            with working_dir(Path(tmp)):  # where a failing symbolic shape inference leaves its temporaries
                quant_pre_process(str(src), str(pre.resolve()))
        except Exception:  # ORT's symbolic shape inference gives up on some converted graphs (TFLite)
            quant_pre_process(str(src), str(pre.resolve()), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), _Reader())
        art = tx.add_file(out, STOCK_PATH, name=STOCK_NAME, format="onnx", precision="int8",
                              backend="onnxruntime", tools={"onnxruntime": ort.__version__},
                              notes={"source_artifact": fp32.name, "recipe": "onnxruntime quantize_static defaults "
                                     "after quant_pre_process", "calibration": source.record()})
    return art


def _static_batch(onnx_path: Path, input_name: str) -> int | None:
    """The batch size the graph's input hard-codes, or None when it is dynamic."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    dims = next((i.type.tensor_type.shape.dim for i in model.graph.input if i.name == input_name), None)
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


NNCF_STOCK_NAME = "openvino-int8-stock"
NNCF_STOCK_PATH = "openvino/model.int8-stock.xml"


def add_stock_nncf(bundle_dir: str | Path, calib: str = "synthetic:128", *, calib_size: int | None = None,
                   seed: int = 0) -> Any:
    """Add ``nncf.quantize(model, dataset)`` with NNCF's defaults as artifact ``openvino-int8-stock``.

    Stock = the bundle's FP32 ONNX through ``openvino.convert_model`` and ``nncf.quantize`` with nothing but
    the dataset (one preprocessed calibration image per item, the same images heatdeploy's OpenVINO INT8
    uses): performance preset, every quantizable op, outputs' producers included.
    """
    import nncf
    import openvino as ov

    from heatdeploy.bundle import Bundle
    from heatdeploy.calibration.sources import open_source
    from heatdeploy.exporters.openvino import embed_rt_info, save_ir

    bundle = Bundle.load(bundle_dir)
    fp32 = bundle.artifact(format="onnx", precision="fp32")
    source = open_source(bundle.spec, calib, calib_size, seed, 10)
    items = [x[i:i + 1] for x in source.batches(8) for i in range(len(x))]
    model = ov.convert_model(str(bundle.path_of(fp32)))
    quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))
    embed_rt_info(quantized, bundle.spec, "int8", {"recipe": "nncf.quantize defaults"})  # compiled with f32 hint
    art = save_ir(bundle.root, quantized, "int8", name=NNCF_STOCK_NAME, rel=NNCF_STOCK_PATH,
                  tools={"openvino": ov.get_version(), "nncf": nncf.__version__},
                  notes={"source_artifact": fp32.name, "recipe": "nncf.quantize defaults",
                         "calibration": source.record(), "inference_precision": "f32"})
    return art
