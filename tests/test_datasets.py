"""heatdeploy.datasets: what the user passed -> images + optional truth, and the errors that stop a wrong run."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from heatdeploy.datasets import REFERENCE_SPEC_NAME, DataError, load_dataset
from heatdeploy.evaluate import eval_dataset
from heatdeploy.models.evalset import EVAL_DIR, read_labelled_set
from heatdeploy.models.skeleton import KEYPOINTS
from heatdeploy.spec import ModelSpec


@pytest.fixture
def reference() -> ModelSpec:
    return ModelSpec(keypoints=KEYPOINTS, name=REFERENCE_SPEC_NAME)


def test_the_name_is_the_shipped_reference_models():
    pytest.importorskip("torch")
    from heatdeploy.models.reference import reference_spec

    assert reference_spec().name == REFERENCE_SPEC_NAME


def test_no_data_is_the_shipped_split_for_the_reference_only(reference):
    ds = load_dataset(reference, limit=5)
    assert ds.kind == "labelled" and len(ds) == 5 and ds.truth is not None
    assert ds.truth.keypoints.shape == (5, 17, 2) and ds.load(0, 2)[0].dtype == np.uint8
    mine = replace(reference, name="my-pose")
    with pytest.raises(DataError, match=r"'my-pose' is not the shipped reference.*as --data$") as info:
        load_dataset(mine)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="not the shipped reference"):  # eval's path too, given the read split
        eval_dataset(mine, read_labelled_set(EVAL_DIR))
    assert eval_dataset(mine, str(EVAL_DIR)).truth is not None  # named explicitly, it is the user's choice


def test_truth_with_another_keypoint_count_is_an_error_not_a_broadcast(reference):
    five = replace(reference, name="five", keypoints=KEYPOINTS[:5], skeleton=())
    with pytest.raises(DataError, match=r"labels.json: the ground truth has 17 keypoints, the model 5"):
        load_dataset(five, EVAL_DIR)
    pytest.importorskip("skimage")
    ds = load_dataset(five, "synthetic:2")  # images the user asked for; their truth does not fit
    assert ds.truth is None and "truth metrics omitted" in ds.note and len(ds.load(0, 2)) == 2
    with pytest.raises(DataError, match="no ground truth"):
        load_dataset(five, "synthetic:2", require_truth=True)


def test_folder_video_and_arrays(reference, tmp_path):
    frames = [np.full((40, 30, 3), 20 * i, np.uint8) for i in range(12)]
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "imgs" / "b.png"), frames[0])
    cv2.imwrite(str(tmp_path / "imgs" / "sub" / "a.PNG"), frames[1])
    ds = load_dataset(reference, tmp_path / "imgs")
    assert ds.kind == "folder" and ds.names == ["b.png", "sub/a.PNG"] and ds.truth is None

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (30, 40))
    for f in frames:
        writer.write(f)
    writer.release()
    ds = load_dataset(reference, video, every_n=5)
    assert ds.kind == "video" and ds.frames == [0, 5, 10]
    got = ds.load(1, 3)
    assert [g.shape for g in got] == [(40, 30, 3)] * 2 and abs(float(got[0].mean()) - 100) < 8

    np.save(tmp_path / "imgs.npy", np.stack(frames))
    ds = load_dataset(reference, tmp_path / "imgs.npy", limit=4)
    assert ds.kind == "array" and len(ds) == 4 and np.array_equal(ds.load(3, 4)[0], frames[3])
    np.save(tmp_path / "tensors.npy", np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(DataError, match="is not images; save BGR uint8 images"):
        load_dataset(reference, tmp_path / "tensors.npy")


@pytest.mark.parametrize("data, message", [
    ("synthetic:0", "synthetic:N"), ("nowhere/x", "not found"), ("notes.txt", "unknown data"),
])
def test_bad_data_is_one_line(reference, tmp_path, monkeypatch, data, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=message) as info:
        load_dataset(reference, data)
    assert "\n" not in str(info.value)
