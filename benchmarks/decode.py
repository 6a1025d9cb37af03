"""Decode speed per transfer syntax and decoder plug-in, beside reading the raw bytes.

    .venv/bin/python benchmarks/decode.py [--rows 4096 --cols 3328 --repeats 5]

Writes one 4096x3328 14-bit image in each transfer syntax (real encoders: pydicom's RLE,
pylibjpeg-openjpeg, pyjpegls; imagecodecs for JPEG lossless and HTJ2K), then times
``read_dicom`` (decode + LUTs + inversion) with every available plug-in, and the raw
``read_bytes`` of the same file as the I/O floor. Prints ms per image and ratios.

Then the reduced-resolution rows: the JPEG 2000 lossless image read with
``read_dicom(min_size=...)`` at every resolution level the codestream offers (level ``r``:
``1 / 2**r`` per axis, ``pillow-openjpeg``), in ms and as a ratio to the full decode by the
default plug-in measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _image import breast_image  # noqa: E402

from mammoprep import decoders  # noqa: E402
from mammoprep.io.dicom import read_dicom# noqa: E402


def _dataset(px: np.ndarray):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["bench"])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = px.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 14, 13, 0
    ds.PixelData = px.tobytes()
    return ds


def write_variants(px: np.ndarray, out: Path) -> dict[str, Path]:
    """One file per transfer syntax; returns {label: path}."""
    import imagecodecs
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    files = {}

    def save(label, ds):
        path = out / f"{label}.dcm"
        ds.save_as(path)
        files[label] = path

    save("explicit-le", _dataset(px))
    ds = _dataset(px)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    save("deflated", ds)
    for label, ts in (("rle", RLELossless), ("jpeg-ls", JPEGLSLossless),
                      ("jpeg2000-lossless", JPEG2000Lossless)):
        ds = _dataset(px)
        ds.compress(ts)
        save(label, ds)
    for label, ts, enc in (
            ("jpeg-lossless-sv1", "1.2.840.10008.1.2.4.70",
             lambda a: imagecodecs.ljpeg_encode(a, bitspersample=14)),
            ("htj2k-lossless", "1.2.840.10008.1.2.4.201",
             lambda a: imagecodecs.htj2k_encode(a, level=0))):
        ds = _dataset(px)
        ds.PixelData = encapsulate([enc(px)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = ts
        save(label, ds)
    return files


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=3328)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    px = breast_image(args.rows, args.cols)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_variants(px, Path(tmp))
        print(f"# decode, {args.rows}x{args.cols} 14-bit, median of {args.repeats}, ms/image")
        print(f"| transfer syntax | file MB | read bytes | decoder | decode+LUT | x read | "
              f"x pydicom |")
        print("|---|---|---|---|---|---|---|")
        for label, path in files.items():
            ts = read_dicom(path).meta["transfer_syntax"]
            io_ms = timed(lambda: path.read_bytes(), args.repeats)
            default_ms = None
            rows = []
            for name in sorted(decoders.candidates(ts), key=lambda n: n != "pydicom"):
                # pydicom first: the baseline
                rec = read_dicom(path, decoder=name)
                assert np.array_equal(rec.pixels, px), f"{label}/{name}: pixels differ"
                ms = timed(lambda: read_dicom(path, decoder=name), args.repeats)
                default_ms = ms if name == "pydicom" else default_ms
                rows.append((name, ms))
            for name, ms in rows:
                speed = f"{default_ms / ms:.1f}x faster" if default_ms and name != "pydicom" \
                    else "baseline"
                print(f"| {label} | {path.stat().st_size / 1e6:.1f} | {io_ms:.1f} | {name} | "
                      f"{ms:.1f} | {ms / io_ms:.0f} | {speed} |")
        reduced_rows(files["jpeg2000-lossless"], args.repeats)


def reduced_rows(path: Path, repeats: int) -> None:
    """ms per image per JPEG 2000 resolution level, beside the full default decode."""
    import pydicom

    from mammoprep.decoders import pillow_j2k

    ds = pydicom.dcmread(path, force=True)  # written without a preamble
    rows, cols = int(ds.Rows), int(ds.Columns)
    full_ms = timed(lambda: read_dicom(path, decoder="pydicom"), repeats)
    print(f"\n# reduced-resolution JPEG 2000 lossless, {rows}x{cols}, median of {repeats}, "
          "read_dicom(min_size=...) ms/image")
    print("| level | decoded size | decoder | ms | x full (pydicom) |")
    print("|---|---|---|---|---|")
    print(f"| full | {rows}x{cols} | pydicom | {full_ms:.1f} | 1.00x |")
    for r in pillow_j2k.reductions(ds, str(ds.file_meta.TransferSyntaxUID))[1:]:
        size = decoders.reduced_size(rows, cols, r)
        rec = read_dicom(path, min_size=size)
        assert rec.meta["decode_reduction"] == r and rec.pixels.shape == size
        ms = timed(lambda: read_dicom(path, min_size=size), repeats)
        print(f"| {r} | {size[0]}x{size[1]} | {rec.meta['decoder']} | {ms:.1f} | "
              f"{ms / full_ms:.2f}x ({full_ms / ms:.1f}x faster) |")


if __name__ == "__main__":
    main()
