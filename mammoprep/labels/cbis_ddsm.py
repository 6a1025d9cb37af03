"""``cbis-ddsm:CSV[,CSV...]`` - the CBIS-DDSM mass and calcification description tables.

Give one or more of ``mass_case_description_{train,test}_set.csv`` and
``calc_case_description_{train,test}_set.csv``, comma-separated, or a folder holding them.
Columns as published (one row per abnormality): ``patient_id``, ``breast_density`` (mass
tables) or ``breast density`` (calcification tables), ``left or right breast``, ``image
view``, ``abnormality id``, ``abnormality type``, ..., ``assessment`` (BI-RADS 0-5),
``pathology`` (MALIGNANT / BENIGN / BENIGN_WITHOUT_CALLBACK), ``subtlety``, ``image file
path``, ``cropped image file path``, ``ROI mask file path``.

Matching, whatever the layout (:mod:`.cbis_index`): each path ``CASE/STUDY_UID/SERIES_UID/
000000.dcm`` names a series by (0010,0020) Patient ID = ``CASE``, (0020,000D) and (0020,000E);
the headers under the folders given to ``shard`` are read once (no pixel data) and the files
with that triple match: the published relative layout, the NBIA Data Retriever's
(``CBIS-DDSM/CASE/07-20-2016-DDSM-74994/1.000000-full mammogram images-24515/1-1.dcm``) or
any flat copy with other file names. ``base / path`` (the folders given to ``shard``, then
the tables' folder) matches too where it exists. The files of ``cropped image file path``
and ``ROI mask file path`` (found the same way) are skipped by ``shard`` (not mammograms).

Values: cells are stripped (the published crop paths end in a line break); a value no legend
has drops that value only, counted in :attr:`LabelTable.dropped` (``--strict-labels``:
an error); a row without patient_id, side or image path is left out, counted; ``breast
density`` 0 (in the calcification tables, per third-party audits) is no density (a warning
per table), never an error. Split: ``*_train_set.csv`` -> ``train``, ``*_test_set.csv`` ->
``test`` (else ``Training`` / ``Test`` in the case folder).

Semantics (:data:`RULES`), per breast (patient_id + side, both views):

* pathology: malignant if any abnormality of the breast is MALIGNANT, else benign
  (BENIGN_WITHOUT_CALLBACK is benign); diagnosis uses it whatever the assessment
  (pathology is biopsy-proven);
* BI-RADS: the highest ``assessment`` of the breast's abnormalities; BI-RADS tasks as usual
  (0 excluded);
* density: the image's ``breast density`` (1-4 = A-D);
* boxes: per image, the bounding box of the non-zero pixels of each abnormality's ROI mask
  (a DICOM), in image pixels, exclusive ends. Crop and mask share one series and the two
  columns are known to be swapped: they are told apart by content, never by name or column
  (the mask is the binary file of the image's size, anything else the crop). An
  abnormality whose ROI files hold no such mask gives no box and a warning. No ROI files:
  no boxes.
* patient and study: ``patient_id`` (CBIS-DDSM has one exam per patient; the headers carry
  one study per image).
* one view in both tables: a breast with masses and calcifications ships its full
  mammogram once per table (``Mass-..._LEFT_CC`` and ``Calc-..._LEFT_CC``, two files).
  Where the copies have the same size, each copy's labels carry the boxes of both
  tables (the breast's pathology and BI-RADS already span both); ``shard`` then keeps one
  copy (the other is a ``duplicate_view`` reject) without losing a lesion. Copies of
  different sizes keep their own boxes, with a warning.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from ._common import (Adapter, LabelError, LabelRow, LabelTable, TaskRules, _integer,
                      is_missing, parse_birads, parse_density, parse_laterality,
                      parse_pathology, parse_text, parse_view)
from .reading import read_table, require_columns
from .cbis_index import HeaderIndex, clean_path, path_triple, roi_boxes

RULES = TaskRules(
    "cbis-ddsm", "any", True,
    "per breast: malignant if any abnormality is; BI-RADS = highest assessment (0 excluded "
    "from BI-RADS tasks); density per image; boxes from ROI masks")

COLUMNS = ("patient_id", "left or right breast", "image view", "assessment", "pathology",
           "image file path")
DENSITY_COLUMNS = ("breast_density", "breast density")
#: The ``dropped`` entry of rows left out for lack of one of these values.
REQUIRED = "patient_id / left or right breast / image file path"


def _tables(path_text: str) -> list[Path]:
    parts = [Path(p.strip()) for p in path_text.split(",") if p.strip()]
    out: list[Path] = []
    for p in parts:
        if p.is_dir():
            found = sorted(p.glob("*case_description*.csv"))
            if not found:
                raise LabelError(p, "no *case_description*.csv in this folder",
                                 tag="--labels", value=path_text,
                                 hint="give the CBIS-DDSM description CSVs")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise LabelError(p, "CBIS-DDSM table not found", tag="--labels", value=path_text)
    return out


def _split(table_path: Path, case: str) -> tuple[str | None, str | None]:
    """(split from the table's name, split from the case folder): ``*_train_set`` /
    ``Mass-Training_...`` -> ``train``, ``*_test_set`` / ``Calc-Test_...`` -> ``test``."""
    m = re.search(r"_(train|test)_set$", table_path.stem.lower())
    c = re.match(r"(?:mass|calc)-(training|test)_", case.lower())
    return (m.group(1) if m else None,
            ("train" if c.group(1) == "training" else "test") if c else None)


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Cells without surrounding whitespace or line breaks (``"...000000.dcm\\n"``)."""
    return {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()}


def _density_zero(v: Any) -> bool:
    """``breast density`` 0: in the calcification tables per third-party audits (e.g.
    P_01743, RIGHT CC and MLO); no density, never an error (not even when strict)."""
    return not is_missing(v) and _integer(v) == 0


def _density(table: LabelTable, v: Any, where: str, column: str | None) -> str | None:
    """``breast density`` 1-4 -> A-D; 0 -> None (:func:`_density_zero`, counted by
    :func:`_read_rows`); any other value through ``table.value``."""
    if column is None or _density_zero(v):
        return None
    return table.value(parse_density, v, where, column)


def _parse_row(r: dict[str, Any], where: str, dcol: str | None, table: LabelTable,
               table_path: Path) -> dict[str, Any] | None:
    """One table row -> a record (parsed values in ``_`` keys), or None (the row is left
    out, counted) when it lacks its patient_id, side or image file path."""
    p = table.value(parse_text, r["patient_id"], where, "patient_id")
    lat = table.value(parse_laterality, r["left or right breast"], where,
                      "left or right breast")
    image = clean_path(r["image file path"])
    if p is None or lat is None or not image:
        table.drop(REQUIRED, where, (r["patient_id"], r["left or right breast"], image),
                   "required value missing: row left out")
        return None
    by_name, by_case = _split(table_path, (path_triple(image) or (image.split("/")[0],))[0])
    if by_name and by_case and by_name != by_case:
        table.warnings.append(f"{where}: table {table_path.name} is the {by_name} set but the "
                              f"image's case folder says {by_case}: split {by_name} used")
    return {**r, "_where": where, "_patient": p, "_lat": lat, "_image": image,
            "_split": by_name or by_case,
            "_view": table.value(parse_view, r["image view"], where, "image view"),
            "_pathology": table.value(parse_pathology, r["pathology"], where, "pathology"),
            "_birads": table.value(parse_birads, r["assessment"], where, "assessment"),
            "_density": _density(table, r.get(dcol), where, dcol)}


def _read_rows(path: Path, table: LabelTable, roots: Sequence[Path]) -> list[dict[str, Any]]:
    rows = read_table(path)
    require_columns(path, rows, COLUMNS, "CBIS-DDSM description tables have patient_id, "
                    "breast_density / breast density, left or right breast, image view, "
                    "..., assessment, pathology, ..., image file path, ...")
    dcol = next((c for c in DENSITY_COLUMNS if rows and c in rows[0]), None)
    bases = [*(Path(r) for r in roots if Path(r).is_dir()), path.parent]
    out, zeros = [], []
    for i, r in enumerate(rows, start=2):
        r = _clean(r)
        if dcol and _density_zero(r.get(dcol)):
            zeros.append(str(i))
        rec = _parse_row(r, f"{path}:{i}", dcol, table, path)
        if rec is not None:
            out.append({**rec, "_bases": bases})
    if zeros:
        table.warnings.append(
            f"{path.name}: {len(zeros)} row(s) with {dcol} 0 (row(s) {', '.join(zeros[:5])}"
            f"{', ...' if len(zeros) > 5 else ''}; a known quirk of the published tables, "
            "reported by third-party audits): their images have no density label")
    return out


def _roi_files(rec: dict[str, Any], index: HeaderIndex, table: LabelTable) -> list[Path]:
    """The crop and mask files of one abnormality (by header or relative path), all
    recorded in ``table.auxiliary`` (not stored by ``shard``)."""
    found: list[Path] = []
    for col in ("ROI mask file path", "cropped image file path"):
        rel = clean_path(rec.get(col))
        if not rel:
            continue
        table.auxiliary.add(str((rec["_bases"][0] / rel).resolve()))
        found += [p for p in index.locate(rel, rec["_bases"]) if p not in found]
    table.auxiliary.update(str(p) for p in found)
    return found


def _names_roi(rec: dict[str, Any]) -> bool:
    return any(clean_path(rec.get(c)) for c in ("ROI mask file path", "cropped image file path"))


def _per_breast(recs: list[dict[str, Any]]) -> dict[tuple[str, str], tuple]:
    """(patient, side) -> (pathology: malignant if any abnormality is, highest BI-RADS)."""
    breasts: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for x in recs:
        breasts.setdefault((x["_patient"], x["_lat"]), []).append(x)
    out = {}
    for k, rs in breasts.items():
        paths = {x["_pathology"] for x in rs}
        assessed = [int(x["_birads"]) for x in rs if x["_birads"] is not None]
        out[k] = ("malignant" if "malignant" in paths else
                  "benign" if "benign" in paths else None,
                  str(max(assessed)) if assessed else None)
    return out


def _image_row(image: str, recs: list[dict[str, Any]], breast: tuple, index: HeaderIndex,
               table: LabelTable, cache: dict, no_roi: list[str]) -> LabelRow:
    """The labels of one full mammogram; boxes from its rows' ROI masks. ``no_roi``
    (filled in): rows of a found image whose ROI files were found neither way."""
    first = recs[0]
    densities = {x["_density"] for x in recs}
    if len(densities) > 1:
        table.warnings.append(f"{first['_where']}: breast density differs between the rows "
                              f"of {Path(image).name} ({sorted(map(str, densities))}): "
                              "density left missing")
    splits = {x["_split"] for x in recs}
    shape = index.shape(Path(image)) if Path(image).exists() else None
    boxes: list = []
    for x in recs:
        found, why = roi_boxes(x["_roi"], shape, index, cache)
        boxes += [b for b in found if b not in boxes]
        if not found and why:
            table.warnings.append(f"{x['_where']}: no box for {Path(image).name}: no binary "
                                  "mask of the image's size among its ROI files: "
                                  + "; ".join(why))
        elif not x["_roi"] and shape is not None and _names_roi(x):
            no_roi.append(x["_where"])
    return LabelRow(
        patient=first["_patient"], study=first["_patient"], laterality=first["_lat"],
        view=first["_view"], pathology=breast[0], birads=breast[1],
        density=densities.pop() if len(densities) == 1 else None, boxes=boxes,
        source_row=first["_where"], split=splits.pop() if len(splits) == 1 else None)


def load(path_text: str, roots: Sequence[Path] = (), strict: bool = False) -> LabelTable:
    tables = _tables(path_text)
    table = LabelTable("cbis-ddsm", RULES, strict=strict)
    index = HeaderIndex.scan(roots)  # header only, once: matching whatever the layout
    recs = [rec for path in tables for rec in _read_rows(path, table, roots)]
    images: dict[str, list[dict[str, Any]]] = {}
    for rec in recs:
        rec["_roi"] = _roi_files(rec, index, table)
        files = index.locate(rec["_image"], rec["_bases"])
        for f in files or [(rec["_bases"][0] / rec["_image"]).resolve()]:  # else: unmatched
            images.setdefault(str(f), []).append(rec)
    for f in images:
        table.auxiliary.discard(f)  # a full mammogram is never skipped
    per_breast = _per_breast(recs)
    cache: dict = {}
    no_roi: list[str] = []
    for image, rs in images.items():
        breast = per_breast[(rs[0]["_patient"], rs[0]["_lat"])]
        table.by_path[image] = _image_row(image, rs, breast, index, table, cache, no_roi)
    if no_roi:
        table.warnings.append(
            f"{len(no_roi)} abnormalities of images found have no ROI file under IN, neither by "
            "header ((0010,0020) Patient ID, (0020,000D), (0020,000E) of the ROI paths) nor by "
            f"relative path (e.g. {no_roi[0]}): no box for them; add the ROI mask series to "
            "IN for boxes")
    _share_boxes_between_copies(table, images, {i: index.shape(Path(i)) if Path(i).exists()
                                                else None for i in images})
    return table


def _share_boxes_between_copies(table: LabelTable, images: dict[str, list[dict[str, Any]]],
                                shapes: dict[str, tuple[int, int] | None]) -> None:
    """Copies of one view (patient, side, view) named by several rows' image paths: give
    each copy the boxes of all of them when they have one size (see the module docstring);
    warn otherwise."""
    views: dict[tuple, list[str]] = {}
    for image, recs in images.items():
        first = recs[0]
        if first["_view"] is not None:
            views.setdefault((first["_patient"], first["_lat"], first["_view"]), []).append(image)
    shared = 0
    for (patient, lat, view), copies in sorted(views.items()):
        if len(copies) < 2:
            continue
        sizes = {shapes[c] for c in copies}
        if len(sizes) != 1 or None in sizes:
            shown = ", ".join(f"{Path(c).parent.parent.parent.name or Path(c).name}: "
                              + ("unreadable" if shapes[c] is None else
                                 "x".join(map(str, shapes[c]))) for c in sorted(copies))
            table.warnings.append(
                f"{patient} {'LEFT' if lat == 'L' else 'RIGHT'} {view}: {len(copies)} image "
                f"files of different or unknown size ({shown}); each keeps its own boxes "
                "(shard keeps one of them)")
            continue
        union: list = []
        for c in sorted(copies):
            union += [b for b in table.by_path[c].boxes if b not in union]
        for c in copies:
            table.by_path[c] = replace(table.by_path[c], boxes=[list(b) for b in union])
        shared += 1
    if shared:
        table.warnings.append(
            f"{shared} view(s) appear as one image file per table (mass and calcification): "
            "each copy carries the boxes of all of them; shard keeps one copy of each and "
            "lists the others as duplicate_view")


ADAPTER = Adapter("cbis-ddsm", "cbis-ddsm:CSV[,CSV...]", load, RULES,
                  "CBIS-DDSM mass/calc description tables; files found under IN by header "
                  "(any layout)",
                  several=True)
