"""``lumina:DIR`` - the LUMINA dataset as published.

Layout::

    DIR/Benign/<ID>/{L,R}_{CC,MLO}.dcm    DIR/Benign_Cases.xlsx
    DIR/Malign/<ID>/{L,R}_{CC,MLO}.dcm    DIR/Malign_Cases.xlsx

Sheets: columns ``ID``, ``RIGHT_OR_LEFT`` (LEFT / RIGHT / BILATERAL: the breast(s) the rows
describe), ``BIRADS`` (0-6, 4A/4B/4C = 4, ``-`` missing; the same on both rows),
``BREAST COMPOSITION`` (1-4 = A-D, ``-`` missing; per row = per view) and ``MANUFACTOR``
(not used: the vendor comes from the DICOM header). Two rows per patient, **the MLO row
first, then the CC row**.

Semantics (those of the dataset's own loader and paper):

* Only the named breast(s) carry labels, for benign and malignant patients alike (both for
  BILATERAL); pathology is the patient's folder (Benign / Malign). The other breast is
  matched (its patient id comes from the sheet) but has no label and enters no task.
* Density per view: the MLO image gets the MLO row's value, the CC image the CC row's; a
  ``-`` leaves that image unlabelled (so with the MLO row ``-`` only the CC image is
  labelled, and the reverse).
* Rules (:data:`RULES`): diagnosis and the BI-RADS tasks exclude BI-RADS 0 and missing;
  density keeps BI-RADS 0 (and missing BI-RADS).

Sheet rows that do not follow this structure (not two rows, RIGHT_OR_LEFT or BIRADS that
differ between the rows) leave that patient unlabelled and are listed in the table's
warnings; values that cannot be parsed are errors naming the sheet, row and column.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from ._common import (Adapter, LabelError, LabelRow, LabelTable, TaskRules, parse_birads,
                      parse_density, parse_text, read_xlsx, require_columns)

RULES = TaskRules(
    "lumina", "assessed", True,
    "named breast(s) only; diagnosis and BI-RADS: BI-RADS 0 and missing excluded; density: "
    "per view, whatever the BI-RADS (0 and missing kept)")

GROUPS = (("Benign", "Benign_Cases.xlsx", "benign"), ("Malign", "Malign_Cases.xlsx",
                                                       "malignant"))
COLUMNS = ("ID", "RIGHT_OR_LEFT", "BIRADS", "BREAST COMPOSITION")
ROW_VIEWS = ("MLO", "CC")  # the published row order
_SIDES = {"LEFT": ("L",), "RIGHT": ("R",), "BILATERAL": ("L", "R")}
_FILE = re.compile(r"([LR])_(CC|MLO)", re.IGNORECASE)


def _images(folder: Path) -> dict[tuple[str, str], Path]:
    """(laterality, view) -> file for ``{L,R}_{CC,MLO}.dcm`` in one patient folder."""
    out = {}
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            m = _FILE.fullmatch(f.stem)
            if m and f.suffix.lower() == ".dcm":
                out[(m.group(1).upper(), m.group(2).upper())] = f
    return out


def _patient_labels(rows: list[dict[str, Any]], sheet: str
                    ) -> tuple[tuple[str, ...], str | None, dict[str, str | None]] | str:
    """(named lateralities, BI-RADS, density per view) of one patient's rows, or a warning."""
    where = [r["_where"] for r in rows]
    if len(rows) != 2:
        return (f"{sheet}: ID {rows[0]['ID']!r} has {len(rows)} rows ({', '.join(where)}); "
                "the published sheets have two (MLO, then CC): patient left unlabelled")
    sides = [str(r.get("RIGHT_OR_LEFT") or "").strip().upper() for r in rows]
    for side, w in zip(sides, where):
        if side not in _SIDES:
            raise LabelError(w, "RIGHT_OR_LEFT is not LEFT, RIGHT or BILATERAL",
                             tag="column RIGHT_OR_LEFT", value=side,
                             hint="fix the cell: it names the breast(s) the rows describe")
    birads = [parse_birads(r.get("BIRADS"), w, "BIRADS") for r, w in zip(rows, where)]
    density = {v: parse_density(r.get("BREAST COMPOSITION"), w, "BREAST COMPOSITION")
               for v, r, w in zip(ROW_VIEWS, rows, where)}
    if sides[0] != sides[1]:
        return (f"{sheet}: ID {rows[0]['ID']!r}: RIGHT_OR_LEFT differs between rows "
                f"{where[0]} and {where[1]} ({sides[0]} / {sides[1]}): patient left unlabelled")
    if birads[0] != birads[1]:
        return (f"{sheet}: ID {rows[0]['ID']!r}: BIRADS differs between rows {where[0]} and "
                f"{where[1]} ({birads[0]} / {birads[1]}): patient left unlabelled")
    return _SIDES[sides[0]], birads[0], density


def load(path_text: str, roots: Sequence[Path] = (), strict: bool = False) -> LabelTable:
    """Read both sheets of a LUMINA folder -> one labelled row per image file found."""
    root = Path(path_text)
    table = LabelTable("lumina", RULES, strict=strict)
    for group, sheet, pathology in GROUPS:
        sheet_path = root / sheet
        if not sheet_path.exists():
            raise LabelError(sheet_path, "LUMINA spreadsheet missing", tag="file", value=sheet,
                             hint="lumina:DIR needs Benign_Cases.xlsx and Malign_Cases.xlsx")
        rows = read_xlsx(sheet_path)
        require_columns(sheet_path, rows, COLUMNS, "the published sheets have ID, "
                        "RIGHT_OR_LEFT, BIRADS, BREAST COMPOSITION, MANUFACTOR")
        per_patient: dict[str, list[dict]] = {}
        for i, r in enumerate(rows, start=2):
            r["_where"] = f"{sheet_path}:{i}"
            pid = parse_text(r.get("ID"), r["_where"], "ID")
            if pid is None:
                raise LabelError(r["_where"], "row without ID", tag="column ID", value=r.get("ID"),
                                 hint="every row needs the patient folder name in ID")
            per_patient.setdefault(pid, []).append(r)
        for pid, prow in per_patient.items():
            parsed = _patient_labels(prow, sheet)
            files = _images(root / group / pid)
            if not files:
                table.warnings.append(f"{sheet}: ID {pid!r}: no {group}/{pid}/"
                                      "{L,R}_{CC,MLO}.dcm found")
            if isinstance(parsed, str):
                table.warnings.append(parsed)
                named, birads, density = (), None, {}
            else:
                named, birads, density = parsed
            for (lat, view), f in files.items():
                row = LabelRow(patient=pid, laterality=lat, view=view,
                               source_row=prow[ROW_VIEWS.index(view)]["_where"]
                               if len(prow) == 2 else prow[0]["_where"])
                if lat in named:
                    row.pathology, row.birads, row.density = pathology, birads, density[view]
                table.by_path[str(f.resolve())] = row
    return table


ADAPTER = Adapter("lumina", "lumina:DIR", load, RULES,
                  "LUMINA: Benign|Malign/<ID>/{L,R}_{CC,MLO}.dcm + Benign_Cases.xlsx / "
                  "Malign_Cases.xlsx (two rows per patient: MLO, CC)")
