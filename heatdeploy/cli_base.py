"""What every ``heatdeploy`` command shares: the app, its console, the one error path, progress hooks.

Exit codes (for CI): 0 ok, 1 a gate failed (parity out of tolerance), 2 bad input or usage, 3 internal error,
130 interrupted. The commands live in :mod:`heatdeploy.cli` (the main job) and :mod:`heatdeploy.cli_device`.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

try:  # typer >= 0.20 carries its own click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer on click
    from click import ClickException

from heatdeploy import __version__
from heatdeploy.errortext import EXIT_INPUT, EXIT_INTERRUPTED, describe

EXIT_HELP = ("Exit codes: 0 ok; 1 a gate failed (parity out of tolerance); 2 bad input or usage; "
             "3 internal error (a bug: rerun with --debug for the traceback); 130 interrupted (Ctrl-C).")
app = typer.Typer(
    help="Deploy heatmap keypoint models with existence heads to edge engines, with keypoint-level parity.\n\n"
         "Examples:\n\n"
         "  heatdeploy demo --out out/\n\n"
         "  heatdeploy export reference --format onnx --out bundle/\n\n"
         "  heatdeploy run bundle/ photo1.jpg photos/ --out preds/\n\n"
         "  heatdeploy eval bundle/\n\n"
         "  heatdeploy inspect bundle/\n\n" + EXIT_HELP,
    no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
)
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
_STATE = {"debug": False}


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"heatdeploy {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="print the traceback of any error")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Global options (before the command): --debug, --version."""
    _STATE["debug"] = debug


METHOD_HELP = "auto (minmax or mean_minmax, whichever is closer to FP32) | minmax | mean_minmax | entropy | " \
              "percentile | distribution"

# The INT8 options 'export' and 'add' share: one definition, so both commands say the same thing.
CalibOption = Annotated[str | None, typer.Option(help="INT8 calibration data: image folder, video, .npy/.npz, "
                                                      "or synthetic[:N]")]
CalibMethodOption = Annotated[str, typer.Option(help=METHOD_HELP)]
CalibSizeOption = Annotated[int | None, typer.Option(help="seeded random subset of N calibration samples")]
SeedOption = Annotated[int, typer.Option(help="calibration subset seed")]
KeepFp32Option = Annotated[str, typer.Option(help="auto | base | none | NODE,NODE,... (ONNX node names; IR op "
                                                  "names for --format openvino)")]
PresetOption = Annotated[str, typer.Option(help="OpenVINO/NNCF INT8 preset: mixed | performance")]
AccuracyControlOption = Annotated[float | None, typer.Option(
    help="OpenVINO INT8: max PCK drop (points) for nncf.quantize_with_accuracy_control")]
BUDGET_HELP = ("INT8 (ORT): seconds for the per-layer sensitivity pass plus the latency-measured mix search (with "
               "--qat, also OpenVINO's fine-tuning); "
               "when they run out, the untested layers stay INT8 and the log says so")
BudgetOption = Annotated[float, typer.Option(help=BUDGET_HELP)]
QatOption = Annotated[str, typer.Option(
    help="OpenVINO INT8: off | auto | on - quantization-aware fine-tuning by distillation on the calibration "
         "frames (auto: only when post-training INT8 does not hold the gate faster than bf16); minutes, bounded "
         "by --budget-s")]


def _fail(msg: str, code: int = EXIT_INPUT) -> typer.Exit:
    """Print ``error: msg`` on stderr (one line) and return the Exit to raise."""
    console.print(f"[red]error:[/red] {escape(msg)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def cli_errors(fn: F) -> F:
    """Every error becomes one line on stderr and an exit code: 2 for bad input, 3 for a bug (see EXIT_HELP).

    ``--debug`` adds the traceback. Usage errors and exits pass through to typer.
    """
    if getattr(fn, "_cli_errors", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, ClickException, SystemExit):
            raise  # exits and usage errors (typer prints them, exit 2) are typer's
        except KeyboardInterrupt:  # not 1: a CI job must not read Ctrl-C as a failed gate
            with contextlib.suppress(OSError):
                _fail("interrupted (Ctrl-C)", EXIT_INTERRUPTED)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 - the one place every error becomes one line
            code, msg = describe(exc)
            with contextlib.suppress(OSError):  # stderr itself gone: still exit with the code
                if _STATE["debug"]:
                    console.print(escape("".join(traceback.format_exception(exc))), highlight=False)
                _fail(msg, code)
            raise typer.Exit(code) from None

    wrapper._cli_errors = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)  # no bar lines in CI logs


def _log(msg: str) -> None:
    console.print(msg, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _hooks() -> Iterator[Any]:
    """The api's Hooks for this terminal: lines and spinners on stderr, one progress bar per counted step."""
    from heatdeploy.api import Hooks

    with _progress() as prog:
        tasks: dict[str, Any] = {}

        def progress(desc: str, done: int, total: int | None) -> None:
            if desc not in tasks:
                tasks[desc] = prog.add_task(desc, total=total)
            prog.update(tasks[desc], completed=done, total=total)

        yield Hooks(log=_log, status=lambda m: console.status(m), progress=progress)


def _guard_all(typer_app: typer.Typer) -> None:
    """Every command and callback, also one registered without @cli_errors, gets the one error path."""
    infos = [*typer_app.registered_commands,
             *([typer_app.registered_callback] if typer_app.registered_callback is not None else [])]
    for info in infos:
        if info.callback is not None:
            info.callback = cli_errors(info.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _guard_all(group.typer_instance)
