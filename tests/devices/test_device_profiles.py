"""Device profiles: the packaged ones validate, a bad one fails with one line naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from heatdeploy.devices.profiles import (
    PROFILE_DIR,
    DeviceProfileError,
    describe_profiles,
    list_profiles,
    load_all,
    load_profile,
    profile_from_document,
    resolve_opset,
    session_options,
)

EXPECTED = ["arm64-cpu", "jetson-agx-orin", "jetson-orin-nano", "jetson-orin-nx", "jetson-xavier-nx", "x86-cpu",
            "x86-cpu-openvino", "x86-cpu-vnni"]


def _doc(**top: object) -> dict[str, object]:
    """A minimal valid jetson document to break one key at a time."""
    doc: dict[str, object] = {"schema_version": 1, "name": "t", "kind": "jetson", "backend": "tensorrt",
                              "precision": "int8", "max_opset": 17, "match": {"jetson_models": ["Orin Nano"]},
                              "tensorrt": {"workspace_mb": 512, "min_batch": 1, "opt_batch": 1, "max_batch": 2}}
    doc.update(top)
    return doc


def test_packaged_profiles_all_validate() -> None:
    assert list_profiles() == EXPECTED
    profiles = {p.name: p for p in load_all()}
    for name in EXPECTED:
        p = profiles[name]
        assert p.name == Path(p.path).stem and p.max_opset >= 11 and p.description
        if name.startswith("jetson"):
            assert p.backend == "tensorrt" and p.tensorrt is not None and p.kind == "jetson"
            assert p.activation_type == "int8"  # TensorRT INT8 is symmetric
            assert p.tensorrt.min_batch <= p.tensorrt.opt_batch <= p.tensorrt.max_batch
        elif name.endswith("openvino"):
            assert p.backend == "openvino" and p.openvino is not None and p.kind == "x86"
        else:
            assert p.backend == "onnxruntime" and p.onnxruntime is not None
    xavier = profiles["jetson-xavier-nx"]
    assert xavier.max_opset == 17 and xavier.tensorrt is not None and xavier.tensorrt.version.startswith("8.5")
    assert profiles["x86-cpu-vnni"].precision == "int8" and profiles["x86-cpu"].precision == "fp32"
    rows = describe_profiles()
    assert [r["name"] for r in rows] == EXPECTED and all(r["backend"] for r in rows)


@pytest.mark.parametrize("change, key, expected", [
    ({"precision": "int4"}, "precision", "expected one of fp32, fp16, int8, got 'int4'"),
    ({"threads": -1}, "threads", "expected an integer in 0..256"),
    ({"threads": True}, "threads", "expected an integer"),
    ({"backend": "tensorflow"}, "backend", "expected one of onnxruntime, openvino, tensorrt"),
    ({"max_opset": 99}, "max_opset", "expected an integer in 11..30"),
    ({"workers": 3}, "workers", "unknown key"),
    ({"tensorrt": {"workspace": 512}}, "tensorrt.workspace", "unknown key; known here:"),
    ({"tensorrt": {"dla_core": "zero"}}, "tensorrt.dla_core", "expected an integer in -1..7"),
    ({"tensorrt": {"timing_cache": "yes"}}, "tensorrt.timing_cache", "expected true or false"),
    ({"tensorrt": {"int8_mode": "magic"}}, "tensorrt.int8_mode", "expected one of auto, explicit, implicit"),
    ({"tensorrt": {"min_batch": 4, "opt_batch": 2, "max_batch": 8}}, "tensorrt.opt_batch", "min <= opt <= max"),
    ({"tensorrt": {"dla_core": 0}, "precision": "fp32"}, "tensorrt.dla_core", "DLA runs FP16 or INT8 only"),
    ({"tensorrt": {"version": "ten"}}, "tensorrt.version", "expected a version like"),
    ({"tensorrt": 5}, "tensorrt", "expected a [tensorrt] table"),
    ({"gpu": {"x": 1}}, "[gpu]", "unknown section"),
    ({"match": {"cpu_flags": ["avx2"]}}, "match.cpu_flags", "unknown key"),
    ({"onnxruntime": {"providers": "CPUExecutionProvider"}}, "onnxruntime.providers", "expected a list of strings"),
])
def test_bad_profile_names_file_and_key(change: dict[str, object], key: str, expected: str) -> None:
    with pytest.raises(DeviceProfileError) as info:
        profile_from_document(_doc(**change), "my.toml")
    msg = str(info.value)
    assert msg.startswith(f"my.toml: {key}: ") and expected in msg and "\n" not in msg


def test_missing_keys_and_sections() -> None:
    doc = _doc()
    del doc["max_opset"]
    with pytest.raises(DeviceProfileError, match=r"^my.toml: max_opset: required key missing$"):
        profile_from_document(doc, "my.toml")
    doc = _doc()
    del doc["tensorrt"]
    with pytest.raises(DeviceProfileError, match=r"my.toml: \[tensorrt\]: backend = 'tensorrt' needs"):
        profile_from_document(doc, "my.toml")
    with pytest.raises(DeviceProfileError, match="must match the file name"):
        profile_from_document(_doc(), "profiles/other.toml", stem="other")
    good = profile_from_document(_doc(), "my.toml")
    assert good.tensorrt is not None and good.tensorrt.dla_core is None and good.tensorrt.max_batch == 2


def test_user_profile_file(tmp_path: Path) -> None:
    text = (PROFILE_DIR / "jetson-xavier-nx.toml").read_text().replace("dla_core = -1", "dla_core = 1")
    path = tmp_path / "xavier-dla.toml"
    path.write_text(text)  # the name inside may differ from a user file's name
    prof = load_profile(path)
    assert prof.tensorrt is not None and prof.tensorrt.dla_core == 1 and prof.path == str(path)
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("workspace_mb = 512", "workspace_mb = '512'"))
    with pytest.raises(DeviceProfileError, match=r"bad.toml: tensorrt.workspace_mb: expected an integer"):
        load_profile(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("name = [unclosed\n")
    with pytest.raises(DeviceProfileError, match=r"broken.toml: not valid TOML"):
        load_profile(broken)
    with pytest.raises(DeviceProfileError, match=r"no-such: no such device profile; packaged profiles: arm64-cpu"):
        load_profile("no-such")


def test_resolve_opset_obeys_the_profile() -> None:
    xavier, cpu = load_profile("jetson-xavier-nx"), load_profile("x86-cpu")
    assert resolve_opset(xavier)[0] == 17
    assert resolve_opset(xavier, 16)[0] == 16
    with pytest.raises(DeviceProfileError, match="reads ONNX opset <= 17, but opset 18 was asked; export with "
                                                 "--opset 17"):
        resolve_opset(xavier, 18)
    assert resolve_opset(cpu, 18)[0] == 18
    assert resolve_opset(None, None)[0] == 17


def test_session_options_are_what_the_backends_accept(runtime_bundle: Path) -> None:
    from heatdeploy.runtime.backends.onnxruntime import load

    model = runtime_bundle / "model.onnx"
    arm = load_profile("arm64-cpu")
    opts = session_options(arm)
    assert opts == {"providers": ["CPUExecutionProvider"], "graph_optimization": "all", "intra_op_threads": 4,
                    "inter_op_threads": 1}
    backend = load(model, opts)  # the ORT backend rejects unknown keys, so this proves they match
    assert backend.providers == ["CPUExecutionProvider"]
    vnni = load_profile("x86-cpu-vnni")
    assert "intra_op_threads" not in session_options(vnni)  # threads = 0: ORT's own default
    assert session_options(vnni, "openvino") == {"device": "CPU", "performance_hint": "LATENCY", "num_streams": 1}
    assert session_options(load_profile("jetson-orin-nano")) == {}
