"""``rsna:CSV`` - the RSNA Screening Mammography Breast Cancer Detection table (``train.csv``).

Columns: ``site_id, patient_id, image_id, laterality, view, age, cancer, biopsy, invasive,
BIRADS, implant, density, machine_id, difficult_negative_case``; one row per image. Images
are ``<patient_id>/<image_id>.dcm`` under the folder given to ``shard`` (``train_images``);
they are matched by those two path parts, wherever that folder is. The headers carry no View
Position: laterality and view come from the table.

Semantics (:data:`RULES`):

* diagnosis: ``cancer`` of the row (0 = benign/negative, 1 = malignant), whatever the
  BI-RADS (a screening recall is part of what the task is about);
* BI-RADS: the competition's data description codes ``BIRADS`` as ``0`` (the breast
  required follow-up), ``1`` (rated negative for cancer) and ``2`` (rated normal); it is
  empty for many rows (missing). They are kept as the raw ``birads`` value (0/1/2) but feed
  **no** BI-RADS task: every coded value falls in the low-risk class of ``birads2`` and
  ``birads3``, so a classifier would see one class;
* density: ``A``-``D``, empty = missing.

Views: ``CC`` and ``MLO`` are stored; the archive's other views (``AT``, ``LM``, ``ML``,
``LMO``) are skipped by ``shard`` (counted in its summary, not rejects).

A value outside this legend (``cancer`` 2, ``BIRADS`` 5, ...) leaves that one value of the
row out, counted per column in the shard summary (``--strict-labels``: an error).

Other columns (age, biopsy, invasive, implant, machine, difficult negative) are not used.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from ._common import (Adapter, LabelError, LabelRow, LabelTable, TaskRules, is_missing,
                      parse_birads, parse_density, parse_laterality, parse_text, parse_view)
from .reading import read_table, require_columns

RULES = TaskRules(
    "rsna", "any", False,
    "diagnosis: cancer 0/1 (any BI-RADS); BIRADS (0 follow-up, 1 negative, 2 normal) kept raw, "
    "no BI-RADS task; density A-D")

COLUMNS = ("patient_id", "image_id", "laterality", "view", "cancer")


def _cancer(v, where: str, column: str = "cancer") -> str | None:
    if is_missing(v):
        return None
    s = re.sub(r"^([01])\.0*$", r"\1", parse_text(v, where, "cancer"))  # 1.0: re-saved
    if s not in ("0", "1"):
        raise LabelError(where, "cancer is not 0 or 1", tag="column cancer", value=v,
                         hint="RSNA's cancer column is 0 (no cancer) or 1 (cancer)")
    return "malignant" if s == "1" else "benign"


def _birads(v, where: str, column: str = "BIRADS") -> str | None:
    b = parse_birads(v, where, "BIRADS")
    if b is not None and b not in ("0", "1", "2"):
        raise LabelError(where, "RSNA codes BIRADS as 0 (follow-up), 1 (negative) or 2 "
                         "(normal)",
                         tag="column BIRADS", value=v, hint="is this an RSNA train.csv?")
    return b


def load(path_text: str, roots: Sequence[Path] = (), strict: bool = False) -> LabelTable:
    path = Path(path_text)
    rows = read_table(path)
    require_columns(path, rows, COLUMNS, "an RSNA train.csv has site_id, patient_id, image_id, "
                    "laterality, view, age, cancer, ..., BIRADS, ..., density, ...")
    table = LabelTable("rsna", RULES, strict=strict)
    for i, r in enumerate(rows, start=2):
        where = f"{path}:{i}"
        patient = parse_text(r["patient_id"], where, "patient_id")
        image = parse_text(r["image_id"], where, "image_id")
        if patient is None or image is None:
            raise LabelError(where, "patient_id and image_id are required",
                             tag="column patient_id/image_id", value=(patient, image))
        if f"{patient}/{image}" in table.by_tail:
            raise LabelError(where, "this image is listed twice (also at "
                             f"{table.by_tail[f'{patient}/{image}'].source_row})",
                             tag="column image_id", value=image, hint="one row per image")
        table.by_tail[f"{patient}/{image}"] = LabelRow(
            patient=patient,
            laterality=table.value(parse_laterality, r["laterality"], where, "laterality"),
            view=table.value(parse_view, r["view"], where, "view"),
            pathology=table.value(_cancer, r["cancer"], where, "cancer"),
            birads=table.value(_birads, r.get("BIRADS"), where, "BIRADS"),
            density=table.value(parse_density, r.get("density"), where, "density"),
            source_row=where)
    return table


ADAPTER = Adapter("rsna", "rsna:CSV", load, RULES,
                  "RSNA screening train.csv; images <patient_id>/<image_id>.dcm")
