"""Film-base strips along the chest wall (mammoprep.segmentation.chestwall) on hand-made block
images: a breast blob at the wall plus thin glowing strips above and below it."""

from __future__ import annotations

import numpy as np
import pytest

from mammoprep.segmentation import chestwall as CW
from mammoprep.segmentation.foreground import qc_verdict


def film(strip_level=800.0, breast_level=3000.0, rows=200, cols=160):
    """``(small float32 [rows, cols], region bool, breast bool)``, chest wall on the left:
    a half-ellipse breast (rows 45-155 at the wall, 100 blocks wide) at ``breast_level``,
    and, along the wall above and below it, film-base glow falling linearly from
    ``strip_level`` at the wall to 0 thirty blocks in; the region is every block > 0."""
    y, x = np.mgrid[:rows, :cols].astype(np.float64)
    breast = ((y - 100) / 55) ** 2 + (x / 100) ** 2 < 1
    glow = np.clip(strip_level * (1 - x / 30), 0, None)
    small = np.where(breast, breast_level, glow).astype(np.float32)
    return small, small > 0, breast


def test_strips_cut_breast_kept():
    small, region, breast = film()
    strips, ratio = CW.film_base_strips(small, region, "left")
    assert 0.1 < ratio < 0.5
    assert not (strips & breast).any()
    assert strips[:40, :30].all() and strips[161:, :30].all()
    assert (strips == (region & ~breast)).all()


def test_right_chest_wall_is_the_mirror():
    small, region, breast = film()
    strips, ratio = CW.film_base_strips(small[:, ::-1], region[:, ::-1], "right")
    left, _ = CW.film_base_strips(small, region, "left")
    assert (strips == left[:, ::-1]).all()


def test_tissue_at_the_wall_stays():
    # a fold of the belly (or any strip as bright as the breast) is not film base
    small, region, breast = film(strip_level=3000.0)
    strips, ratio = CW.film_base_strips(small, region, "left")
    assert not strips.any() and ratio > 0.75
    assert CW.strip_doubt(ratio) == ""


def test_breast_cut_by_the_border_has_no_strip():
    # the breast fills the rows to the top border: its width grows from the border, no plateau
    small, region, breast = film()
    small, region = small[100:], region[100:]
    strips, ratio = CW.film_base_strips(small, region, "left")
    assert not strips[:40].any()


def test_unclear_strip_is_suspect():
    small, region, breast = film(strip_level=1800.0)  # ratio ~0.55: film base or tissue?
    strips, ratio = CW.film_base_strips(small, region, "left")
    assert not strips.any() and CW.STRIP_MAX_LEVEL < ratio <= CW.STRIP_UNSURE_LEVEL
    verdict, reason = qc_verdict({"bright_removed": 0.0, "far_touch": 0.0, "above": 1.0,
                                  "breast_fraction": 0.3, "wall_strip": ratio})
    assert verdict == "suspect" and "strip along the chest wall" in reason


def test_cut_film_base_drops_specks_in_strip_rows():
    small, region, breast = film()
    small[10, 25] = 5000.0  # a bright speck inside the top strip
    kept, cut, ratio = CW.cut_film_base(small, region, "left")
    assert (kept == breast).all() and (cut == (region & ~breast)).all()
    small, region, _ = film(strip_level=3000.0)  # nothing to cut: region returned as is
    same, none, _ = CW.cut_film_base(small, region, "left")
    assert same is region and not none.any()


def test_wall_widths():
    region = np.array([[1, 1, 0, 1], [0, 1, 1, 1], [1, 1, 1, 1]], bool)
    assert CW.wall_widths(region).tolist() == [2, 0, 4]
    with pytest.raises(ValueError, match="side"):
        CW.film_base_strips(np.zeros((3, 4), np.float32), region, "top")
