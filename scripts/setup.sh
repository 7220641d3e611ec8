#!/usr/bin/env bash
# Create .venv and install heatdeploy with its export, engine and test dependencies.
# torch is pinned: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[dev]'
# TensorRT's libraries come only from NVIDIA's index; its type stubs let mypy check our TensorRT calls.
# --no-deps: tensorrt-stubs depends on the 'tensorrt' download stub, which fails without NVIDIA's index.
.venv/bin/python -m pip install -q mypy
.venv/bin/python -m pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
echo "heatdeploy installed in .venv"
