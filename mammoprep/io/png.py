"""16-bit grayscale PNG, written directly (deterministic, ~2x faster than Pillow's encoder).

Rows use the PNG 'Sub' filter on big-endian 16-bit samples, then zlib-format deflate
(libdeflate through imagecodecs where installed, about 2x faster than zlib at the same
size; else the standard library). Any PNG reader (Pillow, OpenCV, imageio, browsers) reads
the result; tests round-trip through Pillow. Bytes are deterministic for one environment.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _deflate(data, level: int) -> bytes:
    """zlib-format deflate of a bytes-like object (a contiguous array is compressed in
    place, without a copy): libdeflate if available, else zlib."""
    try:
        import imagecodecs

        if imagecodecs.DEFLATE.available:
            return imagecodecs.deflate_encode(data, level=level)
    except (ImportError, AttributeError):
        pass
    return zlib.compress(data, level)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode_png16(px: np.ndarray, level: int = 1) -> bytes:
    """PNG bytes of ``uint16 [rows, cols]`` (bit depth 16, colour type 0 = grayscale)."""
    if px.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {px.shape}")
    h, w = px.shape
    raw = np.ascontiguousarray(px, dtype=">u2").view(np.uint8).reshape(h, 2 * w)
    data = np.empty((h, 2 * w + 1), np.uint8)
    data[:, 0] = 1  # filter type 1 = Sub: byte minus the byte one sample (2 bytes) earlier
    data[:, 1:3] = raw[:, :2]
    np.subtract(raw[:, 2:], raw[:, :-2], out=data[:, 3:])
    header = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    return (_SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", _deflate(data, level)) + _chunk(b"IEND", b""))


def decode_png16(data: bytes) -> np.ndarray:
    """``uint16 [rows, cols]`` from PNG bytes (8- or 16-bit grayscale)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in ("I;16", "I;16B", "I", "L"):
            raise ValueError(f"expected a grayscale PNG, got mode {im.mode}")
        return np.asarray(im).astype(np.uint16)


def write_png16(path, px: np.ndarray, level: int = 1) -> None:
    """Write ``uint16 [rows, cols]`` as a 16-bit grayscale PNG file, atomically (a kill -9
    or a full disk never leaves a partial PNG under ``path``; WriteError names it)."""
    from ..atomic import atomic_write

    atomic_write(path, encode_png16(px, level))
