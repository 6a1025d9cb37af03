"""PNG writer, resize kernels and box conventions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from mammoprep import geometry as B
from mammoprep.io.png import decode_png16, encode_png16
from mammoprep.resize import axis_weights, resize_uint16, resize_uint16_np


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2 ** 31))
def test_png16_roundtrip_through_pillow(h, w, seed):
    px = np.random.default_rng(seed).integers(0, 65536, size=(h, w)).astype(np.uint16)
    data = encode_png16(px)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "I;16" and im.size == (w, h)
        assert np.array_equal(np.asarray(im), px)
    assert np.array_equal(decode_png16(data), px)


def test_png16_is_deterministic():
    px = np.arange(600, dtype=np.uint16).reshape(20, 30) * 100
    assert encode_png16(px) == encode_png16(px.copy())


def test_resize_block_mean_by_hand():
    px = np.arange(16, dtype=np.uint16).reshape(4, 4)
    # 2x2 blocks: means 2.5, 4.5, 10.5, 12.5 -> round half up
    assert resize_uint16(px, 2, 2).tolist() == [[3, 5], [11, 13]]


def test_resize_weights_sum_to_one_and_cover_source():
    for n_in, n_out in [(10, 3), (4096, 1024), (7, 7), (3, 8)]:
        first, w = axis_weights(n_in, n_out)
        assert np.allclose(w.sum(1), 1.0, atol=1e-6)
        assert first.min() >= 0 and first.max() < n_in


@pytest.mark.parametrize("shape,out", [((64, 48), (16, 12)), ((50, 37), (23, 17)),
                                       ((10, 8), (25, 20)), ((9, 9), (9, 9))])
def test_resize_numba_equals_numpy_twin(shape, out):
    px = np.random.default_rng(1).integers(0, 16384, size=shape).astype(np.uint16)
    assert np.array_equal(resize_uint16(px, *out), resize_uint16_np(px, *out))


def test_resize_keeps_zero_background_and_range():
    px = np.zeros((64, 64), np.uint16)
    px[:, :32] = 4000
    out = resize_uint16(px, 16, 16)
    assert out[:, 9:].max() == 0 and out[:, :8].min() == 4000 and out.max() <= 4000


def test_transform_maps_boxes_crop_scale_flip():
    t = B.Transform(crop_xyxy=(10, 20, 110, 220), scale=0.5, flipped=False,
                    original_size=(300, 200), stored_size=(100, 50))
    assert t.apply([[30, 40, 50, 60]]).tolist() == [[10, 10, 20, 20]]
    tf = B.Transform(crop_xyxy=(10, 20, 110, 220), scale=0.5, flipped=True,
                     original_size=(300, 200), stored_size=(100, 50))
    assert tf.apply([[30, 40, 50, 60]]).tolist() == [[30, 10, 40, 20]]
    assert B.Transform.from_dict(t.to_dict()) == t


def test_box_helpers_roundtrip():
    b = np.array([[10.0, 20.0, 30.0, 60.0]])
    assert np.allclose(B.hflip(B.hflip(b, 100), 100), b)
    c = B.xyxy_to_cxcywh(b, 100, 200)
    assert np.allclose(c, [[0.2, 0.2, 0.2, 0.2]])
    assert np.allclose(B.cxcywh_to_xyxy(c, 100, 200), b)
    assert np.allclose(B.scale(b, 2, 0.5, 1, 1), [[21, 11, 61, 31]])


def test_box_iou_and_area_by_hand():
    from mammoprep.geometry import box_area, box_iou

    a = [[0, 0, 10, 10], [5, 5, 15, 25]]
    b = [[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]]
    assert box_area(a).tolist() == [100.0, 200.0]
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    assert iou[0].tolist() == [50 / 150, 0.0, 1.0]
    # a[1] and b[0] share x 5..15 and y 5..10 (50); a[1] and b[2] x 5..10, y 5..10 (25)
    assert iou[1].tolist() == [50 / (200 + 100 - 50), 0.0, 25 / (200 + 100 - 25)]
    assert box_iou([[3, 3, 3, 9]], [[3, 3, 3, 9]]).tolist() == [[0.0]]  # empty union
