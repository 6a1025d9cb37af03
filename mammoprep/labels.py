"""Label sources -> one internal table (one :class:`LabelRow` per image), and task label rules.

Adapters (``--labels KIND:PATH``):

* ``lumina:DIR`` - the LUMINA layout ``Benign|Malign/<ID>/{L,R}_{CC,MLO}.dcm`` with
  ``Benign_Cases.xlsx`` / ``Malign_Cases.xlsx`` (``ID``, ``RIGHT_OR_LEFT``, ``BIRADS``,
  ``BREAST COMPOSITION``, optional ``BREAST``);
* ``csv:FILE`` / ``parquet:FILE`` (or a bare ``.csv``/``.parquet`` path) - the generic table,
  columns documented in :data:`GENERIC_COLUMNS`;
* ``vindr:DIR`` - VinDr-Mammo's ``breast-level_annotations.csv`` and
  ``finding_annotations.csv``, matched to files by image id (the file name stem).

The task rules (:func:`task_labels`) are the one definition used by mammoprep (shard JSON,
manifests) and mammotrain.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import MammoprepError

#: Columns of the generic label table. ``path`` is relative to the table's folder or absolute.
GENERIC_COLUMNS = {
    "path": "image file (required)",
    "patient": "patient identifier (pseudonymised before it is written anywhere)",
    "study": "study identifier (optional; pseudonymised)",
    "laterality": "L / R (optional; the DICOM header is used when absent)",
    "view": "CC / MLO / ... (optional; the DICOM header is used when absent)",
    "pathology": "benign / malignant / empty",
    "birads": "0-6 (4A/4B/4C accepted) / empty",
    "density": "A-D or 1-4 / empty",
    "boxes": "JSON list of [xmin, ymin, xmax, ymax] in original pixels / empty",
}


class LabelError(MammoprepError):
    kind = "bad_labels"


@dataclass
class LabelRow:
    """Labels of one image. ``boxes``: ``[[xmin, ymin, xmax, ymax], ...]`` original pixels."""

    patient: str | None = None
    study: str | None = None
    laterality: str | None = None
    view: str | None = None
    pathology: str | None = None
    birads: str | None = None
    density: str | None = None
    boxes: list = field(default_factory=list)
    source_row: str = ""


@dataclass
class LabelTable:
    """Rows by match key: the resolved file path, or the file stem for id-matched sources."""

    kind: str
    by_path: dict[str, LabelRow] = field(default_factory=dict)
    by_stem: dict[str, LabelRow] = field(default_factory=dict)

    def lookup(self, path: Path) -> LabelRow | None:
        row = self.by_path.get(str(Path(path).resolve()))
        return row if row is not None else self.by_stem.get(Path(path).stem)

    def keys(self) -> set[str]:
        return set(self.by_path) | set(self.by_stem)

    def match_key(self, path: Path) -> str | None:
        p = str(Path(path).resolve())
        if p in self.by_path:
            return p
        return Path(path).stem if Path(path).stem in self.by_stem else None


# ------------------------------------------------------------------------ normalisation

def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() in (
        "", "-", "nan", "None", "NA", "N/A")


def norm_birads(v: Any) -> str | None:
    """'0'..'6' from 4, '4A', 'BI-RADS 4', 4.0; None for '-', blank or unknown."""
    if _blank(v):
        return None
    m = re.search(r"([0-6])", str(v))
    return m.group(1) if m else None


def norm_density(v: Any) -> str | None:
    """'A'..'D' from 'A', 'DENSITY C', 1..4; None for '-' or blank."""
    if _blank(v):
        return None
    s = str(v).strip().upper()
    m = re.search(r"\b([ABCD])\b", s.replace("DENSITY", " "))
    if m:
        return m.group(1)
    m = re.fullmatch(r"([1-4])(\.0)?", s)
    return "ABCD"[int(m.group(1)) - 1] if m else None


def norm_pathology(v: Any) -> str | None:
    if _blank(v):
        return None
    s = str(v).strip().lower()
    if s.startswith(("malig", "cancer")) or s in ("1", "m", "true"):
        return "malignant"
    if s.startswith(("benign", "normal")) or s in ("0", "b", "false"):
        return "benign"
    return None


def norm_laterality(v: Any) -> str | None:
    if _blank(v):
        return None
    s = str(v).strip().upper()
    return {"LEFT": "L", "RIGHT": "R", "L": "L", "R": "R"}.get(s)


def parse_boxes(v: Any, where: str) -> list:
    if _blank(v) or v == "[]":
        return []
    try:
        boxes = json.loads(v) if isinstance(v, str) else list(v)
        boxes = [[float(c) for c in b] for b in boxes]
    except (ValueError, TypeError) as exc:
        raise LabelError(where, f"boxes are not a JSON list of [xmin, ymin, xmax, ymax] ({exc})",
                         tag="column boxes", value=v,
                         hint="write boxes as e.g. [[10, 20, 110, 140]]") from None
    for b in boxes:
        if len(b) != 4 or b[2] <= b[0] or b[3] <= b[1]:
            raise LabelError(where, "a box is not [xmin, ymin, xmax, ymax] with xmax > xmin and "
                             "ymax > ymin", tag="column boxes", value=b)
    return boxes


# ---------------------------------------------------------------------------- task rules

#: Task name -> number of classes. The rules are in :func:`task_labels`.
TASKS = {"diagnosis": 2, "birads2": 2, "birads3": 3, "density": 4}


def task_labels(pathology: str | None, birads: str | None, density: str | None,
                contralateral: bool = False) -> dict[str, int | None]:
    """Class index per task, None where the image is excluded from that task.

    diagnosis: benign 0 / malignant 1; BI-RADS 0 and missing excluded; for malignant
    patients only the malignant breast (``contralateral=True`` excludes the other).
    birads2: 1-3 -> 0, 4-6 -> 1; birads3: 1-2 -> 0, 3-4 -> 1, 5-6 -> 2; BI-RADS 0 and
    missing excluded. density: A-D -> 0-3; BI-RADS 0 included; missing density excluded.
    """
    b = int(birads) if birads is not None else None
    valid_b = b is not None and b > 0
    diag = None
    if valid_b and pathology in ("benign", "malignant") and not contralateral:
        diag = int(pathology == "malignant")
    return {
        "diagnosis": diag,
        "birads2": (int(b >= 4) if valid_b else None),
        "birads3": ((0 if b <= 2 else 1 if b <= 4 else 2) if valid_b else None),
        "density": ("ABCD".index(density) if density in ("A", "B", "C", "D") else None),
    }


# ------------------------------------------------------------------------------ adapters

def load_labels(spec: str) -> LabelTable:
    """Parse ``KIND:PATH`` (or a bare .csv/.parquet path) into a :class:`LabelTable`."""
    kind, _, path = spec.partition(":")
    if not path:
        kind, path = ("csv" if spec.lower().endswith(".csv") else
                      "parquet" if spec.lower().endswith(".parquet") else ""), spec
    loaders = {"lumina": load_lumina, "csv": load_generic, "parquet": load_generic,
               "vindr": load_vindr}
    if kind not in loaders:
        raise LabelError(None, f"unknown label source {spec!r}", tag="--labels", value=spec,
                         hint="use lumina:DIR, csv:FILE, parquet:FILE or vindr:DIR")
    if not Path(path).exists():
        raise LabelError(path, "label source not found", tag="--labels", value=spec)
    return loaders[kind](Path(path))


def _read_xlsx(path: Path) -> list[dict[str, Any]]:
    from openpyxl import load_workbook

    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many types
        raise LabelError(path, f"cannot read the spreadsheet ({exc})") from None
    rows = list(wb.worksheets[0].iter_rows(values_only=True))
    wb.close()
    if not rows:
        return []
    header = [str(h).strip() if h is not None else "" for h in rows[0]]
    return [dict(zip(header, r)) for r in rows[1:] if any(c is not None for c in r)]


def load_lumina(root: Path) -> LabelTable:
    """LUMINA layout. Malign patients: the breast(s) named by RIGHT_OR_LEFT are malignant,
    the other breast is marked contralateral (excluded from diagnosis). Benign: both benign."""
    table = LabelTable("lumina")
    for group, sheet in (("Benign", "Benign_Cases.xlsx"), ("Malign", "Malign_Cases.xlsx")):
        sheet_path = root / sheet
        if not sheet_path.exists():
            raise LabelError(sheet_path, "LUMINA spreadsheet missing", tag="file", value=sheet,
                             hint="lumina:DIR needs Benign_Cases.xlsx and Malign_Cases.xlsx")
        per_patient: dict[str, list[dict]] = {}
        for i, r in enumerate(_read_xlsx(sheet_path), start=2):
            if "ID" not in r:
                raise LabelError(sheet_path, "column ID missing", tag="header row",
                                 value=list(r))
            r["_row"] = f"{sheet}:{i}"
            per_patient.setdefault(str(r["ID"]).strip(), []).append(r)
        for pid, rows in per_patient.items():
            finding = str(rows[0].get("RIGHT_OR_LEFT") or "").strip().upper()
            for lat in ("L", "R"):
                row = _lumina_row_for(rows, lat)
                on_side = finding == "BILATERAL" or (finding[:1] == lat)
                if group == "Malign":
                    pathology = "malignant" if on_side else None
                else:
                    pathology = "benign"
                lab = LabelRow(patient=pid, laterality=lat, pathology=pathology,
                               birads=norm_birads(row.get("BIRADS")),
                               density=norm_density(row.get("BREAST COMPOSITION")),
                               source_row=row["_row"])
                for f in sorted((root / group / pid).glob(f"{lat}_*.dcm")):
                    view = f.stem.split("_", 1)[1].upper()
                    table.by_path[str(f.resolve())] = LabelRow(**{**lab.__dict__, "view": view})
    return table


def _lumina_row_for(rows: list[dict], lat: str) -> dict:
    """The sheet row describing breast ``lat``: a BREAST column if present, else the row whose
    RIGHT_OR_LEFT names that side, else the patient's first row."""
    for r in rows:
        if norm_laterality(r.get("BREAST")) == lat:
            return r
    for r in rows:
        if norm_laterality(r.get("RIGHT_OR_LEFT")) == lat:
            return r
    return rows[0]


def _read_table(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def load_generic(path: Path) -> LabelTable:
    table = LabelTable("generic")
    rows = _read_table(path)
    if rows and "path" not in rows[0]:
        raise LabelError(path, "the label table has no 'path' column", tag="header",
                         value=list(rows[0]), hint=f"columns: {', '.join(GENERIC_COLUMNS)}")
    for i, r in enumerate(rows, start=2):
        where = f"{path}:{i}"
        img = Path(str(r["path"]))
        img = img if img.is_absolute() else (path.parent / img)
        pathology = norm_pathology(r.get("pathology"))
        if not _blank(r.get("pathology")) and pathology is None:
            raise LabelError(where, "unknown pathology", tag="column pathology",
                             value=r.get("pathology"), hint="use benign, malignant or empty")
        table.by_path[str(img.resolve())] = LabelRow(
            patient=None if _blank(r.get("patient")) else str(r["patient"]),
            study=None if _blank(r.get("study")) else str(r["study"]),
            laterality=norm_laterality(r.get("laterality")),
            view=None if _blank(r.get("view")) else str(r["view"]).upper(),
            pathology=pathology, birads=norm_birads(r.get("birads")),
            density=norm_density(r.get("density")), boxes=parse_boxes(r.get("boxes"), where),
            source_row=where)
    return table


def load_vindr(root: Path) -> LabelTable:
    """VinDr-Mammo: breast-level BI-RADS/density per image, finding boxes per image id."""
    table = LabelTable("vindr")
    breast = root / "breast-level_annotations.csv"
    finding = root / "finding_annotations.csv"
    for f in (breast, finding):
        if not f.exists():
            raise LabelError(f, "VinDr-Mammo annotation file missing", tag="file", value=f.name)
    boxes: dict[str, list] = {}
    for r in _read_table(finding):
        if all(not _blank(r.get(k)) for k in ("xmin", "ymin", "xmax", "ymax")):
            boxes.setdefault(r["image_id"], []).append(
                [float(r["xmin"]), float(r["ymin"]), float(r["xmax"]), float(r["ymax"])])
    for i, r in enumerate(_read_table(breast), start=2):
        b = norm_birads(r.get("breast_birads"))
        table.by_stem[str(r["image_id"])] = LabelRow(
            patient=str(r.get("study_id")), study=str(r.get("study_id")),
            laterality=norm_laterality(r.get("laterality")),
            view=str(r.get("view_position") or "").upper() or None,
            pathology=None, birads=b, density=norm_density(r.get("breast_density")),
            boxes=boxes.get(str(r["image_id"]), []), source_row=f"{breast.name}:{i}")
    return table


def unmatched(table: LabelTable, matched: Iterable[str]) -> list[str]:
    """Label keys that no image matched (reported, never fatal)."""
    return sorted(table.keys() - set(matched))
