"""The one atomic writer: every file the project writes goes through it.

A file is written to a temporary file in the same folder, flushed and fsynced, given the mode a
user expects (``0666`` less the process umask, ``0644`` under the usual umask ``022``), and renamed
into place. A reader, or a crash, never sees a half-written file, and a write that fails leaves the
earlier file intact. A failure is raised as :class:`WriteError`, which names the destination path
(not the temporary one) and keeps the ``errno``, so the command line can say in one line whether
the location is bad (exit 2) or the disk is full (exit 1).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: errno values that mean "this is not a place you can write to" (bad input, exit 2); anything
#: else (no space, quota, I/O error) is a failed write (exit 1)
BAD_LOCATION_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENAMETOOLONG,
        errno.ENOENT,
        errno.EEXIST,
        errno.ELOOP,
        errno.EINVAL,
    }
)


class WriteError(OSError):
    """A file or folder that could not be written; ``filename`` is the destination."""

    @property
    def bad_location(self) -> bool:
        """Whether the destination itself is unusable (as opposed to a full disk or an I/O error)."""
        return self.errno in BAD_LOCATION_ERRNOS

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()
"""Mode of every written file: what ``open(path, "w")`` would give."""
DIR_MODE = 0o777 & ~_umask()
"""Mode of every written folder: what ``mkdir`` would give."""


def _fail(path: Path, e: OSError) -> WriteError:
    if isinstance(e, WriteError):
        return e
    return WriteError(e.errno or errno.EIO, e.strerror or str(e), str(path))


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:  # a file where a folder should be
        raise WriteError(errno.ENOTDIR, "a file stands where its folder should be", str(path)) from e
    except OSError as e:
        raise _fail(path, e) from e


def atomic_write_with(path: str | Path, writer: Callable[[Path], object]) -> None:
    """Let ``writer`` write a temporary file beside ``path``, then fsync it and rename it into place."""
    path = Path(path)
    _make_parent(path)
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:200]}.", suffix=path.suffix or ".tmp")
        tmp = Path(name)
        os.close(fd)
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise _fail(path, e) from e
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int = 2, sort_keys: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=_json_default) + "\n")


def atomic_write_dir(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Build a directory in a temporary sibling, then swap it into place."""
    path = Path(path)
    _make_parent(path)
    tmp: Path | None = None
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name[:200]}."))
        os.chmod(tmp, DIR_MODE)
        writer(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, FILE_MODE)
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _fail(path, e) from e
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
