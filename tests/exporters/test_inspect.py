"""``describe``: bare .onnx and bundle directories, with per-file hash status and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from heatdeploy.bundle import Bundle, BundleError
from heatdeploy.exporters.inspect import InspectError, describe
from heatdeploy.exporters.onnx import OnnxFileError, export_onnx
from heatdeploy.fsutil import sha256_file

HERE = Path(__file__).parent
if str(HERE) not in sys.path:  # the helper is imported by name whatever pytest's import mode
    sys.path.insert(0, str(HERE))
import tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inspect") / "tiny.onnx"
    export_onnx(tiny_model.build(), tiny_model.tiny_spec(), path, opset=17)
    return path


def _bundle(root: Path, onnx_path: Path) -> Bundle:
    b = Bundle.create(root, tiny_model.tiny_spec())
    b.add_file(onnx_path, "model.onnx", name="onnx-fp32", format="onnx", precision="fp32",
               backend="onnxruntime", tools={"onnx": onnx.__version__})
    b.save()
    return b


def test_describe_onnx(onnx_file: Path) -> None:
    d = describe(onnx_file)
    assert d["kind"] == "onnx" and d["path"] == str(onnx_file)
    assert d["spec"] == tiny_model.tiny_spec().to_dict()
    assert d["opset"] == 17 and d["sha256"] == sha256_file(onnx_file)
    assert d["inputs"] == [{"name": "image", "shape": ["N", 3, 32, 32], "dtype": "float32"}]
    assert d["outputs"] == [
        {"name": "heatmaps", "shape": ["N", 3, 8, 8], "dtype": "float32"},
        {"name": "existence", "shape": ["N", 3], "dtype": "float32"},
    ]
    assert d["ops"]["Conv"] == 3 and len(d["ops"]) <= 10
    assert d["num_nodes"] == sum(d["ops"].values())
    json.dumps(d)  # the CLI dumps it as JSON


def test_describe_onnx_without_or_with_bad_spec(tmp_path: Path) -> None:
    proto = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 2])]))
    path = tmp_path / "plain.onnx"
    onnx.save(proto, str(path))
    d = describe(path)
    assert d["spec"] is None and d["ops"] == {"Identity": 1} and "spec_error" not in d
    onnx.helper.set_model_props(proto, {"heatdeploy.spec": '{"keypoints": []}'})
    onnx.save(proto, str(path))
    d = describe(path)
    assert d["spec"] is None and "keypoints" in d["spec_error"]


@pytest.mark.parametrize("content", [b"definitely not onnx \x00\x01\x02 " * 20, b""])
def test_garbage_onnx_is_a_one_line_value_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(content)
    with pytest.raises(OnnxFileError) as err:
        describe(path)
    assert isinstance(err.value, ValueError)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(OnnxFileError, match="no such ONNX file"):
        describe(tmp_path / "nope.onnx")
    with pytest.raises(InspectError, match="no such bundle directory"):
        describe(tmp_path / "nope")
    with pytest.raises(BundleError, match="manifest.json"):
        describe(tmp_path)  # a directory without a manifest


def test_describe_bundle_reports_hash_status(tmp_path: Path, onnx_file: Path) -> None:
    root = tmp_path / "bundle"
    _bundle(root, onnx_file)
    d = describe(root)
    assert d["kind"] == "bundle" and d["ok"] is True
    assert d["spec"] == tiny_model.tiny_spec().to_dict()
    (art,) = d["artifacts"]
    assert art["name"] == "onnx-fp32" and art["status"] == "ok" and art["files"] == {"model.onnx": "ok"}
    assert art["opset"] == 17 and [o["name"] for o in art["outputs"]] == ["heatmaps", "existence"]
    assert art["inputs"][0]["shape"] == ["N", 3, 32, 32]
    assert describe(root / "manifest.json")["artifacts"][0]["status"] == "ok"
    json.dumps(d)

    with open(root / "model.onnx", "ab") as f:
        f.write(b"\x00")  # still parses, but no longer what the manifest recorded
    (art,) = describe(root)["artifacts"]
    assert art["status"] == "MISMATCH"

    (root / "model.onnx").unlink()
    d = describe(root)
    assert d["artifacts"][0]["status"] == "missing" and d["ok"] is False
    assert "inputs" not in d["artifacts"][0]


def test_bundle_with_unreadable_onnx_reports_instead_of_failing(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk junk junk \x00\xff" * 8)
    _bundle(root, junk)
    (art,) = describe(root)["artifacts"]
    assert art["status"] == "ok" and "not a readable ONNX model" in art["error"]


def test_importing_inspect_does_not_import_onnx_or_torch() -> None:
    code = ("import sys, heatdeploy.exporters.inspect, heatdeploy.exporters.onnx; "
            "print(sorted(m for m in ('onnx', 'torch', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
