"""Atomic output: the one way semcodec writes a file (or a folder) that must appear whole or not
at all -- token streams, videos, checkpoints, dataset shards, run checkpoints.

:class:`AtomicFile` writes to a temporary file beside the target (same folder, so the rename is
atomic), makes it durable (fsync), gives it the usual permissions and renames it onto the target;
an exception, ``abort()`` or a crash never leaves a partial file at the target path. A SIGKILL can
leave the temporary itself; its name carries the writer's pid (``.NAME.<pid>-<hex><suffix>``), so
the next write to the same target removes those whose writer is gone. The forms below are the
same writer for the libraries that want a path (safetensors, pyarrow, PyAV) or a file object:

    with atomic_path("out.parquet") as tmp: pq.write_table(table, tmp)
    with atomic_write("tokens.bin") as f: f.write(data)
    with atomic_dir("run/ckpt") as tmp: ...          # a folder, replaced by two renames

This module imports nothing heavy (the CLI's start-up stays fast).
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:                       # someone else's process
        pass
    return True


def _remove(path: Path) -> None:
    """Unlink a file or a link (never followed), or delete a folder the writer made."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def sweep_stale(path: str | Path) -> None:
    """Remove temporary files (and folders) of earlier writes to ``path`` whose process no longer runs."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d{1,10})-[0-9a-f]{8}(\.[A-Za-z0-9]{1,8})?")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        m = pattern.fullmatch(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            _remove(path.parent / name)


def _temp_name(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def temp_beside(path: str | Path, suffix: str = ".tmp") -> Path:
    """A new empty temporary file in ``path``'s folder (same file system, so rename is atomic).
    An error names ``path``, the file the user asked for, not the temporary file."""
    path = Path(path)
    sweep_stale(path)
    tmp = _temp_name(path, suffix)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except OSError as e:
        raise type(e)(e.errno, e.strerror, str(path)) from None
    return tmp


def commit(tmp: str | Path, path: str | Path) -> None:
    """Make ``tmp`` durable (fsync), give it the usual permissions (0666 less the umask) and
    rename it onto ``path``."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


class AtomicFile:
    """``path`` written through a temporary file: ``tmp`` to write, then ``commit()`` or ``abort()``.
    As a context manager it commits on success and aborts on an exception."""

    def __init__(self, path: str | Path, suffix: str = ".tmp"):
        self.path = Path(path)
        self.tmp: Path | None = temp_beside(self.path, suffix)

    def commit(self) -> None:
        if self.tmp is None:
            raise ValueError(f"{self.path}: the atomic write was already committed or aborted")
        try:
            commit(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self.tmp = None

    def abort(self) -> None:
        tmp, self.tmp = self.tmp, None
        if tmp is not None:
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp"):
    """``with atomic_path(p) as tmp: write(tmp)`` -> ``p`` appears complete, or not at all."""
    out = AtomicFile(path, suffix)
    try:
        yield out.tmp
    except BaseException:
        out.abort()
        raise
    out.commit()


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **kw):
    """``with atomic_write(p) as f: f.write(...)``: :func:`atomic_path` with an open file."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kw) as f:
            yield f


@contextmanager
def atomic_dir(path: str | Path):
    """``with atomic_dir(d) as tmp: fill(tmp)`` -> the folder ``d`` is replaced by ``tmp`` whole.
    A folder cannot be renamed onto another, so the old one is first renamed to ``.NAME-old``
    (:func:`old_dir`), the new one takes its place, and the old one is deleted: a kill at any
    moment leaves either folder complete under one of those two names."""
    path = Path(path)
    sweep_stale(path)
    tmp = _temp_name(path, ".tmp")
    tmp.mkdir(mode=0o777)
    try:
        yield tmp
        old = old_dir(path)
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)        # the commit point
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def old_dir(path: str | Path) -> Path:
    """Where :func:`atomic_dir` keeps the previous folder during the swap (``.NAME-old``)."""
    path = Path(path)
    return path.with_name(f".{path.name}-old")
