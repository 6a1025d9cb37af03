"""``vindr:DIR`` - VinDr-Mammo as published on PhysioNet.

Layout::

    DIR/breast-level_annotations.csv   one row per image: study_id, series_id, image_id,
                                       laterality, view_position, height, width,
                                       breast_birads, breast_density, split
    DIR/finding_annotations.csv        one row per finding: image_id, study_id, series_id,
                                       laterality, view_position, height, width,
                                       breast_birads, breast_density, finding_categories,
                                       finding_birads, xmin, ymin, xmax, ymax, split
    DIR/metadata.csv                   DICOM header extract (not used)
    DIR/images/<study_id>/<image_id>.dicom

Images are matched by image id (the file name stem); ``shard DIR/images`` finds the
``.dicom`` files (:data:`mammoprep.io.dicom.DICOM_SUFFIXES`).

Semantics:

* patient = study = ``study_id`` (VinDr publishes no patient id: one study per patient);
* BI-RADS and density per image (``BI-RADS 4``, ``DENSITY C``); no pathology, so no
  diagnosis label; rules: the generic ones;
* ``split``: the publisher's official split, ``training`` -> ``train``, ``test`` -> ``test``
  (:attr:`LabelRow.split`, the manifest's ``split`` column);
* boxes: one per finding row whose ``finding_categories`` (a Python-list string, e.g.
  ``['Focal Asymmetry', 'Mass']``) names a lesion category (:data:`LESION_CATEGORIES`):
  Mass, Suspicious Calcification, Architectural Distortion, Asymmetry, Focal Asymmetry, the
  localised abnormalities a reader is asked to find and biopsy (the lesions the
  detection task is about). The publisher's other categories (:data:`CATEGORIES`) are not
  lesions to detect: Global Asymmetry spans a whole quadrant or breast (a density
  pattern, not a region), Suspicious Lymph Node is axillary anatomy, Skin Thickening, Skin
  Retraction and Nipple Retraction are signs at the skin line, Other is unspecified, No
  Finding has no box. Their boxes are not stored and are counted per category in a table
  warning.

Values outside the legend are left out of their row and counted (:attr:`LabelTable.dropped`,
``--strict-labels``: an error naming the file, row and column): a BI-RADS, density,
laterality, view or split value, a category string no legend has (``finding_categories``),
a finding with some but not all of xmin/ymin/xmax/ymax, or a box that is not
[xmin, ymin, xmax, ymax] with xmax > xmin and ymax > ymin.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from typing import Any, Collection, Sequence

from ._common import (GENERIC_RULES, Adapter, LabelError, LabelRow, LabelTable, is_missing,
                      parse_birads, parse_boxes, parse_density, parse_laterality, parse_text,
                      parse_view)
from .reading import read_table, require_columns

BREAST_COLUMNS = ("study_id", "image_id", "laterality", "view_position", "breast_birads",
                  "breast_density")
FINDING_COLUMNS = ("image_id", "finding_categories", "xmin", "ymin", "xmax", "ymax")
COORDS = ("xmin", "ymin", "xmax", "ymax")

#: The categories a box is stored for (see the module docstring).
LESION_CATEGORIES = frozenset({"Mass", "Suspicious Calcification", "Architectural Distortion",
                               "Asymmetry", "Focal Asymmetry"})
#: Every category of the publisher's ``finding_categories`` legend.
CATEGORIES = LESION_CATEGORIES | {"Global Asymmetry", "Suspicious Lymph Node",
                                  "Skin Thickening", "Nipple Retraction", "Skin Retraction",
                                  "Other", "No Finding"}
_CANONICAL = {c.lower(): c for c in CATEGORIES}
#: The publisher's split values -> ours.
SPLITS = {"training": "train", "test": "test"}


def _category(v: Any, where: str = "", column: str = "finding_categories") -> str:
    """One category string -> its published spelling (any case); LabelError otherwise."""
    c = _CANONICAL.get(str(v).strip().lower())
    if c is None:
        raise LabelError(where, "not a VinDr-Mammo finding category", tag=f"column {column}",
                         value=v, hint=f"categories: {', '.join(sorted(CATEGORIES))}")
    return c


def _category_list(v: Any, where: str = "", column: str = "finding_categories") -> list:
    """``"['Focal Asymmetry', 'Mass']"`` -> the strings (a bare ``Mass`` -> ``['Mass']``)."""
    if is_missing(v):
        return []
    s = str(v).strip()
    if not s.startswith("["):
        return [s]
    try:
        items = ast.literal_eval(s)
    except (ValueError, SyntaxError):
        items = None
    if not isinstance(items, list) or not all(isinstance(c, str) for c in items):
        raise LabelError(where, "finding_categories is not a list of category names",
                         tag=f"column {column}", value=v,
                         hint="write it as published, e.g. ['Mass'] or ['No Finding']")
    return items


def _split(v: Any, where: str = "", column: str = "split") -> str | None:
    """``training`` -> ``train``, ``test`` -> ``test``; None when missing."""
    if is_missing(v):
        return None
    s = SPLITS.get(str(v).strip().lower())
    if s is None:
        raise LabelError(where, "not a VinDr-Mammo split", tag=f"column {column}", value=v,
                         hint="the published splits are 'training' and 'test'")
    return s


def _box(coords: list, where: str = "", column: str = "xmin/ymin/xmax/ymax") -> list | None:
    """The four coordinates -> one box; None when all are missing; LabelError when only
    some are, or the box is not [xmin, ymin, xmax, ymax] with positive size."""
    missing = [is_missing(c) for c in coords]
    if all(missing):
        return None
    if any(missing):
        raise LabelError(where, "a finding with partial coordinates", tag=f"column {column}",
                         value=coords, hint="give all of xmin, ymin, xmax, ymax or none")
    box, = parse_boxes([coords], where, column)
    return box


def _findings(path: Path, table: LabelTable, lesions: Collection[str]) -> dict[str, list]:
    """image id -> lesion boxes from the finding table; the boxes of other categories are
    counted in a table warning, values no legend has in ``table.dropped``."""
    rows = read_table(path)
    require_columns(path, rows, FINDING_COLUMNS,
                    "VinDr-Mammo's finding table (image_id, ..., finding_categories, ..., "
                    "xmin, ymin, xmax, ymax, split)")
    boxes: dict[str, list] = {}
    stored: Counter = Counter()   # category -> lesion boxes (a box may name two)
    skipped: Counter = Counter()  # category -> boxes not stored
    n_stored = n_skipped = 0
    for i, r in enumerate(rows, start=2):
        where = f"{path}:{i}"
        names = table.value(_category_list, r.get("finding_categories"), where,
                            "finding_categories") or []
        cats = [c for c in (table.value(_category, n, where, "finding_categories")
                            for n in names) if c is not None]
        box = table.value(_box, [r.get(k) for k in COORDS], where, "xmin/ymin/xmax/ymax")
        if box is None:
            continue
        if any(c in lesions for c in cats):
            boxes.setdefault(str(r["image_id"]).strip(), []).append(box)
            n_stored += 1
            stored.update(c for c in cats if c in lesions)
        else:
            n_skipped += 1
            skipped.update(cats or ["unknown category"])
    if n_skipped:
        table.warnings.append(
            f"{path.name}: {n_skipped} finding box(es) not stored, their "
            f"categories are not lesions to detect ({_counts(skipped)}); lesion boxes stored: "
            f"{n_stored} ({_counts(stored) or 'none'})")
    return boxes


def _counts(c: Counter) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(c.items()))


def load(path_text: str, roots: Sequence[Path] = (), strict: bool = False,
         lesions: Collection[str] = LESION_CATEGORIES) -> LabelTable:
    """Read a VinDr-Mammo folder -> one labelled row per image id (``by_stem``).

    lesions: the categories whose findings become boxes (default
    :data:`LESION_CATEGORIES`)."""
    root = Path(path_text)
    table = LabelTable("vindr", GENERIC_RULES, strict=strict)
    breast = root / "breast-level_annotations.csv"
    finding = root / "finding_annotations.csv"
    for f in (breast, finding):
        if not f.exists():
            raise LabelError(f, "VinDr-Mammo annotation file missing", tag="file", value=f.name,
                             hint="vindr:DIR needs breast-level_annotations.csv and "
                             "finding_annotations.csv (the PhysioNet download's top folder)")
    boxes = _findings(finding, table, lesions)
    rows = read_table(breast)
    require_columns(breast, rows, BREAST_COLUMNS, "VinDr-Mammo's breast-level table")
    for i, r in enumerate(rows, start=2):
        where = f"{breast}:{i}"
        study = parse_text(r.get("study_id"), where, "study_id")
        image_id = str(r["image_id"]).strip()
        if image_id in table.by_stem:
            raise LabelError(where, "this image is listed twice (also at "
                             f"{table.by_stem[image_id].source_row})", tag="column image_id",
                             value=image_id, hint="one row per image")
        table.by_stem[image_id] = LabelRow(
            patient=study, study=study,
            laterality=table.value(parse_laterality, r.get("laterality"), where, "laterality"),
            view=table.value(parse_view, r.get("view_position"), where, "view_position"),
            birads=table.value(parse_birads, r.get("breast_birads"), where, "breast_birads"),
            density=table.value(parse_density, r.get("breast_density"), where,
                                "breast_density"),
            split=table.value(_split, r.get("split"), where, "split"),
            boxes=boxes.get(image_id, []), source_row=where)
    return table


ADAPTER = Adapter("vindr", "vindr:DIR", load, GENERIC_RULES,
                  "VinDr-Mammo (PhysioNet): breast-level + finding annotations, matched by "
                  "image id; lesion boxes only; official split kept")
