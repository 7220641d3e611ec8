"""Detect this machine and recommend a device profile (``heatdeploy devices probe``).

Everything is read from files and cheap commands, never by importing an engine: importing TensorRT or
OpenVINO takes seconds and can fail in ways that have nothing to do with whether it is installed. Engines
are found with ``importlib.util.find_spec`` plus their distribution metadata. A package that is only a
namespace (``tensorrt-stubs`` installed without TensorRT leaves an importable, empty ``tensorrt``) does not
count as installed.

Every input (the filesystem root, the command runner, the module finder, the architecture) can be
replaced, so the detection logic is tested on fake ``/proc`` trees.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from heatdeploy.devices.profiles import DeviceProfile, DeviceProfileError, load_all

Runner = Callable[[Sequence[str]], str | None]  # a command's stdout, or None when it cannot run
SpecFinder = Callable[[str], Any]

# module -> distributions that provide it (first installed one gives the version)
ENGINES: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "openvino": ("openvino",),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu12-bindings",
                 "tensorrt-cu13-bindings", "tensorrt-cu11-bindings", "tensorrt-bindings"),
    "cuda": ("cuda-python", "cuda-bindings"),  # cuda-python: the TensorRT backend's device memory
    "torch": ("torch",),
    "onnx": ("onnx",),
}
# where the top-level name is a namespace package, the submodules that show a real install
SUBMODULES = {"cuda": ("cuda.bindings.runtime", "cuda.cudart")}
NOTABLE_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                 "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "fphp", "asimdhp", "i8mm", "sve")
# L4T release -> JetPack (exact where known, else by major: 32 -> 4.x, 35 -> 5.x, 36 -> 6.x, 38 -> 7.x)
L4T_JETPACK = {"35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
               "35.6.0": "5.1.4", "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2",
               "36.4.4": "6.2.1"}
L4T_MAJOR_JETPACK = {"32": "4", "34": "5", "35": "5", "36": "6", "38": "7"}
TRT_HEADERS = ("usr/include/aarch64-linux-gnu/NvInferVersion.h", "usr/include/x86_64-linux-gnu/NvInferVersion.h",
               "usr/include/NvInferVersion.h", "usr/local/tensorrt/include/NvInferVersion.h")


@dataclass
class ProbeResult:
    """What this machine is, as far as choosing a profile goes."""

    arch: str
    cpu_model: str = ""
    cpu_flags: tuple[str, ...] = ()
    cores: int = 0  # logical CPUs in the machine
    usable_cores: int = 0  # CPUs this process may run on (containers, taskset)
    memory_gb: float | None = None
    board_model: str = ""  # /proc/device-tree/model (Jetson, Raspberry Pi, ...)
    jetson: bool = False
    l4t: str = ""  # Linux for Tegra release from /etc/nv_tegra_release
    jetpack: str = ""
    tensorrt: str = ""  # the TensorRT Python package's version ("" when not installed)
    tensorrt_lib: str = ""  # the system TensorRT (NvInferVersion.h), which a JetPack install has
    cuda: str = ""
    gpus: list[dict[str, str]] = field(default_factory=list)
    engines: dict[str, str | None] = field(default_factory=dict)  # module -> version, None when absent
    notes: list[str] = field(default_factory=list)

    def has_flag(self, flag: str) -> bool:
        return flag.lower() in self.cpu_flags

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpu_flags"] = [f for f in NOTABLE_FLAGS if f in self.cpu_flags]  # the full list is noise
        return d


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def run_command(cmd: Sequence[str], timeout: float = 5.0) -> str | None:
    """stdout of ``cmd``, or None when it is missing, fails or hangs (nvidia-smi can hang on a bad driver)."""
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).is_file():
        return None
    try:
        res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


# --- CPU ---------------------------------------------------------------------------------------------
def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...], int]:
    """(model, sorted flags, logical CPU count) from /proc/cpuinfo; x86 says ``flags``, Arm ``Features``."""
    first: dict[str, str] = {}
    flags: set[str] = set()
    count = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            count += 1
        elif key in ("flags", "features") and not flags:
            flags = set(value.lower().split())
        elif value:
            first.setdefault(key, value)
    # x86 says "model name" (and a numeric "model"); a Raspberry Pi says "Model : Raspberry Pi 5 ..."
    candidates = [first.get(k, "") for k in ("model name", "cpu model", "model", "hardware")]
    model = next((c for c in candidates if c and not c.isdigit()), "")
    return model, tuple(sorted(flags)), count


def parse_meminfo(text: str) -> float | None:
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return round(int(m.group(1)) / (1 << 20), 1) if m else None


# --- Jetson --------------------------------------------------------------------------------------------
def parse_tegra_release(text: str) -> tuple[str, str]:
    """(L4T release, JetPack) from ``# R35 (release), REVISION: 4.1, ...`` -> ("35.4.1", "5.1.2")."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not m:
        return "", ""
    major, rev = m.group(1), m.group(2)
    parts = rev.split(".")
    l4t = ".".join([major, *parts, *(["0"] * (2 - len(parts)))][:3])
    jp = L4T_JETPACK.get(l4t) or (f"{L4T_MAJOR_JETPACK[major]}.x" if major in L4T_MAJOR_JETPACK else "")
    return l4t, jp


def parse_trt_header(text: str) -> str:
    """``NV_TENSORRT_MAJOR/MINOR/PATCH`` defines -> "8.5.2" ("" when absent)."""
    parts = []
    for key in ("MAJOR", "MINOR", "PATCH"):
        m = re.search(rf"#define\s+NV_TENSORRT_{key}\s+(\d+)", text)
        if not m:
            return ""
        parts.append(m.group(1))
    return ".".join(parts)


# --- CUDA and GPUs ---------------------------------------------------------------------------------------
def cuda_version(root: Path, run: Runner) -> str:
    """The CUDA toolkit: version.json (11.1+), version.txt (older), else ``nvcc --version``."""
    text = _read(root, "usr/local/cuda/version.json")
    if text:
        try:
            v = json.loads(text).get("cuda", {}).get("version", "")
            if v:
                return str(v)
        except (json.JSONDecodeError, AttributeError):
            pass
    text = _read(root, "usr/local/cuda/version.txt")
    if text and (m := re.search(r"CUDA Version\s+([\d.]+)", text)):
        return m.group(1)
    for nvcc in ("nvcc", str(root / "usr/local/cuda/bin/nvcc")):
        out = run([nvcc, "--version"])
        if out and (m := re.search(r"release\s+([\d.]+)", out)):
            return m.group(1)
    return ""


def parse_nvidia_smi(text: str) -> list[dict[str, str]]:
    """``nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader`` rows."""
    gpus = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) >= 3 and cells[0]:
            gpus.append({"name": cells[0], "driver": cells[1], "memory": cells[2]})
    return gpus


# --- engines ---------------------------------------------------------------------------------------------
def _is_real_module(spec: Any) -> bool:
    """A module with code behind it; an empty namespace package (stubs only) is not."""
    return spec is not None and getattr(spec, "origin", None) not in (None, "namespace")


def engine_version(module: str, find_spec: SpecFinder = importlib.util.find_spec) -> str | None:
    """The installed engine's version without importing it; None when it is not installed."""
    spec = None
    for name in SUBMODULES.get(module, (module,)):
        try:
            spec = find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if _is_real_module(spec):
            break
    if spec is None or not _is_real_module(spec):
        return None
    for dist in ENGINES.get(module, (module,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    # system packages (JetPack's python3-libnvinfer) may carry no metadata: read __version__ from the source
    origin = Path(str(spec.origin))
    try:
        m = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)", origin.read_text(errors="replace"), re.MULTILINE)
    except OSError:
        m = None
    return m.group(1) if m else "unknown"


# --- the probe -------------------------------------------------------------------------------------------
def probe(root: str | Path = "/", *, run: Runner = run_command, find_spec: SpecFinder = importlib.util.find_spec,
          machine: str | None = None, cores: int | None = None, usable_cores: int | None = None) -> ProbeResult:
    """Detect this machine: CPU and flags, cores, memory, Jetson model / L4T / JetPack, TensorRT, CUDA, GPUs,
    and which engines are installed."""
    root = Path(root)
    arch = (machine or platform.machine()).lower()
    model, flags, counted = parse_cpuinfo(_read(root, "proc/cpuinfo") or "")
    if usable_cores is None:
        try:
            usable_cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not on Linux
            usable_cores = os.cpu_count() or 0
    result = ProbeResult(arch=arch, cpu_model=model, cpu_flags=flags,
                         cores=cores if cores is not None else (os.cpu_count() or counted),
                         usable_cores=usable_cores, memory_gb=parse_meminfo(_read(root, "proc/meminfo") or ""))
    board = _read(root, "proc/device-tree/model") or _read(root, "sys/firmware/devicetree/base/model") or ""
    result.board_model = board.replace("\x00", "").strip()
    tegra = _read(root, "etc/nv_tegra_release")
    result.jetson = tegra is not None or "jetson" in result.board_model.lower()
    if tegra:
        result.l4t, result.jetpack = parse_tegra_release(tegra)
    for header in TRT_HEADERS:
        text = _read(root, header)
        if text and (v := parse_trt_header(text)):
            result.tensorrt_lib = v
            break
    result.cuda = cuda_version(root, run)
    smi = run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    result.gpus = parse_nvidia_smi(smi) if smi else []
    if not result.gpus and result.jetson:
        result.gpus = [{"name": f"{result.board_model or 'Jetson'} (integrated GPU)", "driver": result.l4t,
                        "memory": "shared"}]
    result.engines = {m: engine_version(m, find_spec) for m in ENGINES}
    result.tensorrt = result.engines.get("tensorrt") or ""
    if result.tensorrt_lib and not result.tensorrt:
        result.notes.append(f"TensorRT {result.tensorrt_lib} libraries are installed but not its Python package "
                            "(on JetPack: sudo apt install python3-libnvinfer)")
    try:
        spec = find_spec("tensorrt")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and not _is_real_module(spec):
        result.notes.append("'import tensorrt' finds only an empty namespace (tensorrt-stubs without TensorRT); "
                            "TensorRT is not installed")
    return result


# --- recommendation --------------------------------------------------------------------------------------
def match_profile(profile: DeviceProfile, p: ProbeResult) -> tuple[bool, list[str]]:
    """Whether every condition of the profile's [match] table holds here, with the reasons (or the miss)."""
    rule, reasons = profile.match, []
    if not (rule.arch or rule.all_cpu_flags or rule.any_cpu_flags or rule.jetson_models):
        return False, ["the profile has no [match] conditions"]
    if rule.jetson_models:
        hit = next((m for m in rule.jetson_models if m.lower() in p.board_model.lower()), None)
        if not p.jetson or hit is None:
            return False, [f"not a {' / '.join(rule.jetson_models)}"]
        reasons.append(f"Jetson model {p.board_model!r} contains {hit!r}")
    if rule.arch:
        if p.arch not in rule.arch:
            return False, [f"architecture {p.arch} is not {' / '.join(rule.arch)}"]
        reasons.append(f"architecture {p.arch}")
    missing = [f for f in rule.all_cpu_flags if not p.has_flag(f)]
    if missing:
        return False, [f"CPU lacks {', '.join(missing)}"]
    if rule.all_cpu_flags:
        reasons.append(f"CPU has {', '.join(rule.all_cpu_flags)}")
    if rule.any_cpu_flags:
        have = [f for f in rule.any_cpu_flags if p.has_flag(f)]
        if not have:
            return False, [f"CPU has none of {', '.join(rule.any_cpu_flags)}"]
        reasons.append(f"CPU has {', '.join(have)}")
    return True, reasons


def recommend(p: ProbeResult, profiles: Sequence[DeviceProfile] | None = None) -> tuple[str, list[str]]:
    """The most specific matching profile (highest ``match.priority``) and why.

    When none matches, the closest by architecture, saying what was missing; no profile for this
    architecture at all raises DeviceProfileError.
    """
    profiles = list(profiles) if profiles is not None else load_all()
    matches = []
    for prof in profiles:
        ok, why = match_profile(prof, p)
        if ok:
            matches.append((prof.match.priority, prof.name, prof, why))
    if matches:
        # a profile whose engine is installed here beats a more specific one whose engine is not: an
        # OpenVINO-only box gets the OpenVINO profile, not an ONNX Runtime one it cannot run
        matches.sort(key=lambda m: (not p.engines.get(m[2].backend), -m[0], m[1]))
        _, name, prof, reasons = matches[0]
        skipped = [m[1] for m in matches[1:] if m[0] > prof.match.priority]
        others = [m[1] for m in matches[1:] if m[0] <= prof.match.priority]
        if skipped:
            reasons.append(f"its backend {prof.backend} is installed here; {', '.join(skipped)} need(s) one that "
                           "is not")
        if others:
            reasons.append(f"more specific than {', '.join(others)}")
    else:
        same_arch = sorted((q for q in profiles if p.arch in q.match.arch), key=lambda q: q.match.priority)
        if not same_arch:
            raise DeviceProfileError(f"no device profile for architecture {p.arch!r}; write one (copy a file from "
                                     "heatdeploy/devices/profiles/) and pass its path")
        prof = same_arch[0]
        name = prof.name
        _, why = match_profile(prof, p)
        reasons = [f"no profile matches every condition ({'; '.join(why)}); {name} is the closest for {p.arch}"]
    if p.jetson and prof.kind != "jetson":
        reasons.append(f"Jetson board {p.board_model!r} has no profile of its own, so its GPU goes unused: copy a "
                       "jetson-*.toml and set match.jetson_models")
    reasons += _readiness(prof, p)
    return name, reasons


def _readiness(prof: DeviceProfile, p: ProbeResult) -> list[str]:
    """What the recommended profile still needs on this machine (its engine), and version mismatches."""
    notes = [prof.runtime_support] if prof.runtime_support else []
    if p.jetson and p.jetpack.split(".")[0] in ("4", "5") and not prof.runtime_support:
        notes.append(f"JetPack {p.jetpack} ships Python 3.8 or older and heatdeploy needs 3.10+: flash JetPack 6, or "
                     "build the engine with the trtexec line 'heatdeploy export --format tensorrt' prints")
    if not p.engines.get(prof.backend):
        fix = "it comes with JetPack (sudo apt install python3-libnvinfer)" if prof.backend == "tensorrt" \
            else f"pip install 'heatdeploy[{prof.backend}]'"
        notes.append(f"its backend {prof.backend} is not installed here: {fix}")
    want = prof.tensorrt.version if prof.tensorrt else ""
    have = p.tensorrt or p.tensorrt_lib
    if want and have and have.split(".")[0] != want.split(".")[0]:
        notes.append(f"the profile targets TensorRT {want} but this machine has {have}: the engine is built with "
                     f"{have} (INT8 mode and opset follow the installed version)")
    return notes


def probe_lines(p: ProbeResult, name: str, reasons: Sequence[str]) -> list[str]:
    """Human-readable report for the CLI: one fact per line, then the recommendation and its reasons."""
    flags = [f for f in NOTABLE_FLAGS if p.has_flag(f)]
    engines = ", ".join(f"{k} {v}" for k, v in p.engines.items() if v) or "none"
    missing = ", ".join(k for k, v in p.engines.items() if not v) or "none"
    gpus = "; ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in p.gpus) or "none found"
    lines = [
        f"architecture: {p.arch}",
        f"cpu: {p.cpu_model or 'unknown'}; {p.cores} logical CPUs ({p.usable_cores} usable here)",
        f"cpu flags: {', '.join(flags) or 'none of note'}",
        f"memory: {p.memory_gb} GiB" if p.memory_gb is not None else "memory: unknown",
        f"board: {p.board_model or 'n/a'}" + (" (Jetson)" if p.jetson else ""),
    ]
    if p.jetson:
        lines.append(f"L4T {p.l4t or '?'}, JetPack {p.jetpack or '?'}")
    lines += [
        f"TensorRT: {p.tensorrt or 'not installed'}" + (f" (system libraries {p.tensorrt_lib})" if p.tensorrt_lib
                                                        else ""),
        f"CUDA toolkit: {p.cuda or 'not found'}",
        f"GPU: {gpus}",
        f"engines installed: {engines}",
        f"not installed: {missing}",
        *[f"note: {n}" for n in p.notes],
        f"recommended profile: {name}",
        *[f"  - {r}" for r in reasons],
    ]
    return lines


__all__ = ["ProbeResult", "engine_version", "match_profile", "probe", "probe_lines", "recommend"]
