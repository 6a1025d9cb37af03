"""``vindr:DIR`` - VinDr-Mammo: ``breast-level_annotations.csv`` (one row per image:
study_id, series_id, image_id, laterality, view_position, breast_birads, breast_density,
split) and ``finding_annotations.csv`` (one row per finding: image_id, xmin, ymin, xmax, ymax,
...). Images are matched by image id (the file name stem).

Semantics: BI-RADS and density per image (``BI-RADS 4``, ``DENSITY C``); no pathology, so no
diagnosis label; boxes from the findings that have coordinates. Rules: the generic ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ._common import (GENERIC_RULES, Adapter, LabelError, LabelRow, LabelTable, is_missing,
                      parse_birads, parse_boxes, parse_density, parse_laterality, parse_text, parse_view,
                      read_table, require_columns)

BREAST_COLUMNS = ("study_id", "image_id", "laterality", "view_position", "breast_birads",
                  "breast_density")


def load(path_text: str, roots: Sequence[Path] = (), strict: bool = False) -> LabelTable:
    root = Path(path_text)
    table = LabelTable("vindr", GENERIC_RULES, strict=strict)
    breast = root / "breast-level_annotations.csv"
    finding = root / "finding_annotations.csv"
    for f in (breast, finding):
        if not f.exists():
            raise LabelError(f, "VinDr-Mammo annotation file missing", tag="file", value=f.name,
                             hint="vindr:DIR needs breast-level_annotations.csv and "
                             "finding_annotations.csv")
    boxes: dict[str, list] = {}
    findings = read_table(finding)
    require_columns(finding, findings, ("image_id", "xmin", "ymin", "xmax", "ymax"),
                    "VinDr-Mammo's finding table (image_id, xmin, ymin, xmax, ymax, ...)")
    for i, r in enumerate(findings, start=2):
        coords = [r.get(k) for k in ("xmin", "ymin", "xmax", "ymax")]
        if all(not is_missing(c) for c in coords):  # numbers, finite, xmax > xmin, ...
            box, = parse_boxes([coords], f"{finding}:{i}", "xmin/ymin/xmax/ymax")
            boxes.setdefault(str(r["image_id"]), []).append(box)
    rows = read_table(breast)
    require_columns(breast, rows, BREAST_COLUMNS, "VinDr-Mammo's breast-level table")
    for i, r in enumerate(rows, start=2):
        where = f"{breast}:{i}"
        study = parse_text(r.get("study_id"), where, "study_id")
        image_id = str(r["image_id"])
        if image_id in table.by_stem:
            raise LabelError(where, "this image is listed twice (also at "
                             f"{table.by_stem[image_id].source_row})", tag="column image_id",
                             value=image_id, hint="one row per image")
        table.by_stem[image_id] = LabelRow(
            patient=study, study=study,
            laterality=parse_laterality(r.get("laterality"), where, "laterality"),
            view=parse_view(r.get("view_position"), where, "view_position"),
            birads=parse_birads(r.get("breast_birads"), where, "breast_birads"),
            density=parse_density(r.get("breast_density"), where, "breast_density"),
            boxes=boxes.get(str(r["image_id"]), []), source_row=where)
    return table


ADAPTER = Adapter("vindr", "vindr:DIR", load, GENERIC_RULES,
                  "VinDr-Mammo breast-level + finding annotations, matched by image id")
