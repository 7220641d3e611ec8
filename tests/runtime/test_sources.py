"""Frame sources: what is read (regular image files only), what is skipped, limits, names, streams."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from heatdeploy.errors import HeatdeployError
from heatdeploy.runtime import sources as src
from heatdeploy.runtime.preprocess import ImageError
from heatdeploy.runtime.sources import (
    ImageSource,
    SkippedInputWarning,
    SourceError,
    VideoSource,
    classify,
    decode_image,
    expand_images,
    load_image,
    open_source,
    read_file_bytes,
    unique_names,
)


def _img(path: Path, h: int = 20, w: int = 30, value: int = 90) -> Path:
    ok, buf = cv2.imencode(path.suffix, np.full((h, w, 3), value, np.uint8))
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return path


def write_video(path: Path, n: int, w: int = 64, h: int = 48, fps: float = 25.0) -> Path:
    """A small MJPG .avi whose frame i has mean brightness that follows i (to check order)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((h, w, 3), (i * 7) % 250, np.uint8))
    writer.release()
    return path


def _png_header(w: int, h: int) -> bytes:
    """A PNG that claims ``w x h`` pixels (8-bit RGB) with a valid IHDR and one tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


# --- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".webp"])
def test_header_size_matches_the_decoded_image(tmp_path, suffix):
    path = _img(tmp_path / f"a{suffix}", h=37, w=53)
    assert src._header_size(path.read_bytes()) == (53, 37)
    assert load_image(path).shape == (37, 53, 3)


def test_huge_png_is_refused_from_its_header_not_by_opencv(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(50000, 50000))
    with pytest.raises(ImageError, match=r"huge.png: 50000x50000 pixels is above the limit") as info:
        load_image(path)
    assert "\n" not in str(info.value) and isinstance(info.value, HeatdeployError)
    with pytest.raises(ImageError, match="above the limit"):
        ImageSource([path])  # the up-front check refuses it before any frame is read


def test_opencv_decode_error_becomes_an_image_error(monkeypatch):
    def boom(*_a):
        raise cv2.error("imdecode: out of memory")

    monkeypatch.setattr(src.cv2, "imdecode", boom)
    with pytest.raises(ImageError, match="x.png: not a readable image \\(OpenCV"):
        decode_image(b"junk-bytes", "x.png")


def test_byte_limit(tmp_path):
    path = _img(tmp_path / "a.png")
    with pytest.raises(ImageError, match="bytes is above the limit of 10 bytes"):
        read_file_bytes(path, limit=10)


def test_a_fifo_is_never_opened_for_blocking_reads(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file: a FIFO"):
        read_file_bytes(fifo)  # O_NONBLOCK + fstat: returns at once, no writer needed


# --- finding images ------------------------------------------------------------------------------


def test_folder_skips_fifo_and_directories_named_like_images(tmp_path):
    good = _img(tmp_path / "d" / "good.jpg")
    os.mkfifo(tmp_path / "d" / "pipe.jpg")
    (tmp_path / "d" / "folder.png").mkdir()
    with pytest.warns(SkippedInputWarning) as rec:
        files = expand_images([tmp_path / "d"])
    assert files == [good]
    text = " ".join(str(w.message) for w in rec)
    assert "pipe.jpg: skipped (a FIFO)" in text and "folder.png: skipped (a directory)" in text


def test_empty_folder_and_missing_path_messages(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"no images found in .*empty \(looked for .jpg, .jpeg, .png"):
        open_source([str(tmp_path / "empty")])
    with pytest.raises(SourceError, match=r"nope.jpg: no such file or folder"):
        open_source([str(tmp_path / "nope.jpg")])


def test_duplicate_stems_get_unique_names(tmp_path):
    a = _img(tmp_path / "a" / "x.jpg")
    b = _img(tmp_path / "b" / "x.jpg")
    c = _img(tmp_path / "b" / "x.png")
    assert unique_names([a, b, a, c]) == ["x", "x-2", "x-3", "x-4"]
    source = open_source([str(a), str(tmp_path / "b"), str(a)])
    names = [f.name for f in source]
    assert len(set(names)) == len(names) == 4


def test_unreadable_image_fails_before_any_frame(tmp_path):
    _img(tmp_path / "d" / "a.jpg")
    (tmp_path / "d" / "notes.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="notes.jpg: not a readable image"):
        open_source([str(tmp_path / "d")])


# --- streams -------------------------------------------------------------------------------------


def test_video_file_frames_are_lazy_ordered_and_timestamped(tmp_path):
    path = write_video(tmp_path / "clip.avi", 12)
    source = open_source([str(path)])
    assert isinstance(source, VideoSource) and source.total == 12 and source.fps == pytest.approx(25.0)
    frames = list(source)
    assert [f.index for f in frames] == list(range(12))
    assert frames[3].name == "clip_000003" and frames[3].timestamp == pytest.approx(3 / 25.0, abs=1e-3)
    means = [f.image.mean() for f in frames]
    assert np.all(np.diff(means) > 0)  # decoded in order
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8


@pytest.mark.parametrize(("arg", "kind"), [
    ("rtsp://user:pw@10.0.0.2:554/stream1", "url"),
    ("http://cam.local/video.mjpg", "url"),
    ("0", "camera"),
    ("nvarguscamerasrc ! video/x-raw(memory:NVMM) ! nvvidconv ! videoconvert ! appsink", "gstreamer"),
])
def test_stream_arguments_are_classified_as_strings(arg, kind):
    assert classify(arg) == kind


def test_url_is_passed_to_opencv_unmangled(monkeypatch):
    seen = []

    class FakeCapture:  # records what VideoCapture was asked to open; opening a real URL needs a server
        def __init__(self, target, api):
            seen.append((target, api))

        def isOpened(self):  # noqa: N802 - OpenCV's name
            return False

        def release(self):
            pass

    monkeypatch.setattr(src.cv2, "VideoCapture", FakeCapture)
    url = "rtsp://10.0.0.2:554/live/ch0"
    with pytest.raises(SourceError, match="rtsp://10.0.0.2:554/live/ch0: cannot be opened"):
        open_source([url])
    assert seen == [(url, cv2.CAP_FFMPEG)]
    monkeypatch.setattr(src, "has_gstreamer", lambda: False)
    with pytest.raises(SourceError, match="GStreamer pipeline: cannot be opened .* built without GStreamer"):
        open_source(["videotestsrc ! appsink"])
    assert seen[-1] == ("videotestsrc ! appsink", cv2.CAP_GSTREAMER)
    monkeypatch.setattr(src, "has_gstreamer", lambda: True)
    with pytest.raises(SourceError, match="check the pipeline with gst-launch-1.0"):
        open_source(["videotestsrc ! appsink"])


def test_images_then_video_chain_with_one_index(tmp_path):
    img = _img(tmp_path / "clip_000000.jpg")
    video = write_video(tmp_path / "clip.avi", 3)
    frames = list(open_source([str(img), str(video)]))
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert len({f.name for f in frames}) == 4  # the image's stem collides with the first frame's name


def test_unreadable_file_is_an_image_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    path = _img(tmp_path / "a.png")
    path.chmod(0)
    with pytest.raises(ImageError, match="a.png: not a readable image \\(Permission denied\\)"):
        ImageSource([path])


def test_header_check_refuses_a_file_replaced_by_a_fifo(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)  # listed as a regular file a moment ago, a FIFO now: still no blocking read
    with pytest.raises(ImageError, match="x.png: not a readable image \\(not a regular file: a FIFO\\)"):
        src.check_image_header(fifo)
