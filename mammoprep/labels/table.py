"""``csv:FILE`` / ``parquet:FILE`` (or a bare ``.csv`` / ``.parquet`` path) - the generic
label table, one row per image. The schema is :data:`COLUMNS` (README, ``shard --help``).

Column names are matched without regard to case or surrounding spaces; other columns are
ignored. ``path`` is relative to the table's folder (then to the folders given to ``shard``)
or absolute. Values are parsed by :mod:`mammoprep.labels._common`: a value outside the
schema is left out of that row (counted per column, with examples naming the row, in the
shard summary), or with ``--strict-labels`` an error naming the file, the row and the column.

Precedence: where the table gives laterality, view, patient or study, it wins over the DICOM
header; ``shard`` counts and reports every image where the two disagree.

Rules (:data:`~mammoprep.labels._common.GENERIC_RULES`): diagnosis from ``pathology``, BI-RADS
0 excluded (a missing BI-RADS does not exclude); ``birads2``/``birads3`` from BI-RADS 1-6;
density A-D whatever the BI-RADS. Labels are per image: the CC and MLO rows of a breast may
differ (a two-view example needs both views labelled alike).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ._common import (GENERIC_RULES, Adapter, LabelError, LabelRow, LabelTable, is_missing,
                      parse_birads, parse_boxes, parse_density, parse_laterality,
                      parse_pathology, parse_text, parse_view)
from .reading import normalise_columns, read_table

#: column -> (type, accepted values, required?)
COLUMNS: dict[str, tuple[str, str, str]] = {
    "path": ("text", "image file, relative to the table's folder or absolute", "required"),
    "patient": ("text", "patient identifier (pseudonymised before it is written); wins over "
                "(0010,0020)", "optional"),
    "study": ("text", "study identifier (pseudonymised); wins over (0020,000D)", "optional"),
    "laterality": ("text", "L, R, LEFT, RIGHT; wins over (0020,0062)/(0020,0060)", "optional"),
    "view": ("text", "CC, MLO (other views are not stored); wins over (0018,5101)",
             "optional"),
    "pathology": ("text", "benign, malignant, 0 (= benign), 1 (= malignant)", "optional"),
    "birads": ("int/text", "0-6, 4A/4B/4C (= 4), 'BI-RADS 4'", "optional"),
    "density": ("text/int", "A-D, 1-4 (= A-D), 'DENSITY C'", "optional"),
    "boxes": ("JSON text / list", "[[xmin, ymin, xmax, ymax], ...] in original pixels",
              "optional"),
    "split": ("text", "train, training, test (any case): your official split, for "
              "mammotrain --split official", "optional"),
}
MISSING_VALUES = "empty, '-', NA, N/A, null, NaN (any case)"


def describe() -> str:
    """The schema as plain text lines (for ``--help`` and messages)."""
    return "; ".join(f"{c} ({t}, {r}): {v}" for c, (t, v, r) in COLUMNS.items())


#: accepted ``split`` values -> the manifest's ``split`` (``train`` / ``test``)
SPLIT_VALUES = {"train": "train", "training": "train", "test": "test"}


def parse_split(v, where: str = "", column: str = "split") -> str | None:
    """``train`` / ``test`` from the :data:`SPLIT_VALUES` (any case); None when missing."""
    if is_missing(v):
        return None
    s = str(v).strip().lower()
    if s not in SPLIT_VALUES:
        raise LabelError(where, "not an official split", tag=f"column {column}", value=v,
                         hint="use train (or training) or test; leave it empty for none")
    return SPLIT_VALUES[s]


def load(path_text: str, roots: Sequence[Path] = (), strict: bool = False) -> LabelTable:
    path = Path(path_text)
    table = LabelTable("csv" if path.suffix.lower() != ".parquet" else "parquet", GENERIC_RULES,
                       strict=strict)
    rows = [normalise_columns(r) for r in read_table(path)]
    if rows and "path" not in rows[0]:
        raise LabelError(path, "the label table has no 'path' column", tag="header row",
                         value=list(rows[0]), hint=f"columns: {', '.join(COLUMNS)}")
    bases = [path.parent, *(Path(r) for r in roots if Path(r).is_dir())]
    for i, r in enumerate(rows, start=2):
        where = f"{path}:{i}"
        rel = parse_text(r["path"], where, "path")
        if rel is None:
            raise LabelError(where, "empty path", tag="column path", value=r["path"],
                             hint="every row names its image file")
        img = Path(rel)
        if not img.is_absolute():
            img = next((b / img for b in bases if (b / img).exists()), bases[0] / img)
        key = str(img.resolve())
        if key in table.by_path:
            raise LabelError(where, "this image is listed twice (also at "
                             f"{table.by_path[key].source_row})", tag="column path", value=rel,
                             hint="one row per image")
        table.by_path[key] = LabelRow(
            patient=parse_text(r.get("patient"), where, "patient"),
            study=parse_text(r.get("study"), where, "study"),
            laterality=table.value(parse_laterality, r.get("laterality"), where, "laterality"),
            view=table.value(parse_view, r.get("view"), where, "view"),
            pathology=table.value(parse_pathology, r.get("pathology"), where, "pathology"),
            birads=table.value(parse_birads, r.get("birads"), where, "birads"),
            density=table.value(parse_density, r.get("density"), where, "density"),
            boxes=table.value(parse_boxes, r.get("boxes"), where, "boxes") or [],
            split=table.value(parse_split, r.get("split"), where, "split"),
            source_row=where)
    _all_or_none(path, table, "patient")
    return table


def _all_or_none(path: Path, table: LabelTable, field: str) -> None:
    """A column filled for some rows only would mix table ids with header hashes (one
    patient split across folds): refuse it, naming the first row without a value."""
    rows = list(table.by_path.values())
    empty = [r for r in rows if getattr(r, field) is None]
    if empty and len(empty) < len(rows):
        raise LabelError(empty[0].source_row, f"the {field} column is filled for "
                         f"{len(rows) - len(empty)} of {len(rows)} rows", tag=f"column {field}",
                         value="empty",
                         hint=f"fill {field} on every row, or leave the column empty everywhere "
                              "(then the DICOM header is used)")


ADAPTER = Adapter("csv", "csv:FILE", load, GENERIC_RULES,
                  "generic table, one row per image (columns: " + ", ".join(COLUMNS) + ")")
PARQUET_ADAPTER = Adapter("parquet", "parquet:FILE", load, GENERIC_RULES,
                          "the generic table as Parquet")
