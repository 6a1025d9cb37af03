"""The one way an input file is opened: a regular file on a regular file system, read
with a byte cap.

Every input mammoprep reads (DICOM files, label tables, the salt file, the shards listed to
``verify``, the reference and energy tables) goes through :func:`open_input` (or
:func:`read_input` for small files). Before anything is opened, :func:`input_problem` refuses
what could block or never end: FIFOs, devices, sockets (a symlink to ``/dev/zero`` included)
and files of the kernel's pseudo file systems (``/proc``, ``/sys``, ``debugfs``, ...), whose
"regular" files report a size of 0 and then stream without end (``/proc/self/pagemap``).
The file is opened with ``O_NONBLOCK`` (a FIFO swapped in after the check cannot block the
open), checked again on the open descriptor, and every read past ``max_bytes`` raises
:class:`~mammoprep.errors.TooLargeError` naming the file and the cap, even where the file
grows while it is read.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import stat
import sys

from .errors import (MammoprepError, NotDicomError, NotRegularFileError, TooLargeError,
                     UnreadableError)

_FILE_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
               stat.S_IFDIR: "a directory"}


#: statfs ``f_type`` of the kernel's pseudo file systems (linux/magic.h): their files are
#: views of kernel state, not data on disk (a size of 0, content that may never end).
PSEUDO_FS_MAGIC = {
    0x9FA0: "proc", 0x62656572: "sysfs", 0x64626720: "debugfs", 0x74726163: "tracefs",
    0x73636673: "securityfs", 0x0027E0EB: "cgroup", 0x63677270: "cgroup2",
    0x1CD1: "devpts", 0xCAFE4A11: "bpf", 0x62656570: "configfs", 0x6165676C: "pstore",
    0xDE5E81E4: "efivarfs", 0x65735543: "fusectl", 0x42494E4D: "binfmt_misc",
    0xF97CFF8C: "selinuxfs", 0x6E736673: "nsfs", 0x50495045: "pipefs", 0x534F434B: "sockfs",
}
#: Where pseudo file systems are mounted; refused by path where ``statfs`` is not available.
PSEUDO_ROOTS = ("/proc", "/sys")


@functools.lru_cache(maxsize=None)
def _statfs():
    """(statfs, fstatfs, struct statfs, byref) from the C library on Linux, else None
    (loaded on first use: ``ctypes`` is not imported by a command that reads no file)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    class StatFs(ctypes.Structure):
        # struct statfs begins with f_type (__fsword_t, a C long on Linux); room for the rest
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 256)]

    try:
        lib = ctypes.CDLL(None, use_errno=True)
        return lib.statfs, lib.fstatfs, StatFs, ctypes.byref
    except (OSError, AttributeError):
        return None


def pseudo_fs(target: str | os.PathLike | int) -> str | None:
    """Name of the pseudo file system ``target`` (a path, or an open descriptor) lives on,
    or None for a file system that holds data (ext4, xfs, tmpfs, nfs, ...). Where ``statfs``
    cannot be called, a path under :data:`PSEUDO_ROOTS` (after resolving links) counts."""
    calls = _statfs()
    if calls is not None:
        statfs, fstatfs, struct, byref = calls
        buf = struct()
        if isinstance(target, int):
            rc = fstatfs(target, byref(buf))
        else:
            rc = statfs(os.fsencode(target), byref(buf))
        if rc == 0:
            return PSEUDO_FS_MAGIC.get(buf.f_type & 0xFFFFFFFF)
    if isinstance(target, int):
        return None
    real = os.path.realpath(target)
    return next((r[1:] for r in PSEUDO_ROOTS if real == r or real.startswith(r + "/")), None)


def pseudo_fs_error(path, fs: str, what: str) -> NotRegularFileError:
    """The error for a file of pseudo file system ``fs`` given as the ``what``."""
    return NotRegularFileError(path, f"a file of the kernel's {fs} pseudo file system, not a "
                               "file on disk", value=_resolved(path),
                               hint=f"give the {what} as a regular file on disk; it was not "
                                    "read (its content can be endless)")


def _resolved(path) -> str:
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return str(path)


def regular_file_problem(path: str | os.PathLike, what: str = "DICOM file"
                         ) -> MammoprepError | None:
    """None if ``path`` is (a symlink to) a regular file on a file system that holds data,
    else the typed error to report (``what`` names the input in the advice).

    Only ``stat`` and ``statfs`` are used: a FIFO, device, socket or a file of ``/proc`` or
    ``/sys`` (:func:`pseudo_fs`) is never opened, so it can neither block nor stream
    without end."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return NotRegularFileError(path, "a symbolic link to a missing file",
                                       value=_link_target(path),
                                       hint="fix or remove the link")
        if what != "DICOM file":
            return UnreadableError(path, f"{what} not found", hint="check the path")
        return NotDicomError(path, "file not found", hint="check the path")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return NotRegularFileError(path, "a symbolic link loop (the link points back to "
                                       "itself)", value=_link_target(path),
                                       hint="fix or remove the link")
        return _os_error(path, exc)
    if stat.S_ISREG(st.st_mode):
        fs = pseudo_fs(path)
        return None if fs is None else pseudo_fs_error(path, fs, what)
    kind = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
    if stat.S_ISDIR(st.st_mode):
        try:
            with os.scandir(path):
                pass
        except OSError as exc:
            return UnreadableError(path, f"a folder that cannot be listed "
                                   f"({exc.strerror or exc}); its files were not read",
                                   hint="check the folder's permissions")
        if what != "DICOM file":
            return NotRegularFileError(path, f"a folder, not a {what}",
                                       hint=f"give the {what}'s path")
        return NotDicomError(path, "is a directory")
    return NotRegularFileError(path, f"not a regular file but {kind}",
                               hint=f"pass {what}s; it was not opened (reading it could "
                                    "block or never end)")


def _link_target(path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _os_error(path, exc: OSError) -> MammoprepError:
    """Typed error for an OS refusal to read ``path``."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return UnreadableError(path, "permission denied", hint="check the file's permissions")
    return UnreadableError(path, f"cannot read the file ({exc.strerror or exc})",
                           hint="check the disk and the path")


#: Byte caps of the inputs other than DICOM files (``max_bytes`` of :func:`open_input`).
MAX_TABLE_BYTES = 8 << 30  # a label or energy table (EMBED's metadata CSV is ~1 GB)
MAX_SALT_BYTES = 4096      # the salt file holds 64 hex characters
#: Largest DICOM file read (1 GiB: 17 times a 6000x4800 16-bit mammogram stored raw).
MAX_DICOM_BYTES = 1 << 30


def input_problem(path: str | os.PathLike, what: str = "DICOM file") -> MammoprepError | None:
    """None if ``path`` is (a symlink to) a regular file on a file system that holds data,
    else the typed error to raise (stat and statfs only: nothing is opened)."""
    return regular_file_problem(path, what)


class _CappedRaw(io.RawIOBase):
    """A raw binary file whose reads may not go past ``cap`` bytes from the start."""

    def __init__(self, fd: int, path, what: str, cap: int) -> None:
        super().__init__()
        self._fd, self._path, self._what, self._cap = fd, path, what, cap
        self.name = os.fspath(path)  # as a file opened by name has (pydicom records it)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def readinto(self, b) -> int:
        pos = os.lseek(self._fd, 0, os.SEEK_CUR)
        view = memoryview(b).cast("B")
        n = os.readv(self._fd, [view])
        if pos + n > self._cap:
            raise too_large(self._path, self._what, self._cap)
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return os.lseek(self._fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self._fd)
            finally:
                super().close()


def too_large(path, what: str, cap: int) -> TooLargeError:
    """The error for an input longer than its cap (``cap`` bytes)."""
    return TooLargeError(path, f"the {what} is larger than {_size(cap)}, the most read of it",
                         value=f"more than {cap} bytes",
                         hint=f"give the {what} as a file of at most {_size(cap)}")


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} bytes"


def open_input(path: str | os.PathLike, what: str, max_bytes: int) -> io.BufferedReader:
    """``path`` opened for binary reading, seekable, refused unless it is a regular file on a
    file system that holds data (:func:`input_problem`) and at most ``max_bytes`` long.

    ``what`` names the input in messages ("label table", "salt file"). The open never blocks
    (``O_NONBLOCK``, cleared once the descriptor is known to be a regular file); a read past
    ``max_bytes`` raises :class:`~mammoprep.errors.TooLargeError`. Raises the typed errors of
    :mod:`mammoprep.errors` (NotRegularFileError, UnreadableError, NotDicomError for a
    missing file, TooLargeError)."""
    problem = input_problem(path, what)
    if problem is not None:
        raise problem
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _os_error(path, exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between the check and the open
            raise NotRegularFileError(path, "not a regular file (replaced while opened)",
                                      hint=f"give the {what} as a regular file on disk")
        fs = pseudo_fs(fd)
        if fs is not None:
            raise pseudo_fs_error(path, fs, what)
        if st.st_size > max_bytes:
            raise too_large(path, what, max_bytes)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return io.BufferedReader(_CappedRaw(fd, path, what, max_bytes), buffer_size=1 << 16)


def read_input(path: str | os.PathLike, what: str, max_bytes: int) -> bytes:
    """The whole of a small input (:func:`open_input`'s checks and cap) as bytes."""
    with open_input(path, what, max_bytes) as fh:
        return fh.read()


__all__ = ["MAX_DICOM_BYTES", "MAX_SALT_BYTES", "MAX_TABLE_BYTES", "input_problem",
           "open_input", "read_input", "too_large"]
