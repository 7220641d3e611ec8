"""Which artifact a bundle deploys on this machine: the fastest one that holds the parity gate, measured here.

INT8 that holds the gate is not always faster (ONNX Runtime's depthwise INT8 kernels, an f32 float part),
and an engine's own float build can beat another's; so the choice is measured side by side on the device
rather than assumed from the precision. Only artifacts whose gate verdict is recorded for their exact file
(``heatdeploy parity``) compete with the FP32 ones; the verdict stays the user's proof, the choice only
points ``run`` and ``bench`` at the fastest of what is proven. ``--artifact`` always overrides it.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence, Set
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from heatdeploy.bundle import Artifact, Bundle
from heatdeploy.errors import HeatdeployError
from heatdeploy.runtime.backends.base import engine_installed, fixed_batch, load_backend, thread_options
from heatdeploy.runtime.timing import interleaved_ms

MIN_GAIN = 1.03  # a lower precision is chosen over FP32 only when faster by more than timing noise
INFO_KEY = "deploy"


class ChoiceError(HeatdeployError, RuntimeError):
    """Nothing in the bundle can be timed here."""


@dataclass
class DeployChoice:
    """The chosen artifact, every timed candidate's ms, and why the others were left out."""

    artifact: str
    backend: str
    sha256: str
    reason: str
    measured_ms: dict[str, float] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    threads: int = 1
    batch: int = 1
    machine: str = ""
    checked: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def holds_gate(art: Artifact) -> tuple[bool, str]:
    """(True, "") for FP32 (the reference precision) or a passed gate verdict on this exact file; else why not."""
    if art.precision == "fp32":
        return True, ""
    p = art.parity or {}
    if not p:
        return False, "no parity verdict: run 'heatdeploy parity BUNDLE --candidate " f"{art.name} --data DATA'"
    if p.get("candidate_sha256") != art.sha256:
        return False, "its parity verdict is for another file (re-run 'heatdeploy parity')"
    if not p.get("passed"):
        return False, "failed the parity gate"
    return True, ""


def machine_id() -> str:
    """CPU model and OS: enough to tell whether a recorded choice was measured on this kind of machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}; {platform.system()} {platform.machine()}"


def _input(spec: Any, batch: int) -> np.ndarray:
    return np.random.default_rng(0).random(spec.input.tensor_shape(batch), dtype=np.float32)


def decide(ms: Mapping[str, float], fp32: Set[str]) -> tuple[str, str]:
    """(chosen name, why) from measured ms: the fastest, unless an FP32 one is within timing noise of it."""
    best = min(ms, key=ms.__getitem__)
    floats = [k for k in ms if k in fp32]
    if not floats:
        return best, f"fastest that holds the gate ({ms[best]:.2f} ms); no FP32 artifact was timed"
    best_fp32 = min(floats, key=ms.__getitem__)
    if best == best_fp32:
        lower = sorted(k for k in ms if k not in fp32)
        return best, (f"fastest FP32 artifact ({ms[best]:.2f} ms)" + (
            f"; no lower precision that holds the gate is faster ({', '.join(lower)} timed)" if lower
            else "; no lower precision holds the gate"))
    if ms[best] * MIN_GAIN >= ms[best_fp32]:
        return best_fp32, (f"{best} holds the gate but runs {ms[best]:.2f} ms vs {best_fp32} {ms[best_fp32]:.2f} ms"
                           f": not faster by more than {MIN_GAIN - 1:.0%} on this machine, so FP32 is deployed")
    return best, f"fastest that holds the gate: {ms[best]:.2f} ms, {ms[best_fp32] / ms[best]:.2f}x {best_fp32}"


def choose(bundle: Bundle, *, threads: int = 1, seconds: float = 4.0,
           names: Sequence[str] | None = None) -> DeployChoice:
    """Time every candidate that holds the gate and whose engine is installed (batch 1, interleaved)."""
    excluded: dict[str, str] = {}
    runs = {}
    for art in bundle.artifacts:
        if names is not None and art.name not in names:
            continue
        ok, why = holds_gate(art)
        if not ok:
            excluded[art.name] = why
            continue
        if not engine_installed(art.backend):
            excluded[art.name] = f"{art.backend} is not installed here"
            continue
        try:
            backend = load_backend(art.backend, str(bundle.path_of(art)), thread_options(art.backend, threads))
        except HeatdeployError as e:
            excluded[art.name] = f"does not load here: {e}"
            continue
        x = _input(bundle.spec, fixed_batch(backend, bundle.spec.input.name) or 1)
        feeds = {bundle.spec.input.name: x}
        runs[art.name] = (art, lambda b=backend, f=feeds: b.infer(f))
    if not runs:
        detail = "; ".join(f"{k}: {v}" for k, v in excluded.items()) or "it has no artifacts"
        raise ChoiceError(f"{bundle.root}: no artifact can be timed here ({detail})")
    timing = interleaved_ms({k: fn for k, (_, fn) in runs.items()}, seconds=seconds)
    ms = {k: round(v, 3) for k, v in timing.paired_ms.items()}
    best, reason = decide(ms, {k for k, (a, _) in runs.items() if a.precision == "fp32"})
    art = runs[best][0]
    return DeployChoice(artifact=art.name, backend=art.backend, sha256=art.sha256, reason=reason, measured_ms=ms,
                        excluded=excluded, threads=threads, batch=1, machine=machine_id(),
                        checked=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def record_choice(root: Any, choice: DeployChoice) -> None:
    """Store the choice in the manifest's ``info`` (re-read first, so a concurrent edit is not lost)."""
    b = Bundle.load(root, verify=False)
    b.info[INFO_KEY] = choice.to_dict()
    b.save()


def deployed(bundle: Bundle) -> Artifact | None:
    """The recorded choice when it still names this bundle's exact file and its engine is installed here."""
    rec = bundle.info.get(INFO_KEY)
    if not isinstance(rec, dict):
        return None
    art = next((a for a in bundle.artifacts if a.name == rec.get("artifact")), None)
    if art is None or art.sha256 != rec.get("sha256") or not engine_installed(art.backend):
        return None
    return art


__all__ = ["ChoiceError", "DeployChoice", "choose", "decide", "deployed", "holds_gate", "machine_id", "record_choice"]
