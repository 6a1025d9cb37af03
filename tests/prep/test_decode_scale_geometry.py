"""The stored geometry does not depend on the decode scale (issue 25, item 2).

``shard --decode-scale auto`` (reduced-resolution JPEG 2000 decoding) and ``full`` must
store the same size and the same original -> stored transform (crop box, scale, flip) for
every JPEG 2000 image, odd sizes included; their pixels differ only by the reduced
decode's low-pass (mean absolute difference under 1 % of the value range)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ..conftest import real
from .test_j2k_reduce import _breast, _j2k_file

MAMMO_REAL = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "mammo_real"
GE_2294 = "DXm_2_25_102225650577760012443884776983328874638.DCM"  # 2294x1914, 12 bits


def _stored(path, decode_scale, size, orient=False, crop=True):
    from mammoprep.pipeline import PrepConfig, Prepared, crop_and_resize, preprocess

    prep = Prepared(PrepConfig(size=size, decode_scale=decode_scale, orient_left=orient,
                               crop=crop))
    rec = preprocess(path, prep, salt=b"t")
    return crop_and_resize(rec, size, crop)


def _assert_same_geometry(path, size, bits, orient=False, crop=True):
    """auto and full: same stored shape and transform (and stored pixel spacing); pixels
    within 1 % of ``2**bits - 1`` on the common foreground. Returns auto's level."""
    from mammoprep.pipeline import stored_pixel_spacing

    a, ta = _stored(path, "auto", size, orient, crop)
    b, tb = _stored(path, "full", size, orient, crop)
    assert b.meta["decode_reduction"] == 0
    assert a.pixels.shape == b.pixels.shape == ta.stored_size
    assert ta == tb, (ta, tb)
    assert stored_pixel_spacing(a.meta, ta) == stored_pixel_spacing(b.meta, tb)
    fa, fb = a.pixels.astype(np.float64), b.pixels.astype(np.float64)
    both = (fa > 0) & (fb > 0)
    assert both.sum() > 0.2 * both.size
    mad = np.abs(fa - fb)[both].mean() / ((1 << bits) - 1)
    assert mad < 0.01, mad
    return int(a.meta["decode_reduction"])


def test_same_geometry_on_synthetic_j2k_flipped(tmp_path):
    px = _breast(2048, 1664, (700, 900, 860, 1020), right=True)
    path = _j2k_file(tmp_path, px, laterality="R")
    assert _assert_same_geometry(path, 512, 14, orient=True) >= 1


def _tall_breast(rows, cols, lesion_xyxy, bits=14):
    """uint16 [rows, cols]: a smooth breast reaching the top and bottom rows (so the crop
    ends at the image's last row), chest wall at column 0, exact-zero background, and a
    bright lesion at ``lesion_xyxy``. Cheap to make and to encode at full-field size."""
    top = (1 << bits) - 1
    y = ((np.arange(rows, dtype=np.float32) - rows / 2) / (rows * 0.52))[:, None]
    x = (np.arange(cols, dtype=np.float32) / (cols * 0.8))[None, :]
    r2 = y * y + x * x
    img = np.where(r2 < 1, top * (0.3 + 0.3 * np.sqrt(np.clip(1 - r2, 0, 1)))
                   + 40 * np.sin(y * 50) * np.cos(x * 70), 0)
    x0, y0, x1, y1 = lesion_xyxy
    img[y0:y1, x0:x1] = top * 0.95
    return np.clip(img, 0, top).astype(np.uint16)


def test_same_geometry_on_odd_size_4095x3327(tmp_path):
    # odd on both axes: every reduced level has a last pixel half outside the image, and
    # the crop ends at the last row
    path = _j2k_file(tmp_path, _tall_breast(4095, 3327, (1400, 1800, 1700, 2050)))
    assert _assert_same_geometry(path, 1024, 14) == 1
    _, t = _stored(path, "full", 1024)
    assert t.crop_xyxy[1] == 0 and t.crop_xyxy[3] == 4095


def test_same_geometry_on_odd_size_without_crop(tmp_path):
    px = _breast(1023, 1537, (300, 400, 360, 460), right=True, seed=2)
    path = _j2k_file(tmp_path, px, laterality="R")
    assert _assert_same_geometry(path, 256, 14, orient=True, crop=False) >= 1


def test_same_geometry_on_real_ge_2294x1914(tmp_path):
    """A real 12-bit GE image transcoded to JPEG 2000 lossless: 2294 / 4 = 573.5, so the
    geometry decode (level 2) is fractional at the lower edge."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    src = MAMMO_REAL / GE_2294
    if not src.exists():
        pytest.skip(f"real test data not found: {src}")
    ds = pydicom.dcmread(src)
    ds.decompress()
    ds.compress(JPEG2000Lossless)
    path = tmp_path / "ge.dcm"
    ds.save_as(path)
    assert (ds.Rows, ds.Columns) == (2294, 1914)
    assert _assert_same_geometry(path, 512, 12) == 1


def test_same_geometry_on_real_lossy_j2k():
    """NEMA WG04 (4664x3064, 12 bits, irreversible wavelet)."""
    assert _assert_same_geometry(real("wg04_MG1_J2KI.dcm"), 1024, 12) == 1


def test_reduced_window_resampling_matches_full_resolution():
    """The resampling of a reduced decode onto the full grid, on an exact 2x2 block mean
    with odd sizes and a fractional window: close to resizing the full image itself."""
    from mammoprep.resize import resize_uint16, resize_window_uint16

    rng = np.random.default_rng(5)
    rows, cols = 1001, 777
    y, x = np.mgrid[0:rows, 0:cols]
    full = (2000 + 1500 * np.sin(y / 40.0) * np.cos(x / 55.0)
            + rng.normal(0, 5, (rows, cols))).astype(np.uint16)
    padded = np.pad(full.astype(np.float64), ((0, 1), (0, 1)), mode="edge")
    reduced = padded.reshape(501, 2, 389, 2).mean((1, 3)).round().astype(np.uint16)
    y0, x0, y1, x1 = 37, 61, rows, cols  # ends of the image: half a reduced pixel
    want = resize_uint16(full[y0:y1, x0:x1], 300, 230)
    got = resize_window_uint16(reduced, (y0 / 2, y1 / 2), (x0 / 2, x1 / 2), 300, 230)
    assert got.shape == want.shape
    assert np.abs(got.astype(float) - want).mean() < 3  # of 3000: the 2x2 low-pass


def test_window_weights_integer_ends_are_the_plain_weights():
    from mammoprep.resize import axis_weights, window_weights

    for n_in, n_out in ((100, 37), (37, 100), (64, 64)):
        f0, w0 = axis_weights(n_in, n_out)
        f1, w1 = window_weights(5, 5 + n_in, n_out, 200)
        assert np.array_equal(f1, f0 + 5) and np.array_equal(w1, w0)
    first, w = window_weights(0.5, 10.25, 3, 11)  # fractional: each output 3.25 pixels
    assert np.allclose(w.sum(1), 1)
    assert first.tolist() == [0, 3, 7]
    assert w[0].tolist()[:5] == pytest.approx([0.5 / 3.25, 1 / 3.25, 1 / 3.25, 0.75 / 3.25, 0])
    with pytest.raises(ValueError, match="inside"):
        window_weights(-1, 5, 3, 10)
