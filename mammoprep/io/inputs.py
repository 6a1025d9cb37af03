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

import io
import os
import stat

from ..errors import MammoprepError, NotRegularFileError, TooLargeError
from .paths import _os_error, pseudo_fs, pseudo_fs_error, regular_file_problem

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
