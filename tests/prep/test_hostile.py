"""Hostile inputs, generated here: FIFOs, devices, symlink loops, a deflate bomb, sequences
nested thousands deep, non-UTF-8 and newline file names. Each is a typed reject with a reason,
never a hang, an unbounded allocation, a traceback or a forged output line; the batch goes on."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian

from mammoprep.cli import main
from mammoprep.io.dicom import read_dicom, safe_read
from mammoprep.io.header import INFLATE_HEADER_LIMIT, read_header
from mammoprep.io.paths import iter_dicom_paths
from mammoprep.errors import (InvalidHeaderError, NotRegularFileError, TooLargeError,
                              TruncatedError, display_path)

from ..conftest import deadline

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import hostile_files as hf  # noqa: E402  (the builders benchmarks/memory.py uses too)

DEFLATED = "1.2.840.10008.1.2.1.99"
MG = "1.2.840.10008.5.1.4.1.1.1.2"


COHORT = dict(patients=2, seed=3, size=(160, 128))  # the `cohort` fixture (conftest.py)


def _header(rows=64, cols=64) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = MG, "1.2.3.4.5"
    ds.Modality, ds.Manufacturer, ds.ImageLaterality, ds.ViewPosition = "MG", "T", "L", "CC"
    ds.PatientID = "HOSTILE-1"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    return ds


def _file_meta(ts: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MG, "1.2.3.4.5"
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = "1.2.3.4"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + fp.getvalue()


def deflate_bomb(path: Path, inflated_mib: int, rows=64, cols=64) -> Path:
    """A deflated-transfer-syntax file whose header says rows x cols x 16 bits but whose
    pixel data inflate to ``inflated_mib`` MiB of zeros (streamed through zlib, never held)."""
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    nbytes = inflated_mib << 20
    parts = [z.compress(hf.body(_header(rows, cols)) + hf.pixel_header(nbytes))]
    zeros = bytes(1 << 20)
    for _ in range(inflated_mib):
        parts.append(z.compress(zeros))
    parts.append(z.flush())
    path.write_bytes(_file_meta(DEFLATED) + b"".join(parts))
    return path


def nested_sequence(path: Path, depth: int) -> Path:
    """Explicit VR LE Part 10 file with a sequence nested ``depth`` deep (undefined lengths)."""
    head = hf.body(_header())
    open_level = (struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
                  + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF))
    close_level = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    path.write_bytes(_file_meta(ExplicitVRLittleEndian) + open_level * depth
                     + close_level * depth + head)
    return path


# ------------------------------------------------------------------ FIFOs, devices, loops

def test_fifo_named_dcm_is_a_typed_reject_not_a_hang(tmp_path):
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    with deadline():
        with pytest.raises(NotRegularFileError, match="FIFO") as exc:
            read_dicom(fifo)
        assert exc.value.kind == "not_a_regular_file" and "pipe.dcm" in str(exc.value)
        with pytest.raises(NotRegularFileError, match="FIFO"):
            read_header(fifo)


def test_dev_zero_symlink_is_a_typed_reject(tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    link = tmp_path / "x.dcm"
    link.symlink_to("/dev/zero")
    with deadline():
        rec, err = safe_read(link)
    assert rec is None and isinstance(err, NotRegularFileError)
    assert "character device" in str(err)


def test_symlink_loop_is_a_typed_reject(tmp_path):
    loop = tmp_path / "loop.dcm"
    loop.symlink_to(loop.name)  # points at itself
    dangling = tmp_path / "gone.dcm"
    dangling.symlink_to(tmp_path / "missing.dcm")
    with pytest.raises(NotRegularFileError, match="symbolic link loop"):
        read_dicom(loop)
    with pytest.raises(NotRegularFileError, match="missing file"):
        read_dicom(dangling)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_a_permission_error_not_truncated(tmp_path, cohort):
    f = tmp_path / "locked.dcm"
    f.write_bytes(next(cohort.rglob("*.dcm")).read_bytes())
    f.chmod(0)
    from mammoprep.errors import UnreadableError

    with pytest.raises(UnreadableError, match="permission denied"):
        read_dicom(f)


def test_unlistable_folder_is_reported_not_skipped(tmp_path, cohort, monkeypatch):
    from mammoprep.errors import UnreadableError

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "good.dcm").write_bytes(next(cohort.rglob("*.dcm")).read_bytes())
    locked = tmp_path / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path="."):  # the OS refuses to list one folder (EACCES), as for a non-root user
        if os.fspath(path) == os.fspath(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = list(iter_dicom_paths([tmp_path]))
    assert sorted(p.name for p in found) == ["good.dcm", "locked"]
    rec, err = safe_read(locked)
    assert rec is None and isinstance(err, UnreadableError)
    assert "cannot be listed" in str(err) and "Permission denied" in str(err)


def test_walking_a_folder_never_opens_special_files(tmp_path, cohort):
    good = next(cohort.rglob("*.dcm"))
    (tmp_path / "good.dcm").write_bytes(good.read_bytes())
    os.mkfifo(tmp_path / "pipe.dcm")
    os.mkfifo(tmp_path / "pipe_without_suffix")  # sniffing it would block forever
    (tmp_path / "loop.dcm").symlink_to("loop.dcm")
    with deadline():
        found = sorted(p.name for p in iter_dicom_paths([tmp_path]))
    # named *.dcm: listed so that reading reports them; extension-less FIFO: skipped
    assert found == ["good.dcm", "loop.dcm", "pipe.dcm"]


def _run_cli(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mammoprep.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_harmonize_and_inspect_go_on_past_fifo_device_and_loop(tmp_path, cohort):
    """In a child process with a timeout: the old code blocked forever on the FIFO."""
    src = tmp_path / "in"
    src.mkdir()
    good = sorted(cohort.rglob("*.dcm"))[:2]
    for i, g in enumerate(good):
        (src / f"good{i}.dcm").write_bytes(g.read_bytes())
    os.mkfifo(src / "pipe.dcm")
    (src / "loop.dcm").symlink_to("loop.dcm")
    if os.path.exists("/dev/zero"):
        (src / "zero.dcm").symlink_to("/dev/zero")
    out = tmp_path / "out"
    r = _run_cli(["harmonize", "--ref", str(good[0]), str(src), "-o", str(out), "-j", "1"])
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert (out / "good0.dcm").exists() and (out / "good1.dcm").exists()
    assert "2 written" in r.stdout
    assert "pipe.dcm: not a regular file but a FIFO" in r.stderr
    assert "loop.dcm: a symbolic link loop" in r.stderr
    r = _run_cli(["inspect", "--header-only", str(src)])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "not_a_regular_file" in r.stdout and "good0.dcm  OK" in r.stdout


# ------------------------------------------------------------------ decompression bomb

def test_deflate_bomb_is_rejected_without_inflating_it(tmp_path):
    bomb = deflate_bomb(tmp_path / "bomb.dcm", inflated_mib=256)
    assert bomb.stat().st_size < 2 << 20  # a few hundred kB on disk
    tracemalloc.start()
    try:
        with pytest.raises(TooLargeError, match="more than the header implies") as exc:
            read_dicom(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc.value.kind == "too_large" and "64x64x16" in str(exc.value)
    # pydicom alone inflates all 256 MiB; the cap stops within the header limit + margin
    assert peak < INFLATE_HEADER_LIMIT + (24 << 20)
    # the header alone is still readable (inspect --header-only)
    assert read_header(bomb)["rows"] == 64


def test_deflated_file_of_the_right_size_still_reads(tmp_path):
    px = (np.arange(64 * 64, dtype=np.uint16) % 4096).reshape(64, 64)
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = hf.body(_header()) + hf.pixel_header(px.nbytes) + px.astype("<u2").tobytes()
    path = tmp_path / "ok.dcm"
    path.write_bytes(_file_meta(DEFLATED) + z.compress(body) + z.flush())
    rec = read_dicom(path)
    assert rec.meta["transfer_syntax"] == DEFLATED and np.array_equal(rec.pixels, px)
    # cut in the middle of the deflate stream: truncated, not a crash
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(TruncatedError):
        read_dicom(cut)


def test_header_bomb_is_rejected(tmp_path):
    """A private element of 40 MiB before the pixel data: the header alone is too large."""
    ds = _header()
    ds.add_new(0x00291010, "OB", b"")
    raw = hf.body(ds)
    i = raw.index(struct.pack("<HH2sH", 0x0029, 0x1010, b"OB", 0))
    big = 40 << 20
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [z.compress(raw[:i] + struct.pack("<HH2sHI", 0x0029, 0x1010, b"OB", 0, big))]
    parts += [z.compress(bytes(1 << 20)) for _ in range(big >> 20)]
    parts.append(z.compress(raw[i + 12:]) + z.flush())
    path = tmp_path / "hbomb.dcm"
    path.write_bytes(_file_meta(DEFLATED) + b"".join(parts))
    with pytest.raises(TooLargeError, match="header inflates"):
        read_header(path)


# ------------------------------------------------------------------ parser recursion

def test_deeply_nested_sequence_is_a_typed_error(tmp_path):
    path = nested_sequence(tmp_path / "deep.dcm", depth=5000)
    with pytest.raises(InvalidHeaderError, match="nested too deeply"):
        read_header(path)
    r = CliRunner().invoke(main, ["inspect", "--header-only", str(path)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception
    assert "nested too deeply" in r.output and "Traceback" not in r.output
    # a modest depth is fine
    shallow = nested_sequence(tmp_path / "shallow.dcm", depth=20)
    assert read_header(shallow)["rows"] == 64


# ------------------------------------------------------------------ file names

def test_display_path_escapes_control_and_undecodable_bytes():
    assert display_path("a\nERROR b.dcm") == "a\\nERROR b.dcm"
    assert display_path(os.fsdecode(b"x\xff.dcm")) == "x\\xff.dcm"
    assert display_path("d\u00e9j\u00e0.dcm") == "d\u00e9j\u00e0.dcm"


def test_newline_in_a_name_cannot_forge_an_error_line(tmp_path, cohort):
    src = tmp_path / "in"
    src.mkdir()
    good = next(cohort.rglob("*.dcm"))
    (src / "good.dcm").write_bytes(good.read_bytes())
    (src / "x\nERROR forged.dcm").write_bytes(b"not a dicom at all" * 20)
    r = CliRunner().invoke(main, ["harmonize", "--ref", str(good), str(src), "-o",
                                  str(tmp_path / "o"), "-j", "1"])
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert not any(line.startswith("ERROR forged") for line in lines)
    errors = [line for line in lines if line.startswith("ERROR")]
    assert len(errors) == 1 and "x\\nERROR forged.dcm" in errors[0]
    r = CliRunner().invoke(main, ["inspect", "--header-only", str(src)])
    assert not any(line.startswith("ERROR forged") for line in r.output.splitlines())
    assert "x\\nERROR forged.dcm  ERROR" in r.output


def test_shard_with_a_non_utf8_name_writes_its_manifests(tmp_path, cohort):
    src = tmp_path / "in"
    for f in sorted(cohort.rglob("*.dcm")):
        dest = src / f.relative_to(cohort)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.read_bytes())
    bad = os.path.join(os.fsencode(src), b"bad\xff\xfe.dcm")
    with open(bad, "wb") as fh:
        fh.write(b"garbage" * 100)
    os.mkfifo(src / "pipe.dcm")
    (src / "loop.dcm").symlink_to("loop.dcm")
    out = tmp_path / "shards"
    with deadline(180):
        r = CliRunner().invoke(main, ["shard", str(src), "-o", str(out), "--size", "64",
                                      "--folds", "0", "-j", "1"])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output  # rejects
    rejects = {Path(x["path"]).name: x for x in pq.read_table(out / "rejects.parquet").to_pylist()}
    assert sorted(rejects) == ["bad\\xff\\xfe.dcm", "loop.dcm", "pipe.dcm"]
    assert rejects["pipe.dcm"]["reason"] == "not_a_regular_file"
    assert rejects["loop.dcm"]["reason"] == "not_a_regular_file"
    assert (out / "config.json").exists() and (out / "images.parquet").exists()


# ------------------------------------------------------------------ implausible pixels

def _native(path: Path, px: np.ndarray, extra: bytes = b"", **attrs) -> Path:
    """A Part 10 explicit VR LE mammogram of ``px`` (uint16), ``extra`` bytes appended to
    its pixel data, header attributes overridden by ``attrs``."""
    ds = _header(*px.shape)
    for k, v in attrs.items():
        setattr(ds, k, v)
    data = px.astype("<u2").tobytes() + extra
    data += b"\0" * (len(data) % 2)
    path.write_bytes(_file_meta(ExplicitVRLittleEndian) + hf.body(ds)
                     + hf.pixel_header(len(data)) + data)
    return path


def _texture(shape=(96, 80)) -> np.ndarray:
    return (np.arange(shape[0] * shape[1]) * 37 % 4000).reshape(shape).astype(np.uint16)


def test_pixel_data_longer_than_the_header_is_rejected(tmp_path):
    px = _texture()
    assert read_dicom(_native(tmp_path / "ok.dcm", px)).pixels.shape == px.shape
    from mammoprep.errors import PixelLengthError

    with pytest.raises(PixelLengthError) as exc:  # e.g. Rows halved by a broken export
        read_dicom(_native(tmp_path / "long.dcm", px, extra=bytes(px.nbytes)))
    assert exc.value.kind == "pixel_length_mismatch"
    assert "30720 bytes, header implies 15360" in str(exc.value)
    # an odd-length image with its one pad byte is fine (PS3.5 8.1.1)
    odd = (np.arange(9 * 7) % 200).astype(np.uint8)
    ds = _header(9, 7)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    p = tmp_path / "odd.dcm"
    p.write_bytes(_file_meta(ExplicitVRLittleEndian) + hf.body(ds)
                  + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 64) + odd.tobytes()
                  + b"\0")
    assert read_dicom(p).pixels.shape == (9, 7)


def test_constant_image_and_huge_rescale_slope_are_rejected(tmp_path):
    from mammoprep.errors import ImplausibleImageError

    with pytest.raises(ImplausibleImageError) as exc:
        read_dicom(_native(tmp_path / "flat.dcm", np.full((96, 80), 1200, np.uint16)))
    assert exc.value.kind == "no_contrast" and "1200" in str(exc.value)
    with pytest.raises(ImplausibleImageError) as exc:
        read_dicom(_native(tmp_path / "slope.dcm", _texture(), RescaleSlope=1e6,
                           RescaleIntercept=0))
    assert exc.value.kind == "implausible_pixels"
    assert "(0028,1053) RescaleSlope = 1000000.0" in str(exc.value)
    # a modest slope is still applied
    rec = read_dicom(_native(tmp_path / "s2.dcm", _texture(), RescaleSlope=2,
                             RescaleIntercept=0))
    assert rec.pixels.max() == 2 * int(_texture().max())


@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80"])
def test_truncated_codestream_is_rejected_even_where_a_decoder_returns_pixels(ts, tmp_path):
    """CharLS returns an image for a JPEG-LS codestream cut in half (the missing part
    filled in); the missing end marker gives it away."""
    from pydicom.encaps import encapsulate, generate_fragments

    import pydicom

    src = _native(tmp_path / "src.dcm", _texture())
    ds = pydicom.dcmread(src)
    try:
        ds.compress(ts)
    except Exception as exc:  # noqa: BLE001 - encoder not installed here
        pytest.skip(f"cannot encode {ts}: {exc}")
    good = tmp_path / "good.dcm"
    ds.save_as(good)
    assert np.array_equal(read_dicom(good).pixels, _texture())
    frame = b"".join(generate_fragments(ds.PixelData))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])
    cut = tmp_path / "cut.dcm"
    ds.save_as(cut)
    with pytest.raises(TruncatedError, match=r"without its end marker \(FFD9\)"):
        read_dicom(cut)


# ------------------------------------------------------------------ messages

def test_a_dicm_file_with_an_unusable_data_set_is_not_called_not_dicom(tmp_path):
    p = tmp_path / "x.dcm"
    p.write_bytes(b"\0" * 128 + b"DICM")
    with pytest.raises(InvalidHeaderError) as exc:
        read_header(p)
    assert "a DICOM file ('DICM' at byte 128)" in str(exc.value)
    assert "not a DICOM file" not in str(exc.value)
    q = tmp_path / "y.dcm"
    q.write_bytes(b"hello" * 100)
    from mammoprep.errors import NotDicomError

    with pytest.raises(NotDicomError, match="not a DICOM file"):
        read_header(q)


def test_decode_failure_advice_does_not_send_to_another_decoder(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate

    from mammoprep.errors import DecodeError

    ds = pydicom.dcmread(_native(tmp_path / "src.dcm", _texture()))
    ts = "1.2.840.10008.1.2.4.90"
    try:
        ds.compress(ts)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"cannot encode {ts}: {exc}")
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60 + b"\xff\xd9"])
    p = tmp_path / "garbage.dcm"
    ds.save_as(p)
    with pytest.raises(DecodeError) as exc:
        read_dicom(p)
    msg = str(exc.value)
    assert "--decoder" not in msg
    # one verdict, whichever check or decoder saw it first (no fallback to another decoder)
    assert "the codestream is corrupt; re-export or re-download the image" in msg


def test_mammoprep_help_examples_run_as_printed(tmp_path, monkeypatch):
    r = CliRunner().invoke(main, ["--help"])
    lines = [line.strip() for line in r.output.splitlines()
             if line.strip().startswith("mammoprep ")]
    assert len(lines) >= 5 and any(" --energy low" in line for line in lines)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAMMOPREP_SALT", "help-example-salt-0123456789")
    for line in lines:
        r = CliRunner().invoke(main, line.split()[1:])
        assert r.exit_code == 0, (line, r.output)
        assert "Traceback" not in r.output


def test_progress_bars_only_on_a_terminal_or_when_asked(tmp_path, cohort, monkeypatch):
    from mammoprep import options

    monkeypatch.setattr(options, "PROGRESS", None)  # restored after the test
    good = sorted(cohort.rglob("*.dcm"))[:2]
    args = ["inspect", *map(str, good), str(good[0].parent)]
    r = CliRunner().invoke(main, args)  # CliRunner's stderr is not a terminal
    assert r.exit_code == 0 and "it/s" not in r.output and "file/s" not in r.output
    r = CliRunner().invoke(main, ["--progress", *args])
    assert r.exit_code == 0 and "inspect:" in r.output


# ------------------------------------------------------------------ duplicate views

def test_duplicate_view_keeps_the_copy_that_decodes(tmp_path, cohort):
    """A truncated copy that sorts first (``0_copy.dcm``) used to be kept and the good file
    dropped as duplicate_view; now the good one is stored and both are reported."""
    from mammoprep.pipeline import PrepConfig
    from mammoprep.shards.schema import ShardConfig
    from mammoprep.shards.write import build_shards

    src = tmp_path / "in"
    originals = sorted(cohort.rglob("*.dcm"))
    for f in originals:
        dest = src / f.relative_to(cohort)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.read_bytes())
    victim = originals[0]
    data = victim.read_bytes()
    (src / "0_copy.dcm").write_bytes(data[: len(data) - 4000])  # cut inside the pixels
    out = tmp_path / "shards"
    summary = build_shards([str(src)], out, ShardConfig(prep=PrepConfig(size=64), folds=0),
                           b"duplicate-test-salt-0123", log=lambda m: None)
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    assert [(Path(r["path"]).name, r["reason"]) for r in rejects] == [("0_copy.dcm",
                                                                      "duplicate_view")]
    msg = rejects[0]["message"]
    assert str(src / victim.relative_to(cohort)) in msg and "truncated" in msg
    assert summary["images"] == len(originals)


def test_library_warnings_are_logged_once_and_quiet_hides_them(tmp_path):
    """pydicom warns (and logs) for every file whose Manufacturer is over 64 characters;
    the run shows that once, through logging, and -q shows nothing."""
    with pytest.warns(UserWarning, match="exceeds the maximum length"):  # pydicom, writing
        for i in range(3):
            _native(tmp_path / f"w{i}.dcm", _texture(), Manufacturer="X" * 80,
                    SOPInstanceUID=f"1.2.3.{i}")
    needle = "exceeds the maximum length of 64"
    r = _run_cli(["inspect", str(tmp_path)])
    assert r.returncode == 0, r.stderr
    assert r.stderr.count(needle) == 1 and "WARNING: pydicom:" in r.stderr
    assert "Traceback" not in r.stderr
    r = _run_cli(["-q", "inspect", str(tmp_path)])
    assert r.returncode == 0 and needle not in r.stderr and "3 ok" in r.stdout + r.stderr


def test_file_cut_before_its_pixels_is_not_called_a_header_only_object(tmp_path):
    from mammoprep.errors import NoPixelDataError

    full = _native(tmp_path / "full.dcm", _texture()).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(full[: full.index(struct.pack("<HH", 0x7FE0, 0x0010))])
    with pytest.raises(NoPixelDataError) as exc:
        read_dicom(cut)
    assert "96x80 image but the file holds no pixels" in str(exc.value)
    assert "header-only or non-image object" not in str(exc.value)
