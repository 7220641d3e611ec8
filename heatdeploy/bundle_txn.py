"""A bundle change as a transaction: new files under new names, one atomic manifest swap, old files last.

Protocol of a commit (under an exclusive lock on the bundle folder):

1. write a journal ``.heatdeploy-txn.<pid>.json`` naming the files the change will create and the ones it
   will replace (fsynced);
2. move or copy each new file to a name no current file uses (the plain name when free, else
   ``<stem>.g<generation>.<ext>``) and fsync it;
3. write ``manifest.json`` to a temporary name, fsync, ``os.replace`` it, fsync the folder;
4. remove the replaced files, then the journal.

A crash or Ctrl-C at any instant leaves either the old manifest with all of its files, or the new one with
all of its files. The next change (or an export beside it) reads any journal left behind and removes the
listed files the current manifest does not name, plus temporaries of processes that are gone (their names
carry the pid). Nothing else is ever removed: a file heatdeploy did not create is not in a journal and does
not carry a temporary's name.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from heatdeploy import fsutil
from heatdeploy.bundle import MANIFEST, Artifact, Bundle, BundleError, is_bundle, safe_relpath

JOURNAL = "heatdeploy-txn"  # .heatdeploy-txn.<pid>.json
WORK = "heatdeploy-work"  # .heatdeploy-work.<pid>.<random>.partial: a transaction's staging folder
LOCK_TIMEOUT_S = 60.0
_JOURNAL_RE = re.compile(rf"^\.{JOURNAL}\.(?P<pid>\d+)\.json$")
_TAG_RE = re.compile(r"\.g\d+(?=\.[^./]+$)")
# untagged temporaries of older heatdeploy versions (cleaned once an hour old)
_LEGACY_INSIDE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.part$|^\.openvino-[A-Za-z0-9_]{8}\.partial$")
_OLD_SUFFIX = ".old"

_HELD: dict[str, list[int]] = {}  # bundle realpath -> [fd, depth]: the lock is re-entrant within a process


# --- the lock -----------------------------------------------------------------------------------------
@contextmanager
def bundle_lock(root: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """An exclusive ``flock`` on the bundle folder (released by the kernel if the process dies)."""
    key = os.path.realpath(root)
    held = _HELD.get(key)
    if held is not None:
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    try:
        import fcntl
    except ImportError:  # no flock (Windows): single-writer use only
        fcntl = None  # type: ignore[assignment]
    fd = os.open(root, os.O_RDONLY)
    try:
        if fcntl is not None:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise BundleError(f"{root}: another heatdeploy process has been changing this bundle for "
                                          f"over {timeout_s:.0f} s; wait for it to finish, then retry") from None
                    time.sleep(0.05)
        _HELD[key] = [fd, 1]
        try:
            yield
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # closing the descriptor releases the flock


# --- the transaction ----------------------------------------------------------------------------------
@dataclass
class _Add:
    art: Artifact
    sources: dict[str, Path]  # wanted relative path -> file to bring in (the artifact's path first)


class Transaction:
    """The steps of one bundle change; committed by :func:`transaction` when its block ends cleanly."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self._adds: list[_Add] = []
        self._removes: list[str] = []
        self._workdir: Path | None = None

    @property
    def workdir(self) -> Path:
        """A staging folder inside the bundle (same filesystem: files written here are moved, not copied)."""
        if self._workdir is None:
            self._workdir = fsutil.temp_dir(self.bundle.root / WORK)
        return self._workdir

    def add_file(self, src: str | Path, rel: str, *, name: str, format: str, precision: str, backend: str,
                 tools: dict[str, str] | None = None, extra: dict[str, str | Path] | None = None,
                 **kw: Any) -> Artifact:
        """Bring ``src`` (and ``extra`` files, wanted path -> source) in as artifact ``name``, replacing an
        artifact of that name. The returned Artifact gets its final path and hashes at commit."""
        where = f"{self.bundle.root / MANIFEST}: artifact {name!r}"
        sources = {rel: Path(src), **{k: Path(v) for k, v in (extra or {}).items()}}
        for want, path in sources.items():
            safe_relpath(want, where)
            if not path.is_file():
                raise BundleError(f"{path}: not a file; cannot add it to {self.bundle.root} as {want!r}")
        art = Artifact(name=name, path=rel, format=format, precision=precision, backend=backend, sha256="",
                       size=0, tools=tools or {}, extra_files={k: "" for k in extra or {}}, **kw)
        self._adds = [a for a in self._adds if a.art.name != name] + [_Add(art, sources)]
        return art

    def remove(self, name: str) -> None:
        """Drop artifact ``name`` (its files go after the manifest no longer names them)."""
        self._adds = [a for a in self._adds if a.art.name != name]
        self._removes.append(name)

    # --- commit ---------------------------------------------------------------------------------
    def _commit(self) -> None:
        b = self.bundle
        root = b.root
        fresh = Bundle.load(root, verify=False) if (root / MANIFEST).exists() else None
        spec, info, arts = _merge(b, fresh)
        old_refs = fresh.referenced() if fresh is not None else set()
        gen = max(b.generation, fresh.generation if fresh is not None else 0) + 1
        arts = [a for a in arts if a.name not in self._removes]
        taken = set(old_refs) | {str(PurePosixPath(r)) for a in arts for r in a.files}
        plans: list[tuple[_Add, dict[str, str]]] = []
        for add in self._adds:
            arts = [a for a in arts if a.name != add.art.name]
            final = _place(root, add, gen, taken)
            taken |= set(final.values())
            plans.append((add, final))
        created = [final[w] for add, final in plans for w, src in add.sources.items()
                   if not _same(src, root / final[w])]
        new_refs = {str(PurePosixPath(r)) for a in arts for r in a.files} | {r for _, f in plans for r in f.values()}
        replaced = sorted(old_refs - new_refs)
        journal = root / f".{JOURNAL}.{os.getpid()}.json"
        try:
            fsutil.atomic_write_text(journal, json.dumps({"pid": os.getpid(), "created": created,
                                                          "replaced": replaced}), durable=True)
            for add, final in plans:
                arts.append(_bring_in(root, add, final))
            new = Bundle(root=root, spec=spec, artifacts=arts, created=(fresh or b).created or b.created,
                         heatdeploy_version=b.heatdeploy_version or (fresh.heatdeploy_version if fresh else ""),
                         info=info, generation=gen)
            _check_writable(new)
            fsutil.atomic_write_text(root / MANIFEST, json.dumps(new.to_dict(), indent=2), durable=True)
            b.spec, b.artifacts, b.info, b.generation, b.created = spec, arts, info, gen, new.created
            b._snapshot = new.to_dict()
            for rel in replaced:
                _remove_file(root, rel)
            fsutil.remove_path(journal)
            fsutil.fsync_dir(root)
        except BaseException:
            recover(root)  # best effort; the next change finishes what is left
            raise


def _check_writable(new: Bundle) -> None:
    """Never write a manifest that loading would refuse (in-memory edits are not checked when made)."""
    where = f"{new.root / MANIFEST}: new manifest"
    new.spec.validate()
    names = [a.name for a in new.artifacts]
    for i, a in enumerate(new.artifacts):
        Artifact.from_dict(asdict(a), f"{where}: artifacts[{i}]")
        if names.count(a.name) > 1:
            raise BundleError(f"{where}: artifact name {a.name!r} used twice; give each artifact its own name")


@contextmanager
def transaction(bundle: Bundle) -> Iterator[Transaction]:
    """Clean leftovers, run the block, commit its steps (see the module docstring)."""
    root = bundle.root
    root.mkdir(parents=True, exist_ok=True)
    with bundle_lock(root):
        recover(root)
    clean_beside(root)  # staging folders of killed exports to this path
    tx = Transaction(bundle)
    try:
        yield tx
        with bundle_lock(root):
            tx._commit()
    finally:
        if tx._workdir is not None:
            fsutil.release(tx._workdir)
            fsutil.remove_path(tx._workdir)


def _merge(b: Bundle, fresh: Bundle | None) -> tuple[Any, dict[str, Any], list[Artifact]]:
    """Spec, info and artifacts to commit: the manifest on disk now, with this object's in-memory edits since
    it was read applied on top (another process's change in between is kept). A created bundle is taken whole."""
    if fresh is None or b._snapshot is None:
        return b.spec, dict(b.info), [copy.deepcopy(a) for a in b.artifacts]
    base = b._snapshot
    spec = b.spec if b.spec.to_dict() != base.get("spec") else fresh.spec
    info = dict(fresh.info)
    base_info = base.get("info", {})
    for k, v in b.info.items():
        if base_info.get(k, _MISSING) != v:
            info[k] = v
    for k in base_info:
        if k not in b.info:
            info.pop(k, None)
    base_arts = {a["name"]: a for a in base.get("artifacts", [])}
    arts = {a.name: a for a in fresh.artifacts}
    for a in b.artifacts:
        if base_arts.get(a.name) != asdict(a):
            arts[a.name] = copy.deepcopy(a)
    mine = {a.name for a in b.artifacts}
    for name in base_arts:
        if name not in mine:
            arts.pop(name, None)
    return spec, info, list(arts.values())


_MISSING = object()


def _same(a: Path, b: Path) -> bool:
    return os.path.lexists(b) and os.path.realpath(a) == os.path.realpath(b)


def tagged(rel: str, n: int) -> str:
    """``dir/model.int8.onnx`` -> ``dir/model.int8.g<n>.onnx`` (an older tag is replaced, the suffix kept)."""
    p = PurePosixPath(_TAG_RE.sub("", rel))
    return str(p.with_name(f"{p.stem}.g{n}{p.suffix}" if p.suffix else f"{p.name}.g{n}"))


def _place(root: Path, add: _Add, gen: int, taken: set[str]) -> dict[str, str]:
    """Final relative paths for an artifact's files: the wanted names when all are free, else all tagged with
    one generation (an OpenVINO .xml and its .bin keep one stem)."""
    def free(rel: str) -> bool:
        return str(PurePosixPath(rel)) not in taken and not os.path.lexists(root / rel)

    adopted = {w for w, src in add.sources.items() if _same(src, root / w)}  # already in place
    rest = [w for w in add.sources if w not in adopted]
    if all(free(w) for w in rest):
        return {w: str(PurePosixPath(w)) for w in add.sources}
    n = gen
    while not all(free(tagged(w, n)) for w in rest):
        n += 1
    return {w: (str(PurePosixPath(w)) if w in adopted else tagged(w, n)) for w in add.sources}


def _bring_in(root: Path, add: _Add, final: dict[str, str]) -> Artifact:
    """Move (heatdeploy's temporaries inside the bundle) or copy (anything else) each file to its final name."""
    digests: dict[str, str] = {}
    for want, src in add.sources.items():
        dest = root / final[want]
        dest.parent.mkdir(parents=True, exist_ok=True)
        if _same(src, dest):
            digests[want] = fsutil.sha256_file(dest)
            fsutil.fsync_file(dest)
        elif _staging(src, root):  # a staging file of heatdeploy's inside the bundle: rename, no copy
            digests[want] = fsutil.sha256_file(src)
            fsutil.fsync_file(src)
            fsutil.move(src, dest)
        else:
            digests[want] = fsutil.atomic_copy(src, dest, durable=True)
        if dest.parent != root:
            fsutil.fsync_dir(dest.parent)  # the manifest write syncs the bundle folder itself
    art = add.art
    main = next(iter(add.sources))
    art.path = final[main]
    art.sha256 = digests[main]
    art.size = (root / final[main]).stat().st_size
    art.extra_files = {final[w]: digests[w] for w in list(add.sources)[1:]}
    return art


def _staging(src: Path, root: Path) -> bool:
    """Is ``src`` inside a ``*.partial`` staging folder of the bundle (never a file a manifest names)?"""
    if not _inside(src, root):
        return False
    rel = Path(os.path.realpath(src)).relative_to(os.path.realpath(root))
    return any(part.endswith(fsutil.PARTIAL_SUFFIX) for part in rel.parts[:-1])


def _inside(path: Path, folder: Path) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)


def _remove_file(root: Path, rel: str) -> None:
    """Unlink a bundle file and any folders that leaves empty (never the bundle folder itself)."""
    try:
        p = root / safe_relpath(rel, str(root / MANIFEST))
    except BundleError:
        return
    if p.is_file() or p.is_symlink():
        fsutil.unlink(p)
    parent = p.parent
    top = os.path.realpath(root)
    while os.path.realpath(parent) != top and _inside(parent, root):
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


# --- cleaning up after killed runs --------------------------------------------------------------------
def recover(root: Path) -> None:
    """Finish or undo what killed changes left in ``root``: journals of gone processes, their temporaries.

    Call it holding :func:`bundle_lock`. Files listed in a journal are removed only when the current manifest
    does not name them; with an unreadable manifest they are kept (nothing can be told apart then).
    """
    root = Path(root)
    journals = [p for p in _listdir(root) if _JOURNAL_RE.match(p.name)]
    if journals:
        refs: set[str] | None
        try:
            refs = Bundle.load(root, verify=False).referenced() if (root / MANIFEST).exists() else set()
        except BundleError:
            refs = None
        for j in journals:
            pid = int(_JOURNAL_RE.match(j.name).group("pid"))  # type: ignore[union-attr]
            if pid != os.getpid() and fsutil.pid_alive(pid):
                continue
            if refs is None:
                continue
            try:
                data = json.loads(j.read_text())
                listed = [*data.get("created", []), *data.get("replaced", [])]
            except (OSError, ValueError, AttributeError, TypeError, RecursionError):
                listed = []
            for rel in listed:
                if isinstance(rel, str) and str(PurePosixPath(rel)) not in refs:
                    _remove_file(root, rel)
            fsutil.remove_path(j)
    for dirpath, dirs, names in os.walk(root):
        here = Path(dirpath)
        for n in [*dirs, *names]:
            p = here / n
            if fsutil.stale_temp(p, _LEGACY_INSIDE):
                fsutil.remove_path(p)
                if n in dirs:
                    dirs.remove(n)


def clean_beside(final: Path) -> None:
    """Remove stale staging folders of earlier exports to ``final`` (``.<name>.<pid>.<random>.partial``); put
    back a bundle a killed swap left under its ``.old`` name."""
    final = Path(final)
    legacy = re.compile(rf"^\.{re.escape(final.name)}\.([A-Za-z0-9_]{{8}}\.partial|old-\d+)$"
                        r"|^heatdeploy-(int8|stock)-[A-Za-z0-9_]{8}$")
    for p in _listdir(final.parent):
        if not p.name.startswith(f".{final.name}.") and not p.name.startswith("heatdeploy-"):
            continue
        if p.name.endswith(_OLD_SUFFIX) and fsutil.stale_temp(p) and not os.path.lexists(final):
            os.replace(p, final)  # the swap died between its two renames: the old bundle comes back
        elif fsutil.stale_temp(p, legacy):
            fsutil.remove_path(p)


def _listdir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


# --- a new bundle folder ------------------------------------------------------------------------------
def _keep_user_files(old: Path, new: Path) -> None:
    """Bring the files a user put in an old bundle folder into its replacement (hard links, else copies),
    before the swap: whatever happens, each exists under ``old`` until the new folder holding it is in place.
    Files the old manifest names, the manifest, and heatdeploy's temporaries are not the user's."""
    if not is_bundle(old):
        return  # a foreign folder replaced with force: replaced whole, as asked
    try:
        refs = Bundle.load(old, verify=False).referenced()
    except BundleError:
        return
    def ours(name: str) -> bool:  # a temporary or journal heatdeploy made
        return bool(fsutil.is_temp_name(name) or _LEGACY_INSIDE.match(name) or _JOURNAL_RE.match(name))

    for dirpath, dirs, names in os.walk(old):
        here = Path(dirpath)
        dirs[:] = [d for d in dirs if not ours(d)]
        for n in names:
            src = here / n
            rel = src.relative_to(old).as_posix()
            if rel == MANIFEST or rel in refs or ours(n) or os.path.lexists(new / rel):
                continue
            dest = new / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                os.symlink(os.readlink(src), dest)
                continue
            try:
                os.link(src, dest)
            except OSError:
                shutil.copy2(src, dest)


@contextmanager
def staged_dir(final: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Build a new bundle folder beside ``final`` and move it into place only when the block succeeds.

    An existing bundle at ``final`` is swapped out atomically (``renameat2(RENAME_EXCHANGE)`` where the OS has
    it) and then removed; files a user put in it come along into the new one. A file, or a non-empty folder
    that is not a bundle, is refused unless ``force``: export never deletes what it did not make.
    """
    final = Path(final)
    if os.path.lexists(final) and not force:
        if final.is_symlink() or not final.is_dir():
            raise BundleError(f"{final}: exists and is not a folder; choose another --out, or pass --force to "
                              "replace it")
        if any(final.iterdir()) and not is_bundle(final):
            raise BundleError(f"{final}: a folder with files that is not a heatdeploy bundle; choose another "
                              "--out, or pass --force to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_beside(final)
    tmp = fsutil.temp_dir(final)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~fsutil._umask())  # mkdtemp makes 0700
        if final.is_dir() and not final.is_symlink():
            _keep_user_files(final, tmp)
            if fsutil.exchange_dirs(tmp, final):  # tmp now holds the old folder
                fsutil.fsync_dir(final.parent)
            else:
                old = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}{_OLD_SUFFIX}")
                fsutil.move(final, old)  # a death between these two renames: clean_beside puts old back
                try:
                    fsutil.move(tmp, final)
                except BaseException:
                    if not os.path.lexists(final):
                        os.replace(old, final)
                    raise
                fsutil.remove_path(old)
        else:
            if os.path.lexists(final):  # a file or link, replaced only with force
                os.unlink(final)
            os.replace(tmp, final)
        fsutil.fsync_dir(final.parent)
    finally:
        fsutil.release(tmp)
        if os.path.lexists(tmp):
            fsutil.remove_path(tmp)
