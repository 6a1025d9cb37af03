"""Label adapters and task rules."""

from __future__ import annotations

import csv
import json

import pytest

from mammoprep.labels import (LabelError, load_labels, norm_birads, norm_density, task_labels)


@pytest.mark.parametrize("raw,expected", [("4", "4"), (4, "4"), (4.0, "4"), ("4A", "4"),
                                          ("BI-RADS 5", "5"), ("-", None), ("", None),
                                          (None, None), (float("nan"), None), ("0", "0")])
def test_norm_birads(raw, expected):
    assert norm_birads(raw) == expected


@pytest.mark.parametrize("raw,expected", [("A", "A"), ("DENSITY C", "C"), (1, "A"), ("4", "D"),
                                          ("-", None), ("", None), ("x", None)])
def test_norm_density(raw, expected):
    assert norm_density(raw) == expected


@pytest.mark.parametrize("args,expected", [
    (("benign", "2", "B"), {"diagnosis": 0, "birads2": 0, "birads3": 0, "density": 1}),
    (("malignant", "5", "D"), {"diagnosis": 1, "birads2": 1, "birads3": 2, "density": 3}),
    (("malignant", "4", None), {"diagnosis": 1, "birads2": 1, "birads3": 1, "density": None}),
    (("benign", "3", "A"), {"diagnosis": 0, "birads2": 0, "birads3": 1, "density": 0}),
    # BI-RADS 0: excluded from diagnosis and BI-RADS tasks, kept for density
    (("malignant", "0", "C"), {"diagnosis": None, "birads2": None, "birads3": None,
                               "density": 2}),
    ((None, None, None), {"diagnosis": None, "birads2": None, "birads3": None, "density": None}),
])
def test_task_labels(args, expected):
    assert task_labels(*args) == expected


def test_generic_csv(tmp_path):
    (tmp_path / "a.dcm").write_bytes(b"")
    p = tmp_path / "labels.csv"
    with open(p, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["path", "patient", "pathology", "birads", "density", "boxes"])
        w.writeheader()
        w.writerow({"path": "a.dcm", "patient": "P1", "pathology": "Malignant", "birads": "4C",
                    "density": "2", "boxes": json.dumps([[1, 2, 30, 40]])})
    table = load_labels(f"csv:{p}")
    row = table.lookup(tmp_path / "a.dcm")
    assert (row.pathology, row.birads, row.density, row.boxes) == ("malignant", "4", "B",
                                                                   [[1.0, 2.0, 30.0, 40.0]])


@pytest.mark.parametrize("field,value,msg", [("boxes", "[[5, 5, 1, 1]]", "xmax > xmin"),
                                             ("boxes", "not json", "JSON"),
                                             ("pathology", "weird", "unknown pathology")])
def test_generic_csv_bad_values_name_file_row_and_column(tmp_path, field, value, msg):
    p = tmp_path / "labels.csv"
    row = {"path": "a.dcm", "pathology": "", "boxes": ""}
    row[field] = value
    with open(p, "w", newline="") as fh:
        w = csv.DictWriter(fh, list(row))
        w.writeheader()
        w.writerow(row)
    with pytest.raises(LabelError) as exc:
        load_labels(str(p))
    assert f"{p}:2" in str(exc.value) and msg in str(exc.value) and field in str(exc.value)


def test_unknown_label_kind():
    with pytest.raises(LabelError) as exc:
        load_labels("foo:/nowhere")
    assert "lumina:DIR" in str(exc.value)


def test_vindr_adapter(tmp_path):
    with open(tmp_path / "breast-level_annotations.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", "series_id", "image_id", "laterality", "view_position",
                    "breast_birads", "breast_density", "split"])
        w.writerow(["s1", "x", "img1", "L", "CC", "BI-RADS 4", "DENSITY C", "training"])
        w.writerow(["s1", "x", "img2", "R", "MLO", "BI-RADS 1", "DENSITY B", "training"])
    with open(tmp_path / "finding_annotations.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", "image_id", "finding_categories", "xmin", "ymin", "xmax", "ymax"])
        w.writerow(["s1", "img1", "['Mass']", 10, 20, 50, 80])
        w.writerow(["s1", "img2", "['No Finding']", "", "", "", ""])
    table = load_labels(f"vindr:{tmp_path}")
    a = table.lookup(tmp_path / "images" / "s1" / "img1.dicom")
    assert (a.birads, a.density, a.laterality, a.boxes) == ("4", "C", "L", [[10, 20, 50, 80]])
    assert table.lookup(tmp_path / "img2.dicom").boxes == []


def test_lumina_adapter_on_synthetic_cohort(tmp_path):
    from mammoprep.synth import generate_cohort

    generate_cohort(tmp_path, patients=6, seed=3, size=(96, 80))
    table = load_labels(f"lumina:{tmp_path}")
    with open(tmp_path / "labels.csv") as fh:
        truth = list(csv.DictReader(fh))
    assert truth
    for t in truth:
        row = table.lookup(tmp_path / t["path"])
        assert row is not None, t["path"]
        assert row.birads == (None if t["birads"] == "-" else t["birads"])
        assert row.density == (None if t["density"] == "-" else t["density"])
        if t["pathology"] == "malignant":
            assert row.pathology == "malignant"
        elif t["group"] == "Benign":
            assert row.pathology == "benign"
        else:  # the other breast of a malignant patient: excluded from diagnosis
            assert row.pathology is None
