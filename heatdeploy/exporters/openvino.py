"""A bundle's FP32 ONNX -> OpenVINO IR (fp32, fp16, bf16, int8), written into the same bundle.

Each precision is its own artifact ``openvino-<precision>`` at ``openvino/model.<precision>.xml`` with its
``.bin`` as a hashed extra file, so ``Bundle.load`` verifies both and the runtime picks the openvino
backend from the manifest. The IR carries the ModelSpec in ``rt_info`` (``heatdeploy/spec``) and the
inference precision the runtime must compile it with (``heatdeploy/inference_precision``):

- ``fp32``: f32 weights, compiled with ``INFERENCE_PRECISION_HINT=f32``. OpenVINO's CPU default on bf16
  hardware is bf16, which is not what FP32 parity promises.
- ``bf16``: the same IR, compiled with the bf16 hint: the CPU's fast float path, with its own parity.
- ``fp16``: FP16-compressed weights (half the file); compute in f16 where the device has it (GPU, NPU,
  AVX512-FP16/AMX-FP16 CPUs), else f32 — never bf16 behind the user's back.
- ``int8``: NNCF post-training quantization (:mod:`heatdeploy.calibration.nncf_quantize`) from the same
  calibration sources as ORT INT8; the float scope (head tails, Sigmoid/Softmax) is compiled in f32.

The batch dimension stays dynamic. Files are written to a temporary folder inside the bundle and copied
into place atomically; the manifest is re-read just before it is saved so other artifacts' edits survive.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from heatdeploy import __version__
from heatdeploy.bundle import Artifact, Bundle, BundleError
from heatdeploy.calibration import QAT_MODES
from heatdeploy.errors import HeatdeployError
from heatdeploy.errortext import cause_line
from heatdeploy.fsutil import sha256_file, temp_dir
from heatdeploy.runtime.backends.openvino import RT_INFERENCE, RT_PRECISION, RT_SECTION, RT_SPEC, spec_from_model
from heatdeploy.spec import ModelSpec

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# The IR's inference precision preference (first the device supports); see the module docstring.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16,f32", "int8": "f32"}
WEIGHTS = {"fp32": "f32", "bf16": "f32 (same IR as fp32)", "fp16": "f16 (compress_to_fp16)",
           "int8": "int8 (NNCF), float scope f32"}
SOURCE_ARTIFACT = "onnx-fp32"
CHECK_SEED = 1234  # seeded inputs for the post-export check against ORT FP32
FLOAT_PART_FRAMES = 32  # frames (another seed than calibration's) the INT8 float-part choice is measured on


class OpenVinoExportError(HeatdeployError, RuntimeError):
    """The ONNX model could not become a usable IR; the message names the file and the fix."""


def artifact_name(precision: str) -> str:
    return f"openvino-{precision}"


def artifact_path(precision: str) -> str:
    return f"openvino/model.{precision}.xml"


# --- conversion ----------------------------------------------------------------------------------


def convert_file(path: Path, kind: str, error: type[Exception], hint: str, limit: int | None = None) -> ov.Model:
    """``openvino.convert_model`` on ``path``; a failure is one line naming the file, the cause and ``hint``."""
    try:
        return ov.convert_model(str(path))
    except Exception as exc:
        raise error(f"{path}: OpenVINO could not convert the {kind} model ({cause_line(exc, limit)}); {hint}") from None


def convert_onnx(onnx_path: str | Path, spec: ModelSpec) -> tuple[ov.Model, list[str]]:
    """``openvino.convert_model`` on the ONNX file; the spec's tensors must be the IR's; the batch stays as the
    ONNX has it (dynamic, or the size the graph hard-codes)."""
    onnx_path = Path(onnx_path)
    model = convert_file(onnx_path, "ONNX", OpenVinoExportError, "check its opset and operators")
    notes: list[str] = []
    inputs = {n: p for p in model.inputs for n in p.get_names()}
    outputs = {n for p in model.outputs for n in p.get_names()}
    if spec.input.name not in inputs:
        raise OpenVinoExportError(f"{onnx_path}: the spec's input {spec.input.name!r} is not an IR input "
                                  f"({', '.join(sorted(inputs))}); fix input.name in the spec")
    missing = [n for n in spec.output_names if n not in outputs]
    if missing:
        raise OpenVinoExportError(f"{onnx_path}: spec output(s) {', '.join(missing)} not among the IR outputs "
                                  f"({', '.join(sorted(outputs))}); fix heatmap.name / existence.name in the spec")
    shape = inputs[spec.input.name].get_partial_shape()
    if shape.rank.is_static and shape.rank.get_length() > 0 and shape[0].is_static:
        # a graph that hard-codes its batch may reshape "fine" and still mix frames (a Reshape to [1, -1]):
        # keep it; the runtime runs any batch in chunks of this size
        notes.append(f"batch stays {shape[0]}: the ONNX graph hard-codes it (batches run in chunks of it)")
    return model, notes


def dynamic_batch(model: ov.Model, input_name: str, source: str) -> list[str]:
    """Make a static batch dimension dynamic (in place) where the graph allows; a note saying what happened."""
    shape = {n: p for p in model.inputs for n in p.get_names()}[input_name].get_partial_shape()
    if not (shape.rank.is_static and shape.rank.get_length() > 0 and shape[0].is_static):
        return []
    try:
        model.reshape({input_name: ov.PartialShape([ov.Dimension(), *list(shape)[1:]])})
    except Exception as exc:
        return [f"batch stays {shape[0]}: the graph does not reshape to a dynamic batch ({cause_line(exc)})"]
    return [f"batch dimension made dynamic (the {source} input was {shape})"]


def embed_rt_info(model: ov.Model, spec: ModelSpec, precision: str, extra: dict[str, str] | None = None,
                  inference: str | None = None) -> None:
    """Spec, precision and inference precision under ``rt_info['heatdeploy']`` (read back by the backend).

    ``inference``: the compile precision preference when it is not the precision's default (INT8's float
    part, chosen by measurement: :func:`inference_precision`)."""
    model.set_rt_info(spec.to_json(indent=None), list(RT_SPEC))
    model.set_rt_info(precision, list(RT_PRECISION))
    model.set_rt_info(inference or INFERENCE_PRECISION[precision], list(RT_INFERENCE))
    model.set_rt_info(__version__, [RT_SECTION, "heatdeploy_version"])
    for key, value in (extra or {}).items():
        model.set_rt_info(str(value), [RT_SECTION, key])


def inference_precision(precision: str, calibration: dict[str, Any] | None) -> str:
    """The IR's compile precision: the measured float-part choice for INT8 when made, else the default."""
    chosen = ((calibration or {}).get("float_part") or {}).get("rt_precision")
    return str(chosen) if precision == "int8" and chosen else INFERENCE_PRECISION[precision]


def read_ir_spec(xml: str | Path) -> ModelSpec | None:
    """The spec embedded in an IR's rt_info (None when it carries none)."""
    from heatdeploy.runtime.backends.openvino import read_model

    return spec_from_model(read_model(xml), str(xml))


def fixed_batch_of(model: ov.Model, input_name: str) -> int | None:
    """The batch the IR's input hard-codes, None when it is dynamic."""
    port = next(p for p in model.inputs if input_name in p.get_names())
    shape = port.get_partial_shape()
    if shape.rank.is_static and shape.rank.get_length() > 0 and shape[0].is_static:
        return int(shape[0].get_length())
    return None


def is_dynamic_batch(model: ov.Model, input_name: str) -> bool:
    port = next(p for p in model.inputs if input_name in p.get_names())
    shape = port.get_partial_shape()
    return shape.rank.is_static and shape.rank.get_length() > 0 and shape[0].is_dynamic


# --- the bundle step -----------------------------------------------------------------------------


def add_openvino_artifact(
    bundle_dir: str | Path,
    precision: str,
    *,
    calib: str | None = None,
    calib_size: int | None = 300,
    seed: int = 0,
    preset: str = "mixed",
    accuracy_control: float | None = None,
    accuracy_data: str | None = None,
    validation_size: int = 200,
    pck_alpha: float = 0.05,
    keep_fp32: str | Sequence[str] = "auto",
    target_device: str = "any",
    fast_bias_correction: bool = True,
    max_iterations: int = 20,
    ranking_subset_size: int | None = 100,
    source: str = SOURCE_ARTIFACT,
    check: bool = True,
    float_part: str = "auto",
    qat: str = "off",
    budget_s: float = 300.0,
) -> Artifact:
    """Convert the bundle's ``onnx-fp32`` to OpenVINO at ``precision``, write it and record it in the manifest.

    INT8 options: ``calib`` is anything :func:`~heatdeploy.calibration.sources.open_source` takes (folder,
    video, .npy/.npz, ``synthetic[:N]``; default ``synthetic`` for the shipped reference, required
    otherwise), ``calib_size`` samples with ``seed``; ``preset`` mixed|performance; ``keep_fp32``
    auto|base|none|op names (``auto`` = ``base`` plus the ops heatdeploy's per-layer sensitivity pass, run
    with ORT on the same data, keeps FP32: :mod:`heatdeploy.calibration.sensitivity_scope`);
    ``accuracy_control`` = maximal PCK drop in points, measured on ``accuracy_data`` (a labelled
    split, image folder or ``synthetic:N``; default: ``synthetic:<validation_size>`` with another seed when
    calibrating on synthetic, else the calibration folder) as PCK@``pck_alpha`` (of the image diagonal),
    bounded by ``max_iterations`` and ``ranking_subset_size``. ``check`` runs the IR and ORT FP32 on two
    seeded inputs and records the largest difference per output. ``float_part`` (INT8): auto | f32 | bf16,
    the precision the layers NNCF leaves float compile with (auto: measured, see :func:`_quantize`).
    ``qat`` (INT8): off (default) | auto | on, quantization-aware fine-tuning by distillation
    (:mod:`heatdeploy.calibration.qat`; auto: only when the post-training INT8 does not hold the gate's keypoint
    limits faster than bf16), its training bounded by ``budget_s`` seconds. Off by default: on BlazePose full it
    did not reach the gate's limits within the budget (see the README), so it costs minutes for nothing there.

    Returns the recorded Artifact; its ``calibration`` holds the NNCF report for INT8 (``summary``,
    ``excluded``, ``layers``, ``accuracy_control.reverted_to_fp32``).
    """
    if precision not in PRECISIONS:
        raise OpenVinoExportError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    t_start = time.perf_counter()
    root = Path(bundle_dir)
    bundle = Bundle.load(root, verify=False)
    src = bundle.artifact(source)
    if src.format != "onnx":
        raise BundleError(f"{root}: artifact {source!r} is {src.format}, the OpenVINO exporter converts ONNX; "
                          f"pass source='{SOURCE_ARTIFACT}'")
    onnx_path = bundle.path_of(src)
    # The ONNX we convert must be the one the manifest vouches for (other artifacts need not be intact:
    # re-exporting one is how a broken one is fixed).
    if not onnx_path.is_file() or sha256_file(onnx_path) != src.sha256:
        raise BundleError(f"{onnx_path}: missing or changed since the manifest was written (sha256 mismatch); "
                          "re-export the bundle")
    spec = bundle.spec
    model, conv_notes = convert_onnx(onnx_path, spec)
    t_convert = time.perf_counter() - t_start

    calibration: dict[str, Any] | None = None
    tools = {"openvino": ov.get_version(), "heatdeploy": __version__}
    extra_rt: dict[str, str] = {"source_artifact": source, "source_sha256": src.sha256}
    # a lower precision gets its OpenVINO FP32 reference too, saved once the lower one has succeeded
    fp32_ref = model.clone() if precision != "fp32" and not any(
        a.name == artifact_name("fp32") for a in bundle.artifacts) else None
    if precision == "int8":
        opts = NncfOptions(calib=calib, calib_size=calib_size, seed=seed, preset=preset, keep_fp32=keep_fp32,
                           accuracy_control=accuracy_control, accuracy_data=accuracy_data,
                           validation_size=validation_size, pck_alpha=pck_alpha, target_device=target_device,
                           fast_bias_correction=fast_bias_correction, max_iterations=max_iterations,
                           ranking_subset_size=ranking_subset_size, float_part=float_part, qat=qat,
                           budget_s=budget_s)
        model, calibration, tools["nncf"] = _quantize(model, bundle, opts, onnx_path=onnx_path)
    embed_rt_info(model, spec, precision, extra_rt, inference_precision(precision, calibration))

    notes: dict[str, Any] = {
        "source_artifact": source, "source_sha256": src.sha256,
        "inference_precision": inference_precision(precision, calibration),
        "weights": WEIGHTS[precision], "dynamic_batch": is_dynamic_batch(model, spec.input.name),
        "rt_info": {"spec": "/".join(RT_SPEC), "precision": "/".join(RT_PRECISION),
                    "inference_precision": "/".join(RT_INFERENCE)},
        "convert_s": round(t_convert, 3),
    }
    if conv_notes:
        notes["conversion"] = conv_notes
    if precision == "bf16":
        notes["precision_note"] = "same IR as openvino-fp32, compiled with INFERENCE_PRECISION_HINT=bf16"
    if fp32_ref is not None:
        _add_fp32_reference(root, fp32_ref, spec, {"openvino": tools["openvino"], "heatdeploy": __version__},
                            extra_rt, onnx_path if check else None)
    art = save_ir(root, model, precision, tools=tools, calibration=calibration, notes=notes, started=t_start,
                  check=(lambda xml: _check_against_onnx(xml, onnx_path, spec)) if check else None)
    log.info("%s", summary_line(art))
    return art


def _add_fp32_reference(root: Path, model: ov.Model, spec: ModelSpec, tools: dict[str, str],
                        extra_rt: dict[str, str], onnx_path: Path | None) -> Artifact:
    """``openvino-fp32`` beside a lower-precision IR: the parity reference on a box without onnxruntime."""
    ref = model
    embed_rt_info(ref, spec, "fp32", extra_rt)
    notes: dict[str, Any] = {"source_artifact": extra_rt["source_artifact"], "source_sha256": extra_rt["source_sha256"],
                             "inference_precision": INFERENCE_PRECISION["fp32"], "weights": WEIGHTS["fp32"],
                             "dynamic_batch": is_dynamic_batch(ref, spec.input.name),
                             "role": "FP32 reference for parity where onnxruntime is not installed"}
    check = (lambda xml: _check_against_onnx(xml, onnx_path, spec)) if onnx_path is not None else None
    return save_ir(root, ref, "fp32", tools=tools, notes=notes, check=check)


def save_ir(root: Path, model: ov.Model, precision: str, *, tools: dict[str, str], notes: dict[str, Any],
            calibration: dict[str, Any] | None = None, check: Callable[[Path], Any] | None = None,
            started: float | None = None, name: str | None = None, rel: str | None = None) -> Artifact:
    """Save ``model`` in a staging folder inside the bundle, ``check`` it there, then move it in and record it.

    Nothing half written is left in the bundle: the staging folder goes whatever happens.
    """
    rel = rel or artifact_path(precision)
    tmp = temp_dir(root / "openvino-ir")  # .openvino-ir.<pid>.<random>.partial: cleaned if this process dies
    try:
        xml = tmp / Path(rel).name
        ov.save_model(model, str(xml), compress_to_fp16=precision == "fp16")
        if check is not None:
            notes["check"] = check(xml)
        if started is not None:
            notes["total_s"] = round(time.perf_counter() - started, 3)
        return record_ir(root, xml, precision=precision, tools=tools, calibration=calibration, notes=notes,
                         name=name, rel=rel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def record_ir(root: Path, xml: Path, *, precision: str, tools: dict[str, str], notes: dict[str, Any],
              calibration: dict[str, Any] | None = None, name: str | None = None, rel: str | None = None) -> Artifact:
    """Move a written IR (``xml`` + its ``.bin``) into the bundle at ``rel`` and record it in the manifest.

    The manifest is re-read here: another step may have added an artifact meanwhile.
    """
    rel = rel or artifact_path(precision)
    fresh = Bundle.load(root, verify=False)
    fresh.path_of(rel).parent.mkdir(parents=True, exist_ok=True)
    art = fresh.add_file(xml, rel, name=name or artifact_name(precision), format="openvino", precision=precision,
                         backend="openvino", tools=tools,
                         extra={str(Path(rel).with_suffix(".bin").as_posix()): xml.with_suffix(".bin")},
                         calibration=calibration, notes=notes)  # one transaction: files, then manifest
    return art


def summary_line(art: Artifact, checked_against: str = "ORT FP32") -> str:
    """One line for the CLI: what was written, how, and (INT8) what NNCF did."""
    text = (f"{art.name}: {art.path} (weights {art.notes.get('weights', '?')}; "
            f"inference precision {art.notes.get('inference_precision', '?')})")
    check = art.notes.get("check")
    if isinstance(check, dict) and "max_abs_diff" in check:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in check["max_abs_diff"].items())
        text += f"; max |OV - {checked_against}|: {diffs}"
    if art.calibration and art.calibration.get("summary"):
        text += f"; {art.calibration['summary']}"
    return text


@dataclass(frozen=True)
class NncfOptions:
    """NNCF INT8 settings as one value from the bundle step down to NNCF (meanings: add_openvino_artifact).

    ``float_part``: auto (measure f32 and bf16 float parts, keep the fastest that holds the gate's keypoint
    limits: :mod:`heatdeploy.calibration.ov_float_part`), f32 or bf16. ``qat``: off | auto | on
    (:func:`_qat_candidate`), ``budget_s`` its training time.
    """

    calib: str | None = None
    calib_size: int | None = 300
    seed: int = 0
    preset: str = "mixed"
    keep_fp32: str | Sequence[str] = "auto"
    accuracy_control: float | None = None
    accuracy_data: str | None = None
    validation_size: int = 200
    pck_alpha: float = 0.05
    target_device: str = "any"
    fast_bias_correction: bool = True
    max_iterations: int = 20
    ranking_subset_size: int | None = 100
    float_part: str = "auto"
    qat: str = "off"
    budget_s: float = 300.0




def _quantize(model: ov.Model, bundle: Bundle, opts: NncfOptions, *, onnx_path: Path | None = None,
              no_onnx: str = "") -> tuple[ov.Model, dict[str, Any], str]:
    """NNCF INT8 from the shared calibration sources; returns the model, its record and NNCF's version."""
    import nncf

    from heatdeploy.calibration.nncf_quantize import quantize_openvino_int8
    from heatdeploy.calibration.sources import CalibrationError, open_source

    calib, seed = opts.calib, opts.seed
    if calib is None:
        if bundle.info.get("source") != "reference":
            raise CalibrationError(f"{bundle.root}: OpenVINO INT8 needs calibration data: pass a folder of images, "
                                   "a video, a .npy/.npz of preprocessed inputs, or 'synthetic' (reference only)")
        calib = "synthetic"
    source = open_source(bundle.spec, calib, size=opts.calib_size, seed=seed)
    held = open_source(bundle.spec, calib, size=FLOAT_PART_FRAMES, seed=seed + 1)  # frames for the float-part choice
    keep, note = _resolve_keep(opts.keep_fp32, model, onnx_path, bundle.spec, source, no_onnx)
    validation = None
    if opts.accuracy_control is not None:
        validation = _validation_data(bundle.spec, calib, opts.accuracy_data, opts.validation_size, seed)
    quantized, report = quantize_openvino_int8(
        model, bundle.spec, source, preset=opts.preset, keep_fp32=keep, target_device=opts.target_device,
        fast_bias_correction=opts.fast_bias_correction, accuracy_control=opts.accuracy_control,
        validation=validation, pck_alpha=opts.pck_alpha, max_iterations=opts.max_iterations,
        ranking_subset_size=opts.ranking_subset_size)
    if note:
        report.notes.insert(0, note)
        report.options["keep_fp32"] = "auto"
    record = report.to_manifest()
    from heatdeploy.calibration.ov_float_part import choose_float_part

    frames = fixed_batch_of(model, bundle.spec.input.name) or 8  # a fixed-batch IR takes only its own
    choice = choose_float_part(model, quantized, bundle.spec, list(held.batches(frames)), requested=opts.float_part)
    record["float_part"] = choice.to_dict()
    record["notes"] = [*record.get("notes", []), *choice.notes]
    advice = [n for n in choice.notes if n.startswith("recommendation")]  # shown on screen with the summary
    record["summary"] = "; ".join([f"{record['summary']}; float part {choice.chosen}", *advice])
    if opts.qat not in QAT_MODES:
        raise OpenVinoExportError(f"qat {opts.qat!r}: choose one of {', '.join(QAT_MODES)}")
    # accuracy control is the user's own way to hold the limits: auto leaves its result alone
    if opts.qat == "on" or (opts.qat == "auto" and opts.accuracy_control is None and not _pays(choice.to_dict())):
        quantized = _qat_candidate(model, quantized, record, bundle, opts, source, held, onnx_path, frames)
    return quantized, record, nncf.__version__


def _point(choice: dict[str, Any]) -> dict[str, Any]:
    """The measured point of the INT8 a float-part choice (its record) chose."""
    return next(p for p in choice["points"] if p["name"] == f"int8@{choice['chosen']}")


def _faster_than_bf16(choice: dict[str, Any]) -> bool:
    """The chosen INT8 is faster than the FP32 model at bf16 (f32 where the CPU has no bf16); True unmeasured."""
    points = {p["name"]: p for p in choice["points"]}
    ref = points.get("fp32@bf16") or points.get("fp32@f32") or {}
    mine = _point(choice)
    return mine.get("ms") is None or ref.get("ms") is None or mine["ms"] < ref["ms"]


def _pays(choice: dict[str, Any]) -> bool:
    """The chosen INT8 holds the gate's keypoint limits and is faster than OpenVINO bf16."""
    return bool(_point(choice).get("holds")) and _faster_than_bf16(choice)


def _qat_candidate(model: ov.Model, quantized: ov.Model, record: dict[str, Any], bundle: Bundle, opts: NncfOptions,
                   source: Any, held: Any, onnx_path: Path | None, frames: int) -> ov.Model:
    """Quantization-aware fine-tuning by distillation, started from a base-scope NNCF INT8 (every layer INT8
    but the float scope: the model that pays), kept when it holds the gate's keypoint limits (and, when the
    post-training INT8 holds them too, is faster). The record's ``qat`` says what was done and why."""
    import onnx

    from heatdeploy.calibration import qat
    from heatdeploy.calibration.nncf_quantize import layer_precisions, qat_start, quantize_openvino_int8
    from heatdeploy.calibration.ov_float_part import choose_float_part

    if onnx_path is None:
        record["qat"] = {"chosen": False, "why": "QAT needs the model as ONNX"}
        return quantized
    t0 = time.perf_counter()
    try:
        import torch  # noqa: F401 - the export extra: without it there is no QAT, say so
    except ImportError as exc:
        record["qat"] = {"chosen": False, "why": f"QAT needs torch (the export extra): {exc}"}
        return quantized
    spec = bundle.spec
    batches = list(held.batches(frames))
    if opts.keep_fp32 == "base" and opts.accuracy_control is None:
        base, base_choice = quantized, record["float_part"]
    else:
        base, _ = quantize_openvino_int8(model, spec, source, preset=opts.preset, keep_fp32="base",
                                         target_device=opts.target_device,
                                         fast_bias_correction=opts.fast_bias_correction)
        base_choice = choose_float_part(model, base, spec, batches, requested=opts.float_part).to_dict()
    if opts.qat == "auto" and not _faster_than_bf16(base_choice):
        record["qat"] = {"chosen": False, "why": "INT8 with only the base float scope is not faster than OpenVINO "
                         "bf16 here: fine-tuning cannot pay", "base_float_part": base_choice}
        return quantized
    if opts.qat == "auto" and _pays(base_choice):
        record["qat"] = {"chosen": False, "why": "INT8 with only the base float scope already holds the limits "
                         "faster than bf16: kept, no fine-tuning", "base_float_part": base_choice}
        record.update(float_part=base_choice, layers=layer_precisions(base))
        record["notes"] = [*record.get("notes", []), record["qat"]["why"]]
        record["summary"] = f"{record['summary']}; {record['qat']['why']}"
        return base
    try:
        onnx_model = onnx.load(str(onnx_path))
        images = np.concatenate(list(source.batches(8)))
        budget = max(0.0, opts.budget_s - (time.perf_counter() - t0))
        log.info("OpenVINO INT8: QAT by distillation on %d frames (budget %.0f s)", len(images), budget)
        tuned = qat.finetune(onnx_path, spec, images, qat.QatOptions(budget_s=budget), qat.progress_logger(),
                             start=qat_start(base, onnx_model, spec))
        with tempfile.TemporaryDirectory(prefix="heatdeploy-qat-") as tmp:
            candidate = qat.qat_openvino(tuned, tmp)
    except qat.QatError as exc:
        record["qat"] = {"chosen": False, "why": str(exc)}
        return quantized
    choice = choose_float_part(model, candidate, spec, batches, requested=opts.float_part)
    q_point, p_point = _point(choice.to_dict()), _point(record["float_part"])
    faster = q_point.get("ms") is None or p_point.get("ms") is None or q_point["ms"] < p_point["ms"]
    chosen = bool(q_point["holds"]) and (not p_point["holds"] or faster)
    why = ("holds the gate's keypoint limits" + ("" if not p_point["holds"] else ", faster than post-training")
           if chosen else "does not hold the gate's keypoint limits" if not q_point["holds"]
           else "post-training INT8 holds the limits and is as fast")
    record["qat"] = {**tuned.report.to_dict(), "chosen": chosen, "why": why, "total_s": round(
        time.perf_counter() - t0, 1), "float_part": choice.to_dict()}
    record["notes"] = [*record.get("notes", []), f"QAT candidate {'chosen' if chosen else 'not chosen'}: {why} "
                       f"(mean {q_point['mean_hm_px']:.3f} hm px, existence agreement "
                       f"{q_point['existence_agreement']:.4f})"]
    if not chosen:
        return quantized
    record["float_part"] = choice.to_dict()
    record["layers"] = layer_precisions(candidate)
    record["summary"] = f"{tuned.report.summary()}; float part {choice.chosen}"
    return candidate


def _resolve_keep(keep_fp32: str | Sequence[str], model: ov.Model, onnx_path: Path | None, spec: ModelSpec,
                  source: Any, no_onnx: str = "") -> tuple[str | Sequence[str] | dict[str, str], str]:
    """``auto`` = ``base`` plus the IR ops of the ONNX nodes heatdeploy's measured sensitivity keeps FP32.

    ``onnx_path`` is the ONNX the IR was converted from, so the names measured are the names converted.
    """
    if keep_fp32 != "auto":
        return keep_fp32, ""
    if onnx_path is None:  # an IR read from a .tflite that tflite2onnx could not convert: no graph to measure on
        return "base", no_onnx or "keep_fp32=auto used the base scope: the sensitivity pass needs the model as ONNX"
    from heatdeploy.calibration.sensitivity_scope import ir_names, sensitive_onnx_nodes

    try:
        nodes, note = sensitive_onnx_nodes(onnx_path, spec, source)
    except ImportError as exc:  # an OpenVINO-only install: no ORT to measure with
        return "base", f"keep_fp32=auto used the base scope: the sensitivity pass needs onnxruntime ({exc})"
    except Exception as exc:  # noqa: BLE001 - ORT refusing a graph must not stop the OpenVINO export
        log.warning("OpenVINO INT8: ORT sensitivity pass failed (%s); base float scope used", exc)
        return "base", ("keep_fp32=auto used the base scope: the ORT sensitivity pass failed "
                        f"({type(exc).__name__}: {exc})")
    names = ir_names(model, onnx_path, nodes)
    if not names:
        return "base", f"{note}; none to keep float in the IR"
    return names, f"{note}, {len(names)} IR ops ignored by NNCF"


def tflite_int8_source(tflite: Path, spec: ModelSpec, workdir: Path) -> tuple[ov.Model | None, Path | None, str]:
    """For ``keep_fp32=auto`` from a .tflite: its ONNX conversion (tflite2onnx) as the model NNCF quantizes.

    The sensitivity pass measures an ONNX graph and names its nodes; quantizing the IR of that same ONNX
    lets those names reach NNCF (the .tflite's own IR names its ops otherwise). When the conversion is not
    possible: (None, None, the note saying why the base scope is used).
    """
    from heatdeploy.exporters.tflite import TfliteError, tflite_to_onnx

    onnx_path = workdir / "model.onnx"
    try:
        tflite_to_onnx(tflite, onnx_path, spec=spec, check=False)
        model, _ = convert_onnx(onnx_path, spec)
    except (TfliteError, OpenVinoExportError) as exc:
        return None, None, f"keep_fp32=auto used the base scope: the sensitivity pass needs the .tflite as ONNX ({exc})"
    return model, onnx_path, ("INT8 quantized from the .tflite's ONNX conversion (tflite2onnx), the graph the "
                              "per-layer sensitivity pass measured")


def _validation_data(spec: ModelSpec, calib: str, accuracy_data: str | None, size: int, seed: int) -> Any:
    """The split accuracy control measures PCK on (never the shipped eval split by default: that is for parity)."""
    from heatdeploy.calibration.sources import CalibrationError
    from heatdeploy.datasets import DataError, load_dataset

    text = accuracy_data
    data_seed = seed + 1  # synthetic validation: other figures than the calibration ones
    if text is None:
        if calib.strip().startswith("synthetic"):
            text = f"synthetic:{size}"
        elif Path(calib).expanduser().is_dir():
            text = calib
        else:
            raise CalibrationError(f"{calib}: accuracy control needs images to measure PCK on; pass accuracy_data "
                                   "(a labelled split with labels.json, a folder of images, or synthetic:N)")
    try:
        return load_dataset(spec, text, limit=size, seed=data_seed)
    except DataError as exc:
        raise CalibrationError(f"accuracy control: {exc}") from None


def _check_against_onnx(xml: Path, onnx_path: Path, spec: ModelSpec) -> dict[str, Any]:
    """Largest |OpenVINO - ORT FP32| per output on two seeded inputs, at the IR's own inference precision.

    A graph with a fixed batch is fed in chunks of it (both engines), so the check asks what the runtime does."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime not installed"}
    from heatdeploy.runtime.backends.openvino import load

    inp = spec.input
    x = np.random.default_rng(CHECK_SEED).standard_normal(inp.tensor_shape(2)).astype(np.float32)
    names = list(spec.output_names)
    try:
        backend = load(xml)
        got = _chunked(lambda t: backend.infer({inp.name: t}), x, _fixed_dim(backend.input_shapes[inp.name]))
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        want = _chunked(lambda t: dict(zip(names, sess.run(names, {inp.name: t}), strict=True)), x,
                        _fixed_dim(next(i.shape for i in sess.get_inputs() if i.name == inp.name)))
    except HeatdeployError:
        raise
    except Exception as exc:  # an engine's own error type: one line naming both files
        raise OpenVinoExportError(f"{xml}: the check against ONNX Runtime on {onnx_path} could not run "
                                  f"({cause_line(exc)}); check the model's input shape against the spec") from None
    diffs = {n: float(np.max(np.abs(got[n].astype(np.float64) - want[n]))) for n in names}
    return {"inputs": f"2 seeded N(0,1) tensors (seed {CHECK_SEED})", "max_abs_diff": diffs,
            "compiled_precision": backend.inference_precision, "device": backend.device}


def _fixed_dim(shape: Sequence[Any]) -> int | None:
    """The batch a shape hard-codes (an int > 0 first dim), None when dynamic."""
    dim = shape[0] if len(shape) else None
    return dim if isinstance(dim, int) and dim > 0 else None


def _chunked(run: Callable[[np.ndarray], dict[str, np.ndarray]], x: np.ndarray,
             size: int | None) -> dict[str, np.ndarray]:
    if size is None or size == len(x) or len(x) % size:
        return run(x)
    parts = [run(x[i:i + size]) for i in range(0, len(x), size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


__all__ = [
    "INFERENCE_PRECISION", "OpenVinoExportError", "PRECISIONS", "add_openvino_artifact", "artifact_name",
    "artifact_path", "convert_onnx", "embed_rt_info", "read_ir_spec", "summary_line",
]
