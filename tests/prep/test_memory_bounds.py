"""Memory bounded by design (issue 25): the declared image is checked against the memory cap
before any pixel data is read, for every transfer syntax; header parsing is bounded (read
count, bytes, long values deferred). The hostile files come from benchmarks/hostile_files.py
(the memory benchmark uses the same ones) and are small or sparse on disk."""

from __future__ import annotations

import copy
import sys
import tracemalloc
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from click.testing import CliRunner
from pydicom.encaps import encapsulate

from mammoprep.cli import main
from mammoprep.errors import TooLargeError, UnsupportedImageError
from mammoprep.io import limits
from mammoprep.io.dicom import read_dicom
from mammoprep.io.header import read_header

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import hostile_files as hf  # noqa: E402

MIB = 1 << 20


def _peak(fn, *args):
    """(result or exception, peak traced bytes) of ``fn(*args)``."""
    tracemalloc.start()
    try:
        try:
            out = fn(*args)
        except Exception as exc:  # noqa: BLE001 - returned for the caller to check
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------ the image cap

def _encoded(ts: str, px: np.ndarray) -> bytes:
    """One frame of ``px`` in transfer syntax ``ts``."""
    if ts == "1.2.840.10008.1.2.5":  # pydicom's own RLE encoder
        from pydicom.encaps import generate_fragments

        ds = hf.header(*px.shape)
        ds.compress("1.2.840.10008.1.2.5", px, encoding_plugin="pydicom")
        return b"".join(list(generate_fragments(ds.PixelData))[1:])
    encode = {
        "1.2.840.10008.1.2.4.50": lambda: imagecodecs.jpeg8_encode((px >> 4).astype(np.uint8)),
        "1.2.840.10008.1.2.4.70": lambda: imagecodecs.ljpeg_encode(px, bitspersample=12),
        "1.2.840.10008.1.2.4.80": lambda: imagecodecs.jpegls_encode(px),
        "1.2.840.10008.1.2.4.90": lambda: imagecodecs.jpeg2k_encode(px, codecformat="J2K",
                                                                    level=0, reversible=True),
        "1.2.840.10008.1.2.4.201": lambda: imagecodecs.htj2k_encode(px),
    }[ts]
    return bytes(encode())


COMPRESSED = ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70",
              "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201"]


def _compressed_file(tmp_path: Path, ts: str, rows: int, cols: int, frames: int) -> Path:
    """A small valid frame of ``ts`` under a header declaring ``rows x cols x frames``."""
    px = hf.breast_image(64, 64)
    try:
        frame = _encoded(ts, px)
    except Exception as exc:  # noqa: BLE001 - an encoder this imagecodecs build lacks
        pytest.skip(f"cannot encode {ts}: {exc}")
    ds = hf.header(rows, cols, frames, ts=ts)
    if ts == "1.2.840.10008.1.2.4.50":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([frame] * frames)
    ds["PixelData"].VR = "OB"
    path = tmp_path / f"{ts}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("ts", COMPRESSED)
def test_declared_frames_over_the_cap_are_too_large_for_every_codec(tmp_path, ts,
                                                                    monkeypatch):
    """6000 x 6000 x 4 frames x 2 bytes = 288 MB, over the 256 MiB cap: a too_large reject
    naming the tags, their values, the cap and how to raise it (main took it for a
    multi-frame image, after reading its pixel data). Raised, the cap lets it through to
    the multi-frame check."""
    monkeypatch.delenv(limits.ENV_MAX_IMAGE_BYTES, raising=False)
    path = _compressed_file(tmp_path, ts, 6000, 6000, 4)
    with pytest.raises(TooLargeError) as exc:
        read_dicom(path)
    msg = str(exc.value)
    assert exc.value.kind == "too_large"
    for text in ("(0028,0010) Rows 6000", "(0028,0011) Columns 6000",
                 "(0028,0008) NumberOfFrames 4", "288000000 bytes", "cap 268435456 bytes",
                 "--max-image-bytes", limits.ENV_MAX_IMAGE_BYTES):
        assert text in msg, (text, msg)
    monkeypatch.setenv(limits.ENV_MAX_IMAGE_BYTES, "512M")
    with pytest.raises(UnsupportedImageError, match="multi-frame"):
        read_dicom(path)


def test_native_pixel_data_over_the_cap_are_never_read(tmp_path, monkeypatch):
    """A sparse 288 MB native file declaring 4 frames: refused before its pixel data are
    read (main read all 288 MB, then called it multi-frame)."""
    monkeypatch.delenv(limits.ENV_MAX_IMAGE_BYTES, raising=False)
    path = hf.native_image(tmp_path / "frames.dcm", 6000, 6000, frames=4)
    err, peak = _peak(read_dicom, path)
    assert isinstance(err, TooLargeError), err
    assert "NumberOfFrames 4" in str(err)
    assert peak < 8 * MIB
    # a single frame within the cap reads as before (here: 2 bytes a sample, 16-bit)
    px = hf.breast_image(256, 192)
    ok = hf.native_image(tmp_path / "ok.dcm", 256, 192, pixels=px)
    assert np.array_equal(read_dicom(ok).pixels, px)


def test_deflate_bomb_declaring_a_huge_image_is_refused_before_inflating(tmp_path,
                                                                       monkeypatch):
    """The issue's file: 32768 x 16384 behind a deflate transfer syntax. main inflated all
    of it (here 96 MiB of zeros; 1 GiB in the issue: 3.4 GB peak) before any check."""
    monkeypatch.delenv(limits.ENV_MAX_IMAGE_BYTES, raising=False)
    bomb = hf.deflate_bomb(tmp_path / "bomb.dcm", 32768, 16384, inflated_mib=96)
    err, peak = _peak(read_dicom, bomb)
    assert isinstance(err, TooLargeError), err
    assert "Rows 32768" in str(err) and "Columns 16384" in str(err)
    assert peak < 40 * MIB  # the 16 MiB header window, inflated and joined
    assert read_header(bomb)["rows"] == 32768  # inspect --header-only still reports it


def test_deflate_bomb_without_preamble_is_capped(tmp_path):
    """Without the 128-byte preamble and 'DICM' main let pydicom inflate the whole data set
    (96 MiB of zeros for a 64 x 64 image)."""
    bomb = hf.deflate_bomb(tmp_path / "bomb.dcm", 64, 64, inflated_mib=96, preamble=False)
    err, peak = _peak(read_dicom, bomb)
    assert isinstance(err, TooLargeError) and "more than the header implies" in str(err), err
    assert peak < 40 * MIB


def test_cap_option_and_environment(tmp_path, monkeypatch):
    """``mammoprep --max-image-bytes`` (and $MAMMOPREP_MAX_IMAGE_BYTES) raise the cap; a bad
    value is a usage error naming both."""
    assert limits.parse_size("256M") == 256 * MIB == limits.DEFAULT_MAX_IMAGE_BYTES
    assert limits.parse_size("2GiB") == 2 << 30 and limits.parse_size("1048576") == MIB
    path = hf.native_image(tmp_path / "frames.dcm", 6000, 6000, frames=4)
    monkeypatch.setenv(limits.ENV_MAX_IMAGE_BYTES, "")  # restored after the test
    r = CliRunner().invoke(main, ["inspect", str(path)])
    assert r.exit_code == 1 and "too_large" in r.output and "--max-image-bytes" in r.output
    r = CliRunner().invoke(main, ["--max-image-bytes", "300M", "inspect", str(path)])
    assert "too_large" not in r.output and "multi-frame" in r.output, r.output
    monkeypatch.setenv(limits.ENV_MAX_IMAGE_BYTES, "lots")
    r = CliRunner().invoke(main, ["inspect", str(path)])
    assert r.exit_code == 2 and "MAMMOPREP_MAX_IMAGE_BYTES" in r.output


# ------------------------------------------------------------------ header parsing

def test_many_empty_items_stop_the_parse(tmp_path, monkeypatch):
    """Empty items in a private sequence: parsing stops at the read bound (main parsed all
    6 million in 100 s and 4.1 GB). A small bound keeps the test fast; a modest count under
    it still reads."""
    monkeypatch.setattr(limits, "MAX_HEADER_READS", 3000)
    path = hf.many_items(tmp_path / "items.dcm", 5000)
    for fn in (read_header, read_dicom):
        with pytest.raises(TooLargeError, match="too many elements and sequence items") as exc:
            fn(path)
        assert exc.value.tag == "(FFFE,E000) Item" and "3000 reads" in str(exc.value)
    ok = hf.many_items(tmp_path / "ok.dcm", 200)
    assert read_dicom(ok).pixels.shape == (128, 96)


def test_many_items_default_bound_holds_memory(tmp_path):
    """The default bound on a 1.6 million item file (12.8 MB): the parse stops long before
    the end, within tens of MiB of traced memory (linear in the bound, not in the file)."""
    path = hf.many_items(tmp_path / "items.dcm", 1_600_000)
    err, peak = _peak(read_header, path)
    assert isinstance(err, TooLargeError), err
    assert peak < 120 * MIB


def test_sparse_private_value_is_left_unread(tmp_path):
    """A 300 MB private OB element (a sparse hole): the image is read without it (main read
    all of it: 2.4 GB peak for the issue's 2.2 GB)."""
    px = hf.breast_image()
    path = hf.sparse_value(tmp_path / "sparse.dcm", 300 * MIB, pixels=px)
    rec, peak = _peak(read_dicom, path)
    assert not isinstance(rec, Exception), rec
    assert np.array_equal(rec.pixels, px)
    assert peak < 16 * MIB
    assert read_header(path)["rows"] == 128


def test_long_public_value_is_too_large(tmp_path):
    """A 300 MB public element ((0042,0011) Encapsulated Document): refused unread."""
    path = hf.sparse_value(tmp_path / "doc.dcm", 300 * MIB, tag=(0x0042, 0x0011))
    err, peak = _peak(read_dicom, path)
    assert isinstance(err, TooLargeError) and err.tag == "(0042,0011)", err
    assert "314572800 bytes" in str(err) and peak < 8 * MIB


def test_long_value_inside_a_sequence_is_bounded(tmp_path, monkeypatch):
    """pydicom cannot defer a value inside a sequence item: the header's byte budget stops
    it (here lowered to 4 MiB with a 6 MiB value; main read it whole)."""
    monkeypatch.setattr(limits, "HEADER_BYTES", 4 * MIB)
    ds = hf.header(64, 64)
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.add_new(0x00291010, "OB", bytes(6 * MIB))
    ds.add_new(0x00290010, "LO", "HOSTILE")
    ds.add_new(0x00291020, "SQ", Sequence([item]))
    ds.PixelData = hf.breast_image(64, 64).tobytes()
    ds["PixelData"].VR = "OW"
    path = tmp_path / "seq.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(TooLargeError, match="header's values exceed 4 MiB"):
        read_header(path)


def test_cbis_mask_reading_is_capped(tmp_path, monkeypatch):
    """ROI masks (CBIS-DDSM label source) go through the same bounded reader."""
    from mammoprep.labels.cbis_index import mask_box

    monkeypatch.delenv(limits.ENV_MAX_IMAGE_BYTES, raising=False)
    path = hf.native_image(tmp_path / "mask.dcm", 6000, 6000, frames=4)
    box, why = mask_box(path, None)
    assert box is None and "memory cap" in why, why
    mask = np.zeros((64, 64), np.uint16)
    mask[10:20, 30:40] = 255
    good = hf.native_image(tmp_path / "good.dcm", 64, 64, pixels=mask)
    assert mask_box(good, (64, 64)) == ([30.0, 10.0, 40.0, 20.0], "")


def test_declared_bytes_count_a_sample_as_at_least_2_bytes():
    """A 4096 x 3328 16-bit image (the Hologic size) is far inside the cap."""
    assert 4096 * 3328 * 2 * 9 < limits.DEFAULT_MAX_IMAGE_BYTES
    ds = hf.header(4096, 3328)
    assert limits.declared_image_bytes(ds)[0] == 4096 * 3328 * 2
    eight = copy.deepcopy(ds)
    eight.BitsAllocated = 8  # worked on as 16-bit: counted as 2 bytes a sample
    assert limits.declared_image_bytes(eight)[0] == 4096 * 3328 * 2
