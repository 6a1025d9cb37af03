"""``cbis-ddsm:CSV[,CSV...]`` - the CBIS-DDSM mass and calcification description tables.

Give one or more of ``mass_case_description_{train,test}_set.csv`` and
``calc_case_description_{train,test}_set.csv``, comma-separated, or a folder holding them.
Columns as published (one row per abnormality): ``patient_id``, ``breast_density`` (mass
tables) or ``breast density`` (calcification tables), ``left or right breast``, ``image
view``, ``abnormality id``, ``abnormality type``, ..., ``assessment`` (BI-RADS 0-5),
``pathology`` (MALIGNANT / BENIGN / BENIGN_WITHOUT_CALLBACK), ``subtlety``, ``image file
path``, ``cropped image file path``, ``ROI mask file path``.

Matching: ``image file path`` is taken relative to the folder(s) given to ``shard`` (then to
the tables' folder): the archive must keep the published relative paths. The files named by
``cropped image file path`` and ``ROI mask file path`` are skipped by ``shard`` (they are not
mammograms).

Semantics (:data:`RULES`), per breast (patient_id + side, both views):

* pathology: malignant if any abnormality of the breast is MALIGNANT, else benign
  (BENIGN_WITHOUT_CALLBACK is benign); diagnosis uses it whatever the assessment
  (pathology is biopsy-proven);
* BI-RADS: the highest ``assessment`` of the breast's abnormalities; BI-RADS tasks as usual
  (0 excluded);
* density: the image's ``breast density`` (1-4 = A-D);
* boxes: per image, the bounding box of the non-zero pixels of each abnormality's ROI mask
  (a DICOM), in image pixels, exclusive ends. Where the ROI path holds the crop instead
  (a known mix-up in the published tables: the file is not binary), the other path is tried.
  A mask that cannot be read, is not binary or has another size than its image gives no box
  and a warning. No mask files: no boxes.
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

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from ._common import (Adapter, LabelError, LabelRow, LabelTable, TaskRules, parse_birads,
                      parse_density, parse_laterality, parse_pathology, parse_text, parse_view,
                      read_table, require_columns)

RULES = TaskRules(
    "cbis-ddsm", "any", True,
    "per breast: malignant if any abnormality is; BI-RADS = highest assessment (0 excluded "
    "from BI-RADS tasks); density per image; boxes from ROI masks")

COLUMNS = ("patient_id", "left or right breast", "image view", "assessment", "pathology",
           "image file path")
DENSITY_COLUMNS = ("breast_density", "breast density")


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


def _resolve(rel: str, bases: Sequence[Path]) -> Path:
    """First existing ``base / rel``; else ``bases[0] / rel`` (reported as unmatched)."""
    rel = rel.strip().replace("\\", "/")
    for b in bases:
        if (b / rel).exists():
            return (b / rel).resolve()
    return (bases[0] / rel).resolve()


def _mask_box(path: Path, shape: tuple[int, int] | None) -> tuple[list[float] | None, str]:
    """Box ``[xmin, ymin, xmax, ymax]`` (exclusive ends) of a binary mask, or (None, why)."""
    import numpy as np
    import pydicom

    from ..dicomio import regular_file_problem

    problem = regular_file_problem(path)  # a FIFO or device named *.dcm would block dcmread
    if problem is not None:
        return None, problem.problem
    try:
        px = np.asarray(pydicom.dcmread(path).pixel_array)
    except Exception as exc:  # noqa: BLE001 - any unreadable file: no box, a warning
        return None, f"cannot read ({type(exc).__name__}: {exc})"
    if px.ndim != 2:
        return None, "not a 2-D mask"
    inside = px != 0
    if not inside.any():
        return None, "empty mask"
    if np.any(px[inside] != px[inside].max()):  # O(pixels): masks are 0 / one value
        return None, "not a binary mask"
    if shape is not None and px.shape != shape:
        return None, f"mask is {px.shape[0]}x{px.shape[1]}, image {shape[0]}x{shape[1]}"
    ys, xs = np.nonzero(inside)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)], ""


def _image_shape(path: Path) -> tuple[int, int] | None:
    from ..dicomio import read_header_dataset

    try:
        ds, _ = read_header_dataset(path)  # typed errors, only regular files opened
        return int(ds.Rows), int(ds.Columns)
    except Exception:  # noqa: BLE001 - the shard scan reports unreadable images
        return None


def _box(row: dict[str, Any], bases: Sequence[Path], image: Path, shape, warnings) -> list:
    tried = []
    for col in ("ROI mask file path", "cropped image file path"):
        rel = row.get(col)
        if not rel or not str(rel).strip():
            continue
        p = _resolve(str(rel), bases)
        if not p.exists():
            continue
        box, why = _mask_box(p, shape)
        if box is not None:
            return [box]
        tried.append(f"{p} ({why})")
    if tried:
        warnings.append(f"{row['_where']}: no box for {image.name}: " + "; ".join(tried))
    return []


def load(path_text: str, roots: Sequence[Path] = (), strict: bool = False) -> LabelTable:
    tables = _tables(path_text)
    table = LabelTable("cbis-ddsm", RULES, strict=strict)
    images: dict[str, list[dict[str, Any]]] = {}
    shapes: dict[str, tuple[int, int] | None] = {}
    breasts: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in tables:
        rows = read_table(path)
        require_columns(path, rows, COLUMNS, "CBIS-DDSM description tables have patient_id, "
                        "breast_density / breast density, left or right breast, image view, "
                        "..., assessment, pathology, ..., image file path, ...")
        dcol = next((c for c in DENSITY_COLUMNS if rows and c in rows[0]), None)
        bases = [*(Path(r) for r in roots if Path(r).is_dir()), path.parent]
        for i, r in enumerate(rows, start=2):
            where = f"{path}:{i}"
            p = parse_text(r["patient_id"], where, "patient_id")
            lat = parse_laterality(r["left or right breast"], where, "left or right breast")
            if p is None or lat is None or not str(r["image file path"] or "").strip():
                raise LabelError(where, "patient_id, left or right breast and image file path "
                                 "are required", tag="columns", value=(
                                     r["patient_id"], r["left or right breast"],
                                     r["image file path"]))
            rec = {**r, "_where": where, "_bases": bases, "_patient": p, "_lat": lat,
                   "_view": parse_view(r["image view"], where, "image view"),
                   "_pathology": parse_pathology(r["pathology"], where, "pathology"),
                   "_birads": parse_birads(r["assessment"], where, "assessment"),
                   "_density": parse_density(r.get(dcol), where, dcol) if dcol else None}
            image = _resolve(str(r["image file path"]), bases)
            images.setdefault(str(image), []).append(rec)
            breasts.setdefault((p, lat), []).append(rec)
            for col in ("cropped image file path", "ROI mask file path"):
                if str(r.get(col) or "").strip():
                    table.auxiliary.add(str(_resolve(str(r[col]), bases)))
    per_breast = {}
    for k, recs in breasts.items():
        paths = {x["_pathology"] for x in recs}
        assessed = [int(x["_birads"]) for x in recs if x["_birads"] is not None]
        per_breast[k] = ("malignant" if "malignant" in paths else
                         "benign" if "benign" in paths else None,
                         str(max(assessed)) if assessed else None)
    for image, recs in images.items():
        first = recs[0]
        pathology, birads = per_breast[(first["_patient"], first["_lat"])]
        densities = {x["_density"] for x in recs}
        if len(densities) > 1:
            table.warnings.append(f"{first['_where']}: breast density differs between the rows "
                                  f"of {Path(image).name} ({sorted(map(str, densities))}): "
                                  "density left missing")
        shape = _image_shape(Path(image)) if Path(image).exists() else None
        shapes[image] = shape
        boxes = []
        for x in recs:
            boxes += _box(x, x["_bases"], Path(image), shape, table.warnings)
        table.by_path[image] = LabelRow(
            patient=first["_patient"], study=first["_patient"], laterality=first["_lat"],
            view=first["_view"], pathology=pathology, birads=birads,
            density=densities.pop() if len(densities) == 1 else None, boxes=boxes,
            source_row=first["_where"])
    _share_boxes_between_copies(table, images, shapes)
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
                  "CBIS-DDSM mass/calc description tables; image file path relative to IN",
                  several=True)
