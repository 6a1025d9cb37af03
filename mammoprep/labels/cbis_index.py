"""Where the files a CBIS-DDSM description table names are, whatever the download layout.

The tables name each file by a relative path ``CASE/STUDY_UID/SERIES_UID/000000.dcm``
(``Mass-Training_P_00001_LEFT_CC/1.3.6.../1.3.6.../000000.dcm``); the NBIA Data Retriever
writes the same series as ``CBIS-DDSM/CASE/07-20-2016-DDSM-74994/1.000000-full mammogram
images-24515/1-1.dcm``, and a flat copy may name the files anything. What every layout keeps
is the header: (0010,0020) Patient ID = ``CASE`` (``CASE_1``, ``CASE_2``, ... for the ROI
series of each abnormality), (0020,000D) Study and (0020,000E) Series Instance UIDs = the two
UIDs of the path. :class:`HeaderIndex` reads the headers under the shard inputs once (header
only: no pixel data) and finds files by that triple (:func:`path_triple`).

An abnormality's crop and ROI mask share one series (and the tables' two columns are known to
be swapped), so they are told apart by content alone (:func:`roi_boxes`): a binary image of
the full mammogram's size is the mask, anything else is the crop.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ..io.header import read_header_dataset
from ..io.paths import iter_dicom_paths

#: (Patient ID, Study Instance UID, Series Instance UID) as the table's path gives them.
Triple = tuple[str, str, str]

_UID = re.compile(r"\d+(?:\.\d+)+")


def clean_path(v: object) -> str:
    """A path cell as written, without surrounding whitespace, line breaks (the published
    tables carry ``"...000000.dcm\\n"``) or backslashes."""
    return re.sub(r"[\r\n]", "", str(v if v is not None else "")).strip().replace("\\", "/")


def path_triple(rel: str) -> Triple | None:
    """``CASE/STUDY_UID/SERIES_UID/FILE`` (the last four components) -> (CASE, STUDY_UID,
    SERIES_UID); None when the path is not of that form."""
    parts = [p for p in clean_path(rel).split("/") if p]
    if len(parts) < 4:
        return None
    case, study, series = parts[-4], parts[-3], parts[-2]
    if not (_UID.fullmatch(study) and _UID.fullmatch(series)):
        return None
    return case, study, series


def _header_text(ds, keyword: str) -> str:
    v = ds.get(keyword)
    return str(v).strip().rstrip("\x00").strip() if v is not None else ""


def _header_shape(ds) -> tuple[int, int] | None:
    try:
        return int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        return None


@dataclass
class HeaderIndex:
    """Files under the shard inputs by :data:`Triple`, and each file's (rows, columns).

    files: triple -> resolved paths (sorted); shapes: resolved path -> (rows, cols) or None
    (header unreadable or without (0028,0010)/(0028,0011)); scanned: files whose header was
    read; seconds: time the scan took."""

    files: dict[Triple, list[Path]] = field(default_factory=dict)
    shapes: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    scanned: int = 0
    seconds: float = 0.0

    @classmethod
    def scan(cls, roots: Iterable[str | Path]) -> "HeaderIndex":
        """Read the header (only) of every DICOM file under the folders ``roots``. Files
        that cannot be read are left out here: ``shard``'s own scan reports them."""
        start = time.perf_counter()
        index = cls()
        folders = [Path(r) for r in roots if Path(r).is_dir()]
        for p in iter_dicom_paths(folders):
            ds = index._read(p)
            if ds is None:
                continue
            key = (_header_text(ds, "PatientID"), _header_text(ds, "StudyInstanceUID"),
                   _header_text(ds, "SeriesInstanceUID"))
            if all(key):
                index.files.setdefault(key, []).append(p.resolve())
        for paths in index.files.values():
            paths.sort()
        index.seconds = time.perf_counter() - start
        return index

    def _read(self, path: Path):
        """The header data set of ``path`` (None if unreadable); records its shape."""
        full = str(path.resolve())
        try:
            ds, _ = read_header_dataset(path)  # typed errors; FIFOs, devices never opened
        except Exception:  # noqa: BLE001 - any unreadable file: not indexed
            self.shapes[full] = None
            return None
        self.scanned += 1
        self.shapes[full] = _header_shape(ds)
        return ds

    def shape(self, path: Path) -> tuple[int, int] | None:
        """(rows, cols) of ``path`` from its header (read now if the scan did not)."""
        full = str(Path(path).resolve())
        if full not in self.shapes:
            self._read(Path(path))
        return self.shapes[full]

    def locate(self, rel: str, bases: Sequence[Path]) -> list[Path]:
        """The files a table's path names: those whose header has the path's triple, then
        ``base / rel`` for the first base where it exists (the published layout), once each."""
        triple = path_triple(rel)
        found = list(self.files.get(triple, [])) if triple else []
        rel = clean_path(rel)
        for b in bases:
            if rel and (b / rel).exists():
                p = (b / rel).resolve()
                if p not in found:
                    found.append(p)
                break
        return found


def mask_box(path: Path, shape: tuple[int, int] | None) -> tuple[list[float] | None, str]:
    """Box ``[xmin, ymin, xmax, ymax]`` (original pixels, exclusive ends) of the non-zero
    pixels of a binary mask, or (None, why it is no mask of an image of ``shape``)."""
    import numpy as np

    from ..errors import MammoprepError
    from ..io.header import open_dataset

    try:  # regular files only; bounded parse; declared image within the memory cap
        ds, _ = open_dataset(Path(path), header_only=False)
        px = np.asarray(ds.pixel_array)
    except MammoprepError as err:
        return None, err.problem
    except Exception as exc:  # noqa: BLE001 - any unreadable file: no box, a warning
        return None, f"cannot read ({type(exc).__name__}: {exc})"
    if px.ndim != 2:
        return None, "not a 2-D mask"
    if shape is not None and px.shape != shape:
        return None, f"{px.shape[0]}x{px.shape[1]}, image {shape[0]}x{shape[1]}"
    inside = px != 0
    if not inside.any():
        return None, "empty mask"
    if np.any(px[inside] != px[inside].max()):  # O(pixels): masks are 0 / one value
        return None, "not a binary mask"
    ys, xs = np.nonzero(inside)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)], ""


def roi_boxes(candidates: Sequence[Path], shape: tuple[int, int] | None, index: HeaderIndex,
              cache: dict[tuple[str, tuple | None], tuple[list[float] | None, str]]
              ) -> tuple[list[list[float]], list[str]]:
    """The boxes of the masks among one abnormality's ROI files, and why each other file is
    none (``'NAME (why)'``). A file whose header size differs from the image's is a crop
    (not decoded); one of the image's size is decoded and is the mask when binary.
    ``cache``: (path, shape) -> :func:`mask_box` result, shared across calls."""
    boxes: list[list[float]] = []
    why: list[str] = []
    for p in candidates:
        size = index.shape(p)
        if shape is not None and size is not None and size != shape:
            why.append(f"{p} ((0028,0010)/(0028,0011) {size[0]}x{size[1]}, image "
                       f"{shape[0]}x{shape[1]}: a crop, not the mask)")
            continue
        key = (str(p), shape)
        if key not in cache:
            cache[key] = mask_box(p, shape)
        box, reason = cache[key]
        if box is None:
            why.append(f"{p} ({reason})")
        elif box not in boxes:
            boxes.append(box)
    return boxes, why
