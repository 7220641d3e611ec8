"""Calibration sources: what is read, what is skipped, what is refused, and that it streams."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from calib_helpers import H, W, write_images

from heatdeploy.calibration import sources as src_mod
from heatdeploy.calibration.sources import (
    ArraySource,
    CalibrationError,
    ImageFolderSource,
    SyntheticSource,
    VideoSource,
    open_source,
)
from heatdeploy.runtime.preprocess import Preprocessor, load_image
from heatdeploy.spec import ModelSpec


def _all(source: src_mod.CalibrationSource, batch: int = 4) -> np.ndarray:
    return np.concatenate(list(source.batches(batch)))


def test_folder_is_recursive_and_case_insensitive(tmp_path: Path, spec: ModelSpec) -> None:
    write_images(tmp_path / "a", 2, seed=1, ext=".png")
    write_images(tmp_path / "a" / "deeper", 2, seed=2, ext=".JPG")
    write_images(tmp_path / "b", 1, seed=3, ext=".bmp")
    write_images(tmp_path / "c", 1, seed=4, ext=".WebP")
    (tmp_path / "notes.txt").write_text("not an image")
    source = ImageFolderSource(spec, tmp_path)
    assert source.count == 6
    x = _all(source)
    assert x.shape == (6, 3, H, W) and x.dtype == np.float32
    rec = source.record()
    assert rec["kind"] == "folder" and rec["count"] == 6 and rec["skipped"] == 0 and len(rec["sha256"]) == 64


def test_unreadable_files_are_skipped_with_a_count(tmp_path: Path, spec: ModelSpec,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    write_images(tmp_path, 3)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    source = ImageFolderSource(spec, tmp_path)
    with caplog.at_level(logging.WARNING, logger="heatdeploy.calibration.sources"):
        x = _all(source, batch=2)
    assert len(x) == 3
    rec = source.record()
    assert rec["skipped"] == 2 and rec["count"] == 3 and rec["planned"] == 5
    assert any("broken.jpg" in s for s in rec["skipped_files"])
    assert "skipped 2 of 5 files" in caplog.text


def test_empty_folder_is_an_error(tmp_path: Path, spec: ModelSpec) -> None:
    with pytest.raises(CalibrationError, match=r"no images found \(looked for .*\); pass a folder of JPEG"):
        ImageFolderSource(spec, tmp_path)


def test_folder_without_images_is_an_error(tmp_path: Path, spec: ModelSpec) -> None:
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.csv").write_text("1,2")
    with pytest.raises(CalibrationError, match="no images found"):
        open_source(spec, str(tmp_path))


def test_folder_where_every_file_is_unreadable_is_an_error(tmp_path: Path, spec: ModelSpec) -> None:
    for i in range(3):
        (tmp_path / f"x{i}.jpg").write_bytes(b"garbage")
    source = ImageFolderSource(spec, tmp_path)
    with pytest.raises(CalibrationError, match="none of the 3 image files could be read"):
        _all(source)


def test_grey_rgba_and_16_bit_images_are_handled(tmp_path: Path, spec: ModelSpec) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(50, 40, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), cv2.cvtColor(base, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([base, np.full((50, 40), 128, np.uint8)]))
    cv2.imwrite(str(tmp_path / "deep.png"), base.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "plain.png"), base)
    source = ImageFolderSource(spec, tmp_path)
    x = _all(source)
    assert x.shape == (4, 3, H, W) and np.isfinite(x).all() and source.record()["skipped"] == 0
    order = source.files
    np.testing.assert_allclose(x[order.index("deep.png")], x[order.index("plain.png")], atol=1e-6)
    np.testing.assert_allclose(x[order.index("rgba.png")], x[order.index("plain.png")], atol=1e-6)


def test_preprocessing_is_the_runtime_one(image_dir: Path, spec: ModelSpec) -> None:
    source = ImageFolderSource(spec, image_dir, size=3, seed=0)
    images = [load_image(image_dir / f) for f in source.files]
    np.testing.assert_array_equal(_all(source), Preprocessor(spec.input)(images).tensor)


def test_batches_stream_one_batch_at_a_time(image_dir: Path, spec: ModelSpec,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(src_mod, "load_image", lambda p: calls.append(p) or load_image(p))
    gen = ImageFolderSource(spec, image_dir).batches(4)
    assert isinstance(gen, types.GeneratorType)
    first = next(gen)
    assert len(first) == 4 and len(calls) == 4  # nothing beyond the first batch has been read
    gen.close()


def test_seeded_subset_is_deterministic(image_dir: Path, spec: ModelSpec) -> None:
    a = ImageFolderSource(spec, image_dir, size=5, seed=7)
    b = ImageFolderSource(spec, image_dir, size=5, seed=7)
    c = ImageFolderSource(spec, image_dir, size=5, seed=8)
    assert a.files == b.files and a.record()["sha256"] == b.record()["sha256"]
    assert a.files != c.files and a.record()["sha256"] != c.record()["sha256"]
    np.testing.assert_array_equal(_all(a), _all(b))
    assert ImageFolderSource(spec, image_dir, size=1000).count == 24
    with pytest.raises(CalibrationError, match="positive"):
        ImageFolderSource(spec, image_dir, size=0)


def test_npy_is_shape_checked(tmp_path: Path, spec: ModelSpec) -> None:
    good = np.random.default_rng(0).standard_normal((10, 3, H, W)).astype(np.float32)
    np.save(tmp_path / "good.npy", good)
    source = open_source(spec, str(tmp_path / "good.npy"), size=4, seed=1)
    assert isinstance(source, ArraySource) and source.count == 4
    x = _all(source, batch=3)
    np.testing.assert_array_equal(x, good[source.indices])
    np.save(tmp_path / "nhwc.npy", good.transpose(0, 2, 3, 1))
    with pytest.raises(CalibrationError, match=r"does not match the model input \[N,3,64,48\]"):
        ArraySource(spec, tmp_path / "nhwc.npy")
    np.save(tmp_path / "ints.npy", (good * 10).astype(np.int16))
    with pytest.raises(CalibrationError, match="not preprocessed float data"):
        ArraySource(spec, tmp_path / "ints.npy")


def test_npz_and_pickles(tmp_path: Path, spec: ModelSpec) -> None:
    x = np.zeros((2, 3, H, W), np.float32)
    np.savez(tmp_path / "two.npz", image=x, other=np.ones(3))
    assert ArraySource(spec, tmp_path / "two.npz").key == "image"
    np.savez(tmp_path / "ambiguous.npz", a=x, b=x)
    with pytest.raises(CalibrationError, match="none is named 'image'"):
        ArraySource(spec, tmp_path / "ambiguous.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CalibrationError, match="cannot read as a numpy array"):
        ArraySource(spec, tmp_path / "obj.npy")


def test_video_every_nth_frame(tmp_path: Path, spec: ModelSpec) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 64))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for i in range(25):
        writer.write(np.full((64, 48, 3), i * 10, np.uint8))
    writer.release()
    source = open_source(spec, str(path), every_n=5)
    assert isinstance(source, VideoSource) and source.indices == [0, 5, 10, 15, 20]
    x = _all(source)
    assert x.shape == (5, 3, H, W)
    assert x[1].mean() < x[4].mean()  # frames came in order, brighter later
    assert source.record()["every_n"] == 5


def test_synthetic_is_seeded(spec: ModelSpec) -> None:
    a, b = open_source(spec, "synthetic:6", seed=3), SyntheticSource(spec, 6, seed=3)
    assert a.count == 6 and a.record()["sha256"] == b.record()["sha256"]
    np.testing.assert_array_equal(_all(a, 4), _all(b, 4))
    assert open_source(spec, "synthetic:6", size=2).count == 2
    # a subset size caps the named set, never grows it (OpenVINO's default subset of 300 once made
    # 'synthetic:128' calibrate on 300 images, unlike ORT on the same bundle)
    assert open_source(spec, "synthetic:6", size=300).count == 6
    assert open_source(spec, "synthetic", size=5).count == 5
    with pytest.raises(CalibrationError, match="synthetic:N"):
        open_source(spec, "synthetic:lots")


def test_open_source_refuses_what_it_cannot_use(tmp_path: Path, spec: ModelSpec) -> None:
    with pytest.raises(CalibrationError, match="not found"):
        open_source(spec, str(tmp_path / "missing"))
    one = write_images(tmp_path, 1)[0]
    with pytest.raises(CalibrationError, match="one image is too little"):
        open_source(spec, str(one))
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(CalibrationError, match="unknown calibration data"):
        open_source(spec, str(tmp_path / "model.onnx"))


def test_a_size_above_what_there_is_keys_like_no_size(image_dir: Path, spec: ModelSpec) -> None:
    """The cache key names the data: asking for 300 of 24 images takes the same 24 as asking for all."""
    everything = ImageFolderSource(spec, image_dir).fingerprint()
    assert ImageFolderSource(spec, image_dir, size=300).fingerprint() == everything
    subset = ImageFolderSource(spec, image_dir, size=10).fingerprint()
    assert subset != everything and subset["size"] == 10
