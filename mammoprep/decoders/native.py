"""Uncompressed little-endian pixel data, as a view of the bytes pydicom read (no copy).

pydicom's own native path copies the frame into a new array (about 6 ms per 4096x3328
image here); this plug-in returns a read-only ``[rows, cols]`` view of ``ds.PixelData``
and :func:`mammoprep.io.dicom.read_dicom` makes the one copy it needs while it clears the
unused high bits (:func:`mammoprep.kernels.mask_range`). Big endian, 1-bit and 32-bit data
go to the pydicom plug-in.
"""

from __future__ import annotations

import numpy as np

from . import Unsupported

REQUIRES = "nothing beyond pydicom"
TRANSFER_SYNTAXES = frozenset({
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1",  # implicit / explicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian (inflated when read)
})
_DTYPES = {8: np.uint8, 16: np.dtype("<u2")}


def is_available() -> bool:
    return True


def decode(ds, transfer_syntax: str) -> np.ndarray:
    bits = int(ds.BitsAllocated)
    rows, cols = int(ds.Rows), int(ds.Columns)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    data = ds.PixelData
    if bits not in _DTYPES or spp != 1 or frames != 1 or not isinstance(data, bytes):
        raise Unsupported(f"{bits}-bit, {spp}-sample or multi-frame native data is left "
                           "to pydicom")
    n = rows * cols
    if len(data) < n * (bits // 8):
        raise ValueError(f"pixel data holds {len(data)} bytes, {rows}x{cols}x{bits // 8} "
                         "needed")
    return np.frombuffer(data, dtype=_DTYPES[bits], count=n).reshape(rows, cols)
