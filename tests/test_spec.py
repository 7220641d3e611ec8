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
