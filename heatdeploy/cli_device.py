"""``heatdeploy`` commands for the machine: bench, device profiles, TensorRT engine build, training.

Registered on the app by :mod:`heatdeploy.cli`; they share its error path and console (:mod:`heatdeploy.cli_base`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from heatdeploy.cli_base import app, cli_errors, console


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


# --- choose ------------------------------------------------------------------------------------------
@app.command()
@cli_errors
def choose(
    bundle: Annotated[Path, typer.Argument(help="bundle directory")],
    threads: Annotated[int, typer.Option(help="engine threads while timing (0 = engine default)")] = 1,
    seconds: Annotated[float, typer.Option(help="how long to time, at least 5 interleaved rounds")] = 4.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="measure and print; do not record the choice")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Deploy the fastest artifact that holds the parity gate, timed side by side on this machine (batch 1).

    FP32 artifacts always compete; a lower precision competes once 'heatdeploy parity' has passed it on its
    exact file. The choice is recorded in the manifest; 'run' and 'bench' then use it unless given
    --artifact / --precision / --backend. Run it on the device you deploy to.

    Example: heatdeploy parity bundle/ --candidate openvino-int8 --data eval/ && heatdeploy choose bundle/
    """
    from heatdeploy import api

    with console.status("timing the artifacts that hold the gate"):
        choice = api.choose(bundle, threads=threads, seconds=seconds, record=not dry_run)
    if as_json:
        sys.stdout.write(json.dumps(choice.to_dict(), indent=2) + "\n")
        return
    ms = choice.measured_ms
    base = min((ms[k] for k in ms if k.endswith("fp32")), default=None)
    table = Table(title=f"choose {bundle} (batch 1, {threads or 'all'} thread(s), interleaved; {choice.machine})")
    for c in ("artifact", "ms", "vs fastest FP32", ""):
        table.add_column(c, justify="left" if c in ("artifact", "") else "right")
    for name, t in sorted(ms.items(), key=lambda kv: kv[1]):
        table.add_row(name, f"{t:.2f}", f"{base / t:.2f}x" if base else "-",
                      "deployed" if name == choice.artifact else "")
    for name, why in choice.excluded.items():
        table.add_row(name, "-", "-", f"not timed: {why}")
    Console(width=160).print(table)
    verb = "measured (not recorded)" if dry_run else "deploys"
    console.print(f"{bundle} {verb}: {choice.artifact} ({choice.backend}) — {choice.reason}", highlight=False)


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
