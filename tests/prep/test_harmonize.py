"""Foreground CDF matching (Eq. 7): hand-computed tables, properties, Numba == NumPy twins,
reference files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mammoprep import kernels as K
from mammoprep.errors import MammoprepError, ReferenceError_
from mammoprep.harmonise.match import (Reference, apply_lut, carried_histogram, harmonize,
                                       harmonize_pixels, match_lut)
from mammoprep.histogram import PixelRangeError, foreground_histogram
from mammoprep.record import Record

SETTINGS = settings(max_examples=60, deadline=None)


def ref_from_hist(hist, bits):
    return Reference.from_histograms([np.asarray(hist, np.int64)], bits=bits)


# ------------------------------------------------------------------ hand-computed tables

def test_table_distinct_levels():
    # reference (2 bits): H_r = [0, 1, 1, 2] -> C_r = [0, .25, .5, 1]
    # source pixels [[0, 5], [5, 7]]: H_s[5] = 2, H_s[7] = 1 -> C_s(1..4) = 0,
    # C_s(5..6) = 2/3, C_s(7) = 1
    # C_s = 0   -> |0-.25| = .25 < .5 < 1            -> q = 1
    # C_s = 2/3 -> .417, .167, .333                   -> q = 2
    # C_s = 1   -> .75, .5, 0                          -> q = 3
    ref = ref_from_hist([0, 1, 1, 2], bits=2)
    src = np.array([[0, 5], [5, 7]], np.uint16)
    lut = match_lut(foreground_histogram(src, 3), ref.cdf)
    assert lut.tolist() == [0, 1, 1, 1, 1, 2, 2, 3]
    assert harmonize_pixels(src, ref, bits=3).tolist() == [[0, 2], [2, 3]]


def test_table_ties_take_smallest_level():
    # reference H_r = [0, 1, 2, 1] -> C_r = [0, .25, .75, 1]
    # source H_s = [0, 1, 1] -> C_s = [0, .5, 1]
    # p = 1: |.5-.25| = |.5-.75| = .25 (tie)          -> q = 1 (smallest)
    # p = 2: C_s = 1                                   -> q = 3
    assert match_lut(np.array([0, 1, 1]), ref_from_hist([0, 1, 2, 1], 2).cdf).tolist() \
        == [0, 1, 3]
    # plateau: H_r = [0, 1, 0, 1] -> C_r = [0, .5, .5, 1]; H_s = [0, 1, 1, 2]
    # p = 1: C_s = .25: q=1 and q=2 both .25 away     -> 1
    # p = 2: C_s = .5 : q=1 and q=2 both exact         -> 1
    # p = 3: C_s = 1                                    -> 3
    assert match_lut(np.array([0, 1, 1, 2]), ref_from_hist([0, 1, 0, 1], 2).cdf).tolist() \
        == [0, 1, 1, 3]


def test_table_reference_with_empty_low_levels():
    # reference (4 bits) only at 10, 11, 12: H_r[10..12] = 1, 2, 1
    # C_r(1..9) = 0, C_r(10) = .25, C_r(11) = .75, C_r(12..15) = 1
    # source levels 1..4 once each: C_s = .25, .5, .75, 1
    # .25 -> 10; .5 -> tie 10/11 -> 10; .75 -> 11; 1 -> 12 (first level with C_r = 1)
    h = np.zeros(16, np.int64)
    h[10:13] = [1, 2, 1]
    assert match_lut(np.array([0, 1, 1, 1, 1]), ref_from_hist(h, 4).cdf).tolist() \
        == [0, 10, 10, 11, 12]


def test_table_single_level_source():
    # one foreground level (100): C_s(p < 100) = 0 -> q = 1 (C_r(1) is the smallest
    # value, ties -> smallest q); C_s(100) = 1 -> first q with C_r(q) = 1 (here 7)
    h = np.zeros(8, np.int64)
    h[[3, 5, 7]] = [2, 1, 1]
    src = np.full((3, 3), 100, np.uint16)
    src[0, 0] = 0
    out = harmonize_pixels(src, ref_from_hist(h, 3))
    assert out[0, 0] == 0 and (out.ravel()[1:] == 7).all()


# ------------------------------------------------------------------ properties

hist_st = hnp.arrays(np.int64, st.integers(2, 300), elements=st.integers(0, 5))


@SETTINGS
@given(src=hist_st, ref=hist_st)
def test_lut_is_monotone_and_in_range(src, ref):
    src[1] += 1  # at least one foreground pixel
    ref[0] = 0
    ref[-1] += 1
    lut = match_lut(src, _cdf_of(ref))
    assert lut[0] == 0 and len(lut) == len(src)
    assert (np.diff(lut[1:].astype(np.int64)) >= 0).all()
    assert lut[1:].min() >= 1 and lut.max() <= len(ref) - 1


def _cdf_of(hist):
    c = np.cumsum(hist)
    return c / c[-1]


image_st = hnp.arrays(np.uint16, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1,
                                                  max_side=40),
                      elements=st.one_of(st.just(0), st.integers(0, 4095)))


@SETTINGS
@given(img=image_st, seed=st.integers(0, 2 ** 16))
def test_background_is_never_changed(img, seed):
    if not img.any():
        img[0, 0] = 1
    ref_hist = np.random.default_rng(seed).integers(0, 4, 4096)
    ref_hist[0], ref_hist[-1] = 0, 1
    out = harmonize_pixels(img, ref_from_hist(ref_hist, 12))
    assert ((out == 0) == (img == 0)).all()  # background exactly 0, foreground >= 1
    assert out.max() <= 4095


@SETTINGS
@given(img=image_st)
def test_matching_to_own_histogram_is_identity(img):
    if not img.any():
        img[0, 0] = 7
    ref = ref_from_hist(foreground_histogram(img, 12), 12)
    np.testing.assert_array_equal(harmonize_pixels(img, ref), img)


def test_identity_16bit_narrow_range_keeps_every_level():
    # an archive that declares 16 bits but uses ~1,700 levels (1504..3204)
    rng = np.random.default_rng(1)
    img = rng.integers(1504, 3205, size=(256, 200)).astype(np.uint16)
    img[:, :40] = 0
    img[0, 40:] = np.arange(1504, 1664)  # make sure both ends of the range occur
    img[1, 40:] = np.arange(3045, 3205)
    ref = Reference.from_images([img], bits=16)
    out = harmonize_pixels(img, ref)
    np.testing.assert_array_equal(out, img)
    assert len(np.unique(out[out > 0])) == len(np.unique(img[img > 0])) == 1701


def _check_cdf_within_one_bin(out: np.ndarray, ref: Reference) -> None:
    """The property asserted: for every level q present in the output, with
    C_o(q) = fraction of output foreground pixels <= q,

        C_r(q - 1) < C_o(q)            (for q >= 2)
        C_o(q) <= C_r(q+)              (q+ = the next level above q where C_r rises;
                                        q+ = q + 1 when the reference has no empty bins)

    i.e. the output CDF at each of its levels lies between the reference CDF one bin
    below and one (non-empty) bin above: no output level is off by more than one
    reference bin."""
    h = foreground_histogram(out, ref.bits)
    co = np.cumsum(h) / h.sum()
    cr = ref.cdf
    occupied = np.flatnonzero(h)
    assert occupied.min() >= 1 and occupied.max() < len(cr)
    q = occupied[occupied >= 2]
    assert (cr[q - 1] < co[q]).all()
    rises = np.flatnonzero(np.diff(cr) > 0) + 1  # levels k with C_r(k) > C_r(k - 1)
    k = np.searchsorted(rises, occupied, side="right")
    has_next = k < len(rises)
    qp = rises[k[has_next]]
    assert (co[occupied[has_next]] <= cr[qp]).all()


@SETTINGS
@given(img=image_st, seed=st.integers(0, 2 ** 16), sparse=st.booleans())
def test_output_cdf_within_one_bin_of_reference(img, seed, sparse):
    if not img.any():
        img[0, 0] = 3
    rng = np.random.default_rng(seed)
    ref_hist = rng.integers(0, 50, 1024) * (rng.random(1024) < (0.2 if sparse else 1.0))
    ref_hist[0], ref_hist[700] = 0, 1
    ref = ref_from_hist(ref_hist, 10)
    _check_cdf_within_one_bin(harmonize_pixels(img, ref), ref)


def test_output_cdf_follows_a_dense_reference():
    # With a reference that has no empty bin in 1..2^b-1 the one-bin property also bounds
    # the vertical gap: sup_v |C_o(v) - C_r(v)| <= max(largest source level mass,
    # largest reference bin mass).
    rng = np.random.default_rng(2)
    img = np.clip(rng.normal(9000, 2000, (400, 300)), 0, 16383).astype(np.uint16)
    levels = np.arange(4096)
    ref_hist = 1 + rng.poisson(400 * np.exp(-((levels - 1200) / 600.0) ** 2))
    ref_hist[0] = 0
    ref = ref_from_hist(ref_hist, 12)
    out = harmonize_pixels(img, ref)
    _check_cdf_within_one_bin(out, ref)
    co = np.cumsum(foreground_histogram(out, 12)) / np.count_nonzero(out)
    src_h = foreground_histogram(img, 14)
    bound = max(src_h.max() / src_h.sum(), ref.hist.max() / ref.hist.sum())
    assert np.abs(co - ref.cdf).max() <= bound + 1e-12


# ------------------------------------------------------------------ errors and API

def test_values_above_bits_raise_never_truncate():
    img = np.array([[0, 4095], [4096, 9]], np.uint16)
    with pytest.raises(PixelRangeError, match="1 pixels have values above 4095"):
        foreground_histogram(img, 12)
    ref = ref_from_hist([0, 1, 1, 1], 2)
    with pytest.raises(PixelRangeError):
        harmonize_pixels(img, ref, bits=12)
    assert harmonize_pixels(img, ref).shape == img.shape  # bits=None: any uint16
    with pytest.raises(PixelRangeError):
        apply_lut(img, np.arange(4096, dtype=np.uint16) % 7)


def test_foreground_histogram_excludes_background():
    img = np.array([[0, 0, 3], [3, 1, 0]], np.uint16)
    h = foreground_histogram(img, 2)
    assert h.dtype == np.int64 and h.tolist() == [0, 1, 0, 2]


def test_empty_foreground_raises():
    with pytest.raises(MammoprepError, match="without foreground"):
        harmonize_pixels(np.zeros((4, 4), np.uint16), ref_from_hist([0, 1, 1, 1], 2))


def test_record_step():
    img = np.array([[0, 10], [20, 30]], np.uint16)
    ref = ref_from_hist([0, 1, 1, 1], 2)
    rec = Record(img, {"bits_stored": 14, "steps": ["read"]}, path="x.dcm")
    out = harmonize(rec, ref)
    assert out.meta["harmonized"] is True and out.meta["reference_bits"] == 2
    assert out.meta["bits_stored"] == 2 and out.meta["steps"] == ["read", "harmonize"]
    assert out.pixels.tolist() == [[0, 1], [2, 3]]
    assert rec.pixels.tolist() == [[0, 10], [20, 30]] and "harmonized" not in rec.meta
    with pytest.raises(MammoprepError, match="x.dcm"):
        harmonize(rec.evolve(np.zeros((2, 2), np.uint16)), ref)


def test_record_step_after_text_removal_matches_the_breast_box_only():
    """After text removal only the breast box is matched: same pixels as the whole image."""
    from mammoprep.segmentation.foreground import remove_text
    from mammoprep.synth import image_spec, plan_cohort, render_image

    spec = image_spec(plan_cohort(2, seed=5, size=(256, 208))[0], "L", "CC")
    rec = Record(render_image(spec).pixels, {"bits_stored": 16, "steps": ["read"]},
                 path="s.dcm")
    clean = remove_text(rec)
    y0, x0, y1, x1 = clean.meta["breast_bbox"]
    assert (y1 - y0) * (x1 - x0) < clean.pixels.size        # the box is smaller than the image
    ref = ref_from_hist(np.r_[0, np.ones(4095, np.int64)], 12)
    whole = harmonize_pixels(clean.pixels, ref)
    junk = np.full(clean.pixels.shape, 65535, np.uint16)  # freed: the next array of this
    del junk                                               # size likely reuses its memory
    np.testing.assert_array_equal(harmonize(clean, ref).pixels, whole)


def test_apply_lut_into_a_view():
    img = np.arange(24, dtype=np.uint16).reshape(4, 6)
    lut = (np.arange(65536) * 2 % 65536).astype(np.uint16)
    big = np.zeros((6, 8), np.uint16)
    K.apply_lut(img[1:3, 2:5], lut, out=big[2:4, 1:4])
    assert big[2:4, 1:4].tolist() == (img[1:3, 2:5] * 2).tolist() and big.sum() == \
        (img[1:3, 2:5] * 2).sum()
    with pytest.raises(ValueError, match="out must be uint16"):
        K.apply_lut(img, lut, out=np.zeros((4, 6), np.int32))


# ------------------------------------------------------------------ reference files

def test_reference_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 4096, (30, 20)).astype(np.uint16) for _ in range(3)]
    ref = Reference.from_images(imgs, bits=12)
    assert ref.count == 3 and len(ref.image_hashes) == 3 and ref.hist[0] == 0
    assert ref.hist.sum() == sum(np.count_nonzero(i) for i in imgs)
    path = ref.save(tmp_path / "ref.npz")
    back = Reference.load(path)
    assert back.bits == 12 and back.count == 3 and back.image_hashes == ref.image_hashes
    np.testing.assert_array_equal(back.hist, ref.hist)
    np.testing.assert_array_equal(back.cdf, ref.cdf)
    assert back.digest == ref.digest
    assert ref.cdf[0] == 0 and ref.cdf[-1] == 1 and not ref.hist.flags.writeable


def _write_npz(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _good(**over):
    h = np.zeros(16, np.int64)
    h[5] = 3
    d = dict(format=np.int64(1), hist=h, bits=np.int64(4),
             image_hashes=np.array(["a", "b"]), count=np.int64(2))
    d.update(over)
    return d


@pytest.mark.parametrize("over,msg", [
    ({"bits": np.int64(5)}, "does not match bits=5"),
    ({"hist": np.zeros((4, 4), np.int64)}, "histogram shape"),
    ({"hist": np.zeros(16, np.int64)}, "empty"),
    ({"hist": np.full(16, 0.5)}, "integers"),
    ({"count": np.int64(3)}, "count 3"),
    ({"format": np.int64(99)}, "unsupported reference format"),
    ({"bits": np.int64(40)}, "bits must be"),
])
def test_reference_load_rejects_bad_content(tmp_path, over, msg):
    path = _write_npz(tmp_path / "bad.npz", **_good(**over))
    with pytest.raises(ReferenceError_, match=msg) as info:
        Reference.load(path)
    assert str(path) in str(info.value)


def test_reference_load_rejects_bad_files(tmp_path):
    d = _good()
    del d["count"]
    with pytest.raises(ReferenceError_, match="missing key.*count"):
        Reference.load(_write_npz(tmp_path / "m.npz", **d))
    (tmp_path / "t.npz").write_text("not a zip")
    with pytest.raises(ReferenceError_, match="cannot read"):
        Reference.load(tmp_path / "t.npz")
    with pytest.raises(ReferenceError_, match="not found"):
        Reference.load(tmp_path / "none.npz")
    obj = _good(image_hashes=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ReferenceError_, match=str(tmp_path / "o.npz")):
        Reference.load(_write_npz(tmp_path / "o.npz", **obj))


def test_reference_from_histograms_validation():
    with pytest.raises(ReferenceError_, match="level 20 above 2\\^4 - 1"):
        Reference.from_histograms([np.r_[np.zeros(20, int), 1]], bits=4)
    longer = np.zeros(64, np.int64)
    longer[3] = 2
    assert Reference.from_histograms([longer], bits=4).hist.shape == (16,)
    with pytest.raises(ReferenceError_, match="2 image hashes for 1"):
        Reference.from_histograms([longer], bits=4, image_hashes=["a", "b"])
    with pytest.raises(ReferenceError_, match="bin 0"):
        Reference(np.r_[1, np.ones(15, np.int64)], bits=4)


# ------------------------------------------------------------------ Numba == NumPy twins

@SETTINGS
@given(img=hnp.arrays(np.uint16, hnp.array_shapes(min_dims=2, max_dims=2, max_side=50)),
       nbins=st.sampled_from([1, 7, 256, 4096, 65536]), skip=st.booleans(),
       nchunks=st.integers(1, 5))
def test_twin_histogram(img, nbins, skip, nchunks):
    np.testing.assert_array_equal(K.histogram_u16(img, nbins, skip, nchunks),
                                  K.histogram_u16_np(img, nbins, skip))


def test_twin_histogram_strided_view():
    img = np.random.default_rng(4).integers(0, 5000, (97, 61)).astype(np.uint16)
    view = img[3::4, 1::3]
    np.testing.assert_array_equal(K.histogram_u16(view, 4096, False, 2),
                                  K.histogram_u16_np(view, 4096, False))


@SETTINGS
@given(src=hist_st, ref=hist_st)
def test_twin_match_sweep(src, ref):
    src[0], ref[0] = 0, 0
    src[-1] += 1
    ref[-1] += 1
    sc, rc = _cdf_of(src), _cdf_of(ref)
    np.testing.assert_array_equal(K.match_sweep(sc, rc), K.match_sweep_np(sc, rc))


def test_twin_match_sweep_random_floats():
    rng = np.random.default_rng(5)
    for _ in range(20):
        s = np.sort(rng.random(rng.integers(2, 3000)))
        r = np.sort(rng.random(rng.integers(2, 3000)))
        s[0] = r[0] = 0
        np.testing.assert_array_equal(K.match_sweep(s, r), K.match_sweep_np(s, r))


@SETTINGS
@given(img=hnp.arrays(np.uint16, hnp.array_shapes(min_dims=2, max_dims=2, max_side=50)),
       seed=st.integers(0, 1000))
def test_twin_apply_lut(img, seed):
    lut = np.random.default_rng(seed).integers(0, 65536, 65536).astype(np.uint16)
    np.testing.assert_array_equal(K.apply_lut(img, lut), K.apply_lut_np(img, lut))


# ------------------------------------------------------------------ histogram carried by the LUT

REAL_MAMMO = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "mammo_real"


def _real_clean_records(n: int) -> list[Record]:
    """Text-free records of the first ``n`` real FFDM files (skips without ../shared)."""
    from mammoprep.io.dicom import read_dicom
    from mammoprep.segmentation.foreground import remove_text

    files = sorted(REAL_MAMMO.glob("DXm_*.DCM"))[:n]
    if not files:
        pytest.skip(f"real test data not found: {REAL_MAMMO}")
    return [remove_text(read_dicom(f), keep_suspect=True) for f in files]


def test_harmonized_record_carries_the_histogram_of_its_pixels():
    """The histogram the harmonise step carries through its LUT is the one a count of the
    output pixels gives (np.bincount, independent of the Numba kernel), on real images and
    on a record without text removal (the whole-image path)."""
    recs = _real_clean_records(3)
    ref = Reference.from_histograms([np.bincount(r.pixels.ravel(), minlength=4096)[:4096]
                                     for r in recs[1:]], bits=12)
    plain = Record(np.where(recs[0].pixels > 0, recs[0].pixels, 0).astype(np.uint16),
                   {"steps": ["read"]})
    for rec in [*recs, plain]:
        assert rec.histogram is None  # text removal does not claim one
        out = harmonize(rec, ref)
        counted = np.bincount(out.pixels.ravel(), minlength=1 << ref.bits)
        counted[0] = 0
        assert out.histogram.shape == (1 << ref.bits,) and out.histogram.dtype == np.int64
        np.testing.assert_array_equal(out.histogram, counted)
        assert out.histogram.sum() == np.count_nonzero(rec.pixels) > 0


def test_harmonize_in_place_matches_the_box_where_it_lies():
    """``in_place`` (the pipeline's own text-free copy) gives the same pixels and histogram
    as a new image, written into the record's own array, also through a flipped view (as
    `--orient-left` leaves it); a read-only array is never written."""
    recs = _real_clean_records(2)
    ref = Reference.from_histograms([np.bincount(recs[1].pixels.ravel(),
                                                 minlength=4096)[:4096]], bits=12)
    rec = recs[0]
    new = harmonize(rec, ref)
    assert not np.shares_memory(new.pixels, rec.pixels)
    flipped_view = np.ascontiguousarray(rec.pixels[:, ::-1])[:, ::-1]
    for own in (rec.pixels.copy(), flipped_view):
        got = harmonize(rec.evolve(own), ref, in_place=True)
        assert got.pixels is own and got.meta["harmonized"]
        np.testing.assert_array_equal(own, new.pixels)
        np.testing.assert_array_equal(got.histogram, new.histogram)
    frozen = rec.pixels.copy()
    frozen.flags.writeable = False
    out = harmonize(rec.evolve(frozen), ref, in_place=True)
    np.testing.assert_array_equal(frozen, rec.pixels)
    np.testing.assert_array_equal(out.pixels, new.pixels)


def test_carried_histogram_by_hand():
    hist = np.array([9, 2, 0, 5, 1], np.int64)           # 9 background pixels: ignored
    lut = np.array([0, 3, 7, 3, 1], np.uint16)           # levels 1 and 3 meet at 3
    assert carried_histogram(hist, lut, 8).tolist() == [0, 1, 0, 7, 0, 0, 0, 0]


def test_histogram_follows_the_pixels_through_record_steps():
    from mammoprep.segmentation.foreground import orient_left

    px = np.array([[0, 5, 5], [0, 7, 0]], np.uint16)
    hist = np.array([0, 0, 0, 0, 0, 2, 0, 1], np.int64)
    rec = Record(px, {"chest_wall": "right"}, histogram=hist)
    assert rec.evolve(energy="low").histogram is hist           # pixels unchanged: kept
    assert rec.evolve(px.copy(), step="x").histogram is None     # new pixels: dropped
    assert rec.evolve(px.copy(), histogram=hist).histogram is hist
    flipped = orient_left(rec)                                   # a flip keeps every value
    assert flipped.meta["flipped"] and flipped.histogram is hist
    assert flipped.pixels.tolist() == [[5, 5, 0], [0, 7, 0]]


def test_derived_dicom_window_from_the_carried_histogram(tmp_path):
    """A derived DICOM written from a harmonised record (window and Bits Stored from the
    histogram carried through the LUT) is byte-identical to one written from the same
    pixels without it (counted again), and its window is the 0.5-99.5 % range of the
    non-zero pixels, found here by sorting them."""
    import math

    import pydicom

    from mammoprep.io.derived import write_derived_dicom

    recs = _real_clean_records(2)
    ref = Reference.from_histograms([np.bincount(recs[1].pixels.ravel(),
                                                 minlength=4096)[:4096]], bits=12)
    out = harmonize(recs[0], ref)
    bare = Record(out.pixels, out.meta, out.path)
    assert out.histogram is not None and bare.histogram is None
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    for rec, dest in ((out, a), (bare, b)):
        write_derived_dicom(recs[0].path, rec, dest, "test", salt=b"s" * 16)
    assert a.read_bytes() == b.read_bytes()
    ds = pydicom.dcmread(a)
    v = np.sort(out.pixels[out.pixels > 0], kind="stable")
    lo, hi = int(v[math.ceil(0.005 * v.size) - 1]), int(v[math.ceil(0.995 * v.size) - 1])
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == ((lo + hi) / 2, hi - lo)
    assert ds.BitsStored == max(12, int(v[-1]).bit_length())
    np.testing.assert_array_equal(ds.pixel_array, out.pixels)
