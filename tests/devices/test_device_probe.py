"""Probe and recommendation on fake machines (a /proc tree in tmp_path), and on this one."""

from __future__ import annotations

import importlib.machinery
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from heatdeploy.devices.probe import (
    engine_version,
    parse_cpuinfo,
    parse_tegra_release,
    parse_trt_header,
    probe,
    probe_lines,
    recommend,
)
from heatdeploy.devices.profiles import list_profiles

X86_VNNI = "fpu vme sse sse2 avx f16c fma avx2 avx512f avx512bw avx512_vnni"
X86_AVX2 = "fpu vme sse sse2 avx f16c fma avx2"
ARM = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
TEGRA_JP6 = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13\n"
TEGRA_JP5 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug 1\n"
TRT_H = "#define NV_TENSORRT_MAJOR 8 //!< major\n#define NV_TENSORRT_MINOR 5\n#define NV_TENSORRT_PATCH 2\n"


def _cpuinfo(flags: str, model: str, n: int = 4, arm: bool = False) -> str:
    key = "Features" if arm else "flags"
    name = "" if arm else f"model\t\t: 17\nmodel name\t: {model}\n"
    body = "".join(f"processor\t: {i}\n{name}{key}\t\t: {flags}\n\n" for i in range(n))
    return body + (f"Model\t\t: {model}\n" if arm else "")


def fake_machine(root: Path, cpuinfo: str, *, board: str | None = None, tegra: str | None = None,
                 trt_header: str | None = None, cuda_json: str | None = None) -> Path:
    (root / "proc").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text(cpuinfo)
    (root / "proc/meminfo").write_text("MemTotal:        7864320 kB\nMemFree: 1 kB\n")
    if board is not None:
        (root / "proc/device-tree").mkdir()
        (root / "proc/device-tree/model").write_text(board + "\x00")
    if tegra is not None:
        (root / "etc").mkdir()
        (root / "etc/nv_tegra_release").write_text(tegra)
    if trt_header is not None:
        inc = root / "usr/include/aarch64-linux-gnu"
        inc.mkdir(parents=True)
        (inc / "NvInferVersion.h").write_text(trt_header)
    if cuda_json is not None:
        (root / "usr/local/cuda").mkdir(parents=True)
        (root / "usr/local/cuda/version.json").write_text(cuda_json)
    return root


def no_commands(cmd: Sequence[str]) -> str | None:
    return None


def no_engines(name: str) -> Any:
    return None


def test_this_box_vnni_recommends_x86_cpu_vnni(tmp_path: Path) -> None:
    root = fake_machine(tmp_path, _cpuinfo(X86_VNNI, "AMD EPYC", 2))
    p = probe(root, run=no_commands, find_spec=no_engines, machine="x86_64", cores=2, usable_cores=2)
    assert p.cpu_model == "AMD EPYC" and p.has_flag("avx512_vnni") and p.memory_gb == 7.5 and not p.jetson
    name, reasons = recommend(p)
    assert name == "x86-cpu-vnni"
    assert "CPU has avx512_vnni" in reasons and "more specific than x86-cpu, x86-cpu-openvino" in reasons
    assert any("backend onnxruntime is not installed" in r for r in reasons)  # no engines in this fake


@pytest.mark.parametrize("installed, expected", [
    ({"onnxruntime", "openvino"}, "x86-cpu-vnni"),
    ({"openvino"}, "x86-cpu-openvino"),
    ({"onnxruntime"}, "x86-cpu-vnni"),
])
def test_the_installed_engine_decides_between_matching_profiles(tmp_path: Path, installed: set[str],
                                                                expected: str) -> None:
    """An OpenVINO-only box is recommended the OpenVINO profile, not an ONNX Runtime one it cannot run."""
    def find_spec(name: str) -> Any:
        if name in installed:
            return importlib.machinery.ModuleSpec(name, None, origin=f"/site-packages/{name}/__init__.py")
        return None

    p = probe(fake_machine(tmp_path, _cpuinfo(X86_VNNI, "Xeon")), run=no_commands, find_spec=find_spec,
              machine="x86_64")
    name, reasons = recommend(p)
    assert name == expected
    assert not any("is not installed here" in r for r in reasons)
    if expected == "x86-cpu-openvino":
        assert "its backend openvino is installed here; x86-cpu-vnni need(s) one that is not" in reasons


def test_avx2_without_vnni_and_old_cpu(tmp_path: Path) -> None:
    p = probe(fake_machine(tmp_path / "a", _cpuinfo(X86_AVX2, "Core i5")), run=no_commands, find_spec=no_engines,
              machine="x86_64")
    assert recommend(p)[0] == "x86-cpu"
    p = probe(fake_machine(tmp_path / "b", _cpuinfo("fpu sse sse2 avx", "Old Xeon")), run=no_commands,
              find_spec=no_engines, machine="x86_64")
    name, reasons = recommend(p)
    assert name == "x86-cpu" and "no profile matches every condition (CPU lacks avx2, fma)" in reasons[0]


@pytest.mark.parametrize("board, tegra, expected, jetpack", [
    ("NVIDIA Jetson Orin Nano Developer Kit", TEGRA_JP6, "jetson-orin-nano", "6.1"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", TEGRA_JP6, "jetson-orin-nx", "6.1"),
    ("Jetson AGX Orin", TEGRA_JP6, "jetson-agx-orin", "6.1"),
    ("NVIDIA Jetson Xavier NX Developer Kit", TEGRA_JP5, "jetson-xavier-nx", "5.1.2"),
])
def test_jetsons(tmp_path: Path, board: str, tegra: str, expected: str, jetpack: str) -> None:
    root = fake_machine(tmp_path, _cpuinfo(ARM, "", 6, arm=True), board=board, tegra=tegra, trt_header=TRT_H)
    p = probe(root, run=no_commands, find_spec=no_engines, machine="aarch64")
    assert p.jetson and p.board_model == board and p.jetpack == jetpack and p.tensorrt_lib == "8.5.2"
    assert p.gpus and "integrated GPU" in p.gpus[0]["name"]  # no nvidia-smi on a Jetson
    name, reasons = recommend(p)
    assert name == expected and any("contains" in r for r in reasons)
    assert any("TensorRT comes" in r or "comes with JetPack" in r for r in reasons)  # python3-libnvinfer missing
    if expected != "jetson-xavier-nx":  # Orin profiles target TensorRT 10.3; this fake has 8.5.2
        assert any("targets TensorRT 10.3 but this machine has 8.5.2" in r for r in reasons)
    else:  # JetPack 5 (Python 3.8): said honestly, with what to do instead
        assert any(r.startswith("not supported on the device: JetPack 5 has Python 3.8") and "trtexec" in r
                   for r in reasons)


def test_an_orin_on_jetpack_5_is_told_heatdeploy_needs_jetpack_6(tmp_path: Path) -> None:
    root = fake_machine(tmp_path, _cpuinfo(ARM, "", 6, arm=True), board="NVIDIA Jetson Orin Nano Developer Kit",
                        tegra=TEGRA_JP5, trt_header=TRT_H)
    name, reasons = recommend(probe(root, run=no_commands, find_spec=no_engines, machine="aarch64"))
    assert name == "jetson-orin-nano"
    assert any("JetPack 5.1.2 ships Python 3.8 or older and heatdeploy needs 3.10+: flash JetPack 6" in r
               for r in reasons)


def test_raspberry_pi_and_unknown_jetson(tmp_path: Path) -> None:
    pi = fake_machine(tmp_path / "pi", _cpuinfo(ARM, "Raspberry Pi 5 Model B Rev 1.0", 4, arm=True),
                      board="Raspberry Pi 5 Model B Rev 1.0")
    p = probe(pi, run=no_commands, find_spec=no_engines, machine="aarch64")
    assert not p.jetson and p.cpu_model == "Raspberry Pi 5 Model B Rev 1.0" and p.has_flag("asimddp")
    assert recommend(p)[0] == "arm64-cpu"
    thor = fake_machine(tmp_path / "thor", _cpuinfo(ARM, "", 14, arm=True), board="NVIDIA Jetson AGX Thor",
                        tegra="# R38 (release), REVISION: 2.0, GCID: 1\n")
    p = probe(thor, run=no_commands, find_spec=no_engines, machine="aarch64")
    name, reasons = recommend(p)
    assert p.jetpack == "7.x" and name == "arm64-cpu" and any("has no profile of its own" in r for r in reasons)


def test_gpu_cuda_and_engines(tmp_path: Path) -> None:
    root = fake_machine(tmp_path, _cpuinfo(X86_AVX2, "Xeon"), cuda_json=json.dumps({"cuda": {"version": "12.4.1"}}))

    def run(cmd: Sequence[str]) -> str | None:
        return "NVIDIA RTX A2000, 550.54.15, 6138 MiB\n" if cmd[0] == "nvidia-smi" else None

    stub = importlib.machinery.ModuleSpec("tensorrt", None, is_package=True)  # tensorrt-stubs alone: a namespace
    real = importlib.machinery.ModuleSpec("onnx", None, origin=str(tmp_path / "onnx/__init__.py"))

    cuda_rt = importlib.machinery.ModuleSpec("cuda.bindings.runtime", None, origin=str(tmp_path / "runtime.so"))

    def find_spec(name: str) -> Any:  # cuda-python: 'cuda' is a namespace, its runtime bindings are real
        return {"tensorrt": stub, "onnx": real, "cuda": stub, "cuda.bindings.runtime": cuda_rt}.get(name)

    p = probe(root, run=run, find_spec=find_spec, machine="x86_64")
    assert p.cuda == "12.4.1"
    assert p.gpus == [{"name": "NVIDIA RTX A2000", "driver": "550.54.15", "memory": "6138 MiB"}]
    assert p.engines["tensorrt"] is None and p.tensorrt == ""
    assert any("empty namespace" in n for n in p.notes)
    assert p.engines["onnx"]  # version from this environment's metadata
    assert p.engines["cuda"] is not None  # found through cuda.bindings.runtime despite the namespace
    lines = probe_lines(p, *recommend(p))
    assert "GPU: NVIDIA RTX A2000 (driver 550.54.15, 6138 MiB)" in lines and "recommended profile: x86-cpu" in lines


def test_nvcc_fallback_and_version_from_source(tmp_path: Path) -> None:
    root = fake_machine(tmp_path, _cpuinfo(X86_AVX2, "Xeon"))

    def run(cmd: Sequence[str]) -> str | None:
        return "Cuda compilation tools, release 11.4, V11.4.315" if cmd[0].endswith("nvcc") else None

    assert probe(root, run=run, find_spec=no_engines, machine="x86_64").cuda == "11.4"
    pkg = tmp_path / "site" / "sysengine"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .x import *\n__version__ = '8.5.2.2'\n")
    spec = importlib.machinery.ModuleSpec("sysengine", None, origin=str(pkg / "__init__.py"))
    assert engine_version("sysengine", lambda name: spec) == "8.5.2.2"  # a JetPack apt package has no metadata


def test_parsers() -> None:
    assert parse_tegra_release(TEGRA_JP5) == ("35.4.1", "5.1.2")
    assert parse_tegra_release("# R36 (release), REVISION: 3.0") == ("36.3.0", "6.0")
    assert parse_tegra_release("# R35 (release), REVISION: 9") == ("35.9.0", "5.x")
    assert parse_tegra_release("garbage") == ("", "")
    assert parse_trt_header(TRT_H) == "8.5.2" and parse_trt_header("#define NV_TENSORRT_MAJOR 10") == ""
    model, flags, n = parse_cpuinfo(_cpuinfo(X86_VNNI, "AMD EPYC", 3))
    assert model == "AMD EPYC" and n == 3 and "avx512_vnni" in flags


def test_real_probe_on_this_machine() -> None:
    p = probe()
    name, reasons = recommend(p)
    assert name in list_profiles() and reasons
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    if p.arch == "x86_64" and " avx512_vnni" in flags:
        assert name == "x86-cpu-vnni"  # the must-show on the 2-core AVX512-VNNI box
    assert p.engines.get("tensorrt") is None or p.tensorrt  # a stub namespace never counts as TensorRT
    assert any(line.startswith("recommended profile: ") for line in probe_lines(p, name, reasons))
