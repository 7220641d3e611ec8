"""Seeded fuzzing of specs and manifests: every case loads, or fails with a one-line HeatdeployError.

Each case mutates a valid spec or manifest (a field replaced by junk: NaN, inf, 1e300, wrong types, NUL
bytes, 6,000-character strings, deep nesting; fields deleted or added; paths absolute, with '..', symlinks
out of the bundle or to themselves). No other exception may escape, and nothing accepted may carry a
non-finite number or a size outside the bounds.
"""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from heatdeploy.bundle import MANIFEST, Bundle
from heatdeploy.errors import HeatdeployError
from heatdeploy.spec import CentersSpec, LandmarksSpec, ModelSpec, SimCCSpec
from heatdeploy.spec_bounds import RANGES

SEED = 14
CASES = 400


def _deep(n: int) -> Any:
    v: Any = 1
    for _ in range(n):
        v = [v]
    return v


JUNK: list[Any] = [
    math.nan, math.inf, -math.inf, 1e300, -1e300, -1, 0, 0.5, 3, 255, 2 ** 63, 10 ** 6, 1e-300, "x", "",
    "\x00", "a" * 6000, None, True, False, [], {}, [1, 2], [math.nan], {"a": 1}, _deep(50), "NCHW", "logits",
]


def _bases() -> list[dict[str, Any]]:
    plain = ModelSpec(keypoints=("a", "b", "c"), skeleton=((0, 1), (1, 2)))
    simcc = ModelSpec(keypoints=("a", "b"), heatmap=None, simcc=SimCCSpec())
    centers = ModelSpec(keypoints=("a", "b"), existence=None, centers=CentersSpec())
    landmarks = ModelSpec(keypoints=("a", "b"), heatmap=None, landmarks=LandmarksSpec())
    return [s.validate().to_dict() for s in (plain, simcc, centers, landmarks)]


def _paths(d: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path into a JSON value."""
    out = [prefix] if prefix else []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(rng: random.Random, doc: Any, extra_junk: list[Any] = ()) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        paths = _paths(doc)
        if not paths:
            return rng.choice(JUNK)
        path = rng.choice(paths)
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        op = rng.random()
        if op < 0.75:
            parent[path[-1]] = rng.choice([*JUNK, *extra_junk])
        elif op < 0.9 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[f"unknown_{rng.randint(0, 9)}"] = rng.choice(JUNK)
    return doc


def _one_line(exc: BaseException) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg and len(msg) < 600, f"not a one-line message: {msg[:300]!r}"


def _numbers(v: Any) -> list[float]:
    if isinstance(v, dict):
        return [x for u in v.values() for x in _numbers(u)]
    if isinstance(v, (list, tuple)):
        return [x for u in v for x in _numbers(u)]
    return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else []


def _check_accepted(spec: ModelSpec) -> None:
    d = spec.to_dict()
    assert all(math.isfinite(x) for x in _numbers(d)), "a non-finite number was accepted"
    for key, (lo, hi, _) in RANGES.items():
        section, name = key.removesuffix("[]").split(".")
        sub = d.get(section)
        if isinstance(sub, dict) and name in sub and sub[name] is not None:
            values = sub[name] if key.endswith("[]") else [sub[name]]
            assert all(lo <= v <= hi for v in values), f"{key}={sub[name]!r} accepted out of {lo}..{hi}"


def test_spec_fuzz():
    rng = random.Random(SEED)
    bases = _bases()
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(CASES):
        doc = _mutate(rng, rng.choice(bases))
        text = json.dumps(doc)  # NaN / Infinity literals included, as a hand-edited file may have them
        try:
            spec = ModelSpec.from_json(text, f"case{case}.json")
        except HeatdeployError as exc:
            _one_line(exc)
            outcomes["refused"] += 1
            continue
        _check_accepted(spec)
        outcomes["loaded"] += 1
    assert outcomes["loaded"] > 10 and outcomes["refused"] > CASES // 2, outcomes


@pytest.mark.parametrize("text", ["[" * 100_000, '{"keypoints": ' + "[" * 100_000, "{" * 5000, "",
                                  '{"keypoints": ["a"], "input": {"scale": NaN}}',
                                  '{"keypoints": ["a"], "input": {"mean": [Infinity, 0, 0]}}',
                                  '{"keypoints": ["a"], "input": {"scale": 1e300}}',
                                  '{"keypoints": ["a"], "input": {"height": 1000000}}',
                                  '{"keypoints": ["a"], "decoder": {"sigma": 1e6}}',
                                  '{"keypoints": ["a"], "schema_version": Infinity}',
                                  '{"keypoints": ["a"], "schema_version": "one"}'])
def test_spec_issue_cases_are_one_line_errors(text):
    with pytest.raises(HeatdeployError) as info:
        ModelSpec.from_json(text, "s.json")
    _one_line(info.value)


@pytest.mark.parametrize("field, value, fragment", [
    ("input.height", 1_000_000, "8..4096"), ("decoder.sigma", 1e6, "0.1..64"), ("input.scale", math.nan, "input.scale"),
    ("heatmap.stride", 0, "1..64"), ("centers.pool_kernel", 999, "1..63"),
])
def test_bound_errors_name_the_range(field, value, fragment):
    base = _bases()[2 if field.startswith("centers") else 0]
    section, name = field.split(".")
    base[section][name] = value
    with pytest.raises(HeatdeployError, match=fragment):
        ModelSpec.from_dict(base, "s.json")


# --- manifests ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "bundle"
    b = Bundle.create(root, ModelSpec(keypoints=("a", "b", "c")).validate())
    w = root.parent / "src"
    w.mkdir()
    (w / "m.onnx").write_bytes(b"fp32")
    (w / "i.onnx").write_bytes(b"int8")
    (w / "c.json").write_bytes(b"{}")
    b.add_file(w / "m.onnx", "model.onnx", name="onnx-fp32", format="onnx", precision="fp32", backend="onnxruntime")
    b.add_file(w / "i.onnx", "model.int8.onnx", name="onnx-int8", format="onnx", precision="int8",
               backend="onnxruntime", extra={"calibration.json": w / "c.json"})
    outside = root.parent / "outside.onnx"
    outside.write_bytes(b"fp32")
    (root / "loop").symlink_to("loop")
    (root / "out").symlink_to(outside)
    (root / "dir").mkdir()
    return root


PATH_JUNK = ["/etc/passwd", "../outside.onnx", "a/../../x", "loop", "out", "dir", ".", "manifest.json",
             "a\\b", "a\x00b", "x" * 6000, "missing.onnx"]


def _load_and_use(root: Path) -> None:
    b = Bundle.load(root)
    for a in b.artifacts:
        b.path_of(a)  # hashes the artifact's files
    _check_accepted(b.spec)


def test_manifest_fuzz(bundle_root):
    rng = random.Random(SEED + 1)
    good = json.loads((bundle_root / MANIFEST).read_text())
    original = (bundle_root / MANIFEST).read_bytes()
    outcomes = {"loaded": 0, "refused": 0}
    try:
        for _case in range(CASES):
            doc = _mutate(rng, good, PATH_JUNK)
            (bundle_root / MANIFEST).write_text(json.dumps(doc))
            try:
                _load_and_use(bundle_root)
            except HeatdeployError as exc:
                _one_line(exc)
                outcomes["refused"] += 1
                continue
            outcomes["loaded"] += 1
    finally:
        (bundle_root / MANIFEST).write_bytes(original)
    assert outcomes["loaded"] > 5 and outcomes["refused"] > CASES // 2, outcomes


def _manifest_with(root: Path, edit: Any) -> None:
    doc = json.loads((root / MANIFEST).read_text())
    edit(doc)
    (root / MANIFEST).write_text(json.dumps(doc))


def _set(key: str, value: Any) -> Any:
    return lambda d: d.__setitem__(key, value)


def _art(key: str, value: Any) -> Any:
    return lambda d: d["artifacts"][0].__setitem__(key, value)


@pytest.mark.parametrize("edit", [
    _set("artifacts", None), _set("artifacts", 3), _set("artifacts", {"a": 1}), _set("artifacts", [1]),
    _art("path", 3), _art("path", None), _art("path", ["model.onnx"]), _art("path", "model\x00.onnx"),
    _art("path", "m" * 6000), _art("path", "/abs/model.onnx"), _art("path", "../model.onnx"), _art("path", "loop"),
    _art("path", "out"), _art("sha256", None), _art("sha256", "zz" * 32), _art("extra_files", ["calibration.json"]),
    _art("size", -1), _art("size", math.inf), _set("schema_version", math.inf), _set("schema_version", "1"),
    _set("schema_version", True), _set("info", []), _set("spec", None),
], ids=lambda e: "edit")
def test_issue_manifest_cases_are_one_line_errors(bundle_root, tmp_path, edit):
    import shutil

    root = tmp_path / "b"
    shutil.copytree(bundle_root, root, symlinks=True)
    _manifest_with(root, edit)
    with pytest.raises(HeatdeployError) as info:
        _load_and_use(root)
    _one_line(info.value)


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"format": "heatdeploy-bundle", "a": ' + b"[" * 100_000,
                                 b"\xff\xfe\x00", b'{"format": "heatdeploy-bundle", "schema_version": NaN}', b"{",
                                 b"null"])
def test_raw_manifests_are_one_line_errors(tmp_path, raw):
    (tmp_path / MANIFEST).write_bytes(raw)
    with pytest.raises(HeatdeployError) as info:
        Bundle.load(tmp_path)
    _one_line(info.value)


def test_huge_manifest_is_refused_without_reading_it(tmp_path):
    with open(tmp_path / MANIFEST, "wb") as f:
        f.truncate(64 << 20)  # sparse: no disk used
    with pytest.raises(HeatdeployError, match="MiB"):
        Bundle.load(tmp_path)
