"""File-system helpers: atomic outputs and content hashes.

Nothing half-written may sit where a later step would trust it: outputs are
built under a temporary sibling name, flushed, and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

CHUNK = 1 << 20
log = logging.getLogger(__name__)


def sha256_files(paths: Iterable[Path]) -> str:
    """One sha256 over the bytes of ``paths`` read in order (a split file hashes like the whole)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(root: Path) -> str:
    """A sha256 over the relative names and contents of every file under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(sha256_files([path]).encode())
    return digest.hexdigest()


def fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` and the folders themselves to disk."""
    for path in [root, *root.rglob("*")]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


FSYNC_EACH_UP_TO = 2_000  # files; a larger tree is flushed with one sync() of the whole file system


def flush_tree(root: Path) -> None:
    """:func:`fsync_tree` for a small tree; one ``os.sync()`` for a large one (a prepared corpus of 100k
    WAVs), where a file-by-file fsync costs a disk flush each."""
    count = 0
    for _ in root.rglob("*"):
        count += 1
        if count > FSYNC_EACH_UP_TO:
            os.sync()
            return
    fsync_tree(root)


def _aside(out: Path, kind: str) -> Path:
    return out.with_name(f".{out.name}.{kind}")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _promote(out: Path) -> None:
    """Put the finished copy ``.NAME.new`` in place of ``out``, keeping ``out`` aside as ``.NAME.old`` meanwhile."""
    new, old = _aside(out, "new"), _aside(out, "old")
    if out.exists():
        if old.exists():  # an earlier version half deleted; ``out`` itself is complete
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(new, out)
    _fsync_dir(out.parent)


def recover_dir(out: Path) -> None:
    """Finish a replacement of ``out`` that a kill interrupted, and remove the temporary folders it left.

    :func:`atomic_dir` replaces a folder in three renames (finished copy to
    ``.NAME.new``, ``NAME`` to ``.NAME.old``, ``.NAME.new`` to ``NAME``)
    and then deletes ``.NAME.old``. After a kill between any two steps a
    complete copy is on disk: ``.NAME.new`` only ever holds a finished one,
    so it wins; ``.NAME.old``, the previous version, is used only when
    ``NAME`` is missing and nothing newer exists. ``.NAME.tmp-*`` folders
    were never finished and are deleted.
    """
    out = Path(out)
    new, old = _aside(out, "new"), _aside(out, "old")
    if new.is_dir():
        log.warning("%s: finishing a replacement that was interrupted (%s)", out, new.name)
        _promote(out)
    elif old.is_dir() and not out.exists():
        log.warning("%s: restoring the previous version %s (its replacement was interrupted)", out, old.name)
        os.replace(old, out)
    if not out.parent.is_dir():
        return
    for leftover in [old, *(p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp-"))]:
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink(missing_ok=True)


def partial_dir(out: Path) -> Path:
    """Where :func:`atomic_dir` with ``resume`` keeps an unfinished ``out`` between runs."""
    return _aside(Path(out), "partial")


@contextlib.contextmanager
def atomic_dir(out: Path, *, overwrite: bool = False, resume: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it becomes ``out``.

    On an exception in the body the temporary folder is removed and ``out`` is
    untouched. An existing ``out`` is replaced only when it is empty or
    ``overwrite``; at no moment of the replacement is there no complete copy
    on disk (see :func:`recover_dir`, which the next call runs first).

    ``resume``: the folder is ``.NAME.partial`` (:func:`partial_dir`), kept as
    it is when the body fails or the process is killed, and handed to the next
    call as it was left. The body owns what is in it: it must tell what of it
    is still valid (a stage keeps a journal keyed by its inputs) and delete
    the rest before it returns.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose another folder or allow overwriting")
    if resume:
        tmp = partial_dir(out)
        tmp.mkdir(exist_ok=True)
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        flush_tree(tmp)
    except BaseException:
        if not resume:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    # No clean-up from here on: whatever step fails or is killed, recover_dir completes the state it leaves.
    os.replace(tmp, _aside(out, "new"))
    _promote(out)
    shutil.rmtree(_aside(out, "old"), ignore_errors=True)


def remove_temp_files(folder: Path) -> list[str]:
    """Delete the temporary files and folders (``.*.tmp-*``) a killed writer left in ``folder``; their names.

    Only for a folder one process owns at this moment (a stage's own output
    folder at the start of its run): another writer's temporary would go too.
    """
    removed = []
    for path in sorted(Path(folder).glob(".*.tmp-*")):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run", folder, len(removed))
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# DVC runs a temporary or queued experiment in a copy of the project at <project>/.dvc/tmp/exps/<run>/
# (dvc/repo/experiments/executor/local.py: TempDirExecutor under the repo's tmp_dir, "exps").
DVC_EXP_PARTS = (".dvc", "tmp", "exps")


def project_path(path: Path | None, cwd: Path | None = None) -> Path | None:
    """``path`` as the project's: a relative path inside a DVC experiment's temporary copy of the project is
    resolved against the project the copy was made from; any other path is returned as it is."""
    if path is None or Path(path).is_absolute():
        return path
    parts = (cwd or Path.cwd()).resolve().parts
    for i in range(len(parts) - len(DVC_EXP_PARTS)):
        if parts[i : i + len(DVC_EXP_PARTS)] == DVC_EXP_PARTS:
            return Path(*parts[:i]) / path
    return Path(path)
