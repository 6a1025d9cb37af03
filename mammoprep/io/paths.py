"""Finding DICOM files: folders walked in sorted order, symlink loops and special files
(FIFOs, devices, sockets) refused before anything is opened, each with a typed error."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import MammoprepError, NotDicomError, NotRegularFileError, UnreadableError

#: File name endings treated as DICOM when walking directories (plus extension-less files
#: that look like DICOM). Files named explicitly on the command line are always read.
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}


_FILE_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
               stat.S_IFDIR: "a directory"}


def regular_file_problem(path: str | os.PathLike) -> MammoprepError | None:
    """None if ``path`` is (a symlink to) a regular file, else the typed error to report.

    Only ``stat``/``lstat`` are used: a FIFO, device or socket is never opened, so it can
    neither block nor stream without end."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return NotRegularFileError(path, "a symbolic link to a missing file",
                                       value=_link_target(path),
                                       hint="fix or remove the link")
        return NotDicomError(path, "file not found", hint="check the path")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return NotRegularFileError(path, "a symbolic link loop (the link points back to "
                                       "itself)", value=_link_target(path),
                                       hint="fix or remove the link")
        return _os_error(path, exc)
    if stat.S_ISREG(st.st_mode):
        return None
    what = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
    if stat.S_ISDIR(st.st_mode):
        try:
            with os.scandir(path):
                pass
        except OSError as exc:
            return UnreadableError(path, f"a folder that cannot be listed "
                                   f"({exc.strerror or exc}); its files were not read",
                                   hint="check the folder's permissions")
        return NotDicomError(path, "is a directory")
    return NotRegularFileError(path, f"not a regular file but {what}",
                               hint="pass DICOM files; it was not opened (reading it could "
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


def looks_like_dicom(path: Path) -> bool:
    """Cheap sniff: 'DICM' at byte 128, or an implicit-VR group 0002/0008 tag at byte 0.
    False for anything but a regular file (never opens a FIFO or device)."""
    if regular_file_problem(path) is not None:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[3:4] == b"\x00"


def iter_dicom_paths(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files named explicitly, and DICOM-looking files under directories (recursive, sorted).

    Under a directory, a file counts if its suffix is in :data:`DICOM_SUFFIXES`, or it has no
    suffix and :func:`looks_like_dicom`. Yields each path once. Nothing is opened but
    extension-less regular files: a FIFO, device, socket or symlink loop named ``*.dcm`` is
    yielded so that reading it gives a typed reject (:func:`regular_file_problem`), an
    extension-less one is skipped. Symlinked folders are not followed (no cycles). A
    folder that cannot be listed is yielded too, so that reading it reports it
    (:class:`~mammoprep.errors.UnreadableError`) instead of skipping it without a word.
    """
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if _is_dir(p):
            found: list[Path] = []

            def unlisted(exc: OSError, found=found) -> None:
                if exc.filename is not None:
                    found.append(Path(exc.filename))

            for root, dirs, files in os.walk(p, onerror=unlisted):
                dirs.sort()
                for name in files:
                    f = Path(root) / name
                    suffix = f.suffix.lower()
                    if suffix in DICOM_SUFFIXES or (not suffix and looks_like_dicom(f)):
                        found.append(f)
            candidates = sorted(found)
        else:
            candidates = [p]
        for f in candidates:
            if f not in seen:
                seen.add(f)
                yield f


def _is_dir(p: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(p).st_mode)
    except OSError:  # missing, loop, no permission: reported when read as a file
        return False
