"""Numba kernels for foreground extraction and histogram matching, each with a NumPy twin.

Every kernel ``name`` is ``@numba.njit(cache=True, nogil=True)`` (it releases the GIL, so
reader and writer threads run while it works); ``name_np`` is a plain NumPy/SciPy
implementation of the same contract. ``tests/prep/test_harmonize.py`` and
``tests/prep/test_foreground.py`` assert that the two give identical output. The library calls
the Numba versions; the twins document the maths and serve as the test oracle.

The full-image kernels (``histogram_u16``, ``apply_lut``, ``block_mean``,
``mask_foreground``) are ``parallel=True`` over rows, but run single-threaded below
:data:`PARALLEL_MIN_PIXELS`; their per-row work lives in small serial helpers (``_*_rows``),
and they allocate through serial helpers, because inside a parallel function even
``np.zeros`` becomes a (thread-waking) parallel loop. Thread count: ``NUMBA_NUM_THREADS``;
in multi-process pipelines (one process per core) set it to 1 to avoid oversubscription.

Conventions: images are ``uint16 [rows, cols]``; masks are ``bool [rows, cols]``;
"downsampled" arrays have one element per ``f x f`` block of the full image (the last block
row/column may be partial).
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: Images with fewer pixels than this run single-threaded: waking the thread pool costs
#: more than it saves, and much more on a loaded machine.
PARALLEL_MIN_PIXELS = 1 << 18


def _ndimage():
    """scipy.ndimage, imported only by the NumPy twins (tests), never on the command path."""
    from scipy import ndimage

    return ndimage

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


# --------------------------------------------------------------------------------------
# Downsampling
# --------------------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def _block_mean_row(pixels, f, bi, out):
    rows, cols = pixels.shape
    C = out.shape[1]
    r0 = bi * f
    r1 = min(r0 + f, rows)
    colsum = np.zeros(cols, np.int64)
    for i in range(r0, r1):
        for j in range(cols):
            colsum[j] += pixels[i, j]
    for bj in range(C):
        j0 = bj * f
        j1 = min(j0 + f, cols)
        s = 0
        for j in range(j0, j1):
            s += colsum[j]
        out[bi, bj] = np.float32(np.float64(s) / np.float64((r1 - r0) * (j1 - j0)))


@nb.njit(cache=True, parallel=True, nogil=True)
def block_mean(pixels, f):
    """``float32 [ceil(rows/f), ceil(cols/f)]``: mean of each ``f x f`` block of ``pixels``
    (partial edge blocks averaged over the pixels they hold)."""
    rows, cols = pixels.shape
    R = (rows + f - 1) // f
    C = (cols + f - 1) // f
    out = np.empty((R, C), np.float32)
    if rows * cols < PARALLEL_MIN_PIXELS:
        for bi in range(R):
            _block_mean_row(pixels, f, bi, out)
    else:
        for bi in nb.prange(R):
            _block_mean_row(pixels, f, bi, out)
    return out


def block_mean_np(pixels: np.ndarray, f: int) -> np.ndarray:
    """NumPy twin of :func:`block_mean`."""
    rows, cols = pixels.shape
    R, C = -(-rows // f), -(-cols // f)
    padded = np.zeros((R * f, C * f), np.int64)
    padded[:rows, :cols] = pixels
    sums = padded.reshape(R, f, C, f).sum(axis=(1, 3))
    rcount = np.minimum(np.arange(1, R + 1) * f, rows) - np.arange(R) * f
    ccount = np.minimum(np.arange(1, C + 1) * f, cols) - np.arange(C) * f
    counts = rcount[:, None].astype(np.int64) * ccount[None, :]
    return (sums / counts).astype(np.float32)


# --------------------------------------------------------------------------------------
# Binary morphology on (small, downsampled) masks
# --------------------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def dilate_square(mask, r):
    """``bool [R, C]``: binary dilation of ``mask`` by a ``(2r+1) x (2r+1)`` square; outside
    the array counts as False. Separable running counts, O(R*C) whatever ``r``."""
    R, C = mask.shape
    m = mask.view(np.uint8)
    tmp = np.zeros((R, C), np.uint8)
    for i in range(R):
        cnt = 0
        for j in range(min(r, C)):
            cnt += m[i, j]
        for j in range(C):
            if j + r < C:
                cnt += m[i, j + r]
            if j - r - 1 >= 0:
                cnt -= m[i, j - r - 1]
            tmp[i, j] = cnt > 0
    out = np.zeros((R, C), np.bool_)
    cnt_col = np.zeros(C, np.int32)
    for i in range(min(r, R)):
        for j in range(C):
            cnt_col[j] += tmp[i, j]
    for i in range(R):
        if i + r < R:
            for j in range(C):
                cnt_col[j] += tmp[i + r, j]
        if i - r - 1 >= 0:
            for j in range(C):
                cnt_col[j] -= tmp[i - r - 1, j]
        for j in range(C):
            out[i, j] = cnt_col[j] > 0
    return out


def dilate_square_np(mask: np.ndarray, r: int) -> np.ndarray:
    """NumPy twin of :func:`dilate_square`."""
    ndi = _ndimage()
    return ndi.binary_dilation(mask, structure=np.ones((2 * r + 1, 2 * r + 1), bool))


@nb.njit(cache=True, nogil=True)
def erode_square(mask, r, border):
    """``bool [R, C]``: binary erosion by a ``(2r+1) x (2r+1)`` square; outside the array
    counts as ``border``. With ``border=True`` a region touching the array edge is not eaten
    from the edge; with ``border=False`` strips along the edge narrower than ``2r+1`` vanish
    (what an opening needs to cut film borders off the breast)."""
    R, C = mask.shape
    inv = np.empty((R + 2 * r, C + 2 * r), np.bool_)
    inv[:, :] = not border
    for i in range(R):
        for j in range(C):
            inv[i + r, j + r] = not mask[i, j]
    grown = dilate_square(inv, r)
    out = np.empty((R, C), np.bool_)
    for i in range(R):
        for j in range(C):
            out[i, j] = not grown[i + r, j + r]
    return out


def erode_square_np(mask: np.ndarray, r: int, border: bool) -> np.ndarray:
    """NumPy twin of :func:`erode_square`."""
    ndi = _ndimage()
    return ndi.binary_erosion(mask, structure=np.ones((2 * r + 1, 2 * r + 1), bool),
                              border_value=int(border))


@nb.njit(cache=True, nogil=True)
def largest_component(mask):
    """``(bool [R, C], size)``: the largest 8-connected component of ``mask`` (ties: the one
    whose first pixel in raster order comes first); all False and 0 if ``mask`` is empty."""
    R, C = mask.shape
    labels = np.zeros((R, C), np.int32)
    stack = np.empty(R * C, np.int64)
    cur = 0
    best = 0
    best_size = 0
    for i0 in range(R):
        for j0 in range(C):
            if not mask[i0, j0] or labels[i0, j0] != 0:
                continue
            cur += 1
            labels[i0, j0] = cur
            stack[0] = i0 * C + j0
            top = 1
            size = 0
            while top > 0:
                top -= 1
                k = stack[top]
                y = k // C
                x = k - y * C
                size += 1
                for dy in range(-1, 2):
                    yy = y + dy
                    if yy < 0 or yy >= R:
                        continue
                    for dx in range(-1, 2):
                        xx = x + dx
                        if xx < 0 or xx >= C:
                            continue
                        if mask[yy, xx] and labels[yy, xx] == 0:
                            labels[yy, xx] = cur
                            stack[top] = yy * C + xx
                            top += 1
            if size > best_size:
                best_size = size
                best = cur
    out = np.zeros((R, C), np.bool_)
    if best > 0:
        for i in range(R):
            for j in range(C):
                out[i, j] = labels[i, j] == best
    return out, best_size


def largest_component_np(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """NumPy twin of :func:`largest_component`."""
    ndi = _ndimage()
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(mask.shape, bool), 0
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=n + 1)
    sizes[0] = 0
    ids, first = np.unique(flat, return_index=True)
    first_of = np.full(n + 1, flat.size, np.int64)
    first_of[ids] = first
    cand = np.flatnonzero(sizes == sizes.max())
    best = cand[np.argmin(first_of[cand])]
    return labels == best, int(sizes[best])


@nb.njit(cache=True, nogil=True)
def _flood(seed, mask, eight):
    """``bool [R, C]``: the pixels of ``mask`` connected within ``mask`` (8-connected with
    ``eight``, else 4-connected) to a pixel of ``seed & mask``."""
    R, C = mask.shape
    out = np.zeros((R, C), np.bool_)
    stack = np.empty(R * C, np.int64)
    top = 0
    for i in range(R):
        for j in range(C):
            if seed[i, j] and mask[i, j]:
                out[i, j] = True
                stack[top] = i * C + j
                top += 1
    while top > 0:
        top -= 1
        k = stack[top]
        y = k // C
        x = k - y * C
        for dy in range(-1, 2):
            yy = y + dy
            if yy < 0 or yy >= R:
                continue
            for dx in range(-1, 2):
                if not eight and dx != 0 and dy != 0:
                    continue
                xx = x + dx
                if 0 <= xx < C and mask[yy, xx] and not out[yy, xx]:
                    out[yy, xx] = True
                    stack[top] = yy * C + xx
                    top += 1
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``bool [R, C]``: ``mask`` with every hole filled, a hole being a 4-connected region of
    False that does not reach the array border."""
    border = np.zeros(mask.shape, np.bool_)
    border[0, :] = border[-1, :] = True
    border[:, 0] = border[:, -1] = True
    return ~_flood(border, ~mask, False)


def fill_holes_np(mask: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`fill_holes`."""
    ndi = _ndimage()
    return ndi.binary_fill_holes(mask)


def propagate(seed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``bool [R, C]``: the pixels of ``mask`` 8-connected (within ``mask``) to a pixel of
    ``seed & mask`` (morphological reconstruction by dilation)."""
    return _flood(seed, mask, True)


def propagate_np(seed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`propagate`."""
    ndi = _ndimage()
    return ndi.binary_propagation(seed & mask, structure=np.ones((3, 3), bool), mask=mask)


# --------------------------------------------------------------------------------------
# Final full-resolution masking pass
# --------------------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def _mask_block_row(pixels, codes, f, thr, bi, out, stats):
    rows, cols = pixels.shape
    C = codes.shape[1]
    trow = np.empty(cols, np.int32)
    jlo = cols
    jhi = 0
    for bj in range(C):
        code = codes[bi, bj]
        t = 65535 if code == 0 else (thr if code == 1 else -1)
        j0 = bj * f
        j1 = min(j0 + f, cols)
        for j in range(j0, j1):
            trow[j] = t
        if code != 0:
            jlo = min(jlo, j0)
            jhi = max(jhi, j1)
    for i in range(bi * f, min(bi * f + f, rows)):
        nz = 0
        kept = 0
        for j in range(cols):
            v = pixels[i, j]
            o = v if np.int32(v) > trow[j] else np.uint16(0)
            out[i, j] = o
            nz += np.int64(v != 0)
            kept += np.int64(o != 0)
        first = cols
        for j in range(jlo, jhi):
            if out[i, j] != 0:
                first = j
                break
        last = -1
        for j in range(jhi - 1, jlo - 1, -1):
            if out[i, j] != 0:
                last = j
                break
        stats[i, 0] = nz
        stats[i, 1] = kept
        stats[i, 2] = first
        stats[i, 3] = last


@nb.njit(cache=True, parallel=True, nogil=True)
def mask_foreground(pixels, codes, f, thr):
    """One pass over the full image. ``codes`` is ``uint8 [ceil(rows/f), ceil(cols/f)]``:
    0 = drop the block, 1 = keep pixels ``> thr``, 2 = keep every pixel (``thr >= 0``).

    Returns ``(out uint16 [rows, cols], stats int64 [rows, 4])`` with, per row, the count of
    non-zero input pixels, the count of non-zero kept pixels, and the first and last column
    of a non-zero kept pixel (``cols`` and ``-1`` when there is none).

    Each block row turns its codes into one per-column threshold (code 0: 65535, keeps
    nothing; 1: ``thr``; 2: -1, keeps all), so the pixel loop is a branch-free
    ``out = v if v > t[j] else 0``.
    """
    rows, cols = pixels.shape
    R = codes.shape[0]
    out = np.empty((rows, cols), np.uint16)
    stats = np.empty((rows, 4), np.int64)
    if rows * cols < PARALLEL_MIN_PIXELS:
        for bi in range(R):
            _mask_block_row(pixels, codes, f, thr, bi, out, stats)
    else:
        for bi in nb.prange(R):
            _mask_block_row(pixels, codes, f, thr, bi, out, stats)
    return out, stats


def upsample_codes_np(codes: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """``codes`` repeated to full resolution ``shape`` (each element covers an f x f block)."""
    return np.repeat(np.repeat(codes, f, axis=0), f, axis=1)[:shape[0], :shape[1]]


def mask_foreground_np(pixels: np.ndarray, codes: np.ndarray, f: int,
                       thr: int) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`mask_foreground`."""
    rows, cols = pixels.shape
    up = upsample_codes_np(codes, f, pixels.shape)
    keep = (up == 2) | ((up == 1) & (pixels > thr))
    out = np.where(keep, pixels, 0).astype(np.uint16)
    nzk = out != 0
    stats = np.empty((rows, 4), np.int64)
    stats[:, 0] = np.count_nonzero(pixels, axis=1)
    stats[:, 1] = np.count_nonzero(nzk, axis=1)
    anyk = nzk.any(axis=1)
    stats[:, 2] = np.where(anyk, np.argmax(nzk, axis=1), cols)
    stats[:, 3] = np.where(anyk, cols - 1 - np.argmax(nzk[:, ::-1], axis=1), -1)
    return out, stats


# --------------------------------------------------------------------------------------
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
