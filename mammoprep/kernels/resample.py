"""Reduced-resolution JPEG 2000: resampling onto the original pixel grid (with its NumPy
twin)."""

from __future__ import annotations

import numba as nb
import numpy as np



# Reduced-resolution JPEG 2000: resampling onto the original pixel grid
# --------------------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def shift_bilinear(pixels, d):
    """``uint16 [rows, cols]``: ``pixels`` (uint16) sampled at ``(i + d, j + d)`` by bilinear
    interpolation, ``0 <= d < 1``; the last row/column is repeated past the edge; rounded
    half up. (:func:`mammoprep.decoders.recentre`.)"""
    rows, cols = pixels.shape
    out = np.empty((rows, cols), np.uint16)
    w00 = (1.0 - d) * (1.0 - d)
    w01 = (1.0 - d) * d
    w11 = d * d
    for i in range(rows):
        top = pixels[i]
        below = pixels[min(i + 1, rows - 1)]
        row = out[i]
        a = np.float64(top[0])  # p[i, j] and p[i + 1, j], carried along the row
        b = np.float64(below[0])
        for j in range(cols - 1):
            a1 = np.float64(top[j + 1])
            b1 = np.float64(below[j + 1])
            row[j] = np.uint16(np.floor(w00 * a + w01 * (b + a1) + w11 * b1 + 0.5))
            a = a1
            b = b1
        row[cols - 1] = np.uint16(np.floor(w00 * a + w01 * (b + a) + w11 * b + 0.5))
    return out


def shift_bilinear_np(pixels: np.ndarray, d: float) -> np.ndarray:
    p = pixels.astype(np.float64)
    down = np.concatenate([p[1:], p[-1:]], axis=0)
    right = np.concatenate([p[:, 1:], p[:, -1:]], axis=1)
    diag = np.concatenate([down[:, 1:], down[:, -1:]], axis=1)
    w00, w01, w11 = (1.0 - d) * (1.0 - d), (1.0 - d) * d, d * d
    v = w00 * p + w01 * (down + right) + w11 * diag
    return np.floor(v + 0.5).astype(np.uint16)
