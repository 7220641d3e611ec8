"""infer_spec / check_spec on a zoo of third-party-shaped models, then export + run with no hand-written code."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from heatdeploy.spec import ExistenceSpec, ModelSpec, SpecError
from heatdeploy.spec_infer import check_spec, infer_spec, write_spec_proposal

HERE = Path(__file__).parent
if str(HERE) not in sys.path:  # the helper is imported by name whatever pytest's import mode
    sys.path.insert(0, str(HERE))
import zoo  # noqa: E402

NAMES = {"nchw": None, "nhwc_landmarks": None, "shared": ["nose", "neck", "l_hand", "r_hand"], "simcc": None,
         "centres": None}
ALL = list(NAMES)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, zoo.ZooModel]:
    root = tmp_path_factory.mktemp("zoo")
    return {"nchw": zoo.build_nchw(root), "nhwc_landmarks": zoo.build_nhwc_landmarks(root),
            "shared": zoo.build_shared(root), "simcc": zoo.build_simcc(root), "centres": zoo.build_centres(root)}


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (90, 70, 3), dtype=np.uint8)


@pytest.mark.parametrize("key", ALL)
def test_infer_spec_recovers_the_model(models: dict[str, zoo.ZooModel], key: str) -> None:
    m = models[key]
    spec, notes = infer_spec(m.path, keypoint_names=NAMES[key])
    assert spec.input.layout == m.input_layout
    assert (spec.input.height, spec.input.width, spec.input.channels) == (zoo.H, zoo.W, 3)
    assert spec.num_keypoints == m.k
    if spec.heatmap is None:
        return
    assert spec.heatmap.name == m.heatmap
    assert spec.heatmap.layout == m.heatmap_layout
    assert spec.heatmap.stride == m.stride
    assert spec.num_keypoints == m.k
    if m.head != "centers":
        assert spec.heatmap.activation == m.heatmap_activation
    if m.existence is None:
        assert spec.existence is None
    else:
        assert spec.existence is not None
        assert (spec.existence.name, spec.existence.per, spec.existence.activation) == (
            m.existence, m.existence_per, m.existence_activation)
    text = "\n".join(notes)
    for name in m.ignored:
        assert f"{name!r}" in text and "ignored by the decoder" in text
    assert "random inputs" in text  # the activation guess says how it was judged
    assert spec.head == m.head


def test_landmark_vector_is_read_with_its_heatmap(models: dict[str, zoo.ZooModel]) -> None:
    spec, notes = infer_spec(models["nhwc_landmarks"].path)
    assert spec.landmarks is not None and spec.landmarks.name == "landmarks"
    assert spec.landmarks.fields == ("x", "y", "z", "visibility", "presence")
    assert any("landmarks 'landmarks'" in n and "refines" in n for n in notes)


def test_simcc_head_is_recognised(models: dict[str, zoo.ZooModel]) -> None:
    m = models["simcc"]
    spec, notes = infer_spec(m.path)
    assert spec.heatmap is None and spec.simcc is not None
    assert (spec.simcc.x_name, spec.simcc.y_name, spec.simcc.split_ratio) == ("simcc_x", "simcc_y", 2.0)
    assert spec.simcc.activation == "logits" and spec.num_keypoints == m.k
    assert spec.existence is not None and spec.existence.name == "vis" and spec.existence.per == "keypoint"
    assert any("split ratio 2" in n for n in notes)


def test_centre_head_is_recognised(models: dict[str, zoo.ZooModel]) -> None:
    m = models["centres"]
    spec, notes = infer_spec(m.path)
    assert spec.centers is not None and spec.multi_instance
    assert (spec.centers.name, spec.centers.offsets, spec.centers.stride) == ("center", "offsets", 4)
    assert spec.heatmap is not None and spec.heatmap.name == "kp_maps" and spec.heatmap.activation == "probabilities"
    assert spec.num_keypoints == m.k and spec.existence is None
    assert any("multi-instance" in n for n in notes)


def test_shared_tensor_selects_keypoint_channels(models: dict[str, zoo.ZooModel]) -> None:
    spec, notes = infer_spec(models["shared"].path, keypoint_names=NAMES["shared"])
    assert spec.heatmap.channels == (0, 1, 2, 3)
    assert spec.keypoints == tuple(NAMES["shared"])
    assert any("heatmap.channels = 0..3" in n and "11 channels" in n for n in notes)


def test_shared_tensor_without_names_uses_the_existence_width(models: dict[str, zoo.ZooModel]) -> None:
    spec, notes = infer_spec(models["shared"].path)
    assert spec.num_keypoints == 4 and spec.heatmap.channels == (0, 1, 2, 3)
    assert spec.keypoints == ("kp0", "kp1", "kp2", "kp3")
    assert any("--names" in n for n in notes)


def test_missing_output_shapes_are_inferred(models: dict[str, zoo.ZooModel], tmp_path: Path) -> None:
    bare = zoo.strip_output_shapes(models["nhwc_landmarks"].path, tmp_path / "bare.onnx")
    spec, _ = infer_spec(bare)
    assert (spec.heatmap.layout, spec.heatmap.stride, spec.num_keypoints) == ("NHWC", 4, 5)


def test_nothing_heatmap_like_names_the_graph(tmp_path: Path) -> None:
    path = zoo.build_no_heatmap(tmp_path)
    with pytest.raises(SpecError, match=r"no heatmap-like output.*graph outputs: logits \[N,3\]") as exc:
        infer_spec(path)
    assert "\n" not in str(exc.value)


def test_too_many_names_is_a_clear_error(models: dict[str, zoo.ZooModel]) -> None:
    with pytest.raises(SpecError, match=r"9 keypoint names given.*heatmaps NCHW 4ch"):
        infer_spec(models["nchw"].path, keypoint_names=[f"k{i}" for i in range(9)])


@pytest.mark.parametrize("key", ALL)
def test_proposal_exports_and_runs(models: dict[str, zoo.ZooModel], key: str, tmp_path: Path) -> None:
    from heatdeploy.api import export_bundle
    from heatdeploy.runtime import Pipeline

    m = models[key]
    spec, _ = infer_spec(m.path, keypoint_names=NAMES[key])
    spec_json = write_spec_proposal(spec, tmp_path / "spec.json")
    assert ModelSpec.load(spec_json) == spec
    notes = check_spec(m.path, spec, _image())
    shape = [1, spec.centers.max_instances, m.k, 2] if spec.multi_instance else [1, m.k, 2]
    assert any(f"keypoints {shape}" in n for n in notes)
    out = export_bundle(str(m.path), tmp_path / "bundle", spec_path=str(spec_json))
    pred = Pipeline.load(out).predict([_image(1)])
    assert pred.keypoints.shape == tuple(shape)
    found = pred.present.any(axis=-1) if spec.multi_instance else np.ones(1, bool)
    assert np.isfinite(pred.keypoints[found]).all()


@pytest.mark.parametrize("key", ["nhwc_landmarks", "simcc", "centres"])
def test_int8_and_parity_run_on_an_inferred_spec(models: dict[str, zoo.ZooModel], key: str, tmp_path: Path) -> None:
    from heatdeploy.api import add_int8, export_bundle
    from heatdeploy.parity import parity_command

    m = models[key]
    spec, _ = infer_spec(m.path)
    spec_json = write_spec_proposal(spec, tmp_path / "spec.json")
    out = export_bundle(str(m.path), tmp_path / "bundle", spec_path=str(spec_json))
    add_int8(out, "synthetic:8", keep_fp32="base")
    result, code = parity_command(out, "onnx-int8", data="synthetic:4", write_manifest=False)
    assert code in (0, 1)  # random weights: only that it runs end to end, not that it passes
    assert result is not None
    km = result.keypoints
    assert km.keypoints_compared > 0 and np.isfinite(km.mean_displacement_hm)
    assert 0.0 <= km.existence_agreement <= 1.0
    floor = result.floor  # FP32 against itself dithered, in every head family
    assert floor is not None and floor.decisions > 0 and floor.mean_displacement_hm >= 0
    assert (floor.stable_keypoints is None) == spec.multi_instance  # multi-instance: the floor alone


def test_wrong_output_name_lists_the_graph(models: dict[str, zoo.ZooModel]) -> None:
    m = models["nhwc_landmarks"]
    spec, _ = infer_spec(m.path)
    bad = ModelSpec(keypoints=spec.keypoints, input=spec.input, heatmap=spec.heatmap,
                    existence=ExistenceSpec(name="visibility", per="instance"))
    with pytest.raises(SpecError, match=r"'visibility'.*hm \[N,16,12,5\].*landmarks \[N,25\].*presence \[N,1\]"):
        check_spec(m.path, bad)


def test_k_mismatch_lists_the_graph(models: dict[str, zoo.ZooModel]) -> None:
    m = models["nchw"]
    spec, _ = infer_spec(m.path)
    bad = ModelSpec(keypoints=("a", "b", "c"), input=spec.input, heatmap=spec.heatmap, existence=None)
    with pytest.raises(SpecError, match=r"4 channels.*3 keypoints.*heatmaps \[N,4,16,12\]"):
        check_spec(m.path, bad, _image())


def test_a_real_tflite_pose_model_is_read_and_recognised(blazepose_tflite: Path) -> None:
    """MediaPipe's BlazePose: NHWC heatmap logits, a flat 39x5 landmark vector, a pose-flag probability and a
    1-channel segmentation map that must not be taken for the keypoint heatmap."""
    pytest.importorskip("tflite2onnx", reason="the 'tflite' extra reads .tflite for spec infer")
    from heatdeploy.models.blazepose import HEATMAP, LANDMARKS, PRESENCE

    spec, notes = infer_spec(blazepose_tflite)
    assert (spec.input.layout, spec.input.height, spec.input.width) == ("NHWC", 256, 256)
    assert spec.heatmap is not None and (spec.heatmap.name, spec.heatmap.layout, spec.heatmap.stride) == (
        HEATMAP, "NHWC", 4)
    assert spec.num_keypoints == 39 and spec.heatmap.activation == "logits"
    assert spec.landmarks is not None and spec.landmarks.name == LANDMARKS and len(spec.landmarks.fields) == 5
    assert spec.existence is not None and (spec.existence.name, spec.existence.per) == (PRESENCE, "instance")
    assert spec.name == "pose_landmark_full" and "tflite2onnx" in notes[0]


def test_activations_can_be_judged_on_real_images(models: dict[str, zoo.ZooModel], tmp_path: Path) -> None:
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), _image(i))
    spec, notes = infer_spec(models["simcc"].path, data=tmp_path, data_size=2)
    assert spec.simcc is not None and spec.simcc.activation == "logits"
    assert any(f"2 images from {tmp_path}" in n for n in notes) and not any("random inputs" in n for n in notes)
    with pytest.raises(SpecError, match="--data"):
        infer_spec(models["simcc"].path, data=tmp_path / "empty-nonexistent")
