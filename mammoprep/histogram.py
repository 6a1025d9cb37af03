"""Foreground histograms: the count of every non-zero level of a 16-bit image, shared by
harmonisation (:mod:`mammoprep.harmonise`) and derived DICOMs (:mod:`mammoprep.io.derived`).
The Numba kernel is imported on first use."""

from __future__ import annotations

import numpy as np

from .errors import MammoprepError


class PixelRangeError(MammoprepError):
    """Pixel values above the stated bit depth (never silently truncated)."""

    kind = "pixel_range"


def check_bits(bits: int, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) \
            or not 1 <= int(bits) <= 16:
        raise ValueError(f"{what} must be an integer in 1..16, got {bits!r}")
    return int(bits)


def as_u16(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be 2-D [rows, cols], got shape {pixels.shape}")
    if pixels.dtype == np.uint16:
        return pixels
    if not np.issubdtype(pixels.dtype, np.integer):
        raise ValueError(f"pixels must be an integer array, got {pixels.dtype}")
    if pixels.size and (int(pixels.min()) < 0 or int(pixels.max()) > 65535):
        raise PixelRangeError(None, f"pixel values {int(pixels.min())}..{int(pixels.max())}"
                              " do not fit uint16")
    return pixels.astype(np.uint16)


def foreground_histogram(pixels: np.ndarray, bits: int = 16) -> np.ndarray:
    """``int64 [2^bits]``: count of every foreground level of ``pixels`` (uint16 [rows,
    cols]); bin 0 (background) is 0.

    Raises:
        PixelRangeError: a pixel value above ``2^bits - 1`` (with the count of such pixels).
    """
    bits = check_bits(bits)
    pixels = as_u16(pixels)
    nbins = 1 << bits
    import numba

    from . import kernels

    hist = kernels.histogram_u16(pixels, nbins, True, numba.get_num_threads())
    if hist[nbins]:
        raise PixelRangeError(None, f"{int(hist[nbins])} pixels have values above "
                              f"{nbins - 1} = 2^{bits} - 1",
                              hint="state the true bit depth (or leave bits=None)")
    return hist[:nbins]
