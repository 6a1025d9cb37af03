"""A mammogram from the evidence in its header, not from one tag (issue 22, item 1).

RSNA's screening DICOMs have no (0008,0060) Modality, a *Digital X-Ray Image Storage - For
Presentation* SOP class and no (0008,0070) Manufacturer, but an (0020,0062) Image
Laterality. The recogniser is checked on a table of tiny headers; the commands on real
mammograms re-headed the RSNA way (saved as ``<patient_id>/<image_id>.dcm``), on the same
images re-headed as a CR chest and a CT, and on an energy table keyed by image file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from mammoprep.cli import main
from mammoprep.io.header import read_header
from mammoprep.harmonise.energy import (EnergyTableError, energy_class, image_keys,
                                        load_energy_table)
from mammoprep.harmonise.match import Reference
from mammoprep.io.mammogram import mammogram_evidence
from mammoprep.harmonise.reference import is_mammogram

from ..conftest import SHARED_DICOM

MAMMO_REAL = SHARED_DICOM.parent / "mammo_real"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: (patient_id, image_id, laterality) of the RSNA-like files, one real mammogram each
RSNA = [("10006", "462822612", "L"), ("10006", "1459541791", "R"), ("10011", "220375232", "L")]


# --------------------------------------------------------------------------- the recogniser

@pytest.mark.parametrize("meta,verdict,evidence", [
    ({"modality": "MG"}, True, "modality MG"),
    ({"modality": "mg ", "body_part": "CHEST"}, True, "modality MG"),  # MG wins
    ({"sop_class_uid": MG_PRESENTATION}, True, "sop class mammography"),
    ({"modality": "DX", "sop_class_uid": MG_PRESENTATION}, True, "sop class mammography"),
    # RSNA: no Modality, DX SOP class, laterality only
    ({"sop_class_uid": DX_PRESENTATION, "laterality": "L"}, True, "dx + image laterality"),
    ({"modality": "DX", "laterality": "R"}, True, "dx + image laterality"),
    ({"modality": "CR", "view": "MLO"}, True, "cr + breast view"),
    ({"laterality": "R"}, True, "no modality + image laterality"),
    ({"modality": "DX", "body_part": "BREAST"}, True, "body part BREAST"),
    ({"modality": "OT", "body_part": "BREAST"}, True, "body part BREAST"),
    ({"modality": "CR", "sop_class_uid": CR_STORAGE}, False,
     "cr: no laterality, breast view or body part"),
    ({}, False, "no modality: no laterality, breast view or body part"),
    # positive evidence of something else
    ({"modality": "CR", "body_part": "CHEST", "laterality": "L"}, False, "cr + body part CHEST"),
    ({"sop_class_uid": CR_STORAGE, "body_part": "CHEST"}, False, "cr + body part CHEST"),
    ({"modality": "DX", "view": "PA", "laterality": "L"}, False, "dx + view position PA"),
    ({"modality": "CT", "laterality": "L", "body_part": "BREAST"}, False, "modality CT"),
    ({"modality": "US", "laterality": "R"}, False, "modality US"),
    ({"sop_class_uid": CT_STORAGE, "laterality": "L"}, False, "sop class CT Image Storage"),
    # secondary captures: only with Body Part BREAST, or named by a label table
    ({"modality": "OT", "sop_class_uid": SECONDARY_CAPTURE, "laterality": "L"}, False,
     "secondary capture not named by a label table"),
    ({"modality": "RG", "sop_class_uid": SECONDARY_CAPTURE, "body_part": "BREAST"}, True,
     "secondary capture + body part BREAST"),
    ({"modality": "MG", "sop_class_uid": SECONDARY_CAPTURE}, True, "modality MG"),  # CBIS-DDSM
])
def test_recogniser_table(meta, verdict, evidence):
    assert mammogram_evidence(meta) == (verdict, evidence)
    assert is_mammogram(meta) is verdict


@pytest.mark.parametrize("meta,verdict,evidence", [
    ({"modality": "OT", "sop_class_uid": SECONDARY_CAPTURE}, True, "label table"),
    ({}, True, "label table"),
    ({"modality": "CR", "body_part": "CHEST"}, False, "cr + body part CHEST"),  # still not
    ({"modality": "CT"}, False, "modality CT"),
    ({"modality": "MG"}, True, "modality MG"),
])
def test_a_label_table_vouches_only_without_contrary_evidence(meta, verdict, evidence):
    assert mammogram_evidence(meta, named_by_table=True) == (verdict, evidence)


# --------------------------------------------------------------------------- real files

def _rehead(src: Path, dest: Path, **tags) -> Path:
    """``src`` with (0008,0060) Modality, (0008,0070) Manufacturer and (0018,5101) View
    Position removed, the SOP class set (data set and file meta) and ``tags`` set; pixel
    data untouched. ``tags``: keyword -> value (None deletes)."""
    ds = pydicom.dcmread(src)
    for kw in ("Modality", "Manufacturer", "ViewPosition", "BodyPartExamined"):
        if kw in ds:
            delattr(ds, kw)
    sop = tags.pop("SOPClassUID", DX_PRESENTATION)
    ds.SOPClassUID = sop
    ds.file_meta.MediaStorageSOPClassUID = sop
    if "SOPInstanceUID" in tags:  # another image, not a second copy of the same one
        ds.file_meta.MediaStorageSOPInstanceUID = tags["SOPInstanceUID"]
    for kw, value in tags.items():
        if value is None:
            if kw in ds:
                delattr(ds, kw)
        else:
            setattr(ds, kw, value)
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest)
    return dest


def _sources() -> list[Path]:
    files = sorted(MAMMO_REAL.glob("DXm_*.DCM"), key=lambda p: p.stat().st_size)
    if len(files) < len(RSNA):
        pytest.skip(f"real test data not found: {MAMMO_REAL}")
    return files[:len(RSNA)]  # the smallest: quickest to decode


@pytest.fixture(scope="module")
def rsna(tmp_path_factory) -> Path:
    """``train_images/<patient_id>/<image_id>.dcm`` re-headed the RSNA way."""
    root = tmp_path_factory.mktemp("rsna") / "train_images"
    for src, (patient, image, lat) in zip(_sources(), RSNA):
        _rehead(src, root / patient / f"{image}.dcm", ImageLaterality=lat)
    return root


@pytest.fixture(scope="module")
def others(tmp_path_factory) -> Path:
    """The first source re-headed as a CR chest (with a laterality) and as a CT."""
    root = tmp_path_factory.mktemp("others")
    src = _sources()[0]
    _rehead(src, root / "chest.dcm", SOPClassUID=CR_STORAGE, Modality="CR",
            BodyPartExamined="CHEST", ImageLaterality="L", SOPInstanceUID="2.25.2201")
    _rehead(src, root / "ct.dcm", SOPClassUID=CT_STORAGE, Modality="CT",
            SOPInstanceUID="2.25.2202")
    return root


def _energy_table(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("image,energy\n" + "".join(f"{i},{e}\n" for i, e in rows))
    return path


def test_rsna_header_carries_its_evidence(rsna):
    meta = read_header(next(rsna.rglob("*.dcm")))
    assert meta["modality"] == "" and meta["manufacturer"] == ""
    assert meta["sop_class_uid"] == DX_PRESENTATION and meta["body_part"] is None
    assert meta["mammogram"] is True
    assert meta["mammogram_evidence"] == "dx + image laterality"


def test_rsna_reference_with_energy_any(rsna, tmp_path):
    out = tmp_path / "ref.npz"
    r = CliRunner().invoke(main, ["reference", str(rsna), "-o", str(out), "--energy", "any",
                                  "--keep-suspect"])
    assert r.exit_code == 0, r.output
    assert "not_mammogram" not in r.output
    assert f"dx + image laterality {len(RSNA)}" in r.stdout
    ref = Reference.load(out)
    assert ref.count == len(RSNA)
    assert ref.image_evidence == ("dx + image laterality",) * len(RSNA)
    assert ref.evidence_counts() == {"dx + image laterality": len(RSNA)}


def test_rsna_reference_low_energy_says_why_and_the_ways_on(rsna, tmp_path):
    r = CliRunner().invoke(main, ["reference", str(rsna), "-o", str(tmp_path / "ref.npz")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    msg = " ".join(r.output.split())
    assert (f"{len(RSNA)} file(s) have no (0008,0070) Manufacturer, so their energy class "
            "is unknown") in msg
    assert "--energy any" in msg and "--energy-table" in msg and "image,energy" in msg
    assert "[(0008,0070) Manufacturer = " in msg and ".dcm" in msg  # names a file
    assert "not_mammogram" not in msg
    assert not (tmp_path / "ref.npz").exists()


def test_rsna_energy_table_by_image(rsna, tmp_path):
    # PARENT/STEM rows, one bare stem; the last image is high energy
    (p0, i0, _), (p1, i1, _), (_, i2, _) = RSNA
    table = _energy_table(tmp_path / "energy_by_image.csv",
                          [(f"{p0}/{i0}", "low"), (f"{p1}/{i1}.dcm", "low"), (i2, "high")])
    out = tmp_path / "ref.npz"
    r = CliRunner().invoke(main, ["reference", str(rsna), "-o", str(out), "--energy-table",
                                  str(table), "--keep-suspect"])
    assert r.exit_code == 0, r.output
    assert "other_energy 1" in r.stdout and "Manufacturer" not in r.output
    assert Reference.load(out).count == 2
    # harmonize uses the same table: energy per row of its log
    h = tmp_path / "h"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(out), str(rsna), "-o", str(h),
                                  "--format", "png", "--energy-table", str(table),
                                  "--only-energy", "high", "--keep-suspect", "-j", "1"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (h / "harmonize_log.jsonl").read_text().splitlines()]
    got = {Path(row["input"]).stem: (row["energy"], row["harmonized"]) for row in rows}
    assert got == {i0: ("low", False), i1: ("low", False), i2: ("high", True)}


def test_harmonize_ref_one_rsna_file(rsna, tmp_path):
    one = rsna / RSNA[0][0] / f"{RSNA[0][1]}.dcm"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(one), str(one), "-o",
                                  str(tmp_path / "h"), "--format", "png", "--keep-suspect",
                                  "-j", "1"])
    assert r.exit_code == 0, r.output
    ref = Reference.load(tmp_path / "h" / "reference.npz")
    assert ref.count == 1 and ref.image_evidence == ("dx + image laterality",)


def test_cr_chest_and_ct_are_still_not_mammograms(others, tmp_path):
    r = CliRunner().invoke(main, ["reference", str(others), "-o", str(tmp_path / "ref.npz"),
                                  "--energy", "any"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "not_mammogram 2" in r.output
    err = " ".join(r.stderr.split())
    assert "chest.dcm: not a mammogram (cr + body part CHEST)" in err
    assert "(0018,0015) Body Part Examined = 'CR / CHEST'" in err
    assert "ct.dcm: not a mammogram (modality CT)" in err
    assert "[(0008,0060) Modality = 'CT']" in err


def test_shard_leaves_out_a_chest_even_when_the_table_names_it(rsna, others, tmp_path):
    """A CR chest with a laterality, given a CC view by the label table, is not stored."""
    root = tmp_path / "in"
    for src in rsna.rglob("*.dcm"):
        dest = root / src.relative_to(rsna)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src.read_bytes())
    (root / "chest.dcm").write_bytes((others / "chest.dcm").read_bytes())
    lines = ["path,patient,laterality,view"]
    for patient, image, lat in RSNA:
        lines.append(f"{patient}/{image}.dcm,{patient},{lat},CC")
    lines.append("chest.dcm,99999,L,CC")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    table = _energy_table(tmp_path / "e.csv", [(image, "low") for _, image, _ in RSNA])
    out = tmp_path / "shards"
    r = CliRunner().invoke(main, ["shard", str(root), "-o", str(out), "--labels",
                                  f"csv:{root / 'labels.csv'}", "--size", "64", "--folds",
                                  "0", "--keep-suspect", "--allow-rejects", "-j", "1",
                                  "--energy-table", str(table)])
    assert r.exit_code == 0, r.output
    import pyarrow.parquet as pq

    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    assert [(Path(x["path"]).name, x["reason"]) for x in rejects] == [
        ("chest.dcm", "not_mammogram")]
    images = pq.read_table(out / "images.parquet").to_pylist()
    assert len(images) == len(RSNA) and {x["energy"] for x in images} == {"low"}


def test_manifest_names_the_label_table_when_the_header_has_no_evidence(rsna, tmp_path):
    """An RSNA-like file without (0020,0062) has no mammogram evidence of its own; the
    label table naming it (with laterality and view) is what images.parquet records."""
    import pyarrow.parquet as pq

    root = tmp_path / "in"
    patient, image, lat = RSNA[0]
    src = next(rsna.glob(f"{patient}/{image}.dcm"))
    _rehead(src, root / "bare.dcm", ImageLaterality=None)
    assert read_header(root / "bare.dcm")["mammogram"] is False
    (root / "labels.csv").write_text(f"path,patient,laterality,view\nbare.dcm,{patient},"
                                     f"{lat},CC\n")
    out = tmp_path / "shards"
    r = CliRunner().invoke(main, ["shard", str(root), "-o", str(out), "--labels",
                                  f"csv:{root / 'labels.csv'}", "--size", "64", "--folds",
                                  "0", "--keep-suspect", "-j", "1"])
    assert r.exit_code == 0, r.output
    rows = pq.read_table(out / "images.parquet").to_pylist()
    assert [x["mammogram_evidence"] for x in rows] == ["label table"]


# --------------------------------------------------------------------------- energy tables

def test_image_keys():
    assert image_keys("a/train_images/10006/462822612.dcm") == ("10006/462822612", "462822612")
    assert image_keys("462822612.DCM") == ("462822612",)
    assert image_keys("x/1.2.840.5") == ("x/1.2.840.5", "1.2.840.5")  # a UID, no suffix
    assert image_keys("x\\y\\img.dicom") == ("y/img", "img")


def test_image_table_folder_form_wins_and_shipped_rules_fill_in(tmp_path):
    table = load_energy_table(_energy_table(tmp_path / "t.csv", [
        ("123", "high"), ("p1/123", "low"), ("train_images/p2/7.dcm", "high")]))
    assert energy_class("", "", table, path="/d/p1/123.dcm") == "low"
    assert energy_class("", "", table, path="/d/p9/123.dcm") == "high"  # the bare name
    assert energy_class("", "", table, path="/d/p2/7.dcm") == "high"
    assert energy_class("", "", table, path="/d/p3/7.dcm") == "unknown"
    assert energy_class("FUJIFILM", "", table, path="/d/p3/7.dcm") == "low"  # shipped rules
    assert energy_class("FUJIFILM", "", table) == "low"
    assert energy_class("IMS", "", table, path="/d/p1/123.dcm") == "low"  # the row wins


def test_mixed_table_keeps_its_own_rules(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("image,manufacturer,model,energy\n10006/1,,,high\n,HOLOGIC,,low\n")
    table = load_energy_table(path)
    assert energy_class("", "", table, path="10006/1.dcm") == "high"
    assert energy_class("Hologic", "", table) == "low"
    assert energy_class("FUJIFILM", "", table) == "unknown"  # the table replaces the shipped


@pytest.mark.parametrize("text,where", [
    ("image,energy\na/1,low\n1.dcm,high\na/1.dcm,high\n",
     "line 4, column 'image': 'a/1' is low at line 2 and high here"),
    ("image,energy\n,low\n", "line 2: columns 'image', 'manufacturer' and 'model' are all"),
    ("image,manufacturer,energy\n1,GE,low\n", "line 2 gives both an image and a manufacturer"),
    ("image,energy\n1,cold\n", "line 2, column 'energy'"),
    ("file,energy\n1,low\n", "lacks column(s) manufacturer"),
])
def test_bad_image_table_names_the_line(tmp_path, text, where):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(EnergyTableError, match=r"bad\.csv") as info:
        load_energy_table(path)
    assert where in str(info.value)


def test_energy_suffixes_match_the_reader():
    from mammoprep.io.paths import DICOM_SUFFIXES
    from mammoprep.harmonise.energy import _DICOM_SUFFIXES

    assert _DICOM_SUFFIXES == DICOM_SUFFIXES


# --------------------------------------------------------------------------- the .npz

def test_evidence_round_trip_and_older_files_load(tmp_path):
    ref = Reference.from_histograms([np.array([0, 3, 1, 0]), np.array([0, 0, 2, 5])], bits=2,
                                    image_hashes=["a", "b"], image_bits=[12, 12],
                                    image_vendors=["", "GE"],
                                    image_evidence=["dx + image laterality", "modality MG"])
    back = Reference.load(ref.save(tmp_path / "new.npz"))
    assert back.image_evidence == ("dx + image laterality", "modality MG")
    assert back.evidence_counts() == {"dx + image laterality": 1, "modality MG": 1}
    old = tmp_path / "old.npz"  # written before image_evidence existed
    np.savez(old, format=np.int64(1), hist=np.array([0, 3, 3, 5], "<i8"), bits=np.int64(2),
             image_hashes=np.array(["a", "b"]), count=np.int64(2),
             image_bits=np.array([12, 12], "<i8"), image_vendors=np.array(["", "GE"]))
    legacy = Reference.load(old)
    assert legacy.image_evidence == () and legacy.evidence_counts() == {}
    assert legacy.digest == back.digest
    bad = tmp_path / "bad.npz"
    np.savez(bad, format=np.int64(1), hist=np.array([0, 3, 3, 5], "<i8"), bits=np.int64(2),
             image_hashes=np.array(["a", "b"]), count=np.int64(2),
             image_evidence=np.array(["modality MG"]))
    from mammoprep.errors import ReferenceError_

    with pytest.raises(ReferenceError_, match="image_evidence has 1 entries for 2 images"):
        Reference.load(bad)


def test_a_table_that_says_unknown_is_not_a_missing_manufacturer(rsna, tmp_path):
    table = _energy_table(tmp_path / "u.csv", [(image, "unknown") for _, image, _ in RSNA])
    r = CliRunner().invoke(main, ["reference", str(rsna), "-o", str(tmp_path / "ref.npz"),
                                  "--energy-table", str(table)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"other_energy {len(RSNA)}" in r.output and "have no (0008,0070)" not in r.output
