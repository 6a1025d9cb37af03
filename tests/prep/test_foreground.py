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
from mammoprep.segmentation.foreground import (NoBreastError, SegmentationSuspectError,
                                               background_peak, breast_mask, chest_wall_side,
                                               estimate_background, normalise_orientation,
                                               orient_left, qc_verdict, remove_burned_in,
                                               remove_saturated_overlay, remove_text)
from mammoprep.record import Record

from ..conftest import real

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
    _check(*synth(rows=96, cols=80, seed=3))


def test_image_too_small_to_be_a_mammogram():
    with pytest.raises(NoBreastError, match="smaller than any mammogram"):
        remove_burned_in(np.full((40, 30), 1000, np.uint16))


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


def test_background_peak_found_under_heavy_tissue_contamination():
    # 40 % background noise (level 500, sigma 12) + 60 % tissue spread over 900..3000
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(500, 12, 40000), rng.uniform(900, 3000, 60000)])
    level, sigma = background_peak(np.clip(v, 1, 4095).astype(np.uint16))
    assert abs(level - 500) <= 3 and 8 <= sigma <= 18


def test_background_peak_noise_clipped_at_zero():
    rng = np.random.default_rng(1)
    v = np.abs(rng.normal(0, 30, 50000)) + 1
    level, sigma = background_peak(v)
    assert level < 30 and 10 <= sigma <= 60


def _model(img):
    f = max(1, max(img.shape) // 512)
    small = K.block_mean(img, f)
    sample = img[f // 2::f, f // 2::f][:small.shape[0], :small.shape[1]]
    side = chest_wall_side(small)
    return side, estimate_background(sample, small, side)


def test_background_model_zero_padding_gives_threshold_zero():
    img, *_ = synth(rows=512, cols=416)
    side, th = _model(img)
    assert side == "left" and th.zero_padded and th.threshold == 0


def test_background_model_noisy_grey():
    img, *_ = synth(rows=512, cols=416, side="right", bg=800, noise=20, seed=3)
    side, th = _model(img)
    assert side == "right" and not th.zero_padded
    assert abs(th.background - 800) < 10 and 10 <= th.sigma <= 30
    assert 800 + 4 * 15 <= th.threshold < 800 + 0.5 * (th.foreground - 800)


def dense_bimodal(rows=1024, cols=832, seed=0, side="left"):
    """The issue-10 failure: noisy non-zero background at 400 and a dense breast whose
    foreground histogram has two peaks, fat near 1000 and fibroglandular near 1600."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    xc = x if side == "left" else cols - 1 - x
    r = np.sqrt(((y - rows * 0.5) / (rows * 0.45)) ** 2 + (xc / (cols * 0.7)) ** 2)
    breast = r < 1.0
    tex = ndi.zoom(rng.normal(size=(rows // 32 + 2, cols // 32 + 2)), 32, order=1)[:rows, :cols]
    dense = (tex > -0.2) & (r < 0.85)
    img = np.where(breast, np.where(dense, 1600.0, 1000.0), 400.0)
    img = img + rng.normal(0, 25, img.shape)
    return np.clip(np.rint(img), 0, 4095).astype(np.uint16), breast


def test_dense_bimodal_breast_with_noisy_background_is_kept():
    img, breast = dense_bimodal()
    h = np.bincount(img[breast].ravel() // 50)
    assert h[1000 // 50] > 0 and h[1600 // 50] > 0  # two foreground peaks
    clean, info = remove_burned_in(img)
    kept = (clean[breast] == img[breast]).mean()
    assert kept > 0.99, kept
    assert info["qc"] == "ok" and info["qc_measures"]["bright_removed"] < 0.05
    assert 380 < info["background_level"] < 420
    outside = ~ndi.binary_dilation(breast, iterations=12)
    assert (clean[outside] > 0).mean() < 0.001


def test_saturated_implant_at_the_chest_wall_is_kept():
    # FOR PRESENTATION images may clip a silicone implant at the top level: a large flat
    # region touching the chest-wall edge, which is tissue, not a label or film edge
    img, breast, labels, fat = synth(rows=768, cols=624, seed=12)
    y, x = np.mgrid[0:768, 0:624]
    implant = ((y - 384) / 200.0) ** 2 + (x / 230.0) ** 2 < 1.0
    img[implant] = 4095
    clean, info = remove_burned_in(img)
    assert (clean[implant] == 4095).mean() > 0.99
    assert (clean[breast] == img[breast]).mean() > 0.99
    assert (clean[labels] == 0).all() and info["qc"] == "ok"


def test_small_breast_kept():
    img, breast, labels, fat = synth(rows=1024, cols=832, seed=13)
    y, x = np.mgrid[0:1024, 0:832]
    small = ((y - 512) / 160.0) ** 2 + (x / 140.0) ** 2 < 1.0
    img[breast & ~small] = 0
    clean, info = remove_burned_in(img)
    # (the synthetic fat blobs at background level + 1 now sit on the small breast's edge)
    tissue = small & ~fat
    assert (clean[tissue] == img[tissue]).mean() > 0.99 and info["qc"] == "ok"
    assert info["chest_wall"] == "left"
    assert (clean[labels] == 0).all()


def test_monochrome1_with_pixel_padding_value(tmp_path):
    """A MONOCHROME1 image whose background is Pixel Padding Value (stored 4095, which
    inverts to 0) and whose breast has noisy values: read_dicom + segmentation."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from mammoprep.io.dicom import read_dicom

    img, breast, labels, fat = synth(rows=512, cols=416, side="right", seed=14)
    stored = np.where(breast | labels, 4095 - img, 4095).astype(np.uint16)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientID = "MG", "X"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.PixelPaddingValue = 4095
    ds.PixelData = stored.tobytes()
    path = tmp_path / "m1.dcm"
    ds.save_as(path, enforce_file_format=True)
    rec = read_dicom(path)
    assert rec.meta["inverted"] and (rec.pixels[~(breast | labels)] == 0).all()
    clean, info = remove_burned_in(rec.pixels)
    assert info["chest_wall"] == "right" and info["background_level"] == 0
    assert (clean[breast] == rec.pixels[breast]).mean() > 0.99
    assert (clean[labels] == 0).all()


def test_qc_verdict_rules():
    good = {"bright_removed": 0.02, "far_touch": 0.0, "above": 0.98, "breast_fraction": 0.4}
    assert qc_verdict(good) == ("ok", "")
    for key, value, words in [("bright_removed", 0.9, "bright area removed"),
                              ("far_touch", 0.8, "opposite the chest wall"),
                              ("above", 0.2, "above the background threshold"),
                              ("breast_fraction", 0.005, "covers only"),
                              ("breast_fraction", 0.99, "no background found")]:
        verdict, reason = qc_verdict({**good, key: value})
        assert verdict == "suspect" and words in reason, (key, reason)


def test_suspect_mask_rejected_unless_kept():
    # a bright region that fills the image side to side: the breast touches the side
    # opposite the chest wall along its whole height (a halo / no skin line)
    img, breast, labels, fat = synth(rows=512, cols=416, bg=300, noise=10, seed=9)
    img[:, 200:] = np.maximum(img[:, 200:], 2600)
    with pytest.raises(SegmentationSuspectError, match="opposite the chest wall") as exc:
        remove_text(Record(img, {}, path="x.dcm"))
    assert exc.value.kind == "segmentation_suspect" and "x.dcm" in str(exc.value)
    rec = remove_text(Record(img, {}, path="x.dcm"), keep_suspect=True)
    assert rec.meta["qc"] == "suspect" and "opposite" in rec.meta["qc_reason"]


def test_saturated_text_on_the_breast_is_removed():
    img, breast, labels, fat = synth(rows=512, cols=416, seed=10)
    top = 4095
    text = np.zeros_like(breast)
    text[300:306, 40:140:3] = True       # glyph strokes lying on breast tissue
    text[300:330, 60] = True
    img[text] = top
    clean, info = remove_burned_in(img)
    assert (clean[text] == 0).all() and info["overlay_pixels"] >= text.sum()
    # only the strokes and their 1-pixel rims went
    rim = ndi.binary_dilation(text, structure=np.ones((3, 3), bool))
    assert (clean[breast & ~rim] == img[breast & ~rim]).mean() > 0.999


def test_no_overlay_removal_without_a_spike_at_the_top_level():
    rng = np.random.default_rng(2)
    clean = rng.integers(1000, 4096, (200, 200)).astype(np.uint16)  # smooth top end
    before = clean.copy()
    assert remove_saturated_overlay(clean, [0, 0, 200, 200]) == 0
    np.testing.assert_array_equal(clean, before)


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
@given(mask=mask_st, seed=mask_st)
def test_twin_propagate(mask, seed):
    if seed.shape != mask.shape:
        seed = np.resize(seed, mask.shape)
    np.testing.assert_array_equal(K.propagate(seed, mask), K.propagate_np(seed, mask))


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
    from mammoprep.io.dicom import read_dicom
    from mammoprep.harmonise.match import Reference, harmonize

    rec = orient_left(remove_text(read_dicom(real("fodicom_GH133_GE_SenographeEssential.dcm"))))
    assert rec.meta["flipped"] is True and rec.meta["chest_wall"] == "left"
    assert rec.meta["steps"][-2:] == ["remove_text", "orient_left"]
    assert rec.pixels[:, :50].mean() > 1000 and (rec.pixels[:8, -8:] == 0).all()
    ref = Reference.from_images([rec.pixels], bits=12)
    out = harmonize(rec, ref)
    np.testing.assert_array_equal(out.pixels, rec.pixels)  # own histogram: identity
    assert out.meta["harmonized"] and out.meta["bits_stored"] == 12
