"""TensorRT backend: a serialized engine (``.plan``) run through the TensorRT Python API, I/O by tensor name.

An engine only runs on the TensorRT version and GPU it was built for. TensorRT may refuse a foreign plan,
or may not; a plan that was truncated or replaced can crash the process. So every engine heatdeploy builds
has a sidecar record (``<engine>.plan.json``: cache key, TensorRT version, GPU name, sha256 of the plan),
and :func:`load` checks it before deserializing: a stale or corrupt engine is reported, never run.

Device memory comes from cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` before cuda-python 12.6)
or, when only PyTorch with CUDA is installed, from torch; pycuda is not needed. TensorRT and the CUDA
bindings are imported inside :func:`load`, so the record logic here is importable (and tested) anywhere.

Options: ``device`` (CUDA device index, default 0), ``memory`` ("auto", "cuda-python" or "torch"),
``verify`` (default True; False runs a plan without a record, e.g. one built by trtexec — TensorRT's own
checks are then the only ones).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from heatdeploy.errortext import first_line
from heatdeploy.runtime.backends.base import BackendError, check_feed_names

if TYPE_CHECKING:
    import tensorrt as trt

ENGINE_FORMAT = "heatdeploy-tensorrt-engine"
ENGINE_SCHEMA = 1
MIN_TENSORRT = (8, 5)  # name-based I/O (set_tensor_address, execute_async_v3) arrived in 8.5
_KNOWN_OPTIONS = ("device", "memory", "verify")
_REBUILD = "rebuild it on this machine: heatdeploy build-engine BUNDLE"
# what tells one GPU (or Jetson module) from another beyond its name, as the engine record spells it
DEVICE_FIELDS = {"compute_capability": "compute capability", "sm_count": "SM count",
                 "memory_gib": "GPU memory (GiB)", "board": "board"}
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")  # e.g. "NVIDIA Jetson Orin Nano Developer Kit"


# --- the engine record (pure logic, no TensorRT) -------------------------------------------------------
def sidecar_path(plan: str | os.PathLike[str]) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    p = Path(plan)
    return p.with_name(p.name + ".json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def version_triple(version: str) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0); engines are tied to major.minor.patch."""
    parts = []
    for p in version.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


def dims_list(dims: trt.Dims | Sequence[int]) -> list[int]:
    """TensorRT Dims as a list (Dims index like a tuple but, to the type checker, do not iterate)."""
    return [int(dims[i]) for i in range(len(dims))]


def read_engine_record(plan: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar record of an engine; BackendError when it is missing or unreadable."""
    side = sidecar_path(plan)
    if not side.is_file():
        raise BackendError(f"{plan}: no engine record {side.name} beside it, so its TensorRT version and GPU are "
                           f"unknown; {_REBUILD} (or pass options {{'verify': False}} for a trtexec-built plan)")
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackendError(f"{side}: unreadable engine record ({exc}); {_REBUILD}") from None
    if not isinstance(record, dict):
        raise BackendError(f"{side}: not an engine record; {_REBUILD}")
    return record


def check_engine_record(record: Mapping[str, Any], *, engine_sha256: str | None = None,
                        trt_version: str | None = None, gpu_name: str | None = None,
                        key: str | None = None, device: Mapping[str, Any] | None = None) -> list[str]:
    """Why this engine must not run here (empty when it may): corrupt, or built for other inputs/TensorRT/GPU.

    ``engine_sha256`` is the plan file's digest now; ``trt_version`` / ``gpu_name`` / ``device`` (see
    :func:`device_identity`) describe this machine; ``key`` is the cache key the caller expects (model +
    TensorRT + GPU + precision + options). Jetson modules all call their GPU "Orin" with compute 8.7, so the
    SM count, memory and board model are compared too, when both sides know them.
    """
    problems = []
    if record.get("format") != ENGINE_FORMAT:
        return [f"not a heatdeploy engine record (format {record.get('format')!r})"]
    if record.get("schema") != ENGINE_SCHEMA:
        return [f"engine record schema {record.get('schema')!r}, this heatdeploy reads {ENGINE_SCHEMA}"]
    if engine_sha256 is not None and record.get("engine_sha256") != engine_sha256:
        problems.append(f"the plan's sha256 {engine_sha256[:12]}... does not match its record "
                        f"({str(record.get('engine_sha256'))[:12]}...): the file is corrupt or was replaced")
    built_trt = str(record.get("tensorrt", ""))
    if trt_version is not None and version_triple(built_trt) != version_triple(trt_version):
        problems.append(f"built with TensorRT {built_trt or '?'}, this machine has {trt_version}")
    built_gpu = str(record.get("gpu", ""))
    if gpu_name is not None and built_gpu != gpu_name:
        problems.append(f"built for GPU {built_gpu or '?'!r}, this is {gpu_name!r}")
    raw_device = record.get("device")
    built_device: Mapping[str, Any] = raw_device if isinstance(raw_device, Mapping) else {}
    for field, label in DEVICE_FIELDS.items():
        mine, theirs = (device or {}).get(field), built_device.get(field)
        if field == "compute_capability" and theirs is None:
            theirs = record.get("compute_capability")
        if mine not in (None, "") and theirs not in (None, "") and str(mine) != str(theirs):
            problems.append(f"built for {label} {theirs}, this device has {mine}")
    if key is not None and record.get("key") != key:
        problems.append("built from another model, precision or builder options (cache key "
                        f"{str(record.get('key'))[:12]}..., expected {key[:12]}...)")
    return problems


def verify_engine(plan: str | os.PathLike[str], *, trt_version: str | None, gpu_name: str | None,
                  key: str | None = None, device: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], bytes]:
    """Read the plan and its record and check both; BackendError naming every problem and the fix."""
    p = Path(plan)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BackendError(f"{p}: cannot read the engine ({exc.strerror or exc}); {_REBUILD}") from None
    record = read_engine_record(p)
    problems = check_engine_record(record, engine_sha256=sha256_bytes(data), trt_version=trt_version,
                                   gpu_name=gpu_name, key=key, device=device)
    if problems:
        raise BackendError(f"{p}: stale or corrupt TensorRT engine, not run: {'; '.join(problems)}; {_REBUILD}")
    return record, data


# --- TensorRT and CUDA, imported only here --------------------------------------------------------------
def import_tensorrt() -> Any:
    """The real TensorRT module, or BackendError saying how to get it.

    ``tensorrt-stubs`` installed alone leaves an importable, empty ``tensorrt`` namespace: that is not
    TensorRT, and is reported as missing.
    """
    try:
        import tensorrt as trt_mod
    except (ImportError, OSError, RuntimeError) as exc:  # no package, or its libnvinfer does not load
        raise BackendError(f"tensorrt: the TensorRT Python package is not importable ({exc}); on a Jetson it "
                           "comes with JetPack (sudo apt install python3-libnvinfer), on x86-64 with an NVIDIA "
                           "GPU: pip install tensorrt") from None
    version = getattr(trt_mod, "__version__", None)
    if not isinstance(version, str):
        raise BackendError("tensorrt: 'import tensorrt' found only an empty namespace package (tensorrt-stubs "
                           "without TensorRT?); install TensorRT itself")
    if version_triple(version)[:2] < MIN_TENSORRT:
        raise BackendError(f"tensorrt {version}: heatdeploy needs TensorRT >= "
                           f"{'.'.join(map(str, MIN_TENSORRT))} (name-based I/O); upgrade JetPack/TensorRT")
    return trt_mod


class DeviceBuffer(Protocol):
    ptr: int
    nbytes: int


class CudaApi(Protocol):
    """The few CUDA calls the backend needs, from cuda-python or torch."""

    name: str

    def device_name(self) -> str: ...
    def compute_capability(self) -> str: ...
    def sm_count(self) -> int: ...
    def total_memory(self) -> int: ...
    def stream_handle(self) -> int: ...
    def alloc(self, nbytes: int) -> DeviceBuffer: ...
    def free(self, buf: DeviceBuffer) -> None: ...
    def upload(self, buf: DeviceBuffer, host: np.ndarray) -> None: ...
    def download(self, host: np.ndarray, buf: DeviceBuffer) -> None: ...
    def synchronize(self) -> None: ...


class _Buffer:
    def __init__(self, ptr: int, nbytes: int, owner: Any = None) -> None:
        self.ptr, self.nbytes, self.owner = ptr, nbytes, owner


class _CudaPython:
    """cuda-python's runtime bindings: every call returns (error, value...)."""

    name = "cuda-python"

    def __init__(self, device: int) -> None:
        try:
            self.rt: Any = importlib.import_module("cuda.bindings.runtime")
        except ImportError:
            self.rt = importlib.import_module("cuda.cudart")  # cuda-python < 12.6 (JetPack 5/6 wheels)
        self.device = device
        self._check(self.rt.cudaSetDevice(device), "cudaSetDevice")
        self.stream = self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        self.props = self._check(self.rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")

    def _check(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            msg = self.rt.cudaGetErrorString(err)
            text = msg[1].decode() if isinstance(msg, tuple) and isinstance(msg[1], bytes) else str(err)
            raise BackendError(f"tensorrt: CUDA {what} failed ({text}); is a GPU visible to this process?")
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)

    def device_name(self) -> str:
        raw = self.props.name
        return (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)).rstrip("\x00").strip()

    def compute_capability(self) -> str:
        return f"{self.props.major}.{self.props.minor}"

    def sm_count(self) -> int:
        return int(self.props.multiProcessorCount)

    def total_memory(self) -> int:
        return int(self.props.totalGlobalMem)

    def stream_handle(self) -> int:
        return int(self.stream)

    def alloc(self, nbytes: int) -> DeviceBuffer:
        return _Buffer(int(self._check(self.rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc")), nbytes)

    def free(self, buf: DeviceBuffer) -> None:
        self.rt.cudaFree(buf.ptr)

    def upload(self, buf: DeviceBuffer, host: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(buf.ptr, host.ctypes.data, host.nbytes, kind, self.stream),
                    "cudaMemcpyAsync (host to device)")

    def download(self, host: np.ndarray, buf: DeviceBuffer) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(host.ctypes.data, buf.ptr, host.nbytes, kind, self.stream),
                    "cudaMemcpyAsync (device to host)")

    def synchronize(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")


class _TorchCuda:
    """PyTorch's CUDA allocator and current stream, for machines that have torch but not cuda-python."""

    name = "torch"

    def __init__(self, device: int) -> None:
        self.torch: Any = importlib.import_module("torch")
        if not self.torch.cuda.is_available():
            raise BackendError("tensorrt: torch is installed without a usable CUDA device; install cuda-python "
                               "or a CUDA build of torch")
        self.device = f"cuda:{device}"
        self.index = device

    def device_name(self) -> str:
        return str(self.torch.cuda.get_device_name(self.index))

    def compute_capability(self) -> str:
        major, minor = self.torch.cuda.get_device_capability(self.index)
        return f"{major}.{minor}"

    def sm_count(self) -> int:
        return int(self.torch.cuda.get_device_properties(self.index).multi_processor_count)

    def total_memory(self) -> int:
        return int(self.torch.cuda.get_device_properties(self.index).total_memory)

    def stream_handle(self) -> int:
        return int(self.torch.cuda.current_stream(self.index).cuda_stream)

    def alloc(self, nbytes: int) -> DeviceBuffer:
        t = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, device=self.device)
        return _Buffer(int(t.data_ptr()), nbytes, t)

    def free(self, buf: DeviceBuffer) -> None:
        cast(_Buffer, buf).owner = None  # torch frees the tensor with its last reference

    def upload(self, buf: DeviceBuffer, host: np.ndarray) -> None:
        src = self.torch.from_numpy(host.reshape(-1).view(np.uint8))
        cast(_Buffer, buf).owner[: host.nbytes].copy_(src)

    def download(self, host: np.ndarray, buf: DeviceBuffer) -> None:
        dst = self.torch.from_numpy(host.reshape(-1).view(np.uint8))
        dst.copy_(cast(_Buffer, buf).owner[: host.nbytes])

    def synchronize(self) -> None:
        self.torch.cuda.current_stream(self.index).synchronize()


def _real_spec(name: str) -> bool:
    """Installed, without importing it (``cuda`` itself is a namespace package: ask for its submodules)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace")


def cuda_api(memory: str = "auto", device: int = 0) -> CudaApi:
    """cuda-python when installed, else torch with CUDA; BackendError naming what to install otherwise."""
    if memory not in ("auto", "cuda-python", "torch"):
        raise BackendError(f"tensorrt: option memory must be auto, cuda-python or torch, got {memory!r}")
    if memory in ("auto", "cuda-python") and (_real_spec("cuda.bindings") or _real_spec("cuda.cudart")):
        try:
            return _CudaPython(device)
        except ImportError as exc:
            if memory == "cuda-python":
                raise BackendError(f"tensorrt: cuda-python is installed but its runtime bindings do not import "
                                   f"({exc}); pip install 'cuda-python' matching your CUDA major version") from None
        except (RuntimeError, OSError) as exc:  # no libcuda.so.1: a container without the NVIDIA runtime
            raise BackendError(f"tensorrt: cuda-python cannot reach the CUDA driver ({first_line(exc)}); run on the "
                               "device, or in a container started with the NVIDIA runtime (--runtime nvidia)") from None
    if memory in ("auto", "torch") and _real_spec("torch"):
        return _TorchCuda(device)
    raise BackendError("tensorrt: no CUDA bindings for device memory; pip install cuda-python (its major version "
                       "matching your CUDA: 11.x on JetPack 5, 12.x on JetPack 6), or use a CUDA build of torch")


def machine_identity(memory: str = "auto", device: int = 0) -> tuple[str, str, str]:
    """(TensorRT version, GPU name, compute capability) of this machine, as the engine record spells them."""
    import_tensorrt()
    import tensorrt as trt

    api = cuda_api(memory, device)
    return trt.__version__, api.device_name(), api.compute_capability()


def board_model(path: Path = DEVICE_TREE_MODEL) -> str:
    """The board's model string from the device tree (Jetsons have one; x86 GPU boxes do not: "")."""
    try:
        return path.read_bytes().decode(errors="replace").replace("\x00", "").strip()
    except OSError:
        return ""


def device_identity(api: CudaApi) -> dict[str, Any]:
    """What tells this GPU apart beyond its name (part of the engine cache key, checked on load)."""
    return {"compute_capability": api.compute_capability(), "sm_count": api.sm_count(),
            "memory_gib": round(api.total_memory() / 2**30), "board": board_model()}


# --- the backend ------------------------------------------------------------------------------------------
class TensorRTBackend:
    """One engine and execution context; ``infer`` takes and returns arrays by tensor name.

    A batch larger than the engine's optimisation profile allows is run in chunks of the profile's maximum,
    and said so in ``describe()``; any other shape outside the profile is a BackendError.
    """

    def __init__(self, path: str, runtime: trt.Runtime, engine: trt.ICudaEngine, cuda: CudaApi,
                 record: dict[str, Any] | None) -> None:
        import tensorrt as trt

        self.path, self.runtime, self.engine, self.cuda, self.record = path, runtime, engine, cuda, record
        self.version = str(trt.__version__)
        context = engine.create_execution_context()
        if context is None:
            raise BackendError(f"{path}: TensorRT could not create an execution context (out of GPU memory?)")
        self.context: trt.IExecutionContext = context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names: list[str] = [n for n in names if is_input[n]]
        self.output_names: list[str] = [n for n in names if not is_input[n]]
        self.dtypes: dict[str, np.dtype[Any]] = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.shapes: dict[str, list[int]] = {n: dims_list(engine.get_tensor_shape(n)) for n in names}
        self.input_shapes: dict[str, list[int | None]] = {
            n: [d if d >= 0 else None for d in self.shapes[n]] for n in self.input_names}
        self.profiles: dict[str, tuple[list[int], list[int], list[int]]] = {}
        for n in self.input_names:
            if -1 in self.shapes[n]:
                lo, opt, hi = engine.get_tensor_profile_shape(n, 0)
                self.profiles[n] = (dims_list(lo), dims_list(opt), dims_list(hi))
        self._buffers: dict[str, DeviceBuffer] = {}
        self.chunked_calls = 0

    # sizes -----------------------------------------------------------------------------------------------
    def max_batch(self) -> int | None:
        """The largest batch every input's profile allows (None for a static-shape engine)."""
        highs = [hi[0] for _, _, hi in self.profiles.values()]
        return min(highs) if highs else None

    def _check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        want = self.shapes[name]
        if len(shape) != len(want) or any(w not in (-1, s) for w, s in zip(want, shape, strict=True)):
            raise BackendError(f"{self.path}: input {name!r} has shape {list(shape)}, the engine takes {want}")
        if name in self.profiles:
            lo, _, hi = self.profiles[name]
            if any(not a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
                raise BackendError(f"{self.path}: input {name!r} shape {list(shape)} is outside the engine's "
                                   f"optimisation profile {lo}..{hi}; rebuild with a wider batch range")

    def _buffer(self, name: str, nbytes: int) -> DeviceBuffer:
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                self.cuda.free(buf)
            buf = self._buffers[name] = self.cuda.alloc(nbytes)
        return buf

    # running ---------------------------------------------------------------------------------------------
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feed_names(self.path, feeds, self.input_names, "engine")
        arrays = {n: np.ascontiguousarray(np.asarray(feeds[n]), dtype=self.dtypes[n]) for n in self.input_names}
        batch = {a.shape[0] for a in arrays.values() if a.ndim}
        limit = self.max_batch()
        if limit is not None and len(batch) == 1 and (n := batch.pop()) > limit:
            self.chunked_calls += 1
            parts = [self._run({k: v[i:i + limit] for k, v in arrays.items()}) for i in range(0, n, limit)]
            return {k: np.concatenate([p[k] for p in parts]) for k in self.output_names}
        return self._run(arrays)

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ctx = self.context
        for name, arr in arrays.items():
            self._check_shape(name, arr.shape)
            if name in self.profiles and not ctx.set_input_shape(name, arr.shape):
                raise BackendError(f"{self.path}: TensorRT rejected input shape {list(arr.shape)} for {name!r}")
            buf = self._buffer(name, arr.nbytes)
            self.cuda.upload(buf, arr)
            ctx.set_tensor_address(name, buf.ptr)
        outputs: dict[str, np.ndarray] = {}
        for name in self.output_names:
            shape = tuple(dims_list(ctx.get_tensor_shape(name)))
            if any(d < 0 for d in shape):
                raise BackendError(f"{self.path}: output {name!r} shape {list(shape)} is unresolved after setting "
                                   "the inputs (data-dependent shapes are not supported)")
            host = np.empty(shape, dtype=self.dtypes[name])
            buf = self._buffer(name, host.nbytes)
            ctx.set_tensor_address(name, buf.ptr)
            outputs[name] = host
        if not ctx.execute_async_v3(self.cuda.stream_handle()):
            raise BackendError(f"{self.path}: TensorRT execute_async_v3 failed; see the TensorRT log above")
        for name, host in outputs.items():
            self.cuda.download(host, self._buffers[name])
        self.cuda.synchronize()
        return outputs

    def spec(self) -> None:
        """A plan embeds no spec: TensorRT engines run from a bundle, whose manifest holds it."""
        return None

    def describe(self) -> dict[str, Any]:
        """What runs: TensorRT version, GPU, memory bindings, tensors and profile ranges, the engine record."""
        return {
            "backend": "tensorrt", "version": self.version, "path": self.path,
            "gpu": self.cuda.device_name(), "memory": self.cuda.name,
            "inputs": [{"name": n, "shape": self.shapes[n], "dtype": self.dtypes[n].name,
                        "profile": self.profiles.get(n)} for n in self.input_names],
            "outputs": [{"name": n, "shape": self.shapes[n], "dtype": self.dtypes[n].name} for n in self.output_names],
            "chunked_calls": self.chunked_calls, "record": self.record,
        }

    def close(self) -> None:
        for buf in self._buffers.values():
            self.cuda.free(buf)
        self._buffers.clear()

    def __del__(self) -> None:  # free device memory with the backend, not at interpreter exit
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the CUDA context may already be gone
            pass


def read_spec(path: str | os.PathLike[str]) -> None:
    """A plan embeds no spec; run it from its bundle."""
    return None


def load(path: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> TensorRTBackend:
    """Check the engine record against this machine, deserialize, and make a context; loud on any mismatch."""
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(_KNOWN_OPTIONS))
    if unknown:
        raise BackendError(f"tensorrt: unknown option(s) {', '.join(unknown)}; known: {', '.join(_KNOWN_OPTIONS)}")
    device = opts.get("device", 0)
    if not isinstance(device, int) or isinstance(device, bool) or device < 0:
        raise BackendError(f"tensorrt: option device must be a CUDA device index, got {device!r}")
    plan = Path(path)
    if not plan.is_file():
        raise BackendError(f"{plan}: no such TensorRT engine; build it with heatdeploy build-engine BUNDLE")
    import_tensorrt()  # a clear error when TensorRT is missing, a stub namespace, or too old
    import tensorrt as trt

    cuda = cuda_api(str(opts.get("memory", "auto")), device)
    record: dict[str, Any] | None = None
    if opts.get("verify", True):
        record, data = verify_engine(plan, trt_version=trt.__version__, gpu_name=cuda.device_name(),
                                     device=device_identity(cuda))
    else:
        data = plan.read_bytes()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise BackendError(f"{plan}: TensorRT {trt.__version__} could not deserialize this engine (built by "
                           f"another TensorRT version or GPU, or corrupt); {_REBUILD}")
    return TensorRTBackend(str(plan), runtime, engine, cuda, record)  # keeps the runtime alive with the engine


__all__ = ["ENGINE_FORMAT", "TensorRTBackend", "check_engine_record", "cuda_api", "import_tensorrt", "load",
           "board_model", "device_identity", "machine_identity", "read_engine_record", "read_spec", "sidecar_path",
           "verify_engine"]
