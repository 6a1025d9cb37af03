"""Label adapters, each on a fixture written here from its publisher's schema (never from
our own ``synth`` writer), the strict value parser and the per-source task rules."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mammoprep.labels import (ADAPTERS, GENERIC_RULES, LabelError, load_labels, parse_birads,
                              parse_density, parse_laterality, parse_pathology, task_labels)
from mammoprep.labels import cbis_ddsm, lumina, rsna

# ------------------------------------------------------------------- strict value parser


@pytest.mark.parametrize("raw,expected", [("4", "4"), (4, "4"), (4.0, "4"), ("4A", "4"),
                                          ("4c", "4"), ("BI-RADS 5", "5"), ("BIRADS 3", "3"),
                                          ("-", None), ("", None), (None, None),
                                          (float("nan"), None), ("0", "0"), (" 6 ", "6")])
def test_parse_birads(raw, expected):
    assert parse_birads(raw) == expected


@pytest.mark.parametrize("raw", ["7", -1, 3.5, "3A", "4D", "x", "=B2+1", "BI-RADS"])
def test_parse_birads_refuses_and_names_row_and_column(raw):
    with pytest.raises(LabelError) as exc:
        parse_birads(raw, "labels.csv:7", "birads")
    msg = str(exc.value)
    assert "labels.csv:7" in msg and "column birads" in msg and repr(raw) in msg


@pytest.mark.parametrize("raw,expected", [("A", "A"), ("d", "D"), ("DENSITY C", "C"), (1, "A"),
                                          ("4", "D"), (2.0, "B"), ("-", None), ("", None)])
def test_parse_density(raw, expected):
    assert parse_density(raw) == expected


@pytest.mark.parametrize("raw", ["E", 0, 5, "x", "=A1", "AB"])
def test_parse_density_refuses(raw):
    with pytest.raises(LabelError, match="column BREAST COMPOSITION"):
        parse_density(raw, "Benign_Cases.xlsx:3", "BREAST COMPOSITION")


@pytest.mark.parametrize("raw,expected", [("MALIGNANT", "malignant"), ("Benign", "benign"),
                                          ("BENIGN_WITHOUT_CALLBACK", "benign"), (1, "malignant"),
                                          ("0", "benign"), ("", None)])
def test_parse_pathology(raw, expected):
    assert parse_pathology(raw) == expected


@pytest.mark.parametrize("raw", ["normal", "cancer", "2", "maybe"])
def test_parse_pathology_refuses(raw):
    with pytest.raises(LabelError, match="unknown pathology"):
        parse_pathology(raw, "t.csv:2")


def test_parse_laterality():
    assert [parse_laterality(v) for v in ("L", "right", " LEFT ", "-")] == ["L", "R", "L", None]
    with pytest.raises(LabelError, match="not a laterality"):
        parse_laterality("B", "t.csv:2")


# ------------------------------------------------------------------------ task rules

@pytest.mark.parametrize("rules,args,expected", [
    # generic: BI-RADS 0 excludes from diagnosis and BI-RADS tasks; missing BI-RADS does not
    (GENERIC_RULES, ("benign", "2", "B"), (0, 0, 0, 1)),
    (GENERIC_RULES, ("malignant", "5", "D"), (1, 1, 2, 3)),
    (GENERIC_RULES, ("malignant", "4", None), (1, 1, 1, None)),
    (GENERIC_RULES, ("benign", "3", "A"), (0, 0, 1, 0)),
    (GENERIC_RULES, ("malignant", "0", "C"), (None, None, None, 2)),
    (GENERIC_RULES, ("malignant", None, None), (1, None, None, None)),
    (GENERIC_RULES, (None, None, None), (None, None, None, None)),
    # LUMINA: missing BI-RADS excludes from diagnosis too; density keeps BI-RADS 0 and missing
    (lumina.RULES, ("malignant", None, "B"), (None, None, None, 1)),
    (lumina.RULES, ("benign", "0", "A"), (None, None, None, 0)),
    (lumina.RULES, ("benign", "1", None), (0, 0, 0, None)),
    (lumina.RULES, ("malignant", "6", "C"), (1, 1, 2, 2)),
    # RSNA: diagnosis from cancer whatever the BI-RADS (0 = recall); no BI-RADS task
    (rsna.RULES, ("malignant", "0", "B"), (1, None, None, 1)),
    (rsna.RULES, ("benign", "2", None), (0, None, None, None)),
    (rsna.RULES, ("benign", None, "D"), (0, None, None, 3)),
    # CBIS-DDSM: biopsy-proven pathology; assessment 0 only leaves the BI-RADS tasks
    (cbis_ddsm.RULES, ("malignant", "0", "A"), (1, None, None, 0)),
    (cbis_ddsm.RULES, ("benign", "3", "B"), (0, 0, 1, 1)),
])
def test_task_rules(rules, args, expected):
    got = task_labels(*args, rules=rules)
    assert (got["diagnosis"], got["birads2"], got["birads3"], got["density"]) == expected


def test_every_registered_source_has_rules_and_usage():
    assert set(ADAPTERS) == {"lumina", "lumina-per-view", "rsna", "cbis-ddsm", "vindr",
                             "embed", "csv", "parquet"}
    for kind, a in ADAPTERS.items():
        assert a.usage.startswith(f"{kind}:") and a.rules.description


def test_unknown_label_kind_lists_the_known_ones():
    with pytest.raises(LabelError) as exc:
        load_labels("foo:/nowhere")
    assert "lumina:DIR" in str(exc.value) and "rsna:CSV" in str(exc.value)


def test_missing_source_is_named(tmp_path):
    with pytest.raises(LabelError, match="label source not found"):
        load_labels(f"rsna:{tmp_path / 'train.csv'}")


# ------------------------------------------------------------------------------ LUMINA
# The published sheets: ID, RIGHT_OR_LEFT, BIRADS, BREAST COMPOSITION, MANUFACTOR; two rows
# per patient, MLO row first, then CC row; BIRADS equal on both rows; density per row.

SHEET_HEADER = ["ID", "RIGHT_OR_LEFT", "BIRADS", "BREAST COMPOSITION", "MANUFACTOR"]


def _xlsx(path: Path, rows: list[list]) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(SHEET_HEADER)
    for r in rows:
        ws.append(r)
    wb.save(path)


def _lumina_tree(root: Path, benign: list[list], malign: list[list]) -> None:
    for group, rows in (("Benign", benign), ("Malign", malign)):
        _xlsx(root / f"{group}_Cases.xlsx", rows)
        for pid in {str(r[0]) for r in rows}:
            d = root / group / pid
            d.mkdir(parents=True, exist_ok=True)
            for name in ("L_CC", "L_MLO", "R_CC", "R_MLO"):
                (d / f"{name}.dcm").write_bytes(b"")


@pytest.fixture()
def lumina_dir(tmp_path) -> Path:
    _lumina_tree(
        tmp_path,
        benign=[[101, "LEFT", 2, 3, "IMS GIOTTO"], [101, "LEFT", 2, 3, "IMS GIOTTO"],
                # BI-RADS 0; MLO row without density: only the CC image gets one
                [102, "RIGHT", 0, "-", "METALTRONICA"], [102, "RIGHT", 0, 2, "METALTRONICA"]],
        malign=[["M7", "BILATERAL", "4B", 4, "FUJIFILM"], ["M7", "BILATERAL", "4B", "-",
                                                           "FUJIFILM"],
                ["M8", "RIGHT", "-", 1, "SIEMENS"], ["M8", "RIGHT", "-", 1, "SIEMENS"],
                ["M9", "LEFT", 5, 2, "IMS GIOTTO"], ["M9", "LEFT", 5, 3, "IMS GIOTTO"]])
    return tmp_path


def _row(table, path):
    r = table.lookup(path)
    assert r is not None, path
    t = table.tasks(r)
    return (r.pathology, r.birads, r.density, t["diagnosis"], t["birads2"], t["density"])


UNLABELLED = (None, None, None, None, None, None)


@pytest.mark.parametrize("rel,expected", [
    ("Benign/101/L_CC.dcm", ("benign", "2", "C", 0, 0, 2)),
    ("Benign/101/L_MLO.dcm", ("benign", "2", "C", 0, 0, 2)),
    ("Benign/101/R_CC.dcm", UNLABELLED),            # the breast the sheet does not name
    ("Benign/102/R_CC.dcm", ("benign", "0", "B", None, None, 1)),   # density keeps BI-RADS 0
    ("Benign/102/R_MLO.dcm", ("benign", "0", None, None, None, None)),
    ("Benign/102/L_MLO.dcm", UNLABELLED),
    ("Malign/M7/L_MLO.dcm", ("malignant", "4", "D", 1, 1, 3)),     # BILATERAL: both breasts
    ("Malign/M7/R_MLO.dcm", ("malignant", "4", "D", 1, 1, 3)),
    ("Malign/M7/R_CC.dcm", ("malignant", "4", None, 1, 1, None)),  # CC row '-'
    ("Malign/M8/R_CC.dcm", ("malignant", None, "A", None, None, 0)),  # BI-RADS '-'
    ("Malign/M8/L_CC.dcm", UNLABELLED),       # not the patient's BI-RADS / density
    ("Malign/M9/L_MLO.dcm", ("malignant", "5", "B", 1, 1, 1)),     # MLO row first
    # both rows have a density (MLO 2, CC 3): the publisher's loader gives both views the
    # MLO row's value
    ("Malign/M9/L_CC.dcm", ("malignant", "5", "B", 1, 1, 1)),
    ("Malign/M9/R_MLO.dcm", UNLABELLED),
])
def test_lumina_published_layout(lumina_dir, rel, expected):
    table = load_labels(f"lumina:{lumina_dir}")
    assert _row(table, lumina_dir / rel) == expected
    r = table.lookup(lumina_dir / rel)
    # patient = class folder + ID (the IDs are numbered per folder)
    assert (r.laterality, r.view, r.patient) == (rel.split("/")[2][0],
                                                 rel.split("_")[-1][:-4],
                                                 "/".join(rel.split("/")[:2]))
    assert table.warnings == [] and table.dropped == {}


@pytest.mark.parametrize("rel,density", [
    ("Malign/M9/L_MLO.dcm", "B"), ("Malign/M9/L_CC.dcm", "C"),   # each view its own row
    ("Benign/101/L_CC.dcm", "C"), ("Benign/102/R_CC.dcm", "B"), ("Benign/102/R_MLO.dcm", None),
    ("Malign/M7/R_MLO.dcm", "D"), ("Malign/M7/R_CC.dcm", None),
])
def test_lumina_per_view_density_kind(lumina_dir, rel, density):
    """``lumina-per-view:`` keeps each view's own row (the rule before issue 22)."""
    table = load_labels(f"lumina-per-view:{lumina_dir}")
    assert table.lookup(lumina_dir / rel).density == density
    assert table.kind == "lumina-per-view" and "per view" in table.rules.description


@pytest.mark.parametrize("mlo,cc,publisher,per_view", [
    ("B", "C", ("B", "B"), ("B", "C")), (None, "C", (None, "C"), (None, "C")),
    ("B", None, ("B", None), ("B", None)), (None, None, (None, None), (None, None)),
    ("D", "D", ("D", "D"), ("D", "D")),
])
def test_lumina_view_density_rules(mlo, cc, publisher, per_view):
    """(MLO image, CC image) from (MLO row, CC row), as the publisher's density loader."""
    for rule, want in (("publisher", publisher), ("per-view", per_view)):
        got = lumina.view_density(mlo, cc, rule)
        assert (got["MLO"], got["CC"]) == want, rule


def test_lumina_same_id_in_both_folders_is_two_patients(tmp_path):
    """IDs are numbered per folder: Benign/8 and Malign/8 are two people."""
    _lumina_tree(tmp_path, benign=[[8, "LEFT", 2, 1, "X"], [8, "LEFT", 2, 1, "X"]],
                 malign=[[8, "RIGHT", 5, 3, "X"], [8, "RIGHT", 5, 3, "X"]])
    table = load_labels(f"lumina:{tmp_path}")
    b = table.lookup(tmp_path / "Benign/8/L_CC.dcm")
    m = table.lookup(tmp_path / "Malign/8/R_CC.dcm")
    assert (b.patient, b.pathology, m.patient, m.pathology) == ("Benign/8", "benign", "Malign/8",
                                                                "malignant")


def test_lumina_sheet_structure_problems_leave_the_patient_unlabelled(tmp_path):
    _lumina_tree(tmp_path,
                 benign=[["B1", "LEFT", 2, 1, "X"], ["B1", "LEFT", 3, 1, "X"],   # BIRADS differ
                         ["B2", "RIGHT", 2, 1, "X"]],                              # one row
                 malign=[["M1", "LEFT", 4, 1, "X"], ["M1", "LEFT", 4, 1, "X"]])
    table = load_labels(f"lumina:{tmp_path}")
    assert _row(table, tmp_path / "Benign/B1/L_CC.dcm") == UNLABELLED
    assert _row(table, tmp_path / "Benign/B2/R_CC.dcm") == UNLABELLED
    assert _row(table, tmp_path / "Malign/M1/L_CC.dcm")[:3] == ("malignant", "4", "A")
    assert len(table.warnings) == 2
    assert "BIRADS differs" in table.warnings[0] and "has 1 rows" in table.warnings[1]


@pytest.mark.parametrize("cell,column,value", [(2, "BIRADS", 7), (3, "BREAST COMPOSITION", "E"),
                                               (2, "BIRADS", "=C3"),
                                               (1, "RIGHT_OR_LEFT", "BOTH")])
def test_lumina_bad_cell_names_sheet_row_and_column(tmp_path, cell, column, value):
    rows = [["M1", "LEFT", 4, 1, "X"], ["M1", "LEFT", 4, 1, "X"]]
    rows[1][cell] = value
    _lumina_tree(tmp_path, benign=[["B1", "LEFT", 2, 1, "X"], ["B1", "LEFT", 2, 1, "X"]],
                 malign=rows)
    with pytest.raises(LabelError) as exc:
        load_labels(f"lumina:{tmp_path}", strict=True)
    msg = str(exc.value)
    assert "Malign_Cases.xlsx:3" in msg and f"column {column}" in msg and str(value) in msg


@pytest.mark.parametrize("cell,value,expected,warned", [
    # a BIRADS outside the legend: the patient's BI-RADS is unknown, density and pathology stay
    (2, 7, ("malignant", None, "A", None, None, 0), False),
    (2, "=C3", ("malignant", None, "A", None, None, 0), False),
    # a composition outside the legend counts as '-' (CC row): the MLO view only
    (3, "E", ("malignant", "4", None, 1, 1, None), False),
    # RIGHT_OR_LEFT outside the legend: no named breast, the patient is left unlabelled
    (1, "BOTH", UNLABELLED, True),
])
def test_lumina_value_outside_the_legend_is_dropped_and_counted(tmp_path, cell, value,
                                                                 expected, warned):
    column = {1: "RIGHT_OR_LEFT", 2: "BIRADS", 3: "BREAST COMPOSITION"}[cell]
    rows = [["M1", "LEFT", 4, 1, "X"], ["M1", "LEFT", 4, 1, "X"]]
    rows[1][cell] = value
    _lumina_tree(tmp_path, benign=[["B1", "LEFT", 2, 1, "X"], ["B1", "LEFT", 2, 1, "X"]],
                 malign=rows)
    table = load_labels(f"lumina:{tmp_path}")
    assert _row(table, tmp_path / "Malign/M1/L_CC.dcm") == expected
    assert table.dropped[column]["count"] == 1
    assert "Malign_Cases.xlsx:3" in table.dropped[column]["examples"][0]
    assert _row(table, tmp_path / "Benign/B1/L_CC.dcm")[:3] == ("benign", "2", "A")
    assert bool(table.warnings) == warned


def test_lumina_missing_sheet(tmp_path):
    (tmp_path / "Benign").mkdir()
    with pytest.raises(LabelError, match="Benign_Cases.xlsx"):
        load_labels(f"lumina:{tmp_path}")


# -------------------------------------------------------------------------------- RSNA

RSNA_COLUMNS = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer",
                "biopsy", "invasive", "BIRADS", "implant", "density", "machine_id",
                "difficult_negative_case"]


def _rsna_csv(path: Path, rows: list[tuple]) -> None:
    """rows: (patient_id, image_id, laterality, view, cancer, BIRADS, density)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(RSNA_COLUMNS)
        for p, i, lat, view, cancer, birads, density in rows:
            w.writerow([2, p, i, lat, view, 61.0, cancer, cancer, 0, birads, 0, density, 49,
                        "False"])


def test_rsna_train_csv(tmp_path):
    csv_path = tmp_path / "train.csv"
    _rsna_csv(csv_path, [(10006, 462822612, "L", "CC", 0, "", ""),
                         (10006, 1459541791, "L", "MLO", 0, "", ""),
                         (10011, 220375232, "R", "CC", 1, 0, "C"),
                         (10011, 270344397, "L", "MLO", 0, 1, "B"),
                         (10038, 1967300488, "R", "AT", 0, 2, "A")])
    table = load_labels(f"rsna:{csv_path}")
    images = tmp_path / "train_images"
    cases = {
        "10006/462822612.dcm": ("L", "CC", "benign", None, None, 0, None, None),
        "10011/220375232.dcm": ("R", "CC", "malignant", "0", "C", 1, None, 2),
        "10011/270344397.dcm": ("L", "MLO", "benign", "1", "B", 0, None, 1),
        "10038/1967300488.dcm": ("R", "AT", "benign", "2", "A", 0, None, 0),
    }
    for rel, expected in cases.items():
        r = table.lookup(images / rel)
        t = table.tasks(r)
        assert (r.laterality, r.view, r.pathology, r.birads, r.density, t["diagnosis"],
                t["birads2"], t["density"]) == expected
        assert r.patient == rel.split("/")[0]
    assert table.lookup(images / "10006" / "999.dcm") is None
    assert table.lookup(images / "99999" / "462822612.dcm") is None


@pytest.mark.parametrize("col,value,msg", [("cancer", 2, "cancer is not 0 or 1"),
                                           ("BIRADS", 4, "RSNA codes BIRADS"),
                                           ("density", "E", "not a breast density"),
                                           ("laterality", "B", "not a laterality")])
def test_rsna_bad_values(tmp_path, col, value, msg):
    row = {"patient_id": 1, "image_id": 2, "laterality": "L", "view": "CC", "cancer": 0,
           "BIRADS": "", "density": ""}
    row[col] = value
    csv_path = tmp_path / "train.csv"
    _rsna_csv(csv_path, [tuple(row[k] for k in ("patient_id", "image_id", "laterality",
                                                 "view", "cancer", "BIRADS", "density"))])
    with pytest.raises(LabelError) as exc:
        load_labels(f"rsna:{csv_path}", strict=True)
    assert f"{csv_path}:2" in str(exc.value) and msg in str(exc.value)
    # by default the one value is left out of its row, counted with the row named
    table = load_labels(f"rsna:{csv_path}")
    row = table.lookup(tmp_path / "1" / "2.dcm")
    field = {"cancer": "pathology", "BIRADS": "birads"}.get(col, col)
    assert getattr(row, field) is None and row.view == "CC"
    assert table.dropped[col]["count"] == 1
    assert "train.csv:2" in table.dropped[col]["examples"][0]


def test_rsna_needs_its_columns(tmp_path):
    p = tmp_path / "train.csv"
    p.write_text("path,pathology\na.dcm,benign\n")
    with pytest.raises(LabelError, match="patient_id, image_id, laterality, view, cancer"):
        load_labels(f"rsna:{p}")


# --------------------------------------------------------------------------- CBIS-DDSM
# Published headers: the mass tables spell breast_density, the calcification tables
# "breast density".

MASS_COLUMNS = ["patient_id", "breast_density", "left or right breast", "image view",
                "abnormality id", "abnormality type", "mass shape", "mass margins",
                "assessment", "pathology", "subtlety", "image file path",
                "cropped image file path", "ROI mask file path"]
CALC_COLUMNS = ["patient_id", "breast density", "left or right breast", "image view",
                "abnormality id", "abnormality type", "calc type", "calc distribution",
                "assessment", "pathology", "subtlety", "image file path",
                "cropped image file path", "ROI mask file path"]


def write_dicom(path: Path, pixels: np.ndarray, **header) -> None:
    """A minimal uncompressed DICOM (as CBIS-DDSM's masks and crops are); ``header``:
    further elements by keyword (``PatientID=...``)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = pixels.tobytes()
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def cbis_paths(case: str, n: int) -> tuple[str, str, str]:
    """(image, crop, ROI mask) paths in the published form: folder per TCIA series."""
    uid = "1.3.6.1.4.1.9590.100.1.2"
    return (f"{case}/{uid}.{n}1/{uid}.{n}2/000000.dcm",
            f"{case}_1/{uid}.{n}3/{uid}.{n}4/000000.dcm",
            f"{case}_1/{uid}.{n}3/{uid}.{n}4/000001.dcm")


def write_cbis_tables(folder: Path, mass_rows: list, calc_rows: list, split: str = "train"
                      ) -> tuple[Path, Path]:
    """The mass and calcification tables of one split (``train``/``test``), named and headed
    as published."""
    return write_csvs({folder / f"mass_case_description_{split}_set.csv": (MASS_COLUMNS,
                                                                           mass_rows),
                       folder / f"calc_case_description_{split}_set.csv": (CALC_COLUMNS,
                                                                           calc_rows)})


def write_csvs(tables: dict[Path, tuple[list, list]]) -> tuple[Path, ...]:
    """Write each ``path: (header, rows)`` as a CSV; returns the paths in order."""
    for path, (header, rows) in tables.items():
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
    return tuple(tables)


def test_cbis_ddsm_tables_and_roi_masks(tmp_path):
    root = tmp_path / "CBIS-DDSM"
    shape = (60, 40)
    img_cc, crop_cc, mask_cc = cbis_paths("Mass-Training_P_00001_LEFT_CC", 1)
    img_mlo, crop_mlo, mask_mlo = cbis_paths("Mass-Training_P_00001_LEFT_MLO", 2)
    img_r, crop_r, mask_r = cbis_paths("Calc-Training_P_00002_RIGHT_CC", 3)
    write_dicom(root / img_cc, np.zeros(shape, np.uint16))
    write_dicom(root / img_mlo, np.zeros(shape, np.uint16))
    write_dicom(root / img_r, np.zeros(shape, np.uint16))
    m = np.zeros(shape, np.uint8)
    m[10:20, 5:15] = 255                      # rows 10..19, cols 5..14
    write_dicom(root / mask_cc, m)
    write_dicom(root / crop_cc, np.arange(100, dtype=np.uint8).reshape(10, 10))
    # the published tables sometimes swap crop and mask: the crop sits at the "mask" path
    m2 = np.zeros(shape, np.uint8)
    m2[30:41, 2:9] = 255
    write_dicom(root / mask_mlo, np.arange(64, dtype=np.uint8).reshape(8, 8))
    write_dicom(root / crop_mlo, m2)
    mass, calc = write_cbis_tables(tmp_path, [
        ["P_00001", 3, "LEFT", "CC", 1, "mass", "OVAL", "CIRCUMSCRIBED", 3,
         "BENIGN", 3, img_cc, crop_cc, mask_cc + "\n"],
        ["P_00001", 3, "LEFT", "MLO", 1, "mass", "OVAL", "CIRCUMSCRIBED", 4,
         "BENIGN_WITHOUT_CALLBACK", 3, img_mlo, mask_mlo, crop_mlo]], [
        # a calcification in the same breast: MALIGNANT makes the breast malignant
        ["P_00001", 3, "LEFT", "CC", 1, "calcification", "PLEOMORPHIC",
         "CLUSTERED", 5, "MALIGNANT", 4, img_cc, "", ""],
        ["P_00002", 2, "RIGHT", "CC", 1, "calcification", "AMORPHOUS",
         "CLUSTERED", 0, "BENIGN", 2, img_r, crop_r, mask_r]])  # files absent
    table = load_labels(f"cbis-ddsm:{mass},{calc}", roots=[root])
    cc, mlo, r = (table.lookup(root / p) for p in (img_cc, img_mlo, img_r))
    assert (cc.patient, cc.study, cc.laterality, cc.view) == ("P_00001", "P_00001", "L", "CC")
    assert (mlo.laterality, mlo.view) == ("L", "MLO")
    assert (cc.pathology, cc.birads, cc.density) == ("malignant", "5", "C")
    assert (mlo.pathology, mlo.birads, mlo.density) == ("malignant", "5", "C")  # per breast
    assert cc.boxes == [[5.0, 10.0, 15.0, 20.0]]
    assert mlo.boxes == [[2.0, 30.0, 9.0, 41.0]]
    assert (r.pathology, r.birads, r.density, r.boxes) == ("benign", "0", "B", [])
    assert table.tasks(r) == {"diagnosis": 0, "birads2": None, "birads3": None, "density": 1}
    assert str((root / mask_cc).resolve()) in table.auxiliary
    assert str((root / crop_mlo).resolve()) in table.auxiliary
    assert str((root / img_cc).resolve()) not in table.auxiliary
    # P_00002's ROI files are absent: one warning for all such rows, naming the first
    (note,) = [w for w in table.warnings if "no ROI file" in w]
    assert note.startswith("1 abnormalities of images found have no ROI file") and (
        f"{calc}:3" in note)
    # the same tables from their folder
    both = load_labels(f"cbis-ddsm:{tmp_path}", roots=[root])
    assert both.lookup(root / img_cc).boxes == cc.boxes


def test_cbis_ddsm_view_in_both_tables_shares_its_boxes(tmp_path):
    """A breast with a mass and a calcification on its CC ships that CC twice, once per
    table's case folder (Mass-..._LEFT_CC, Calc-..._LEFT_CC): both copies carry both
    lesions' boxes. Copies of different sizes keep their own, with a warning."""
    root = tmp_path / "CBIS-DDSM"
    shape = (60, 40)
    files = {}
    for kind, n, y in (("Mass", 1, 10), ("Calc", 2, 40)):
        img, crop, mask = cbis_paths(f"{kind}-Training_P_00007_LEFT_CC", n)
        write_dicom(root / img, np.zeros(shape, np.uint16))
        m = np.zeros(shape, np.uint8)
        m[y:y + 5, 3:9] = 255
        write_dicom(root / mask, m)
        files[kind] = (img, crop, mask)
    # P_00008: the calc table's copy has another size (not the same image)
    for kind, n, size in (("Mass", 3, shape), ("Calc", 4, (50, 40))):
        img, crop, mask = cbis_paths(f"{kind}-Training_P_00008_RIGHT_MLO", n)
        write_dicom(root / img, np.zeros(size, np.uint16))
        m = np.zeros(size, np.uint8)
        m[20:25, 1:4] = 255
        write_dicom(root / mask, m)
        files[kind + "8"] = (img, crop, mask)
    mass, calc = write_cbis_tables(tmp_path, [
        ["P_00007", 2, "LEFT", "CC", 1, "mass", "OVAL", "CIRCUMSCRIBED", 3, "BENIGN", 3,
         *files["Mass"]],
        ["P_00008", 2, "RIGHT", "MLO", 1, "mass", "OVAL", "CIRCUMSCRIBED", 3, "BENIGN", 3,
         *files["Mass8"]]], [
        ["P_00007", 2, "LEFT", "CC", 1, "calcification", "PLEOMORPHIC", "CLUSTERED", 4,
         "MALIGNANT", 4, *files["Calc"]],
        ["P_00008", 2, "RIGHT", "MLO", 1, "calcification", "PLEOMORPHIC", "CLUSTERED", 4,
         "BENIGN", 4, *files["Calc8"]]])
    table = load_labels(f"cbis-ddsm:{mass},{calc}", roots=[root])
    both = [[3.0, 10.0, 9.0, 15.0], [3.0, 40.0, 9.0, 45.0]]
    for kind in ("Mass", "Calc"):
        row = table.lookup(root / files[kind][0])
        assert sorted(row.boxes) == both, kind
        assert (row.pathology, row.birads) == ("malignant", "4")
    assert table.lookup(root / files["Mass8"][0]).boxes == [[1.0, 20.0, 4.0, 25.0]]
    assert table.lookup(root / files["Calc8"][0]).boxes == [[1.0, 20.0, 4.0, 25.0]]
    notes = "\n".join(table.warnings)
    assert "P_00008 RIGHT MLO: 2 image files of different or unknown size" in notes
    assert "60x40" in notes and "50x40" in notes
    assert "1 view(s) appear as one image file per table" in notes


def _one_mass_case(root, patient: str, img: str, crop: str, mask: str):
    """The labels of a mass test table (publisher's columns) with one malignant LEFT CC row."""
    t = root / "mass_case_description_test_set.csv"
    with open(t, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(MASS_COLUMNS)
        w.writerow([patient, 1, "LEFT", "CC", 1, "mass", "", "", 4, "MALIGNANT", 5, img, crop,
                    mask])
    return load_labels(f"cbis-ddsm:{t}", roots=[root])


def test_cbis_ddsm_mask_of_another_size_gives_no_box_and_a_warning(tmp_path):
    img, crop, mask = cbis_paths("Mass-Test_P_00003_LEFT_CC", 4)
    write_dicom(tmp_path / img, np.zeros((50, 50), np.uint16))
    m = np.zeros((40, 40), np.uint8)
    m[1:3, 1:3] = 255
    write_dicom(tmp_path / mask, m)
    table = _one_mass_case(tmp_path, "P_00003", img, crop, mask)
    assert table.lookup(tmp_path / img).boxes == []
    # a file of another size than its image is a crop, never a mask (whatever its column)
    assert len(table.warnings) == 1 and "40x40, image 50x50: a crop" in table.warnings[0]


def test_cbis_ddsm_fifo_at_the_mask_path_is_a_warning_not_a_hang(tmp_path):
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    img, crop, mask = cbis_paths("Mass-Test_P_00004_LEFT_CC", 5)
    write_dicom(tmp_path / img, np.zeros((50, 50), np.uint16))
    (tmp_path / mask).parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(tmp_path / mask)  # dcmread on it would block forever
    table = _one_mass_case(tmp_path, "P_00004", img, crop, mask)
    assert table.lookup(tmp_path / img).boxes == []
    assert len(table.warnings) == 1 and "not a regular file" in table.warnings[0]


def test_cbis_ddsm_bad_pathology(tmp_path):
    t = tmp_path / "calc_case_description_train_set.csv"
    with open(t, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CALC_COLUMNS)
        w.writerow(["P_1", 2, "LEFT", "CC", 1, "calcification", "", "", 3, "UNSURE", 2, "a.dcm",
                    "", ""])
    with pytest.raises(LabelError) as exc:
        load_labels(f"cbis-ddsm:{t}", strict=True)
    assert f"{t}:2" in str(exc.value) and "column pathology" in str(exc.value)
    table = load_labels(f"cbis-ddsm:{t}")  # default: that value left out, counted
    row = table.lookup(tmp_path / "a.dcm")
    assert (row.pathology, row.birads, row.density) == (None, "3", "B")
    assert table.dropped["pathology"]["count"] == 1
    assert table.dropped["pathology"]["examples"][0].startswith(
        "calc_case_description_train_set.csv:2: 'UNSURE'")


def test_cbis_ddsm_legend_quirks_drop_a_value_or_a_row_not_the_load(tmp_path):
    """breast density 0 (audits of the calc table) is no density, counted, even with
    --strict-labels; an unknown value drops that value; a row without patient_id, side or
    image path is left out, counted; cells are stripped; the split is the table's."""
    uid = "1.3.6.1.4.1.9590.100.1.2"
    img = [f"Calc-Test_P_0174{n}_RIGHT_CC/{uid}.{n}1/{uid}.{n}2/000000.dcm" for n in range(5)]
    _, calc = write_cbis_tables(tmp_path, [], [
        ["P_01743", 0, "RIGHT", "CC", 1, "calcification", "", "", 4, "BENIGN", 3, img[0], "",
         ""],
        [" P_01744 ", " 2\n", "RIGHT ", " MLO", 1, "calcification", "", "", "4\n", "MALIGNANT",
         3, f" {img[1]}\n", "", ""],
        ["P_01745", 2, "RIGHT", "CC", 1, "calcification", "", "", 4, "UNSURE", 3, img[2], "",
         ""],
        ["", 2, "RIGHT", "CC", 1, "calcification", "", "", 4, "BENIGN", 3, img[3], "", ""],
        ["P_01747", 2, "MIDDLE", "CC", 1, "calcification", "", "", 4, "BENIGN", 3, img[4], "",
         ""]], split="test")
    table = load_labels(f"cbis-ddsm:{calc}", roots=[tmp_path])
    rows = [table.lookup(tmp_path / p) for p in img]
    assert (rows[0].density, rows[0].birads, rows[0].split) == (None, "4", "test")
    assert (rows[1].patient, rows[1].laterality, rows[1].view, rows[1].density,
            rows[1].birads, rows[1].pathology) == ("P_01744", "R", "MLO", "B", "4", "malignant")
    assert (rows[2].pathology, rows[2].density) == (None, "B")
    assert rows[3] is None and rows[4] is None  # rows left out
    assert {k: v["count"] for k, v in table.dropped.items()} == {
        "pathology": 1, "left or right breast": 1, cbis_ddsm.REQUIRED: 2}
    assert table.dropped[cbis_ddsm.REQUIRED]["examples"][0].startswith(
        "calc_case_description_test_set.csv:5: ")
    assert table.warnings == ["calc_case_description_test_set.csv: 1 row(s) with breast "
                              "density 0 (row(s) 2; a known quirk of the published tables, "
                              "reported by third-party audits): their images have no density "
                              "label"]
    with pytest.raises(LabelError, match="column pathology"):
        load_labels(f"cbis-ddsm:{calc}", roots=[tmp_path], strict=True)


def test_cbis_ddsm_density_zero_is_no_error_when_strict(tmp_path):
    _, calc = write_cbis_tables(tmp_path, [], [
        ["P_01743", 0, "RIGHT", "CC", 1, "calcification", "", "", 4, "BENIGN", 3,
         "Calc-Training_P_01743_RIGHT_CC/1.2.1/1.2.2/000000.dcm", "", ""]])
    table = load_labels(f"cbis-ddsm:{calc}", strict=True)
    (row,) = table.by_path.values()
    assert (row.density, row.split) == (None, "train")
    assert table.dropped == {} and "1 row(s) with breast density 0" in table.warnings[0]


def test_cbis_ddsm_split_from_the_case_folder_when_the_table_name_has_none(tmp_path):
    t = tmp_path / "my_masses.csv"
    write_csvs({t: (MASS_COLUMNS, [
        ["P_1", 2, "LEFT", "CC", 1, "mass", "", "", 4, "BENIGN", 3,
         "Mass-Training_P_1_LEFT_CC/1.2.1/1.2.2/000000.dcm", "", ""],
        ["P_2", 2, "LEFT", "CC", 1, "mass", "", "", 4, "BENIGN", 3,
         "Mass-Test_P_2_LEFT_CC/1.2.3/1.2.4/000000.dcm", "", ""]])})
    table = load_labels(f"cbis-ddsm:{t}")
    assert sorted((r.patient, r.split) for r in table.by_path.values()) == [
        ("P_1", "train"), ("P_2", "test")]


# ----------------------------------------------------------------------- generic table

def _generic(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_generic_csv_columns_any_case_and_values(tmp_path):
    p = _generic(tmp_path / "labels.csv",
                 ["Path", "PATIENT", "Laterality", "View", "Pathology", "BIRADS", "Density",
                  "boxes", "my_notes"],
                 [["a.dcm", "P1", "left", "mlo", "Malignant", "4C", "2",
                   json.dumps([[1, 2, 30, 40]]), "x"],
                  ["sub/b.dcm", "P1", "R", "CC", "0", "-", "", "", ""]])
    table = load_labels(f"csv:{p}")
    a, b = table.lookup(tmp_path / "a.dcm"), table.lookup(tmp_path / "sub" / "b.dcm")
    assert (a.patient, a.laterality, a.view, a.pathology, a.birads, a.density, a.boxes) == (
        "P1", "L", "MLO", "malignant", "4", "B", [[1.0, 2.0, 30.0, 40.0]])
    assert (b.laterality, b.view, b.pathology, b.birads, b.density) == ("R", "CC", "benign",
                                                                        None, None)
    assert table.tasks(b)["diagnosis"] == 0  # a missing BI-RADS does not exclude


def test_generic_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"path": "a.dcm", "birads": 3, "density": "C",
                                          "boxes": [[1.0, 1.0, 5.0, 6.0]]}]),
                   tmp_path / "l.parquet")
    row = load_labels(str(tmp_path / "l.parquet")).lookup(tmp_path / "a.dcm")
    assert (row.birads, row.density, row.boxes) == ("3", "C", [[1.0, 1.0, 5.0, 6.0]])


@pytest.mark.parametrize("field,value,msg", [("boxes", "[[5, 5, 1, 1]]", "xmax > xmin"),
                                             ("boxes", "not json", "JSON"),
                                             ("pathology", "weird", "unknown pathology"),
                                             ("birads", "7", "not a BI-RADS category"),
                                             ("birads", "=SUM(A1:A3)", "formula"),
                                             ("density", "F", "not a breast density"),
                                             ("laterality", "both", "not a laterality")])
def test_generic_csv_bad_values_name_file_row_and_column(tmp_path, field, value, msg):
    row = {"path": "a.dcm", "pathology": "", "boxes": "", "birads": "", "density": "",
           "laterality": ""}
    row[field] = value
    p = _generic(tmp_path / "labels.csv", list(row), [["b.dcm", "", "", "", "", ""],
                                                      list(row.values())])
    with pytest.raises(LabelError) as exc:
        load_labels(str(p), strict=True)
    assert f"{p}:3" in str(exc.value) and msg in str(exc.value)
    assert f"column {field}" in str(exc.value)
    table = load_labels(str(p))  # default: that value of that row left out, counted
    assert getattr(table.lookup(tmp_path / "a.dcm"), field) in (None, [])
    assert table.dropped == {field: {"count": 1, "examples": [
        table.dropped[field]["examples"][0]]}}
    assert table.dropped[field]["examples"][0].startswith("labels.csv:3: ")


def test_generic_csv_needs_path_and_one_row_per_image(tmp_path):
    p = _generic(tmp_path / "l.csv", ["file", "birads"], [["a.dcm", 1]])
    with pytest.raises(LabelError, match="no 'path' column"):
        load_labels(f"csv:{p}")
    p = _generic(tmp_path / "l2.csv", ["path", "birads"], [["a.dcm", 1], ["./a.dcm", 2]])
    with pytest.raises(LabelError, match="listed twice"):
        load_labels(f"csv:{p}")


# ---------------------------------------------------------------------------- VinDr-Mammo

def test_vindr_adapter(tmp_path):
    _generic(tmp_path / "breast-level_annotations.csv",
             ["study_id", "series_id", "image_id", "laterality", "view_position",
              "height", "width", "breast_birads", "breast_density", "split"],
             [["s1", "x", "img1", "L", "CC", 3518, 2800, "BI-RADS 4", "DENSITY C", "training"],
              ["s1", "x", "img2", "R", "MLO", 3518, 2800, "BI-RADS 1", "DENSITY B", "test"]])
    _generic(tmp_path / "finding_annotations.csv",
             ["study_id", "series_id", "image_id", "laterality", "view_position", "height",
              "width", "breast_birads", "breast_density", "finding_categories",
              "finding_birads", "xmin", "ymin", "xmax", "ymax", "split"],
             [["s1", "x", "img1", "L", "CC", 3518, 2800, "BI-RADS 4", "DENSITY C", "['Mass']",
               "BI-RADS 4", 10, 20, 50, 80, "training"],
              ["s1", "x", "img2", "R", "MLO", 3518, 2800, "BI-RADS 1", "DENSITY B",
               "['No Finding']", "", "", "", "", "", "test"]])
    table = load_labels(f"vindr:{tmp_path}")
    a = table.lookup(tmp_path / "images" / "s1" / "img1.dicom")
    assert (a.birads, a.density, a.laterality, a.view, a.boxes) == (
        "4", "C", "L", "CC", [[10, 20, 50, 80]])
    assert table.tasks(a) == {"diagnosis": None, "birads2": 1, "birads3": 1, "density": 2}
    b = table.lookup(tmp_path / "img2.dicom")
    assert b.boxes == []
    # the publisher's split, training -> train; one study per patient
    assert (a.split, b.split) == ("train", "test")
    assert (a.patient, a.study) == ("s1", "s1")


VINDR_FINDING = ["image_id", "study_id", "series_id", "laterality", "view_position", "height",
                 "width", "breast_birads", "breast_density", "finding_categories",
                 "finding_birads", "xmin", "ymin", "xmax", "ymax", "split"]


def _vindr_finding(image: str, categories: str, box=("", "", "", ""), birads="BI-RADS 4"):
    """One row of finding_annotations.csv in the publisher's columns."""
    return [image, "s1", "x", "L", "CC", 3518, 2800, "BI-RADS 4", "DENSITY C", categories,
            birads, *box, "training"]


def _vindr_dir(root: Path, findings: list[list]) -> Path:
    _generic(root / "breast-level_annotations.csv", VINDR_BREAST,
             [["s1", "x", f"img{i}", "L", "CC", 3518, 2800, "BI-RADS 4", "DENSITY C",
               "training"] for i in range(1, 8)])
    _generic(root / "finding_annotations.csv", VINDR_FINDING, findings)
    return root


@pytest.mark.parametrize("categories,stored", [
    ("['Mass']", True), ("['Suspicious Calcification']", True),
    ("['Architectural Distortion']", True), ("['Asymmetry']", True),
    ("['Focal Asymmetry']", True), ("['Focal Asymmetry', 'Mass']", True),
    ("['Suspicious Calcification', 'Skin Thickening']", True),   # one lesion is enough
    ("['Global Asymmetry']", False), ("['Suspicious Lymph Node']", False),
    ("['Skin Thickening']", False), ("['Nipple Retraction']", False),
    ("['Skin Retraction']", False), ("['Other']", False),
])
def test_vindr_boxes_only_for_lesion_categories(tmp_path, categories, stored):
    _vindr_dir(tmp_path, [_vindr_finding("img1", categories, (10, 20, 50, 80)),
                          _vindr_finding("img2", "['No Finding']", birads="")])
    table = load_labels(f"vindr:{tmp_path}")
    assert table.lookup(tmp_path / "img1.dicom").boxes == ([[10, 20, 50, 80]] if stored else [])
    assert table.dropped == {}
    if stored:
        assert table.warnings == []
    else:
        name = categories.strip("[]'")
        assert table.warnings == [
            f"finding_annotations.csv: 1 finding box(es) not stored, their categories are not "
            f"lesions to detect ({name} 1); lesion boxes stored: 0 (none)"]


def test_vindr_category_counts_unknown_category_and_partial_box(tmp_path):
    """Counts per category in a table warning; a category no legend has and a finding with
    partial coordinates are dropped and counted (--strict-labels: an error)."""
    _vindr_dir(tmp_path, [
        _vindr_finding("img1", "['Mass']", (10, 20, 50, 80)),
        _vindr_finding("img1", "['Suspicious Calcification', 'Mass']", (60, 20, 90, 80)),
        _vindr_finding("img2", "['Global Asymmetry']", (10, 20, 50, 80)),
        _vindr_finding("img2", "['Skin Thickening', 'Global Asymmetry']", (10, 20, 50, 80)),
        _vindr_finding("img3", "['Calcified Vessel']", (10, 20, 50, 80)),
        _vindr_finding("img4", "['Mass']", (10, 20, "", "")),
        _vindr_finding("img5", "['No Finding']", birads=""),
        _vindr_finding("img6", "Mass, Calcification", (10, 20, 50, 80))])
    table = load_labels(f"vindr:{tmp_path}")
    got = {i: table.lookup(tmp_path / f"img{i}.dicom").boxes for i in range(1, 7)}
    assert got == {1: [[10, 20, 50, 80], [60, 20, 90, 80]], 2: [], 3: [], 4: [], 5: [], 6: []}
    assert table.warnings == [
        "finding_annotations.csv: 4 finding box(es) not stored, their categories are not "
        "lesions to detect (Global Asymmetry 2, Skin Thickening 1, unknown category 2); "
        "lesion boxes stored: 2 (Mass 2, Suspicious Calcification 1)"]
    assert {k: v["count"] for k, v in table.dropped.items()} == {
        "finding_categories": 2, "xmin/ymin/xmax/ymax": 1}
    assert "finding_annotations.csv:6: 'Calcified Vessel'" in (
        table.dropped["finding_categories"]["examples"][0])
    with pytest.raises(LabelError) as exc:
        load_labels(f"vindr:{tmp_path}", strict=True)
    msg = str(exc.value)
    assert "finding_annotations.csv:6" in msg and "column finding_categories" in msg
    assert "Calcified Vessel" in msg


def test_vindr_partial_coordinates_strict_names_row_and_columns(tmp_path):
    _vindr_dir(tmp_path, [_vindr_finding("img1", "['Mass']", (10, 20, 50, ""))])
    with pytest.raises(LabelError, match="partial coordinates") as exc:
        load_labels(f"vindr:{tmp_path}", strict=True)
    assert "finding_annotations.csv:2" in str(exc.value)
    assert "column xmin/ymin/xmax/ymax" in str(exc.value)


def test_vindr_split_outside_the_legend_is_dropped(tmp_path):
    _generic(tmp_path / "breast-level_annotations.csv", VINDR_BREAST,
             [["s1", "x", "img1", "L", "CC", 10, 10, "BI-RADS 1", "DENSITY A", "validation"],
              ["s1", "x", "img2", "L", "MLO", 10, 10, "BI-RADS 1", "DENSITY A", "test"]])
    _generic(tmp_path / "finding_annotations.csv", VINDR_FINDING, [])
    table = load_labels(f"vindr:{tmp_path}")
    assert [table.lookup(tmp_path / f"img{i}.dicom").split for i in (1, 2)] == [None, "test"]
    assert table.dropped["split"]["count"] == 1
    with pytest.raises(LabelError, match="column split"):
        load_labels(f"vindr:{tmp_path}", strict=True)


# ------------------------------------------------------------- hostile tables (issue 12)

@pytest.mark.parametrize("encoding", ["utf-8-sig", "latin-1", "cp1252", "utf-16"])
def test_generic_csv_encodings_and_bom(tmp_path, encoding):
    """Spreadsheet exports: a UTF-8 BOM used to hide the first column (here ``patient``),
    a Latin-1 / Windows-1252 table was unreadable."""
    p = tmp_path / "l.csv"
    p.write_bytes("patient,path,birads\nJos\u00e9 \u00c5,a.dcm,2\nM\u00fcller,b.dcm,3\n"
                  .encode(encoding))
    table = load_labels(f"csv:{p}")
    a, b = table.lookup(tmp_path / "a.dcm"), table.lookup(tmp_path / "b.dcm")
    assert (a.patient, a.birads, b.patient) == ("Jos\u00e9 \u00c5", "2", "M\u00fcller")


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_csv_decoded_while_streamed_falls_back_on_a_late_byte(tmp_path, encoding):
    """The table is decoded while it is read: a Windows-1252 byte far beyond the first
    buffer (here in the last row) still makes the whole table Windows-1252, and only the
    asked-for columns (any case) are kept."""
    from mammoprep.labels.reading import read_table, table_columns

    p = tmp_path / "wide.csv"
    rows = "".join(f"P{i},{i}.dcm,x{i},2\n" for i in range(20000))
    p.write_bytes(("Patient,PATH,other,birads\n" + rows + "M\u00fcller\u00ff,z.dcm,y,3\n")
                  .encode(encoding))
    got = read_table(p, ["patient", "path"])
    assert len(got) == 20001 and got[0] == {"Patient": "P0", "PATH": "0.dcm"}
    assert got[-1] == {"Patient": "M\u00fcller\u00ff", "PATH": "z.dcm"}
    assert read_table(p)[-1]["other"] == "y"
    assert table_columns(p) == ["Patient", "PATH", "other", "birads"]  # the header alone


def test_partly_filled_patient_column_is_an_error(tmp_path):
    """Table ids for some rows and header hashes for the others would split one patient
    across folds."""
    p = _generic(tmp_path / "l.csv", ["path", "patient", "birads"],
                 [["a.dcm", "P1", 1], ["b.dcm", "", 2], ["c.dcm", "P2", 1]])
    with pytest.raises(LabelError) as exc:
        load_labels(f"csv:{p}")
    assert f"{p}:3" in str(exc.value) and "column patient" in str(exc.value)
    assert "filled for 2 of 3 rows" in str(exc.value)
    empty = _generic(tmp_path / "e.csv", ["path", "patient"], [["a.dcm", ""], ["b.dcm", "-"]])
    assert load_labels(f"csv:{empty}").lookup(tmp_path / "a.dcm").patient is None


def test_corrupt_parquet_is_a_label_error(tmp_path):
    p = tmp_path / "l.parquet"
    p.write_bytes(b"PAR1" + b"\x00garbage" * 20)
    with pytest.raises(LabelError, match="cannot read the label table"):
        load_labels(f"parquet:{p}")


def test_rsna_duplicate_image_is_an_error(tmp_path):
    csv_path = tmp_path / "train.csv"
    _rsna_csv(csv_path, [(1, 2, "L", "CC", 0, "", ""), (1, 2, "L", "CC", 1, "", "")])
    with pytest.raises(LabelError, match="listed twice") as exc:
        load_labels(f"rsna:{csv_path}")
    assert f"{csv_path}:3" in str(exc.value) and f"{csv_path}:2" in str(exc.value)


VINDR_BREAST = ["study_id", "series_id", "image_id", "laterality", "view_position", "height",
                "width", "breast_birads", "breast_density", "split"]


def test_vindr_duplicate_rows_and_missing_image_id(tmp_path):
    _generic(tmp_path / "breast-level_annotations.csv", VINDR_BREAST,
             [["s1", "x", "img1", "L", "CC", 10, 10, "BI-RADS 1", "DENSITY A", "training"],
              ["s1", "x", "img1", "L", "CC", 10, 10, "BI-RADS 4", "DENSITY A", "training"]])
    _generic(tmp_path / "finding_annotations.csv",
             ["study_id", "finding_categories", "xmin", "ymin", "xmax", "ymax"],
             [["s1", "['Mass']", 1, 2, 3, 4]])
    with pytest.raises(LabelError, match="column\\(s\\) image_id missing"):
        load_labels(f"vindr:{tmp_path}")
    _generic(tmp_path / "finding_annotations.csv",
             ["study_id", "image_id", "finding_categories", "xmin", "ymin", "xmax", "ymax"], [])
    with pytest.raises(LabelError, match="listed twice"):
        load_labels(f"vindr:{tmp_path}")


@pytest.mark.parametrize("coords,what", [((50, 20, 10, 80), "xmax > xmin"),
                                         (("ten", 20, 50, 80), "not a JSON list")])
def test_vindr_bad_box_names_the_row_and_columns(tmp_path, coords, what):
    _generic(tmp_path / "breast-level_annotations.csv", VINDR_BREAST,
             [["s1", "x", "img1", "L", "CC", 10, 10, "BI-RADS 4", "DENSITY A", "training"]])
    _generic(tmp_path / "finding_annotations.csv",
             ["study_id", "image_id", "finding_categories", "xmin", "ymin", "xmax", "ymax"],
             [["s1", "img1", "['Mass']", *coords]])
    with pytest.raises(LabelError, match=what) as exc:
        load_labels(f"vindr:{tmp_path}", strict=True)
    assert "finding_annotations.csv:2" in str(exc.value)
    assert "xmin/ymin/xmax/ymax" in str(exc.value)
    table = load_labels(f"vindr:{tmp_path}")   # by default: that box dropped, counted
    assert table.lookup(tmp_path / "img1.dicom").boxes == []
    assert table.dropped["xmin/ymin/xmax/ymax"]["count"] == 1


# ------------------------------------------------------------------------------- EMBED
# Columns and codes as the EMBED Open Data descriptor (Emory-HITI/EMBED_Open_Data, README
# sections VI-VIII) defines them; values as the published CSVs write them (ids as digits,
# numeric columns with blanks as "4.0", anonymised server paths).

EMBED_META_COLUMNS = ["Manufacturer", "ManufacturerModelName", "ViewPosition",
                      "empi_anon", "acc_anon", "study_date_anon", "cohort_num",
                      "ImageLateralityFinal", "FinalImageType", "spot_mag", "png_path",
                      "anon_dicom_path", "num_roi", "match_level", "ROI_coords"]
EMBED_CLIN_COLUMNS = ["empi_anon", "acc_anon", "study_date_anon", "desc", "numfind",
                      "side", "asses", "tissueden", "bside", "path_severity",
                      "total_L_find", "total_R_find"]


def embed_meta_row(empi, acc, uid, lat, view, kind="2D", spot="", rois=""):
    path = f"/mnt/NAS2/mammo/anon_dicom/cohort_1/{empi}/{acc}/{uid}.dcm"
    n = rois.count("[") - 2 if rois else 0
    return ["HOLOGIC, Inc.", "Selenia Dimensions", view, empi, acc, "2019-03-02", 1, lat,
            kind, spot, "", path, max(n, 0), "", rois]


def embed_clin_row(empi, acc, side, asses, dens, bside="", sev="", desc="MG Screen Bilat"):
    return [empi, acc, "2019-03-05", desc, 1, side, asses, dens, bside, sev, 0, 0]


def write_embed_tables(folder: Path, meta: list, clin: list, reduced: bool = False
                       ) -> tuple[Path, Path]:
    suffix = "_reduced" if reduced else ""
    folder.mkdir(parents=True, exist_ok=True)
    return write_csvs({folder / f"EMBED_OpenData_metadata{suffix}.csv": (EMBED_META_COLUMNS, meta),
                       folder / f"EMBED_OpenData_clinical{suffix}.csv": (EMBED_CLIN_COLUMNS, clin)})


def test_embed_tables_per_breast_labels(tmp_path):
    meta = [
        # exam 1: screening recall of the left breast (A = BI-RADS 0) with a finding the
        # radiologist called benign (B) too; biopsy of the left breast: invasive cancer
        embed_meta_row(11, 901, "1.2.3.1", "L", "CC", rois="[[[1165, 822, 1294, 1000]]]"),
        embed_meta_row(11, 901, "1.2.3.2", "L", "MLO"),
        embed_meta_row(11, 901, "1.2.3.3", "R", "CC"),
        embed_meta_row(11, 901, "1.2.3.4", "R", "MLO", kind="cview"),
        # exam 2: bilateral finding (side B), benign biopsy on the right (bside R), a
        # non-breast cancer (6) on the left, and a spot magnification view
        embed_meta_row(12, 902, "1.2.4.1", "L", "CC", spot="1.0"),
        embed_meta_row(12, 902, "1.2.4.2", "L", "MLO",
                       rois="((10, 20, 30, 40), (50, 60, 70, 80))"),
        embed_meta_row(12, 902, "1.2.4.3", "R", "MLO"),
        # exam 3: a male patient (tissueden 5), no finding row side: both breasts
        embed_meta_row(13, 903, "1.2.5.1", "R", "CC"),
        # exam 4: no clinical row at all
        embed_meta_row(14, 904, "1.2.6.1", "L", "CC"),
    ]
    clin = [
        embed_clin_row(11, 901, "L", "A", "3.0", sev="0.0"),
        embed_clin_row(11, 901, "L", "B", "3.0"),
        embed_clin_row(11, 901, "R", "N", "3.0"),
        embed_clin_row(12, 902, "B", "S", "2", bside="R", sev="4"),
        embed_clin_row(12, 902, "L", "P", "2", sev="6"),
        embed_clin_row(12, 902, "R", "K", "2"),
        embed_clin_row(13, 903, "", "N", "5"),
    ]
    write_embed_tables(tmp_path / "tables", meta, clin)
    table = load_labels(f"embed:{tmp_path}")  # the dataset root above tables/
    assert table.kind == "embed" and table.rules.diagnosis_birads == "any"

    def labels(uid):
        r = table.lookup(Path(f"/data/cohort_1/x/y/{uid}.dcm"))
        return (r.laterality, r.view, r.pathology, r.birads, r.density)

    # BI-RADS 0 outranks 2 (ACR order); the recall's cancer labels the recalled breast only
    assert labels("1.2.3.1") == ("L", "CC", "malignant", "0", "C")
    assert labels("1.2.3.2") == ("L", "MLO", "malignant", "0", "C")
    assert labels("1.2.3.3") == ("R", "CC", None, "1", "C")
    # side B reaches both breasts (S = 4 outranks P = 3 on the left, K = 6 on the right);
    # the benign result is the right breast's (bside); severity 6 is no breast label
    assert labels("1.2.4.2") == ("L", "MLO", None, "4", "B")
    assert labels("1.2.4.3") == ("R", "MLO", "benign", "4", "B")
    assert labels("1.2.5.1") == ("R", "CC", None, "1", None)  # male: no density
    assert labels("1.2.6.1") == ("L", "CC", None, None, None)
    # boxes: EMBED's [ymin, xmin, ymax, xmax] as [xmin, ymin, xmax, ymax]
    assert table.lookup(Path("1.2.3.1.dcm")).boxes == [[822.0, 1165.0, 1000.0, 1294.0]]
    assert table.lookup(Path("1.2.4.2.dcm")).boxes == [[20.0, 10.0, 40.0, 30.0],
                                                       [60.0, 50.0, 80.0, 70.0]]
    # C-view and the spot magnification are named but skipped, whatever folder they are in
    assert table.auxiliary_stems == {"1.2.3.4", "1.2.4.1"}
    assert table.is_auxiliary("/elsewhere/1.2.3.4.dcm")
    # files named by their UID without an extension, as PACS exports write them
    assert table.lookup(Path("/export/1.2.3.1")).view == "CC"
    assert table.is_auxiliary("/export/1.2.3.4")
    assert not table.is_auxiliary("/elsewhere/1.2.3.3.dcm")
    assert table.lookup(Path("1.2.3.4.dcm")) is None
    assert any("1 C-view, 1 spot/magnification" in w for w in table.warnings)
    assert any("1 image(s) of exams without a clinical row" in w for w in table.warnings)
    # task rules: a recall with a proven cancer is a diagnosis positive; BI-RADS 0 is in
    # no BI-RADS task; density C
    t = table.tasks(table.lookup(Path("1.2.3.1.dcm")))
    assert t == {"diagnosis": 1, "birads2": None, "birads3": None, "density": 2}
    assert table.tasks(table.lookup(Path("1.2.4.3.dcm")))["birads3"] == 1


def test_embed_reduced_tables_explicit_files_and_density_disagreement(tmp_path):
    meta = [embed_meta_row("21", "931", "9.1", "L", "CC"),
            embed_meta_row("21", "931", "9.2", "R", "CC")]
    clin = [embed_clin_row("21.0", "931.0", "L", "N", "1"),
            embed_clin_row(21, 931, "R", "B", "4")]
    meta_csv, clin_csv = write_embed_tables(tmp_path, meta, clin, reduced=True)
    for spec in (f"embed:{tmp_path}", f"embed:{clin_csv},{meta_csv}"):
        table = load_labels(spec)
        r = table.lookup(Path("9.2.dcm"))
        assert (r.patient, r.study, r.birads, r.density) == ("21", "931", "2", None)
        assert any("disagree on tissueden" in w for w in table.warnings)


@pytest.mark.parametrize("where, value, column", [
    ("clin", "Z", "asses"), ("clin", "7", "path_severity"), ("clin", "Q", "side"),
    ("clin", "Q", "bside"), ("clin", "9", "tissueden"),
    ("meta", "tomo", "FinalImageType"), ("meta", "2", "spot_mag"),
    ("meta", "Q", "ImageLateralityFinal"), ("meta", "C C", "ViewPosition"),
    ("meta", "[[1, 2, 3]]", "ROI_coords"), ("meta", "[[5, 5, 1, 1]]", "ROI_coords"),
])
def test_embed_bad_values_name_the_file_row_and_column(tmp_path, where, value, column):
    meta = [embed_meta_row(31, 941, "8.1", "L", "CC"), embed_meta_row(31, 941, "8.2", "L", "MLO")]
    clin = [embed_clin_row(31, 941, "L", "N", "2"),
            embed_clin_row(31, 941, "L", "N", "2", sev="4")]
    rows, header = (clin, EMBED_CLIN_COLUMNS) if where == "clin" else (meta,
                                                                        EMBED_META_COLUMNS)
    rows[1][header.index(column)] = value
    meta_csv, clin_csv = write_embed_tables(tmp_path, meta, clin)
    with pytest.raises(LabelError) as e:  # --strict-labels: the load stops
        load_labels(f"embed:{tmp_path}", strict=True)
    msg = str(e.value)
    assert f"{clin_csv if where == 'clin' else meta_csv}:3" in msg, msg
    assert column in msg and value in msg
    # default: that one value is left out and counted, naming the table row
    table = load_labels(f"embed:{tmp_path}")
    assert table.dropped[column]["count"] == 1, table.dropped
    assert f"{(clin_csv if where == 'clin' else meta_csv).name}:3" in \
        table.dropped[column]["examples"][0]
    assert table.lookup(Path("8.1.dcm")).view == "CC"  # the other rows keep their labels


def test_embed_legend_values_no_assessment_and_unknown_sides(tmp_path):
    """asses X ("No Assessment" in the publisher's legend) is a value: no BI-RADS; a finding
    whose side is not in the legend reaches no breast (neither both nor one)."""
    meta = [embed_meta_row(51, 961, "6.1", "L", "CC"), embed_meta_row(51, 961, "6.2", "R", "CC"),
            embed_meta_row(52, 962, "6.3", "L", "CC"), embed_meta_row(52, 962, "6.4", "R", "CC")]
    clin = [embed_clin_row(51, 961, "L", "X", "2"), embed_clin_row(51, 961, "R", "B", "2"),
            embed_clin_row(52, 962, "Q", "M", "3", sev="0"),
            embed_clin_row(52, 962, "L", "N", "3", bside="Z", sev="0")]
    write_embed_tables(tmp_path, meta, clin)
    table = load_labels(f"embed:{tmp_path}", strict=False)
    got = {u: (r.birads, r.pathology, r.density) for u in ("6.1", "6.2", "6.3", "6.4")
           for r in [table.lookup(Path(f"{u}.dcm"))]}
    assert got == {"6.1": (None, None, "B"), "6.2": ("2", None, "B"),
                   "6.3": ("1", None, "C"), "6.4": (None, None, "C")}
    assert set(table.dropped) == {"side", "bside"} and "asses" not in table.dropped
    with pytest.raises(LabelError, match="column side"):
        load_labels(f"embed:{tmp_path}", strict=True)


def test_embed_structural_errors(tmp_path):
    meta = [embed_meta_row(41, 951, "7.1", "L", "CC"), embed_meta_row(41, 952, "7.1", "L", "CC")]
    write_embed_tables(tmp_path / "dup", meta, [embed_clin_row(41, 951, "L", "N", "2")])
    with pytest.raises(LabelError, match="listed twice"):
        load_labels(f"embed:{tmp_path / 'dup'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelError, match="EMBED metadata table missing"):
        load_labels(f"embed:{tmp_path / 'empty'}")
    m, c = write_embed_tables(tmp_path / "two", meta[:1], [])
    with pytest.raises(LabelError, match="cannot tell the metadata table"):
        load_labels(f"embed:{m},{m}")
    with open(c, "w") as fh:
        fh.write("empi_anon,acc_anon,side\n41,951,L\n")
    with pytest.raises(LabelError, match="asses"):
        load_labels(f"embed:{m},{c}")
