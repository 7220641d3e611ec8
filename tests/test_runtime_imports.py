"""The runtime installs on a Jetson with numpy, OpenCV and one engine: it must not pull torch or onnx."""

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_import_runtime_is_engine_free():
    mods = _modules_after("import heatdeploy.runtime")
    heavy = {m.split(".")[0] for m in mods} & {"torch", "onnx", "onnxruntime", "openvino", "tensorrt", "nncf"}
    assert not heavy, f"import heatdeploy.runtime pulled in {heavy}"


def test_pipeline_with_onnxruntime_pulls_no_torch(runtime_bundle):
    mods = _modules_after(
        "from heatdeploy.runtime import Pipeline\n"
        "import numpy as np\n"
        f"p = Pipeline.load({str(runtime_bundle)!r}, backend='onnxruntime')\n"
        "p.predict([np.zeros((100, 80, 3), np.uint8)])"
    )
    assert "onnxruntime" in mods
    assert not {m.split(".")[0] for m in mods} & {"torch", "onnx"}
