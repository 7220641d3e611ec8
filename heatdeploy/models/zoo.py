"""Real pose models nobody on the project trained, fetched from package registries: the held-out zoo.

INT8 recipes tuned on the shipped reference and on BlazePose full must also hold on models of the same
kinds they never saw, so the benchmarks and tests run them on these too. Each entry is pinned (package,
version, member, size, sha256) and fetched the way :mod:`heatdeploy.models.blazepose` fetches
``pose_landmark_full.tflite``: the registry's ordinary client (``npm pack`` or ``pip download``) puts the
package in a temporary folder, the one member is read out by its fixed name (no name from the archive
becomes a path), its sha256 is checked and the file is cached atomically.

- ``blazepose-lite`` / ``blazepose-heavy``: MediaPipe's BlazePose GHUM lite and heavy landmark models
  from npm ``@mediapipe/pose`` (Apache-2.0). Same tensors as full (NHWC 256x256 RGB in [0, 1]; heatmap
  logits ``Identity_3`` [1,64,64,39], presence probability ``Identity_1``, landmark vector ``Identity``),
  so they share :func:`heatdeploy.models.blazepose.blazepose_spec_dict`; lite is the small
  depthwise-heavy kind, heavy the large one.
- ``blazepose-full``: the shipped one (mediapipe wheel), listed so a loop over the zoo covers it.

No OpenPose-style bottom-up model ships as a weights file in a registry package this project could pin;
the zoo says so rather than holding a stand-in.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heatdeploy.exporters.sources import SourceError
from heatdeploy.fsutil import atomic_write_bytes, cache_dir, sha256_file
from heatdeploy.models.fetch_tool import run_fetch_tool

FETCH_TIMEOUT_S = 600


class ZooError(SourceError):
    """A zoo model could not be fetched or checked; the one-line message says why and what to do."""


@dataclass(frozen=True)
class ZooModel:
    """One pinned model file inside one registry package, and how heatdeploy reads it."""

    name: str
    registry: str  # "npm" | "pypi"
    package: str  # npm name or pip requirement name
    version: str
    member: str  # path inside the package archive
    filename: str  # cached as
    sha256: str
    size: int
    kind: str  # what the model is, for reports
    license: str
    spec: Callable[[], dict[str, Any]]  # the ModelSpec as a dict (JSON-ready)

    @property
    def pin(self) -> str:
        return f"{self.package}@{self.version}" if self.registry == "npm" else f"{self.package}=={self.version}"


def _blazepose_spec(name: str) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        from heatdeploy.models.blazepose import blazepose_spec_dict

        return {**blazepose_spec_dict(), "name": name}

    return make


NPM_POSE = ("@mediapipe/pose", "0.5.1675469404")
MODELS: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("blazepose-lite", "npm", *NPM_POSE, "package/pose_landmark_lite.tflite", "pose_landmark_lite.tflite",
             "f17bfbecadb61c3be1baa8b8d851cc6619c870a87167b32848ad20db306b9d61", 2_819_824,
             "small depthwise-heavy NHWC landmark model (heatmap + landmark vector + presence)", "Apache-2.0",
             _blazepose_spec("mediapipe-blazepose-ghum-lite")),
    ZooModel("blazepose-heavy", "npm", *NPM_POSE, "package/pose_landmark_heavy.tflite",
             "pose_landmark_heavy.tflite", "59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe",
             27_709_200, "large depthwise-heavy NHWC landmark model (heatmap + landmark vector + presence)",
             "Apache-2.0", _blazepose_spec("mediapipe-blazepose-ghum-heavy")),
    ZooModel("blazepose-full", "pypi", "mediapipe", "0.10.14",
             "mediapipe/modules/pose_landmark/pose_landmark_full.tflite", "pose_landmark_full.tflite",
             "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f", 6_440_512,
             "the shipped BlazePose full (mediapipe wheel)", "Apache-2.0",
             _blazepose_spec("mediapipe-blazepose-ghum-full")),
)}


def zoo_model(name: str) -> ZooModel:
    """The entry called ``name``; an unknown name is a one-line error listing the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ZooError(f"zoo: no model {name!r}; choose one of {', '.join(MODELS)}") from None


def zoo_spec(name: str) -> Any:
    """The validated ModelSpec of a zoo model."""
    from heatdeploy.spec import ModelSpec

    return ModelSpec.from_dict(zoo_model(name).spec(), f"zoo spec {name}")


def fetch(name: str, dest_dir: str | Path | None = None) -> Path:
    """Path of the zoo model ``name`` in ``dest_dir`` (default ``cache_dir('models')``), fetching it if needed.

    A cached file whose sha256 matches is reused; otherwise the registry client downloads the pinned
    package into a temporary folder and the member is read by its fixed name. Raises ZooError when the
    registry cannot be reached or the package is not the pinned one.
    """
    model = zoo_model(name)
    folder = Path(dest_dir).expanduser() if dest_dir is not None else cache_dir("models")
    target = folder / model.filename
    if target.is_file() and sha256_file(target) == model.sha256:
        return target
    if model.name == "blazepose-full":  # the shipped model has its own fetcher (same pin)
        from heatdeploy.models.blazepose import fetch_blazepose

        return fetch_blazepose(folder)
    with tempfile.TemporaryDirectory(prefix="heatdeploy-zoo-") as tmp:
        archive = _download(model, Path(tmp), folder)
        data = _member(model, archive)
    digest = hashlib.sha256(data).hexdigest()
    if digest != model.sha256:
        raise ZooError(f"{model.pin}: {model.member} has sha256 {digest[:12]}…, expected {model.sha256[:12]}…; "
                       "the registry's package is not the pinned one: report it, do not use the file")
    atomic_write_bytes(target, data)
    return target


def _fix(model: ZooModel, folder: Path) -> str:
    return (f"check access to the {model.registry} registry (its client's config / proxy), or put {model.filename} "
            f"(sha256 {model.sha256[:12]}…, from {model.pin}) into {folder}")


def _download(model: ZooModel, tmp: Path, folder: Path) -> Path:
    if model.registry != "npm":
        raise ZooError(f"{model.name}: registry {model.registry!r} has no fetcher here; {_fix(model, folder)}")
    npm = shutil.which("npm")
    if npm is None:
        raise ZooError(f"{model.pin}: npm is not installed; install Node.js/npm or {_fix(model, folder)}")
    cmd = [npm, "pack", model.pin, "--pack-destination", str(tmp), "--silent"]
    run_fetch_tool(cmd, label=model.pin, tool="npm", thing="the package", fix=_fix(model, folder), error=ZooError,
                   timeout=FETCH_TIMEOUT_S, cwd=tmp)
    archives = sorted(tmp.glob("*.tgz"))
    if len(archives) != 1:
        raise ZooError(f"{model.pin}: npm reported success but left {len(archives)} archive(s); {_fix(model, folder)}")
    return archives[0]


def _member(model: ZooModel, archive: Path) -> bytes:
    """The member's bytes, read by its fixed name (nothing from the archive is extracted to disk)."""
    try:
        with tarfile.open(archive, "r:gz") as tf:
            info = tf.getmember(model.member)
            if not info.isfile() or info.size != model.size:
                raise ZooError(f"{archive.name}: {model.member} is {info.size} bytes, expected {model.size}; "
                               "the package is not the pinned one")
            handle = tf.extractfile(info)
            if handle is None:
                raise ZooError(f"{archive.name}: {model.member} is not a regular file; not the pinned package")
            return handle.read()
    except KeyError:
        raise ZooError(f"{archive.name}: has no {model.member}; the package is not the pinned one") from None
    except (OSError, tarfile.TarError) as exc:
        raise ZooError(f"{archive.name}: not a readable package ({exc}); clear npm's cache and retry") from None


__all__ = ["MODELS", "ZooError", "ZooModel", "fetch", "zoo_model", "zoo_spec"]
