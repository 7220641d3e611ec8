"""The library API the CLI is a face of: export, calibrate, add, parity, evaluate.

Each function mirrors its ``heatdeploy`` command's options and returns what the command prints, so a script
or notebook gets the same behaviour without parsing output. Long steps report through :class:`Hooks`
(quiet by default); the CLI passes hooks that print and spin.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from heatdeploy.calibration import QAT_MODES, SYMMETRIC_ACTIVATIONS
from heatdeploy.errors import HeatdeployError, InputError

FORMATS = {"onnx": ("fp32", "int8"), "openvino": ("fp32", "fp16", "bf16", "int8"),
           "tensorrt": ("fp32", "fp16", "int8")}
KEEP_MODES = ("auto", "base", "none")


class ExportTargetError(HeatdeployError, ValueError):
    """``--out`` points at something export did not make (a file, a foreign folder)."""


def _silent(_: str) -> None:
    return None


def _no_status(_: str) -> ContextManager[Any]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Hooks:
    """How a long step talks to its caller: ``log`` a finished line, ``status`` a spinner around a step,
    ``progress(what, done, total)`` for counted work. Defaults are silent: a library call prints nothing."""

    log: Callable[[str], None] = _silent
    status: Callable[[str], ContextManager[Any]] = _no_status
    progress: Callable[[str, int, int | None], None] | None = None


QUIET = Hooks()


@dataclass(frozen=True)
class Int8Options:
    """Everything INT8 calibration takes, passed as one value instead of a dozen parameters.

    ``keep_fp32``: auto | base | none | comma-separated node names (IR op names for OpenVINO);
    ``preset`` / ``accuracy_control`` are OpenVINO/NNCF's, ``activation_type`` / ``symmetric_activations`` ORT's.
    """

    calib: str | None = None
    method: str = "auto"
    calib_size: int | None = None
    seed: int = 0
    keep_fp32: str = "auto"
    preset: str = "mixed"
    accuracy_control: float | None = None
    activation_type: str = "auto"
    symmetric_activations: bool = SYMMETRIC_ACTIVATIONS
    budget_s: float = 300.0  # ORT: sensitivity pass + latency-measured mix search; OpenVINO: QAT's training
    qat: str = "off"  # OpenVINO INT8: off | auto | on (calibration/qat.py)

    def keep_list(self) -> str | list[str]:
        """A mode (auto, base, none) or the node names, as the quantizers take them."""
        return self.keep_fp32 if self.keep_fp32 in KEEP_MODES else self.keep_fp32.split(",")


@dataclass
class ExportResult:
    """The bundle written, the artifacts this export made, and those of the old bundle kept or dropped."""

    bundle: Path
    made: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


# --- export ------------------------------------------------------------------------------------------
def export(model: str, out: str | Path, *, format: str = "onnx", precision: str = "fp32",
           weights: str | None = None, spec: str | None = None, opset: int | None = None,
           device: str | None = None, calib: str | None = None, calib_method: str = "auto",
           calib_size: int | None = None, seed: int = 0, keep_fp32: str = "auto", preset: str = "mixed",
           accuracy_control: float | None = None, force: bool = False, budget_s: float = 300.0,
           qat: str = "off", hooks: Hooks = QUIET) -> ExportResult:
    """``heatdeploy export``: MODEL -> bundle at ``out`` (FP32 ONNX, plus INT8 / OpenVINO / TensorRT artifacts).

    ``out`` may be new, empty, or a heatdeploy bundle (its other artifacts are kept while they still belong to
    the exported model); a file or a folder export did not make is refused unless ``force``.
    """
    from heatdeploy.devices.profiles import load_profile, resolve_opset

    out = Path(out)
    if format not in FORMATS:
        raise HeatdeployError(f"--format {format}: choose onnx, openvino or tensorrt")
    if precision not in FORMATS[format]:
        raise HeatdeployError(f"--precision {precision}: choose one of {', '.join(FORMATS[format])} for {format}")
    if precision == "int8" and calib is None:
        raise HeatdeployError("--precision int8 needs --calib DATA (an image folder, video, .npy or synthetic)")
    check_qat(qat)
    check_export_target(out)
    profile = load_profile(device) if device else None
    opset_used, why = resolve_opset(profile, opset)
    if profile is not None:
        hooks.log(f"device profile {profile.name}: opset {opset_used} ({why})")
    int8 = Int8Options(calib=calib, method=calib_method, calib_size=calib_size, seed=seed, keep_fp32=keep_fp32,
                       preset=preset, accuracy_control=accuracy_control,
                       activation_type=profile.activation_type if profile is not None else "auto",
                       symmetric_activations=format == "tensorrt", budget_s=budget_s, qat=qat)  # TensorRT: symmetric
    if model.endswith(".tflite"):
        from heatdeploy.exporters.tflite import check_tflite, require_spec

        require_spec(check_tflite(model), spec)  # before any work: a .tflite carries no spec
        if format == "openvino":  # OpenVINO reads the .tflite itself: no ONNX, no converter
            return _export_tflite_openvino(model, out, spec, precision, int8, force, hooks)
    result = _export_fp32(model, out, weights, spec, opset_used, force, hooks)
    if precision == "int8" and format != "openvino":
        add_int8(out, int8, hooks=hooks)
        result.made.append("onnx-int8")
    if format == "openvino":
        from heatdeploy.exporters.openvino import add_openvino_artifact, summary_line

        with hooks.status(f"OpenVINO {precision} export"):
            art = add_openvino_artifact(out, precision, calib=int8.calib, calib_size=int8.calib_size,
                                        seed=int8.seed, preset=int8.preset, accuracy_control=int8.accuracy_control,
                                        keep_fp32=int8.keep_list(), qat=int8.qat, budget_s=int8.budget_s)
        hooks.log(summary_line(art))
        result.made.append(art.name)
    if format == "tensorrt":
        from heatdeploy.exporters.tensorrt import export_tensorrt

        trt = export_tensorrt(out, precision, profile, log=hooks.log)
        for line in trt.lines():
            hooks.log(line)
    return result


def _export_tflite_openvino(model: str, out: Path, spec: str | None, precision: str, int8: Int8Options,
                            force: bool, hooks: Hooks) -> ExportResult:
    from heatdeploy.exporters.tflite import export_tflite_openvino, summary_line

    old = _old_artifacts(out)
    with hooks.status(f"OpenVINO {precision} export from {model}"):
        arts = export_tflite_openvino(model, out, spec_path=spec, precision=precision, calib=int8.calib,
                                      calib_size=int8.calib_size, seed=int8.seed, preset=int8.preset,
                                      accuracy_control=int8.accuracy_control, force=force)
    for art in arts:
        hooks.log(summary_line(art))
    made = [a.name for a in arts]
    dropped = [n for n in old if n not in made]
    if dropped:
        hooks.log(f"dropped from the old bundle (a .tflite OpenVINO export writes a new bundle): {', '.join(dropped)}")
    return ExportResult(out, made=made, dropped=dropped)


def export_bundle(model: str, out: str | Path, *, weights: str | None = None, spec_path: str | None = None,
                  opset: int = 17, force: bool = False, hooks: Hooks = QUIET) -> Path:
    """MODEL -> bundle directory with model.onnx (FP32); built beside ``out`` and renamed into place.

    Over an existing bundle, its other artifacts (INT8, OpenVINO, ...) come along when the new FP32 model is
    the same file with the same spec; otherwise they are stale and dropped (logged). Returns ``out``.
    """
    out = Path(out)
    check_export_target(out)
    _export_fp32(model, out, weights, spec_path, opset, force, hooks)
    return out


def _export_fp32(model: str, out: Path, weights: str | None, spec_path: str | None, opset: int, force: bool,
                 hooks: Hooks) -> ExportResult:
    from heatdeploy.bundle import Bundle, staged_dir

    old = _load_old(out)
    with staged_dir(out, force=force) as tmp:
        spec, tools, notes = _make_onnx(model, tmp / "model.onnx", weights, spec_path, opset, hooks)
        bundle = Bundle.create(tmp, spec)
        fp32 = bundle.add_file(tmp / "model.onnx", "model.onnx", name="onnx-fp32", format="onnx",
                               precision="fp32", backend="onnxruntime", tools=tools, notes=notes)
        bundle.info["source"] = model
        kept, dropped = _carry_over(old, bundle, fp32)
        bundle.save()
    if dropped:
        hooks.log(f"dropped from the old bundle (stale for the new model): {', '.join(dropped)}")
    if kept:
        hooks.log(f"kept from the old bundle (same FP32 model and spec): {', '.join(kept)}")
    return ExportResult(out, made=["onnx-fp32"], kept=kept, dropped=dropped)


def _make_onnx(model: str, dest: Path, weights: str | None, spec_path: str | None, opset: int,
               hooks: Hooks) -> tuple[Any, dict[str, str], dict[str, Any]]:
    """The FP32 ONNX from whichever MODEL form was given: (spec, tools, notes)."""
    if model.endswith(".onnx"):
        return _import_onnx(Path(model), dest, spec_path)
    if model.endswith(".tflite"):
        from heatdeploy.exporters.tflite import import_tflite_onnx

        with hooks.status(f"converting {model} to ONNX"):
            spec, tools, notes = import_tflite_onnx(Path(model), dest, spec_path, opset=opset)
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in notes.get("max_abs_diff", {}).items())
        hooks.log(f"converted {model} to ONNX opset {notes['opset']} via {notes['converter']}"
                  + (f"; max |ORT - OpenVINO f32 on the .tflite|: {diffs}" if diffs else ""))
        return spec, tools, notes
    from heatdeploy.exporters.onnx import export_onnx
    from heatdeploy.exporters.sources import load_torch_model

    with hooks.status(f"loading {model}"):
        module, spec = load_torch_model(model, weights=weights, spec_path=spec_path)
    with hooks.status(f"exporting {model} to ONNX (opset {opset})"):
        rep = export_onnx(module, spec, dest, opset=opset)
    diffs = ", ".join(f"{k} {v:.2e}" for k, v in rep.max_abs_diff.items())
    hooks.log(f"exported ONNX opset {rep.opset} via {rep.exporter}; max |ORT FP32 - torch|: {diffs}")
    notes = {"opset": rep.opset, "exporter": rep.exporter, "max_abs_diff_vs_torch": rep.max_abs_diff,
             "optimized": rep.optimized, "export_notes": rep.notes}
    return spec, rep.tools, notes


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


# --- export target: never delete what export did not make ----------------------------------------------
def check_qat(qat: str) -> None:
    """Refuse a bad --qat before any work (the OpenVINO exporter checks it again where it is used)."""
    if qat not in QAT_MODES:
        raise InputError(f"--qat {qat}: choose one of {', '.join(QAT_MODES)}")


def check_export_target(out: Path) -> None:
    """Refuse an ``--out`` inside a file before any work (the bundle's staged_dir refuses a file or a foreign
    folder *at* ``out`` unless forced)."""
    parent = next((p for p in out.absolute().parents if os.path.lexists(p)), None)
    if parent is not None and not parent.is_dir():
        raise ExportTargetError(f"{parent}: is a file, so --out {out} cannot be a folder inside it; choose "
                                "another --out")


def _load_old(out: Path) -> Any:
    """The bundle at ``out`` to carry artifacts over from, or None (new folder, or unreadable manifest)."""
    from heatdeploy.bundle import Bundle, is_bundle

    if not out.is_dir() or not is_bundle(out):
        return None
    try:
        return Bundle.load(out, verify=False)
    except HeatdeployError:
        return None


def _old_artifacts(out: Path) -> list[str]:
    old = _load_old(out)
    return [a.name for a in old.artifacts] if old is not None else []


def _carry_over(old: Any, bundle: Any, fp32: Any) -> tuple[list[str], list[str]]:
    """Copy the old bundle's other artifacts into the new one when they were made from this same FP32 model.

    Same model = same ONNX bytes (the export is deterministic) and the same spec; a file that no longer matches
    its manifest hash is dropped too. Returns (kept, dropped) artifact names.
    """
    from heatdeploy.fsutil import sha256_file

    if old is None:
        return [], []
    others = [a for a in old.artifacts if a.name != fp32.name]
    old_fp32 = next((a for a in old.artifacts if a.name == fp32.name), None)
    same = old_fp32 is not None and old_fp32.sha256 == fp32.sha256 and old.spec.to_dict() == bundle.spec.to_dict()
    if not same:
        return [], [a.name for a in others]
    kept, dropped = [], []
    for art in others:
        files = {art.path: art.sha256, **art.extra_files}
        try:
            srcs = {rel: old.path_of(rel) for rel in files}
            intact = all(p.is_file() and sha256_file(p) == digest for p, digest in
                         ((srcs[rel], d) for rel, d in files.items()))
        except HeatdeployError:
            intact = False
        if not intact:
            dropped.append(art.name)
            continue
        for rel, src in srcs.items():
            dest = bundle.path_of(rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        bundle.artifacts.append(replace(art))
        kept.append(art.name)
    return kept, dropped


# --- calibrate ---------------------------------------------------------------------------------------
def calibrate(bundle: str | Path, data: str, *, method: str = "auto", calib_size: int | None = None,
              seed: int = 0, keep_fp32: str = "auto", symmetric: bool = SYMMETRIC_ACTIVATIONS,
              activation_type: str = "auto", budget_s: float = 300.0, hooks: Hooks = QUIET) -> Any:
    """``heatdeploy calibrate``: add the ORT INT8 artifact (model.int8.onnx + ranges) to ``bundle``.

    Returns the calibration report (``summary()``, ranges, what stayed FP32).
    """
    opts = Int8Options(calib=data, method=method, calib_size=calib_size, seed=seed, keep_fp32=keep_fp32,
                       activation_type=activation_type, symmetric_activations=symmetric, budget_s=budget_s)
    return add_int8(Path(bundle), opts, hooks=hooks)


def add_int8(bundle: str | Path, calib: str | Int8Options | None, *, hooks: Hooks = QUIET, **options: Any) -> Any:
    """Calibrate and add the ORT INT8 artifact; log what stayed FP32 and what runs INT8.

    ``calib`` is the data (with ``options`` as :class:`Int8Options` fields) or a whole Int8Options.
    """
    from heatdeploy.calibration.artifact import add_onnx_int8

    opts = calib if isinstance(calib, Int8Options) else Int8Options(calib=calib, **options)
    with hooks.status(f"calibrating INT8 ({opts.method}) on {opts.calib}"):
        art, report = add_onnx_int8(Path(bundle), opts.calib or "synthetic", method=opts.method,
                                    calib_size=opts.calib_size, seed=opts.seed, keep_fp32=opts.keep_list(),
                                    activation_type=opts.activation_type,
                                    symmetric_activations=opts.symmetric_activations, budget_s=opts.budget_s,
                                    progress=hooks.log)
    hooks.log(f"INT8 artifact {art.name}: {report.summary()}")
    return report


# --- add: another artifact into an existing bundle -----------------------------------------------------
ADD_FORMATS = ("onnx", "openvino")
STOCK_ARTIFACTS = {"onnx": "onnx-int8-stock", "openvino": "openvino-int8-stock"}


def add(bundle: str | Path, *, format: str | None = None, precision: str | None = None,
        calib: str | None = None, stock: bool = False, calib_method: str = "auto", calib_size: int | None = None,
        seed: int = 0, keep_fp32: str = "auto", preset: str = "mixed", accuracy_control: float | None = None,
        budget_s: float = 300.0, qat: str = "off", replace: bool = False, hooks: Hooks = QUIET) -> ExportResult:
    """``heatdeploy add``: put another artifact into an existing bundle; every artifact already there stays.

    ``format`` onnx | openvino with ``precision`` (onnx: int8; openvino: fp32, fp16, bf16, int8; INT8 needs
    ``calib``), made from the bundle's ``onnx-fp32`` by heatdeploy's recipe. ``stock``: the stock INT8
    baselines instead, for comparison on the same calibration data: ORT ``quantize_static`` defaults
    (``onnx-int8-stock``) and ``nncf.quantize`` defaults (``openvino-int8-stock``); ``format`` picks one, left out
    both (OpenVINO's only where openvino and nncf are installed). An artifact the bundle already has is refused
    unless ``replace``. Each artifact is its own bundle transaction (:meth:`heatdeploy.bundle.Bundle.change`):
    a failure keeps the bundle as it was. Returns made (new artifacts) and kept (those already there).
    """
    from heatdeploy.bundle import Bundle

    root = Path(bundle)
    check_qat(qat)
    steps = _add_steps(format, precision, calib, stock, hooks)
    before = [a.name for a in Bundle.load(root, verify=False).artifacts]  # refuses a folder that is not a bundle
    have = [name for name, _ in steps if name in before]
    if have and not replace:
        raise InputError(f"{root}: already has {', '.join(have)}; pass --replace to rebuild it")
    int8 = Int8Options(calib=calib, method=calib_method, calib_size=calib_size, seed=seed, keep_fp32=keep_fp32,
                       preset=preset, accuracy_control=accuracy_control, budget_s=budget_s, qat=qat)
    made: list[str] = []
    for name, step in steps:
        step(root, int8)
        made.append(name)
    after = [a.name for a in Bundle.load(root, verify=False).artifacts]
    made += [n for n in after if n not in before and n not in made]  # e.g. openvino-fp32 beside openvino-int8
    lost = [n for n in before if n not in after]
    if lost:  # the transactions never drop an artifact; a concurrent change could
        hooks.log(f"no longer in the bundle (removed by another change meanwhile): {', '.join(lost)}")
    return ExportResult(root, made=made, kept=[n for n in before if n not in made and n in after])


AddStep = Callable[[Path, Int8Options], Any]


def _add_steps(format: str | None, precision: str | None, calib: str | None, stock: bool,
               hooks: Hooks) -> list[tuple[str, AddStep]]:
    """(artifact name, step) for what ``add`` was asked; every bad combination refused before any work."""
    if format is not None and format not in ADD_FORMATS:
        hint = ("; a TensorRT engine is built on its device: 'heatdeploy export MODEL --format tensorrt' then "
                "'heatdeploy build-engine'" if format == "tensorrt" else "")
        raise InputError(f"--format {format}: choose onnx or openvino{hint}")
    if stock:
        if precision not in (None, "int8"):
            raise InputError(f"--precision {precision}: the --stock baselines are INT8; leave --precision out")
        if calib is None:
            raise InputError("--stock needs --calib DATA (the data the bundle's own INT8 was calibrated on, so "
                             "only the recipe differs)")
        engines = [format] if format is not None else [e for e in ADD_FORMATS if _engine_here(e, hooks)]
        return [(STOCK_ARTIFACTS[e], _stock_step(e, hooks)) for e in engines]
    if format is None:
        raise InputError("--format: choose onnx or openvino (or pass --stock for the stock INT8 baselines)")
    precision = precision or ("int8" if format == "onnx" else "fp32")
    if format == "onnx" and precision == "fp32":
        raise InputError("--format onnx --precision fp32: that is the exported model itself; 'heatdeploy export "
                         "MODEL --out BUNDLE' writes it (and keeps the bundle's artifacts of the same model)")
    if precision not in FORMATS[format]:
        choices = [p for p in FORMATS[format] if (format, p) != ("onnx", "fp32")]
        raise InputError(f"--precision {precision}: choose one of {', '.join(choices)} for {format}")
    if precision == "int8" and calib is None:
        raise InputError("--precision int8 needs --calib DATA (an image folder, video, .npy or synthetic)")
    if format == "onnx":
        return [("onnx-int8", lambda root, opts: add_int8(root, opts, hooks=hooks))]

    def openvino(root: Path, opts: Int8Options) -> Any:
        from heatdeploy.exporters.openvino import add_openvino_artifact, summary_line

        with hooks.status(f"OpenVINO {precision} export"):
            art = add_openvino_artifact(root, precision, calib=opts.calib, calib_size=opts.calib_size,
                                        seed=opts.seed, preset=opts.preset, accuracy_control=opts.accuracy_control,
                                        keep_fp32=opts.keep_list(), qat=opts.qat, budget_s=opts.budget_s)
        hooks.log(summary_line(art))
        return art

    return [(f"openvino-{precision}", openvino)]


def _stock_step(engine: str, hooks: Hooks) -> AddStep:
    def step(root: Path, opts: Int8Options) -> Any:
        from heatdeploy.calibration import stock

        make = stock.add_stock_int8 if engine == "onnx" else stock.add_stock_nncf
        recipe = "onnxruntime quantize_static" if engine == "onnx" else "nncf.quantize"
        with hooks.status(f"stock INT8 ({recipe} defaults) on {opts.calib}"):
            art = make(root, opts.calib or "synthetic:128", calib_size=opts.calib_size, seed=opts.seed)
        hooks.log(f"stock baseline {art.name}: {recipe} defaults, {art.size / 1e6:.2f} MB")
        return art

    return step


def _engine_here(engine: str, hooks: Hooks) -> bool:
    """Can this machine build ``engine``'s stock baseline? (ORT always; OpenVINO's needs openvino and nncf.)"""
    import importlib.util

    if engine == "onnx" or all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf")):
        return True
    hooks.log(f"{STOCK_ARTIFACTS[engine]} skipped: openvino and nncf are not installed "
              "(pip install 'heatdeploy[openvino]')")
    return False


# --- choose: what the bundle deploys on this machine ----------------------------------------------------
def choose(bundle: str | Path, *, threads: int = 1, seconds: float = 4.0, record: bool = True) -> Any:
    """``heatdeploy choose``: time every artifact that holds the parity gate here and deploy the fastest.

    Returns the :class:`~heatdeploy.runtime.choice.DeployChoice`; with ``record`` it is stored in the manifest,
    and ``Pipeline.load`` (so ``run`` and ``bench``) uses it when asked for no artifact, precision or backend.
    """
    from heatdeploy.bundle import Bundle
    from heatdeploy.runtime.choice import choose as choose_artifact
    from heatdeploy.runtime.choice import record_choice

    root = Path(bundle)
    choice = choose_artifact(Bundle.load(root), threads=threads, seconds=seconds)
    if record:
        record_choice(root, choice)
    return choice


# --- parity ------------------------------------------------------------------------------------------
def parity(bundle: str | Path, candidate: str, *, reference: str = "onnx-fp32", data: str | None = None,
           tolerance: str = "default", out: str | Path | None = None, limit: int | None = None,
           backend: str | None = None, floor: bool = True, batch_size: int = 8, hooks: Hooks = QUIET) -> Any:
    """``heatdeploy parity``: compare ``candidate`` with the FP32 ``reference`` on keypoints.

    Returns the parity result (``passed``, ``exit_code``, ``headline()``, the checks); writes parity.json and
    parity.html under ``out`` and records the verdict in the bundle's manifest. A failed gate is a result,
    not an exception.
    """
    return parity_bundle(Path(bundle), candidate, reference=reference, data=data, tolerance=tolerance,
                         out=Path(out) if out is not None else None, limit=limit, backend=backend, floor=floor,
                         batch_size=batch_size, hooks=hooks)[0]


def parity_bundle(bundle: Path, candidate: str, *, reference: str = "onnx-fp32", data: str | None = None,
                  tolerance: str = "default", out: Path | None = None, limit: int | None = None,
                  backend: str | None = None, floor: bool = True, batch_size: int = 8,
                  hooks: Hooks = QUIET) -> tuple[Any, int]:
    """:func:`parity` plus its exit code (0 pass, 1 out of tolerance)."""
    from heatdeploy.parity import parity_command

    desc = f"parity {candidate} vs {reference}"
    report = hooks.progress
    return parity_command(bundle, candidate, reference, data, tolerance, out, limit=limit, backend=backend,
                          floor=floor, batch_size=batch_size,
                          progress=(lambda d, t: report(desc, d, t)) if report else None)


# --- evaluate ----------------------------------------------------------------------------------------
def evaluate(bundle: str | Path, data: str | Path | None = None, *, images: str | Path | None = None,
             precision: str | None = None, backend: str | None = None, artifact: str | None = None,
             hooks: Hooks = QUIET) -> dict[str, Any]:
    """``heatdeploy eval``: PCK@0.05 and existence accuracy of an artifact against the user's labels.

    ``data``: a labelled split (folder with labels.json), or a COCO keypoints JSON (then ``images`` is its
    image folder, default the JSON's) which adds COCO OKS AP; left out, the shipped split (reference model
    only). Returns the report as a dict (metric -> value).
    """
    return eval_bundle(Path(bundle), Path(data) if data is not None else None, precision=precision,
                       backend=backend, artifact=artifact, images=Path(images) if images is not None else None,
                       hooks=hooks)


def eval_bundle(bundle: Path, data: Path | None = None, *, precision: str | None = None,
                backend: str | None = None, artifact: str | None = None, images: Path | None = None,
                hooks: Hooks = QUIET) -> dict[str, Any]:
    from heatdeploy.evaluate import eval_dataset, evaluate_coco
    from heatdeploy.evaluate import evaluate as score
    from heatdeploy.runtime import Pipeline

    pipe = Pipeline.load(bundle, artifact=artifact, precision=precision, backend=backend)
    done = [0]

    def progress(total: int) -> Callable[[int], None]:
        def advance(n: int) -> None:
            done[0] += n
            if hooks.progress is not None:
                hooks.progress("evaluating", done[0], total)
        return advance

    if data is not None and data.suffix.lower() == ".json":
        from heatdeploy.coco import read_coco

        coco = read_coco(data, images, pipe.spec.num_keypoints)
        total = len(set(coco.ann_image.tolist())) if pipe.spec.multi_instance else int((~coco.ignore).sum())
        _, report = evaluate_coco(pipe, coco, advance=progress(total))
    else:
        if images is not None:
            raise InputError(f"--images {images}: only a COCO keypoints file (--data FILE.json) takes an images "
                             "folder; a labelled split keeps its images beside labels.json")
        split = eval_dataset(pipe.spec, data)
        _, report = score(pipe, split, advance=progress(len(split)))
    report["artifact"] = pipe.artifact.name if pipe.artifact else str(bundle)
    report["backend"] = pipe.backend_name
    return report
