"""Hostile DICOM files for the memory bounds (issue 25): built with pydicom (headers) and
``struct`` (the hostile parts, which pydicom would refuse to write), streamed or sparse so
that building one never holds what it declares.

Used by ``benchmarks/memory.py`` and ``tests/prep/test_memory_bounds.py``:

* :func:`deflate_bomb`: a deflated data set declaring ``rows x cols`` whose pixel data
  inflate to ``inflated_mib`` MiB of zeros (1 MB on disk for 1 GiB);
* :func:`many_items`: ``n`` empty items in a private sequence before a valid image;
* :func:`sparse_value`: a private (or public) OB element of ``nbytes`` (a sparse hole on
  disk) before a valid image;
* :func:`native_image`: an uncompressed image, its pixel data optionally sparse (a file
  declaring more frames or pixels than it is worth reading).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

MG = "1.2.840.10008.5.1.4.1.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"


def header(rows: int, cols: int, frames: int | None = None, ts: str = EXPLICIT_LE):
    """A mammogram's header (pydicom Dataset, with File Meta), no pixel data."""
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MG
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.25.1"
    ds.file_meta.TransferSyntaxUID = ts
    ds.SOPClassUID, ds.SOPInstanceUID = MG, "1.2.826.0.1.3680043.10.25.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.25.2"
    ds.Modality, ds.Manufacturer, ds.ImageLaterality, ds.ViewPosition = "MG", "T", "L", "CC"
    ds.PatientID = "HOSTILE-25"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = rows, cols
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    return ds


def file_meta(ts: str) -> bytes:
    """Preamble, 'DICM' and File Meta of ``ts`` (explicit VR little endian)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, header(1, 1, ts=ts).file_meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + fp.getvalue()


def body(ds) -> bytes:
    """The data set ``ds`` (no File Meta), explicit VR little endian."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def pixel_header(nbytes: int) -> bytes:
    """The (7FE0,0010) OW element header of ``nbytes`` of native pixel data."""
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, nbytes)


def ob_header(group: int, element: int, nbytes: int) -> bytes:
    return struct.pack("<HH2sHI", group, element, b"OB", 0, nbytes)


def breast_image(rows: int = 128, cols: int = 96) -> np.ndarray:
    """A 12-bit ``uint16 [rows, cols]`` image with contrast: a bright half-disc on black."""
    y, x = np.mgrid[:rows, :cols]
    disc = (x / cols) ** 2 + ((y - rows / 2) / (rows / 2)) ** 2 < 0.8
    return np.where(disc, 1500 + (x * 7 + y * 3) % 2000, 40).astype(np.uint16)


def deflate_bomb(path: Path, rows: int, cols: int, inflated_mib: int,
                 preamble: bool = True) -> Path:
    """A deflated data set declaring ``rows x cols`` 16-bit pixels whose pixel data inflate
    to ``inflated_mib`` MiB of zeros (compressed in 1 MiB steps, never held);
    ``preamble=False`` leaves out the 128-byte preamble and 'DICM'."""
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [z.compress(body(header(rows, cols, ts=DEFLATED)) + pixel_header(rows * cols * 2))]
    zeros = bytes(1 << 20)
    parts += [z.compress(zeros) for _ in range(inflated_mib)]
    parts.append(z.flush())
    meta = file_meta(DEFLATED)
    path.write_bytes((meta if preamble else meta[132:]) + b"".join(parts))
    return path


def many_items(path: Path, n: int, pixels: np.ndarray | None = None) -> Path:
    """``n`` empty items (8 bytes each) in the undefined-length private sequence
    (0029,1010), then a valid image (``pixels``, default :func:`breast_image`)."""
    px = breast_image() if pixels is None else pixels
    ds = header(*px.shape)
    ds.add_new(0x00290010, "LO", "HOSTILE")
    sq = struct.pack("<HH2sHI", 0x0029, 0x1010, b"SQ", 0, 0xFFFFFFFF)
    items = struct.pack("<HHI", 0xFFFE, 0xE000, 0) * n
    end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    head = body(ds)
    with open(path, "wb") as fh:
        fh.write(file_meta(EXPLICIT_LE) + head + sq)
        fh.write(items)
        fh.write(end + pixel_header(px.nbytes) + px.astype("<u2").tobytes())
    return path


def sparse_value(path: Path, nbytes: int, pixels: np.ndarray | None = None,
                 tag: tuple[int, int] = (0x0029, 0x1010)) -> Path:
    """An OB element ``tag`` (default private (0029,1010)) of ``nbytes`` zeros left as a
    sparse hole, then a valid image (``pixels``, default :func:`breast_image`)."""
    px = breast_image() if pixels is None else pixels
    ds = header(*px.shape)
    if tag[0] % 2:
        ds.add_new((tag[0] << 16) | 0x0010, "LO", "HOSTILE")
    with open(path, "wb") as fh:
        fh.write(file_meta(EXPLICIT_LE) + body(ds) + ob_header(*tag, nbytes))
        fh.seek(nbytes, 1)
        fh.write(pixel_header(px.nbytes) + px.astype("<u2").tobytes())
    return path


def native_image(path: Path, rows: int, cols: int, frames: int | None = None,
                 pixels: np.ndarray | None = None) -> Path:
    """Explicit VR little endian file declaring ``rows x cols`` (x ``frames``): ``pixels``
    written if given, else the pixel data left as a sparse hole of the declared length."""
    nbytes = rows * cols * (frames or 1) * 2
    with open(path, "wb") as fh:
        fh.write(file_meta(EXPLICIT_LE) + body(header(rows, cols, frames)) + pixel_header(nbytes))
        if pixels is not None:
            fh.write(pixels.astype("<u2").tobytes())
        else:
            fh.seek(nbytes - 1, 1)
            fh.write(b"\0")
    return path
