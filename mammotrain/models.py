"""Backbones by timm name, the multi-view classifier of LUMINA, local pretrained weights.

``MultiViewClassifier``: ``V`` views (1 = single-view, 2 = CC + MLO) of one breast go through
one shared backbone (default) or one backbone per view; the pooled features of the views are
concatenated (``[B, V * F]``) and passed to an MLP (hidden 128, ReLU, dropout 0.3) and the
output layer (``[B, K]`` logits). Every backbone's last feature map passes through a
:class:`FeatureTap` (an identity module), which is where Grad-CAM hooks in.

Weights are never downloaded: ImageNet (or any) weights come only from a local ``.pth`` /
``.safetensors`` file, loaded through timm's own pretrained path (:func:`create_backbone` with
``pretrained=PATH``: ``timm.create_model(..., pretrained=True,
pretrained_cfg_overlay=dict(state_dict=...))``), so the model's checkpoint filter resamples
position embeddings (ViT/EVA at another input size), relative position tables (Swin), adapts
the input convolution to ``in_chans`` and drops the classifier, exactly as timm does. The
input normalisation (mean/std) and interpolation come from
``timm.data.resolve_model_data_config`` (:func:`data_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn
from safetensors.torch import load_file
from timm.data import resolve_model_data_config

from .preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize


class UnknownModelError(ValueError):
    """A backbone name timm does not know."""


def check_backbone_name(name: str) -> None:
    """Raise :class:`UnknownModelError` (with close matches) unless timm knows ``name``."""
    if not timm.is_model(name):
        stem = name.split("_")[0][:6]
        close = timm.list_models(f"*{stem}*")[:8] if stem else []
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise UnknownModelError(f"Unknown model {name!r} (timm {timm.__version__}){hint}")


def _timm_create(name: str, img_size: int | None, **kw: Any) -> nn.Module:
    """``timm.create_model`` with ``img_size`` where the model takes it (ViT, Swin, EVA:
    fixed-size position embeddings / windows); CNNs refuse it and are built without."""
    if img_size is not None:
        try:
            return timm.create_model(name, img_size=img_size, **kw)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
    return timm.create_model(name, **kw)


def create_backbone(name: str, in_chans: int = 3, img_size: int | None = None,
                    pretrained: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """A timm model without classifier (``num_classes=0``), never downloaded: random init, or
    the local weight file ``pretrained`` loaded by timm (:func:`load_timm_backbone`; its
    :class:`LoadReport` is kept as ``model.load_report``).

    ``img_size`` is passed to models that take it and ignored by the rest (CNNs). The model
    maps ``[B, in_chans, H, W]`` to pooled features ``[B, F]`` with ``F = feature_dim(model)``.
    ``kwargs`` go to ``timm.create_model`` (e.g. ``global_pool``, ``features_only``, or a
    smaller ``depth`` / ``embed_dim`` in tests).
    """
    check_backbone_name(name)
    if pretrained is not None:
        model, report = load_timm_backbone(name, pretrained, in_chans, img_size, **kwargs)
        model.load_report = report
        return model
    kw = dict(pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    return _timm_create(name, img_size, **kw)


def timm_interpolation(name: str) -> str:
    """The resize filter of backbone ``name``'s timm pretrained config ('bicubic' for most,
    'bilinear' for some); 'bilinear' when timm names none or another filter."""
    cfg = timm.models.get_pretrained_cfg(name)
    interp = str(getattr(cfg, "interpolation", "") or "bilinear")
    return interp if interp in ("bilinear", "bicubic") else "bilinear"


def data_config(model: nn.Module) -> dict[str, Any]:
    """timm's data config of a built model (``timm.data.resolve_model_data_config``): mean,
    std (3-tuples, [0, 1] scale), interpolation ('bilinear', 'bicubic', ...), input_size,
    crop_pct. Weights loaded from a file keep the model's registered config, so the
    statistics are those its pretrained weights were trained with."""
    cfg = resolve_model_data_config(model)
    return {"mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]],
            "interpolation": str(cfg.get("interpolation") or "bilinear"),
            "input_size": [int(v) for v in cfg["input_size"]],
            "crop_pct": float(cfg.get("crop_pct", 1.0))}


def feature_dim(backbone: nn.Module) -> int:
    """Width ``F`` of ``backbone.forward_head(..., pre_logits=True)``."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


class FeatureTap(nn.Identity):
    """Identity on a backbone's last feature map (NCHW, NHWC or tokens ``[B, N, F]``).

    Records the input size of the images so the map can be brought to ``[B, F, h, w]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.input_hw: tuple[int, int] | None = None


def to_nchw(backbone: nn.Module, fmap: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """A backbone's ``forward_features`` output -> ``[B, F, h, w]``.

    NCHW (CNNs) unchanged; NHWC (``output_fmt == 'NHWC'``, Swin) permuted; tokens
    ``[B, P + h*w, F]`` (ViT, EVA/DINOv3): the ``P = num_prefix_tokens`` class/register tokens
    dropped and the patch tokens laid out on the patch grid.
    """
    if fmap.ndim == 4:
        if getattr(backbone, "output_fmt", "NCHW") == "NHWC":
            return fmap.permute(0, 3, 1, 2)
        return fmap
    if fmap.ndim == 3:
        tokens = fmap[:, int(getattr(backbone, "num_prefix_tokens", 0) or 0):]
        n = tokens.shape[1]
        h_in, w_in = input_hw
        gh = max(1, round((n * h_in / w_in) ** 0.5))
        gw = n // gh
        if gh * gw != n:
            raise ValueError(f"cannot lay {n} tokens on a grid for a {h_in}x{w_in} input")
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], gh, gw)
    raise ValueError(f"unexpected feature map shape {tuple(fmap.shape)}")


class InputNorm(nn.Module):
    """Grayscale in [0, 1] ``[..., 1, H, W]`` -> model input ``[..., in_chans, H, W]``:
    replicated to 3 channels and normalised with ``mean``/``std`` (3-tuples; default
    ImageNet, the backbones pass timm's data config), or one channel normalised with the means
    of those values (:func:`mammotrain.preprocess.normalize`)."""

    def __init__(self, in_chans: int = 3, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None):
        super().__init__()
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        self.in_chans = in_chans
        self.mean = tuple(float(v) for v in (mean or IMAGENET_MEAN))
        self.std = tuple(float(v) for v in (std or IMAGENET_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3] != 1:
            raise ValueError(f"expected one grayscale channel [..., 1, H, W], got {tuple(x.shape)}")
        return normalize(x, self.in_chans, self.mean, self.std)


class MultiViewClassifier(nn.Module):
    """``x`` float ``[B, V, 1, H, W]`` (grayscale in [0, 1], as the loader yields) -> logits
    float ``[B, K]``. :class:`InputNorm` makes the backbone input ``[B*V, in_chans, H, W]``.

    backbone: timm name; views: V (1 or 2); shared: one backbone for all views (default) or
    one per view; hidden/dropout: the MLP head (LUMINA: 128, 0.3); global_pool: the
    backbone's pooling (timm's ``global_pool``: 'avg', 'max', ...; None = the model's default).
    """

    def __init__(self, backbone: str, num_classes: int, views: int = 2, shared: bool = True,
                 in_chans: int = 3, img_size: int | None = None, hidden: int = 128,
                 dropout: float = 0.3, global_pool: str | None = None,
                 pretrained: str | Path | None = None):
        super().__init__()
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        self.backbone_name, self.views, self.shared = backbone, views, shared or views == 1
        n = 1 if self.shared else views
        kw = {} if global_pool is None else {"global_pool": global_pool}
        self.backbones = nn.ModuleList(create_backbone(backbone, in_chans, img_size, pretrained,
                                                       **kw) for _ in range(n))
        self.load_reports = [bb.load_report for bb in self.backbones if pretrained]
        self.taps = nn.ModuleList(FeatureTap() for _ in range(n))
        self.data_config = data_config(self.backbones[0])
        self.input_norm = InputNorm(in_chans, self.data_config["mean"], self.data_config["std"])
        self.feature_dim = feature_dim(self.backbones[0])
        self.head = nn.Sequential(nn.Linear(views * self.feature_dim, hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))
        self.channels_last = False

    def embed(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 1, H, W]`` in [0, 1] through backbone ``i`` -> pooled features
        ``[N, F]``."""
        x = self.input_norm(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        bb = self.backbones[i]
        self.taps[i].input_hw = (x.shape[-2], x.shape[-1])
        fmap = self.taps[i](bb.forward_features(x))
        return bb.forward_head(fmap, pre_logits=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, V, 1, H, W]`` -> concatenated view features ``[B, V * F]``."""
        if x.ndim != 5 or x.shape[1] != self.views:
            raise ValueError(f"expected input [B, {self.views}, 1, H, W], got {tuple(x.shape)}")
        b = x.shape[0]
        if self.shared:
            return self.embed(0, x.flatten(0, 1)).reshape(b, -1)
        return torch.cat([self.embed(i, x[:, i]) for i in range(self.views)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build_model(backbone: str, num_classes: int, views: int = 2, shared: bool = True,
                in_chans: int = 3, img_size: int | None = None, pretrained: str | None = None,
                hidden: int = 128, dropout: float = 0.3, global_pool: str | None = None
                ) -> tuple[MultiViewClassifier, list]:
    """The classifier and, with ``pretrained`` (loaded by timm into every backbone), one
    :class:`LoadReport` per backbone."""
    model = MultiViewClassifier(backbone, num_classes, views, shared, in_chans, img_size,
                                hidden, dropout, global_pool, pretrained)
    return model, list(model.load_reports)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------ local weights

@dataclass
class LoadReport:
    """Outcome of loading a weight file into a backbone (``strict=False``)."""

    path: str
    loaded: int
    total: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)

    def describe(self) -> str:
        def few(xs):
            return (", ".join(xs[:4]) + (f", ... ({len(xs)})" if len(xs) > 4 else "")) or "-"
        return (f"{self.path}: loaded {self.loaded}/{self.total} tensors; "
                f"missing {few(self.missing)}; unexpected {few(self.unexpected)}; "
                f"shape mismatch {few(self.mismatched)}"
                + (f"; resampled by timm {few(self.resampled)}" if self.resampled else "")
                + (f"; input conv adapted to the channels {few(self.adapted)}"
                   if self.adapted else ""))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth``/``.pt`` file (a state dict, or a checkpoint
    with the state dict under ``state_dict`` / ``model`` / ``model_state``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weight file not found")
    if path.suffix == ".safetensors":
        sd: Any = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for k in ("state_dict", "model", "model_state"):
        if isinstance(sd, dict) and isinstance(sd.get(k), dict):
            sd = sd[k]
            break
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return sd


_PREFIXES = ("module.", "backbone.", "backbones.0.", "model.", "encoder.")


def _strip(sd: dict[str, torch.Tensor], own: set[str]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (DDP ``module.``, a mammotrain checkpoint's ``backbones.0.``,
    ...) while that increases the overlap with the model's keys."""
    best = sd
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            cand = {k[len(p):] if k.startswith(p) else k: v for k, v in best.items()}
            if len(own & cand.keys()) > len(own & best.keys()):
                best, changed = cand, True
    return best


def load_timm_backbone(name: str, path: str | Path, in_chans: int = 3,
                       img_size: int | None = None, **kwargs: Any) -> tuple[nn.Module, LoadReport]:
    """Build timm model ``name`` (``num_classes=0``) with the weights of a local file, loaded
    by timm: ``timm.create_model(name, pretrained=True,
    pretrained_cfg_overlay=dict(state_dict=sd))``.

    ``sd`` is the file's state dict (:func:`read_state_dict`) with wrapper prefixes removed
    (DDP ``module.``, a mammotrain checkpoint's ``backbones.0.``, ...). timm then runs the
    model's checkpoint filter (ViT/EVA position embeddings and Swin relative position tables
    resampled to ``img_size``), adapts the input convolution to ``in_chans`` and drops the
    classifier. Nothing is downloaded. Raises ValueError when no tensor name matches (a file
    for another architecture) or when timm cannot adapt a tensor (the message quotes timm).
    """
    sd = read_state_dict(path)
    kw = dict(num_classes=0, in_chans=in_chans, **kwargs)
    plain = {k: v for k, v in kw.items() if k not in ("features_only", "out_indices")}
    try:
        with torch.device("meta"):  # the names timm loads into: no memory, no init
            own = _timm_create(name, img_size, pretrained=False, **plain).state_dict()
    except Exception:  # noqa: BLE001 - a model whose __init__ needs real tensors
        own = _timm_create(name, img_size, pretrained=False, **plain).state_dict()
    sd = _strip(sd, set(own))
    if not own.keys() & sd.keys():
        raise ValueError(f"{path}: no tensor matches backbone {name} "
                         f"(first keys: {list(sd)[:3]})")
    try:
        model = _timm_create(name, img_size, pretrained=True,
                             pretrained_cfg_overlay=dict(state_dict=dict(sd)), **kw)
    except RuntimeError as exc:  # shapes timm's filter cannot adapt
        raise ValueError(f"{path}: timm could not load it into {name}: "
                         f"{str(exc).splitlines()[0]}") from None
    rep = LoadReport(str(path), 0, len(own))
    for k, v in sd.items():
        if k not in own:
            rep.unexpected.append(k)
        elif v.shape == own[k].shape:
            rep.loaded += 1
        elif v.ndim == 4 and v.shape[0] == own[k].shape[0] and v.shape[2:] == own[k].shape[2:]:
            rep.loaded += 1
            rep.adapted.append(k)
        else:
            rep.loaded += 1
            rep.resampled.append(f"{k} {tuple(v.shape)}->{tuple(own[k].shape)}")
    rep.missing = sorted(own.keys() - sd.keys())
    return model, rep


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> LoadReport:
    """Load matching tensors of a local file into an already built ``backbone``
    (``strict=False``, no resampling). The trainer builds backbones with
    :func:`create_backbone` ``pretrained=PATH`` instead, where timm's loader resamples.

    Classifier tensors and other extra keys are reported as unexpected, shape mismatches are
    skipped and reported; a 3-channel input convolution loaded into a 1-channel model is
    summed over its input channels. Raises ValueError when nothing matches (wrong file).
    """
    own = backbone.state_dict()
    sd = _strip(read_state_dict(path), set(own))
    take: dict[str, torch.Tensor] = {}
    rep = LoadReport(str(path), 0, len(own))
    for k, v in sd.items():
        if k not in own:
            rep.unexpected.append(k)
        elif v.shape == own[k].shape:
            take[k] = v
        elif (v.ndim == 4 and own[k].ndim == 4 and own[k].shape[1] == 1 and v.shape[1] == 3
              and v.shape[0] == own[k].shape[0] and v.shape[2:] == own[k].shape[2:]):
            take[k] = v.sum(dim=1, keepdim=True)
            rep.adapted.append(k)
        else:
            rep.mismatched.append(f"{k} {tuple(v.shape)}->{tuple(own[k].shape)}")
    if not take:
        raise ValueError(f"{path}: no tensor matches backbone "
                         f"{type(backbone).__name__} (first keys: {list(sd)[:3]})")
    backbone.load_state_dict(take, strict=False)
    rep.loaded = len(take)
    rep.missing = sorted(set(own) - set(take))
    return rep
