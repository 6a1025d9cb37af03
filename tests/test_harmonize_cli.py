"""`mammoprep reference`, `harmonize` and `preview` from the command line, on the synthetic
cohort and the real files: derived DICOMs valid, input untouched, layout mirrored, errors."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from mammoprep.cli import main
from mammoprep.dicomio import read_dicom
from mammoprep.harmonize import Reference
from mammoprep.synth import generate_cohort

from .conftest import real


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hcohort")
    generate_cohort(root, patients=6, seed=5, size=(160, 128))
    return root


@pytest.fixture(scope="module")
def ref(cohort, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("href") / "ref.npz"
    r = CliRunner().invoke(main, ["reference", str(cohort), "-o", str(path)])
    assert r.exit_code == 0, r.output
    assert "12-bit" in r.stdout and "left out" in r.stdout
    return path


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_reference_is_low_energy_only(cohort, ref):
    r = Reference.load(ref)
    with open(cohort / "labels.csv") as fh:
        low = [row for row in csv.DictReader(fh) if row["energy"] == "low"]
    assert r.bits == 12 and r.count == len(low)
    assert r.hist[0] == 0 and r.hist.sum() > 0


def test_harmonize_dicom_output(cohort, ref, tmp_path):
    before = _digest(cohort)
    out = tmp_path / "h"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(cohort), "-o", str(out),
                                  "-j", "1"])
    assert r.exit_code == 0, r.output
    assert _digest(cohort) == before  # inputs never modified
    inputs = sorted(p.relative_to(cohort) for p in cohort.rglob("*.dcm"))
    outputs = sorted(p.relative_to(out) for p in out.rglob("*.dcm"))
    assert inputs == outputs  # layout mirrored
    src = cohort / inputs[0]
    ds_in = pydicom.dcmread(src)
    ds = pydicom.dcmread(out / inputs[0])
    assert ds.PhotometricInterpretation == "MONOCHROME2" and not ds.file_meta.TransferSyntaxUID.is_compressed
    assert ds.SOPInstanceUID != ds_in.SOPInstanceUID
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == ds_in.SOPInstanceUID
    assert "CDF-matched" in ds.DerivationDescription or "not harmonised" in ds.DerivationDescription
    assert ds.BitsStored == 12 and ds.HighBit == 11
    assert ds.PatientName == ds_in.PatientName and ds.StudyInstanceUID == ds_in.StudyInstanceUID
    px = ds.pixel_array
    assert px.max() <= 4095
    rec = read_dicom(out / inputs[0])  # and our own reader takes it back
    assert np.array_equal(rec.pixels, px)
    log = [json.loads(line) for line in (out / "harmonize_log.jsonl").read_text().splitlines()]
    assert len(log) == len(inputs) and all(x["status"] == "ok" for x in log)


def test_harmonize_only_high_leaves_low_unmatched(cohort, ref, tmp_path):
    out = tmp_path / "hi"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(cohort), "-o", str(out),
                                  "--only-energy", "high", "-j", "1", "--format", "png"])
    assert r.exit_code == 0, r.output
    log = [json.loads(line) for line in (out / "harmonize_log.jsonl").read_text().splitlines()]
    assert {x["energy"] for x in log if x["harmonized"]} == {"high"}
    assert {x["energy"] for x in log if not x["harmonized"]} == {"low"}
    pngs = list(out.rglob("*.png"))
    assert len(pngs) == len(log)
    from PIL import Image

    with Image.open(pngs[0]) as im:
        assert im.mode == "I;16" and im.size == (128, 160)


def test_harmonize_reports_bad_file_and_goes_on(cohort, ref, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    good = next(cohort.rglob("*.dcm"))
    (src / "good.dcm").write_bytes(good.read_bytes())
    (src / "bad.dcm").write_bytes(good.read_bytes()[:1500])
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(src), "-o", str(out),
                                  "-j", "1"])
    assert r.exit_code == 1
    assert "bad.dcm" in r.output and "1 written" in r.output and "1 failed" in r.output
    assert (out / "good.dcm").exists() and not (out / "bad.dcm").exists()


def test_ref_from_dicom_file_and_dir(cohort, tmp_path):
    low = next(p for p in cohort.rglob("*.dcm")
               if pydicom.dcmread(p, stop_before_pixels=True).Manufacturer == "METALTRONICA")
    out = tmp_path / "x"
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(low), str(low), "-o", str(out)])
    assert r.exit_code == 0, r.output
    # an image matched to its own histogram is the identity (on its text-free pixels)
    from mammoprep.foreground import remove_text

    expected = remove_text(read_dicom(low)).pixels
    assert np.array_equal(read_dicom(out / low.name).pixels, expected)
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(cohort), str(low), "-o",
                                  str(tmp_path / "y")])
    assert r.exit_code == 0, r.output


def test_bad_reference_file_is_a_clear_error(cohort, tmp_path):
    bad = tmp_path / "ref.npz"
    bad.write_bytes(b"not an npz")
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(bad), str(cohort), "-o",
                                  str(tmp_path / "o")])
    assert r.exit_code != 0 and str(bad) in r.output and "Traceback" not in r.output


def test_preview_png(cohort, ref, tmp_path):
    from PIL import Image

    f = next(cohort.rglob("*.dcm"))
    out = tmp_path / "p.png"
    r = CliRunner().invoke(main, ["preview", str(f), "--ref", str(ref), "-o", str(out)])
    assert r.exit_code == 0, r.output
    with Image.open(out) as im:
        assert im.size[0] > 500 and im.size[1] > 400


def test_harmonize_real_ge_file(ref, tmp_path):
    out = tmp_path / "ge"
    path = real("fodicom_GH133_GE_SenographeEssential.dcm")
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(ref), str(path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    px = pydicom.dcmread(out / path.name).pixel_array
    h, w = px.shape
    k = 50
    assert px[:k, :k].max() == 0 and px[-k:, :k].max() == 0  # corners are background
    assert (px > 0).mean() > 0.2  # the breast stays
