"""Kernels over pixel values: histograms, CDF matching (Eq. 7), the stored-value range
mask and lookup-table application (each with its NumPy twin)."""

from __future__ import annotations

import numba as nb
import numpy as np

from ._base import PARALLEL_MIN_PIXELS

# --------------------------------------------------------------------------------------
# Histogram
# --------------------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def _histogram_rows(pixels, r0, r1, nbins, skip_zero, h):
    """Add rows ``r0..r1-1`` of ``pixels`` into ``h`` (int32 [nbins + 1])."""
    cols = pixels.shape[1]
    if skip_zero:
        for i in range(r0, r1):
            for j in range(cols):
                v = np.intp(pixels[i, j])
                if v == 0:
                    continue
                if v < nbins:
                    h[v] += 1
                else:
                    h[nbins] += 1
    else:
        for i in range(r0, r1):
            for j in range(cols):
                v = np.intp(pixels[i, j])
                if v < nbins:
                    h[v] += 1
                else:
                    h[nbins] += 1


@nb.njit(cache=True, parallel=True, nogil=True)
def histogram_u16(pixels, nbins, skip_zero, nchunks):
    """``int64 [nbins + 1]``: count of each level ``0..nbins-1`` of ``pixels`` (uint16, 2D,
    any layout); the extra last element counts pixels with a value ``>= nbins``. With
    ``skip_zero`` the zeros are not counted (``out[0] = 0``; faster on images with a large
    exact-zero background).

    Rows are split into ``nchunks`` chunks (one per thread; 1 below
    :data:`PARALLEL_MIN_PIXELS`), each counting into a private int32 histogram; the chunks
    are summed in int64. ``nchunks`` changes the speed, never the result (each chunk holds
    far fewer than 2^31 pixels).
    """
    rows, cols = pixels.shape
    if rows * cols < PARALLEL_MIN_PIXELS:
        nchunks = 1
    nchunks = max(1, min(nchunks, rows))
    local = _zeros_i32(nchunks, nbins + 1)
    if nchunks == 1:
        _histogram_rows(pixels, 0, rows, nbins, skip_zero, local[0])
    else:
        for c in nb.prange(nchunks):
            _histogram_rows(pixels, c * rows // nchunks, (c + 1) * rows // nchunks, nbins,
                            skip_zero, local[c])
    return _sum_chunks(local, skip_zero)


@nb.njit(cache=True, nogil=True)
def _zeros_i32(n, m):
    # allocated outside the parallel function: there np.zeros would become a parallel loop
    return np.zeros((n, m), np.int32)


@nb.njit(cache=True, nogil=True)
def _sum_chunks(local, skip_zero):
    n, m = local.shape
    out = np.zeros(m, np.int64)
    for c in range(n):
        for k in range(m):
            out[k] += local[c, k]
    if skip_zero:
        out[0] = 0
    return out


def histogram_u16_np(pixels: np.ndarray, nbins: int, skip_zero: bool,
                     nchunks: int = 1) -> np.ndarray:
    """NumPy twin of :func:`histogram_u16` (``nchunks`` is ignored)."""
    counts = np.bincount(np.asarray(pixels).ravel(), minlength=nbins).astype(np.int64)
    out = np.zeros(nbins + 1, np.int64)
    out[:nbins] = counts[:nbins]
    out[nbins] = counts[nbins:].sum()
    if skip_zero:
        out[0] = 0
    return out


# --------------------------------------------------------------------------------------
# CDF matching (Eq. 7): T(p) = argmin_q |C_s(p) - C_r(q)|, q in 1..m-1, ties -> smallest q
# --------------------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def match_sweep(src_cdf, ref_cdf):
    """``uint16 [len(src_cdf)]`` lookup table with ``lut[0] = 0`` and, for ``p >= 1``,
    ``lut[p] = argmin_{q in 1..m-1} |src_cdf[p] - ref_cdf[q]|`` (smallest q on ties),
    ``m = len(ref_cdf) >= 2``. Both CDFs are float64 and non-decreasing.

    One monotone sweep, O(n + m): ``h`` is the first q >= 1 with ``ref_cdf[q] > c``; the
    minimum is either there or at the first q of the plateau just below it
    (``start[h - 1]``), because ``|c - ref_cdf[q]|`` decreases up to ``h - 1`` and
    increases from ``h`` on.
    """
    n = src_cdf.shape[0]
    m = ref_cdf.shape[0]
    lut = np.zeros(n, np.uint16)
    start = np.empty(m, np.int64)  # start[q]: smallest q' >= 1 with ref_cdf[q'] == ref_cdf[q]
    start[0] = 0
    start[1] = 1
    for q in range(2, m):
        start[q] = start[q - 1] if ref_cdf[q] == ref_cdf[q - 1] else q
    h = 1
    for p in range(1, n):
        c = src_cdf[p]
        while h < m and ref_cdf[h] <= c:
            h += 1
        if h == 1:
            best = 1
        elif h == m:
            best = start[m - 1]
        else:
            lo = start[h - 1]
            best = h if (ref_cdf[h] - c) < (c - ref_cdf[lo]) else lo
        lut[p] = best
    return lut


def match_sweep_np(src_cdf: np.ndarray, ref_cdf: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`match_sweep` (binary search instead of the sweep)."""
    n, m = len(src_cdf), len(ref_cdf)
    q = np.arange(m)
    change = np.ones(m, bool)
    change[2:] = ref_cdf[2:] != ref_cdf[1:-1]
    change[0] = False
    start = np.maximum.accumulate(np.where(change, q, 0))
    c = src_cdf[1:]
    h = np.searchsorted(ref_cdf[1:], c, side="right") + 1  # first q >= 1 with ref > c
    lo = start[np.clip(h - 1, 1, m - 1)]
    hc = np.minimum(h, m - 1)
    pick_hi = (ref_cdf[hc] - c) < (c - ref_cdf[lo])
    best = np.where(h == 1, 1, np.where(h == m, start[m - 1], np.where(pick_hi, h, lo)))
    lut = np.zeros(n, np.uint16)
    lut[1:] = best
    return lut


# --------------------------------------------------------------------------------------
# Stored values: unused high bits and range, in one pass
# --------------------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def _mask_range_rows(src, keep, out, r0, r1, lohi):
    lo = np.uint16(65535)
    hi = np.uint16(0)
    cols = src.shape[1]
    for i in range(r0, r1):
        s = src[i]
        o = out[i]
        for j in range(cols):  # two simple loops per row vectorise; one fused loop does not
            o[j] = s[j] & keep
        rlo = o[0]
        rhi = o[0]
        for j in range(cols):
            v = o[j]
            rlo = v if v < rlo else rlo
            rhi = v if v > rhi else rhi
        lo = rlo if rlo < lo else lo
        hi = rhi if rhi > hi else hi
    lohi[0] = lo
    lohi[1] = hi


@nb.njit(cache=True, parallel=True, nogil=True)
def _mask_range_into(src, keep, out, nchunks):
    rows = src.shape[0]
    if rows * src.shape[1] < PARALLEL_MIN_PIXELS:
        nchunks = 1
    nchunks = max(1, min(nchunks, rows))
    lohi = _zeros_i32(nchunks, 2)
    if nchunks == 1:
        _mask_range_rows(src, keep, out, 0, rows, lohi[0])
    else:
        for c in nb.prange(nchunks):
            _mask_range_rows(src, keep, out, c * rows // nchunks, (c + 1) * rows // nchunks,
                             lohi[c])
    return lohi[:, 0].min(), lohi[:, 1].max()


def mask_range(src: np.ndarray, bits: int, out: np.ndarray | None = None,
               nchunks: int | None = None) -> tuple[np.ndarray, int, int]:
    """Clear the unused high bits of stored values and find their range, in one pass.

    ``src``: ``uint16 [rows, cols]`` (read-only is fine: a view of the file's bytes);
    ``bits``: Bits Stored (1-16); ``out``: where to write (``src`` itself when writeable,
    a new array when None). Returns ``(out, min, max)`` of ``src & (2**bits - 1)``.
    ``nchunks`` (row chunks; default one per Numba thread) changes the speed, never the
    result.
    """
    if nchunks is None:
        nchunks = nb.get_num_threads()
    if out is None:
        out = np.empty(src.shape, np.uint16)
    if src.size == 0:
        return out, 0, 0
    lo, hi = _mask_range_into(src, np.uint16((1 << bits) - 1), out, nchunks)
    return out, int(lo), int(hi)


def mask_range_np(src: np.ndarray, bits: int) -> tuple[np.ndarray, int, int]:
    """NumPy twin of :func:`mask_range` (always a new array)."""
    out = np.bitwise_and(src, np.uint16((1 << bits) - 1))
    return (out, int(out.min()), int(out.max())) if out.size else (out, 0, 0)


# --------------------------------------------------------------------------------------
# Lookup-table application
# --------------------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def _apply_lut_rows(pixels, lut, out, r0, r1):
    for i in range(r0, r1):
        for j in range(pixels.shape[1]):
            out[i, j] = lut[pixels[i, j]]


def apply_lut(pixels, lut, out=None):
    """``uint16 [rows, cols]``: ``lut[pixels]``, written into ``out`` when given (uint16, same
    shape, may be a view into a larger image). ``lut`` must have 65536 entries (one per
    uint16 value; no bounds check here: :func:`mammoprep.harmonise.match.apply_lut` pads and
    validates)."""
    if out is None:
        out = np.empty(pixels.shape, np.uint16)
    elif out.shape != pixels.shape or out.dtype != np.uint16:
        raise ValueError(f"out must be uint16 {pixels.shape}, got {out.dtype} {out.shape}")
    return _apply_lut_into(pixels, lut, out)


@nb.njit(cache=True, parallel=True, nogil=True)
def _apply_lut_into(pixels, lut, out):
    rows, cols = pixels.shape
    if rows * cols < PARALLEL_MIN_PIXELS:
        _apply_lut_rows(pixels, lut, out, 0, rows)
    else:
        for i in nb.prange(rows):
            _apply_lut_rows(pixels, lut, out, i, i + 1)
    return out


def apply_lut_np(pixels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`apply_lut`."""
    return lut[pixels].astype(np.uint16)
