"""Separable resampling of ``uint16`` images: area averaging to shrink, bilinear to enlarge.

Weights per output index are precomputed as (first source index, taps); the Numba kernel
and its NumPy twin apply them along columns then rows. The result is rounded, never
truncated; an exact-zero background stays 0 away from tissue.
"""

from __future__ import annotations

import numba
import numpy as np


def axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output index: the first source index (int64 [n_out]) and the tap weights
    (float32 [n_out, taps], summing to 1). Area overlap when shrinking, bilinear otherwise."""
    s = n_in / n_out
    if s >= 1.0:
        taps = int(np.ceil(s)) + 1
        first = np.floor(np.arange(n_out) * s).astype(np.int64)
        w = np.zeros((n_out, taps), np.float64)
        for k in range(taps):
            j = first + k
            lo = np.maximum(j, np.arange(n_out) * s)
            hi = np.minimum(j + 1, (np.arange(n_out) + 1) * s)
            w[:, k] = np.clip(hi - lo, 0, None) * (j < n_in)
    else:
        pos = np.clip((np.arange(n_out) + 0.5) * s - 0.5, 0, n_in - 1)
        first = np.minimum(np.floor(pos).astype(np.int64), max(n_in - 2, 0))
        frac = pos - first
        w = np.stack([1 - frac, frac], 1) if n_in > 1 else np.ones((n_out, 1))
    w /= w.sum(1, keepdims=True)
    # keep taps inside the source
    first = np.minimum(first, n_in - 1)
    return first, w.astype(np.float32)


@numba.njit(parallel=True, cache=True, nogil=True)
def _cols_pass(src, first, w):
    """float32 [rows, n_out]: resample each row of ``src`` along columns."""
    n_out, taps = w.shape
    rows, wid = src.shape
    out = np.empty((rows, n_out), np.float32)
    for r in numba.prange(rows):
        for i in range(n_out):
            acc = np.float32(0.0)
            for k in range(taps):
                j = first[i] + k
                if j < wid:
                    acc += w[i, k] * src[r, j]
            out[r, i] = acc
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _rows_pass_round(src, first, w):
    """uint16 [n_out, cols]: resample along rows, round half up, clip to 0..65535."""
    n_out, taps = w.shape
    h, cols = src.shape
    out = np.empty((n_out, cols), np.uint16)
    for i in numba.prange(n_out):
        acc = np.zeros(cols, np.float32)
        for k in range(taps):
            j = first[i] + k
            wk = w[i, k]
            if wk != 0.0 and j < h:
                for c in range(cols):
                    acc[c] += wk * src[j, c]
        for c in range(cols):
            v = np.floor(acc[c] + 0.5)
            out[i, c] = 0 if v < 0 else (65535 if v > 65535 else np.uint16(v))
    return out


def resize_uint16(px: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Resize ``uint16 [h, w]`` to ``uint16 [rows, cols]`` (Numba)."""
    if px.shape == (rows, cols):
        return px.copy()
    fy, wy = axis_weights(px.shape[0], rows)
    fx, wx = axis_weights(px.shape[1], cols)
    tmp = _cols_pass(np.ascontiguousarray(px), fx, wx)
    return _rows_pass_round(tmp, fy, wy)


def resize_uint16_np(px: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """NumPy twin of :func:`resize_uint16` (same weights, same rounding)."""
    if px.shape == (rows, cols):
        return px.copy()
    fy, wy = axis_weights(px.shape[0], rows)
    fx, wx = axis_weights(px.shape[1], cols)
    src = px.astype(np.float32)
    tmp = np.zeros((px.shape[0], cols), np.float32)
    for k in range(wx.shape[1]):
        j = fx + k
        ok = j < px.shape[1]
        tmp[:, ok] += wx[None, ok, k] * src[:, j[ok]]
    out = np.zeros((rows, cols), np.float32)
    for k in range(wy.shape[1]):
        j = fy + k
        ok = j < px.shape[0]
        out[ok] += wy[ok, k, None] * tmp[j[ok]]
    return np.clip(np.floor(out + 0.5), 0, 65535).astype(np.uint16)


def window_weights(lo: float, hi: float, n_out: int, n_src: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`axis_weights` for the source window ``[lo, hi)`` of an axis of ``n_src``
    pixels (pixel ``j`` covers ``[j, j + 1)``; ``lo`` / ``hi`` may be fractional, ``0 <= lo <
    hi <= n_src``): output ``i`` covers ``[lo + i s, lo + (i + 1) s)``, ``s = (hi - lo) /
    n_out``. First source index (int64 [n_out], into the whole axis) and taps (float32
    [n_out, taps], summing to 1). Integer ends give exactly :func:`axis_weights` of the
    window, shifted by ``lo``."""
    if not 0 <= lo < hi <= n_src:
        raise ValueError(f"window [{lo}, {hi}) is not inside an axis of {n_src} pixels")
    if float(lo).is_integer() and float(hi).is_integer():
        first, w = axis_weights(int(hi) - int(lo), n_out)
        return first + int(lo), w
    s = (hi - lo) / n_out
    i = np.arange(n_out)
    if s >= 1.0:
        a, b = lo + i * s, lo + (i + 1) * s
        first = np.floor(a).astype(np.int64)
        taps = int(np.ceil(s)) + 1
        w = np.zeros((n_out, taps), np.float64)
        for k in range(taps):
            j = first + k
            w[:, k] = np.clip(np.minimum(j + 1, b) - np.maximum(j, a), 0, None) * (j < n_src)
    else:
        pos = np.clip(lo + (i + 0.5) * s - 0.5, 0, n_src - 1)
        first = np.minimum(np.floor(pos).astype(np.int64), max(n_src - 2, 0))
        frac = pos - first
        w = np.stack([1 - frac, frac], 1) if n_src > 1 else np.ones((n_out, 1))
    w /= w.sum(1, keepdims=True)
    return np.minimum(first, n_src - 1), w.astype(np.float32)


def resize_window_uint16(px: np.ndarray, rows_window: tuple[float, float],
                         cols_window: tuple[float, float], rows: int, cols: int) -> np.ndarray:
    """The window ``[r0, r1) x [c0, c1)`` of ``uint16 [h, w]`` (source pixel units, ends may
    be fractional) resampled to ``uint16 [rows, cols]`` (Numba; :func:`window_weights`).
    With integer ends: exactly :func:`resize_uint16` of ``px[r0:r1, c0:c1]``."""
    fy, wy = window_weights(*rows_window, rows, px.shape[0])
    fx, wx = window_weights(*cols_window, cols, px.shape[1])
    y0, y1 = int(fy.min()), min(int(fy.max()) + wy.shape[1], px.shape[0])
    x0, x1 = int(fx.min()), min(int(fx.max()) + wx.shape[1], px.shape[1])
    src = np.ascontiguousarray(px[y0:y1, x0:x1])
    return _rows_pass_round(_cols_pass(src, fx - x0, wx), fy - y0, wy)
