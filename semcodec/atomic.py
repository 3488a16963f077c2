"""Atomic output files: write to a temporary file beside the target, rename when complete.

A crash, a kill or an exception never leaves a partial file at the target path. A SIGKILL can
leave the temporary file itself; its name carries the writer's pid (``.NAME.<pid>-<hex><suffix>``),
so the next write to the same target removes those whose writer is gone.
"""
from __future__ import annotations

import os
import re
import secrets
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


def sweep_stale(path: str | Path) -> None:
    """Remove temporary files of earlier writes to ``path`` whose process no longer runs."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d{1,10})-[0-9a-f]{8}(\.[A-Za-z0-9]{1,8})?")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        m = pattern.fullmatch(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            try:
                os.unlink(path.parent / name)     # a link is removed, never followed
            except OSError:
                pass


def temp_beside(path: str | Path, suffix: str = ".tmp") -> Path:
    """A new empty temporary file in ``path``'s folder (same file system, so rename is atomic).
    An error names ``path``, the file the user asked for, not the temporary file."""
    path = Path(path)
    sweep_stale(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except OSError as e:
        raise type(e)(e.errno, e.strerror, str(path)) from None
    return tmp


def commit(tmp: str | Path, path: str | Path) -> None:
    """Give ``tmp`` the usual permissions (0666 less the umask) and rename it onto ``path``."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp"):
    """``with atomic_path(p) as tmp: write(tmp)`` -> ``p`` appears complete, or not at all."""
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
