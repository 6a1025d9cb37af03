"""Tests of the synthetic cohort generator (``mammoprep synth``)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from mammoprep import synth
from mammoprep.cli import main

J2K, JLS, RLE, EXPLICIT = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80",
                           "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1")
PATIENTS, SEED = 6, 7


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth_cohort(make_cohort) -> tuple[Path, dict]:
    """(root, summary) of the session's PATIENTS/SEED cohort (conftest.py), read-only."""
    return make_cohort.build(PATIENTS, SEED)


@pytest.fixture(scope="module")
def labels(synth_cohort) -> list[dict[str, str]]:
    return _read_csv(synth_cohort[0] / "labels.csv")


@pytest.fixture(scope="module")
def decoded(synth_cohort,
            labels) -> list[tuple[dict, pydicom.Dataset, np.ndarray, synth.SynthImage]]:
    """(label row, dataset, decoded stored pixels, re-rendered image) for every file."""
    plans = {p.case_id: p for p in synth.plan_cohort(PATIENTS, SEED)}
    out = []
    for row in labels:
        ds = pydicom.dcmread(synth_cohort[0] / row["path"])
        arr = ds.pixel_array
        img = synth.render_image(synth.image_spec(plans[row["patient"]], row["laterality"],
                                                  row["view"]))
        out.append((row, ds, arr, img))
    return out


# ----------------------------------------------------------------------------- determinism

def test_same_seed_byte_identical_different_seed_differs(tmp_path):
    a = synth.generate_cohort(tmp_path / "a", 2, 11)
    synth.generate_cohort(tmp_path / "b", 2, 11, workers=2)
    synth.generate_cohort(tmp_path / "c", 2, 12)
    da, db, dc = (_tree_digest(tmp_path / n) for n in "abc")
    assert a["images"] == 8 and len(da) == 8 + 4
    assert da == db
    assert set(da) == set(dc)
    assert all(da[k] != dc[k] for k in da if k.endswith(".dcm"))


def test_regenerating_into_same_directory_replaces_cohort(tmp_path):
    synth.generate_cohort(tmp_path, 3, 1)
    synth.generate_cohort(tmp_path, 2, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["Benign", "Malign", "labels.csv", "identities.csv", "Benign_Cases.xlsx",
         "Malign_Cases.xlsx"])
    assert len(list(tmp_path.rglob("*.dcm"))) == 8


def test_refuses_foreign_non_empty_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        synth.generate_cohort(tmp_path, 2, 0)
    (tmp_path / "labels.csv").write_text("path,label\n")     # someone else's labels
    (tmp_path / "Benign").mkdir()
    with pytest.raises(FileExistsError):
        synth.generate_cohort(tmp_path, 2, 0)
    assert (tmp_path / "keep.txt").read_text() == "mine" and (tmp_path / "Benign").is_dir()


# ----------------------------------------------------------------------------- layout / labels

def test_layout_and_csv_columns(synth_cohort, labels):
    out, summary = synth_cohort
    assert list(labels[0]) == list(synth.LABEL_COLUMNS)
    for col in ("patient", "group", "path", "laterality", "view", "pathology", "birads",
                "density", "vendor", "manufacturer", "model", "energy", "boxes",
                "lesion_types", "text_boxes"):
        assert col in labels[0]
    files = sorted(str(p.relative_to(out).as_posix()) for p in out.rglob("*.dcm"))
    assert files == sorted(r["path"] for r in labels)
    assert summary["images"] == len(labels) == 4 * PATIENTS
    for r in labels:
        assert r["path"] == f"{r['group']}/{r['patient']}/{r['laterality']}_{r['view']}.dcm"
        assert r["patient"][0] == r["group"][0] and len(r["patient"]) == 5
        assert r["laterality"] in ("L", "R") and r["view"] in ("CC", "MLO")
        assert r["pathology"] in ("benign", "malignant")
        assert r["birads"] in ("-", *"0123456")
        assert r["density"] in ("-", *"ABCD")
        assert r["vendor"] in synth.VENDORS
        prof = synth.VENDORS[r["vendor"]]
        assert (r["manufacturer"], r["model"], r["energy"]) == (prof.manufacturer, prof.model,
                                                                prof.energy)
        boxes, types = json.loads(r["boxes"]), json.loads(r["lesion_types"])
        assert len(boxes) == len(types) and set(types) <= {"mass", "calcification"}
        if r["pathology"] == "malignant":
            assert boxes
        elif boxes:   # a benign finding: one round mass in a breast the Benign sheet names
            assert r["group"] == "Benign" and types == ["mass"]
    assert {r["group"] for r in labels} == {"Benign", "Malign"}
    assert {r["vendor"] for r in labels} == set(synth.VENDORS)


def test_pathology_per_breast(labels):
    by_patient: dict[str, set[tuple[str, str]]] = {}
    for r in labels:
        by_patient.setdefault(r["patient"], set()).add((r["laterality"], r["pathology"]))
    for pid, breasts in by_patient.items():
        malignant = {lat for lat, path in breasts if path == "malignant"}
        if pid.startswith("B"):
            assert not malignant
        else:
            assert malignant          # at least one malignant breast; the other benign
            assert len({lat for lat, _ in breasts}) == 2
    # CC and MLO of a breast share labels (density is per view, as in the sheets)
    key = {}
    for r in labels:
        k = (r["patient"], r["laterality"])
        v = (r["pathology"], r["birads"], len(json.loads(r["boxes"])))
        assert key.setdefault(k, v) == v


def test_xlsx_sheets(synth_cohort, labels):
    """The published structure: exactly ID, RIGHT_OR_LEFT, BIRADS, BREAST COMPOSITION,
    MANUFACTOR; two rows per patient (MLO row, then CC row) describing the breast(s) the plan
    names; BIRADS equal on both rows; density per row. Checked against the plan, and
    labels.csv must agree with the sheet image by image."""
    import openpyxl

    out, _ = synth_cohort
    plans = {p.case_id: p for p in synth.plan_cohort(PATIENTS, SEED)}
    csv_rows = {(r["patient"], r["laterality"], r["view"]): r for r in labels}
    for group in ("Benign", "Malign"):
        ws = openpyxl.load_workbook(out / f"{group}_Cases.xlsx").active
        rows = list(ws.iter_rows(values_only=True))
        header, body = rows[0], rows[1:]
        assert header == ("ID", "RIGHT_OR_LEFT", "BIRADS", "BREAST COMPOSITION", "MANUFACTOR")
        patients = sorted(p for p in plans if plans[p].group == group)
        assert [r[0] for r in body] == [p for p in patients for _ in range(2)]
        for mlo, cc in zip(body[::2], body[1::2]):
            plan = plans[mlo[0]]
            assert mlo[1] == cc[1] == plan.side
            named = ("R", "L") if plan.side == "BILATERAL" else (plan.side[0],)
            b = plan.breast(named[0])
            assert mlo[2] == cc[2] == (int(b.birads) if b.birads != "-" else "-")
            assert mlo[4] == cc[4] == synth.VENDORS[plan.vendor].manufacturer
            code = "ABCD".index(b.density_class) + 1
            if b.density != "-":
                assert mlo[3] == cc[3] == code
            else:  # missing for this breast: '-' on one row or both, the class elsewhere
                assert "-" in (mlo[3], cc[3]) and {mlo[3], cc[3]} <= {"-", code}
            for lat in named:
                for view, row in (("MLO", mlo), ("CC", cc)):
                    r = csv_rows.get((plan.case_id, lat, view))
                    if r is not None:
                        assert r["birads"] == str(row[2])
                        assert r["density"] == ("-" if row[3] == "-" else "ABCD"[row[3] - 1])
                        assert r["pathology"] == ("malignant" if group == "Malign" else "benign")


def test_plan_missing_views_groups_and_density():
    plans = synth.plan_cohort(30, 0)
    assert sum(p.group == "Malign" for p in plans) == 15
    short = [p for p in plans if len(p.views) < 4]
    assert short and all(len(p.views) == 3 for p in short)
    for p in short:
        (lat, _view), = set(
            (la, v) for la in "LR" for v in ("CC", "MLO")) - set(p.views)
        assert p.breast(lat).pathology == "benign"
    assert all(len(p.views) == 4 for p in synth.plan_cohort(4, 0))
    for n in (2, 3):
        assert {p.group for p in synth.plan_cohort(n, 5)} == {"Benign", "Malign"}
    labels = [b for p in plans for b in p.breasts]
    assert any(b.birads == "0" for b in labels) and any(b.birads == "-" for b in labels)
    assert any(b.density == "-" for b in labels)
    for b in labels:
        lo, hi = synth.plan._DENSITY_FRACTION[b.density_class]
        assert lo <= b.fgt_fraction <= hi
        assert b.density in ("-", b.density_class)
        if b.pathology == "malignant":
            assert b.lesions and all(le.spiculated for le in b.lesions)
        elif b.lesions:
            assert len(b.lesions) == 1 and not b.lesions[0].spiculated
            assert b.birads in ("0", "-", "3", "4")
        else:
            assert b.birads in ("0", "-", "1", "2", "3")
    counts = {}
    for p in plans:
        counts[p.vendor] = counts.get(p.vendor, 0) + 1
    assert max(counts, key=counts.get) == "ims"


def test_birads_is_read_from_findings_not_copied_from_pathology():
    """As in screening: some benign findings are assessed 4, some cancers are read 2-3, yet
    BI-RADS follows pathology and what is visible (every 4-6 has a lesion; 5-6 are the
    larger or multiple malignant findings)."""
    breasts = [b for p in synth.plan_cohort(400, 0) for b in p.breasts if b.birads not in "0-"]
    malignant = [b for b in breasts if b.pathology == "malignant"]
    benign = [b for b in breasts if b.pathology == "benign"]
    assert any(b.birads == "4" for b in benign)
    assert any(b.birads in ("2", "3") for b in malignant)
    high_m = np.mean([b.birads >= "4" for b in malignant])
    high_b = np.mean([b.birads >= "4" for b in benign])
    assert high_m > 0.75 and high_b < 0.15
    assert all(b.lesions for b in breasts if b.birads >= "4")
    top = [max(le.size for le in b.lesions) + 0.03 * len(b.lesions) for b in malignant]
    assert np.mean([t for t, b in zip(top, malignant) if b.birads in "56"]) > np.mean(
        [t for t, b in zip(top, malignant) if b.birads == "4"])


def test_density_is_glandular_area_not_brightness():
    """Fatty (A) and dense (D) breasts have the same mean brightness (a mean-pixel classifier
    is near chance), but a dense breast has most of its area above its own mean (the
    glandular region) and a fatty one little."""
    from sklearn.metrics import roc_auc_score

    mean, area, dense = [], [], []
    for i in range(24):
        d = i % 2 == 1
        lo, hi = synth.plan._DENSITY_FRACTION["D" if d else "A"]
        vendor = list(synth.VENDORS)[i // 2 % 5]
        img = synth.render_image(synth.ImageSpec(
            rows=128, cols=104, vendor=vendor, laterality="L", view=("CC", "MLO")[i // 2 % 2],
            fgt_fraction=lo + (hi - lo) * (i // 2) / 11, seed=100 + i))
        px = img.pixels[img.foreground & ~img.pectoral].astype(float)
        mean.append(px.mean() / synth.VENDORS[vendor].maxv)
        area.append((px > px.mean()).mean())
        dense.append(d)
    assert 0.3 < roc_auc_score(dense, mean) < 0.7
    assert roc_auc_score(dense, area) > 0.9


# ----------------------------------------------------------------------------- DICOM

def test_every_file_decodes_and_headers(decoded):
    for row, ds, arr, img in decoded:
        prof = synth.VENDORS[row["vendor"]]
        assert ds.file_meta.TransferSyntaxUID == row["transfer_syntax"] == prof.transfer_syntax
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert arr.dtype == np.uint16 and arr.shape == (512, 416)
        assert (ds.Rows, ds.Columns) == (512, 416)
        assert ds.Modality == "MG" and ds.BodyPartExamined == "BREAST"
        assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 0
        assert ds.BitsStored == prof.bits_stored and ds.HighBit == prof.bits_stored - 1
        assert int(arr.max()) <= prof.maxv
        assert ds.PhotometricInterpretation == prof.photometric
        assert ds.PresentationIntentType == prof.presentation_intent
        assert ds.SOPClassUID == ("1.2.840.10008.5.1.4.1.1.1.2.1"
                                  if prof.presentation_intent == "FOR PROCESSING"
                                  else "1.2.840.10008.5.1.4.1.1.1.2")
        assert ds.ImageLaterality == ds.Laterality == row["laterality"]
        assert ds.Manufacturer == prof.manufacturer
        assert ds.ManufacturerModelName == prof.model
        assert ds.AnodeTargetMaterial == prof.anode and ds.FilterMaterial == prof.filter
        assert prof.kvp[0] <= float(ds.KVP) <= prof.kvp[1]
        for tag in ("BodyPartThickness", "CompressionForce", "Exposure"):
            assert tag in ds
        spacing = [float(x) for x in ds.PixelSpacing]
        assert spacing == [float(x) for x in ds.ImagerPixelSpacing]
        assert 0.07 <= spacing[0] * 416 / 3328 <= 0.1
        code = ds.ViewCodeSequence[0]
        assert (code.CodeValue, code.CodeMeaning) == synth.VIEW_CODES[row["view"]][::2]
        if prof.view_position:
            assert ds.ViewPosition == row["view"]
        else:
            assert "ViewPosition" not in ds
        if prof.photometric == "MONOCHROME1":
            assert ds.PresentationLUTShape == "INVERSE"
        # lossless: decoded pixels are exactly the rendered ones
        assert np.array_equal(arr, synth.to_stored(img.pixels, row["vendor"]))


def test_transfer_syntaxes_and_vendor_features(decoded):
    syntaxes = {ds.file_meta.TransferSyntaxUID for _, ds, _, _ in decoded}
    assert {J2K, JLS, RLE, EXPLICIT} <= syntaxes
    assert any("ViewPosition" not in ds for _, ds, _, _ in decoded)
    assert {ds.PresentationIntentType for _, ds, _, _ in decoded} == {"FOR PRESENTATION",
                                                                      "FOR PROCESSING"}


def test_monochrome1_breast_is_dark_in_stored_values(decoded):
    mono1 = [(ds, arr, img) for _, ds, arr, img in decoded
             if ds.PhotometricInterpretation == "MONOCHROME1"]
    assert mono1
    for ds, arr, img in mono1:
        maxv = (1 << ds.BitsStored) - 1
        background = ~img.foreground
        for b in img.text_boxes:
            background[b[1]:b[3], b[0]:b[2]] = False
        assert (arr[background] == maxv).all()
        assert arr[img.foreground].mean() < 0.9 * maxv


def test_background_breast_and_orientation(decoded):
    for row, ds, arr, img in decoded:
        prof = synth.VENDORS[row["vendor"]]
        px = img.pixels
        maxv = prof.maxv
        outside = ~img.foreground
        for b in img.text_boxes:
            outside[b[1]:b[3], b[0]:b[2]] = False
        if prof.noisy_background:
            assert px[outside].max() < 0.02 * maxv and px[outside].any()
        else:
            assert (px[outside] == 0).all()
        # foreground is clearly above the background threshold
        assert px[img.foreground].min() > 0.02 * maxv
        # chest wall on the correct side, breast attached to it
        fg = img.foreground
        wall, far = (fg[:, 0], fg[:, -1]) if row["laterality"] == "L" else (fg[:, -1], fg[:, 0])
        assert wall.mean() > 0.5 and not far.any()
        cols = np.nonzero(fg.any(axis=0))[0]
        assert 0.4 * 416 < cols.size < 416
        # pectoral muscle: MLO only, bright, in the top chest-wall corner
        if row["view"] == "MLO":
            assert img.pectoral.any()
            rows_p, cols_p = np.nonzero(img.pectoral)
            assert rows_p.min() == 0
            assert (cols_p.min() == 0) if row["laterality"] == "L" else (cols_p.max() == 415)
            breast_only = img.foreground & ~img.pectoral
            assert px[img.pectoral].mean() > px[breast_only].mean()
        else:
            assert not img.pectoral.any()


def test_lesion_boxes_inside_breast_and_brighter(decoded):
    n = 0
    for row, ds, arr, img in decoded:
        assert img.boxes == json.loads(row["boxes"])
        assert img.lesion_types == json.loads(row["lesion_types"])
        tissue = img.foreground & ~img.pectoral
        for x0, y0, x1, y1 in img.boxes:
            n += 1
            assert 0 <= x0 < x1 <= 416 and 0 <= y0 < y1 <= 512
            assert tissue[y0:y1, x0:x1].all()
            w, h = x1 - x0, y1 - y0
            ring = np.zeros_like(tissue)
            ring[max(0, y0 - h):y1 + h, max(0, x0 - w):x1 + w] = True
            ring[y0:y1, x0:x1] = False
            ring &= tissue
            inside = img.pixels[y0:y1, x0:x1].astype(float).mean()
            assert inside > img.pixels[ring].astype(float).mean()
    assert n > 0


def test_text_boxes_outside_breast_and_bright(decoded):
    touching = 0
    for row, ds, arr, img in decoded:
        assert img.text_boxes == json.loads(row["text_boxes"])
        assert len(img.text_boxes) >= 3
        maxv = synth.VENDORS[row["vendor"]].maxv
        for x0, y0, x1, y1 in img.text_boxes:
            assert 0 <= x0 < x1 <= 416 and 0 <= y0 < y1 <= 512
            assert not img.foreground[y0:y1, x0:x1].any()
            assert img.pixels[y0:y1, x0:x1].max() >= 0.9 * maxv
            touching += x0 == 0 or y0 == 0 or x1 == 416 or y1 == 512
    assert touching > 0


def test_identities_in_headers(synth_cohort, decoded):
    out, _ = synth_cohort
    ids = {r["patient"]: r for r in _read_csv(out / "identities.csv")}
    assert list(next(iter(ids.values()))) == list(synth.IDENTITY_COLUMNS)
    assert len(ids) == PATIENTS
    sop_uids = set()
    for row, ds, _, _ in decoded:
        ident = ids[row["patient"]]
        assert str(ds.PatientName) == ident["patient_name"]
        assert ds.PatientID == ident["patient_id"] != row["patient"]
        assert ds.PatientID.startswith("SYNPID")
        assert ds.PatientBirthDate == ident["birth_date"]
        assert ds.AccessionNumber == ident["accession_number"]
        assert ds.InstitutionName == ident["institution"]
        assert ds.StudyDate == ident["study_date"]
        assert ds.StudyInstanceUID == ident["study_instance_uid"]
        sop_uids.add(ds.SOPInstanceUID)
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID):
            assert pydicom.uid.UID(uid).is_valid
    assert len(sop_uids) == len(decoded)
    assert len({r["patient_name"] for r in ids.values()}) == PATIENTS


# ----------------------------------------------------------------------------- CLI

def test_cli_writes_cohort(tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(main, ["synth", str(out), "--patients", "2", "--seed", "1",
                                    "--size", "256x208"])
    assert res.exit_code == 0, res.output
    assert "wrote 8 images of 2 patients" in res.output
    ds = pydicom.dcmread(next(out.rglob("*.dcm")))
    assert (ds.Rows, ds.Columns) == (256, 208)


@pytest.mark.parametrize("size", ["512by416", "512x", "10x10", "0x416"])
def test_cli_bad_size(tmp_path, size):
    res = CliRunner().invoke(main, ["synth", str(tmp_path / "x"), "--size", size])
    assert res.exit_code == 2
    assert "--size" in res.output
    assert not (tmp_path / "x").exists()


def test_cli_refuses_foreign_directory(tmp_path):
    (tmp_path / "other.txt").write_text("x")
    res = CliRunner().invoke(main, ["synth", str(tmp_path), "--patients", "2"])
    assert res.exit_code == 1 and "not empty" in res.output


def test_parse_size():
    assert synth.parse_size("4096x3328") == (4096, 3328)
    with pytest.raises(ValueError):
        synth.parse_size("abc")


@pytest.mark.slow
def test_full_size_render_speed():
    import time

    plan = synth.plan_cohort(2, 0, (4096, 3328))[1]
    spec = synth.image_spec(plan, "L", "MLO")
    synth.render_image(synth.image_spec(plan, "R", "CC"))   # warm-up
    t0 = time.perf_counter()
    img = synth.render_image(spec)
    assert time.perf_counter() - t0 < 5.0
    assert img.pixels.shape == (4096, 3328) and img.boxes
