"""mammotrain.augment and non-square inputs: boxes follow the image through torchvision v2,
both views of a breast share flips and intensity, 'none' is the identity, the 'flip' preset
draws like the trainer did before presets; ROWSxCOLS inputs keep the aspect ratio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammotrain.augment import (PRESETS, Augment, ViewParams, apply_view, build_augment,
                                intensity_jitter)
from mammotrain.data import plan_examples, read_manifest
from mammotrain.preprocess import Preprocess, letterbox, parse_size
from mammotrain.stream import EpochLoader, ShardStream
from mammotrain.tasks import get_task



def _square_image(h=64, w=48, box=(10, 20, 22, 30)):
    """A zero image with a bright rectangle exactly covering ``box`` (xyxy, pixel edges)."""
    img = torch.zeros(1, h, w)
    x0, y0, x1, y1 = box
    img[0, y0:y1, x0:x1] = 0.8
    return img, np.array([box], np.float32)


def _bright_bbox(img, thr=0.4):
    ys, xs = np.nonzero(img[0].numpy() > thr)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("p", [
    ViewParams(hflip=True),
    ViewParams(vflip=True),
    ViewParams(hflip=True, vflip=True, angle=4.0, zoom=1.1, shift=(0.05, -0.04)),
    ViewParams(angle=-5.0, zoom=0.9, shift=(-0.05, 0.05), gamma=1.1, contrast=0.9,
               brightness=1.1),
])
def test_box_stays_on_the_drawn_square(p):
    img, box = _square_image()
    out, b = apply_view(img, box, p)
    assert out.shape == img.shape and b.shape == (1, 4)
    # the moved box is the enclosing box of the moved square (bilinear edges: 1 px)
    np.testing.assert_allclose(b[0], _bright_bbox(out), atol=1.25)
    # and it holds (nearly) all of the square's mass, which is not where it was
    x0, y0, x1, y1 = np.round(b[0]).astype(int)
    inside = out[0, y0:y1, x0:x1].sum() / out.sum()
    assert inside > 0.97


def test_random_draws_keep_boxes_on_the_square():
    rng = np.random.default_rng(3)
    aug = build_augment("full", rotate=8.0)
    for _ in range(10):
        img, box = _square_image()
        (p,) = aug.sample(rng, 1)
        out, b = apply_view(img, box, p)
        np.testing.assert_allclose(b[0], _bright_bbox(out, 0.8 * 0.45), atol=1.5)


def test_none_is_the_identity_and_draws_nothing():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    params = build_augment("none").sample(rng, 2)
    assert rng.bit_generator.state == state and params == [ViewParams(), ViewParams()]
    img, box = _square_image()
    out, b = apply_view(img, box, params[0])
    assert torch.equal(out, img) and np.array_equal(b, box)


def test_flip_preset_draws_exactly_like_the_old_coin():
    """One ``rng.random() < 0.5`` per example, as before presets: old runs reproduce."""
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    got = [build_augment("flip").sample(a, 2) for _ in range(50)]
    want = [bool(b.random() < 0.5) for _ in range(50)]
    assert [g[0].hflip for g in got] == want and [g[1].hflip for g in got] == want
    assert a.random() == b.random()  # same number of draws


def test_views_share_flips_and_intensity_but_not_the_affine():
    rng = np.random.default_rng(1)
    aug = build_augment("full")
    draws = [aug.sample(rng, 2) for _ in range(40)]
    for cc, mlo in draws:
        assert (cc.hflip, cc.vflip) == (mlo.hflip, mlo.vflip)
        assert (cc.gamma, cc.contrast, cc.brightness) == (mlo.gamma, mlo.contrast,
                                                          mlo.brightness)
    assert all(cc.angle != mlo.angle and cc.shift != mlo.shift for cc, mlo in draws)
    assert {cc.hflip for cc, _ in draws} == {True, False}
    assert all(abs(p.angle) <= 5 and 0.9 <= p.zoom <= 1.1 for d in draws for p in d)


def test_intensity_hand_computed_and_background_stays_zero():
    x = torch.tensor([[0.0, 0.2, 0.4, 0.0]])
    np.testing.assert_allclose(intensity_jitter(x, gamma=2.0), [[0, 0.04, 0.16, 0]], atol=1e-7)
    # contrast about the foreground mean 0.3, not the image mean 0.15
    np.testing.assert_allclose(intensity_jitter(x, contrast=2.0), [[0, 0.1, 0.5, 0]], atol=1e-7)
    np.testing.assert_allclose(intensity_jitter(x, brightness=3.0), [[0, 0.6, 1.0, 0]],
                               atol=1e-7)


def test_bad_magnitudes_name_the_knob():
    with pytest.raises(ValueError, match="hflip is a probability"):
        Augment(hflip=1.5)
    with pytest.raises(ValueError, match="scale must be < 1"):
        build_augment("full", scale=1.0)
    with pytest.raises(ValueError, match="augment must be one of none, flip, full"):
        build_augment("heavy")
    assert set(PRESETS) == {"none", "flip", "full"}


def test_stream_flips_both_views_of_a_breast_alike(train_shards):
    ex, _ = plan_examples(read_manifest(train_shards), get_task("birads3"), 2)
    ex = ex[:8]

    def batch(augment):
        s = ShardStream(train_shards, ex, Preprocess(24), train=True, shuffle_buffer=1,
                        seed=2, augment=augment)
        return next(iter(EpochLoader(s, 8, drop_last=False)))

    plain, aug = batch(build_augment("none")), batch(build_augment("flip"))
    assert plain["uid"] == aug["uid"] and not plain["flipped"].any()
    assert 0 < int(aug["flipped"].sum()) < 8  # both outcomes among 8 coins (seed 2)
    for i, flipped in enumerate(aug["flipped"].tolist()):
        want = plain["image"][i].flip(-1) if flipped else plain["image"][i]
        torch.testing.assert_close(aug["image"][i], want)  # CC and MLO alike
    # evaluation streams never augment
    ev = ShardStream(train_shards, ex, Preprocess(24), train=False,
                     augment=build_augment("full"))
    assert ev.augment == Augment()


# ---------------------------------------------------------------- non-square inputs

@pytest.mark.parametrize("text,want", [
    ("512", 512), (512, 512), ("1024x512", (1024, 512)), ("1024X512", (1024, 512)),
    ("1024,512", (1024, 512)), ([1024, 512], (1024, 512)), ("256x256", 256),
])
def test_parse_size(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("bad", ["1024x", "ax512", "1x2x3", 12.5, "12.5"])
def test_parse_size_refuses(bad):
    with pytest.raises(ValueError, match="S or ROWSxCOLS"):
        parse_size(bad)


@pytest.mark.parametrize("hw", [(100, 40), (40, 100), (90, 45)])
def test_rectangular_input_keeps_the_aspect_ratio(hw):
    h, w = hw
    px = np.full((h, w), 4000, np.uint16)
    box = np.array([[w * 0.25, h * 0.5, w * 0.75, h * 0.75]])
    px[int(h * 0.5):int(h * 0.75), int(w * 0.25):int(w * 0.75)] = 65535
    prep = Preprocess((64, 32), resize="letterbox", intensity="u16")
    x, b = prep(px, None, box, flip=False)
    assert x.shape == (1, 64, 32)
    content = _bright_bbox(x, 0.01)  # the image without its zero padding
    cw, ch = content[2] - content[0], content[3] - content[1]
    assert (ch / cw) == pytest.approx(h / w, rel=0.06)
    assert cw == 32 or ch == 64  # scaled to fit one side
    # centred, and the box moved with the content
    assert abs(content[0] - (32 - content[2])) <= 1 and abs(content[1] - (64 - content[3])) <= 1
    np.testing.assert_allclose(b[0], _bright_bbox(x, 0.5), atol=1.0)


def test_letterbox_square_size_unchanged():
    img = torch.rand(40, 20)
    a, ma = letterbox(img, 20)
    b, mb = letterbox(img, (20, 20))
    assert torch.equal(a, b) and ma == mb


def test_stream_batches_are_rows_by_cols(train_shards):
    ex, _ = plan_examples(read_manifest(train_shards), get_task("density"), 2)
    s = ShardStream(train_shards, ex[:2], Preprocess((40, 24), resize="letterbox"),
                    train=True, augment=build_augment("full"))
    batch = next(iter(EpochLoader(s, 2, drop_last=False)))
    assert batch["image"].shape == (2, 2, 1, 40, 24)
    assert float(batch["image"].min()) >= 0 and float(batch["image"].max()) <= 1
