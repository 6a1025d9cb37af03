"""Breast foreground and burned-in text removal (LUMINA Section 4: M = {pixel > 0}).

The breast is the largest connected component of the thresholded image after light
morphological cleanup; everything else (burned-in labels, markers, paddle hardware, film
borders, background noise) becomes exactly 0, so that the harmoniser's foreground is the
breast alone.

Steps, for ``pixels: uint16 [rows, cols]`` in MONOCHROME2 polarity:

1. **Chest wall and background** (:func:`chest_wall_side`, :func:`estimate_background`), on
   block means and a strided sample of the image. The chest wall is on the side whose band
   (2-15 % of the width in) is brighter; the background is modelled from the opposite band
   only: exact 0 (padding) when at least 30 % of its blocks are 0, else the histogram peak
   of its pixels with a noise sigma from the peak's half width; a peak above half the
   chest-wall tissue level means there is no background (spot views, chest films).
   ``threshold = bg + max(4 sigma, 0.15 (tissue - bg))``; a pixel is foreground when
   ``pixel > threshold``. Flat plateaus reaching the background or the border (labels,
   unexposed film edges) are taken out (:func:`flat_plateaus`).
2. **Downsample** by ``f`` (1 for small images, up to 8 for full-field ones) with block
   means, and threshold the blocks.
3. **Clean up**: open with a ``(2r+1)^2`` square (breaks thin bridges such as film borders
   or a label touching the skin), keep the largest component, give back what the opening
   shaved off within ``r`` blocks of it, keep the largest component again, cut film-base
   strips along the chest wall (:mod:`.chestwall`), fill holes.
4. **Full resolution**: blocks well inside the breast keep every pixel (dark fat is never
   removed); blocks on the breast's edge keep pixels ``> threshold``; all others become 0.

Pixel coordinates in ``breast_bbox`` are stored-pixel coordinates
``[ymin, xmin, ymax, xmax]`` with ``ymax``/``xmax`` exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import chestwall
from .. import kernels
from ..errors import MammoprepError
from ..geometry import hflip_bbox
from ..record import Record

#: Background noise multiple and fraction of the background-to-tissue gap that the
#: threshold sits above the background level.
NOISE_SIGMAS = 4.0
GAP_FRACTION = 0.15
#: The breast must cover at least this fraction of the image.
MIN_BREAST_FRACTION = 0.005
#: Smallest image side (pixels) that can hold a mammogram.
MIN_SIDE = 64
#: A far-band peak above this fraction of the chest-wall tissue level is tissue, not
#: background (real grey backgrounds sit at 0.06-0.34 of it: benchmarks/segmentation_real.py).
BG_MAX_TISSUE_RATIO = 0.5
#: Column bands, as fractions of the width from one image side: ``[BAND_IN, BAND_OUT)``.
#: The outermost 2 % are skipped (film edges, collimator lines).
BAND_IN, BAND_OUT = 0.02, 0.15

#: Quality-gate rules (measured on the real images in ../shared/testdata; see README):
#: a mask is suspect when more than this fraction of the clearly bright area (blocks above
#: the threshold) lies outside the kept region ...
QC_MAX_BRIGHT_REMOVED = 0.35
#: ... or when the kept region touches the image side opposite the chest wall along more
#: than this fraction of the image height ...
QC_MAX_FAR_TOUCH = 0.5
#: ... or when less than this fraction of the kept region stands above the threshold
#: (a mask that is mostly background noise or filled holes) ...
QC_MIN_ABOVE = 0.5
#: ... or when the kept region covers less / more than these fractions of the image.
QC_MIN_BREAST_FRACTION = 0.02
QC_MAX_BREAST_FRACTION = 0.97


class NoBreastError(MammoprepError):
    """No plausible breast in the image (blank, constant, or only tiny specks)."""

    kind = "no_breast"


class SegmentationSuspectError(MammoprepError):
    """The breast mask fails the quality gate (see :func:`qc_verdict`); rejected unless the
    caller asked to keep suspect images (``--keep-suspect``)."""

    kind = "segmentation_suspect"


#: Per-image segmentation facts recorded in ``Record.meta`` by :func:`remove_text` and
#: written to the harmonise log, ``images.parquet`` and the sample JSON:
#: breast_fraction (kept pixels / image pixels), removed_fraction (non-zero pixels set to 0
#: / non-zero pixels), chest_wall ('left' | 'right'), threshold and background_level
#: (stored-pixel units), qc ('ok' | 'suspect') and qc_reason ('' when ok).
QC_FIELDS = ("breast_fraction", "removed_fraction", "chest_wall", "threshold",
             "background_level", "qc", "qc_reason")


def qc_fields(meta: dict) -> dict:
    """The :data:`QC_FIELDS` of a record's ``meta`` (None where absent), JSON-ready."""
    return {k: meta.get(k) for k in QC_FIELDS}


@dataclass(frozen=True)
class Threshold:
    """Background model of one image (levels in stored-pixel units)."""

    threshold: int      #: foreground is ``pixel > threshold``
    background: float   #: background level (0 for zero-padded backgrounds)
    sigma: float        #: background noise sigma, full-resolution pixels (0 when padded)
    foreground: float   #: typical tissue level next to the chest wall
    zero_padded: bool = False  #: the background is exact-zero padding


def _bands(shape: tuple[int, int]) -> tuple[int, int]:
    """Column offsets ``(a, b)`` of the side bands ``[a, b)`` for an image ``shape``."""
    C = shape[1]
    a = int(BAND_IN * C)
    b = max(a + 1, int(round(BAND_OUT * C)))
    return a, b


def _side_band(img: np.ndarray, side: str) -> np.ndarray:
    """The column band of ``img`` next to ``side`` ('left' | 'right'), all rows."""
    a, b = _bands(img.shape)
    C = img.shape[1]
    return img[:, a:b] if side == "left" else img[:, C - b: C - a]


def _middle_rows(img: np.ndarray) -> np.ndarray:
    R = img.shape[0]
    return img[int(0.1 * R): max(int(0.9 * R), int(0.1 * R) + 1)]


def _other(side: str) -> str:
    return "right" if side == "left" else "left"


def chest_wall_side(small: np.ndarray) -> str:
    """'left' or 'right' for a block-mean image ``float32 [R, C]``: the side whose band
    (2-15 % of the width in from that side, middle 80 % of the rows) has the higher mean
    of its column medians. The breast meets the chest wall along most of the image height,
    while on the opposite side background fills most rows; the outermost columns are
    skipped so film edges and collimator lines do not vote. When both bands are
    background at the median (a small breast), the side whose band has the longest
    stretch of rows holding bright blocks wins."""
    a, b = _bands(small.shape)
    C = small.shape[1]
    middle = _middle_rows(small)  # column medians of the two bands only (the rest unused)
    left = float(np.median(middle[:, a:b], axis=0).mean())
    right = float(np.median(middle[:, C - b: C - a], axis=0).mean())
    low = float(np.percentile(small, 25))
    if max(left, right) <= low:
        # a small breast: background fills most rows of both bands. The breast still
        # touches its band along one long stretch of rows; labels make short ones.
        thr = low + 0.5 * (float(np.percentile(small, 99)) - low)
        left, right = (_longest_run(band.max(axis=1) > thr) for band in
                       (small[:, a:b], small[:, C - b: C - a]))
    if left == right:  # e.g. both bands empty: the side with more signal overall
        half = C // 2
        left, right = float(small[:, :half].sum()), float(small[:, C - half:].sum())
    return "right" if right > left else "left"


def _longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D bool array."""
    best = cur = 0
    for f in flags.tolist():
        cur = cur + 1 if f else 0
        best = max(best, cur)
    return best


def estimate_background(sample: np.ndarray, small: np.ndarray, side: str) -> Threshold:
    """Background model from the band opposite the chest wall.

    Args:
        sample: ``uint16 [R, C]`` strided full-resolution sample of the image (noise level
            of single pixels), on the grid of ``small``.
        small: ``float32 [R, C]`` block means of the image.
        side: chest-wall side, 'left' | 'right'.

    The far band holds background on every view (on most views, most of it). It is
    exact-zero padding when at least 30 % of its blocks are exactly 0 (whole blocks of
    zeros do not happen with noise clipped at 0). Otherwise the background is the
    histogram peak of its non-zero pixels (:func:`background_peak`): detector noise or film
    base is one narrow peak, tissue spreads over many levels, so the peak is found even
    where the breast fills half the band. The tissue level is the median of the chest-wall band
    (middle 80 % of rows). ``threshold = bg + max(4 sigma, 0.15 (tissue - bg))``; 0 for
    padded backgrounds. Raises :class:`NoBreastError` when nothing stands above it.
    """
    if not np.any(small > 0):
        raise NoBreastError(None, "no plausible breast: the image has no non-zero pixel")
    far_small = _side_band(small, _other(side))
    near = _side_band(_middle_rows(small), side)
    tissue = float(np.median(near)) if near.size else 0.0
    if far_small.size and np.mean(far_small == 0) >= 0.3:
        return Threshold(0, 0.0, 0.0, tissue, True)
    far = _side_band(sample, _other(side)).ravel()
    far = far[far > 0]
    if far.size == 0:
        far = sample[sample > 0].ravel()
    if far.size == 0:
        raise NoBreastError(None, "no plausible breast: the image has no non-zero pixel")
    bg, sigma = background_peak(far)
    if tissue > 0 and bg > BG_MAX_TISSUE_RATIO * tissue:
        # the far band is tissue too (a spot view or cropped image: the breast fills the
        # width): no background to model; keep every non-zero pixel and let the quality
        # gate say so ("no background found")
        return Threshold(0, 0.0, 0.0, tissue, False)
    tissue = max(tissue, bg)
    thr = bg + max(NOISE_SIGMAS * sigma, GAP_FRACTION * (tissue - bg))
    top = float(np.percentile(small, 99))
    if top <= thr:
        raise NoBreastError(None, "no plausible breast: nothing stands above the "
                            f"background level {bg:.0f} (threshold {thr:.0f})")
    return Threshold(int(np.floor(thr)), float(bg), float(sigma), tissue, False)


def background_peak(values: np.ndarray) -> tuple[float, float]:
    """``(level, sigma)`` of the main peak of ``values`` (non-zero pixel levels, any shape).

    Histogram with ~256 bins over the 0.1-99.9 % range, smoothed over 3 bins; the peak is
    its highest bin, refined to the median of the values within +- 1 bin; sigma is the
    half width at half maximum of the left flank / 1.1774 (the right flank when the peak
    sits at the lowest bins, i.e. noise clipped at 0), at least 0.5 level.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = (float(x) for x in np.percentile(v, [0.1, 99.9]))
    if hi - lo < 1:
        return float(np.median(v)), 0.5
    nb = 256
    width = max((hi - lo) / nb, 1.0)
    nb = int(np.ceil((hi - lo) / width)) + 1
    hist = np.bincount(np.clip(((v - lo) / width).astype(np.int64), 0, nb - 1), minlength=nb)
    smooth = np.convolve(hist.astype(np.float64), np.ones(3) / 3, mode="same")
    k = int(np.argmax(smooth))
    half = smooth[k] / 2
    j = k
    while j > 0 and smooth[j - 1] > half:
        j -= 1
    m = k
    while m < nb - 1 and smooth[m + 1] > half:
        m += 1
    flank = (k - j + 0.5) if j > 0 else (m - k + 0.5)
    sigma = max(flank * width / 1.1774, 0.5)
    near = v[np.abs(v - (lo + (k + 0.5) * width)) <= 1.5 * width]
    level = float(np.median(near)) if near.size else lo + (k + 0.5) * width
    return level, sigma


#: A flat bright region whose thick part (what survives a 7x7-block opening) covers more
#: than this fraction of the image is clipped tissue (e.g. a saturated implant), not an
#: overlay.
PLATEAU_MAX_THICK = 0.03


def flat_plateaus(sample: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """``bool [R, C]``: burned-in label boxes and unexposed film edges among the bright
    blocks ``fg`` (``bool [R, C]``), from the strided full-resolution ``sample``
    (``uint16 [R, C]``).

    Such overlays are written at one constant level, so a sample point there equals its
    four neighbours exactly, which noisy tissue (nearly) never does. Flat bright points
    whose flat region reaches the background (a non-``fg`` block) or the image border
    are overlays even where they touch the skin; a flat patch inside the breast (clipped
    dense tissue) is left alone, and so is the thick part of a large flat region (a
    saturated implant at the chest wall: more than ``PLATEAU_MAX_THICK`` of the image).
    """
    R, C = sample.shape
    flat = np.zeros((R, C), bool)
    if R < 3 or C < 3:
        return flat
    c = sample[1:-1, 1:-1]
    flat[1:-1, 1:-1] = ((c == sample[:-2, 1:-1]) & (c == sample[2:, 1:-1])
                        & (c == sample[1:-1, :-2]) & (c == sample[1:-1, 2:]))
    flat &= fg
    if not flat.any():
        return flat
    outside = ~fg
    outside[0, :] = outside[-1, :] = True
    outside[:, 0] = outside[:, -1] = True
    seed = flat & kernels.dilate_square(outside, 2)
    plateau = kernels.propagate(seed, flat)
    # a large thick plateau is tissue clipped at the top level (a saturated implant, dense
    # tissue at the chest wall), not an overlay: labels are small, film edges thin
    limit = PLATEAU_MAX_THICK * R * C
    if plateau.sum() > limit:  # else its thick part (a subset) cannot exceed the limit
        thick = kernels.dilate_square(kernels.erode_square(plateau, 3, True), 3) & plateau
        if thick.sum() > limit:
            plateau &= ~thick
    return plateau


def _chest_wall_parts(mask: np.ndarray, side: str, min_size: float) -> np.ndarray:
    """``bool [R, C]``: the parts of ``mask`` connected to a pixel of it in the outermost
    column on the chest-wall ``side`` (body tissue: breast, pectoral muscle, a fold of
    the belly), when they hold at least ``min_size`` pixels in all."""
    seed = np.zeros(mask.shape, bool)
    if side == "left":
        seed[:, 0] = True
    else:
        seed[:, -1] = True
    parts = kernels.propagate(seed, mask)
    return parts if parts.sum() >= min_size else np.zeros(mask.shape, bool)


def _factor(shape: tuple[int, int]) -> int:
    """Downsampling factor: about 512 blocks along the long side, between 1 and 8."""
    return int(np.clip(max(shape) // 512, 1, 8))


@dataclass(frozen=True)
class _Plan:
    codes: np.ndarray      # uint8 [R, C]: 0 drop, 1 keep if > threshold, 2 keep
    factor: int
    threshold: Threshold
    chest_wall: str
    measures: dict         # block-level quality measures, see qc_verdict
    sample: np.ndarray     # uint16 [R, C]: one full-resolution pixel per block


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


def far_touch(mask: np.ndarray, side: str) -> float:
    """Fraction of the rows of ``mask`` (``bool [R, C]``) that reach into the outermost
    2 % of the columns on the side opposite the chest-wall ``side``."""
    C = mask.shape[1]
    k = max(1, int(round(0.02 * C)))
    band = mask[:, C - k:] if side == "left" else mask[:, :k]
    return float(np.mean(band.any(axis=1)))


def qc_verdict(measures: dict) -> tuple[str, str]:
    """``('ok' | 'suspect', reason)`` from the block-level measures of a mask:
    ``bright_removed`` (fraction of the above-threshold area outside the kept region),
    ``far_touch`` (:func:`far_touch`), ``above`` (fraction of the kept region above the
    threshold), ``breast_fraction`` and ``wall_strip`` (:func:`chestwall.strip_doubt`). The
    rules are the module's ``QC_*`` constants."""
    reasons = []
    if measures["bright_removed"] > QC_MAX_BRIGHT_REMOVED:
        reasons.append(f"{measures['bright_removed']:.0%} of the bright area removed")
    if measures["far_touch"] > QC_MAX_FAR_TOUCH:
        reasons.append("breast touches the side opposite the chest wall along "
                       f"{measures['far_touch']:.0%} of the height")
    if measures["above"] < QC_MIN_ABOVE:
        reasons.append(f"only {measures['above']:.0%} of the kept region is above the "
                       "background threshold")
    doubt = chestwall.strip_doubt(measures.get("wall_strip", 1.0))
    if doubt:
        reasons.append(doubt)
    bf = measures["breast_fraction"]
    if bf < QC_MIN_BREAST_FRACTION:
        reasons.append(f"kept region covers only {bf:.1%} of the image")
    elif bf > QC_MAX_BREAST_FRACTION:
        reasons.append(f"kept region covers {bf:.0%} of the image (no background found)")
    return ("suspect", "; ".join(reasons)) if reasons else ("ok", "")


def _plan(pixels: np.ndarray) -> _Plan:
    rows, cols = pixels.shape
    if min(rows, cols) < MIN_SIDE:
        raise NoBreastError(None, f"no plausible breast: a {rows}x{cols} image is smaller "
                            f"than any mammogram (at least {MIN_SIDE} pixels a side)")
    f = _factor((rows, cols))
    off = f // 2
    small = kernels.block_mean(pixels, f)
    R, C = small.shape
    sample = pixels[off::f, off::f] if f > 1 else pixels
    sample = sample[:R, :C]
    if sample.shape != small.shape:  # last partial block has no strided sample: pad
        sample = np.pad(sample, ((0, R - sample.shape[0]), (0, C - sample.shape[1])),
                        mode="edge")
    side = chest_wall_side(small)
    th = estimate_background(sample, small, side)

    fg = small > np.float32(th.threshold)
    plateau = flat_plateaus(sample, fg)
    if plateau.any():
        fg &= ~kernels.dilate_square(plateau, 2)
    r = max(1, int(round(min(R, C) / 64)))
    opened = kernels.dilate_square(kernels.erode_square(fg, r, False), r)
    core, size = kernels.largest_component(opened)
    if size == 0:  # the opening removed everything (tiny breast): work unopened
        core, size = kernels.largest_component(fg)
    grown = kernels.dilate_square(core, r) & fg
    region, size = kernels.largest_component(grown)
    # other body tissue at the chest wall (a fold of the belly below the breast) stays,
    # unless it is much brighter than the breast (paddle or positioning hardware)
    extra = _chest_wall_parts(grown, side, MIN_BREAST_FRACTION * R * C) & ~region
    if extra.any() and size and np.median(small[extra]) <= np.percentile(small[region], 99):
        region |= extra
    if size < MIN_BREAST_FRACTION * R * C:
        raise NoBreastError(None, "no plausible breast: the largest bright region covers "
                            f"{size / (R * C):.2%} of the image (threshold {th.threshold})")
    region, film_base, wall_strip = chestwall.cut_film_base(small, region, side)
    fg &= ~film_base  # film base at the chest wall is background, not bright area removed
    filled = kernels.fill_holes(region)
    inner = kernels.erode_square(filled, 1, True)
    edge = kernels.dilate_square(filled, 1)
    codes = edge.astype(np.uint8)  # 1 on the edge band, 2 inside (inner within edge)
    codes += inner
    n_fg, n_filled = int(fg.sum()), int(filled.sum())
    measures = {
        "bright_removed": float((fg & ~filled).sum() / n_fg) if n_fg else 1.0,
        "far_touch": far_touch(filled, side),
        "above": float((filled & fg).sum() / n_filled) if n_filled else 0.0,
        "breast_fraction": n_filled / (R * C),
        "wall_strip": wall_strip,
    }
    return _Plan(codes, f, th, side, measures, sample)


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
        of the originally non-zero pixels set to 0), ``breast_fraction`` (kept pixels /
        all pixels), ``breast_bbox`` (``[ymin, xmin, ymax, xmax]``, max exclusive,
        stored-pixel coordinates), ``chest_wall`` ('left' | 'right'), ``threshold``
        (foreground is ``pixel > threshold``), ``background_level`` and
        ``background_sigma`` (stored-pixel units; 0 for exact-zero padding),
        ``overlay_pixels`` (pixels zeroed by :func:`remove_saturated_overlay`), ``qc``
        ('ok' | 'suspect'), ``qc_reason`` and ``qc_measures`` (see :func:`qc_verdict`).
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
    overlay = remove_saturated_overlay(clean, bbox) if _overlay_candidate(plan) else 0
    kept -= overlay
    measures = {k: round(float(v), 4) for k, v in plan.measures.items()}
    verdict, reason = qc_verdict(measures)
    th = plan.threshold
    info = {"removed_fraction": (nonzero - kept) / nonzero if nonzero else 0.0,
            "breast_fraction": kept / pixels.size,
            "breast_bbox": bbox, "chest_wall": plan.chest_wall,
            "threshold": int(th.threshold), "background_level": round(th.background, 2),
            "background_sigma": round(th.sigma, 2), "overlay_pixels": overlay,
            "qc": verdict, "qc_reason": reason,
            "qc_measures": measures}
    return clean, info


#: A level is a saturated overlay when at least this many kept pixels (and this fraction
#: of the breast box) sit exactly at the image maximum, and they outnumber all the pixels
#: in the 3 % of levels just below it this many times (anti-aliased glyph rims are few;
#: clipped calcifications sit on a continuum of bright tissue).
OVERLAY_MIN_PIXELS = 20
OVERLAY_MIN_FRACTION = 0.001
OVERLAY_SPIKE = 4.0
#: ... and at most this fraction of them lies inside a 5x5 square of top-level pixels
#: (strokes of text, not a clipped blob).
OVERLAY_MAX_INTERIOR = 0.25
#: ... and some row crosses at least this many separate strokes (a line of text).
OVERLAY_MIN_STROKES = 10


def _overlay_candidate(plan: "_Plan") -> bool:
    """Cheap gate for :func:`remove_saturated_overlay` on the strided sample (1 pixel a
    block): text at the top level that covers ``OVERLAY_MIN_FRACTION`` of the breast is
    hit by the sample too, as a count at the sample's own maximum. Saves two full-image
    passes on the (common) images without such text."""
    s = plan.sample[plan.codes > 0]
    if s.size == 0:
        return False
    top = s.max()
    return int(np.count_nonzero(s == top)) >= max(3, 0.5 * OVERLAY_MIN_FRACTION * s.size)


def remove_saturated_overlay(clean: np.ndarray, bbox: list[int]) -> int:
    """Zero, in place, burned-in text and markers that lie on the breast itself.

    Burned-in annotations (patient text, view labels) are written at the image's top
    level, which tissue rarely piles up at: the histogram of the kept region shows a spike
    at its maximum level. When at least
    ``OVERLAY_MIN_PIXELS`` kept pixels (and ``OVERLAY_MIN_FRACTION`` of the box) sit at
    the maximum, that count is ``OVERLAY_SPIKE`` times the count over the levels just
    below (3 % of the maximum, at least 4 levels), and they form thin strokes (at most
    ``OVERLAY_MAX_INTERIOR`` of them inside a 5x5 square of such pixels), those pixels and
    their 8-neighbours (anti-aliased glyph edges) become 0, provided some row crosses at
    least ``OVERLAY_MIN_STROKES`` separate strokes (a line of text). Blobs and sparse dots
    at the top level (metal markers, clipped dense tissue, calcifications) stay.

    Args:
        clean: ``uint16 [rows, cols]`` after masking, modified in place.
        bbox: ``[ymin, xmin, ymax, xmax]`` of the kept pixels (max exclusive).
    Returns:
        the number of non-zero pixels set to 0.
    """
    y0, x0, y1, x1 = bbox
    view = clean[y0:y1, x0:x1]
    if view.size == 0:
        return 0
    top = int(view.max())
    if top == 0:
        return 0
    at = view == top
    n_top = int(np.count_nonzero(at))
    if n_top < max(OVERLAY_MIN_PIXELS, OVERLAY_MIN_FRACTION * view.size):
        return 0
    window = max(4, int(round(0.03 * top)))
    below = int(np.count_nonzero((view >= max(1, top - window)) & (view < top)))
    if n_top < OVERLAY_SPIKE * below:
        return 0
    # text is strokes a few pixels wide; a plateau of clipped dense tissue or a lesion is
    # a blob: leave anything whose top-level pixels are mostly interior (5x5 erosion)
    interior = int(np.count_nonzero(kernels.erode_square(at, 2, False)))
    if interior > OVERLAY_MAX_INTERIOR * n_top:
        return 0
    # ... and strokes in lines: some row crosses many separate strokes (a line of glyphs),
    # which a cluster of clipped calcifications does not
    starts = at[:, 1:] & ~at[:, :-1]
    if int(np.count_nonzero(starts, axis=1).max()) < OVERLAY_MIN_STROKES:
        return 0
    grown = at.copy()
    grown[1:] |= at[:-1]
    grown[:-1] |= at[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    hit = grown & (view > 0)
    n = int(np.count_nonzero(hit))
    view[hit] = 0
    return n


def normalise_orientation(pixels: np.ndarray, chest_wall: str) -> tuple[np.ndarray, bool]:
    """Flip horizontally so the chest wall is on the left. Returns ``(pixels, flipped)``;
    the input is returned unchanged (not copied) when ``chest_wall == 'left'``."""
    if chest_wall == "left":
        return pixels, False
    if chest_wall == "right":
        return np.ascontiguousarray(pixels[:, ::-1]), True
    raise ValueError(f"chest_wall must be 'left' or 'right', got {chest_wall!r}")


def remove_text(record: Record, keep_suspect: bool = False) -> Record:
    """Record step: :func:`remove_burned_in`; meta gains its info keys (``removed_fraction``,
    ``breast_fraction``, ``breast_bbox``, ``chest_wall``, ``threshold``,
    ``background_level``, ``qc``, ``qc_reason``, ...).

    Raises:
        NoBreastError: no plausible breast.
        SegmentationSuspectError: the mask fails the quality gate and ``keep_suspect`` is
            False (with ``keep_suspect`` the record is returned with ``qc = 'suspect'``).
    """
    try:
        clean, info = remove_burned_in(record.pixels)
    except NoBreastError as err:
        raise NoBreastError(record.path, err.problem,
                            hint="check the image is a mammogram with the breast visible"
                            ) from None
    if info["qc"] != "ok" and not keep_suspect:
        raise SegmentationSuspectError(
            record.path, f"breast segmentation looks wrong: {info['qc_reason']}",
            tag="breast mask", value=f"threshold {info['threshold']}, background "
            f"{info['background_level']}, chest wall {info['chest_wall']}",
            hint="look at it with `mammoprep qc FILE -o qc.png`; pass --keep-suspect to "
                 "store it anyway (flagged qc=suspect)")
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
        updates["breast_bbox"] = hflip_bbox(bbox, cols)
    return record.evolve(pixels, step="orient_left", histogram=record.histogram, **updates)
