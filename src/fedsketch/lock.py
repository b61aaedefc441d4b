"""One writer per run folder: an advisory lock held while a run writes its folder.

:func:`run_folder_lock` creates the run folder if needed and takes ``fcntl.flock`` on
``<run folder>/run.lock``, which holds the holder's PID. A second run of the same folder (another
``fedsketch run`` of the same config, a suite, a Flower run) is refused with :class:`FolderBusy`
naming that PID (bad input, exit 2). The kernel releases a flock when its holder dies, however it
dies, so a lock file left by a killed run is stale: the next run takes it over and writes its own
PID. A run that ends (or fails) removes the lock file.

A run whose input fails before it wrote anything (its data or model does not load) leaves no empty
folder behind: when the block ends with an exception, the run folder is removed if this call
created it and it holds nothing but the lock and ``run.log``, and so are the parent folders this
call created, while they are empty. Nothing a user or an earlier run wrote is ever deleted.

The lock is per process and re-entrant: a block inside another block on the same folder (the
command line locks the folder, then the runner locks it again) is a no-op. Forked client workers
share their parent's lock and never release it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from fedsketch.errors import InputError
from fedsketch.io import FILE_MODE, WriteError

LOCK_FILE = "run.lock"
"""The lock file inside a run folder; it holds the PID of the process writing the folder."""
DISPOSABLE = frozenset({LOCK_FILE, "run.log"})
"""What a run folder may hold and still count as empty (removed when the run's input fails)."""

log = logging.getLogger(__name__)

_HELD: dict[str, int] = {}  # run folder (resolved) -> depth of the blocks holding it in this process
_GUARD = threading.Lock()


class FolderBusy(InputError):
    """Another process holds the run folder's lock (bad input: exit 2)."""


def holder_pid(folder: str | Path) -> int | None:
    """The PID written in ``folder``'s lock file (None when there is none or it is unreadable)."""
    try:
        text = (Path(folder) / LOCK_FILE).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _missing_ancestors(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet, innermost first."""
    out = []
    p = folder
    while not p.exists() and p.parent != p:
        out.append(p)
        p = p.parent
    return out


def _open_locked(folder: Path) -> int | None:
    """An fd of ``folder/run.lock`` holding its flock (None where the file system has no flock);
    raises :class:`FolderBusy` when another process holds it."""
    path = folder / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as e:
            raise WriteError(e.errno or errno.EIO, e.strerror or str(e), str(path)) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = holder_pid(folder)
            who = f"PID {pid}" if pid is not None else "a process whose PID is not readable yet"
            raise FolderBusy(
                f"{folder}: another fedsketch run ({who}) is writing this run folder; wait for it to end, "
                "or set output.name or output.dir to run elsewhere"
            ) from None
        except OSError as e:  # a file system without flock (some network mounts): run unlocked
            os.close(fd)
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                log.warning("%s: cannot lock (%s); running without the run folder lock", path, e.strerror)
                return None
            raise WriteError(e.errno or errno.EIO, e.strerror or str(e), str(path)) from e
        try:  # the holder before us may have removed the file after we opened it: lock the one on disk
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            folder.mkdir(parents=True, exist_ok=True)
            continue
        stale = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if stale and stale != str(os.getpid()):
            log.info("%s: took over the lock of PID %s, which no longer runs", path, stale)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd


def _remove_if_empty(folder: Path, created: list[Path]) -> None:
    """Remove ``folder`` (created by this call) if it holds only :data:`DISPOSABLE` files, then the
    parents this call created while they are empty."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    if any(e.name not in DISPOSABLE or not e.is_file() for e in entries):
        return
    with contextlib.suppress(OSError):
        for e in entries:
            e.unlink()
        for p in created:  # innermost first; rmdir removes empty folders only
            p.rmdir()


@contextlib.contextmanager
def run_folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold the lock of run folder ``folder`` (created if missing) for the block; see the module docstring."""
    folder = Path(folder)
    key = os.path.abspath(folder)
    with _GUARD:
        if key in _HELD:
            _HELD[key] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield folder
        finally:
            with _GUARD:
                _HELD[key] -= 1
        return
    created = _missing_ancestors(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:  # a file where the folder should be
        raise WriteError(errno.ENOTDIR, "a file stands where the run folder should be", str(folder)) from e
    except OSError as e:
        raise WriteError(e.errno or errno.EIO, e.strerror or str(e), str(folder)) from e
    fd = _open_locked(folder)  # refused: the folder is left alone (its lock is the holder's)
    with _GUARD:
        _HELD[key] = 1
    ok = False
    try:
        yield folder
        ok = True
    finally:
        with _GUARD:
            del _HELD[key]
        if not ok and created:
            _remove_if_empty(folder, created)
        with contextlib.suppress(OSError):  # still ours: we hold its flock until the close below
            (folder / LOCK_FILE).unlink()
        if fd is not None:
            os.close(fd)
