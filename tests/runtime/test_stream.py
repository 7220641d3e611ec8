"""``heatdeploy run SOURCE`` streaming: video through the CLI, JSON Lines, bounded memory, stop and flush,
the One Euro filter, boxes, Prediction.plot/save.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from heatdeploy.errors import HeatdeployError
from heatdeploy.runtime.boxes import BoxError, BoxFile, full_frame_box
from heatdeploy.runtime.sinks import JsonlSink, VideoSink
from heatdeploy.runtime.smoothing import OneEuroFilter
from heatdeploy.runtime.sources import Frame, open_source
from heatdeploy.runtime.stream import StreamConfig, StreamError, run_stream

_TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_TESTS))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_sources import write_video  # noqa: E402

ROOT = _TESTS.parent
PY = sys.executable


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny heatmap + existence model (64x48 input) as an .onnx carrying its spec (what
    ``heatdeploy run`` accepts besides a bundle): fast enough for 2,000 frames.
    """
    onnx = pytest.importorskip("onnx", reason="building the tiny test model needs onnx (heatdeploy[export])")
    from tiny_onnx import build_tiny_onnx, tiny_spec

    from heatdeploy.spec import METADATA_KEY

    path = build_tiny_onnx(tmp_path_factory.mktemp("tiny") / "tiny.onnx")
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {METADATA_KEY: tiny_spec().to_json()})
    onnx.save(model, str(path))
    return path


def _cli(*args: object):
    from heatdeploy.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def _frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


# --- the run command -----------------------------------------------------------------------------


def test_run_streams_a_video_to_jsonl_and_annotated_video(tiny_bundle, tmp_path):
    clip = write_video(tmp_path / "clip.avi", 40)
    out = tmp_path / "out"
    res = _cli("run", tiny_bundle, clip, "--out", out, "--video", out / "annotated.avi")
    assert res.exit_code == 0, res.output
    recs = _lines(out / "predictions.jsonl")
    assert [r["frame"] for r in recs] == list(range(40))
    assert np.all(np.diff([r["timestamp"] for r in recs]) > 0)
    assert recs[5]["name"] == "clip_000005" and recs[5]["source"] == str(clip)
    assert (recs[0]["height"], recs[0]["width"]) == (48, 64)
    kp = recs[0]["keypoints"]
    assert [k["name"] for k in kp] == ["a", "b", "c"]
    assert all(0.0 <= k["presence"] <= 1.0 and isinstance(k["present"], bool) for k in kp)
    assert _frame_count(out / "annotated.avi") == 40
    assert not list(out.glob(".*partial*"))  # the video appears under its name only when complete


def test_jsonl_equals_the_pipeline_on_the_same_frames(tiny_bundle, tmp_path):
    from heatdeploy.runtime import Pipeline

    clip = write_video(tmp_path / "clip.avi", 9)
    res = _cli("run", tiny_bundle, clip, "--jsonl", tmp_path / "p.jsonl", "--batch", "4")
    assert res.exit_code == 0, res.output
    frames = [f.image for f in open_source([str(clip)])]
    pred = Pipeline.load(tiny_bundle).predict(frames)
    got = np.array([[[k["x"], k["y"]] for k in r["keypoints"]] for r in _lines(tmp_path / "p.jsonl")])
    np.testing.assert_allclose(got, pred.keypoints, atol=0.006)  # records round to 0.01 px


def test_max_frames_stops_and_flushes(tiny_bundle, tmp_path):
    clip = write_video(tmp_path / "clip.avi", 30)
    out = tmp_path / "out"
    res = _cli("run", tiny_bundle, clip, "--out", out, "--max-frames", "7", "--video", out / "v.avi")
    assert res.exit_code == 0, res.output
    assert len(_lines(out / "predictions.jsonl")) == 7
    assert _frame_count(out / "v.avi") == 7


def test_image_folder_keeps_predictions_json_and_unique_overlays(tiny_bundle, tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        cv2.imwrite(str(tmp_path / d / "x.png"), np.full((40, 30, 3), 100, np.uint8))
    os.mkfifo(tmp_path / "a" / "pipe.jpg")
    out = tmp_path / "out"
    res = _cli("run", tiny_bundle, tmp_path / "a", tmp_path / "b", "--out", out, "--labels", "names")
    assert res.exit_code == 0, res.output
    assert "pipe.jpg: skipped (a FIFO)" in res.output
    records = json.loads((out / "predictions.json").read_text())
    assert [Path(r["image"]).parent.name for r in records] == ["a", "b"]
    assert sorted(p.name for p in (out / "overlays").glob("*.png")) == ["x-2.png", "x.png"]


def test_fifo_argument_does_not_hang(tiny_bundle, tmp_path):
    fifo = tmp_path / "cam.jpg"
    os.mkfifo(fifo)
    img = tmp_path / "ok.png"
    cv2.imwrite(str(img), np.zeros((40, 30, 3), np.uint8))
    proc = subprocess.run([PY, "-m", "heatdeploy.cli", "run", str(tiny_bundle), str(fifo), str(img), "--json"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "cam.jpg: skipped (a FIFO)" in proc.stderr
    assert len(json.loads(proc.stdout)) == 1
    proc = subprocess.run([PY, "-m", "heatdeploy.cli", "run", str(tiny_bundle), str(fifo)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "cam.jpg: skipped (a FIFO)" in proc.stderr and "every input was skipped" in proc.stderr


def test_bad_labels_and_empty_folder_are_one_line_errors(tiny_bundle, tmp_path):
    res = _cli("run", tmp_path / "nope.onnx", tmp_path)
    assert res.exit_code != 0 and "nope.onnx: no such file or folder" in res.output
    (tmp_path / "empty").mkdir()
    res = _cli("run", tiny_bundle, tmp_path / "empty")
    assert res.exit_code != 0 and "no images found in" in res.output and "Traceback" not in res.output
    res = _cli("run", tiny_bundle, tmp_path / "empty", "--labels", "all")
    assert res.exit_code != 0 and "--labels all" in res.output


# --- memory, interruption ------------------------------------------------------------------------

_RSS_SCRIPT = """
import sys
from heatdeploy.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0].split()[1]
    print("VMHWM_KB", hwm, file=sys.stderr)
"""


def _peak_rss_mb(bundle: Path, clip: Path, n: int, out: Path) -> float:
    proc = subprocess.run([PY, "-c", _RSS_SCRIPT, "run", str(bundle), str(clip), "--max-frames", str(n),
                           "--jsonl", str(out / f"{n}.jsonl"), "--video", str(out / f"{n}.avi")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len((out / f"{n}.jsonl").read_text().splitlines()) == n
    return int(proc.stderr.split("VMHWM_KB")[1].split()[0]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc (Linux)")
def test_peak_memory_stays_flat_over_2000_frames(tiny_bundle, tmp_path):
    # 320x240 frames: 2,000 of them held at once would be 460 MB, far outside the 50 MB allowance.
    clip = write_video(tmp_path / "long.avi", 2000, w=320, h=240)
    short = _peak_rss_mb(tiny_bundle, clip, 100, tmp_path)
    long = _peak_rss_mb(tiny_bundle, clip, 2000, tmp_path)
    assert long - short < 50, f"peak RSS {short:.0f} MB over 100 frames, {long:.0f} MB over 2,000"


def test_ctrl_c_stops_cleanly_with_everything_flushed(tiny_bundle, tmp_path):
    clip = write_video(tmp_path / "long.avi", 3000, w=320, h=240)
    jsonl, video = tmp_path / "p.jsonl", tmp_path / "v.avi"
    proc = subprocess.Popen([PY, "-m", "heatdeploy.cli", "run", str(tiny_bundle), str(clip), "--jsonl", str(jsonl),
                             "--video", str(video), "--batch", "1"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not jsonl.exists() or jsonl.read_text().count("\n") < 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "stopped by Ctrl-C" in err and "Traceback" not in err
    recs = _lines(jsonl)  # every line is whole JSON
    assert 20 <= len(recs) < 3000
    assert [r["frame"] for r in recs] == list(range(len(recs)))
    assert _frame_count(video) == len(recs)


def test_an_interrupt_inside_a_stage_still_closes_the_sinks(tiny_bundle, tmp_path):
    from heatdeploy.runtime import Pipeline

    def frames():
        for i in range(10):
            if i == 6:
                raise KeyboardInterrupt
            yield Frame(i, np.full((48, 64, 3), 50, np.uint8), f"f{i}", i / 10)

    class Source:
        kind, fps, total = "video", 10.0, None

        def __iter__(self):
            return frames()

    sink = JsonlSink(tmp_path / "p.jsonl")
    stats = run_stream(Pipeline.load(tiny_bundle), Source(), [sink, VideoSink(tmp_path / "v.avi", 10.0)])
    assert stats.interrupted and stats.frames == 6
    assert len(_lines(tmp_path / "p.jsonl")) == 6 and _frame_count(tmp_path / "v.avi") == 6


def test_a_failing_frame_is_raised_and_earlier_frames_are_kept(tiny_bundle, tmp_path):
    from heatdeploy.runtime import Pipeline
    from heatdeploy.runtime.sources import SourceError

    def frames():
        yield Frame(0, np.zeros((48, 64, 3), np.uint8), "f0", 0.0)
        raise SourceError("cam: lost")

    class Source:
        kind, fps, total = "video", None, None

        def __iter__(self):
            return frames()

    with pytest.raises(SourceError, match="cam: lost"):
        run_stream(Pipeline.load(tiny_bundle), Source(), [JsonlSink(tmp_path / "p.jsonl")])
    assert len(_lines(tmp_path / "p.jsonl")) == 1


# --- One Euro filter -----------------------------------------------------------------------------


def _one_euro_scalar(xs, ts, min_cutoff, beta, d_cutoff):
    """The paper's algorithm, one scalar at a time (the reference the vectorized filter must match)."""
    def alpha(c, dt):
        tau = 1 / (2 * np.pi * c)
        return 1 / (1 + tau / dt)

    out, x_prev, dx_prev = [xs[0]], xs[0], 0.0
    for i in range(1, len(xs)):
        dt = ts[i] - ts[i - 1]
        dx = (xs[i] - x_prev) / dt
        dx_hat = alpha(d_cutoff, dt) * dx + (1 - alpha(d_cutoff, dt)) * dx_prev
        a = alpha(min_cutoff + beta * abs(dx_hat), dt)
        x_hat = a * xs[i] + (1 - a) * x_prev
        out.append(x_hat)
        x_prev, dx_prev = x_hat, dx_hat
    return np.array(out)


def test_one_euro_matches_the_scalar_algorithm():
    rng = np.random.default_rng(0)
    ts = np.cumsum(rng.uniform(0.02, 0.05, 80))
    xs = np.cumsum(rng.normal(0, 3, (80, 5, 2)), axis=0) + 100
    f = OneEuroFilter(min_cutoff=0.8, beta=0.05, d_cutoff=1.2)
    got = np.stack([f(x, t) for x, t in zip(xs, ts, strict=True)])
    want = np.stack([[_one_euro_scalar(xs[:, k, c], ts, 0.8, 0.05, 1.2) for c in range(2)] for k in range(5)])
    np.testing.assert_allclose(got, want.transpose(2, 0, 1), rtol=1e-5, atol=1e-4)


def test_one_euro_removes_jitter_and_restarts_absent_points():
    rng = np.random.default_rng(1)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    raw = 50 + rng.normal(0, 2, (60, 3, 2))
    out = np.stack([f(x, i / 30) for i, x in enumerate(raw)])
    assert out[10:].std(axis=0).max() < 0.5 * raw[10:].std(axis=0).min()
    valid = np.array([[True], [False], [True]])
    jumped = np.full((3, 2), 50.0)
    jumped[1] = 400.0  # absent point reported far away
    y = f(jumped, 61 / 30, valid)
    assert np.allclose(y[1], 400.0)  # passed through, not smoothed
    back = f(np.full((3, 2), 80.0), 62 / 30, np.ones((3, 1), bool))
    assert np.allclose(back[1], 80.0)  # restarts where it reappears, not dragged from 50 or 400
    assert (back[0] < 80.0).all()  # the others are still filtered


def test_one_euro_rejects_bad_parameters():
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(min_cutoff=0.0)
    with pytest.raises(ValueError, match="beta"):
        OneEuroFilter(beta=float("nan"))


def test_smooth_reduces_jitter_on_a_video(tiny_bundle, tmp_path):
    clip = tmp_path / "noisy.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    for _ in range(40):
        w.write(np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8))
    w.release()

    def jitter(*extra):
        res = _cli("run", tiny_bundle, clip, "--jsonl", tmp_path / "p.jsonl", *extra)
        assert res.exit_code == 0, res.output
        xy = np.array([[[k["x"], k["y"]] for k in r["keypoints"]] for r in _lines(tmp_path / "p.jsonl")])
        return np.abs(np.diff(xy, axis=0)).mean()

    assert jitter("--smooth", "--smooth-min-cutoff", "0.5") < 0.7 * jitter()


# --- boxes, plot, save ---------------------------------------------------------------------------


def test_box_file_and_full_frame_box(tmp_path):
    from heatdeploy.runtime.preprocess import input_affines
    from heatdeploy.spec import InputSpec

    spec = InputSpec(name="image", height=64, width=48)
    whole = input_affines(spec, np.array([[120, 200]]))
    boxed = input_affines(spec, np.array([[120, 200]]), full_frame_box(120, 200)[None])
    np.testing.assert_allclose(boxed, whole, atol=1e-9)  # a missing box means exactly the whole frame
    (tmp_path / "b.json").write_text(json.dumps({"f1": [1, 2, 30, 40], "3": None}))
    boxes = BoxFile(tmp_path / "b.json")
    assert boxes(Frame(0, np.zeros((2, 2, 3), np.uint8), "f1")).tolist() == [1, 2, 30, 40]
    assert boxes(Frame(3, np.zeros((2, 2, 3), np.uint8), "x")) is None
    (tmp_path / "bad.json").write_text(json.dumps([[5, 5, 1, 1]]))
    with pytest.raises(BoxError, match="bad.json: box for '0'"):
        BoxFile(tmp_path / "bad.json")


def test_boxes_change_the_crop(tiny_bundle, tmp_path):
    clip = write_video(tmp_path / "clip.avi", 4)
    (tmp_path / "boxes.json").write_text(json.dumps([[0, 0, 20, 20]] * 4))
    a = _cli("run", tiny_bundle, clip, "--jsonl", tmp_path / "a.jsonl")
    b = _cli("run", tiny_bundle, clip, "--jsonl", tmp_path / "b.jsonl", "--boxes", tmp_path / "boxes.json")
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    assert _lines(tmp_path / "a.jsonl")[0]["keypoints"] != _lines(tmp_path / "b.jsonl")[0]["keypoints"]


def test_smooth_is_refused_for_config_errors(tiny_bundle):
    from heatdeploy.runtime import Pipeline

    with pytest.raises(StreamError, match="batch size 0"):
        run_stream(Pipeline.load(tiny_bundle), [], [], StreamConfig(batch_size=0))


def test_prediction_plot_and_save(tiny_bundle, tmp_path):
    from heatdeploy.runtime import Pipeline

    img = np.full((96, 72, 3), 120, np.uint8)
    pred = Pipeline.load(tiny_bundle).predict([img, img])
    vis = pred.plot(1)
    assert vis.shape == img.shape and (vis != img).any()
    assert (pred.plot(0, labels="names") != vis).any()  # labels drawn only when asked
    pred.save(tmp_path / "o.png")
    assert cv2.imread(str(tmp_path / "o.png")).shape == img.shape
    pred.save(tmp_path / "p.json")
    assert len(json.loads((tmp_path / "p.json").read_text())) == 2


def test_frames_at_the_input_size_skip_the_warp_with_identical_pixels():
    from heatdeploy.runtime.preprocess import Preprocessor, input_affines
    from heatdeploy.spec import InputSpec

    spec = InputSpec(name="image", height=64, width=48)
    img = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    m = input_affines(spec, np.array([[64, 48]]))
    warped = cv2.warpAffine(img, m[0], (48, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    np.testing.assert_array_equal(Preprocessor(spec)._warp([img], m)[0], warped)
    odd = np.random.default_rng(1).integers(0, 256, (65, 48, 3), dtype=np.uint8)  # not the input size: warped
    m = input_affines(spec, np.array([[65, 48]]))
    want = cv2.warpAffine(odd, m[0], (48, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(float(spec.pad_value),) * 3)
    np.testing.assert_array_equal(Preprocessor(spec)._warp([odd], m)[0], want)


# --- ROI tracking --------------------------------------------------------------------------------


def test_track_box_and_its_fall_back():
    from heatdeploy.runtime.boxes import track_box

    kps = np.array([[10.0, 20.0], [30.0, 5.0], [np.nan, np.nan], [400.0, 400.0]])
    present = np.array([True, True, True, False])
    assert track_box(kps, present, 0.3).tolist() == [10.0, 5.0, 30.0, 20.0]  # NaN and absent points ignored
    assert track_box(kps, present, 0.9) is None  # 2 of 4 usable: below 90%, the whole frame instead


def test_tracking_crops_each_frame_around_the_previous_frames_keypoints(tiny_bundle, tmp_path):
    from heatdeploy.runtime import Pipeline
    from heatdeploy.runtime.boxes import track_box

    clip = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25, (96, 72))
    rng = np.random.default_rng(3)
    for _ in range(12):
        w.write(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8))
    w.release()
    pipe = Pipeline.load(tiny_bundle)
    sink = JsonlSink(tmp_path / "t.jsonl")
    run_stream(pipe, open_source([str(clip)]), [sink], StreamConfig(track=True, track_min_present=0.5))
    got = _lines(tmp_path / "t.jsonl")
    box, used = None, 0
    for frame, rec in zip(open_source([str(clip)]), got, strict=True):  # the same thing, one frame at a time
        pred = pipe.predict([frame.image], boxes=None if box is None else box[None])
        want = np.array([[k["x"], k["y"]] for k in rec["keypoints"]])
        np.testing.assert_allclose(want, pred.keypoints[0], atol=0.006)
        assert ("box" in rec) == (box is not None)
        used += box is not None
        box = track_box(pred.keypoints[0], pred.present[0], 0.5)
    assert used >= 3  # the test exercises tracked crops, not only the fall-back
    with pytest.raises(StreamError, match="--track needs batch size 1"):
        run_stream(pipe, open_source([str(clip)]), [], StreamConfig(track=True, batch_size=4))


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_one_pass_normalise_matches_the_formula(layout, color):
    from heatdeploy.runtime.preprocess import Preprocessor
    from heatdeploy.spec import InputSpec

    spec = InputSpec(name="x", height=24, width=20, layout=layout, color=color, mean=(123.7, 116.3, 103.5),
                     std=(58.4, 57.1, 57.4))
    batch = np.random.default_rng(0).integers(0, 256, (3, 24, 20, 3), dtype=np.uint8)
    x = (batch[..., ::-1] if color == "RGB" else batch).astype(np.float64)
    want = (x * spec.scale - np.array(spec.mean)) / np.array(spec.std)  # channel order after the swap
    want = want.transpose(0, 3, 1, 2) if layout == "NCHW" else want
    got = Preprocessor(spec)._normalise(batch)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # float32 rounding of the one multiply-add


def test_predictions_do_not_keep_the_callers_frames_alive(tiny_bundle, tmp_path):
    import gc

    from heatdeploy.runtime import Pipeline

    pipe = Pipeline.load(tiny_bundle)
    frame = np.full((48, 64, 3), 80, np.uint8)
    pred = pipe.predict([frame])
    assert pred.plot(0).shape == frame.shape  # held by the caller: plot works
    del frame
    gc.collect()
    with pytest.raises(HeatdeployError, match="pass image="):
        pred.plot(0)
    assert pred.plot(0, image=np.zeros((48, 64, 3), np.uint8)).shape == (48, 64, 3)
    path = tmp_path / "f.png"
    cv2.imwrite(str(path), np.full((40, 30, 3), 10, np.uint8))
    assert pipe.predict([path]).plot(0).shape == (40, 30, 3)  # read from a path: held by the prediction


def test_an_error_leaves_no_predictions_json_but_ctrl_c_does(tiny_bundle, tmp_path):
    from heatdeploy.runtime import Pipeline
    from heatdeploy.runtime.sinks import RecordsSink
    from heatdeploy.runtime.sources import SourceError

    def frames(fail):
        yield Frame(0, np.zeros((48, 64, 3), np.uint8), "f0", None, "f0.png")
        raise fail

    class Source:
        kind, fps, total = "images", None, None

        def __init__(self, fail):
            self.fail = fail

        def __iter__(self):
            return frames(self.fail)

    pipe = Pipeline.load(tiny_bundle)
    with pytest.raises(SourceError):
        run_stream(pipe, Source(SourceError("x.png: broken")), [RecordsSink(tmp_path / "a.json")])
    assert not (tmp_path / "a.json").exists()
    run_stream(pipe, Source(KeyboardInterrupt()), [RecordsSink(tmp_path / "b.json")])
    assert [r["name"] for r in json.loads((tmp_path / "b.json").read_text())] == ["f0"]


def test_openvino_streams_the_same_keypoints_as_onnxruntime(tiny_bundle, tmp_path):
    """The engine runs on its own thread: OpenVINO's infer request there gives ORT's keypoints."""
    pytest.importorskip("openvino", reason="needs heatdeploy[openvino]")
    clip = write_video(tmp_path / "clip.avi", 12)
    for backend in ("onnxruntime", "openvino"):
        res = _cli("run", tiny_bundle, clip, "--backend", backend, "--jsonl", tmp_path / f"{backend}.jsonl")
        assert res.exit_code == 0, res.output
    xy = [np.array([[[k["x"], k["y"]] for k in r["keypoints"]] for r in _lines(tmp_path / f"{b}.jsonl")])
          for b in ("onnxruntime", "openvino")]
    np.testing.assert_allclose(xy[0], xy[1], atol=0.02)


def test_a_video_streams_with_the_wheel_and_onnxruntime_only(runtime_bundle, tmp_path):
    """``run VIDEO`` in an interpreter where torch, onnx and OpenVINO cannot be imported (CI: a real such venv)."""
    clip = write_video(tmp_path / "clip.avi", 10)
    absent = ("torch", "onnx", "openvino", "nncf", "onnxscript")
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in absent)
            + "from heatdeploy.cli import app\nsys.argv = ['heatdeploy', *sys.argv[1:]]\napp()\n")
    proc = subprocess.run([PY, "-c", code, "run", str(runtime_bundle), str(clip), "--jsonl", str(tmp_path / "p.jsonl"),
                           "--smooth", "--video", str(tmp_path / "v.avi")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["frame"] for r in _lines(tmp_path / "p.jsonl")] == list(range(10))
    assert _frame_count(tmp_path / "v.avi") == 10


def test_box_file_formats_and_errors(tmp_path):
    f = Frame(0, np.zeros((2, 2, 3), np.uint8), "a")
    (tmp_path / "b.json").write_text(json.dumps({"a": [[0, 0, 5, 5], [1, 1, 9, 9]], "1": [], "2": None}))
    boxes = BoxFile(tmp_path / "b.json")
    assert boxes(f).shape == (2, 4) and boxes(Frame(1, f.image, "x")).shape == (0, 4)
    for bad in ([["x", 1, 2, 3]], [[1, 2, 3]], [[0, 0, float("inf"), 1]], [{"a": 1}], "[[[[1]]]]"):
        (tmp_path / "bad.json").write_text(json.dumps(bad) if not isinstance(bad, str) else bad)
        with pytest.raises(BoxError, match="bad.json: box for '0' is .*expected \\[x1, y1, x2, y2\\]"):
            BoxFile(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BoxError, match="bad.json: not a readable boxes JSON"):
        BoxFile(tmp_path / "bad.json")


def test_several_boxes_per_frame_give_instances(tiny_bundle, tmp_path):
    from heatdeploy.runtime import Pipeline

    clip = write_video(tmp_path / "clip.avi", 3)
    two = [[0, 0, 30, 40], [20, 5, 63, 47]]
    (tmp_path / "boxes.json").write_text(json.dumps({"0": two, "1": [], "2": [4, 4, 40, 40]}))
    res = _cli("run", tiny_bundle, clip, "--jsonl", tmp_path / "p.jsonl", "--boxes", tmp_path / "boxes.json",
               "--video", tmp_path / "v.avi", "--batch", "3")
    assert res.exit_code == 0, res.output
    recs = _lines(tmp_path / "p.jsonl")
    frames = [f.image for f in open_source([str(clip)])]
    pipe = Pipeline.load(tiny_bundle)
    want = pipe.predict([frames[0], frames[0]], boxes=np.array(two, float))
    assert [i["box"] for i in recs[0]["instances"]] == two
    got = np.array([[[k["x"], k["y"]] for k in inst["keypoints"]] for inst in recs[0]["instances"]])
    np.testing.assert_allclose(got, want.keypoints, atol=0.006)
    assert recs[1]["instances"] == [] and recs[1]["frame"] == 1  # nobody: a record, no inference
    one = pipe.predict([frames[2]], boxes=np.array([[4, 4, 40, 40]], float))
    assert recs[2]["box"] == [4, 4, 40, 40]
    np.testing.assert_allclose([[k["x"], k["y"]] for k in recs[2]["keypoints"]], one.keypoints[0], atol=0.006)
    assert _frame_count(tmp_path / "v.avi") == 3


def test_records_are_built_only_for_sinks_that_write_them(tiny_bundle, tmp_path, monkeypatch):
    from heatdeploy.runtime import Pipeline
    from heatdeploy.runtime.pipeline import Prediction

    calls = []
    original = Prediction.to_records
    monkeypatch.setattr(Prediction, "to_records", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    clip = write_video(tmp_path / "clip.avi", 5)
    pipe = Pipeline.load(tiny_bundle)
    run_stream(pipe, open_source([str(clip)]), [VideoSink(tmp_path / "v.avi", 25.0)], StreamConfig())
    assert calls == [] and (tmp_path / "v.avi").exists()  # a video-only run makes no JSON records
    both = [JsonlSink(tmp_path / "p.jsonl"), VideoSink(tmp_path / "w.avi", 25.0)]
    run_stream(pipe, open_source([str(clip)]), both, StreamConfig(batch_size=2))
    assert len(calls) == 3 and len(_lines(tmp_path / "p.jsonl")) == 5  # once per batch, shared by the sinks
