"""The bundle as a transaction: an interrupt at every step of every change leaves the old or the new bundle.

Each change runs once cleanly to learn its steps (calls of the fs helpers the commit goes through) and the
state it ends in; then, for every step i, on a fresh copy of the old bundle, the i-th call raises
KeyboardInterrupt (in-process: ``finally`` blocks run) or kills the process with SIGKILL (a forked child:
nothing runs). After each: the bundle loads, every artifact matches its hashes, and it holds exactly the old
or the new artifacts; the next change leaves no file the manifest does not name (and none of the user's
files is touched).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from heatdeploy import fsutil
from heatdeploy.bundle import MANIFEST, Bundle, BundleError, iter_files, staged_dir
from heatdeploy.bundle_txn import clean_beside
from heatdeploy.spec import ModelSpec

HELPERS = ("atomic_write_text", "atomic_copy", "move", "fsync_file", "fsync_dir", "remove_path", "unlink",
           "sha256_file", "temp_dir", "exchange_dirs")
USER_FILES = {"notes.txt": b"mine", ".cache.part": b"mine too", "model.int8.g7.onnx": b"looks like ours"}


def _spec() -> ModelSpec:
    return ModelSpec(keypoints=("a", "b", "c")).validate()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _old_bundle(root: Path) -> None:
    """FP32 + INT8 (with calibration.json / .cache) + an OpenVINO IR (.xml + .bin), and some user files."""
    b = Bundle.create(root, _spec())
    with b.change() as tx:
        w = tx.workdir
        tx.add_file(_write(w / "model.onnx", b"fp32-v1"), "model.onnx", name="onnx-fp32", format="onnx",
                    precision="fp32", backend="onnxruntime")
        tx.add_file(_write(w / "i8.onnx", b"int8-v1"), "model.int8.onnx", name="onnx-int8", format="onnx",
                    precision="int8", backend="onnxruntime",
                    extra={"calibration.json": _write(w / "c.json", b"{}v1"),
                           "calibration.cache": _write(w / "c.cache", b"cache-v1")})
        tx.add_file(_write(w / "m.xml", b"<xml v1>"), "openvino/model.fp32.xml", name="openvino-fp32",
                    format="openvino", precision="fp32", backend="openvino",
                    extra={"openvino/model.fp32.bin": _write(w / "m.bin", b"bin-v1")})
    for rel, data in USER_FILES.items():
        _write(root / rel, data)


def _recalibrate(b: Bundle, outside: Path) -> None:
    with b.change() as tx:
        w = tx.workdir
        tx.add_file(_write(w / "i8.onnx", b"int8-v2"), "model.int8.onnx", name="onnx-int8", format="onnx",
                    precision="int8", backend="onnxruntime",
                    extra={"calibration.json": _write(w / "c.json", b"{}v2"),
                           "calibration.cache": _write(w / "c.cache", b"cache-v2")})


def _add_file_repro(b: Bundle, outside: Path) -> None:
    """The issue's case: Bundle.add_file over an existing INT8, sources outside the bundle (copied)."""
    b.add_file(_write(outside / "new.int8.onnx", b"int8-v3"), "model.int8.onnx", name="onnx-int8",
               format="onnx", precision="int8", backend="onnxruntime",
               extra={"calibration.json": _write(outside / "c.json", b"{}v3"),
                      "calibration.cache": _write(outside / "c.cache", b"cache-v3")})


def _replace_ir_and_drop_int8(b: Bundle, outside: Path) -> None:
    with b.change() as tx:
        w = tx.workdir
        tx.add_file(_write(w / "m.xml", b"<xml v2>"), "openvino/model.fp32.xml", name="openvino-fp32",
                    format="openvino", precision="fp32", backend="openvino",
                    extra={"openvino/model.fp32.bin": _write(w / "m.bin", b"bin-v2")})
        tx.remove("onnx-int8")


def _new_fp32_drop_derived(b: Bundle, outside: Path) -> None:
    """Export over a bundle with a changed model: new FP32, every artifact made from the old one dropped."""
    with b.change() as tx:
        tx.add_file(_write(tx.workdir / "model.onnx", b"fp32-v2"), "model.onnx", name="onnx-fp32",
                    format="onnx", precision="fp32", backend="onnxruntime")
        tx.remove("onnx-int8")
        tx.remove("openvino-fp32")
        b.info["source"] = "new.pt2"


def _add_stock_and_ir(b: Bundle, outside: Path) -> None:
    """New artifacts beside the old ones (nothing replaced): a stock INT8 and an OpenVINO INT8 IR."""
    with b.change() as tx:
        w = tx.workdir
        tx.add_file(_write(w / "s.onnx", b"stock"), "model.int8-stock.onnx", name="onnx-int8-stock", format="onnx",
                    precision="int8", backend="onnxruntime")
        tx.add_file(_write(w / "q.xml", b"<xml int8>"), "openvino/model.int8.xml", name="openvino-int8",
                    format="openvino", precision="int8", backend="openvino",
                    extra={"openvino/model.int8.bin": _write(w / "q.bin", b"bin-int8")})


def _record_parity(b: Bundle, outside: Path) -> None:
    b.artifact("onnx-int8").parity = {"passed": True}
    b.save()


CHANGES: dict[str, Callable[[Bundle, Path], None]] = {
    "recalibrate": _recalibrate, "add_file_repro": _add_file_repro, "replace_ir_drop_int8": _replace_ir_and_drop_int8,
    "new_fp32": _new_fp32_drop_derived, "record_parity": _record_parity, "add_stock_and_ir": _add_stock_and_ir,
}


def _state(root: Path) -> dict[str, tuple]:
    """What the bundle holds: artifact name -> (content digest of each file, parity); checks every hash."""
    b = Bundle.load(root)
    b.verify()
    out = {}
    for a in b.artifacts:
        digests = tuple(sorted(hashlib.sha256(b.path_of(r).read_bytes()).hexdigest() for r in a.files))
        out[a.name] = (digests, json.dumps(a.parity))
    return out


def _leftovers(root: Path) -> set[str]:
    """Files in the bundle that neither the manifest nor the user put there."""
    b = Bundle.load(root, verify=False)
    named = b.referenced() | {MANIFEST} | set(USER_FILES)
    return {p.relative_to(root).as_posix() for p in iter_files(root)} - named


class _Steps:
    """Counts calls of the fs helpers; at call ``fail_at`` runs ``action`` (raise, or kill the process)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int = -1,
                 action: Callable[[], None] | None = None) -> None:
        self.n, self.fail_at, self.action = 0, fail_at, action
        for name in HELPERS:
            monkeypatch.setattr(fsutil, name, self._wrap(getattr(fsutil, name)))

    def _wrap(self, fn: Callable) -> Callable:
        def wrapped(*args, **kwargs):
            i, self.n = self.n, self.n + 1
            if i == self.fail_at and self.action is not None:
                self.action()
            return fn(*args, **kwargs)
        return wrapped


def _interrupt() -> None:
    raise KeyboardInterrupt


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tpl") / "bundle"
    _old_bundle(root)
    return root


def _fresh(template: Path, tmp_path: Path, i: int) -> tuple[Path, Path]:
    root = tmp_path / f"b{i}" / "bundle"
    shutil.copytree(template, root, symlinks=True)
    outside = tmp_path / f"b{i}" / "outside"
    outside.mkdir()
    return root, outside


def _uninterrupted(fn, template: Path, tmp_path: Path) -> tuple[object, object, int, Path]:
    """The change run to its end once on a fresh copy: the old and new state, its step count, the copy."""
    old = _state(template)
    root, outside = _fresh(template, tmp_path, -1)
    with pytest.MonkeyPatch.context() as mp:
        steps = _Steps(mp)
        fn(Bundle.load(root), outside)
    return old, _state(root), steps.n, root


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_interrupt_at_every_step(change, template, tmp_path):
    fn = CHANGES[change]
    old, new, n, root = _uninterrupted(fn, template, tmp_path)
    assert new != old and _leftovers(root) == set()
    assert n >= 4
    seen = set()
    for i in range(n):
        root, outside = _fresh(template, tmp_path, i)
        with pytest.MonkeyPatch.context() as mp:
            _Steps(mp, i, _interrupt)
            try:
                fn(Bundle.load(root), outside)
            except KeyboardInterrupt:
                pass
        got = _state(root)
        assert got in (old, new), f"step {i}: neither the old nor the new bundle"
        seen.add("new" if got == new else "old")
        with Bundle.load(root).change():  # the next change cleans what the interrupted one left
            pass
        assert _leftovers(root) == set(), f"step {i}"
        assert _state(root) == got
        assert all((root / r).read_bytes() == d for r, d in USER_FILES.items())
    assert seen == {"old", "new"}


@pytest.mark.parametrize("change", ["recalibrate", "add_file_repro", "new_fp32"])
def test_sigkill_at_every_step(change, template, tmp_path):
    """Like above, but the process dies on the spot: no finally, no cleanup; the next change cleans."""
    fn = CHANGES[change]
    old, new, n, _ = _uninterrupted(fn, template, tmp_path)
    dirty = 0
    for i in range(n):
        root, outside = _fresh(template, tmp_path, i)
        pid = os.fork()
        if pid == 0:  # the child: run the change and die at step i
            try:
                with pytest.MonkeyPatch.context() as mp:
                    _Steps(mp, i, _kill)
                    fn(Bundle.load(root), outside)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"step {i}: not killed"
        got = _state(root)
        assert got in (old, new), f"step {i}: neither the old nor the new bundle"
        dirty += bool(_leftovers(root))
        with Bundle.load(root).change():
            pass
        assert _leftovers(root) == set(), f"step {i}: leftovers after the next change"
        assert _state(root) == got
        assert all((root / r).read_bytes() == d for r, d in USER_FILES.items())
    assert dirty > 0  # the kills did leave something to clean


def test_replaced_files_get_new_names_and_old_ones_go(template, tmp_path):
    root, outside = _fresh(template, tmp_path, 0)
    _recalibrate(Bundle.load(root), outside)
    b = Bundle.load(root)
    int8 = b.artifact("onnx-int8")
    assert int8.path == "model.int8.g2.onnx"  # the plain name was in use, and a user's .g7 file is left alone
    assert sorted(int8.extra_files) == ["calibration.g2.cache", "calibration.g2.json"]
    assert not (root / "model.int8.onnx").exists() and not (root / "calibration.json").exists()
    _recalibrate(Bundle.load(root), outside)
    assert Bundle.load(root).artifact("onnx-int8").path == "model.int8.onnx"  # free again
    assert (root / "model.int8.g7.onnx").read_bytes() == b"looks like ours"


def test_broken_int8_does_not_stop_fp32(template, tmp_path):
    root, _ = _fresh(template, tmp_path, 0)
    (root / "model.int8.onnx").write_bytes(b"corrupted")
    b = Bundle.load(root)  # loads: only what is used is hashed
    assert b.path_of(b.artifact("onnx-fp32")).read_bytes() == b"fp32-v1"
    with pytest.raises(BundleError, match="does not match the manifest"):
        b.path_of(b.artifact("onnx-int8"))
    _recalibrate(Bundle.load(root), tmp_path)  # and calibrate replaces the broken one
    assert _state(root)["onnx-int8"]


def test_a_fifo_artifact_is_refused_not_read(template, tmp_path):
    root, _ = _fresh(template, tmp_path, 0)
    (root / "model.int8.onnx").unlink()
    os.mkfifo(root / "model.int8.onnx")
    b = Bundle.load(root)
    with pytest.raises(BundleError, match="not a regular file"):
        b.path_of(b.artifact("onnx-int8"))


def test_concurrent_edit_is_kept(template, tmp_path):
    """Two holders of the same bundle: each change applies to the manifest as it is on disk at commit."""
    root, outside = _fresh(template, tmp_path, 0)
    first, second = Bundle.load(root), Bundle.load(root)
    _recalibrate(first, outside)
    second.artifact("onnx-fp32").notes["checked"] = True
    second.save()
    b = Bundle.load(root)
    assert b.artifact("onnx-fp32").notes["checked"] is True
    assert b.artifact("onnx-int8").path == "model.int8.g2.onnx"


def test_live_processes_temporaries_are_kept(template, tmp_path):
    root, _ = _fresh(template, tmp_path, 0)
    live = _write(root / f".model.onnx.{os.getppid()}.abcdefgh.part", b"someone else's write")
    dead_pid = 2 ** 22 + 12345
    dead = _write(root / f".model.onnx.{dead_pid}.abcdefgh.part", b"killed")
    with Bundle.load(root).change():
        pass
    assert live.exists() and not dead.exists()


# --- new bundle folders (export) ------------------------------------------------------------------------
def test_staged_dir_refuses_a_file_and_a_foreign_folder(tmp_path):
    f = _write(tmp_path / "out", b"user data")
    with pytest.raises(BundleError, match="not a folder"):
        with staged_dir(f):
            pass
    assert f.read_bytes() == b"user data"
    d = tmp_path / "project"
    _write(d / "notes.txt", b"mine")
    with pytest.raises(BundleError, match="not a heatdeploy bundle"):
        with staged_dir(d):
            pass
    assert (d / "notes.txt").read_bytes() == b"mine"
    with staged_dir(d, force=True) as tmp:
        Bundle.create(tmp, _spec()).save()
    assert (d / MANIFEST).is_file() and not (d / "notes.txt").exists()


def test_staged_dir_swaps_a_bundle_and_leaves_nothing(template, tmp_path):
    root, _ = _fresh(template, tmp_path, 0)
    with staged_dir(root) as tmp:
        b = Bundle.create(tmp, _spec())
        b.add_file(_write(tmp_path / "m.onnx", b"fresh"), "model.onnx", name="onnx-fp32", format="onnx",
                   precision="fp32", backend="onnxruntime")
    assert [a.name for a in Bundle.load(root).artifacts] == ["onnx-fp32"]
    assert sorted(p.name for p in root.parent.iterdir()) == ["bundle", "outside"]


def test_killed_export_leftovers_are_cleaned_by_the_next(tmp_path):
    final = tmp_path / "bundle"
    pid = os.fork()
    if pid == 0:
        try:
            with staged_dir(final) as tmp:
                _write(tmp / "half.onnx", b"x")
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    user = _write(tmp_path / ".bundle.notes.partial", b"a user's file, not ours")
    with staged_dir(final) as tmp:
        Bundle.create(tmp, _spec()).save()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bundle.notes.partial", "bundle"]
    assert user.read_bytes() == b"a user's file, not ours"


def test_reexport_keeps_the_users_files_in_the_bundle(template, tmp_path):
    root, outside = _fresh(template, tmp_path, 0)
    _write(root / "photos" / "a.jpg", b"photo")
    _reexport(root, outside)
    assert [a.name for a in Bundle.load(root).artifacts] == ["onnx-fp32"]
    assert all((root / r).read_bytes() == d for r, d in USER_FILES.items())
    assert (root / "photos" / "a.jpg").read_bytes() == b"photo"
    assert not (root / "model.int8.onnx").exists() and not (root / "openvino").exists()


def _reexport(root: Path, outside: Path) -> None:
    """Export over a bundle: a new folder built beside it, swapped in whole."""
    with staged_dir(root) as tmp:
        b = Bundle.create(tmp, _spec())
        b.add_file(_write(outside / "m.onnx", b"fp32-v9"), "model.onnx", name="onnx-fp32", format="onnx",
                   precision="fp32", backend="onnxruntime")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
@pytest.mark.parametrize("action", ["interrupt", "sigkill"])
def test_export_over_a_bundle_interrupted_at_every_step(action, exchange, template, tmp_path, monkeypatch):
    if not exchange:  # where the OS cannot swap two folders atomically
        monkeypatch.setattr(fsutil, "exchange_dirs", lambda a, b: False)
    old = _state(template)
    root, outside = _fresh(template, tmp_path, -1)
    with pytest.MonkeyPatch.context() as mp:
        steps = _Steps(mp)
        _reexport(root, outside)
    new = _state(root)
    for i in range(steps.n):
        root, outside = _fresh(template, tmp_path, i)
        if action == "interrupt":
            with pytest.MonkeyPatch.context() as mp:
                _Steps(mp, i, _interrupt)
                try:
                    _reexport(root, outside)
                except KeyboardInterrupt:
                    pass
        else:
            pid = os.fork()
            if pid == 0:
                try:
                    with pytest.MonkeyPatch.context() as mp:
                        _Steps(mp, i, _kill)
                        _reexport(root, outside)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
        if not exchange and not root.exists():  # died between the two renames: the next export puts old back
            clean_beside(root)
        assert _state(root) in (old, new), f"step {i}"
        _reexport(root, outside)  # the next export cleans what the killed one left beside the bundle
        assert _state(root) == new
        assert sorted(p.name for p in root.parent.iterdir()) == ["bundle", "outside"], f"step {i}"
        assert all((root / r).read_bytes() == d for r, d in USER_FILES.items()), f"step {i}"


# --- with real engines: a real INT8 re-calibration interrupted at every commit step --------------------------
def test_real_recalibration_interrupted_at_every_step_still_runs(random_reference_bundle, tmp_path, monkeypatch):
    """Two real calibrations give INT8 v1 and v2; re-calibrating v1 -> v2 is interrupted at every step of its
    commit. After each, ONNX Runtime runs FP32 and the INT8 the manifest names, which is exactly v1 or v2."""
    import numpy as np

    from heatdeploy.calibration.artifact import add_onnx_int8
    from heatdeploy.runtime import Pipeline

    monkeypatch.setenv("HEATDEPLOY_CACHE", str(tmp_path / "cache"))
    base = tmp_path / "base"
    shutil.copytree(random_reference_bundle, base)
    add_onnx_int8(base, "synthetic:8", keep_fp32="base", sensitivity_batches=0)
    v1 = Bundle.load(base).artifact("onnx-int8")
    work = tmp_path / "v2"
    shutil.copytree(base, work)
    with pytest.MonkeyPatch.context() as mp:
        steps = _Steps(mp)
        add_onnx_int8(work, "synthetic:8", seed=1, keep_fp32="base", sensitivity_batches=0)
    v2 = Bundle.load(work).artifact("onnx-int8")
    assert v1.sha256 != v2.sha256 and steps.n >= 6
    image = [np.random.default_rng(0).integers(0, 255, (256, 192, 3), dtype=np.uint8)]
    want = {v.sha256: Pipeline.load(root, artifact="onnx-int8").predict(image).keypoints
            for v, root in ((v1, base), (v2, work))}
    fp32 = Pipeline.load(base).predict(image).keypoints
    for i in range(steps.n):
        root = tmp_path / f"i{i}"
        shutil.copytree(base, root)
        with pytest.MonkeyPatch.context() as mp:
            _Steps(mp, i, _interrupt)
            with pytest.raises(KeyboardInterrupt):
                add_onnx_int8(root, "synthetic:8", seed=1, keep_fp32="base", sensitivity_batches=0)
        b = Bundle.load(root)
        b.verify()
        sha = b.artifact("onnx-int8").sha256
        assert sha in want, f"step {i}: INT8 is neither v1 nor v2"
        np.testing.assert_array_equal(Pipeline.load(root).predict(image).keypoints, fp32)
        np.testing.assert_array_equal(Pipeline.load(root, artifact="onnx-int8").predict(image).keypoints, want[sha])
        shutil.rmtree(root)


def test_two_processes_changing_one_bundle_lose_nothing(template, tmp_path):
    """The commit takes a lock and applies its steps to the manifest on disk: concurrent adds all land."""
    root, outside = _fresh(template, tmp_path, 0)
    pids = []
    for who in range(2):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for k in range(5):
                    src = _write(outside / f"{who}-{k}.onnx", f"{who}-{k}".encode())
                    Bundle.load(root).add_file(src, f"extra/{who}-{k}.onnx", name=f"x{who}{k}", format="onnx",
                                               precision="fp32", backend="onnxruntime")
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    assert all(os.waitpid(p, 0)[1] == 0 for p in pids)
    names = set(_state(root))
    assert {f"x{w}{k}" for w in range(2) for k in range(5)} <= names
    assert {"onnx-fp32", "onnx-int8", "openvino-fp32"} <= names


def test_a_record_with_nan_keeps_the_bundle_loadable(template, tmp_path):
    """Records (notes, parity) may hold NaN/inf, e.g. a diverged check; only the spec must be finite."""
    root, _ = _fresh(template, tmp_path, 0)
    b = Bundle.load(root)
    b.artifact("onnx-int8").notes["check"] = {"max_abs_diff": float("nan"), "worst": float("inf")}
    b.save()
    assert math.isnan(Bundle.load(root).artifact("onnx-int8").notes["check"]["max_abs_diff"])
