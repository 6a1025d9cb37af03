"""``lumina:DIR`` - the LUMINA dataset as published (``lumina-per-view:DIR``: the same, with
each view's own density row).

Layout::

    DIR/Benign/<ID>/{L,R}_{CC,MLO}.dcm    DIR/Benign_Cases.xlsx
    DIR/Malign/<ID>/{L,R}_{CC,MLO}.dcm    DIR/Malign_Cases.xlsx

Sheets: columns ``ID``, ``RIGHT_OR_LEFT`` (LEFT / RIGHT / BILATERAL: the breast(s) the rows
describe), ``BIRADS`` (0-6, 4A/4B/4C = 4, ``-`` missing; the same on both rows),
``BREAST COMPOSITION`` (1-4 = A-D, ``-`` missing; one per row) and ``MANUFACTOR``
(not used: the vendor comes from the DICOM header). Two rows per patient, **the MLO row
first, then the CC row**.

Semantics (those of the dataset's own loader and paper):

* Patient = class folder and ID (``Benign/8``, ``Malign/8``): the IDs are small integers
  numbered per folder, so ``Benign/8`` and ``Malign/8`` are different people (two patients,
  never one fold group). ``shard`` pseudonymises the pair.
* Only the named breast(s) carry labels, for benign and malignant patients alike (both for
  BILATERAL); pathology is the patient's folder (Benign / Malign). The other breast is
  matched (its patient comes from the sheet) but has no label and enters no task.
* Density (:func:`view_density`), ``lumina:DIR``: as the publisher's loader
  (``density/dataset.py`` of the LUMINA code) assigns it: when both rows have a density,
  **both views get the MLO row's value**; when the MLO row is ``-``, only the CC image is
  labelled (the CC row's value); when the CC row is ``-``, only the MLO image (the MLO
  row's value). ``lumina-per-view:DIR``: each view gets its own row's value (a breast
  whose rows differ then has no two-view density label).
* Rules (:data:`RULES`): diagnosis and the BI-RADS tasks exclude BI-RADS 0 and missing;
  density keeps BI-RADS 0 (and missing BI-RADS).

``-`` and blank BIRADS / BREAST COMPOSITION are missing (documented codes, not errors). A
value outside the legend (BIRADS 7, composition ``E``, RIGHT_OR_LEFT ``BOTH``, a formula) is
left out of its row and counted (:attr:`LabelTable.dropped`; ``--strict-labels``: an error
naming the sheet, row and column): a dropped BIRADS leaves the patient's BI-RADS missing, a
dropped composition counts as ``-``, a dropped RIGHT_OR_LEFT leaves the patient unlabelled.
Sheet rows that do not follow the structure (not two rows, RIGHT_OR_LEFT or BIRADS that
differ between the rows) leave that patient unlabelled and are listed in the table's
warnings.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Sequence

from ._common import (Adapter, LabelError, LabelRow, LabelTable, TaskRules, is_missing,
                      parse_birads, parse_density, parse_text)
from .reading import read_xlsx, require_columns

RULES = TaskRules(
    "lumina", "assessed", True,
    "named breast(s) only; diagnosis and BI-RADS: BI-RADS 0 and missing excluded; density: "
    "as the publisher's loader (both rows given: the MLO row's value on both views; one row "
    "'-': the other view only), whatever the BI-RADS (0 and missing kept)")
RULES_PER_VIEW = TaskRules(
    "lumina-per-view", "assessed", True,
    "named breast(s) only; diagnosis and BI-RADS: BI-RADS 0 and missing excluded; density: "
    "per view (each view its own row), whatever the BI-RADS (0 and missing kept)")

GROUPS = (("Benign", "Benign_Cases.xlsx", "benign"), ("Malign", "Malign_Cases.xlsx",
                                                       "malignant"))
COLUMNS = ("ID", "RIGHT_OR_LEFT", "BIRADS", "BREAST COMPOSITION")
ROW_VIEWS = ("MLO", "CC")  # the published row order
#: Density rules: ``publisher`` (the LUMINA loader's) and ``per-view``.
DENSITY_RULES = ("publisher", "per-view")
_SIDES = {"LEFT": ("L",), "RIGHT": ("R",), "BILATERAL": ("L", "R")}
_FILE = re.compile(r"([LR])_(CC|MLO)", re.IGNORECASE)


def view_density(mlo: str | None, cc: str | None, rule: str = "publisher"
                 ) -> dict[str, str | None]:
    """Density of the MLO and CC images of a named breast from the MLO row's and the CC
    row's values (``'A'``..``'D'``, None = ``-``).

    ``publisher``: both given -> the MLO row's value on both views; one missing -> only the
    other view, with its own row's value. ``per-view``: each view its own row's value."""
    if rule not in DENSITY_RULES:
        raise ValueError(f"density rule {rule!r}: use one of {', '.join(DENSITY_RULES)}")
    if rule == "publisher" and mlo is not None and cc is not None:
        return {"MLO": mlo, "CC": mlo}
    return {"MLO": mlo, "CC": cc}


def _images(folder: Path) -> dict[tuple[str, str], Path]:
    """(laterality, view) -> file for ``{L,R}_{CC,MLO}.dcm`` in one patient folder."""
    out = {}
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            m = _FILE.fullmatch(f.stem)
            if m and f.suffix.lower() == ".dcm":
                out[(m.group(1).upper(), m.group(2).upper())] = f
    return out


def _side(v: Any, where: str = "", column: str = "RIGHT_OR_LEFT") -> str:
    """RIGHT_OR_LEFT -> LEFT / RIGHT / BILATERAL (any case); anything else (blank included)
    is a :class:`LabelError`."""
    s = str(v if v is not None else "").strip().upper()
    if s not in _SIDES:
        raise LabelError(where, "RIGHT_OR_LEFT is not LEFT, RIGHT or BILATERAL",
                         tag=f"column {column}", value=v,
                         hint="fix the cell: it names the breast(s) the rows describe")
    return s


def _patient_labels(rows: list[dict[str, Any]], sheet: str, label: str, table: LabelTable,
                    rule: str
                    ) -> tuple[tuple[str, ...], str | None, dict[str, str | None]] | str:
    """(named lateralities, BI-RADS, density per view) of one patient's rows, or a warning.

    Values outside the legend are dropped through ``table`` (strict: raised)."""
    where = [r["_where"] for r in rows]
    if len(rows) != 2:
        return (f"{sheet}: ID {label!r} has {len(rows)} rows ({', '.join(where)}); "
                "the published sheets have two (MLO, then CC): patient left unlabelled")
    sides = [table.value(_side, r.get("RIGHT_OR_LEFT"), w, "RIGHT_OR_LEFT")
             for r, w in zip(rows, where)]
    birads = [table.value(parse_birads, r.get("BIRADS"), w, "BIRADS")
              for r, w in zip(rows, where)]
    density = [table.value(parse_density, r.get("BREAST COMPOSITION"), w, "BREAST COMPOSITION")
               for r, w in zip(rows, where)]
    if None in sides:
        return (f"{sheet}: ID {label!r}: RIGHT_OR_LEFT is not LEFT, RIGHT or BILATERAL on "
                f"row {where[sides.index(None)]}: patient left unlabelled")
    if sides[0] != sides[1]:
        return (f"{sheet}: ID {label!r}: RIGHT_OR_LEFT differs between rows "
                f"{where[0]} and {where[1]} ({sides[0]} / {sides[1]}): patient left unlabelled")
    dropped = any(b is None and not is_missing(r.get("BIRADS")) for b, r in zip(birads, rows))
    if not dropped and birads[0] != birads[1]:
        return (f"{sheet}: ID {label!r}: BIRADS differs between rows {where[0]} and "
                f"{where[1]} ({birads[0]} / {birads[1]}): patient left unlabelled")
    return (_SIDES[sides[0]], None if dropped else birads[0],
            view_density(density[0], density[1], rule))


def _sheet_patients(sheet_path: Path) -> dict[str, list[dict[str, Any]]]:
    """ID -> the sheet's rows of that patient, in sheet order (``_where`` = ``FILE:ROW``)."""
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
    return per_patient


def load(path_text: str, roots: Sequence[Path] = (), strict: bool = False,
         density: str = "publisher") -> LabelTable:
    """Read both sheets of a LUMINA folder -> one labelled row per image file found.

    density: :data:`DENSITY_RULES` (``publisher``, the default, or ``per-view``)."""
    if density not in DENSITY_RULES:
        raise ValueError(f"density rule {density!r}: use one of {', '.join(DENSITY_RULES)}")
    root = Path(path_text)
    per_view = density == "per-view"
    table = LabelTable("lumina-per-view" if per_view else "lumina",
                       RULES_PER_VIEW if per_view else RULES, strict=strict)
    for group, sheet, pathology in GROUPS:
        sheet_path = root / sheet
        if not sheet_path.exists():
            raise LabelError(sheet_path, "LUMINA spreadsheet missing", tag="file", value=sheet,
                             hint="lumina:DIR needs Benign_Cases.xlsx and Malign_Cases.xlsx")
        for pid, prow in _sheet_patients(sheet_path).items():
            parsed = _patient_labels(prow, sheet, pid, table, density)
            files = _images(root / group / pid)
            if not files:
                table.warnings.append(f"{sheet}: ID {pid!r}: no {group}/{pid}/"
                                      "{L,R}_{CC,MLO}.dcm found")
            if isinstance(parsed, str):
                table.warnings.append(parsed)
                named, birads, dens = (), None, {}
            else:
                named, birads, dens = parsed
            for (lat, view), f in files.items():
                row = LabelRow(patient=f"{group}/{pid}", laterality=lat, view=view,
                               source_row=prow[ROW_VIEWS.index(view)]["_where"]
                               if len(prow) == 2 else prow[0]["_where"])
                if lat in named:
                    row.pathology, row.birads, row.density = pathology, birads, dens[view]
                table.by_path[str(f.resolve())] = row
    return table


ADAPTER = Adapter("lumina", "lumina:DIR", load, RULES,
                  "LUMINA: Benign|Malign/<ID>/{L,R}_{CC,MLO}.dcm + Benign_Cases.xlsx / "
                  "Malign_Cases.xlsx (two rows per patient: MLO, CC); density as the "
                  "publisher's loader")
PER_VIEW_ADAPTER = Adapter("lumina-per-view", "lumina-per-view:DIR",
                           functools.partial(load, density="per-view"), RULES_PER_VIEW,
                           "LUMINA as lumina:DIR, density per view (each view its own row)")
