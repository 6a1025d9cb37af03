"""Finding DICOM files: folders walked in sorted order, symlink loops, special files (FIFOs,
devices, sockets) and files of the kernel's pseudo file systems (``/proc``, ``/sys``)
refused before anything is opened, each with a typed error (:func:`regular_file_problem`,
used for every input by :mod:`mammoprep.inputs`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Iterator

# the stat-only checks live with the bounded open (layer 0), for every kind of input
from ..inputs import _os_error, pseudo_fs, regular_file_problem  # noqa: F401 - re-exported

#: File name endings treated as DICOM when walking directories (plus extension-less files
#: that look like DICOM). Files named explicitly on the command line are always read.
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}


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
