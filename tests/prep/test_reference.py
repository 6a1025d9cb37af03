"""`mammoprep reference` hygiene: mammograms only, bit depths rescaled before pooling, every
per-file failure a typed reject (the reference is still written), per-image provenance in
the .npz (hash, bit depth, vendor), and histogram rescaling on hand-computed tables."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from mammoprep.cli import main
from mammoprep.io.dicom import read_dicom
from mammoprep.io.header import read_header
from mammoprep.segmentation.foreground import remove_text
from mammoprep.harmonise.match import Reference, rescale_histogram
from mammoprep.harmonise.reference import build_reference, is_mammogram

from ..conftest import SHARED_DICOM

MAMMO_REAL = SHARED_DICOM.parent / "mammo_real"
CR_CHEST = SHARED_DICOM / "edge" / "fodicom_CR-MONO1-10-chest_nometa.dcm"
GE_MG = SHARED_DICOM / "fodicom_GH133_GE_SenographeEssential.dcm"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"


def _need(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            pytest.skip(f"real test data not found: {p}")


def _modes(hist: np.ndarray, bins: int = 64) -> int:
    """Local maxima above 5 % of the top of ``hist`` folded into ``bins`` bins (3-bin box
    smoothing); bin 0 (background) ignored."""
    h = np.asarray(hist, np.float64).copy()
    h[0] = 0
    coarse = np.convolve(h.reshape(bins, -1).sum(axis=1), np.ones(3) / 3, mode="same")
    p = np.concatenate([[0.0], coarse, [0.0]])
    return sum(1 for i in range(1, bins + 1)
               if p[i] > p[i - 1] and p[i] >= p[i + 1] and p[i] > 0.05 * coarse.max())


def _write_mammogram(path: Path, bits: int, seed: int, shape=(256, 208)) -> None:
    """A DICOM MG image (Part 10, explicit VR LE, MONOCHROME2) of a half-elliptic breast on
    the left edge whose tissue is a smooth Gaussian field around mid-range (one mode),
    quantised to ``bits``; background exactly 0."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    rows, cols = shape
    yy, xx = np.mgrid[:rows, :cols]
    breast = ((yy - rows / 2) / (0.45 * rows)) ** 2 + (xx / (0.7 * cols)) ** 2 < 1
    z = gaussian_filter(rng.standard_normal(shape), 6)
    t = np.clip(0.5 + 0.08 * z / z.std(), 0.2, 0.8)
    px = np.where(breast, np.round(t * ((1 << bits) - 1)), 0).astype(np.uint16)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG_FOR_PROCESSING
    meta.MediaStorageSOPInstanceUID = f"2.25.{1000 + seed}{bits}"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MG_FOR_PROCESSING
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Manufacturer = f"DEPTH{bits}"
    ds.PatientID = f"P{seed}"
    ds.StudyInstanceUID = f"2.25.{seed}"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = px.tobytes()
    ds["PixelData"].VR = "OW"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# --------------------------------------------------------------------------- rescaling

def test_rescale_histogram_up_spreads_evenly():
    # 2-bit levels 1 (x2) and 2 (x1) on a 3-bit scale, each pixel weighing 2^1
    out = rescale_histogram(np.array([0, 2, 1, 0]), 2, 3, unit_bits=1)
    assert out.tolist() == [0, 0, 2, 2, 1, 1, 0, 0]


def test_rescale_histogram_down_merges_and_keeps_foreground():
    # levels 2k, 2k+1 merge; level 1 (foreground) lands in bin 0 and is moved to level 1
    out = rescale_histogram(np.arange(8), 3, 2)
    assert out.tolist() == [0, 1 + 5, 9, 13]


def test_rescale_histogram_needs_integer_weights():
    with pytest.raises(ValueError, match="unit_bits"):
        rescale_histogram(np.array([0, 1]), 1, 3, unit_bits=1)


# --------------------------------------------------------------------------- mammograms only

def test_is_mammogram_by_modality_or_sop_class():
    assert is_mammogram({"modality": "MG"})
    assert is_mammogram({"modality": "", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1.2"})
    assert not is_mammogram({"modality": "CR", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1"})
    assert not is_mammogram({})


def test_header_reads_sop_class_from_file_meta():
    _need(MAMMO_REAL)
    f = sorted(MAMMO_REAL.glob("*.DCM"))[0]  # data set without (0008,0016), only (0002,0002)
    assert "SOPClassUID" not in pydicom.dcmread(f, stop_before_pixels=True)
    assert read_header(f)["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.1.2"


def test_cr_chest_among_mammograms_is_left_out(tmp_path):
    _need(CR_CHEST, GE_MG, MAMMO_REAL)
    real = sorted(MAMMO_REAL.glob("*.DCM"))
    inputs = [CR_CHEST, GE_MG, *real]
    out = tmp_path / "ref.npz"
    r = CliRunner().invoke(main, ["reference", "--energy", "any", *map(str, inputs), "-o",
                                  str(out)])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert "not_mammogram 1" in r.stdout
    assert CR_CHEST.name in r.stderr and "(0008,0060) Modality" in r.stderr
    ref = Reference.load(out)
    cr_hash = read_header(CR_CHEST)["sop_uid_hash"]
    assert cr_hash not in ref.image_hashes
    assert read_header(GE_MG)["sop_uid_hash"] in ref.image_hashes
    assert ref.count >= 2  # the GE image and real FFDMs (some may fail the quality gate)
    # provenance: one bit depth and vendor per contributing image
    assert len(ref.image_bits) == len(ref.image_vendors) == ref.count
    assert set(ref.image_bits) == {12}
    assert "GE MEDICAL SYSTEMS" in ref.image_vendors


# --------------------------------------------------------------------------- bit depths

def test_mixed_bit_depths_pool_rescaled_and_unimodal(tmp_path):
    src = tmp_path / "mixed"
    files = {}
    for seed, bits in enumerate((10, 12, 14)):
        f = src / f"img{bits}.dcm"
        _write_mammogram(f, bits, seed)
        files[f] = bits
    out = tmp_path / "ref.npz"
    r = CliRunner().invoke(main, ["reference", "--energy", "any", "--keep-suspect", str(src),
                                  "-o", str(out)])
    assert r.exit_code == 0, r.output
    ref = Reference.load(out)
    assert ref.bits == 14 and ref.count == 3
    assert sorted(ref.image_bits) == [10, 12, 14]
    assert sorted(ref.image_vendors) == ["DEPTH10", "DEPTH12", "DEPTH14"]

    # independently: each foreground pixel p of a k-bit image covers the 14-bit levels
    # p * 2^(14-k) ... (p + 1) * 2^(14-k) - 1, with weight 1 / 2^(14-k) each
    expected = np.zeros(1 << 14)
    raw = np.zeros(1 << 14)
    for f, bits in files.items():
        fg = remove_text(read_dicom(f), keep_suspect=True).pixels
        fg = fg[fg > 0].astype(np.int64)
        m = 1 << (14 - bits)
        levels = (fg[:, None] * m + np.arange(m)[None, :]).ravel()
        expected += np.bincount(levels, minlength=1 << 14) / m
        raw += np.bincount(fg, minlength=1 << 14)
    got = ref.hist / ref.hist.sum()
    assert np.allclose(got, expected / expected.sum(), rtol=0, atol=1e-12)
    assert _modes(raw) >= 3  # raw levels: one mode per bit depth
    assert _modes(ref.hist) == 1  # rescaled: the one tissue distribution


# --------------------------------------------------------------------------- no traceback

def test_reference_on_shared_folder_never_tracebacks(tmp_path, shared_dicom):
    out = tmp_path / "ref.npz"
    r = CliRunner().invoke(main, ["reference", "--energy", "any", str(shared_dicom), "-o",
                                  str(out)])
    assert r.exit_code == 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output
    assert out.exists() and Reference.load(out).count >= 1
    assert "not_mammogram" in r.stdout  # CR, CT, MR ... are left out and counted


def test_unexpected_exception_is_a_typed_reject(tmp_path, monkeypatch):
    src = tmp_path / "in"
    for seed in range(3):
        _write_mammogram(src / f"img{seed}.dcm", 12, seed)
    import mammoprep.segmentation.foreground as fg

    real_remove = fg.remove_text

    def flaky(rec, keep_suspect=False):  # one file hits a bug deep in the chain
        if rec.path.endswith("img1.dcm"):
            raise IndexError("index -1 is out of bounds for axis 0 with size 0")
        return real_remove(rec, keep_suspect=True)

    monkeypatch.setattr(fg, "remove_text", flaky)
    errors = []
    ref, report = build_reference([src], energy=None, on_error=errors.append)
    assert report["used"] == 2 and report["rejects"] == {"unexpected_error": 1}
    assert len(errors) == 1 and errors[0].kind == "unexpected_error"
    assert "img1.dcm" in str(errors[0]) and "IndexError" in str(errors[0])
    assert ref.count == 2


def test_no_usable_image_is_a_clear_error(tmp_path):
    _need(CR_CHEST)
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(CR_CHEST, src / "chest.dcm")
    r = CliRunner().invoke(main, ["reference", "--energy", "any", str(src), "-o",
                                  str(tmp_path / "ref.npz")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "no mammogram could be used" in r.output and "not_mammogram 1" in r.output
    assert not (tmp_path / "ref.npz").exists()


# --------------------------------------------------------------------------- the .npz

def test_provenance_round_trip_and_older_files_load(tmp_path):
    ref = Reference.from_histograms([np.array([0, 3, 1, 0]), np.array([0, 0, 2, 5])], bits=2,
                                    image_hashes=["a", "b"], image_bits=[10, 14],
                                    image_vendors=["GE", ""])
    back = Reference.load(ref.save(tmp_path / "new.npz"))
    assert back.image_bits == (10, 14) and back.image_vendors == ("GE", "")
    assert back.image_hashes == ("a", "b") and back.hist.tolist() == [0, 3, 3, 5]
    old = tmp_path / "old.npz"  # written by the earlier version: no per-image keys
    np.savez(old, format=np.int64(1), hist=np.array([0, 3, 3, 5], "<i8"), bits=np.int64(2),
             image_hashes=np.array(["a", "b"]), count=np.int64(2))
    legacy = Reference.load(old)
    assert legacy.count == 2 and legacy.image_bits == () and legacy.image_vendors == ()
    assert legacy.digest == back.digest


def test_per_image_arrays_must_match_the_count(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, format=np.int64(1), hist=np.array([0, 3, 3, 5], "<i8"), bits=np.int64(2),
             image_hashes=np.array(["a", "b"]), count=np.int64(2),
             image_bits=np.array([12], "<i8"), image_vendors=np.array(["x", "y"]))
    from mammoprep.errors import ReferenceError_

    with pytest.raises(ReferenceError_, match="image_bits has 1 entries for 2 images"):
        Reference.load(bad)


def test_the_same_image_twice_is_pooled_once(tmp_path):
    src = tmp_path / "in"
    _write_mammogram(src / "a" / "img.dcm", 12, 0)
    _write_mammogram(src / "b" / "img.dcm", 12, 0)  # same SOP Instance UID, another folder
    _write_mammogram(src / "c" / "img.dcm", 12, 1)
    errors = []
    ref, report = build_reference([src], energy=None, keep_suspect=True,
                                  on_error=errors.append)
    assert report["used"] == 2 and report["rejects"] == {"duplicate": 1}
    assert ref.count == len(set(ref.image_hashes)) == 2
    assert "b/img.dcm" in str(errors[0]) and "a/img.dcm" in str(errors[0])
