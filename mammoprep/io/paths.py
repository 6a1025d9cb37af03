"""Finding DICOM files: folders walked in sorted order, symlink loops, special files (FIFOs,
devices, sockets) and files of the kernel's pseudo file systems (``/proc``, ``/sys``)
refused before anything is opened, each with a typed error (:func:`regular_file_problem`,
used for every input by :mod:`mammoprep.io.inputs`)."""

from __future__ import annotations

import errno
import functools
import os
import stat
import sys
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import MammoprepError, NotDicomError, NotRegularFileError, UnreadableError

#: File name endings treated as DICOM when walking directories (plus extension-less files
#: that look like DICOM). Files named explicitly on the command line are always read.
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}


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
    """(libc, struct type) for ``statfs``/``fstatfs`` on Linux, else None (loaded on first
    use: ``ctypes`` is not imported by a command that reads no file)."""
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
