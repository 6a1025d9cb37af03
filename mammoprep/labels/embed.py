"""``embed:DIR`` - the Emory Breast Imaging Dataset (EMBED Open Data) tables.

DIR is the release's ``tables`` folder (or the dataset root above it) with
``EMBED_OpenData_metadata.csv`` (one row per file) and ``EMBED_OpenData_clinical.csv`` (one
row per finding the radiologist described); the ``_reduced`` tables are read where the full
ones are absent. ``embed:METADATA.csv,CLINICAL.csv`` names the two files instead (any
order: a table with ``anon_dicom_path`` is the metadata). Images are
``cohort_N/<empi_anon>/<acc_anon>/<SOP Instance UID>.dcm``; ``anon_dicom_path`` is a path on
the publisher's server, so a file is matched by its name (the SOP Instance UID).

Per image (metadata): patient ``empi_anon``, study ``acc_anon``, laterality
``ImageLateralityFinal``, view ``ViewPosition``, boxes: nested lists of ``[ymin, xmin, ymax,
xmax]``, written here as ``[xmin, ymin, xmax, ymax]``. ``DCM_ROI_coords`` (datathon tables)
are in the DICOM's stored pixels and used as they are. ``ROI_coords`` (the Open Data
tables) and ``PNG_ROI_coords`` are in the publisher's PNG frame, where every image whose
chest wall is on the right was mirrored to put it on the left (EMBED_Open_Data:
``resources/datathon_notebooks/NUS_roi_reference.ipynb`` says so of ``PNG_ROI_coords``;
``resources/notebooks/Sample_Notebook.ipynb`` mirrors the DICOM before drawing
``ROI_coords``; ``resources/notebooks/DCM_to_PNG.ipynb`` holds the flip): ``shard``
mirrors them back on images whose chest wall it finds on the right
(:data:`mammoprep.geometry.CHEST_WALL_LEFT`). Only 2-D full-field mammograms are stored: a
row whose ``FinalImageType`` is ``cview`` (synthesised from tomosynthesis), ``3D`` or a
screensave (``ROI_SSC``/``ROI_SS``), or whose ``spot_mag`` is 1 (spot compression or
magnification), names a file that ``shard`` skips (counted, with a warning).

Per breast (clinical rows of the exam, ``empi_anon`` + ``acc_anon``): a finding whose ``side``
is ``L`` or ``R`` is that breast's, ``B`` or empty both breasts' (the publisher's merge rule).
* BI-RADS (``asses``: A=0, N=1, B=2, P=3, S=4, M=5, K=6, X = no assessment: none): the
  breast's most concerning finding in the ACR order 1 < 2 < 3 < 6 < 0 < 4 < 5;
* pathology (``path_severity``, on the side of ``bside`` where given): 0 invasive and 1
  non-invasive cancer are malignant, 2 high-risk, 3 borderline, 4 benign and 5 normal tissue
  benign, 6 (a non-breast cancer) no breast label; malignant if any result is; images of
  exams without a result carry no pathology (a negative screen is not a biopsy);
* density (``tissueden`` 1-4 = A-D, 5 = male: none), per exam; rows that disagree leave the
  exam without density (warned).
Diagnosis takes the pathology whatever the BI-RADS (a screening recall, BI-RADS 0, with a
proven cancer is a positive); BI-RADS 1-6 feed the BI-RADS tasks.

A value outside these legends (the publisher's ``AWS_Open_Data_Clinical_Legend.csv`` and
data descriptor) leaves that one value out, counted per column (``LabelTable.dropped``;
``--strict-labels``: an error): a finding whose ``side`` (``bside``) is unknown reaches no
breast (its pathology none), a file whose ``FinalImageType`` is unknown is skipped, an
unknown ``spot_mag`` is taken as a full-field view. A missing table or column stops.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from ..geometry import CHEST_WALL_LEFT
from ._common import (Adapter, LabelError, LabelRow, LabelTable, TaskRules, is_missing,
                      parse_density, parse_laterality, parse_text, parse_view)
from .reading import normalise_columns, read_table, require_columns, table_columns

RULES = TaskRules(
    "embed", "any", True,
    "diagnosis: pathology of the breast's findings (path_severity 0-1 malignant, 2-5 benign, "
    "6 none), any BI-RADS; BI-RADS: the breast's most concerning assessment (A=0 ... K=6), "
    "1-6 feed the BI-RADS tasks; density: tissueden 1-4 = A-D (5, male: none)")

METADATA_COLUMNS = ("empi_anon", "acc_anon", "anon_dicom_path", "imagelateralityfinal",
                    "viewposition", "finalimagetype")
CLINICAL_COLUMNS = ("empi_anon", "acc_anon", "side", "asses")
NAMES = {"metadata": ("EMBED_OpenData_metadata.csv", "EMBED_OpenData_metadata_reduced.csv"),
         "clinical": ("EMBED_OpenData_clinical.csv", "EMBED_OpenData_clinical_reduced.csv")}

#: ``asses`` letter -> BI-RADS category (X: "No Assessment" in the publisher's legend).
ASSESSMENT = {"A": "0", "N": "1", "B": "2", "P": "3", "S": "4", "M": "5", "K": "6", "X": None}
#: ``side`` / ``bside`` -> the breasts a finding / a pathology result is about.
SIDES = {"L": ("L",), "R": ("R",), "B": ("L", "R")}
#: Box columns in the order they are used -> ``LabelRow.boxes_frame``.
ROI_COLUMNS = {"DCM_ROI_coords": None, "ROI_coords": CHEST_WALL_LEFT,
               "PNG_ROI_coords": CHEST_WALL_LEFT}
#: BI-RADS categories from least to most concerning (ACR's overall-assessment order).
CONCERN = ("1", "2", "3", "6", "0", "4", "5")
#: ``FinalImageType`` (lower case, without ``-``/``_``/spaces) -> what ``shard`` does.
IMAGE_TYPES = {"2d": None, "cview": "C-view", "3d": "3D", "roissc": "screensave",
               "roiss": "screensave"}


def _find(root: Path) -> tuple[Path, Path]:
    """(metadata, clinical) CSV paths for ``embed:DIR``."""
    folders = [root / "tables", root] if (root / "tables").is_dir() else [root]
    found = {}
    for kind, names in NAMES.items():
        for folder in folders:
            hit = next((folder / n for n in names if (folder / n).is_file()), None)
            if hit is not None:
                found[kind] = hit
                break
        else:
            raise LabelError(root, f"EMBED {kind} table missing", tag="file",
                             value=" or ".join(names),
                             hint="embed:DIR needs the release's tables folder (or the dataset "
                                  "root above it), or embed:METADATA.csv,CLINICAL.csv")
    return found["metadata"], found["clinical"]


def _tables(path_text: str) -> tuple[Path, Path]:
    parts = [Path(p) for p in path_text.split(",") if p]
    if len(parts) == 1 and parts[0].is_dir():
        return _find(parts[0])
    if len(parts) != 2:
        raise LabelError(path_text, "embed: needs a folder or two CSV files", tag="--labels",
                         value=path_text, hint="embed:DIR or embed:METADATA.csv,CLINICAL.csv")
    for p in parts:
        if not p.is_file():
            raise LabelError(p, "EMBED table not found", tag="--labels", value=path_text,
                             hint="check the path")
    is_meta = ["anon_dicom_path" in (c.strip().lower() for c in table_columns(p))
               for p in parts]
    if is_meta.count(True) != 1:
        raise LabelError(path_text, "cannot tell the metadata table (rows with "
                         "anon_dicom_path) from the clinical one", tag="header row",
                         value=[p.name for p in parts], hint="name one metadata and one "
                         "clinical table")
    return (parts[0], parts[1]) if is_meta[0] else (parts[1], parts[0])


def _rows(path: Path, columns: Sequence[str], hint: str, optional: Sequence[str] = ()
          ) -> list[dict[str, Any]]:
    """The table's rows, only ``columns`` and ``optional`` kept, names in lower case."""
    rows = [normalise_columns(r) for r in read_table(path, [*columns, *optional])]
    require_columns(path, rows, columns, hint)
    return rows


def _text(v: Any, where: str, column: str) -> str | None:
    """:func:`parse_text`, and ``'4.0'`` -> ``'4'`` (a numeric column with blanks, as a
    data-frame export writes it)."""
    s = parse_text(v, where, column)
    return re.sub(r"^(\d+)\.0*$", r"\1", s) if s is not None else None


def _code(v: Any, where: str, column: str, allowed: dict[str, Any], hint: str,
          squeeze: bool = False) -> Any:
    """One of ``allowed`` (keys upper case), None when missing; else a LabelError.
    squeeze: ignore ``-``, ``_`` and spaces (``C-view`` = ``cview``)."""
    if is_missing(v):
        return None
    key = _text(v, where, column).upper()
    if squeeze:
        key = re.sub(r"[-_\s]", "", key)
    if key not in allowed:
        raise LabelError(where, f"not an EMBED {column} code", tag=f"column {column}",
                         value=v, hint=hint)
    return allowed[key]


def _sides(table: LabelTable, v: Any, where: str, column: str) -> tuple[str, ...]:
    """``L`` -> (L,), ``R`` -> (R,), ``B`` or missing -> both (the publisher's merge rule);
    a value not in the legend -> () (dropped, counted)."""
    if is_missing(v):
        return ("L", "R")
    return table.value(_code, v, where, column, SIDES,
                       "EMBED codes a side as L, R or B (bilateral)") or ()


def _severity(v: Any, where: str, column: str = "path_severity") -> str | None:
    return _code(v, where, column,
                 {"0": "malignant", "1": "malignant", "2": "benign", "3": "benign",
                  "4": "benign", "5": "benign", "6": None},
                 "path_severity is 0-6 (0-1 cancer, 2-5 benign, 6 non-breast cancer)")


def _density(v: Any, where: str, column: str = "tissueden") -> str | None:
    """``tissueden`` 1-4 -> A-D; 5 (a male breast: no ACR density) or missing -> None."""
    dens = _text(v, where, column)
    return None if dens in (None, "5") else parse_density(dens, where, column)


def parse_rois(v: Any, where: str, column: str) -> list:
    """EMBED's nested ``[ymin, xmin, ymax, xmax]`` lists (``[[[1165, 822, 1294, 1000]]]``,
    ``((10, 20, 30, 40),)``) -> ``[[xmin, ymin, xmax, ymax], ...]``."""
    if is_missing(v):
        return []
    text = str(v)
    if not re.fullmatch(r"[\s\[\]\(\),'\"\d.]*", text):
        raise LabelError(where, "ROI coordinates are not nested lists of numbers",
                         tag=f"column {column}", value=v,
                         hint="EMBED writes ROIs as [[ymin, xmin, ymax, xmax], ...]")
    numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", text)]
    if len(numbers) % 4:
        raise LabelError(where, "ROI coordinates do not come in fours",
                         tag=f"column {column}", value=v,
                         hint="EMBED writes ROIs as [[ymin, xmin, ymax, xmax], ...]")
    yx = [numbers[i:i + 4] for i in range(0, len(numbers), 4)]
    for b in yx:
        if b[2] <= b[0] or b[3] <= b[1]:
            raise LabelError(where, "an ROI is not [ymin, xmin, ymax, xmax] with ymax > ymin "
                             "and xmax > xmin", tag=f"column {column}", value=v,
                             hint="fix the ROI or drop it")
    return [[b[1], b[0], b[3], b[2]] for b in yx]


def _add_finding(exam: dict[str, Any], r: dict[str, Any], where: str, table: LabelTable
                 ) -> None:
    """One clinical row's BI-RADS and pathology into ``exam`` ('L' / 'R' -> labels)."""
    birads = table.value(_code, r.get("asses"), where, "asses", ASSESSMENT,
                         "EMBED codes BI-RADS as A (0), N (1), B (2), P (3), S (4), M (5), "
                         "K (6) or X (no assessment)")
    sides = _sides(table, r.get("side"), where, "side")
    for s in sides if birads is not None else ():
        old = exam[s].get("birads")
        if old is None or CONCERN.index(birads) > CONCERN.index(old):
            exam[s]["birads"] = birads
    result = table.value(_severity, r.get("path_severity"), where, "path_severity")
    bside = r.get("bside")
    for s in (_sides(table, bside, where, "bside") if not is_missing(bside) else sides
              ) if result is not None else ():
        if exam[s].get("pathology") != "malignant":
            exam[s]["pathology"] = result


def _exam_labels(rows: list[dict[str, Any]], path: Path, table: LabelTable
                 ) -> dict[tuple[str, str], dict[str, Any]]:
    """(empi_anon, acc_anon) -> {'L': {birads, pathology}, 'R': ..., 'density': ...}."""
    exams: dict[tuple[str, str], dict[str, Any]] = {}
    densities: dict[tuple[str, str], set] = {}
    for i, r in enumerate(rows, start=2):
        where = f"{path}:{i}"
        key = (_text(r["empi_anon"], where, "empi_anon"),
               _text(r["acc_anon"], where, "acc_anon"))
        if None in key:
            raise LabelError(where, "empi_anon and acc_anon are required",
                             tag="column empi_anon/acc_anon", value=key,
                             hint="every row of EMBED's clinical table names its patient and "
                                  "exam; fix or delete the row")
        exam = exams.setdefault(key, {"L": {}, "R": {}})
        _add_finding(exam, r, where, table)
        dens = table.value(_density, r.get("tissueden"), where, "tissueden")
        if dens is not None:
            densities.setdefault(key, set()).add(dens)
    disagree = [k for k, d in densities.items() if len(d) > 1]
    for key, d in densities.items():
        exams[key]["density"] = next(iter(d)) if len(d) == 1 else None
    if disagree:
        table.warnings.append(
            f"EMBED: {len(disagree)} exam(s) with findings that disagree on tissueden, left "
            f"without density (first: acc_anon {disagree[0][1]})")
    return exams


def _image_kind(r: dict[str, Any], where: str, table: LabelTable) -> str | None:
    """None for a 2-D full-field mammogram (stored), else why ``shard`` skips the file."""
    v = r["finalimagetype"]
    kind = table.value(_code, v, where, "FinalImageType",
                       {k.upper(): t or "2D" for k, t in IMAGE_TYPES.items()},
                       "EMBED's FinalImageType is 2D, cview, 3D, ROI_SSC or ROI_SS",
                       True)
    if kind is None:
        return "no FinalImageType" if is_missing(v) else "unknown FinalImageType"
    special = table.value(_code, r.get("spot_mag"), where, "spot_mag",
                          {"0": False, "1": True},
                          "spot_mag is 1 (spot compression or magnification) or empty/0")
    if kind == "2D":
        return "spot/magnification" if special else None
    return kind


def _image_row(r: dict[str, Any], where: str, table: LabelTable, exams: dict,
               roi_column: str) -> LabelRow:
    """The labels of one stored image (a metadata row)."""
    patient = _text(r["empi_anon"], where, "empi_anon")
    study = _text(r["acc_anon"], where, "acc_anon")
    lat = table.value(parse_laterality, r["imagelateralityfinal"], where,
                      "ImageLateralityFinal")
    exam = exams.get((patient, study))
    breast = exam.get(lat, {}) if exam is not None and lat else {}
    return LabelRow(
        patient=patient, study=study, laterality=lat,
        view=table.value(parse_view, r["viewposition"], where, "ViewPosition"),
        pathology=breast.get("pathology"), birads=breast.get("birads"),
        density=exam.get("density") if exam is not None else None,
        boxes=table.value(parse_rois, r.get(roi_column.lower()), where, roi_column) or [],
        boxes_frame=ROI_COLUMNS[roi_column], source_row=where)


def load(path_text: str, roots: Sequence[Path] = (), strict: bool = False) -> LabelTable:
    meta_path, clin_path = _tables(path_text)
    table = LabelTable("embed", RULES, strict=strict)
    exams = _exam_labels(_rows(clin_path, CLINICAL_COLUMNS,
                               "EMBED's clinical table: empi_anon, acc_anon, side, asses, "
                               "tissueden, path_severity, bside, ...",
                               ("tissueden", "path_severity", "bside")), clin_path, table)
    rows = _rows(meta_path, METADATA_COLUMNS,
                 "EMBED's metadata table: empi_anon, acc_anon, anon_dicom_path, "
                 "ImageLateralityFinal, ViewPosition, FinalImageType, spot_mag, ROI_coords, ...",
                 ("spot_mag", *(c.lower() for c in ROI_COLUMNS)))
    roi_column = next((c for c in ROI_COLUMNS if rows and c.lower() in rows[0]), "ROI_coords")
    skipped: Counter = Counter()
    without_exam = 0
    seen: dict[str, str] = {}
    for i, r in enumerate(rows, start=2):
        where = f"{meta_path}:{i}"
        name = parse_text(r["anon_dicom_path"], where, "anon_dicom_path")
        if name is None:
            raise LabelError(where, "anon_dicom_path is required", tag="column anon_dicom_path",
                             value=r["anon_dicom_path"], hint="every row of EMBED's metadata "
                             "table names its file; fix or delete the row")
        stem = Path(name.replace("\\", "/").rsplit("/", 1)[-1]).stem
        if stem in seen:
            raise LabelError(where, f"this image is listed twice (also at {seen[stem]})",
                             tag="column anon_dicom_path", value=name, hint="one row per file")
        seen[stem] = where
        reason = _image_kind(r, where, table)
        if reason is not None:
            skipped[reason] += 1
            table.auxiliary_stems.add(stem)
            continue
        row = table.by_stem[stem] = _image_row(r, where, table, exams, roi_column)
        without_exam += (row.patient, row.study) not in exams
    if skipped:
        table.warnings.append(
            "EMBED: files that are not 2-D full-field mammograms are skipped: " + ", ".join(
                f"{n} {k}" for k, n in sorted(skipped.items())))
    if without_exam:
        table.warnings.append(f"EMBED: {without_exam} image(s) of exams without a clinical "
                              "row carry no labels")
    return table


ADAPTER = Adapter("embed", "embed:DIR", load, RULES,
                  "EMBED Open Data metadata + clinical tables; images matched by SOP UID",
                  several=True)
