"""Local pretrained weights go through timm's loader: a ViT and a Swin saved at 224 px load
at another input size with every tensor taken from the file (position embeddings /
relative position tables resampled, as timm does), and the input normalisation follows the
backbone's timm data config."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mammotrain.models import InputNorm, build_model, create_backbone, data_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# tiny random-init configurations of real timm architectures (fast on CPU)
VIT = ("vit_tiny_patch16_224", dict(embed_dim=32, depth=2, num_heads=2))
SWIN = ("swin_tiny_patch4_window7_224", dict(embed_dim=16, depths=(1, 1, 1, 1),
                                             num_heads=(1, 1, 1, 1)))


def _save(name: str, kw: dict, path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A 224-px model with its 1000-class head, random init, saved to ``path``."""
    import timm

    torch.manual_seed(seed)
    src = timm.create_model(name, pretrained=False, **kw)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, path)
    return sd


def _resized_back_corr(new: torch.Tensor, old: torch.Tensor) -> float:
    """Correlation of ``old`` (a square grid of vectors) with ``new`` resized back to it:
    near 1 when ``new`` is ``old`` resampled, near 0 for a random tensor."""
    n_new, n_old = round(new.shape[0] ** 0.5), round(old.shape[0] ** 0.5)
    grid = new.T.reshape(1, -1, n_new, n_new)
    back = F.interpolate(grid, size=(n_old, n_old), mode="bilinear", antialias=True,
                         align_corners=False)[0].reshape(new.shape[1], -1).T
    return float(np.corrcoef(back.flatten().numpy(), old.flatten().numpy())[0, 1])


def _check_all_from_file(model: torch.nn.Module, file_sd: dict[str, torch.Tensor]) -> list[str]:
    """Every tensor of ``model`` equals the file's, or (other shape) is the file's resampled.
    Returns the resampled names."""
    resampled = []
    for k, v in model.state_dict().items():
        assert k in file_sd, f"{k} is not in the file: left at random init"
        ref = file_sd[k]
        if ref.shape == v.shape:
            torch.testing.assert_close(v, ref, rtol=0, atol=0, msg=k)
            continue
        resampled.append(k)
        if k.endswith("pos_embed"):  # [1, 1 + g*g, D]: class token kept, grid resampled
            torch.testing.assert_close(v[0, :1], ref[0, :1], rtol=0, atol=0)
            assert _resized_back_corr(v[0, 1:], ref[0, 1:]) > 0.9, k
        elif k.endswith("relative_position_bias_table"):  # [(2w-1)^2, heads]
            # timm aligns the corners of the table (another grid than ours): r ~ 0.85 here,
            # |r| < 0.3 for an unrelated random table of this size
            assert _resized_back_corr(v, ref) > 0.6, k
            torch.testing.assert_close(v[[0, -1]], ref[[0, -1]])  # corners kept
        else:
            raise AssertionError(f"{k}: shape {tuple(ref.shape)} -> {tuple(v.shape)}")
    return resampled


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_vit_saved_at_224_runs_at_384_with_every_tensor_loaded(tmp_path, suffix):
    name, kw = VIT
    path = tmp_path / f"vit{suffix}"
    file_sd = _save(name, kw, path)
    torch.manual_seed(123)  # another init: anything not loaded would differ from the file
    model = create_backbone(name, 3, 384, pretrained=path, **kw)
    rep = model.load_report
    assert rep.loaded == rep.total and not rep.missing and not rep.mismatched
    assert sorted(rep.unexpected) == ["head.bias", "head.weight"]  # classifier dropped
    assert [r.split()[0] for r in rep.resampled] == ["pos_embed"]
    assert _check_all_from_file(model, file_sd) == ["pos_embed"]
    assert model.pos_embed.shape == (1, 1 + 24 * 24, 32)
    out = model(torch.rand(2, 3, 384, 384))
    assert out.shape == (2, 32) and torch.isfinite(out).all()


def test_swin_saved_at_224_runs_at_256_with_a_larger_window(tmp_path):
    """Window 7 -> 8: timm resamples every relative position bias table."""
    name, kw = SWIN
    path = tmp_path / "swin.safetensors"
    file_sd = _save(name, kw, path)
    torch.manual_seed(123)
    model = create_backbone(name, 3, 256, pretrained=path, window_size=8, **kw)
    rep = model.load_report
    assert rep.loaded == rep.total and not rep.missing and not rep.mismatched
    resampled = _check_all_from_file(model, file_sd)
    assert len(resampled) == 4 and all("relative_position_bias_table" in k for k in resampled)
    assert model.layers[0].blocks[0].attn.relative_position_bias_table.shape == (15 * 15, 1)
    out = model(torch.rand(1, 3, 256, 256))
    assert out.shape == (1, 128) and torch.isfinite(out).all()


def test_one_channel_model_gets_the_stem_summed_by_timm(tmp_path):
    name, kw = VIT
    path = tmp_path / "vit.safetensors"
    file_sd = _save(name, kw, path)
    model = create_backbone(name, 1, 224, pretrained=path, **kw)
    assert model.load_report.adapted == ["patch_embed.proj.weight"]
    torch.testing.assert_close(model.patch_embed.proj.weight,
                               file_sd["patch_embed.proj.weight"].sum(1, keepdim=True))


def test_classifier_loads_pretrained_vit_at_another_size(tmp_path):
    """build_model (the trainer's path): both backbones of an independent two-view model."""
    name, kw = VIT
    path = tmp_path / "vit.pth"
    file_sd = _save(name, {}, path)  # the full-size vit_tiny, as a real checkpoint would be
    model, reports = build_model(name, 2, views=2, shared=False, img_size=288,
                                 pretrained=str(path))
    assert len(reports) == 2
    for bb in model.backbones:
        assert _check_all_from_file(bb, file_sd) == ["pos_embed"]
    assert model(torch.rand(1, 2, 1, 288, 288)).shape == (1, 2)


def test_a_file_for_another_architecture_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"x.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="no tensor matches"):
        create_backbone(VIT[0], 3, 224, pretrained=path, **VIT[1])


def test_normalisation_follows_the_timm_data_config():
    """vit_tiny_patch16_224's weights use mean = std = 0.5 (not ImageNet's)."""
    model, _ = build_model(VIT[0], 2, views=1, img_size=64)
    cfg = data_config(model.backbones[0])
    assert cfg["mean"] == pytest.approx([0.5] * 3) and cfg["std"] == pytest.approx([0.5] * 3)
    assert cfg["interpolation"] == "bicubic"
    assert model.input_norm.mean == pytest.approx((0.5,) * 3)
    x = torch.full((1, 1, 1, 4, 4), 0.75)
    assert torch.allclose(model.input_norm(x), torch.full((1, 1, 3, 4, 4), 0.5))
    # a CNN keeps the ImageNet statistics
    cnn, _ = build_model("resnet10t", 2, views=1)
    assert cnn.input_norm.mean == pytest.approx((0.485, 0.456, 0.406))
    # one channel: the means of the per-channel values
    one = InputNorm(1, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.allclose(one(x), torch.full((1, 1, 1, 4, 4), 1.0))


def test_detector_backbone_loads_through_timm_too(tmp_path):
    """The DETR's features_only ViT body: weights loaded by timm before the wrapping, the
    position embedding resampled to the detector's input size."""
    from mammotrain.detr import build_detector

    name, kw = VIT
    path = tmp_path / "vit.safetensors"
    file_sd = _save(name, {}, path)
    model, reports = build_detector(name, 3, 288, str(path))
    assert [r.split()[0] for r in reports[0].resampled] == ["pos_embed"]
    body = {k.split(".", 1)[1]: v for k, v in model.features.body.state_dict().items()}
    for k, v in body.items():
        assert k in file_sd, k
        if k != "pos_embed":
            torch.testing.assert_close(v, file_sd[k], rtol=0, atol=0, msg=k)
    assert _resized_back_corr(body["pos_embed"][0, 1:], file_sd["pos_embed"][0, 1:]) > 0.9
    assert model.input_norm.mean == pytest.approx((0.5,) * 3)
    assert model(torch.rand(1, 1, 288, 288))["pred_boxes"].shape[-1] == 4


def test_interpolation_from_the_timm_data_config():
    import numpy as np

    from mammotrain.config import TrainConfig
    from mammotrain.preprocess import Preprocess

    for name, kw in (VIT, ("resnet10t", {})):
        cfg = TrainConfig(backbone=name, interpolation="timm", shards="x").resolved()
        model = create_backbone(name, 3, None, **kw)
        assert cfg.interpolation == data_config(model)["interpolation"]
        assert cfg.preprocess().interpolation == cfg.interpolation
    assert TrainConfig(shards="x").resolved().preprocess().interpolation == "bilinear"
    # the filter is applied: bicubic and bilinear differ, both stay in [0, 1]
    px = (np.random.default_rng(0).random((64, 48)) * 4095).astype(np.uint16)
    a, _ = Preprocess(40, interpolation="bilinear")(px, 12, None, False)
    b, _ = Preprocess(40, interpolation="bicubic")(px, 12, None, False)
    assert not torch.equal(a, b) and float(b.min()) >= 0 and float(b.max()) <= 1
    with pytest.raises(ValueError, match="interpolation must be one of"):
        Preprocess(40, interpolation="lanczos")
