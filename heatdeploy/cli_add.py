"""``heatdeploy add``: another artifact (or the stock INT8 baselines) into an existing bundle.

Registered on the app by :mod:`heatdeploy.cli`; the work is :func:`heatdeploy.api.add`, the error path and
console are :mod:`heatdeploy.cli_base`'s (a bad option is one ``error:`` line, exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from heatdeploy.cli_base import (
    AccuracyControlOption,
    BudgetOption,
    CalibMethodOption,
    CalibOption,
    CalibSizeOption,
    KeepFp32Option,
    PresetOption,
    QatOption,
    SeedOption,
    _hooks,
    app,
    cli_errors,
    console,
)


@app.command()
@cli_errors
def add(
    bundle: Annotated[Path, typer.Argument(help="bundle directory (made by 'heatdeploy export')")],
    format: Annotated[str | None, typer.Option("--format", help="onnx | openvino (with --stock: only that "
                                                                "engine's baseline; default both)")] = None,
    precision: Annotated[str | None, typer.Option(help="onnx: int8; openvino: fp32 | fp16 | bf16 | int8 "
                                                       "(default int8 for onnx, fp32 for openvino)")] = None,
    calib: CalibOption = None,
    stock: Annotated[bool, typer.Option("--stock", help="add the stock INT8 baselines instead: ORT "
                                                        "quantize_static defaults (onnx-int8-stock), nncf.quantize "
                                                        "defaults (openvino-int8-stock)")] = False,
    calib_method: CalibMethodOption = "auto",
    calib_size: CalibSizeOption = None,
    seed: SeedOption = 0,
    keep_fp32: KeepFp32Option = "auto",
    preset: PresetOption = "mixed",
    accuracy_control: AccuracyControlOption = None,
    budget_s: BudgetOption = 300.0,
    qat: QatOption = "off",
    replace: Annotated[bool, typer.Option("--replace", help="rebuild an artifact the bundle already has")] = False,
) -> None:
    """Add an artifact to an existing bundle, keeping every artifact already in it.

    'heatdeploy export' writes a bundle from MODEL; 'add' builds more artifacts from that bundle's onnx-fp32
    (each one a bundle transaction: a failure leaves the bundle as it was), so 'bench' and 'parity' can compare
    them side by side. --stock adds the stock INT8 recipes as baselines, on the same calibration data.

    Examples:

      heatdeploy add bundle/ --format openvino --precision int8 --calib images/

      heatdeploy add bundle/ --stock --calib images/

      heatdeploy parity bundle/ --candidate onnx-int8-stock ; heatdeploy bench bundle/
    """
    from heatdeploy import api

    with _hooks() as hooks:
        result = api.add(bundle, format=format, precision=precision, calib=calib, stock=stock,
                         calib_method=calib_method, calib_size=calib_size, seed=seed, keep_fp32=keep_fp32,
                         preset=preset, accuracy_control=accuracy_control, budget_s=budget_s, qat=qat, replace=replace,
                         hooks=hooks)
    kept = f" (kept: {', '.join(result.kept)})" if result.kept else ""
    console.print(f"added to {bundle}: {', '.join(result.made) or 'nothing'}{kept}", highlight=False, soft_wrap=True)
    if result.made:
        console.print(f"compare: heatdeploy parity {bundle} --candidate {result.made[0]} ; heatdeploy bench {bundle}",
                      highlight=False, soft_wrap=True)
