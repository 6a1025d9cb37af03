"""Grad-CAM on the last feature map of each backbone of a :class:`MultiViewClassifier`.

Forward hooks on the model's :class:`~mammotrain.models.FeatureTap` modules keep the feature
maps ``A`` (brought to ``[N, F, h, w]``) and tensor hooks keep ``dy/dA`` for the target class
logit ``y``; the map of a view is ``ReLU(sum_f mean_hw(dy/dA_f) * A_f)``, upsampled
(bilinear) to the input size and scaled to [0, 1] per view.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .models import MultiViewClassifier, to_nchw


def gradcam(model: MultiViewClassifier, x: torch.Tensor, target: int | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps for a batch.

    x: float ``[B, V, 1, H, W]`` (the model's input); target: class index (default: each
    example's arg-max).
    Returns (cams float32 ``[B, V, H, W]`` in [0, 1], probs float32 ``[B, K]``).
    """
    b, v, _, h, w = x.shape
    maps: dict[int, torch.Tensor] = {}
    grads: dict[int, torch.Tensor] = {}
    handles = []

    def hook(i):
        def fn(module, inputs, output):
            output.register_hook(lambda g: grads.__setitem__(i, g))
            maps[i] = output
        return fn

    for i, tap in enumerate(model.taps):
        handles.append(tap.register_forward_hook(hook(i)))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # so the graph reaches frozen backbones too
            logits = model(x)
            tgt = (logits.argmax(1) if target is None else
                   torch.full((b,), int(target), device=logits.device))
            model.zero_grad(set_to_none=True)
            logits.gather(1, tgt[:, None]).sum().backward()
        probs = logits.detach().float().softmax(1).cpu().numpy()
        per_view = []
        for i, tap in enumerate(model.taps):
            bb = model.backbones[i]
            a = to_nchw(bb, maps[i].detach().float(), tap.input_hw)
            g = to_nchw(bb, grads[i].float(), tap.input_hw)
            cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
            cam = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            per_view.append(cam)
        cams = (torch.stack(per_view, 1) if not model.shared
                else per_view[0].reshape(b, v, h, w))
        peak = cams.flatten(2).amax(2).clamp_min(1e-12)[..., None, None]
        cams = (cams / peak).cpu().numpy().astype(np.float32)
    finally:
        for hd in handles:
            hd.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return cams, probs
