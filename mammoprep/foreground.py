"""Breast foreground and burned-in text removal (LUMINA Section 4: M = {pixel > 0}).

The breast is the largest connected component of the thresholded image after light
morphological cleanup; everything else (burned-in labels, markers, paddle hardware, film
borders, background noise) becomes exactly 0, so that the harmoniser's foreground is the
breast alone.

Steps, for ``pixels: uint16 [rows, cols]`` in MONOCHROME2 polarity:

1. **Threshold** (:func:`estimate_threshold`), from a strided sample of the image. The
   background is either exact 0 (padding) or a grey peak: the mode of the non-zero levels
   below the Otsu threshold, with a noise sigma from the half-width at half-maximum of its
   left flank. The grey peak is used when there are no zeros, when it runs down into 0
   (clipped noise), or when more pixels along the image border lie in it than are 0.
   ``threshold = bg + max(4 sigma, 0.2 (fg - bg))`` with ``fg`` the median level above the
   background peak (0 for a zero background); a pixel is foreground when
   ``pixel > threshold``.
2. **Downsample** by ``f`` (1 for small images, up to 8 for full-field ones) with block
   means, and threshold the blocks.
3. **Clean up**: open with a ``(2r+1)^2`` square (breaks thin bridges such as film borders
   or a label touching the skin), keep the largest component, give back what the opening
   shaved off within ``r`` blocks of it, keep the largest component again, fill holes.
4. **Full resolution**: blocks well inside the breast keep every pixel (dark fat is never
   removed); blocks on the breast's edge keep pixels ``> threshold``; all others become 0.

Pixel coordinates in ``breast_bbox`` are stored-pixel coordinates
``[ymin, xmin, ymax, xmax]`` with ``ymax``/``xmax`` exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from . import kernels
from .errors import MammoprepError
from .record import Record

#: Background-peak noise multiple and fraction of the background-to-foreground gap that the
#: threshold sits above the background level.
NOISE_SIGMAS = 4.0
GAP_FRACTION = 0.2
#: The breast must cover at least this fraction of the image.
MIN_BREAST_FRACTION = 0.005


class NoBreastError(MammoprepError):
    """No plausible breast in the image (blank, constant, or only tiny specks)."""

    kind = "no_breast"


@dataclass(frozen=True)
class Threshold:
    """Result of :func:`estimate_threshold` (levels in stored-pixel units)."""

    threshold: int      #: foreground is ``pixel > threshold``
    background: float   #: background level (0 for zero-padded backgrounds)
    sigma: float        #: background noise sigma (0 for zero-padded backgrounds)
    foreground: float   #: typical (median) foreground level


def _otsu(hist: np.ndarray) -> int:
    """Otsu threshold of a histogram: class 0 is levels ``<= t``."""
    levels = np.arange(len(hist), dtype=np.float64)
    w0 = np.cumsum(hist, dtype=np.float64)
    m0 = np.cumsum(hist * levels)
    n, mt = w0[-1], m0[-1]
    w1 = n - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - m0 * n) ** 2 / (w0 * w1)
    between[~((w0 > 0) & (w1 > 0))] = -1.0
    return int(np.argmax(between))


def _weighted_median(hist: np.ndarray, lo: int) -> float:
    """Median level of the histogram restricted to levels ``>= lo``."""
    part = hist[lo:]
    c = np.cumsum(part)
    if c[-1] == 0:
        return float("nan")
    return float(lo + np.searchsorted(c, (c[-1] + 1) // 2))


def estimate_threshold(hist: np.ndarray, border: np.ndarray | None = None) -> Threshold:
    """Foreground threshold from a level histogram ``int [levels]`` (bin 0 = exact zeros)
    and, optionally, the values of pixels along the image border (``border``, any shape).

    The background is either exact 0 (padding) or a grey peak (detector noise, film base):
    the mode of the non-zero levels below the Otsu threshold. The grey peak is the
    background when there are no zeros, or when it runs down into 0 and the non-zero
    levels below Otsu are at least a quarter as many as the zeros (noise clipped at 0);
    otherwise the border pixels decide (background surrounds the breast on three sides):
    the grey peak wins when more border pixels lie in it (mode +- 3 sigma) than are
    exactly 0; without border information (or when the border holds neither), when it
    holds more pixels than the zeros do. See the module docstring for the threshold
    itself. Raises :class:`NoBreastError` when nothing stands above the background.
    """
    hist = np.asarray(hist, dtype=np.int64)
    nz = np.flatnonzero(hist)
    if len(nz) == 0 or nz[-1] == 0:
        raise NoBreastError(None, "no plausible breast: the image has no non-zero pixel")
    hist = hist[: nz[-1] + 1]
    zeros = int(hist[0])
    t = max(_otsu(hist), 1)

    # grey background peak: mode of levels 1..t on a coarse, lightly smoothed histogram
    low = hist[1: t + 1]
    # coarse bins: ~4 n^(1/3) of them (8..512), so that sparse histograms of small images
    # still show their mode
    nbins = int(np.clip(round(4 * max(int(low.sum()), 1) ** (1 / 3)), 8, 512))
    bw = max(1, -(-len(low) // nbins))
    pad = (-len(low)) % bw
    coarse = np.concatenate([low, np.zeros(pad, np.int64)]).reshape(-1, bw).sum(axis=1)
    smooth = np.convolve(coarse, np.ones(3), mode="same")
    k = int(np.argmax(smooth))
    peak = smooth[k]
    j = k
    while j > 0 and smooth[j - 1] > peak / 2:
        j -= 1
    lo_w, hi_w = 1 + max(k - 1, 0) * bw, min(t, (k + 2) * bw)  # levels of bins k-1..k+1
    window = np.zeros_like(hist)
    window[lo_w: hi_w + 1] = hist[lo_w: hi_w + 1]
    bg = _weighted_median(window, lo_w)  # the mode, refined to full resolution
    sigma = max((k - j + 0.5) * bw / 1.1774, 0.5)
    a, b = int(max(1, np.floor(bg - 3 * sigma))), int(min(t, np.ceil(bg + 3 * sigma)))
    peak_mass = int(hist[a: b + 1].sum()) if b >= a else 0

    if peak_mass == 0:
        use_peak = False
    elif zeros == 0 or (bg - 3 * sigma < 2 and low.sum() >= 0.25 * zeros):
        # no zeros, or a noise peak that runs down into 0 and is as common as the zeros
        # (the zeros are clipped noise, not padding)
        use_peak = True
    else:
        ring = np.asarray(border).ravel() if border is not None else np.zeros(0, np.uint16)
        ring_zero = int(np.count_nonzero(ring == 0))
        ring_grey = int(np.count_nonzero((ring >= a) & (ring <= b)))
        if ring_zero + ring_grey > 0:
            use_peak = ring_grey > ring_zero
        else:
            use_peak = peak_mass > zeros

    if use_peak:
        fg = _weighted_median(hist, int(np.floor(bg + NOISE_SIGMAS * sigma)) + 1)
        if np.isnan(fg):
            raise NoBreastError(None, "no plausible breast: nothing stands above the "
                                f"background level {bg:.0f}")
        thr = bg + max(NOISE_SIGMAS * sigma, GAP_FRACTION * (fg - bg))
        return Threshold(int(np.floor(thr)), float(bg), float(sigma), fg)
    # exact-zero (padded) background
    return Threshold(0, 0.0, 0.0, _weighted_median(hist, 1))


def _border(sample: np.ndarray) -> np.ndarray:
    """Values of the outer ring (2% of the short side, at least 1 pixel) of ``sample``."""
    k = max(1, int(round(0.02 * min(sample.shape))))
    return np.concatenate([sample[:k].ravel(), sample[-k:].ravel(),
                           sample[k:-k, :k].ravel(), sample[k:-k, -k:].ravel()])


def _factor(shape: tuple[int, int]) -> int:
    """Downsampling factor: about 512 blocks along the long side, between 1 and 8."""
    return int(np.clip(max(shape) // 512, 1, 8))


@dataclass(frozen=True)
class _Plan:
    codes: np.ndarray      # uint8 [R, C]: 0 drop, 1 keep if > threshold, 2 keep
    factor: int
    threshold: Threshold
    chest_wall: str


def _check(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be 2-D [rows, cols], got shape {pixels.shape}")
    if pixels.dtype != np.uint16:
        if not np.issubdtype(pixels.dtype, np.integer):
            raise ValueError(f"pixels must be an integer array, got {pixels.dtype}")
        if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise ValueError("pixel values must lie in 0..65535 (uint16)")
        pixels = pixels.astype(np.uint16)
    return pixels


def _chest_wall(mask: np.ndarray) -> str:
    """'left' or 'right': the side whose edge band holds more breast, else more mass."""
    band = max(1, mask.shape[1] // 20)
    left, right = int(mask[:, :band].sum()), int(mask[:, -band:].sum())
    if left == right:
        half = mask.shape[1] // 2
        left, right = int(mask[:, :half].sum()), int(mask[:, mask.shape[1] - half:].sum())
    return "right" if right > left else "left"


def _plan(pixels: np.ndarray) -> _Plan:
    rows, cols = pixels.shape
    f = _factor((rows, cols))
    off = f // 2
    sample = pixels[off::f, off::f] if f > 1 else pixels
    hist = kernels.histogram_u16(sample, 65536, False, numba.get_num_threads())[:65536]
    th = estimate_threshold(hist, _border(sample))

    small = kernels.block_mean(pixels, f) > np.float32(th.threshold)
    R, C = small.shape
    r = max(1, int(round(min(R, C) / 64)))
    opened = kernels.dilate_square(kernels.erode_square(small, r, False), r)
    core, size = kernels.largest_component(opened)
    if size == 0:  # the opening removed everything (tiny breast): work unopened
        core, size = kernels.largest_component(small)
    region, size = kernels.largest_component(kernels.dilate_square(core, r) & small)
    if size < MIN_BREAST_FRACTION * R * C:
        raise NoBreastError(None, "no plausible breast: the largest bright region covers "
                            f"{size / (R * C):.2%} of the image (threshold {th.threshold})")
    filled = kernels.fill_holes(region)
    inner = kernels.erode_square(filled, 1, True)
    edge = kernels.dilate_square(filled, 1)
    codes = np.where(inner, 2, np.where(edge, 1, 0)).astype(np.uint8)
    return _Plan(codes, f, th, _chest_wall(filled))


def breast_mask(pixels: np.ndarray) -> np.ndarray:
    """``bool [rows, cols]``: True where :func:`remove_burned_in` keeps the pixel's value
    (the breast region with its holes filled; exact-zero pixels well inside it are True
    as well, those on its edge are not)."""
    pixels = _check(np.asarray(pixels))
    plan = _plan(pixels)
    up = kernels.upsample_codes_np(plan.codes, plan.factor, pixels.shape)
    return (up == 2) | ((up == 1) & (pixels > plan.threshold.threshold))


def remove_burned_in(pixels: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Zero everything outside the breast.

    Args:
        pixels: ``uint16 [rows, cols]``, MONOCHROME2.
    Returns:
        ``(clean uint16 [rows, cols], info)`` with info keys ``removed_fraction`` (fraction
        of the originally non-zero pixels set to 0), ``breast_bbox`` (``[ymin, xmin, ymax,
        xmax]``, max exclusive, stored-pixel coordinates), ``chest_wall`` ('left' | 'right')
        and ``threshold`` (foreground is ``pixel > threshold``).
    Raises:
        NoBreastError: blank image or no region large enough to be a breast.
    """
    pixels = _check(np.asarray(pixels))
    plan = _plan(pixels)
    clean, stats = kernels.mask_foreground(pixels, plan.codes, plan.factor,
                                           plan.threshold.threshold)
    nonzero, kept = int(stats[:, 0].sum()), int(stats[:, 1].sum())
    rows_kept = np.flatnonzero(stats[:, 1])
    if len(rows_kept) == 0:
        raise NoBreastError(None, "no plausible breast: nothing left after masking")
    bbox = [int(rows_kept[0]), int(stats[:, 2].min()), int(rows_kept[-1]) + 1,
            int(stats[:, 3].max()) + 1]
    info = {"removed_fraction": (nonzero - kept) / nonzero if nonzero else 0.0,
            "breast_bbox": bbox, "chest_wall": plan.chest_wall,
            "threshold": int(plan.threshold.threshold)}
    return clean, info


def normalise_orientation(pixels: np.ndarray, chest_wall: str) -> tuple[np.ndarray, bool]:
    """Flip horizontally so the chest wall is on the left. Returns ``(pixels, flipped)``;
    the input is returned unchanged (not copied) when ``chest_wall == 'left'``."""
    if chest_wall == "left":
        return pixels, False
    if chest_wall == "right":
        return np.ascontiguousarray(pixels[:, ::-1]), True
    raise ValueError(f"chest_wall must be 'left' or 'right', got {chest_wall!r}")


def remove_text(record: Record) -> Record:
    """Record step: :func:`remove_burned_in`; meta gains ``removed_fraction``,
    ``breast_bbox``, ``chest_wall`` and ``threshold``."""
    try:
        clean, info = remove_burned_in(record.pixels)
    except NoBreastError as err:
        raise NoBreastError(record.path, err.problem,
                            hint="check the image is a mammogram with the breast visible"
                            ) from None
    return record.evolve(clean, step="remove_text", **info)


def orient_left(record: Record) -> Record:
    """Record step: flip so the chest wall is on the left (uses ``meta['chest_wall']``,
    computing it when absent); meta gains ``flipped`` and ``chest_wall = 'left'``;
    ``breast_bbox`` is mirrored when present."""
    side = record.meta.get("chest_wall")
    if side is None:
        side = _plan(_check(np.asarray(record.pixels))).chest_wall
    pixels, flipped = normalise_orientation(record.pixels, side)
    if not flipped:
        return record.evolve(chest_wall="left", flipped=False)
    updates: dict[str, Any] = {"chest_wall": "left", "flipped": True}
    bbox = record.meta.get("breast_bbox")
    if bbox is not None:
        cols = record.pixels.shape[1]
        updates["breast_bbox"] = [bbox[0], cols - bbox[3], bbox[2], cols - bbox[1]]
    return record.evolve(pixels, step="orient_left", **updates)
