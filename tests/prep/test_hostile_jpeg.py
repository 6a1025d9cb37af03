"""Hostile inputs found by a probe (issue 25, item 4): a cut JPEG lossless codestream that
the decoders pad in silently, images constant only after the Modality LUT or padding, and
damaged headers that used to be "unexpected failures" or rejects with a wrong reason.

Every file is made here from a real DICOM of ../shared/testdata (pydicom or byte editing),
read with the project's real decoders; no binary fixtures, no mocks."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from mammoprep import decoders
from mammoprep.cli import main
from mammoprep.decoders import codestream
from mammoprep.io.dicom import read_dicom, safe_read
from mammoprep.io.header import read_header
from mammoprep.errors import (DecodeError, InvalidHeaderError, MammoprepError, NoContrastError,
                              TruncatedError)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "testdata"
#: JPEG lossless SV1, 2294 x 1914, 12 bits: the probe's file.
DXM = SHARED / "mammo_real" / "DXm_2_25_102225650577760012443884776983328874638.DCM"
#: The smallest real mammogram (JPEG lossless), for the tests that decode.
SMALL = SHARED / "mammo_real" / "DXm_2_25_136342668529124084318567234809985401338.DCM"
GE = SHARED / "dicom" / "fodicom_GH133_GE_SenographeEssential.dcm"  # has laterality
J2K_MG = SHARED / "dicom" / "wg04_MG1_J2KI.dcm"
IMPLICIT = SHARED / "dicom" / "edge" / "fodicom_CR-MONO1-10-chest_nometa.dcm"
JPEG_FILES = [DXM, SHARED / "dicom" / "edge" / "wg04_RG1_JLSN.dcm",  # JPEG-LS near-lossless
              SHARED / "dicom" / "edge" / "orthanc_Issue44_Monochrome1-Jpeg.dcm",  # baseline
              GE]


def need(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            pytest.skip(f"real test data not found: {p}")


def frame_of(path: Path) -> tuple[pydicom.Dataset, bytes]:
    ds = pydicom.dcmread(path)
    return ds, decoders.single_frame_bytes(ds)


def reencapsulated(src: Path, frame: bytes, out: Path) -> Path:
    ds = pydicom.dcmread(src)
    ds.PixelData = encapsulate([frame])
    ds.save_as(out)
    return out


def assert_names(err: MammoprepError, path: Path, tag: str, *values: str) -> None:
    """The message names the file, the tag and the value, and says what to do."""
    text = str(err)
    assert str(path) in text and tag in text and err.hint, text
    for v in values:
        assert v in text, text
    assert "unexpected" not in text and "please report" not in text, text


# ------------------------------------------------------------ 1. JPEG codestream structure

@pytest.mark.parametrize("fraction", [0.9, 0.5, 0.01])
def test_a_cut_jpeg_lossless_mammogram_is_truncated_not_padded(fraction, tmp_path):
    """libjpeg-turbo and libjpeg fill the missing rows (with 2048) without a word; the
    codestream's missing EOI gives the cut away, before any decoder runs."""
    need(DXM)
    _, data = frame_of(DXM)
    cut = reencapsulated(DXM, data[:int(len(data) * fraction)], tmp_path / "cut.dcm")
    with pytest.raises(TruncatedError) as exc:
        read_dicom(cut)
    assert_names(exc.value, cut, "(7FE0,0010) PixelData", "JPEG Lossless", "FFD9")
    result = CliRunner().invoke(main, ["inspect", str(cut)])
    assert result.exit_code == 1 and "ERROR  truncated" in result.output


def test_jpeg_scans_walk_real_codestreams_and_fail_on_every_cut():
    """Every real JPEG-family codestream walks from SOI to EOI (one scan); cut anywhere (in
    the marker segments, in the scan, just before EOI) it fails."""
    need(*JPEG_FILES)
    for path in JPEG_FILES:
        _, data = frame_of(path)
        data = data.rstrip(b"\0")  # cutting padding alone cuts nothing
        assert codestream.jpeg_scans(data) == 1, path
        assert codestream.jpeg_scans(data + b"\0") == 1  # zero padding to an even length
        for at in [*range(1, 64), *np.linspace(64, len(data) - 1, 40).astype(int)]:
            with pytest.raises(codestream.CodestreamError):
                codestream.jpeg_scans(data[:at])


def test_bytes_after_eoi_or_a_broken_marker_segment_are_corrupt(tmp_path):
    """A last fragment that still ends with FFD9 passes the end-marker check; the walk finds
    bytes inserted after the EOI, or a marker segment longer than what is left."""
    need(DXM)
    _, data = frame_of(DXM)
    sos = data.index(b"\xff\xda")
    broken = {"after EOI": data + b"\x12\x34\xff\xd9",
              "SOS claiming 65520 bytes": (data[:sos + 2] + b"\xff\xf0" + data[sos + 4:sos + 40]
                                           + b"\xff\xd9")}
    for name, frame in broken.items():
        with pytest.raises(codestream.CodestreamError):
            codestream.jpeg_scans(frame)
        path = reencapsulated(DXM, frame, tmp_path / "broken.dcm")
        with pytest.raises(DecodeError, match="codestream is corrupt") as exc:
            read_dicom(path)
        assert_names(exc.value, path, "(7FE0,0010) PixelData", "JPEG Lossless")


# ------------------------------------------------ 2. contrast after Modality LUT / padding

def _constant_after(kind: str, src: Path, out: Path) -> Path:
    ds = pydicom.dcmread(src)
    if kind == "padding":  # every stored value is padding: all 0 after it
        ds.PixelPaddingValue, ds.PixelPaddingRangeLimit = 0, (1 << int(ds.BitsStored)) - 1
        ds["PixelPaddingValue"].VR = ds["PixelPaddingRangeLimit"].VR = "US"
    elif kind == "lut":  # a Modality LUT mapping every value to 700
        item = Dataset()
        item.LUTDescriptor = [4096, 0, 16]
        item.LUTData = [700] * 4096
        item["LUTDescriptor"].VR, item["LUTData"].VR = "US", "US"
        item.ModalityLUTType = "US"
        ds.ModalityLUTSequence = Sequence([item])
    else:  # a rescale slope so small every value rounds to the intercept
        ds.RescaleSlope, ds.RescaleIntercept = "1e-9", "100"
    ds.save_as(out)
    return out


@pytest.mark.parametrize("kind", ["padding", "lut", "rescale"])
def test_inspect_rejects_an_image_constant_after_the_modality_lut_or_padding(kind, tmp_path):
    """The contrast check ran before the Modality LUT / Rescale and padding: `inspect` said
    OK and harmonize / shard rejected the file later. It now runs on the values they see."""
    need(SMALL)
    path = _constant_after(kind, SMALL, tmp_path / f"{kind}.dcm")
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1, result.output
    assert "ERROR  no_contrast" in result.output and str(path) in result.output
    with pytest.raises(NoContrastError, match="after the") as exc:
        read_dicom(path)
    assert "(7FE0,0010) PixelData" in str(exc.value)


# ------------------------------------------------------------ 3. damaged headers

def _explicit_element(raw: bytes, group: int, elem: int) -> int:
    """Byte offset of the first (group, elem) element of an explicit VR LE data set."""
    at = raw.find(struct.pack("<HH", group, elem), 132)
    assert at > 0
    return at


def _edit(src: Path, out: Path, **attrs) -> Path:
    ds = pydicom.dcmread(src)
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.save_as(out)
    return out


def _nan_slope(tmp: Path) -> Path:
    return _edit(SMALL, tmp / "nan.dcm", RescaleSlope="NaN", RescaleIntercept="0")


def _lut_item_empty(tmp: Path) -> Path:
    return _edit(SMALL, tmp / "lut.dcm", ModalityLUTSequence=Sequence([Dataset()]))


def _lut_no_item(tmp: Path) -> Path:
    return _edit(SMALL, tmp / "lut0.dcm", ModalityLUTSequence=Sequence([]))


def _bit_flip(tmp: Path) -> Path:
    """Bit 0 of the length of (0028,0101) BitsStored flipped (2 -> 3 bytes)."""
    raw = bytearray(GE.read_bytes())
    at = _explicit_element(bytes(raw), 0x0028, 0x0101)
    raw[at + 6] ^= 1
    (tmp / "flip.dcm").write_bytes(raw)
    return tmp / "flip.dcm"


def _garbage_before_implicit(tmp: Path) -> Path:
    """16 bytes of garbage before a raw implicit-VR data set; they read as a Rows element
    of 65535 bytes."""
    garbage = b"\x28\x00\x10\x00\xff\xff\x00\x00" + b"GARBAGE!"
    (tmp / "garbage.dcm").write_bytes(garbage + IMPLICIT.read_bytes())
    return tmp / "garbage.dcm"


def _rows_three_bytes(tmp: Path) -> Path:
    raw = GE.read_bytes()
    at = _explicit_element(raw, 0x0028, 0x0010)
    (tmp / "rows3.dcm").write_bytes(raw[:at + 4] + b"US\x03\x00abc" + raw[at + 10:])
    return tmp / "rows3.dcm"


def _rows_abc(tmp: Path) -> Path:
    raw = GE.read_bytes()
    at = _explicit_element(raw, 0x0028, 0x0010)
    (tmp / "rowsabc.dcm").write_bytes(raw[:at + 4] + b"IS\x04\x00abc " + raw[at + 10:])
    return tmp / "rowsabc.dcm"


def _zero_frames(tmp: Path) -> Path:
    return _edit(J2K_MG, tmp / "frames0.dcm", NumberOfFrames=0)


#: name -> (file maker, error type, tag, values the message must show)
DAMAGED = {
    "NaN rescale slope": (_nan_slope, InvalidHeaderError, "(0028,1053) RescaleSlope",
                          ["NaN", "finite"]),
    "Modality LUT item without attributes": (_lut_item_empty, InvalidHeaderError,
                                             "(0028,3000) ModalityLUTSequence",
                                             ["LUTDescriptor"]),
    "Modality LUT Sequence without item": (_lut_no_item, InvalidHeaderError,
                                           "(0028,3000) ModalityLUTSequence", ["0 items"]),
    "header bit flip": (_bit_flip, InvalidHeaderError, "(0028,0101) BitsStored",
                        ["VR US, 3 bytes"]),
    "garbage before an implicit-VR header": (_garbage_before_implicit, InvalidHeaderError,
                                             "(0028,0010) Rows", ["65535 bytes"]),
    "3-byte Rows": (_rows_three_bytes, InvalidHeaderError, "(0028,0010) Rows",
                    ["3 bytes: b'abc'"]),
    "Rows abc": (_rows_abc, InvalidHeaderError, "(0028,0010) Rows",
                 ["not an integer", "'abc'"]),
    "NumberOfFrames 0": (_zero_frames, InvalidHeaderError, "(0028,0008) NumberOfFrames",
                         ["= 0]", "at least 1"]),
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_a_damaged_header_is_a_typed_reject_with_its_true_reason(name, tmp_path):
    make, kind, tag, values = DAMAGED[name]
    need(SMALL, GE, J2K_MG, IMPLICIT)
    path = make(tmp_path)
    record, err = safe_read(path)
    assert record is None and type(err) is kind, (name, err)
    assert_names(err, path, tag, *values)


@pytest.mark.parametrize("cut", [726, 733, 736])
def test_a_file_cut_inside_its_header_is_truncated_not_missing_laterality(cut, tmp_path):
    """Cut at 726 bytes, the GE mammogram's header used to read as complete (without its
    laterality, so `shard` said no_laterality); pydicom keeps an element cut short (726,
    736) and drops a cut element header (733) silently."""
    need(GE)
    path = tmp_path / "cut.dcm"
    path.write_bytes(GE.read_bytes()[:cut])
    with pytest.raises(TruncatedError, match="ends inside an element") as exc:
        read_header(path)
    assert_names(exc.value, path, "(0008,", f"file of {cut} bytes")
    _, err = safe_read(path)
    assert isinstance(err, TruncatedError)


def test_a_single_valued_pixel_spacing_is_no_spacing_not_a_crash(tmp_path):
    """A header bit flip that leaves (0028,0030) PixelSpacing with one value used to raise
    TypeError in the metadata ("unexpected failure")."""
    need(GE)
    ds = pydicom.dcmread(GE)
    ds.PixelSpacing = "0.1"
    ds.save_as(tmp_path / "spacing.dcm")
    spacing = read_header(tmp_path / "spacing.dcm")["pixel_spacing_mm"]
    assert spacing is None or len(spacing) == 2


def test_a_valid_modality_lut_still_reads(tmp_path):
    """The new checks reject nothing valid: an identity Modality LUT reads as before."""
    need(SMALL)
    base = read_dicom(SMALL).pixels
    ds = pydicom.dcmread(SMALL)
    item = Dataset()
    item.LUTDescriptor, item.LUTData = [4096, 0, 16], list(range(4096))
    item["LUTDescriptor"].VR, item["LUTData"].VR = "US", "US"
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = Sequence([item])
    ds.save_as(tmp_path / "lut.dcm")
    rec = read_dicom(tmp_path / "lut.dcm")
    assert rec.meta["modality_lut"] == "lut" and np.array_equal(rec.pixels, base)
