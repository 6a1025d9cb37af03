"""Privacy: de-identified derived DICOMs by default (PS3.15 Basic Profile with Retain Device
Identity), a salt that cannot be weak, salted UID hashes. The synthetic cohort writes fake
identities into its headers (identities.csv is the answer key); every byte of every output
is scanned for them."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import stat
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner
from pydicom.datadict import tag_for_keyword

from mammoprep import identity
from mammoprep.cli import main
from mammoprep.io.derived import KEEP, KEEP_IN_CODE_ITEMS, write_derived_dicom
from mammoprep.io.dicom import read_dicom
from mammoprep.io.header import read_header
from mammoprep.identity import (SaltError, derived_uid, pseudonym, resolve_salt,
                                salt_fingerprint)

SALT = "privacy-test-salt-0123456789"
#: metadata the harmonisation, the energy rule and the shards read: must survive
ACQUISITION = ("manufacturer", "model", "modality", "kvp", "anode_target", "filter_material",
               "body_part_thickness_mm", "compression_force_n", "exposure_mas", "laterality",
               "view", "presentation_intent", "pixel_spacing_mm", "patient_hash")


COHORT = dict(patients=5, seed=21, size=(160, 128))  # the `cohort` fixture (conftest.py)


@pytest.fixture(scope="module")
def harmonized(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pharm") / "out"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(cohort), str(cohort), "-o",
                                  str(out), "-j", "1", "--salt", SALT])
    assert r.exit_code == 0, r.output
    return out


def _secrets(cohort: Path) -> dict[str, str]:
    """Every identifying value of the cohort: identities.csv plus the headers' UIDs."""
    found: dict[str, str] = {}
    with open(cohort / "identities.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            for key in ("patient_name", "patient_id", "birth_date", "accession_number",
                        "institution", "study_date", "study_instance_uid"):
                found[row[key]] = key
            for part in row["patient_name"].split("^"):
                found[part] = "patient_name"
    for f in cohort.rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for key in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            found[str(ds[key].value)] = key
    return {k: v for k, v in found.items() if len(k) >= 4}


def _leaks(root: Path, secrets: dict[str, str]) -> list[str]:
    leaks = []
    for f in sorted(root.rglob("*")):
        if f.is_file():
            data = f.read_bytes()
            leaks += [f"{f.relative_to(root)}: {kind} {value!r}"
                      for value, kind in secrets.items() if value.encode() in data]
    return leaks


def test_no_identifier_in_any_harmonize_output(cohort, harmonized, tmp_path):
    secrets = _secrets(cohort)
    assert len(secrets) > 30
    # the scan finds what it looks for: the sources are full of these values
    assert len(_leaks(cohort, secrets)) > len(list(cohort.rglob("*.dcm")))
    outputs = list(harmonized.rglob("*.dcm"))
    assert len(outputs) == len(list(cohort.rglob("*.dcm")))
    assert _leaks(harmonized, secrets) == []
    png = tmp_path / "png"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(cohort), str(cohort), "-o",
                                  str(png), "-j", "1", "--format", "png", "--salt", SALT])
    assert r.exit_code == 0, r.output
    assert _leaks(png, secrets) == []


def test_no_identifier_in_shards_or_manifests(cohort, tmp_path):
    import pyarrow.parquet as pq

    secrets = _secrets(cohort)
    out = tmp_path / "shards"
    r = CliRunner().invoke(main, ["shard", str(cohort), "-o", str(out), "--labels",
                                  f"lumina:{cohort}", "--size", "64", "-j", "1", "--salt",
                                  SALT])
    assert r.exit_code == 0, r.output
    assert list(out.glob("*.tar")) and _leaks(out, secrets) == []
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["salt_fingerprint"] == salt_fingerprint(SALT.encode())
    for table in out.glob("*.parquet"):  # compressed pages: scan the decoded values too
        text = json.dumps(pq.read_table(table).to_pylist(), default=str)
        assert [v for v in secrets if v in text] == [], table.name


def test_derived_dicom_is_deidentified_and_keeps_acquisition(cohort, harmonized):
    for src in sorted(cohort.rglob("*.dcm")):
        dest = harmonized / src.relative_to(cohort)
        ds = pydicom.dcmread(dest)
        ds_in = pydicom.dcmread(src, stop_before_pixels=True)
        assert ds.PatientIdentityRemoved == "YES"
        codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
        assert {"113100", "113109", "113101"} <= codes  # basic, device identity, clean pixels
        assert all(len(v) <= 64 for v in ds.DeidentificationMethod)
        assert ds.LongitudinalTemporalInformationModified == "REMOVED"
        assert ds.ImageType[0] == "DERIVED" and ds.BurnedInAnnotation == "NO"
        assert ds_in.BurnedInAnnotation == "YES"  # the synthetic sources have text
        assert ds.PatientBirthDate == "" and ds.StudyDate == "" and ds.AccessionNumber == ""
        assert not any(elem.tag.is_private for elem in ds)
        assert "InstitutionName" not in ds and "SeriesDate" not in ds
        assert ds.SeriesInstanceUID != ds_in.SeriesInstanceUID
        assert ds.PatientID == pseudonym(ds_in.PatientID, SALT.encode())
        a = read_header(src, salt=SALT)
        b = read_header(dest, salt=SALT)
        # harmonisation-relevant metadata survives; the patient pseudonym is stable because
        # the derived PatientID is the pseudonym... of which the hash is taken again
        same = {k: (a[k], b[k]) for k in ACQUISITION if k != "patient_hash" and a[k] != b[k]}
        assert same == {}


def test_structure_survives_and_reruns_agree(cohort, harmonized, tmp_path):
    by_study: dict[str, set[str]] = {}
    sops = set()
    for src in sorted(cohort.rglob("*.dcm")):
        ds = pydicom.dcmread(harmonized / src.relative_to(cohort), stop_before_pixels=True)
        ds_in = pydicom.dcmread(src, stop_before_pixels=True)
        by_study.setdefault(ds_in.StudyInstanceUID, set()).add(ds.StudyInstanceUID)
        sops.add(ds.SOPInstanceUID)
        ref = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        assert ref != ds_in.SOPInstanceUID and ref.startswith("2.25.")  # not re-linkable
        assert ref == derived_uid(SALT.encode(), "uid", ds_in.SOPInstanceUID)  # the contract
        assert len(ds.SOPInstanceUID) <= 64 and ds.SOPInstanceUID.startswith("2.25.")
    assert all(len(v) == 1 for v in by_study.values())  # one study stays one study
    assert len({next(iter(v)) for v in by_study.values()}) == len(by_study)
    assert len(sops) == len(list(cohort.rglob("*.dcm")))
    before = {f: f.read_bytes() for f in harmonized.rglob("*.dcm")}
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(cohort), str(cohort), "-o",
                                  str(harmonized), "-j", "1", "--salt", SALT])
    assert r.exit_code == 0, r.output
    assert {f: f.read_bytes() for f in harmonized.rglob("*.dcm")} == before  # same bytes
    other = tmp_path / "other"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(cohort), str(cohort), "-o",
                                  str(other), "-j", "1", "--salt", SALT + "-other"])
    assert r.exit_code == 0, r.output
    f = next(harmonized.rglob("*.dcm"))
    a = pydicom.dcmread(f, stop_before_pixels=True)
    b = pydicom.dcmread(other / f.relative_to(harmonized), stop_before_pixels=True)
    assert a.StudyInstanceUID != b.StudyInstanceUID and a.PatientID != b.PatientID


def test_keep_identity_is_an_explicit_opt_in(cohort, tmp_path):
    src = sorted(cohort.rglob("*.dcm"))[0]
    out = tmp_path / "kept"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(src), str(src), "-o", str(out),
                                  "--keep-identity", "--salt", SALT])
    assert r.exit_code == 0, r.output
    ds = pydicom.dcmread(out / src.name)
    ds_in = pydicom.dcmread(src, stop_before_pixels=True)
    assert ds.PatientName == ds_in.PatientName and ds.PatientID == ds_in.PatientID
    assert ds.StudyInstanceUID == ds_in.StudyInstanceUID
    assert ds.SeriesInstanceUID != ds_in.SeriesInstanceUID  # a new derived series
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == ds_in.SOPInstanceUID
    assert "PatientIdentityRemoved" not in ds and ds.ImageType[0] == "DERIVED"
    assert ds.BurnedInAnnotation == "NO"
    assert read_dicom(out / src.name).pixels.shape == (160, 128)


def test_burned_in_annotation_is_not_claimed_without_text_removal(cohort, tmp_path):
    src = sorted(cohort.rglob("*.dcm"))[0]
    rec = read_dicom(src, salt=SALT)  # decoded only: no text removal step
    dest = tmp_path / "raw.dcm"
    write_derived_dicom(src, rec, dest, "test", salt=SALT)
    ds = pydicom.dcmread(dest)
    assert ds.BurnedInAnnotation == "YES"  # the source's statement, still true
    assert "113101" not in {i.CodeValue for i in ds.DeidentificationMethodCodeSequence}
    assert (ds.pixel_array == rec.pixels).all()


def test_disk_full_while_writing_leaves_no_partial_file(cohort, tmp_path, monkeypatch):
    import errno

    from mammoprep.errors import WriteError

    src = sorted(cohort.rglob("*.dcm"))[0]
    rec = read_dicom(src, salt=SALT)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the OS boundary: the data never reach the disk
    dest = tmp_path / "out" / "x.dcm"
    with pytest.raises(WriteError, match="No space left") as exc:
        write_derived_dicom(src, rec, dest, "test", salt=SALT)
    assert exc.value.kind == "write_failed" and str(dest) in str(exc.value)
    assert list(dest.parent.iterdir()) == []  # neither x.dcm nor a temporary file


def test_keep_list_names_only_known_attributes():
    """A typo in the keep-list would silently drop an attribute harmonisation needs."""
    unknown = [kw for kw in (*KEEP, *KEEP_IN_CODE_ITEMS) if tag_for_keyword(kw) is None]
    assert unknown == []
    assert not {"PatientName", "PatientID", "PatientBirthDate", "InstitutionName",
                "AccessionNumber", "StudyInstanceUID", "SOPInstanceUID",
                "ReferringPhysicianName", "OperatorsName", "StudyDate"} & set(KEEP)


# ------------------------------------------------------------------------------- the salt

@pytest.fixture()
def config_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv(identity.SALT_ENV, raising=False)
    yield tmp_path / "cfg"


def test_a_reference_folder_is_pooled_with_the_salt_given(cohort, config_home, tmp_path):
    # `harmonize --ref DIR --salt X` pools DIR with X: a short default salt file (which
    # resolve_salt(None) refuses) is never read
    short = config_home / "mammoprep" / "salt"
    short.parent.mkdir(parents=True)
    short.write_text("abc")
    with pytest.raises(SaltError):
        resolve_salt(None)
    src = sorted(cohort.rglob("*.dcm"))[0]
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(cohort), str(src), "-o",
                                  str(tmp_path / "o"), "--salt", SALT])
    assert r.exit_code == 0, r.output
    from mammoprep.harmonise.match import Reference

    ref = Reference.load(tmp_path / "o" / "reference.npz")
    low = [f for f in sorted(cohort.rglob("*.dcm"))
           if read_header(f, salt=SALT)["sop_uid_hash"] in ref.image_hashes]
    assert len(low) == ref.count > 0  # the hashes are those of the given salt


def _first_run(_):
    return resolve_salt(None).decode()


def test_salt_file_is_created_once_and_concurrent_first_runs_agree(config_home):
    ctx = mp.get_context("fork")
    with ctx.Pool(6) as pool:
        salts = pool.map(_first_run, range(12))
    path = config_home / "mammoprep" / "salt"
    assert len(set(salts)) == 1 and len(salts[0]) == 64
    assert int(salts[0], 16) > 0  # hex of 32 random bytes
    assert path.read_text().strip() == salts[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["salt"]  # no temporary left


@pytest.mark.parametrize("content", ["", "\n", "abc123\n"])
def test_empty_or_short_salt_file_is_refused(config_home, content):
    path = config_home / "mammoprep" / "salt"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(SaltError, match="delete it and rerun") as exc:
        resolve_salt(None)
    assert str(path) in str(exc.value)


def test_disk_full_while_creating_the_salt_leaves_no_salt_file(config_home, monkeypatch):
    import errno

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(SaltError, match="No space left"):
        resolve_salt(None)
    monkeypatch.undo()
    folder = config_home / "mammoprep"
    assert list(folder.iterdir()) == []  # neither an empty salt nor a temporary file


@pytest.mark.parametrize("salt", ["", "short", "fifteen-chars!!"])
def test_short_explicit_salt_is_refused_with_advice(salt, monkeypatch):
    with pytest.raises(SaltError, match="at least 16"):
        resolve_salt(salt)
    monkeypatch.setenv(identity.SALT_ENV, salt)
    with pytest.raises(SaltError):
        resolve_salt(None)
    r = CliRunner().invoke(main, ["inspect", "--header-only", "--salt", salt, "."])
    assert r.exit_code == 2 and "at least 16" in r.output and "Traceback" not in r.output


def test_salt_fingerprint_is_128_bits_and_keyed():
    a, b = salt_fingerprint(b"x" * 32), salt_fingerprint(b"y" * 32)
    assert len(a) == 32 and a != b and set(a) <= set("0123456789abcdef")
    import hashlib

    assert a[:8] != hashlib.sha256(b"mammoprep-salt:" + b"x" * 32).hexdigest()[:8]


def test_sop_uid_hash_is_salted(cohort):
    f = sorted(cohort.rglob("*.dcm"))[0]
    a = read_header(f, salt=SALT)["sop_uid_hash"]
    b = read_header(f, salt=SALT + "-2")["sop_uid_hash"]
    uid = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
    assert a != b and a == pseudonym(uid, SALT.encode())


def test_record_meta_holds_no_identifier(cohort):
    secrets = _secrets(cohort)
    for f in sorted(cohort.rglob("*.dcm"))[:4]:
        text = json.dumps(read_dicom(f, salt=SALT).meta)
        assert [v for v in secrets if v in text] == []
