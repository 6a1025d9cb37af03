"""Crash-safe output: atomic file writes, typed write errors, one writer per output folder.

Every file ``mammoprep`` writes goes through :func:`atomic_write`: a temporary file beside
the destination, fsync, rename, fsync of the folder. A kill -9 or a full disk leaves either
the old file or the complete new one under the final name, never a partial one, so a rerun
resumes from what is there. An ``OSError`` (ENOSPC, EACCES, EROFS, ...) becomes one
:class:`~mammoprep.errors.WriteError` naming the path and what to do.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import MammoprepError, WriteError

#: What to do, per errno, when an output cannot be written.
_ADVICE = {
    errno.ENOSPC: "the disk is full: free space (or use another output folder) and rerun; "
                  "finished outputs are kept and the rerun resumes",
    errno.EDQUOT: "the disk quota is exceeded: free space and rerun; finished outputs are "
                  "kept and the rerun resumes",
    errno.EACCES: "permission denied: check that you may write to this folder, then rerun",
    errno.EPERM: "operation not permitted: check the folder's permissions, then rerun",
    errno.EROFS: "the file system is read-only: choose another output folder",
}


def write_error(path: str | os.PathLike, exc: OSError) -> WriteError:
    """The typed error for an ``OSError`` while writing ``path``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return WriteError(path, f"cannot write ({reason})",
                      tag="errno", value=errno.errorcode.get(exc.errno or 0, exc.errno),
                      hint=_ADVICE.get(exc.errno, "check the disk and the folder, then rerun; "
                                                  "finished outputs are kept"))


def fsync_dir(folder: Path) -> None:
    """fsync ``folder`` so a rename or link inside it survives a crash (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """The temporary file :func:`atomic_write` uses for ``path`` (hidden, per process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _replace_atomically(path: Path, write_tmp: Callable[[Path], None]) -> None:
    """``write_tmp(tmp)`` writes and fsyncs the temporary file of ``path``; then rename it
    over ``path``. On any failure the temporary file is removed, an existing ``path`` is
    left as it was, and the exception propagates."""
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_tmp(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_buffered(tmp: Path, data: bytes | Callable[[BinaryIO], None] | list) -> None:
    """Write ``data`` (bytes, a list of bytes-like parts, or a function writing to a binary
    file object) to ``tmp``, flush, fsync."""
    with open(tmp, "wb") as fh:
        if callable(data):
            data(fh)
        else:
            for part in data if isinstance(data, list) else [data]:
                fh.write(part)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` (bytes, or a function that writes to a binary file object) to
    ``path`` atomically: temporary file in the same folder, flush, fsync, rename, fsync of
    the folder. Raises :class:`WriteError` (naming ``path``) on any ``OSError``; the
    temporary file is removed and an existing ``path`` is left as it was."""
    path = Path(path)
    try:
        _replace_atomically(path, lambda tmp: _write_buffered(tmp, data))
    except OSError as exc:
        raise write_error(path, exc) from None
    fsync_dir(path.parent)


#: O_DIRECT needs the buffer address, the file offset and the length aligned to the
#: device's logical block; a page (4096 bytes) satisfies every common device.
_ALIGN = 4096
_direct_buffers = threading.local()


def _aligned_buffer(nbytes: int) -> memoryview:
    """This thread's page-aligned buffer of at least ``nbytes`` (anonymous mmap, kept and
    reused: its pages stay mapped, so filling it costs a copy, not fresh pages)."""
    import mmap

    buf = getattr(_direct_buffers, "buf", None)
    if buf is None or len(buf) < nbytes:
        if buf is not None:
            buf.close()
        buf = mmap.mmap(-1, max(nbytes, _ALIGN))
        _direct_buffers.buf = buf
    return memoryview(buf)


def _write_direct(tmp: Path, parts: list, total: int) -> bool:
    """Write the concatenation of ``parts`` (``total`` bytes) to a new file ``tmp`` with
    O_DIRECT from an aligned copy, then fsync. False (nothing left behind) where the file
    system or the platform refuses O_DIRECT; an OSError of the write itself propagates."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    padded = -(-total // _ALIGN) * _ALIGN
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flag, 0o666)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # e.g. tmpfs, some FUSE
            return False
        raise
    try:
        view = _aligned_buffer(padded)
        at = 0
        for part in parts:
            part = memoryview(part).cast("B")
            view[at:at + len(part)] = part
            at += len(part)
        view[total:padded] = bytes(padded - total)
        done = 0
        while done < padded:
            n = os.write(fd, view[done:padded])
            if n <= 0 or n % _ALIGN:  # a short unaligned write cannot be continued directly
                raise OSError(errno.EINVAL, "short O_DIRECT write")
            done += n
        os.ftruncate(fd, total)
        os.fsync(fd)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # alignment refused after all: write it buffered
            return False  # (the caller rewrites the temporary file from the start)
        raise
    finally:
        os.close(fd)
    return True


def write_parts(path: str | os.PathLike, parts: list, direct: bool = True) -> None:
    """Write the concatenation of ``parts`` (bytes-like) to ``path`` atomically: temporary
    file, fsync, rename (the folder is not fsynced). With ``direct`` (for large files), the
    data go from one aligned per-thread buffer to the disk with O_DIRECT, bypassing the page
    cache: 4.7 ms of the writing thread's CPU per 27 MB image against 68 ms for a buffered
    write on the test VM (``benchmarks/startup_io.py``); where O_DIRECT is refused, a
    buffered write. Raises the ``OSError`` (the temporary file removed, an existing
    ``path`` untouched)."""
    total = sum(memoryview(p).nbytes for p in parts)

    def write_tmp(tmp: Path) -> None:
        if not (direct and _write_direct(tmp, parts, total)):
            _write_buffered(tmp, list(parts))

    _replace_atomically(Path(path), write_tmp)


def remove_temporaries(folder: Path, pattern: str = ".*.tmp") -> list[Path]:
    """Delete temporary files an interrupted run left in ``folder``; returns them."""
    gone = []
    for p in sorted(folder.glob(pattern)):
        try:
            p.unlink()
            gone.append(p)
        except OSError:
            pass
    return gone


#: The name :func:`temporary_name` gives: ``.NAME.PID.tmp``.
_TEMP = re.compile(r"\..+\.(\d+)\.tmp")


def sweep_temporaries(folder: Path) -> int:
    """Delete, under ``folder`` (recursively), every temporary file of :func:`atomic_write`
    (``.NAME.PID.tmp``). Only for a folder this process has locked
    (:func:`output_lock`) and before it writes there: then no other run writes to it, so
    every such file is stale, whatever its process id says (ids are reused, and a worker
    on another host of a cluster has ids of its own). Returns how many were removed."""
    n = 0
    if not folder.is_dir():
        return 0
    for p in folder.rglob(".*.tmp"):
        if _TEMP.fullmatch(p.name) and not p.is_dir():
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n


class FolderLockedError(MammoprepError):
    """Another run is writing to the same output folder."""

    kind = "folder_locked"


def _record_holder(fh, command: str) -> None:
    """Write ``mammoprep COMMAND (pid N)`` into the held lock file, so a refused run can
    name the run that holds it (best effort: the lock itself is the flock)."""
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"mammoprep {command} (pid {os.getpid()})\n".encode())
        fh.flush()
    except OSError:
        pass


def _lock_holder(fh) -> str:
    """What the lock file says about its holder: "`mammoprep shard` (pid 123)", or
    "mammoprep run" where it says nothing readable."""
    try:
        fh.seek(0)
        text = fh.read(200).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    m = re.fullmatch(r"mammoprep ([a-z-]+) \(pid (\d+)\)", text)
    return f"`mammoprep {m.group(1)}` (pid {m.group(2)})" if m else "mammoprep run"


@contextmanager
def output_lock(folder: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.lock`` (``fcntl.flock``, released when the
    process ends, even by kill -9) for the duration; a second run on the same folder gets
    :class:`FolderLockedError` at once, naming the command and pid that hold the folder,
    instead of interleaving its files with ours. Without ``fcntl`` (Windows) nothing is
    locked."""
    folder = Path(folder)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = folder / ".lock"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(lock, "a+b")
    except OSError as exc:
        raise write_error(lock, exc) from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FolderLockedError(
                    folder, f"another {_lock_holder(fh)} is writing to this folder "
                            f"(this run: `mammoprep {command}`)",
                    tag=".lock", value="locked",
                    hint="wait for it to finish, or use another output folder") from None
            raise write_error(lock, exc) from None
        _record_holder(fh, command)
        yield
    finally:
        fh.close()


#: Image formats :func:`save_image` infers from a file suffix.
IMAGE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf", ".svg": "svg",
                 ".tif": "tiff", ".tiff": "tiff", ".webp": "webp"}


def check_writable(path: str | os.PathLike) -> None:
    """Raise :class:`WriteError` now if the file ``path`` cannot be created where it is
    asked for (a parent that is a file, a read-only or full folder), before a long run
    computes what it would hold: creates the parent folder and a temporary probe file."""
    path = Path(path)
    probe = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb"):
            pass
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass


def save_image(path: str | os.PathLike, write: Callable[[BinaryIO, str], None]) -> Path:
    """Write a figure atomically: ``write(fh, fmt)`` renders into a binary file object in
    format ``fmt`` (from the suffix of ``path``: :data:`IMAGE_FORMATS`, default png), e.g.
    ``lambda fh, fmt: fig.savefig(fh, format=fmt)``. A full or read-only disk raises
    :class:`WriteError` and leaves no partial or empty file under ``path``."""
    path = Path(path)
    fmt = IMAGE_FORMATS.get(path.suffix.lower(), "png")
    atomic_write(path, lambda fh: write(fh, fmt))
    return path
