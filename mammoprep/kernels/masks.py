"""Kernels over masks: block means (downsampling), binary morphology on the downsampled
mask, connected components, flood fill, and the final full-resolution masking pass (each
with its NumPy twin)."""

from __future__ import annotations

import numba as nb
import numpy as np

from ._base import PARALLEL_MIN_PIXELS, _ndimage

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
