"""DICOM reading: real files from several vendors, every transfer syntax, bad input."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid)

from mammoprep import decoders
from mammoprep.io import photometric
from mammoprep.cli import main
from mammoprep.io.dicom import read_dicom, safe_read
from mammoprep.io.header import read_header
from mammoprep.io.paths import iter_dicom_paths
from mammoprep.errors import (MammoprepError, NoPixelDataError, NotDicomError, TruncatedError,
                              UnsupportedImageError)

from ..conftest import real

GE = "fodicom_GH133_GE_SenographeEssential.dcm"
SIEMENS = "fodicom_OutOfBoundsOverlay_Siemens_MammomatInspiration.dcm"
WG04 = "wg04_MG1_J2KI.dcm"


# ---------------------------------------------------------------- golden checks, real files

def test_ge_senographe_jpeg_lossless_golden():
    rec = read_dicom(real(GE))
    m = rec.meta
    assert rec.pixels.dtype == np.uint16 and rec.pixels.shape == (3062, 2394)
    assert (m["manufacturer"], m["laterality"], m["view"]) == ("GE MEDICAL SYSTEMS", "R", "MLO")
    assert m["model"].startswith("Senographe Essential")
    assert (m["kvp"], m["anode_target"], m["filter_material"]) == (30.0, "RHODIUM", "RHODIUM")
    assert m["body_part_thickness_mm"] == 73.0 and m["compression_force_n"] == 100.0
    assert m["presentation_intent"] == "FOR PRESENTATION"
    assert m["bits_stored"] == 12 and m["photometric"] == "MONOCHROME2"
    assert m["transfer_syntax"] == "1.2.840.10008.1.2.4.70"
    assert m["inverted"] is False and "IDENTITY" in m["inversion_reason"]
    assert m["voi"] is None
    assert m["pixel_spacing_mm"] == pytest.approx([0.0940909, 0.0940909])
    px = rec.pixels
    assert (int(px[1531, 1197]), int(px[1020, 598]), int(px[3057, 2389])) == (2197, 0, 2309)
    assert int(px.max()) == 3471


def test_ge_voi_is_deterministic_and_recorded():
    """GE carries 3 VOI LUTs, several windows and SIGMOID: the first LUT item wins."""
    a = read_dicom(real(GE), voi=True)
    b = read_dicom(real(GE), voi=True)
    assert a.meta["voi"] == "VOI LUT Sequence item 1 of 3 (NORMAL)"
    assert np.array_equal(a.pixels, b.pixels)
    raw = read_dicom(real(GE))
    assert not np.array_equal(a.pixels, raw.pixels)
    # the VOI LUT is monotone non-decreasing, so it keeps the order of two tissue pixels
    y, x = np.unravel_index(np.argsort(raw.pixels, axis=None)[-10:], raw.pixels.shape)
    assert a.pixels[y, x].min() >= a.pixels[raw.pixels > 0].min()


def test_siemens_mammomat_golden():
    rec = read_dicom(real(SIEMENS))
    m = rec.meta
    assert rec.pixels.shape == (788, 1318)
    assert (m["model"], m["laterality"], m["view"], m["kvp"]) == ("Mammomat Inspiration", "L",
                                                                 "CC", 24.0)
    px = rec.pixels
    assert (int(px[394, 659]), int(px[262, 329]), int(px[10, 10])) == (1436, 1256, 306)


def test_wg04_mg1_jpeg2000_golden():
    rec = read_dicom(real(WG04))
    assert rec.pixels.shape == (4664, 3064)
    assert rec.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.91"
    assert (rec.meta["laterality"], rec.meta["view"]) == ("L", "MLO")
    px = rec.pixels
    assert (int(px[2332, 1532]), int(px[1554, 766]), int(px[4659, 3059])) == (2213, 2941, 3841)


def test_header_only_ge_monochrome1_inverse_is_inverted():
    path = real("headers_only/MG-Im-GE-SenDS-scaled.dcm")
    ds = pydicom.dcmread(path)
    rec = read_dicom(path)
    assert rec.meta["inverted"] and "INVERSE" in rec.meta["inversion_reason"]
    assert rec.meta["presentation_intent"] == "FOR PROCESSING"
    expected = (2 ** 14 - 1) - ds.pixel_array.astype(np.int64)
    assert np.array_equal(rec.pixels, expected)


@pytest.mark.parametrize("name,bits", [("headers_only/MG-Im-GE_Seno_1_ForPresentation.dcm", 12),
                                       ("headers_only/MG-Im-GE_Seno_2_ForPresentation.dcm", 11)])
def test_header_only_monochrome2_unchanged(name, bits):
    path = real(name)
    rec = read_dicom(path)
    assert rec.meta["inverted"] is False and rec.meta["bits_stored"] == bits
    assert np.array_equal(rec.pixels, pydicom.dcmread(path).pixel_array)


def test_hologic_header_without_pixels():
    path = real("headers_only/MG-Im-Hologic-PropProj.dcm")
    with pytest.raises(NoPixelDataError) as exc:
        read_dicom(path)
    assert "(7FE0,0010)" in str(exc.value) and str(path) in str(exc.value)
    meta = read_header(path)  # the header alone is still readable
    assert meta["manufacturer"] == "HOLOGIC, Inc." and meta["laterality"] == "R"


# what each edge file must do: decode (None) or fail with this typed error
EDGE = {
    "fodicom_CR-MONO1-10-chest_nometa.dcm": None,
    "openrem_PX-Im-NewTom_Go.dcm": NoPixelDataError,
    "orthanc_Issue44_Monochrome1-Jpeg.dcm": None,
    "orthanc_SignedCT.dcm": UnsupportedImageError,
    "orthanc_TS_1.2.840.10008.1.2.1.99_deflate.dcm": UnsupportedImageError,
    "pydicom_MR_truncated.dcm": TruncatedError,
    "pydicom_examples_ybr_color.dcm": UnsupportedImageError,
    "pydicom_no_meta.dcm": NotDicomError,
    "pydicomdata_emri_small_jpeg_2k_lossless_too_short.dcm": TruncatedError,
    "wg04_RG1_JLSN.dcm": None,
    "wg04_RG3_RLE.dcm": None,
}


@pytest.mark.parametrize("name", sorted(EDGE))
def test_edge_files_decode_or_fail_typed(name):
    path = real(f"edge/{name}")
    expected = EDGE[name]
    rec, err = safe_read(path)
    if expected is None:
        assert err is None, str(err)
        assert rec.pixels.dtype == np.uint16 and rec.pixels.ndim == 2
    else:
        assert isinstance(err, expected), err
        text = str(err)
        assert str(path) in text and "[(" in text  # names the file and the tag
        assert "Traceback" not in text


def test_edge_dir_is_fully_covered(shared_dicom):
    assert sorted(p.name for p in (shared_dicom / "edge").glob("*.dcm")) == sorted(EDGE)


def test_no_meta_file_is_read_as_implicit_vr():
    rec = read_dicom(real("edge/fodicom_CR-MONO1-10-chest_nometa.dcm"))
    assert rec.meta["transfer_syntax"] == ImplicitVRLittleEndian and rec.meta["inverted"]


@pytest.mark.parametrize("name", ["edge/fodicom_CR-MONO1-10-chest_nometa.dcm",
                                  "edge/orthanc_Issue44_Monochrome1-Jpeg.dcm"])
def test_monochrome1_comes_out_with_bright_tissue(name):
    """Directly exposed air (corners) is dark and the body is bright after inversion."""
    px = read_dicom(real(name)).pixels.astype(np.float64)
    h, w = px.shape
    centre = px[2 * h // 5: 3 * h // 5, 2 * w // 5: 3 * w // 5].mean()
    k = max(4, min(h, w) // 20)
    corners = np.mean([px[:k, :k].mean(), px[:k, -k:].mean(), px[-k:, :k].mean(),
                       px[-k:, -k:].mean()])
    assert centre > corners + 0.2 * px.max()


@pytest.mark.parametrize("name,fast", [(GE, "libjpeg-turbo"), (SIEMENS, "libjpeg-turbo"),
                                       ("edge/wg04_RG1_JLSN.dcm", "charls")])
def test_fast_decoders_give_identical_pixels(name, fast):
    if not decoders.is_available(fast):
        pytest.skip(f"{fast} not installed")
    a = read_dicom(real(name), decoder=fast)
    b = read_dicom(real(name), decoder="pydicom")
    assert a.meta["decoder"] == fast and b.meta["decoder"] == "pydicom"
    assert np.array_equal(a.pixels, b.pixels)


def test_no_patient_identity_in_metadata():
    path = real(GE)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    text = json.dumps(read_dicom(path).meta)
    for key in ("PatientName", "PatientBirthDate", "AccessionNumber", "PatientID",
                "StudyInstanceUID", "SOPInstanceUID"):
        value = str(ds.get(key, "") or "")
        if len(value) > 3:
            assert value not in text, key


def test_salt_changes_every_hash():
    a = read_header(real(GE), salt="first-salt-0123456789")
    b = read_header(real(GE), salt="second-salt-0123456789")
    assert a["patient_hash"] != b["patient_hash"] and a["study_hash"] != b["study_hash"]
    # the SOP Instance UID hash is salted too: an unsalted hash re-links rows to a PACS
    assert a["sop_uid_hash"] != b["sop_uid_hash"]
    uid = pydicom.dcmread(real(GE), stop_before_pixels=True).SOPInstanceUID
    assert a["sop_uid_hash"] != hashlib.sha256(str(uid).encode()).hexdigest()[:16]
    assert len(a["patient_hash"]) == 16 and len(a["sop_uid_hash"]) == 16


# ------------------------------------------------ every transfer syntax on a synthetic image

def _mg_dataset(px: np.ndarray, photometric_: str = "MONOCHROME2", bits: int = 12) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["t"])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Manufacturer, ds.ImageLaterality, ds.ViewPosition = "MG", "TEST", "L", "CC"
    ds.PatientID, ds.PatientName = "SECRET-ID-123", "Secret^Person"
    ds.Rows, ds.Columns = px.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric_
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = px.astype("<u2").tobytes()
    return ds


def _image(seed=0, shape=(64, 48), bits=12):
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 2 ** bits, size=shape).astype(np.uint16)
    px[:, : shape[1] // 3] = 0  # some background
    return px


def _roundtrip(ds: Dataset, tmp_path, name="x.dcm", **kw) -> str:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=kw.get("enforce", True),
               implicit_vr=kw.get("implicit"), little_endian=kw.get("little"))
    return path


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRLittleEndian,
                                ExplicitVRBigEndian])
def test_native_transfer_syntaxes(ts, tmp_path):
    px = _image()
    ds = _mg_dataset(px)
    ds.file_meta.TransferSyntaxUID = ts
    if ts == ExplicitVRBigEndian:
        ds.PixelData = px.astype(">u2").tobytes()
    path = tmp_path / "n.dcm"
    ds.save_as(path, implicit_vr=ts == ImplicitVRLittleEndian,
               little_endian=ts != ExplicitVRBigEndian)
    rec = read_dicom(path)
    assert rec.meta["transfer_syntax"] == ts
    assert np.array_equal(rec.pixels, px)


def test_deflated_transfer_syntax(tmp_path):
    px = _image(1)
    ds = _mg_dataset(px)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    path = tmp_path / "d.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=True)
    rec = read_dicom(path)
    assert rec.meta["transfer_syntax"] == "1.2.840.10008.1.2.1.99"
    assert np.array_equal(rec.pixels, px)


def test_file_without_file_meta(tmp_path):
    px = _image(2)
    ds = _mg_dataset(px)
    path = tmp_path / "nometa.dcm"
    buf = io.BytesIO()
    ds.file_meta = FileMetaDataset()
    pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    path.write_bytes(buf.getvalue())
    assert path.read_bytes()[128:132] != b"DICM"
    rec = read_dicom(path)
    assert rec.meta["transfer_syntax"] == ImplicitVRLittleEndian
    assert np.array_equal(rec.pixels, px)


@pytest.mark.parametrize("ts", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_with_pydicom_encoders(ts, tmp_path):
    px = _image(3)
    ds = _mg_dataset(px)
    ds.compress(ts)
    path = tmp_path / "c.dcm"
    ds.save_as(path)
    rec = read_dicom(path)
    assert rec.meta["transfer_syntax"] == ts
    assert np.array_equal(rec.pixels, px)


def _encapsulated(ds: Dataset, frame: bytes, ts: str) -> Dataset:
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ts
    return ds


@pytest.mark.parametrize("ts,encode", [
    ("1.2.840.10008.1.2.4.70", lambda px: __import__("imagecodecs").ljpeg_encode(px, bitspersample=12)),
    ("1.2.840.10008.1.2.4.201", lambda px: __import__("imagecodecs").htj2k_encode(px, level=0)),
    ("1.2.840.10008.1.2.4.81", lambda px: __import__("imagecodecs").jpegls_encode(px, level=2)),
])
def test_jpeg_lossless_htj2k_and_near_lossless(ts, encode, tmp_path):
    imagecodecs = pytest.importorskip("imagecodecs")
    px = _image(4)
    try:
        frame = encode(px)
    except Exception as exc:  # noqa: BLE001 - encoder missing in this imagecodecs build
        pytest.skip(f"imagecodecs cannot encode {ts}: {exc}")
    ds = _encapsulated(_mg_dataset(px), frame, ts)
    path = tmp_path / "e.dcm"
    ds.save_as(path)
    results = {}
    for name in decoders.candidates(ts):
        results[name] = read_dicom(path, decoder=name).pixels
    assert results, f"no decoder for {ts}"
    ref = results["pydicom"]
    if ts.endswith(".81"):  # near-lossless: within the allowed error of 2
        assert np.abs(ref.astype(int) - px.astype(int)).max() <= 2
    else:
        assert np.array_equal(ref, px)
    for name, arr in results.items():
        assert np.array_equal(arr, ref), name  # every plug-in gives identical pixels
    del imagecodecs


def test_monochrome1_synthetic_inversion_and_padding(tmp_path):
    px = _image(5)
    stored = (4095 - px).astype(np.uint16)  # MONOCHROME1: background stored as 4095
    ds = _mg_dataset(stored, "MONOCHROME1")
    ds.PixelPaddingValue = 4095
    path = _roundtrip(ds, tmp_path)
    rec = read_dicom(path)
    assert rec.meta["inverted"] and rec.meta["padding_pixels"] == int((stored == 4095).sum())
    assert np.array_equal(rec.pixels, px)


def test_presentation_lut_shape_decides_before_photometric(tmp_path):
    px = _image(6)
    ds = _mg_dataset(px, "MONOCHROME1")
    ds.PresentationLUTShape = "IDENTITY"
    rec = read_dicom(_roundtrip(ds, tmp_path))
    assert rec.meta["inverted"] is False and "PresentationLUTShape" in rec.meta["inversion_reason"]
    ds = _mg_dataset(px, "MONOCHROME2")
    ds.PresentationLUTShape = "INVERSE"
    rec = read_dicom(_roundtrip(ds, tmp_path, "b.dcm"))
    assert rec.meta["inverted"] and np.array_equal(rec.pixels, 4095 - px)


def test_rescale_is_applied(tmp_path):
    px = _image(7, bits=10)
    ds = _mg_dataset(px, bits=10)
    ds.RescaleSlope, ds.RescaleIntercept = 2, 5
    rec = read_dicom(_roundtrip(ds, tmp_path))
    assert rec.meta["modality_lut"] == "rescale"
    assert np.array_equal(rec.pixels, px.astype(np.int64) * 2 + 5)


def test_view_code_sequence_fallback(tmp_path):
    ds = _mg_dataset(_image(8))
    del ds.ViewPosition
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "R-10226", "SRT", \
        "medio-lateral oblique"
    ds.ViewCodeSequence = [item]
    del ds.ImageLaterality
    ds.Laterality = "R"
    meta = read_header(_roundtrip(ds, tmp_path))
    assert (meta["view"], meta["laterality"]) == ("MLO", "R")


# ------------------------------------------------------------------------------- bad input

def test_not_dicom(tmp_path):
    p = tmp_path / "notes.dcm"
    p.write_text("this is not a DICOM file at all " * 20)
    with pytest.raises(NotDicomError) as exc:
        read_dicom(p)
    assert str(p) in str(exc.value)


def test_multiframe_rejected(tmp_path):
    px = np.concatenate([_image(9), _image(10)])
    ds = _mg_dataset(px)
    ds.Rows = 64
    ds.NumberOfFrames = 2
    with pytest.raises(UnsupportedImageError) as exc:
        read_dicom(_roundtrip(ds, tmp_path))
    assert "(0028,0008) NumberOfFrames" in str(exc.value) and "2" in str(exc.value)


def test_truncated_native_pixel_data(tmp_path):
    ds = _mg_dataset(_image(11))
    ds.PixelData = ds.PixelData[:-100]
    with pytest.raises(TruncatedError) as exc:
        read_dicom(_roundtrip(ds, tmp_path))
    assert "expected" in str(exc.value)


def test_codec_without_decoder_names_what_to_install(tmp_path):
    """A transfer syntax no plug-in claims gives NoDecoderError listing every plug-in."""
    ds = _mg_dataset(_image(12))
    ds = _encapsulated(ds, b"\x00" * 16, "1.2.840.10008.1.2.4.100")  # MPEG2: not an image codec here
    with pytest.raises(MammoprepError) as exc:
        read_dicom(_roundtrip(ds, tmp_path))
    text = str(exc.value)
    assert "(0002,0010)" in text and "pip install" in text and "pydicom" in text


# ------------------------------------------------------------------------- pure functions

@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 16), seed=st.integers(0, 2 ** 31))
def test_inversion_is_an_involution_and_reverses_order(bits, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2 ** bits, size=50).astype(np.uint16)
    y = photometric.invert(x, bits)
    assert np.array_equal(photometric.invert(y, bits), x)
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(y[order].astype(np.int64)) <= 0)
    assert int(y.max()) <= 2 ** bits - 1


@pytest.mark.parametrize("function,x,expected", [
    # center 100, width 11, 8-bit output; hand-computed from PS3.3 C.11.2.1.2
    # LINEAR: x=95 -> ((95 - 99.5) / 10 + 0.5) * 255 = 12.75 -> 13
    ("LINEAR", [94, 95, 100, 105, 106], [0, 13, 140, 255, 255]),
    # LINEAR_EXACT: x=105 -> ((105 - 100) / 11 + 0.5) * 255 = 243.4 -> 243
    ("LINEAR_EXACT", [94, 95, 100, 105, 106], [0, 12, 128, 243, 255]),
    ("SIGMOID", [100], [128]),
])
def test_window_functions_by_hand(function, x, expected):
    out = photometric.window(np.array(x), center=100, width=11, function=function, out_bits=8)
    assert out.tolist() == expected


# ------------------------------------------------------------------------------------- CLI

def test_inspect_cli_real_dir(shared_dicom):
    r = CliRunner().invoke(main, ["inspect", "--json", str(shared_dicom)])
    assert r.exit_code == 1  # the edge files include failures
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    by_name = {row["path"].split("/")[-1]: row for row in rows}
    assert by_name[GE]["status"] == "ok" and by_name[GE]["stats"]["max"] == 3471
    assert by_name["orthanc_SignedCT.dcm"]["status"] == "error"
    assert by_name["orthanc_SignedCT.dcm"]["tag"].startswith("(0028,0103)")
    assert len(rows) == len(list(iter_dicom_paths([shared_dicom])))


def test_inspect_cli_ok_exit_zero_and_text_line():
    r = CliRunner().invoke(main, ["inspect", str(real(SIEMENS))])
    assert r.exit_code == 0, r.output
    assert "Mammomat Inspiration" in r.output and "L CC" in r.output and "788x1318" in r.output


def test_inspect_cli_bad_decoder_is_usage_error():
    r = CliRunner().invoke(main, ["inspect", "--decoder", "nope", str(real(SIEMENS))])
    assert r.exit_code == 2 and "unknown decoder" in r.output


# ------------------------------------------- native pixel data without a copy (issue 15)

@pytest.mark.parametrize("case", ["junk_high_bits", "implicit", "eight_bit", "monochrome1_pad",
                                  "full_16_bits", "deflated"])
def test_native_view_plugin_gives_pydicom_pixels(case, tmp_path):
    # the zero-copy view of the file's bytes and pydicom's own decoder agree on every case
    # the view takes (and clearing the unused high bits makes the first one differ from
    # the raw bytes, so the comparison can fail)
    px = _image(11, shape=(61, 47))  # odd row length: no accidental alignment
    ds = _mg_dataset(px)
    kw = {}
    if case == "junk_high_bits":
        junk = (np.arange(px.size, dtype=np.uint16).reshape(px.shape) % 7) << 12
        ds.PixelData = (px | junk).astype("<u2").tobytes()
    elif case == "implicit":
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        kw = {"implicit": True, "little": True}
    elif case == "eight_bit":
        px = (px >> 4).astype(np.uint8)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = px.tobytes() + b"\0"  # 61 x 47 bytes is odd: one pad byte
    elif case == "monochrome1_pad":
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PixelData = (4095 - px).astype("<u2").tobytes()
        ds.PixelPaddingValue = 4095
    elif case == "full_16_bits":
        px = (px.astype(np.uint32) * 16 + 15).astype(np.uint16)
        ds.BitsStored, ds.HighBit = 16, 15
        ds.PixelData = px.astype("<u2").tobytes()
    elif case == "deflated":
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
        kw = {"implicit": False, "little": True}
    path = _roundtrip(ds, tmp_path, **kw)
    fast, slow = read_dicom(path), read_dicom(path, decoder="pydicom")
    assert fast.meta["decoder"] == "native" and slow.meta["decoder"] == "pydicom"
    assert fast.pixels.flags.writeable
    np.testing.assert_array_equal(fast.pixels, slow.pixels)
    if case == "junk_high_bits":
        np.testing.assert_array_equal(fast.pixels, px)  # the junk is gone


def test_native_view_plugin_on_real_uncompressed_files():
    from ..conftest import SHARED_DICOM

    paths = [real("edge/fodicom_CR-MONO1-10-chest_nometa.dcm")]  # implicit VR, no File Meta
    lorad = SHARED_DICOM.parent / "mammo_real" / "lorad_selenia_burned_in_text_800x615.dcm"
    if lorad.exists():
        paths.append(lorad)
    for path in paths:
        fast, slow = read_dicom(path), read_dicom(path, decoder="pydicom")
        assert fast.meta["decoder"] == "native", path
        np.testing.assert_array_equal(fast.pixels, slow.pixels)


def test_native_view_leaves_big_endian_and_short_data_to_others(tmp_path):
    px = _image(12)
    ds = _mg_dataset(px)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.PixelData = px.astype(">u2").tobytes()
    path = tmp_path / "be.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=False)
    rec = read_dicom(path)
    assert rec.meta["decoder"] == "pydicom" and np.array_equal(rec.pixels, px)


@pytest.mark.parametrize("bits", [1, 8, 10, 12, 14, 15, 16])
@pytest.mark.parametrize("shape", [(7, 5), (700, 530)])  # serial and parallel paths
def test_mask_range_matches_its_numpy_twin(bits, shape):
    from mammoprep import kernels

    rng = np.random.default_rng(bits * 100 + shape[0])
    src = rng.integers(0, 65536, size=shape, dtype=np.uint16)
    src[0, 0], src[-1, -1] = 0, 65535  # extremes on the first and last chunk
    view = np.frombuffer(src.tobytes(), "<u2").reshape(shape)  # read-only, like a file
    want, lo, hi = kernels.mask_range_np(view, bits)
    for nchunks in (1, 2, 3):
        got, glo, ghi = kernels.mask_range(view, bits, nchunks=nchunks)
        np.testing.assert_array_equal(got, want)
        assert (glo, ghi) == (lo, hi)
    own = src.copy()  # in place
    got, glo, ghi = kernels.mask_range(own, bits, out=own)
    assert got is own and (glo, ghi) == (lo, hi)
    np.testing.assert_array_equal(own, want)
    assert hi == (1 << bits) - 1 and lo == 0
