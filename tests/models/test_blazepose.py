"""BlazePose (MediaPipe pose_landmark_full.tflite): fetching it, its spec, and the real frames built for it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from heatdeploy.fsutil import sha256_file
from heatdeploy.models import blazepose
from heatdeploy.models.blazepose import (
    SHA256,
    BlazePoseError,
    blazepose_images,
    blazepose_spec,
    blazepose_spec_dict,
    fetch_blazepose,
)


def test_fetch_gives_the_pinned_file(blazepose_tflite: Path) -> None:
    assert blazepose_tflite.name == "pose_landmark_full.tflite"
    assert sha256_file(blazepose_tflite) == SHA256
    assert blazepose_tflite.read_bytes()[4:8] == b"TFL3"
    assert not [p for p in blazepose_tflite.parent.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.usefixtures("no_fetch_client")
def test_cached_file_is_reused_without_pip(blazepose_tflite: Path) -> None:
    assert fetch_blazepose(blazepose_tflite.parent) == blazepose_tflite


def test_pip_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pose_landmark_full.tflite").write_bytes(b"corrupt")  # a wrong cached file is not used

    def failing_pip(cmd: list[str], **k: object) -> subprocess.CompletedProcess:
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--only-binary=:all:" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: retrying\nERROR: No matching distribution found "
                                           "for mediapipe==0.10.14\n")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(BlazePoseError) as exc:
        fetch_blazepose(tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and "mediapipe==0.10.14" in msg and "No matching distribution" in msg
    assert str(tmp_path) in msg  # the fix: where to put the file by hand


def test_default_cache_dir_follows_the_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEATDEPLOY_CACHE", str(tmp_path))
    assert blazepose.default_cache_dir() == tmp_path / "models"


def test_spec_with_and_without_landmarks() -> None:
    plain = blazepose_spec(landmarks=False)
    assert plain.num_keypoints == 39 and plain.keypoints[:2] == ("nose", "left_eye_inner")
    assert plain.input.layout == "NHWC" and (plain.input.height, plain.input.width) == (256, 256)
    assert plain.heatmap.name == "Identity_3" and plain.heatmap.activation == "logits"
    assert plain.existence.name == "Identity_1" and plain.existence.activation == "probabilities"
    assert "landmarks" not in blazepose_spec_dict(landmarks=False)
    if blazepose.landmarks_supported():
        spec = blazepose_spec()
        assert spec.landmarks.name == "Identity" and spec.landmarks.coords == "pixels"
    else:
        assert "landmarks" not in blazepose_spec_dict()


def test_images_are_seeded_and_mixed() -> None:
    frames, person = blazepose_images(10, seed=3)
    again, person2 = blazepose_images(10, seed=3)
    assert len(frames) == 10 and person.sum() == 8 and np.array_equal(person, person2)
    assert all(f.shape == (256, 256, 3) and f.dtype == np.uint8 for f in frames)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))
    other, _ = blazepose_images(10, seed=4)
    assert not np.array_equal(frames[0], other[0])


@pytest.mark.openvino
def test_presence_flag_separates_the_frames(blazepose_tflite: Path) -> None:
    """The model sees the person in (nearly) every person frame and in none of the others."""
    ov = pytest.importorskip("openvino")
    cm = ov.Core().compile_model(ov.convert_model(str(blazepose_tflite)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    frames, person = blazepose_images(40, seed=0)
    flag = np.array([cm(f[None, ..., ::-1].astype(np.float32) / 255)[1].ravel()[0] for f in frames])
    assert (flag[person] > 0.5).mean() >= 0.85, flag[person]
    assert (flag[~person] < 0.5).all(), flag[~person]
