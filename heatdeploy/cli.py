"""The ``heatdeploy`` command line (typer + rich)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    help="Deploy heatmap keypoint models with existence heads to edge engines, with keypoint-level parity.\n\n"
         "Examples:\n\n"
         "  heatdeploy demo --out out/\n\n"
         "  heatdeploy export reference --format onnx --out bundle/\n\n"
         "  heatdeploy run bundle/ photo1.jpg photos/ --out preds/\n\n"
         "  heatdeploy eval bundle/\n\n"
         "  heatdeploy inspect bundle/",
    no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
)
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _user_errors() -> tuple[type[BaseException], ...]:
    """Error types whose message is already a one-line diagnosis (file + fix)."""
    from heatdeploy.bundle import BundleError
    from heatdeploy.devices.profiles import DeviceProfileError
    from heatdeploy.errors import HeatdeployError
    from heatdeploy.runtime.backends.base import BackendError
    from heatdeploy.parity import ParityError, ToleranceError
    from heatdeploy.runtime.preprocess import ImageError
    from heatdeploy.spec import SpecError

    errors: list[type[BaseException]] = [HeatdeployError, BundleError, BackendError, ImageError, SpecError,
                                         FileNotFoundError,
                                         ParityError, ToleranceError, DeviceProfileError]
    try:
        from heatdeploy.calibration.sources import CalibrationError
        from heatdeploy.exporters.inspect import InspectError
        from heatdeploy.exporters.onnx import OnnxExportError, OnnxFileError
        from heatdeploy.exporters.openvino import OpenVinoExportError
        from heatdeploy.exporters.sources import SourceError

        errors += [InspectError, OnnxExportError, OnnxFileError, SourceError, CalibrationError,
                   OpenVinoExportError]
    except ImportError:  # a runtime-only install has no exporters
        pass
    return tuple(errors)


METHOD_HELP = "auto (minmax or mean_minmax, whichever is closer to FP32) | minmax | mean_minmax | entropy | " \
              "percentile | distribution"


def cli_errors(fn: F) -> F:
    """Turn known errors into 'error: ...' on stderr and exit code 1, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _user_errors() as exc:
            msg = str(exc)
            if isinstance(exc, FileNotFoundError) and exc.filename:
                msg = f"{exc.filename}: no such file"
            console.print(f"[red]error:[/red] {escape(msg)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def expand_images(paths: list[Path]) -> list[Path]:
    """Files as given; folders expanded (recursively, sorted) to their regular image files."""
    from heatdeploy.runtime.sources import expand_images as expand

    return expand(paths)


# --- export ------------------------------------------------------------------------------------------
def export_bundle(model: str, out: Path, *, weights: str | None = None, spec_path: str | None = None,
                  opset: int = 17) -> Path:
    """MODEL -> bundle directory with model.onnx (FP32); built beside ``out`` and renamed into place."""
    from heatdeploy.bundle import Bundle, staged_dir

    with staged_dir(out) as tmp:
        if model.endswith(".onnx"):
            spec, tools, notes = _import_onnx(Path(model), tmp / "model.onnx", spec_path)
        elif model.endswith(".tflite"):
            from heatdeploy.exporters.tflite import import_tflite_onnx

            with console.status(f"converting {model} to ONNX"):
                spec, tools, notes = import_tflite_onnx(Path(model), tmp / "model.onnx", spec_path, opset=opset)
            diffs = ", ".join(f"{k} {v:.2e}" for k, v in notes.get("max_abs_diff", {}).items())
            console.print(f"converted {model} to ONNX opset {notes['opset']} via {notes['converter']}"
                          + (f"; max |ORT - OpenVINO f32 on the .tflite|: {diffs}" if diffs else ""),
                          highlight=False, soft_wrap=True)
        else:
            from heatdeploy.exporters.onnx import export_onnx
            from heatdeploy.exporters.sources import load_torch_model

            with console.status(f"loading {model}"):
                module, spec = load_torch_model(model, weights=weights, spec_path=spec_path)
            with console.status(f"exporting {model} to ONNX (opset {opset})"):
                rep = export_onnx(module, spec, tmp / "model.onnx", opset=opset)
            diffs = ", ".join(f"{k} {v:.2e}" for k, v in rep.max_abs_diff.items())
            console.print(f"exported ONNX opset {rep.opset} via {rep.exporter}; max |ORT FP32 - torch|: {diffs}")
            tools = rep.tools
            notes = {"opset": rep.opset, "exporter": rep.exporter, "max_abs_diff_vs_torch": rep.max_abs_diff,
                     "optimized": rep.optimized, "export_notes": rep.notes}
        bundle = Bundle.create(tmp, spec)
        bundle.add_file(tmp / "model.onnx", "model.onnx", name="onnx-fp32", format="onnx", precision="fp32",
                        backend="onnxruntime", tools=tools, notes=notes)
        bundle.info["source"] = model
        bundle.save()
    return out


def _import_onnx(src: Path, dest: Path, spec_path: str | None) -> tuple[Any, dict[str, str], dict[str, Any]]:
    """A user's .onnx as the FP32 artifact: spec from --spec or its metadata, checked against the graph."""
    import onnx

    from heatdeploy.exporters.onnx import check_spec_against_graph, embed_spec, load_model_proto, read_spec
    from heatdeploy.fsutil import atomic_path
    from heatdeploy.spec import ModelSpec, SpecError

    proto = load_model_proto(src)
    spec = ModelSpec.load(spec_path) if spec_path else read_spec(proto)
    if spec is None:
        raise SpecError(f"{src}: carries no heatdeploy spec; pass --spec SPEC.json")
    check_spec_against_graph(proto, spec)
    embed_spec(proto, spec)
    with atomic_path(dest) as tmp:
        onnx.save(proto, str(tmp))
    return spec, {"onnx": onnx.__version__}, {"imported_from": str(src)}


@app.command()
@cli_errors
def export(
    model: Annotated[str, typer.Argument(help="'reference', a torch.export .pt2, package.module:factory, "
                                               "an .onnx, or a .tflite (with --spec)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle directory to write")],
    format: Annotated[str, typer.Option("--format", help="artifact format")] = "onnx",
    weights: Annotated[str | None, typer.Option(help="weights for module:factory (weights_only load)")] = None,
    spec: Annotated[str | None, typer.Option("--spec", help="ModelSpec JSON where the model has none")] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default 17, read by every target; a --device "
                                                   "profile may cap it)")] = None,
    precision: Annotated[str, typer.Option(help="fp32, or int8 (adds a calibrated QDQ artifact); with "
                                                "--format tensorrt also fp16")] = "fp32",
    device: Annotated[str | None, typer.Option(help="device profile name or TOML (see 'heatdeploy devices')")]
    = None,
    calib: Annotated[str | None, typer.Option(help="INT8 calibration data: image folder, video, .npy/.npz, "
                                                   "or synthetic[:N]")] = None,
    calib_method: Annotated[str, typer.Option(help=METHOD_HELP)] = "auto",
    calib_size: Annotated[int | None, typer.Option(help="seeded random subset of N calibration samples")] = None,
    seed: Annotated[int, typer.Option(help="calibration subset seed")] = 0,
    keep_fp32: Annotated[str, typer.Option(help="auto | base | none | NODE,NODE,... (ONNX node names; IR op "
                                                "names for --format openvino)")] = "auto",
    preset: Annotated[str, typer.Option(help="OpenVINO/NNCF INT8 preset: mixed | performance")] = "mixed",
    accuracy_control: Annotated[float | None, typer.Option(
        help="OpenVINO INT8: max PCK drop (points) for nncf.quantize_with_accuracy_control")] = None,
) -> None:
    """Export MODEL to a bundle: manifest.json + model.onnx (+ model.int8.onnx) + sha256 of each file.

    Examples:

      heatdeploy export reference --format onnx --out bundle/

      heatdeploy export reference --precision int8 --calib images/ --out bundle/

      heatdeploy export reference --format openvino --precision int8 --calib images/ --out bundle/

      heatdeploy export reference --format tensorrt --device jetson-orin-nano --precision int8 --calib images/
      --out bundle/
    """
    from heatdeploy.devices.profiles import load_profile, resolve_opset

    if format not in ("onnx", "openvino", "tensorrt"):
        raise typer.BadParameter(f"--format {format}: choose onnx, openvino or tensorrt")
    allowed = {"onnx": ("fp32", "int8"), "openvino": ("fp32", "fp16", "bf16", "int8"),
               "tensorrt": ("fp32", "fp16", "int8")}[format]
    if precision not in allowed:
        raise typer.BadParameter(f"--precision {precision}: choose one of {', '.join(allowed)} for {format}")
    if precision == "int8" and calib is None:
        raise typer.BadParameter("--precision int8 needs --calib DATA (an image folder, video, .npy or synthetic)")
    profile = load_profile(device) if device else None
    opset_used, why = resolve_opset(profile, opset)
    if profile is not None:
        console.print(f"device profile {profile.name}: opset {opset_used} ({why})", highlight=False)
    if model.endswith(".tflite"):
        from heatdeploy.exporters.tflite import check_tflite, require_spec

        require_spec(check_tflite(model), spec)  # before any work: a .tflite carries no spec
        if format == "openvino":  # OpenVINO reads the .tflite itself: no ONNX, no converter
            from heatdeploy.exporters.tflite import export_tflite_openvino, summary_line

            with console.status(f"OpenVINO {precision} export from {model}"):
                arts = export_tflite_openvino(model, out, spec_path=spec, precision=precision, calib=calib,
                                              calib_size=calib_size, seed=seed, preset=preset,
                                              accuracy_control=accuracy_control)
            for art in arts:
                console.print(summary_line(art), highlight=False, soft_wrap=True)
            console.print(f"bundle written: {out}")
            return
    export_bundle(model, out, weights=weights, spec_path=spec, opset=opset_used)
    if precision == "int8" and format != "openvino":
        add_int8(out, calib, method=calib_method, calib_size=calib_size, seed=seed, keep_fp32=keep_fp32,
                 activation_type=profile.activation_type if profile is not None else "auto",
                 symmetric_activations=format == "tensorrt")  # TensorRT INT8 is symmetric
    if format == "openvino":
        from heatdeploy.exporters.openvino import add_openvino_artifact, summary_line

        with console.status(f"OpenVINO {precision} export"):
            art = add_openvino_artifact(out, precision, calib=calib, calib_size=calib_size, seed=seed,
                                        preset=preset, accuracy_control=accuracy_control,
                                        keep_fp32=_keep_list(keep_fp32))
        console.print(summary_line(art), highlight=False, soft_wrap=True)
    if format == "tensorrt":
        from heatdeploy.exporters.tensorrt import export_tensorrt

        result = export_tensorrt(out, precision, profile, log=lambda m: console.print(m, highlight=False))
        for line in result.lines():
            console.print(line, highlight=False, soft_wrap=True)
    console.print(f"bundle written: {out}")


def _keep_list(keep_fp32: str) -> str | list[str]:
    """``--keep-fp32``: a mode (auto, base, none) or comma-separated node names."""
    return keep_fp32 if keep_fp32 in ("auto", "base", "none") else keep_fp32.split(",")


def add_int8(bundle: Path, calib: str | None, *, method: str = "auto", calib_size: int | None = None,
             seed: int = 0, keep_fp32: str = "auto", activation_type: str = "auto",
             symmetric_activations: bool = False) -> Any:
    """Calibrate and add the ORT INT8 artifact; print what stayed FP32 and what runs INT8."""
    from heatdeploy.calibration.artifact import add_onnx_int8

    keep = _keep_list(keep_fp32)
    with console.status(f"calibrating INT8 ({method}) on {calib}"):
        art, report = add_onnx_int8(bundle, calib or "synthetic", method=method, calib_size=calib_size,
                                    seed=seed, keep_fp32=keep, activation_type=activation_type,
                                    symmetric_activations=symmetric_activations)
    console.print(f"INT8 artifact {art.name}: {report.summary()}", highlight=False)
    return report


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
) -> None:
    """Calibrate INT8 for a bundle: writes model.int8.onnx, calibration.json and calibration.cache into it.

    Example: heatdeploy calibrate bundle/ --data images/ --calib-size 300
    """
    add_int8(model, data, method=method, calib_size=calib_size, seed=seed, keep_fp32=keep_fp32,
             symmetric_activations=symmetric)


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
                   boxes: Path | None = None, labels: str = "none", show: bool = True) -> tuple[Any, Any, Any]:
    """SOURCES through ``pipe`` into the sinks asked for; returns (stats, source, records sink)."""
    import warnings

    from heatdeploy.runtime.sinks import JsonlSink, OverlaySink, RecordsSink, VideoSink
    from heatdeploy.runtime.sources import SkippedInputWarning, open_source
    from heatdeploy.runtime.stream import BoxFile, StreamConfig, run_stream

    box_file = BoxFile(boxes) if boxes is not None else None
    with warnings.catch_warnings(record=True) as skipped:
        warnings.simplefilter("always", SkippedInputWarning)
        source = open_source(sources)
    for w in skipped:
        console.print(f"[yellow]warning:[/yellow] {escape(str(w.message))}", highlight=False, soft_wrap=True)
    images = source.kind == "images"
    records = RecordsSink(out / "predictions.json" if out is not None and images else None)
    sinks: list[Any] = [records] if images and (keep_records or out is not None) else []
    if jsonl is not None:
        sinks.append(JsonlSink(None if jsonl == "-" else Path(jsonl)))
    if out is not None:
        sinks.append(JsonlSink(out / "predictions.jsonl"))
        if images and overlays:
            sinks.append(OverlaySink(out / "overlays"))
    if video is None and out is not None and not images:
        video = out / "annotated.mp4"
    if video is not None:
        sinks.append(VideoSink(video, source.fps))
    cfg = StreamConfig(batch_size=batch_size or (8 if images else 1), max_frames=max_frames, boxes=box_file,
                       smooth=smooth, labels=labels, fps=source.fps)
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
                                                    "index: [x1, y1, x2, y2]} or a list by frame index")] = None,
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
    stdout_lines = as_json and jsonl is None
    from heatdeploy.runtime.sources import classify

    images = all(classify(s) in ("images", "skip") for s in sources)
    stats, source, records = stream_sources(
        pipe, sources, out, jsonl="-" if stdout_lines and not images else jsonl, video=video,
        keep_records=as_json and images, batch_size=batch, max_frames=max_frames, smooth=filt, boxes=boxes,
        labels=labels)
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
        console.print(f"[red]error:[/red] {path}: artifact files do not match the manifest ({'; '.join(bad)}); "
                      "re-export the bundle", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


# --- eval --------------------------------------------------------------------------------------------
def eval_bundle(bundle: Path, data: Path | None = None, *, precision: str | None = None,
                backend: str | None = None, artifact: str | None = None) -> dict[str, Any]:
    from heatdeploy.evaluate import evaluate
    from heatdeploy.models.evalset import EVAL_DIR, read_labelled_set
    from heatdeploy.runtime import Pipeline

    split = read_labelled_set(data or EVAL_DIR)
    pipe = Pipeline.load(bundle, artifact=artifact, precision=precision, backend=backend)
    with _progress() as prog:
        task = prog.add_task("evaluating", total=len(split.files))
        _, report = evaluate(pipe, split, advance=lambda n: prog.advance(task, n))
    report["artifact"] = pipe.artifact.name if pipe.artifact else str(bundle)
    report["backend"] = pipe.backend_name
    return report


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
    data: Annotated[Path | None, typer.Option(help="labelled split (default: the shipped evaluation split)")]
    = None,
    precision: Annotated[str | None, typer.Option(help="artifact precision")] = None,
    backend: Annotated[str | None, typer.Option(help="override the artifact's backend")] = None,
    artifact: Annotated[str | None, typer.Option(help="artifact name")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """PCK@0.05 (of the image diagonal) and existence accuracy against ground truth.

    Example: heatdeploy eval bundle/
    """
    report = eval_bundle(bundle, data, precision=precision, backend=backend, artifact=artifact)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        print_report(f"accuracy of {report['artifact']} on {data or 'the shipped evaluation split'}", report)


# --- parity ------------------------------------------------------------------------------------------
def parity_bundle(bundle: Path, candidate: str, *, reference: str = "onnx-fp32", data: str | None = None,
                  tolerance: str = "default", out: Path | None = None, limit: int | None = None,
                  backend: str | None = None, floor: bool = True) -> tuple[Any, int]:
    from heatdeploy.parity import parity_command, print_result

    with _progress() as prog:
        task = prog.add_task(f"parity {candidate} vs {reference}", total=None)
        result, code = parity_command(bundle, candidate, reference, data, tolerance, out, limit=limit,
                                      backend=backend, floor=floor,
                                      progress=lambda d, t: prog.update(task, completed=d, total=t))
    print_result(result, Console())
    return result, code


@app.command()
@cli_errors
def parity(
    bundle: Annotated[Path, typer.Argument(help="bundle directory")],
    candidate: Annotated[str, typer.Option(help="artifact to check, e.g. onnx-int8")],
    reference: Annotated[str, typer.Option(help="FP32 reference artifact")] = "onnx-fp32",
    data: Annotated[str | None, typer.Option(help="labelled split, image folder, or synthetic:N "
                                                  "(default: the shipped evaluation split)")] = None,
    tolerance: Annotated[str, typer.Option(help="strict | default | loose | path/to/profile.toml")] = "default",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="folder for parity.json + parity.html")] = None,
    limit: Annotated[int | None, typer.Option(help="use only the first N images")] = None,
    backend: Annotated[str | None, typer.Option(help="override the candidate's backend")] = None,
    floor: Annotated[bool, typer.Option(help="also run FP32 on a +-0.5-level input dither: its own noise floor "
                                             "(one more reference inference per batch)")] = True,
) -> None:
    """Compare a low-precision artifact with FP32 on keypoints; exit 1 when outside the tolerance (a CI gate).

    Example: heatdeploy parity bundle/ --candidate onnx-int8 --out parity/
    """
    _, code = parity_bundle(bundle, candidate, reference=reference, data=data, tolerance=tolerance, out=out,
                            limit=limit, backend=backend, floor=floor)
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
    data: Annotated[str | None, typer.Option(help="images to judge logits vs probabilities on (folder, video, "
                                                   ".npy/.npz); default: random inputs")] = None,
    data_size: Annotated[int, typer.Option(help="images used from --data")] = 8,
) -> None:
    """Propose a ModelSpec from the graph (layouts, stride, heatmap/existence outputs, logits or not).

    Example: heatdeploy spec infer model.onnx --names nose,left_eye,right_eye --data images/ --out spec.json
    """
    from heatdeploy.spec_infer import infer_spec, write_spec_proposal

    spec, notes = infer_spec(model, keypoint_names=names.split(",") if names else None, data=data,
                             data_size=data_size)
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


# --- bench -------------------------------------------------------------------------------------------
@app.command()
@cli_errors
def bench(
    bundle: Annotated[Path, typer.Argument(help="bundle directory")],
    artifact: Annotated[list[str] | None, typer.Option(help="artifact(s) to time (default: all)")] = None,
    batch: Annotated[str, typer.Option(help="comma-separated batch sizes")] = "1,8",
    threads: Annotated[str, typer.Option(help="comma-separated thread counts; 0 = engine default (all)")] = "1,0",
    iters: Annotated[int, typer.Option(help="timed runs per configuration")] = 30,
    warmup: Annotated[int, typer.Option(help="untimed runs first")] = 5,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="folder for bench.json + bench.png")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Latency p50/p90/p99 and throughput per artifact, split into preprocess / infer / decode.

    Also the pipeline's overhead over a bare engine call on the same input, and each artifact's
    speed-up over the first one (an INT8 artifact slower than FP32 shows as < 1.0).

    Example: heatdeploy bench bundle/ --batch 1,8 --threads 1,0 --out bench/
    """
    from heatdeploy.bench import bench_plot, rows_to_dicts, run_bench
    from heatdeploy.fsutil import atomic_write_text

    with console.status("benchmarking") as status:
        rows = run_bench(bundle, artifacts=artifact, batches=[int(b) for b in batch.split(",")],
                         threads=[int(t) for t in threads.split(",")], iters=iters, warmup=warmup,
                         progress=lambda m: status.update(f"benchmarking {m}"))
    data = rows_to_dicts(rows)
    if out is not None:
        atomic_write_text(out / "bench.json", json.dumps(data, indent=2))
        bench_plot(rows, out / "bench.png")
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    table = Table(title=f"bench {bundle} (ms; overhead = pipeline / bare engine call; speed-up vs first artifact)")
    cols = ["artifact", "batch", "threads", "p50", "p90", "p99", "img/s", "pre", "infer", "decode", "bare",
            "overhead", "speed-up"]
    for c in cols:
        table.add_column(c, justify="right" if c != "artifact" else "left")
    for r in rows:
        table.add_row(r.artifact, str(r.batch), str(r.threads or "all"), f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}",
                      f"{r.p99_ms:.2f}", f"{r.throughput_ips:.1f}", f"{r.preprocess_ms:.2f}", f"{r.infer_ms:.2f}",
                      f"{r.decode_ms:.2f}", f"{r.bare_infer_p50_ms:.2f}", f"{r.overhead:.3f}",
                      f"{r.vs_first:.2f}x" + (" SLOWER" if r.vs_first < 1 else ""))
    Console(width=160).print(table)


# --- devices and TensorRT ----------------------------------------------------------------------------
devices_app = typer.Typer(help="Device profiles (TOML) and detection of this machine.", no_args_is_help=False,
                          invoke_without_command=True, rich_markup_mode=None)
app.add_typer(devices_app, name="devices")


@devices_app.callback()
def devices_list(ctx: typer.Context,
                 as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the device profiles. Example: heatdeploy devices; heatdeploy devices probe"""
    if ctx.invoked_subcommand is not None:
        return
    from heatdeploy.devices.profiles import describe_profiles

    rows = describe_profiles()
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title="device profiles (heatdeploy devices --json for descriptions)")
    cols = [c for c in rows[0] if c != "description"]
    for col in cols:
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(*(str(r[c]) for c in cols))
    Console().print(table)


@devices_app.command("probe")
@cli_errors
def devices_probe(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Detect this machine (CPU flags, Jetson model, JetPack/TensorRT/CUDA, GPU, engines) and recommend a profile.

    Example: heatdeploy devices probe
    """
    from heatdeploy.devices.probe import probe, probe_lines, recommend

    p = probe()
    name, why = recommend(p)
    if as_json:
        sys.stdout.write(json.dumps({**p.to_dict(), "recommended": name, "reasons": why}, indent=2) + "\n")
        return
    for line in probe_lines(p, name, why):
        Console().print(line, highlight=False, soft_wrap=True)


@app.command("build-engine")
@cli_errors
def build_engine_cmd(
    bundle: Annotated[Path, typer.Argument(help="bundle prepared by 'heatdeploy export --format tensorrt'")],
    precision: Annotated[str | None, typer.Option(help="fp32 | fp16 | int8 (default: the profile's)")] = None,
    device: Annotated[str | None, typer.Option(help="device profile (default: the one the bundle was "
                                                    "prepared for)")] = None,
    force: Annotated[bool, typer.Option(help="rebuild even when a valid cached engine exists")] = False,
) -> None:
    """Build (or reuse) the TensorRT engine on this device; cached under (model, TensorRT, GPU, precision, options).

    Example: heatdeploy build-engine bundle/ --precision int8
    """
    from heatdeploy.devices.profiles import load_profile
    from heatdeploy.exporters.tensorrt import build_engine

    profile = load_profile(device) if device else None
    result = build_engine(bundle, precision, profile=profile, force=force,
                          log=lambda m: console.print(m, highlight=False))
    console.print(str(result), highlight=False, soft_wrap=True)


# --- training ----------------------------------------------------------------------------------------
@app.command("train-reference")
@cli_errors
def train_reference_cmd(
    out: Annotated[Path, typer.Option(help="weights file to write")] = Path("runs/reference.pt"),
    steps: Annotated[int, typer.Option(help="optimiser steps (the shipped weights used 1200)")] = 1200,
    batch: Annotated[int, typer.Option(help="images per step")] = 32,
    seed: Annotated[int, typer.Option(help="data and init seed")] = 0,
    val_every: Annotated[int, typer.Option(help="validate every N steps (0: only at the end)")] = 200,
) -> None:
    """Train the reference model from scratch on the synthetic set (about an hour on 2 CPU cores).

    Example: heatdeploy train-reference --out runs/reference.pt
    """
    from heatdeploy.models.train import TrainConfig, train_reference

    cfg = TrainConfig(steps=steps, batch=batch, seed=seed, val_every=val_every or steps)
    record = train_reference(out, cfg, log=lambda s: console.print(s, highlight=False))
    console.print(f"weights: {out} ({record['seconds']:.0f} s on {record['device']}); "
                  f"last validation: {record['history'][-1] if record['history'] else 'none'}")


@app.command("make-data", hidden=True)
def make_data(n_eval: int = 300) -> None:
    """Regenerate the shipped evaluation split and sample images (deterministic)."""
    from heatdeploy.models.evalset import make_shipped_data

    make_shipped_data(n_eval)


# --- the main job ------------------------------------------------------------------------------------
@app.command()
@cli_errors
def demo(out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("out")) -> None:
    """The main job on the shipped reference model: export, run on samples, evaluate.

    Example: heatdeploy demo --out out/
    """
    from heatdeploy.fsutil import atomic_write_text
    from heatdeploy.models.evalset import SAMPLES_DIR

    bundle = out / "bundle"
    export_bundle("reference", bundle)
    add_int8(bundle, "synthetic:256")
    records = run_images(bundle, [SAMPLES_DIR], out / "samples")
    report = eval_bundle(bundle)
    atomic_write_text(out / "eval.json", json.dumps(report, indent=2))
    print_report("reference model, ONNX Runtime FP32, shipped evaluation split", report)
    result, code = parity_bundle(bundle, "onnx-int8", out=out / "parity")
    console.print(f"bundle: {bundle} (onnx-fp32, onnx-int8)")
    console.print(f"keypoints JSON: {out / 'samples' / 'predictions.json'} ({len(records)} images)")
    console.print(f"overlays: {out / 'samples' / 'overlays'}")
    console.print(f"accuracy: {out / 'eval.json'}")
    console.print(f"INT8 parity report: {out / 'parity' / 'parity.html'} and {out / 'parity' / 'parity.json'}")
    console.print(f"INT8 parity vs FP32: {'PASSED' if code == 0 else 'FAILED'} — {result.headline()}",
                  highlight=False)
    if code:
        raise typer.Exit(code)


if __name__ == "__main__":
    app()
