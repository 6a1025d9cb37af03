"""Breast foreground and burned-in text removal: synthetic images with known labels, golden
spot checks on real mammograms, Numba == NumPy twins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage as ndi

from mammoprep import kernels as K
from mammoprep.errors import MammoprepError
from mammoprep.foreground import (NoBreastError, breast_mask, estimate_threshold,
                                  normalise_orientation, orient_left, remove_burned_in,
                                  remove_text)
from mammoprep.record import Record

from .conftest import real

SETTINGS = settings(max_examples=40, deadline=None)

#: label rectangles as fractions (row0, row1, col0, col1) of the image, on the side away
#: from the chest wall: A touches the top and the far border, B floats, C touches the bottom
LABELS = [(0.00, 0.06, 0.80, 1.00), (0.40, 0.52, 0.85, 0.97), (0.90, 1.00, 0.70, 0.95)]


def synth(rows=1024, cols=832, bits=12, side="left", bg=0.0, noise=0.0, seed=0):
    """``(pixels uint16, breast bool, labels bool, fat bool)``: a half-ellipse breast with
    smooth texture on the chest-wall side, dark fat blobs inside it (at background level),
    three bright labels with dark text strokes, optional noisy grey background."""
    rng = np.random.default_rng(seed)
    top = 2 ** bits - 1
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    xc = x if side == "left" else cols - 1 - x
    r = np.sqrt(((y - rows * 0.5) / (rows * 0.42)) ** 2 + (xc / (cols * 0.6)) ** 2)
    breast = r < 1.0
    tex = ndi.zoom(rng.normal(size=(rows // 16 + 2, cols // 16 + 2)), 16, order=1)
    tex = tex[:rows, :cols]
    thick = np.sqrt(np.clip(1 - r ** 2, 0, 1))
    val = bg + (top - bg) * (0.35 + 0.3 * thick + 0.05 * tex)
    fat = np.zeros_like(breast)
    for fy, fx, fr in [(0.45, 0.2, 0.05), (0.6, 0.3, 0.04)]:
        cx = fx * cols if side == "left" else cols - 1 - fx * cols
        fat |= (y - fy * rows) ** 2 + (x - cx) ** 2 < (fr * rows) ** 2
    val = np.where(fat, bg + 1, val)
    img = np.where(breast, val, bg)
    if noise:
        img = img + rng.normal(0, noise, size=img.shape)
    labels = np.zeros_like(breast)
    for r0, r1, c0, c1 in LABELS:
        c0, c1 = (c0, c1) if side == "left" else (1 - c1, 1 - c0)
        sl = (slice(int(r0 * rows), int(np.ceil(r1 * rows))),
              slice(int(c0 * cols), int(np.ceil(c1 * cols))))
        labels[sl] = True
        box = np.full(labels[sl].shape, 0.97 * top)
        box[1::4, 2::5] = bg  # text strokes
        box[2::4, 2::5] = bg
        img[sl] = box
    img = np.clip(np.rint(img), 0, top).astype(np.uint16)
    assert not (labels & breast).any()
    return img, breast, labels, fat


def _check(img, breast, labels, fat, chest="left"):
    clean, info = remove_burned_in(img)
    assert clean.dtype == np.uint16 and clean.shape == img.shape
    assert (clean[labels] == 0).all(), "a label pixel survived"
    kept = (clean[breast] == img[breast]).mean()
    assert kept >= 0.99, f"only {kept:.4f} of the breast kept"
    assert (clean[fat] == img[fat]).all(), "dark fat inside the breast was removed"
    # everything more than two blocks away from the breast is exactly 0
    far = ~ndi.binary_dilation(breast, iterations=20)
    assert (clean[far] == 0).all()
    assert ((clean == 0) | (clean == img)).all()  # values are kept or zeroed, never changed
    assert info["chest_wall"] == chest
    ys, xs = np.nonzero(clean)
    assert info["breast_bbox"] == [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]
    nz = np.count_nonzero(img)
    assert info["removed_fraction"] == pytest.approx((nz - np.count_nonzero(clean)) / nz)
    np.testing.assert_array_equal(breast_mask(img) & (img > 0), clean > 0)
    return clean, info


def test_zero_background_labels_removed():
    _check(*synth())


def test_noisy_grey_background():
    img, breast, labels, fat = synth(bg=300, noise=25, seed=1)
    clean, info = _check(img, breast, labels, fat)
    assert info["threshold"] > 300 + 4 * 20  # from the image, not a fixed 0
    bg = ~ndi.binary_dilation(breast | labels, iterations=3)
    assert (clean[bg] == 0).mean() > 0.999


def test_noise_clipped_at_zero():
    # detector noise around 0, clipped: half the background is exact 0, half small values
    img, breast, labels, fat = synth(rows=600, cols=480, bg=0, noise=60, seed=7)
    assert (img[~breast & ~labels] == 0).mean() > 0.3
    _check(img, breast, labels, fat)


def test_chest_wall_right_and_orientation():
    img, breast, labels, fat = synth(side="right", seed=2)
    clean, info = _check(img, breast, labels, fat, chest="right")
    flipped, did = normalise_orientation(clean, info["chest_wall"])
    assert did and (flipped == clean[:, ::-1]).all()
    same, did = normalise_orientation(clean, "left")
    assert not did and same is clean
    with pytest.raises(ValueError, match="chest_wall"):
        normalise_orientation(clean, "top")


def test_small_image():
    _check(*synth(rows=64, cols=48, seed=3))


def test_16bit_noisy():
    _check(*synth(rows=700, cols=560, bits=16, bg=3000, noise=150, seed=4))


def test_full_size_14bit():
    _check(*synth(rows=4096, cols=3328, bits=14, bg=0, noise=40, seed=5))


def test_empty_and_specks_raise():
    with pytest.raises(NoBreastError, match="no plausible breast"):
        remove_burned_in(np.zeros((100, 80), np.uint16))
    specks = np.zeros((200, 160), np.uint16)
    specks[10, 10] = specks[50, 90] = 3000
    with pytest.raises(MammoprepError, match="no plausible breast"):
        remove_burned_in(specks)


def test_threshold_rules():
    # zero (padded) background -> threshold 0
    h = np.zeros(4096, np.int64)
    h[0], h[2000:2500] = 10000, 10
    assert estimate_threshold(h).threshold == 0
    # grey background peak at 500 (sigma ~10), foreground ~2000..3000
    lv = np.arange(4096)
    h = (20000 * np.exp(-0.5 * ((lv - 500) / 10.0) ** 2)).astype(np.int64)
    h[2000:3000] += 30
    t = estimate_threshold(h)
    assert abs(t.background - 500) <= 2 and 5 <= t.sigma <= 20
    assert 500 + 4 * t.sigma <= t.threshold <= 1000


def test_threshold_border_decides_zero_or_grey_background():
    # zeros (padding) plus a large fat-like peak at 500 and denser tissue above
    lv = np.arange(4096)
    h = (3000 * np.exp(-0.5 * ((lv - 500) / 40.0) ** 2)).astype(np.int64)
    h[0] = 100000
    h[1500:3000] += 60
    # border all zeros: the peak is fat inside the breast -> zero background
    assert estimate_threshold(h, np.zeros(500, np.uint16)).threshold == 0
    # border in the grey peak: detector background -> threshold above it
    grey = np.full(500, 505, np.uint16)
    assert estimate_threshold(h, grey).threshold > 600


def test_synth_cohort_images():
    """Cross-check with the cohort generator (mammoprep.synth): every vendor, both sides,
    both views; labels and the marker vanish, the breast stays."""
    from mammoprep.synth import VENDORS, ImageSpec, render_image

    for i, vendor in enumerate(sorted(VENDORS)):
        for lat, view in (("L", "CC"), ("R", "MLO")):
            spec = ImageSpec(384, 312, vendor, lat, view, 0.2 + 0.15 * i, (),
                             ("ANON 01/02/2020", f"{lat} {view}"), seed=i)
            im = render_image(spec)
            clean, info = remove_burned_in(im.pixels)
            for x0, y0, x1, y1 in im.text_boxes:
                assert clean[y0:y1, x0:x1].max() == 0, (vendor, lat, view)
            kept = (clean[im.foreground] == im.pixels[im.foreground]).mean()
            assert kept >= 0.99, (vendor, lat, view, kept)
            assert info["chest_wall"] == ("left" if lat == "L" else "right")


def test_record_steps():
    img, *_ = synth(rows=256, cols=208, side="right", seed=6)
    rec = Record(img, {"steps": ["read"]}, path="a.dcm")
    out = remove_text(rec)
    assert out.meta["steps"] == ["read", "remove_text"]
    for key in ("removed_fraction", "breast_bbox", "chest_wall"):
        assert key in out.meta
    assert out.meta["chest_wall"] == "right" and rec.meta == {"steps": ["read"]}
    o = orient_left(out)
    assert o.meta["flipped"] is True and o.meta["chest_wall"] == "left"
    assert o.meta["steps"][-1] == "orient_left"
    np.testing.assert_array_equal(o.pixels, out.pixels[:, ::-1])
    y0, x0, y1, x1 = o.meta["breast_bbox"]
    ys, xs = np.nonzero(o.pixels)
    assert [y0, x0, y1, x1] == [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]
    again = orient_left(o)
    assert again.meta["flipped"] is False and again.pixels is o.pixels
    with pytest.raises(NoBreastError, match="a.dcm"):
        remove_text(Record(np.zeros((50, 40), np.uint16), {}, path="a.dcm"))


# ------------------------------------------------------------------ real mammograms

def _dcm(name):
    pydicom = pytest.importorskip("pydicom")
    return pydicom.dcmread(real(name)).pixel_array


def _corner(a, which, n=8):
    rows = slice(0, n) if which[0] == "t" else slice(-n, None)
    cols = slice(0, n) if which[1] == "l" else slice(-n, None)
    return a[rows, cols]


# which corners are background / labels / hardware / film border (-> 0); corners on body
# tissue are kept: GE's chest wall and body fill the right edge top to bottom, the
# Siemens breast reaches both bottom corners, the film's bottom-left border touches tissue.
REAL = {
    "fodicom_GH133_GE_SenographeEssential.dcm": ("right", ["tl", "bl"], ["tr"]),
    "fodicom_OutOfBoundsOverlay_Siemens_MammomatInspiration.dcm": (None, ["tl", "tr"],
                                                                   ["bl", "br"]),
    "wg04_MG1_J2KI.dcm": ("left", ["tr", "br"], []),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_mammograms(name):
    img = _dcm(name)
    side, zero_corners, tissue_corners = REAL[name]
    clean, info = remove_burned_in(img)
    for c in zero_corners:
        assert (_corner(clean, c) == 0).all(), f"corner {c} not cleared"
    for c in tissue_corners:
        assert (_corner(clean, c) == _corner(img, c)).all(), f"tissue corner {c} removed"
    if side:
        assert info["chest_wall"] == side
    # the breast stays: bright pixels of the central band are kept
    rows, cols = img.shape
    centre = img[rows // 4: 3 * rows // 4]
    bright = centre > np.percentile(img[img > 0], 60)
    assert (clean[rows // 4: 3 * rows // 4][bright] == centre[bright]).mean() > 0.97
    assert 0.01 < info["removed_fraction"] < 0.7


def test_real_film_label_and_border_removed():
    img = _dcm("wg04_MG1_J2KI.dcm")
    clean, info = remove_burned_in(img)
    assert clean[150:750, 2250:2900].max() == 0          # "L MLO" burned-in label
    assert clean[-40:, 2200:].max() == 0                # bright film border, far side
    assert info["breast_bbox"][3] < 0.75 * img.shape[1]  # nothing kept out at the far edge


def test_real_siemens_paddle_hardware_removed():
    img = _dcm("fodicom_OutOfBoundsOverlay_Siemens_MammomatInspiration.dcm")
    clean, info = remove_burned_in(img)
    assert img[0:150, 1050:1318].max() > 3000 and clean[0:150, 1050:1318].max() == 0
    assert info["threshold"] > img[:100, :600].max()  # above the grey background


# ------------------------------------------------------------------ Numba == NumPy twins

mask_st = hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40))


@SETTINGS
@given(mask=mask_st, r=st.integers(0, 4))
def test_twin_dilate(mask, r):
    np.testing.assert_array_equal(K.dilate_square(mask, r), K.dilate_square_np(mask, r))


@SETTINGS
@given(mask=mask_st, r=st.integers(0, 4), border=st.booleans())
def test_twin_erode(mask, r, border):
    np.testing.assert_array_equal(K.erode_square(mask, r, border),
                                  K.erode_square_np(mask, r, border))


@SETTINGS
@given(mask=mask_st)
def test_twin_largest_component(mask):
    a, na = K.largest_component(mask)
    b, nb = K.largest_component_np(mask)
    assert na == nb
    np.testing.assert_array_equal(a, b)


@SETTINGS
@given(mask=mask_st)
def test_twin_fill_holes(mask):
    np.testing.assert_array_equal(K.fill_holes(mask), K.fill_holes_np(mask))


@SETTINGS
@given(img=hnp.arrays(np.uint16, hnp.array_shapes(min_dims=2, max_dims=2, max_side=60)),
       f=st.integers(1, 9))
def test_twin_block_mean(img, f):
    np.testing.assert_array_equal(K.block_mean(img, f), K.block_mean_np(img, f))


@SETTINGS
@given(img=hnp.arrays(np.uint16, hnp.array_shapes(min_dims=2, max_dims=2, max_side=60),
                      elements=st.integers(0, 20)),
       f=st.integers(1, 9), thr=st.integers(0, 21), seed=st.integers(0, 1000))
def test_twin_mask_foreground(img, f, thr, seed):
    shape = (-(-img.shape[0] // f), -(-img.shape[1] // f))
    codes = np.random.default_rng(seed).integers(0, 3, shape).astype(np.uint8)
    a, sa = K.mask_foreground(img, codes, f, thr)
    b, sb = K.mask_foreground_np(img, codes, f, thr)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)


def test_twins_on_a_large_image_parallel_path():
    # above kernels.PARALLEL_MIN_PIXELS the kernels run multi-threaded
    rng = np.random.default_rng(8)
    img = rng.integers(0, 5000, (700, 500)).astype(np.uint16)
    img[:, :100] = 0
    assert img.size >= K.PARALLEL_MIN_PIXELS
    for f in (1, 4, 7):
        np.testing.assert_array_equal(K.block_mean(img, f), K.block_mean_np(img, f))
        codes = rng.integers(0, 3, (-(-700 // f), -(-500 // f))).astype(np.uint8)
        a, sa = K.mask_foreground(img, codes, f, 2500)
        b, sb = K.mask_foreground_np(img, codes, f, 2500)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(sa, sb)
    for skip in (False, True):
        np.testing.assert_array_equal(K.histogram_u16(img, 4096, skip, 3),
                                      K.histogram_u16_np(img, 4096, skip))
    lut = rng.integers(0, 65536, 65536).astype(np.uint16)
    np.testing.assert_array_equal(K.apply_lut(img, lut), K.apply_lut_np(img, lut))


def test_reader_pipeline_on_a_real_file():
    """read_dicom -> remove_text -> orient_left -> harmonize, meta carried along."""
    from mammoprep.dicomio import read_dicom
    from mammoprep.harmonize import Reference, harmonize

    rec = orient_left(remove_text(read_dicom(real("fodicom_GH133_GE_SenographeEssential.dcm"))))
    assert rec.meta["flipped"] is True and rec.meta["chest_wall"] == "left"
    assert rec.meta["steps"][-2:] == ["remove_text", "orient_left"]
    assert rec.pixels[:, :50].mean() > 1000 and (rec.pixels[:8, -8:] == 0).all()
    ref = Reference.from_images([rec.pixels], bits=12)
    out = harmonize(rec, ref)
    np.testing.assert_array_equal(out.pixels, rec.pixels)  # own histogram: identity
    assert out.meta["harmonized"] and out.meta["bits_stored"] == 12
