"""Write-then-rename, so that a run killed at any moment (even SIGKILL) leaves no half-written output.

A partial file lives under a hidden name beside its final path (same filesystem, so the rename is
atomic) and is renamed only once complete; readers never see a truncated PNG or HDF5 file. The
hidden name carries the writer's host and pid, so that a later run removes only the leftovers of
dead writers and never a file that a concurrent shard is still writing.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_MARK = ".partial-"
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_PARTIAL = re.compile(r"^\..*\.partial-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)(\.[^.]*)?$")
FOREIGN_PARTIAL_AGE_S = 24 * 3600  # another host's leftovers: removed once this old


def partial_path(final: Path) -> Path:
    """Hidden sibling of `final`, keeping its extension so that writers infer the format from it."""
    final = Path(final)
    return final.with_name(f".{final.stem}{PARTIAL_MARK}{_HOST}-{os.getpid()}{final.suffix}")


@contextmanager
def atomic_output(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to; on success rename it to `final`, on error delete it."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _naming(exc, final.parent) from exc
    tmp = partial_path(final)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(final.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _naming(exc, final) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to the disk: on cluster filesystems a blockmap's
    existence marks a finished slide, so its bytes must be there before its name is."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (
            errno.EINVAL,
            errno.EROFS,
            errno.EBADF,
        ):  # a filesystem that cannot fsync
            raise
    finally:
        os.close(fd)


def _naming(exc: OSError, path: Path) -> OSError:
    """The same error, naming the output being written ("No space left on device" names none)."""
    if exc.filename is not None and str(path) in str(exc.filename):
        return exc
    reason = exc.strerror or str(exc).strip() or type(exc).__name__
    return OSError(exc.errno, f"cannot write {path.name}: {reason}", str(path))


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_partials(folder: Path) -> int:
    """Delete partial files whose writer is gone (this host: its pid no longer runs; another host:
    older than a day); returns how many were removed."""
    removed = 0
    if not Path(folder).is_dir():
        return 0
    for path in Path(folder).rglob(f".*{PARTIAL_MARK}*"):
        match = _PARTIAL.match(path.name)
        if not match or not path.is_file():
            continue
        if match["host"] == _HOST:
            stale = int(match["pid"]) != os.getpid() and not _writer_alive(int(match["pid"]))
        else:
            try:
                stale = time.time() - path.stat().st_mtime > FOREIGN_PARTIAL_AGE_S
            except FileNotFoundError:
                continue
        if stale:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
