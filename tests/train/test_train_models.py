"""mammotrain.models / gradcam: the paper's backbones build and train on CPU (random init,
never downloaded), two-view sharing, local weight files, Grad-CAM maps."""

from __future__ import annotations

import os

import pytest
import torch

from mammotrain.gradcam import gradcam
from mammotrain.models import (MultiViewClassifier, UnknownModelError, build_model,
                               count_parameters, create_backbone, load_backbone_weights)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PAPER_BACKBONES = ["efficientnet_b0", "resnet50", "densenet121", "swin_tiny_patch4_window7_224",
                   "convnextv2_tiny", "vit_base_patch16_dinov3"]


@pytest.mark.parametrize("name", PAPER_BACKBONES)
def test_paper_backbone_forward_backward(name):
    torch.manual_seed(0)
    model, _ = build_model(name, num_classes=3, views=2, shared=True, img_size=64)
    x = torch.rand(2, 2, 1, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    no_grad = [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # the Grad-CAM tap sees the last feature map of every architecture (NCHW, NHWC, tokens)
    cams, probs = gradcam(model, x[:1])
    assert cams.shape == (1, 2, 64, 64) and probs.shape == (1, 3)
    assert cams.min() >= 0 and cams.max() <= 1


def test_shared_vs_independent_two_view():
    shared, _ = build_model("resnet10t", 2, views=2, shared=True)
    indep, _ = build_model("resnet10t", 2, views=2, shared=False)
    single, _ = build_model("resnet10t", 2, views=1)
    assert len(shared.backbones) == 1 and len(indep.backbones) == 2 and len(single.backbones) == 1
    f = shared.feature_dim
    assert shared.head[0].in_features == 2 * f and single.head[0].in_features == f
    assert shared.head[0].out_features == 128 and shared.head[2].p == 0.3
    per_backbone = count_parameters(shared.backbones[0])
    assert count_parameters(indep) - count_parameters(shared) == per_backbone
    x = torch.rand(3, 2, 1, 32, 32)
    assert indep(x).shape == shared(x).shape == (3, 2)
    # shared: swapping the views swaps the two feature halves
    shared.eval()
    with torch.no_grad():
        a = shared.forward_features(x)
        b = shared.forward_features(x.flip(1))
    torch.testing.assert_close(a[:, :f], b[:, f:])
    with pytest.raises(ValueError, match=r"expected input \[B, 2, 1, H, W\]"):
        shared(torch.rand(3, 3, 32, 32))
    with pytest.raises(ValueError, match="one grayscale channel"):
        shared(torch.rand(3, 2, 3, 32, 32))


def test_input_norm_three_and_one_channels():
    from mammotrain.models import InputNorm
    from mammotrain.preprocess import IMAGENET_MEAN, IMAGENET_STD

    x = torch.full((2, 1, 1, 4, 4), 0.5)
    y = InputNorm(3)(x)
    assert y.shape == (2, 1, 3, 4, 4)
    for c in range(3):
        assert torch.allclose(y[:, :, c], torch.tensor((0.5 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))
    assert InputNorm(1)(x).shape == (2, 1, 1, 4, 4)
    model, _ = build_model("resnet10t", 4, views=2, in_chans=1)
    assert model.backbones[0].conv1[0].in_channels == 1
    assert model(torch.rand(2, 2, 1, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_weights_round_trip(tmp_path, suffix):
    torch.manual_seed(1)
    src = create_backbone("resnet10t")
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        # a checkpoint wrapping the state dict, with DDP prefixes and a classifier
        sd = {f"module.{k}": v for k, v in src.state_dict().items()}
        sd["module.fc.weight"] = torch.zeros(1000, 512)
        torch.save({"state_dict": sd, "epoch": 3}, path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    torch.manual_seed(2)
    model, reports = build_model("resnet10t", 2, views=2, shared=False, pretrained=str(path))
    assert len(reports) == 2
    for bb, rep in zip(model.backbones, reports):
        assert rep.loaded == rep.total and not rep.missing and not rep.mismatched
        for (k, a), b in zip(bb.state_dict().items(), src.state_dict().values()):
            torch.testing.assert_close(a, b, msg=k)
    if suffix == ".pth":
        assert reports[0].unexpected == ["fc.weight"]
    # 3-channel weights into a 1-channel model: the stem is summed over channels
    one = create_backbone("resnet10t", in_chans=1)
    rep = load_backbone_weights(one, path)
    assert rep.adapted == ["conv1.0.weight"]
    torch.testing.assert_close(one.conv1[0].weight, src.conv1[0].weight.sum(1, keepdim=True))
    # a file for another architecture is refused
    other = tmp_path / "other.pth"
    torch.save({"x.weight": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="no tensor matches"):
        load_backbone_weights(create_backbone("resnet10t"), other)


def test_unknown_backbone():
    with pytest.raises(UnknownModelError, match="Unknown model 'resnet5000'"):
        MultiViewClassifier("resnet5000", 2)
