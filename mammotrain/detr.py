"""The multi-task DETR: image-level malignancy and lesion boxes from one timm backbone.

Data flow (``S`` = input size, ``d`` = 256, ``Q`` = queries, ``L`` = decoder layers)::

    x float [B, 1, S, S] in [0, 1] (or [B, 1, 1, S, S] as the loader yields)
      -> InputNorm -> timm backbone, three feature levels (strides 8 / 16 / 32; a plain ViT's
         single stride-16 map goes through a simple pyramid: upsample / identity / pool)
      -> 1x1 conv + GroupNorm per level -> d channels                      (Projection)
      -> classification: global average pooling of each level, concatenated [B, 3d]
         -> linear -> malignancy logit [B, 1]
      -> localisation: three parallel 3x3 convolutions, dilation 1 / 2 / 4, summed per level
         (ContextBlock) -> deformable decoder: Q learned queries, each layer self-attention,
         multi-scale deformable cross-attention (plain PyTorch, ``grid_sample``) and an FFN,
         then a box (normalised cx, cy, w, h, refined from the previous layer's box) and an
         objectness logit per query.

``forward`` returns ``{'logits': [B, 1], 'pred_boxes': [B, Q, 4], 'pred_obj': [B, Q],
'aux': [{'pred_boxes', 'pred_obj'} for layers 1..L-1]}``; boxes are normalised cxcywh in
[0, 1] of the model input. The losses are in :mod:`mammotrain.detr_loss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import InputNorm, check_backbone_name, create_backbone, data_config


@dataclass(frozen=True)
class DetrConfig:
    """Shape of the detector (paper defaults: d 256, 3 queries).

    d_model: channels after projection and in the decoder; queries: learned object queries;
    layers: decoder layers (one auxiliary loss per layer but the last); heads / points:
    deformable attention heads and sampling points per head and level; ffn: decoder FFN width.
    """

    d_model: int = 256
    queries: int = 3
    layers: int = 3
    heads: int = 8
    points: int = 4
    ffn: int = 1024
    dropout: float = 0.1


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


# ------------------------------------------------------------------------------ features

class FeatureLevels(nn.Module):
    """timm backbone -> three maps ``[B, C_l, H_l, W_l]`` at strides about 8, 16, 32.

    Hierarchical backbones (CNNs, Swin, ConvNeXt) give their last three ``features_only``
    levels. Backbones whose levels share one stride (plain ViTs such as DINOv3 ViT-B/16)
    give their last map, turned into three by a simple feature pyramid: a stride-2
    transposed convolution (x2), identity, and 2x2 max pooling (/2).
    """

    def __init__(self, name: str, in_chans: int = 3, img_size: int | None = None,
                 pretrained: str | None = None):
        super().__init__()
        check_backbone_name(name)
        # img_size where the model takes it (ViT / Swin / EVA); local weights loaded by timm
        # before the features_only wrapping (resampled as timm does; report in load_report)
        body = create_backbone(name, in_chans, img_size, pretrained, features_only=True,
                               out_indices=(-3, -2, -1))
        self.load_report = getattr(body, "load_report", None)
        reductions = body.feature_info.reduction()
        self.simple_pyramid = len(set(reductions)) == 1
        if self.simple_pyramid:
            c = body.feature_info.channels()[-1]
            self.up = nn.ConvTranspose2d(c, c, 2, stride=2)
            self.channels = [c, c, c]
            self.strides = [reductions[-1] // 2, reductions[-1], reductions[-1] * 2]
        else:
            self.channels = list(body.feature_info.channels())
            self.strides = list(reductions)
        self.body = body
        # NHWC models (Swin) report their format; features_only wrappers expose it as well
        self.nhwc = getattr(body, "output_fmt", "NCHW") == "NHWC"

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        if self.nhwc:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        if self.simple_pyramid:
            last = feats[-1]
            return [self.up(last), last, F.max_pool2d(last, 2, ceil_mode=True)]
        return list(feats)


class Projection(nn.Module):
    """Per level 1x1 convolution + GroupNorm(32) to ``d`` channels."""

    def __init__(self, channels: list[int], d: int):
        super().__init__()
        self.proj = nn.ModuleList(nn.Sequential(nn.Conv2d(c, d, 1), nn.GroupNorm(32, d))
                                  for c in channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [p(f) for p, f in zip(self.proj, feats)]


class ContextBlock(nn.Module):
    """Three parallel 3x3 convolutions with dilation = padding = 1, 2, 4, summed, then
    GroupNorm and ReLU; the same weights on every level, shape kept ``[B, d, H, W]``."""

    def __init__(self, d: int):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(d, d, 3, padding=r, dilation=r)
                                      for r in (1, 2, 4))
        self.norm = nn.GroupNorm(32, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(sum(b(x) for b in self.branches)))


# ------------------------------------------------------------------ deformable attention

def deformable_sample(values: list[torch.Tensor], locations: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """Weighted bilinear samples of multi-level value maps (plain PyTorch, any device).

    values: per level ``[B * heads, c, H_l, W_l]``;
    locations: ``[B * heads, Q, levels, points, 2]``, (x, y) normalised to [0, 1];
    weights: ``[B * heads, Q, levels, points]`` (softmax over levels x points).
    Returns ``[B * heads, c, Q]``.
    """
    out = None
    for lvl, v in enumerate(values):
        grid = 2.0 * locations[:, :, lvl] - 1.0                       # [BH, Q, P, 2]
        s = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)                         # [BH, c, Q, P]
        s = (s * weights[:, None, :, lvl]).sum(-1)                     # [BH, c, Q]
        out = s if out is None else out + s
    return out


class MSDeformAttn(nn.Module):
    """Multi-scale deformable cross-attention (Deformable DETR) without custom kernels.

    Each query looks at ``points`` locations per head and level around its reference box:
    ``centre + offset / points * (w, h) / 2``; offsets and weights are linear in the query.
    """

    def __init__(self, d: int, levels: int, heads: int, points: int):
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model {d} must be divisible by heads {heads}")
        self.d, self.levels, self.heads, self.points = d, levels, heads, points
        self.offsets = nn.Linear(d, heads * levels * points * 2)
        self.weights = nn.Linear(d, heads * levels * points)
        self.value = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.offsets.weight)
        # head h starts looking in direction 2*pi*h/heads, point k at distance k + 1
        ang = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        grid = torch.stack([ang.cos(), ang.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.heads, 1, 1, 2).repeat(1, self.levels, self.points, 1)
        grid *= torch.arange(1, self.points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.weights.weight)
        nn.init.zeros_(self.weights.bias)
        nn.init.xavier_uniform_(self.value.weight)
        nn.init.zeros_(self.value.bias)
        nn.init.xavier_uniform_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, query: torch.Tensor, ref: torch.Tensor, memory: list[torch.Tensor]
                ) -> torch.Tensor:
        """query ``[B, Q, d]``; ref ``[B, Q, 4]`` normalised cxcywh; memory per level
        ``[B, d, H_l, W_l]`` -> ``[B, Q, d]``."""
        b, q, _ = query.shape
        h, lv, p, c = self.heads, self.levels, self.points, self.d // self.heads
        off = self.offsets(query).view(b, q, h, lv, p, 2)
        w = self.weights(query).view(b, q, h, lv * p).softmax(-1).view(b, q, h, lv, p)
        loc = ref[:, :, None, None, None, :2] + off / p * ref[:, :, None, None, None, 2:] * 0.5
        values = []
        for m in memory:
            hl, wl = m.shape[-2:]
            v = self.value(m.flatten(2).transpose(1, 2))               # [B, HW, d]
            values.append(v.view(b, hl * wl, h, c).permute(0, 2, 3, 1).reshape(b * h, c, hl, wl))
        loc = loc.permute(0, 2, 1, 3, 4, 5).reshape(b * h, q, lv, p, 2)
        w = w.permute(0, 2, 1, 3, 4).reshape(b * h, q, lv, p)
        out = deformable_sample(values, loc, w)                         # [BH, c, Q]
        return self.out(out.view(b, h * c, q).transpose(1, 2))


class DecoderLayer(nn.Module):
    """Self-attention over queries, deformable cross-attention, FFN (post-norm)."""

    def __init__(self, cfg: DetrConfig, levels: int):
        super().__init__()
        d = cfg.d_model
        self.self_attn = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout,
                                               batch_first=True)
        self.cross = MSDeformAttn(d, levels, cfg.heads, cfg.points)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn), nn.ReLU(inplace=True),
                                 nn.Dropout(cfg.dropout), nn.Linear(cfg.ffn, d))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(3))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, tgt, pos, ref, memory):
        q = tgt + pos
        tgt = self.norms[0](tgt + self.drop(self.self_attn(q, q, tgt, need_weights=False)[0]))
        tgt = self.norms[1](tgt + self.drop(self.cross(tgt + pos, ref, memory)))
        return self.norms[2](tgt + self.drop(self.ffn(tgt)))


class MLP(nn.Sequential):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, layers: int):
        mods: list[nn.Module] = []
        for i in range(layers):
            last = i == layers - 1
            mods.append(nn.Linear(d_in if i == 0 else d_hidden, d_out if last else d_hidden))
            if not last:
                mods.append(nn.ReLU(inplace=True))
        super().__init__(*mods)


class DeformableDecoder(nn.Module):
    """``Q`` learned queries refined layer by layer into boxes and objectness logits."""

    def __init__(self, cfg: DetrConfig, levels: int):
        super().__init__()
        d = cfg.d_model
        self.d = d
        self.query = nn.Embedding(cfg.queries, 2 * d)       # [positional | content]
        self.ref_init = nn.Linear(d, 4)
        self.layers = nn.ModuleList(DecoderLayer(cfg, levels) for _ in range(cfg.layers))
        self.box_heads = nn.ModuleList(MLP(d, d, 4, 3) for _ in range(cfg.layers))
        self.obj_heads = nn.ModuleList(nn.Linear(d, 1) for _ in range(cfg.layers))
        with torch.no_grad():
            nn.init.xavier_uniform_(self.ref_init.weight)  # centres spread around 0.5
            self.ref_init.bias.copy_(torch.tensor([0.0, 0.0, -1.4, -1.4]))  # w, h ~ 0.2
            for head in self.box_heads:
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)
            for head in self.obj_heads:
                nn.init.constant_(head.bias, -math.log((1 - 0.1) / 0.1))

    def forward(self, memory: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        b = memory[0].shape[0]
        pos, tgt = self.query.weight.split(self.d, dim=1)
        pos = pos.unsqueeze(0).expand(b, -1, -1)
        tgt = tgt.unsqueeze(0).expand(b, -1, -1)
        ref = self.ref_init(pos).sigmoid()
        outs = []
        for layer, box_head, obj_head in zip(self.layers, self.box_heads, self.obj_heads):
            tgt = layer(tgt, pos, ref, memory)
            boxes = (inverse_sigmoid(ref) + box_head(tgt)).sigmoid()
            outs.append({"pred_boxes": boxes, "pred_obj": obj_head(tgt).squeeze(-1)})
            ref = boxes.detach()
        return outs


# ------------------------------------------------------------------------------- model

class MultiTaskDETR(nn.Module):
    """Backbone + projection + classification branch + localisation branch (see module doc).

    ``backbone_name`` is any timm model with ``features_only``; ``in_chans`` 3 (grayscale
    replicated, ImageNet normalisation) or 1; ``img_size`` for models that take it (ViT).
    """

    def __init__(self, backbone: str, in_chans: int = 3, img_size: int | None = None,
                 cfg: DetrConfig = DetrConfig(), pretrained: str | None = None):
        super().__init__()
        self.backbone_name, self.cfg, self.views = backbone, cfg, 1
        self.features = FeatureLevels(backbone, in_chans, img_size, pretrained)
        self.data_config = data_config(self.features.body)  # timm mean / std
        self.input_norm = InputNorm(in_chans, self.data_config["mean"], self.data_config["std"])
        levels = len(self.features.channels)
        self.proj = Projection(self.features.channels, cfg.d_model)
        self.cls_head = nn.Linear(levels * cfg.d_model, 1)
        self.context = ContextBlock(cfg.d_model)
        self.level_embed = nn.Parameter(torch.zeros(levels, cfg.d_model))
        nn.init.normal_(self.level_embed, std=0.02)
        self.decoder = DeformableDecoder(cfg, levels)
        self.channels_last = False

    def forward(self, x: torch.Tensor) -> dict:
        if x.ndim == 5:
            if x.shape[1] != 1:
                raise ValueError(f"the detector takes one view per example, got {tuple(x.shape)}")
            x = x[:, 0]
        if x.ndim != 4:
            raise ValueError(f"expected input [B, 1, H, W], got {tuple(x.shape)}")
        x = self.input_norm(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.proj(self.features(x))
        logits = self.cls_head(torch.cat([f.mean((2, 3)) for f in feats], 1))
        memory = [self.context(f) + e.view(1, -1, 1, 1)
                  for f, e in zip(feats, self.level_embed)]
        outs = self.decoder(memory)
        return {"logits": logits, **outs[-1], "aux": outs[:-1]}


def build_detector(backbone: str, in_chans: int = 3, img_size: int | None = None,
                   pretrained: str | None = None, cfg: DetrConfig = DetrConfig()
                   ) -> tuple[MultiTaskDETR, list]:
    """The detector and, with ``pretrained``, one load report (see ``build_model``)."""
    model = MultiTaskDETR(backbone, in_chans, img_size, cfg, pretrained)
    return model, [model.features.load_report] if pretrained else []
