"""The ``heatdeploy`` command line (typer + rich): parse, show progress, print; the work is in heatdeploy.api.

Exit codes (for CI): 0 ok, 1 a gate failed (parity out of tolerance), 2 bad input or usage, 3 internal error,
130 interrupted. The app, its error path and hooks are in :mod:`heatdeploy.cli_base`; bench, devices,
build-engine and training in :mod:`heatdeploy.cli_device`; add in :mod:`heatdeploy.cli_add`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from heatdeploy.cli_base import (
    METHOD_HELP,
    AccuracyControlOption,
    BudgetOption,
    CalibMethodOption,
    CalibOption,
    CalibSizeOption,
    KeepFp32Option,
    PresetOption,
    QatOption,
    SeedOption,
    _fail,
    _guard_all,
    _hooks,
    _progress,
    app,
    cli_errors,
    console,
)

__all__ = ["app"]


def expand_images(paths: list[Path]) -> list[Path]:
    """Files as given; folders expanded (recursively, sorted) to their regular image files."""
    from heatdeploy.runtime.sources import expand_images as expand

    return expand(paths)





@app.command()
@cli_errors
def export(
    model: Annotated[str, typer.Argument(help="'reference', a torch.export .pt2, package.module:factory, "
                                               "an .onnx, or a .tflite (with --spec)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle directory to write (new, empty, or a bundle)")],
    format: Annotated[str, typer.Option("--format", help="artifact format")] = "onnx",
    weights: Annotated[str | None, typer.Option(help="weights for module:factory (weights_only load)")] = None,
    spec: Annotated[str | None, typer.Option("--spec", help="ModelSpec JSON where the model has none")] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default 17, read by every target; a --device "
                                                   "profile may cap it)")] = None,
    precision: Annotated[str, typer.Option(help="fp32, or int8 (adds a calibrated QDQ artifact); with "
                                                "--format tensorrt also fp16")] = "fp32",
    device: Annotated[str | None, typer.Option(help="device profile name or TOML (see 'heatdeploy devices')")]
    = None,
    calib: CalibOption = None,
    calib_method: CalibMethodOption = "auto",
    calib_size: CalibSizeOption = None,
    seed: SeedOption = 0,
    keep_fp32: KeepFp32Option = "auto",
    preset: PresetOption = "mixed",
    accuracy_control: AccuracyControlOption = None,
    force: Annotated[bool, typer.Option(help="replace --out even when it is a file or a folder that is not a "
                                             "heatdeploy bundle")] = False,
    budget_s: BudgetOption = 300.0,
    qat: QatOption = "off",
) -> None:
    """Export MODEL to a bundle: manifest.json + model.onnx (+ model.int8.onnx) + sha256 of each file.

    Over an existing bundle, its other artifacts are kept while they belong to the same model (stale ones are
    listed as dropped); a file or a non-empty folder that is not a bundle is refused unless --force. To put
    another artifact (or the --stock INT8 baselines) into a bundle without rewriting it: 'heatdeploy add'.

    Examples:

      heatdeploy export reference --format onnx --out bundle/

      heatdeploy export reference --precision int8 --calib images/ --out bundle/

      heatdeploy export reference --format openvino --precision int8 --calib images/ --out bundle/

      heatdeploy export reference --format tensorrt --device jetson-orin-nano --precision int8 --calib images/
      --out bundle/
    """
    from heatdeploy import api

    if format not in api.FORMATS:
        raise typer.BadParameter(f"--format {format}: choose onnx, openvino or tensorrt")
    if precision not in api.FORMATS[format]:
        raise typer.BadParameter(f"--precision {precision}: choose one of {', '.join(api.FORMATS[format])} "
                                 f"for {format}")
    if precision == "int8" and calib is None:
        raise typer.BadParameter("--precision int8 needs --calib DATA (an image folder, video, .npy or synthetic)")
    with _hooks() as hooks:
        api.export(model, out, format=format, precision=precision, weights=weights, spec=spec, opset=opset,
                   device=device, calib=calib, calib_method=calib_method, calib_size=calib_size, seed=seed,
                   keep_fp32=keep_fp32, preset=preset, accuracy_control=accuracy_control, force=force,
                   budget_s=budget_s, qat=qat, hooks=hooks)
    console.print(f"bundle written: {out}")


@app.command()
@cli_errors
def calibrate(
    model: Annotated[Path, typer.Argument(help="bundle directory (made by 'heatdeploy export')")],
    data: Annotated[str, typer.Option(help="image folder, video, .npy/.npz, or synthetic[:N]")],
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "auto",
    calib_size: Annotated[int | None, typer.Option(help="seeded random subset of N samples")] = None,
    seed: Annotated[int, typer.Option(help="subset seed")] = 0,
    keep_fp32: Annotated[str, typer.Option(help="auto | base | none | NODE,NODE,...")] = "auto",
    symmetric: Annotated[bool, typer.Option(help="symmetric activations (needed for TensorRT; asymmetric runs "
                                                 "faster and closer to FP32 on ORT CPU)")] = False,
    budget_s: BudgetOption = 300.0,
) -> None:
    """Calibrate INT8 for a bundle: writes model.int8.onnx, calibration.json and calibration.cache into it.

    Example: heatdeploy calibrate bundle/ --data images/ --calib-size 300
    """
    from heatdeploy import api

    with _hooks() as hooks:
        api.calibrate(model, data, method=method, calib_size=calib_size, seed=seed, keep_fp32=keep_fp32,
                      symmetric=symmetric, budget_s=budget_s, hooks=hooks)


# --- run ---------------------------------------------------------------------------------------------
def _load_pipeline(bundle: Path, precision: str | None, backend: str | None, artifact: str | None,
                   device: str | None, options: dict[str, Any] | None = None) -> Any:
    from heatdeploy.runtime import Pipeline

    if device:
        from heatdeploy.devices.profiles import load_profile, session_options

        profile = load_profile(device)
        precision = precision or profile.precision
        backend = backend or profile.backend
        options = session_options(profile, backend)
    return Pipeline.load(bundle, artifact=artifact, precision=precision, backend=backend, options=options)


def stream_sources(pipe: Any, sources: list[str], out: Path | None, *, jsonl: str | None = None,
                   video: Path | None = None, overlays: bool = True, keep_records: bool = False,
                   batch_size: int | None = None, max_frames: int | None = None, smooth: Any = None,
                   boxes: Path | None = None, labels: str = "none", track: bool = False,
                   show: bool = True) -> tuple[Any, Any, Any]:
    """SOURCES through ``pipe`` into the sinks asked for; returns (stats, source, records sink)."""
    import warnings

    from heatdeploy.runtime.sources import SkippedInputWarning, open_source
    from heatdeploy.runtime.stream import BoxFile, StreamConfig, default_sinks, run_stream

    box_file = BoxFile(boxes) if boxes is not None else None
    with warnings.catch_warnings(record=True) as skipped:
        warnings.simplefilter("always", SkippedInputWarning)
        try:
            source = open_source(sources)
        finally:  # say what was skipped, also when nothing was left to read
            for w in skipped:
                console.print(f"[yellow]warning:[/yellow] {escape(str(w.message))}", highlight=False,
                              soft_wrap=True)
    images = source.kind == "images"
    sinks, records = default_sinks(source, out, jsonl=jsonl, video=video, overlays=overlays,
                                   keep_records=keep_records)
    cfg = StreamConfig(batch_size=batch_size or (8 if images and not track else 1), max_frames=max_frames,
                       boxes=box_file, smooth=smooth, labels=labels, fps=source.fps, track=track)
    total = source.total if max_frames is None else min(max_frames, source.total or max_frames)
    if not show:
        return run_stream(pipe, source, sinks, cfg), source, records
    with _progress() as prog:
        task = prog.add_task("starting", total=total)
        stats = run_stream(pipe, source, sinks, cfg,
                           on_progress=lambda s: prog.update(task, completed=s.frames, description=s.line()))
    return stats, source, records


def run_images(bundle: Path, images: list[Path], out: Path | None, *, precision: str | None = None,
               backend: str | None = None, artifact: str | None = None, batch_size: int = 8,
               options: dict[str, Any] | None = None, labels: str = "none") -> list[dict[str, Any]]:
    """Predict images with a bundle; write predictions.json(l) and overlay PNGs under ``out``."""
    pipe = _load_pipeline(bundle, precision, backend, artifact, None, options)
    _, _, records = stream_sources(pipe, [str(p) for p in images], out, batch_size=batch_size,
                                   keep_records=True, labels=labels)
    return records.records


@app.command()
@cli_errors
def run(
    bundle: Annotated[Path, typer.Argument(help="bundle directory or .onnx with embedded spec")],
    sources: Annotated[list[str], typer.Argument(
        help="image files or folders, a video file, a camera index (0) or /dev/videoN, an rtsp:// or http:// "
             "URL, or a GStreamer pipeline ending in 'appsink'", metavar="SOURCE...")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="folder: predictions.jsonl; for images also "
                                                                 "predictions.json + overlays/, for video "
                                                                 "annotated.mp4")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print predictions to stdout: a JSON list for images, "
                                                         "JSON Lines (one frame per line) for streams")] = False,
    jsonl: Annotated[str | None, typer.Option(help="write JSON Lines per frame here ('-': stdout)")] = None,
    video: Annotated[Path | None, typer.Option(help="write the annotated frames as a video (.mp4, .avi)")] = None,
    max_frames: Annotated[int | None, typer.Option(help="stop after N frames", min=1)] = None,
    batch: Annotated[int | None, typer.Option(help="frames per engine call (default 8 for images, 1 for "
                                                   "streams)", min=1)] = None,
    smooth: Annotated[bool, typer.Option(help="One Euro filter over time on each keypoint (video)")] = False,
    smooth_min_cutoff: Annotated[float, typer.Option(help="One Euro min cutoff, Hz (lower: smoother when "
                                                          "still)")] = 1.0,
    smooth_beta: Annotated[float, typer.Option(help="One Euro speed coefficient, 1/px (higher: less lag when "
                                                    "moving)")] = 0.01,
    boxes: Annotated[Path | None, typer.Option(help="person boxes for top-down models: JSON {frame name or "
                                                    "index: [x1, y1, x2, y2], or [[...], ...] for several people "
                                                    "(records list instances), [] for nobody}, or a list by frame "
                                                    "index")] = None,
    track: Annotated[bool, typer.Option(help="top-down models: crop each frame around the previous frame's "
                                             "keypoints; the whole frame (or --boxes) when too few are present")]
    = False,
    labels: Annotated[str, typer.Option(help="overlay labels: none | names | scores")] = "none",
    precision: Annotated[str | None, typer.Option(help="artifact precision to run (fp32, int8, ...)")] = None,
    backend: Annotated[str | None, typer.Option(help="override the artifact's backend")] = None,
    artifact: Annotated[str | None, typer.Option(help="artifact name in the bundle")] = None,
    device: Annotated[str | None, typer.Option(help="device profile: its precision, backend and session "
                                                    "options (threads, providers)")] = None,
) -> None:
    """Decode keypoints, scores and existence for images, a video, a camera or a stream, frame by frame.

    Examples:

      heatdeploy run bundle/ samples/ --out preds/ --json

      heatdeploy run bundle/ clip.mp4 --out preds/ --smooth --max-frames 300

      heatdeploy run bundle/ 0 --jsonl - ; heatdeploy run bundle/ rtsp://camera/stream --out preds/

      heatdeploy run bundle/ "nvarguscamerasrc ! video/x-raw(memory:NVMM) ! nvvidconv ! video/x-raw,format=BGRx !
      videoconvert ! video/x-raw,format=BGR ! appsink" --jsonl preds.jsonl
    """
    from heatdeploy.runtime.draw import LABELS
    from heatdeploy.runtime.smoothing import OneEuroFilter

    if labels not in LABELS:
        raise typer.BadParameter(f"--labels {labels}: choose one of {', '.join(LABELS)}")
    filt = None
    if smooth:
        try:
            filt = OneEuroFilter(min_cutoff=smooth_min_cutoff, beta=smooth_beta)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    pipe = _load_pipeline(bundle, precision, backend, artifact, device)
    if not as_json and pipe.artifact is not None:
        chosen = (pipe.bundle.info.get("deploy") or {}).get("artifact") if pipe.bundle is not None else None
        why = " — the bundle's deployment choice ('heatdeploy choose')" if chosen == pipe.artifact.name else ""
        console.print(f"running {pipe.artifact.name} on {pipe.backend_name}{why}", highlight=False)
    stdout_lines = as_json and jsonl is None
    from heatdeploy.runtime.sources import classify

    images = all(classify(s) in ("images", "skip") for s in sources)
    stats, source, records = stream_sources(
        pipe, sources, out, jsonl="-" if stdout_lines and not images else jsonl, video=video,
        keep_records=as_json and images, batch_size=batch, max_frames=max_frames, smooth=filt, boxes=boxes,
        labels=labels, track=track)
    if as_json and images:
        sys.stdout.write(json.dumps(records.records, indent=2) + "\n")
    where = f"; {out / 'predictions.jsonl'}" if out is not None else ""
    if out is not None and source.kind == "images":
        where += f", {out / 'predictions.json'}, overlays in {out / 'overlays'}"
    if video is not None or (out is not None and source.kind != "images"):
        where += f", video {video or out / 'annotated.mp4'}"  # type: ignore[operator]
    console.print(f"{stats.line()}{where}", highlight=False, soft_wrap=True)
    if stats.interrupted:
        console.print(f"stopped by Ctrl-C after {stats.frames} frames; everything up to there is written",
                      highlight=False)
        raise typer.Exit(130)


# --- inspect -----------------------------------------------------------------------------------------
@app.command()
@cli_errors
def inspect(path: Annotated[Path, typer.Argument(help="bundle directory or .onnx file")],
            as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Print the spec, inputs/outputs, artifacts and hashes of a bundle or ONNX file.

    Example: heatdeploy inspect bundle/
    """
    from heatdeploy.exporters.inspect import describe

    info = describe(path)
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
    else:
        Console().print_json(json.dumps(info, default=str))
    bad = [f"{a['name']}: {a['status']}" for a in info.get("artifacts", []) if a.get("status", "ok") != "ok"]
    if bad:
        raise _fail(f"{path}: artifact files do not match the manifest ({'; '.join(bad)}); re-export the bundle")


# --- eval --------------------------------------------------------------------------------------------
def print_report(title: str, report: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in report.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)


@app.command("eval")
@cli_errors
def eval_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle directory or .onnx with embedded spec")],
    data: Annotated[Path | None, typer.Option(help="your labels: a split folder with labels.json, or a COCO "
                                                   "keypoints .json (adds OKS AP); default: the shipped split "
                                                   "(the shipped reference model only)")] = None,
    images: Annotated[Path | None, typer.Option(help="the COCO file's image folder (default: the file's)")]
    = None,
    precision: Annotated[str | None, typer.Option(help="artifact precision")] = None,
    backend: Annotated[str | None, typer.Option(help="override the artifact's backend")] = None,
    artifact: Annotated[str | None, typer.Option(help="artifact name")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """PCK@0.05 (of the image diagonal) and existence accuracy against ground truth; with a COCO keypoints
    file also COCO OKS AP, AP50, AP75 (top-down: one crop per labelled person's box).

    Examples: heatdeploy eval bundle/ --data split/ ; heatdeploy eval bundle/ --data val.json --images val/
    """
    from heatdeploy import api

    with _hooks() as hooks:
        report = api.evaluate(bundle, data, images=images, precision=precision, backend=backend,
                              artifact=artifact, hooks=hooks)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        print_report(f"accuracy of {report['artifact']} on {data or 'the shipped evaluation split'}", report)


# --- parity ------------------------------------------------------------------------------------------
def _parity(bundle: Path, candidate: str, **options: Any) -> tuple[Any, int]:
    """Run the gate with a progress bar and print its tables; returns (result, exit code)."""
    from heatdeploy import api
    from heatdeploy.parity import print_result

    with _hooks() as hooks:
        result, code = api.parity_bundle(bundle, candidate, hooks=hooks, **options)
    print_result(result, Console())
    return result, code


@app.command()
@cli_errors
def parity(
    bundle: Annotated[Path, typer.Argument(help="bundle directory")],
    candidate: Annotated[str, typer.Option(help="artifact to check, e.g. onnx-int8")],
    reference: Annotated[str, typer.Option(help="FP32 reference artifact (without onnx-fp32 in the bundle: its "
                                                "FP32 artifact of another engine, e.g. openvino-fp32)")]
    = "onnx-fp32",
    data: Annotated[str | None, typer.Option(help="labelled split, image folder, or synthetic:N "
                                                  "(default: the shipped evaluation split)")] = None,
    tolerance: Annotated[str, typer.Option(help="strict | default | loose | path/to/profile.toml")] = "default",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="folder for parity.json + parity.html")] = None,
    limit: Annotated[int | None, typer.Option(help="use only the first N images")] = None,
    backend: Annotated[str | None, typer.Option(help="override the candidate's backend")] = None,
    floor: Annotated[bool, typer.Option(help="also run FP32 on a +-0.5-level input dither: its own noise floor "
                                             "(one more reference inference per batch)")] = True,
    batch: Annotated[int, typer.Option(help="frames per batch (a fixed-batch graph is run in chunks of its own "
                                            "batch size either way)")] = 8,
) -> None:
    """Compare a low-precision artifact with FP32 on keypoints; exit 1 when outside the tolerance (a CI gate).

    Exit 2 means the check could not run (bad bundle, data or tolerance), 3 a bug.

    Example: heatdeploy parity bundle/ --candidate onnx-int8 --out parity/
    """
    _, code = _parity(bundle, candidate, reference=reference, data=data, tolerance=tolerance, out=out,
                      limit=limit, backend=backend, floor=floor, batch_size=batch)
    if code == 0:
        console.print(f"{candidate} holds the gate; 'heatdeploy choose {bundle}' times it against FP32 on this "
                      "machine and deploys the faster", highlight=False)
    raise typer.Exit(code)


# --- spec ------------------------------------------------------------------------------------------
spec_app = typer.Typer(help="Propose or check a ModelSpec for your own ONNX or TFLite model.", no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(spec_app, name="spec")


@spec_app.command("infer")
@cli_errors
def spec_infer_cmd(
    model: Annotated[Path, typer.Argument(help="ONNX model (or .tflite, with the 'tflite' extra)")],
    names: Annotated[str | None, typer.Option("--names", help="comma-separated keypoint names")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the proposal here")] = None,
    data: Annotated[str | None, typer.Option("--data", "--images", help="sample images (folder, video, .npy/.npz): "
                                             "picks the input normalisation whose outputs look trained (unless "
                                             "--from or TFLite metadata sets it), then judges logits vs "
                                             "probabilities under it; default: random inputs")] = None,
    data_size: Annotated[int, typer.Option(help="images used from --data")] = 8,
    preset: Annotated[str | None, typer.Option("--from", help="the trainer family (mmpose, mediapipe, openpose, "
                                                              "trt_pose): sets colour, scaling, mean/std and the "
                                                              "heatmap convention the graph cannot show")] = None,
) -> None:
    """Propose a ModelSpec from the graph (layouts, stride, heatmap/existence outputs, logits or not).

    Example: heatdeploy spec infer model.onnx --names nose,left_eye,right_eye --data images/ --out spec.json
    """
    from heatdeploy.spec_infer import infer_spec, write_spec_proposal

    spec, notes = infer_spec(model, keypoint_names=names.split(",") if names else None, data=data,
                             data_size=data_size, preset=preset)
    for n in notes:
        console.print(f"- {n}", highlight=False, soft_wrap=True)
    if out is not None:
        write_spec_proposal(spec, out)
        console.print(f"spec written: {out} (review the notes, then: heatdeploy export {model} --spec {out} "
                      "--out bundle/)", highlight=False, soft_wrap=True)
    else:
        sys.stdout.write(spec.to_json() + "\n")


@spec_app.command("check")
@cli_errors
def spec_check_cmd(
    model: Annotated[Path, typer.Argument(help="ONNX model (or .tflite, with the 'tflite' extra)")],
    spec: Annotated[Path, typer.Option("--spec", help="ModelSpec JSON")],
    image: Annotated[Path | None, typer.Option("--image", help="sample image to run once")] = None,
) -> None:
    """Validate a spec against the model's graph and, with --image, decode one image with it.

    Example: heatdeploy spec check model.onnx --spec spec.json --image sample.jpg
    """
    from heatdeploy.runtime.preprocess import load_image
    from heatdeploy.spec import ModelSpec
    from heatdeploy.spec_infer import check_spec

    for n in check_spec(model, ModelSpec.load(spec), load_image(image) if image else None):
        console.print(f"- {n}", highlight=False, soft_wrap=True)


# --- the main job ------------------------------------------------------------------------------------
@app.command()
@cli_errors
def demo(out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("out")) -> None:
    """The main job on the shipped reference model: export, run on samples, evaluate.

    Example: heatdeploy demo --out out/
    """
    from heatdeploy import api
    from heatdeploy.fsutil import atomic_write_text
    from heatdeploy.models.evalset import SAMPLES_DIR

    bundle = out / "bundle"
    with _hooks() as hooks:
        api.export("reference", bundle, hooks=hooks)
        api.calibrate(bundle, "synthetic:256", hooks=hooks)
    records = run_images(bundle, [SAMPLES_DIR], out / "samples")
    with _hooks() as hooks:
        report = api.evaluate(bundle, hooks=hooks)
    atomic_write_text(out / "eval.json", json.dumps(report, indent=2))
    print_report("reference model, ONNX Runtime FP32, shipped evaluation split", report)
    result, code = _parity(bundle, "onnx-int8", out=out / "parity")
    console.print(f"bundle: {bundle} (onnx-fp32, onnx-int8)")
    console.print(f"keypoints JSON: {out / 'samples' / 'predictions.json'} ({len(records)} images)")
    console.print(f"overlays: {out / 'samples' / 'overlays'}")
    console.print(f"accuracy: {out / 'eval.json'}")
    console.print(f"INT8 parity report: {out / 'parity' / 'parity.html'} and {out / 'parity' / 'parity.json'}")
    console.print(f"INT8 parity vs FP32: {'PASSED' if code == 0 else 'FAILED'} — {result.headline()}",
                  highlight=False)
    if code:
        raise typer.Exit(code)


from heatdeploy import (  # noqa: E402,F401 - registers their commands on the app
    cli_add,  # add
    cli_device,  # bench, devices, build-engine, train-reference
)

_guard_all(app)

if __name__ == "__main__":
    app()
