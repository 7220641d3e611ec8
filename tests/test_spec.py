import json

import pytest

from heatdeploy.models.reference import reference_spec
from heatdeploy.spec import ExistenceSpec, ModelSpec, SpecError


def test_round_trip_json():
    spec = reference_spec()
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert again.heatmap_size == (64, 48)
    assert again.output_names == ("heatmaps", "existence")


def test_round_trip_without_existence(tmp_path):
    spec = ModelSpec(keypoints=("a", "b"), existence=None)
    spec.save(tmp_path / "s.json")
    assert ModelSpec.load(tmp_path / "s.json") == spec


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"input": {"layout": "NCWH"}}, "input.layout"),
        ({"heatmap": {"stride": 0}}, "heatmap.stride"),
        ({"decoder": {"name": "magic"}}, "decoder.name"),
        ({"existence": {"per": "image"}}, "existence.per"),
        ({"keypoints": []}, "keypoints"),
        ({"skeleton": [[0, 99]]}, "skeleton[0]"),
        ({"colour": "RGB"}, "unknown field"),
        ({"input": {"heigth": 3}}, "input: unknown field"),
        ({"schema_version": 99}, "schema_version"),
    ],
)
def test_bad_specs_name_the_field(patch, fragment):
    data = reference_spec().to_dict()
    for k, v in patch.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    with pytest.raises(SpecError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        ModelSpec.from_dict(data, "my.json")


def test_invalid_json_names_file():
    with pytest.raises(SpecError, match="my.json: not valid JSON"):
        ModelSpec.from_json("{", "my.json")


def test_existence_must_be_separate_tensor():
    with pytest.raises(SpecError, match="separate tensors"):
        ModelSpec(keypoints=("a",), existence=ExistenceSpec(name="heatmaps")).validate()


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(SpecError, match="cannot read spec file"):
        ModelSpec.load(tmp_path / "nope.json")


def test_json_has_schema_version():
    assert json.loads(reference_spec().to_json())["schema_version"] == 1


# --- bounds: every reader of a spec goes through ModelSpec.from_dict -> validate -> check_bounds ------------
def _nan_scale_text() -> str:
    d = reference_spec().to_dict()
    d["input"]["scale"] = float("nan")
    return json.dumps(d)  # NaN literal, as a hand-edited or foreign file may carry


def test_spec_in_onnx_metadata_and_openvino_rt_info_is_bounded(tmp_path):
    onnx = pytest.importorskip("onnx")
    from heatdeploy.runtime.backends.onnxruntime import read_spec as ort_read_spec
    from heatdeploy.spec import METADATA_KEY
    from tests.tiny_onnx import build_tiny_onnx

    path = build_tiny_onnx(tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, _nan_scale_text()
    onnx.save(proto, str(path))
    with pytest.raises(SpecError, match=r"metadata.*input\.scale: expected a number in"):
        ort_read_spec(path)
    ov = pytest.importorskip("openvino")
    from heatdeploy.runtime.backends.openvino import spec_from_model

    model = ov.Core().read_model(str(path))
    model.set_rt_info(_nan_scale_text(), ["heatdeploy", "spec"])
    with pytest.raises(SpecError, match=r"rt_info.*input\.scale"):
        spec_from_model(model, "m.xml")


def test_spec_file_that_is_a_fifo_or_binary_is_refused(tmp_path):
    import os

    fifo = tmp_path / "spec.json"
    os.mkfifo(fifo)
    with pytest.raises(SpecError, match="not a regular file"):
        ModelSpec.load(fifo)  # never opened: a FIFO would block forever
    binary = tmp_path / "b.json"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(SpecError, match="not a text file"):
        ModelSpec.load(binary)


def test_stride_larger_than_input_is_refused():
    d = reference_spec().to_dict()
    d["input"].update(height=16, width=16)
    d["heatmap"]["stride"] = 32
    with pytest.raises(SpecError, match="empty map"):
        ModelSpec.from_dict(d, "s.json")


def test_keypoints_must_be_a_list_of_names():
    d = reference_spec().to_dict()
    d["keypoints"] = "abc"  # would be three keypoints 'a', 'b', 'c'
    with pytest.raises(SpecError, match="keypoints: expected a list of names"):
        ModelSpec.from_dict(d, "s.json")
