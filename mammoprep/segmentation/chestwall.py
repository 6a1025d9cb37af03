"""Film-base strips along the chest-wall edge of scanned film (CBIS-DDSM and the like).

A scanned film's base glows along the film's edges: next to the chest wall the glow decays
from the edge over a few per cent of the width and, on zero-padded scans, stands above the
segmentation threshold. Above and below the breast it then joins the breast along the wall,
and the kept region gains two strips of film base running to the image's top and bottom
borders (on the CBIS-DDSM CC in ../shared/testdata/film, 17 % of the breast's area again).

:func:`film_base_strips` finds them on the block-mean image: a strip is a run of rows, from
the top or bottom border inwards, where the kept region's width from the chest wall stays on
a narrow plateau (the glow's width) far below the breast's width, and whose level at the
wall is far below the breast's level there. In those rows only blocks clearly brighter than
the glow's column profile (measured on the strip's own rows) can be breast (the breast's
corner where it meets the wall); the rest is film base. Body tissue at the wall (a fold of
the belly below an MLO) is as bright as the breast and stays; so does a breast that the
image border cuts (its width grows away from the border, there is no plateau).

All arrays are block-level (one element per ``f x f`` block of the stored image); levels
are block means in stored-pixel units.
"""

from __future__ import annotations

import numpy as np

from .. import kernels

#: The border rows whose median width defines a strip's plateau: this fraction of the
#: height (at least 3 rows).
STRIP_PROBE = 0.05
#: A row belongs to the plateau while its width is at most ``STRIP_WIDTH_SLACK`` times the
#: plateau width plus 2 blocks ...
STRIP_WIDTH_SLACK = 1.3
#: ... a strip spans at least this fraction of the height ...
STRIP_MIN_ROWS = 0.08
#: ... its plateau is at most this fraction of the kept region's widest row ...
STRIP_MAX_WIDTH = 0.5
#: ... and its level next to the wall is at most this fraction of the breast's level there.
STRIP_MAX_LEVEL = 0.5
#: A plateau strip whose level ratio lies above ``STRIP_MAX_LEVEL`` and at most this cannot
#: be told from tissue: the mask is suspect (``qc_measures['wall_strip']`` on the real
#: images in ../shared/testdata: digital views 0.93 and above, the two films 0.13-0.31).
STRIP_UNSURE_LEVEL = 0.75
#: In strip rows a block is breast when its level exceeds the glow's column profile by
#: this factor plus this fraction of the breast's level at the wall (block means of the
#: glow's faint outer tail scatter around it by more than a factor).
STRIP_KEEP_FACTOR = 1.5
STRIP_KEEP_MARGIN = 0.05
#: Columns next to the wall whose levels are compared: this fraction of the width.
WALL_BAND = 0.04


def wall_widths(region: np.ndarray) -> np.ndarray:
    """``int64 [R]``: per row of ``region`` (``bool [R, C]``, chest wall at column 0), the
    length in blocks of its run of True starting at column 0 (0 where column 0 is False)."""
    R, C = region.shape
    off = ~region
    first_off = np.where(off.any(axis=1), off.argmax(axis=1), C)
    return first_off.astype(np.int64)


def _plateau_rows(widths: np.ndarray) -> int:
    """Length of the plateau run at the start of ``widths`` (``int64 [n]``, rows from one
    image border inwards): 0 unless the first row touches the wall. The plateau width is
    the median of the first ``STRIP_PROBE`` of the rows; the run goes on while a row is at
    most ``STRIP_WIDTH_SLACK`` times it plus 2 blocks, and stops at the first row wider."""
    n = len(widths)
    k = max(3, int(round(STRIP_PROBE * n)))
    if n < k or widths[0] == 0:
        return 0
    plateau = float(np.median(widths[:k]))
    if plateau <= 0:
        return 0
    wider = widths > STRIP_WIDTH_SLACK * plateau + 2
    return int(np.argmax(wider)) if wider.any() else n


def _strip_end(small: np.ndarray, region: np.ndarray,
               widths: np.ndarray) -> tuple[np.ndarray, float]:
    """``(bool [R, C], level ratio)``: the film-base blocks of a strip starting at row 0,
    chest wall at column 0, and the ratio of its level at the wall to the breast's there
    (1.0 and no blocks when the rows from row 0 do not form a plateau strip; no blocks
    when the ratio is above ``STRIP_MAX_LEVEL``). See :func:`film_base_strips`."""
    R, C = region.shape
    out = np.zeros((R, C), bool)
    n = _plateau_rows(widths)
    k = max(3, int(round(STRIP_PROBE * R)))
    if n < max(k, STRIP_MIN_ROWS * R) or n >= R:
        return out, 1.0
    if np.median(widths[:k]) > STRIP_MAX_WIDTH * widths.max():
        return out, 1.0
    band = max(1, int(round(WALL_BAND * C)))
    body = region[n:, :band].all(axis=1)
    if not body.any():
        return out, 1.0
    breast_level = float(np.median(small[n:, :band][body]))
    ratio = float(np.median(small[:k, :band])) / max(breast_level, 1e-6)
    if ratio > STRIP_MAX_LEVEL:
        return out, ratio
    glow = np.median(small[:k], axis=0)  # float [C]: the film base's column profile
    limit = STRIP_KEEP_FACTOR * glow + STRIP_KEEP_MARGIN * breast_level
    out[:n] = region[:n] & (small[:n] <= limit[None, :])
    return out, ratio


def film_base_strips(small: np.ndarray, region: np.ndarray,
                     side: str) -> tuple[np.ndarray, float]:
    """``(bool [R, C], level ratio)``: blocks of ``region`` that are film base in strips
    along the chest-wall edge above and below the breast (all False on images without such
    strips), and the lower of the two ends' level ratios (1.0 where an end has no strip).

    Args:
        small: ``float32 [R, C]`` block means of the image (stored-pixel units).
        region: ``bool [R, C]`` the kept region (breast and body tissue at the wall).
        side: chest-wall side, 'left' | 'right'.

    For each of the top and bottom borders: the rows from the border form a strip when
    the kept region's width from the wall (:func:`wall_widths`) stays on a plateau
    (:func:`_plateau_rows`) for at least ``STRIP_MIN_ROWS`` of the height and the plateau
    is at most ``STRIP_MAX_WIDTH`` of the widest row. Its level ratio is the median level
    of the wall band (``WALL_BAND`` of the width) over the probe rows at the border over
    that in the rows beyond the strip where the region fills the band. Strips with a
    ratio up to ``STRIP_MAX_LEVEL`` are film base: in their rows, blocks at most
    ``STRIP_KEEP_FACTOR`` times the median level of their column over the probe rows
    plus ``STRIP_KEEP_MARGIN`` of the breast's level go.
    Brighter strips (body tissue at the wall) stay. O(R*C).
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    cols = slice(None) if side == "left" else slice(None, None, -1)
    s, m = small[:, cols], region[:, cols]
    widths = wall_widths(m)
    top, r_top = _strip_end(s, m, widths)
    bottom, r_bottom = _strip_end(s[::-1], m[::-1], widths[::-1])
    return (top | bottom[::-1])[:, cols], min(r_top, r_bottom)


def cut_film_base(small: np.ndarray, region: np.ndarray,
                  side: str) -> tuple[np.ndarray, np.ndarray, float]:
    """``(region, film_base, level ratio)``: ``region`` (``bool [R, C]``) without the
    film-base strips of :func:`film_base_strips` and without what, in the strips' rows,
    only they joined to the rest (specks of glow); ``film_base`` (``bool [R, C]``) the
    blocks cut; the level ratio as :func:`film_base_strips` gives it. ``region`` is
    returned unchanged (not copied) when there is nothing to cut."""
    strips, ratio = film_base_strips(small, region, side)
    if not strips.any():
        return region, strips, ratio
    rows = strips.any(axis=1)
    rest = region & ~strips
    kept = kernels.propagate(rest & ~rows[:, None], rest)
    return kept, region & ~kept, ratio


def strip_doubt(ratio: float) -> str:
    """The quality-gate reason for a strip's level ratio (see :func:`film_base_strips`):
    '' unless it lies above ``STRIP_MAX_LEVEL`` and at most ``STRIP_UNSURE_LEVEL`` (a strip
    along the chest wall that is neither clearly film base nor clearly tissue)."""
    if STRIP_MAX_LEVEL < ratio <= STRIP_UNSURE_LEVEL:
        return (f"a strip along the chest wall at {ratio:.0%} of the breast's level there "
                "(film base or tissue?)")
    return ""
