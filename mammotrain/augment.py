"""Training augmentations: flips, a small affine and intensity jitter (torchvision transforms v2).

An :class:`Augment` holds magnitudes only; :meth:`Augment.sample` draws one example's
parameters from the stream's seeded generator and :func:`apply_view` applies them to one
view (``float32 [1, H, W]`` in [0, 1] after :class:`mammotrain.preprocess.Preprocess`, boxes
``float32 [N, 4]`` xyxy in model-input pixels) with ``torchvision.transforms.v2.functional``
on ``tv_tensors.Image`` / ``tv_tensors.BoundingBoxes``, so boxes move with the image.

What both views of a breast share (two-view examples):

* **flips** (horizontal, vertical): one coin per example. A flipped breast must stay one
  breast: CC and MLO mirrored alike keep the chest wall on the same side in both views, as
  in a real left/right pair; mirroring one view only would pair views of two lateralities.
* **intensity** (gamma, contrast, brightness): one draw per example. Both views come from one
  detector and one processing chain, the variation the jitter imitates (vendor, exposure).
* **affine** (rotation, scale, translation): one draw per view. Positioning differs between
  the two compressions of a breast, so the two views get independent small motions.

Presets (:data:`PRESETS`): ``none`` (identity, draws nothing), ``flip`` (horizontal flip
with p 0.5: the trainer's behaviour before augmentations existed, same random draws, so
earlier runs reproduce), ``full`` (flips, small affine, intensity jitter). Any magnitude may
be overridden (:func:`build_augment`).

Intensity maths (on the float image, whose values came from the 16-bit pixels divided by
``2**bits - 1``; background and letterbox padding are exactly 0 and stay 0):
``x' = clamp(b * (m + c * (x**g - m)), 0, 1)`` on the foreground ``x > 0``, where ``m`` is
the foreground mean of ``x**g``. Contrast pivots on the breast's mean, not the whole
image's (torchvision's ``adjust_contrast`` pivots on the image mean, mostly background in a
mammogram, and would lift the background off 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

#: preset name -> magnitudes (see :class:`Augment`)
PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "flip": {"hflip": 0.5},
    "full": {"hflip": 0.5, "vflip": 0.5, "rotate": 5.0, "scale": 0.1, "translate": 0.05,
             "brightness": 0.1, "contrast": 0.1, "gamma": 0.1},
}


@dataclass(frozen=True)
class Augment:
    """Augmentation magnitudes (all 0 = identity).

    hflip / vflip: probability of a horizontal / vertical flip (shared by the views).
    rotate: degrees; angle ~ U(-rotate, rotate) (per view).
    scale: zoom factor ~ U(1 - scale, 1 + scale) (per view).
    translate: shift ~ U(-translate, translate) x width (x) and x height (y) (per view).
    brightness / contrast / gamma: factor ~ U(1 - a, 1 + a) (shared by the views).
    """

    hflip: float = 0.0
    vflip: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    translate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    gamma: float = 0.0

    def __post_init__(self):
        for name, v in asdict(self).items():
            if not (isinstance(v, (int, float)) and v >= 0):
                raise ValueError(f"augmentation {name} must be a number >= 0, got {v!r}")
        for name in ("hflip", "vflip"):
            if getattr(self, name) > 1:
                raise ValueError(f"augmentation {name} is a probability in [0, 1], "
                                 f"got {getattr(self, name)!r}")
        for name in ("scale", "brightness", "contrast", "gamma"):
            if getattr(self, name) >= 1:
                raise ValueError(f"augmentation {name} must be < 1 (factor 1 +- {name}), "
                                 f"got {getattr(self, name)!r}")

    @property
    def affine(self) -> bool:
        return bool(self.rotate or self.scale or self.translate)

    @property
    def intensity(self) -> bool:
        return bool(self.brightness or self.contrast or self.gamma)

    def sample(self, rng: np.random.Generator, views: int) -> list["ViewParams"]:
        """One example's parameters, one :class:`ViewParams` per view (flips and intensity
        shared, affine per view). Draws from ``rng`` only for enabled operations, horizontal
        flip first (the ``flip`` preset draws exactly one number per example)."""
        hflip = bool(self.hflip > 0 and rng.random() < self.hflip)
        vflip = bool(self.vflip > 0 and rng.random() < self.vflip)
        shared = {"hflip": hflip, "vflip": vflip}
        if self.intensity:
            for name in ("gamma", "contrast", "brightness"):
                a = getattr(self, name)
                shared[name] = float(1.0 + rng.uniform(-a, a)) if a else 1.0
        out = []
        for _ in range(views):
            p = dict(shared)
            if self.affine:
                p["angle"] = float(rng.uniform(-self.rotate, self.rotate)) if self.rotate else 0.0
                p["zoom"] = float(1.0 + rng.uniform(-self.scale, self.scale)) if self.scale else 1.0
                t = self.translate
                p["shift"] = ((float(rng.uniform(-t, t)), float(rng.uniform(-t, t))) if t
                              else (0.0, 0.0))
            out.append(ViewParams(**p))
        return out


@dataclass(frozen=True)
class ViewParams:
    """One view's drawn parameters. shift: (x, y) as fractions of (width, height)."""

    hflip: bool = False
    vflip: bool = False
    angle: float = 0.0
    zoom: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 1.0


#: parameters that change nothing
IDENTITY = ViewParams()


def build_augment(preset: str = "flip", **overrides: Any) -> Augment:
    """The :data:`PRESETS` entry ``preset`` with ``overrides`` (None values ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"augment must be one of {', '.join(PRESETS)}, got {preset!r}")
    aug = Augment(**PRESETS[preset])
    given = {k: float(v) for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(asdict(aug)))
    if unknown:
        raise ValueError(f"unknown augmentation knob(s) {unknown}; known: "
                         f"{', '.join(asdict(aug))}")
    return replace(aug, **given)


def intensity_jitter(img: torch.Tensor, gamma: float = 1.0, contrast: float = 1.0,
                     brightness: float = 1.0) -> torch.Tensor:
    """float ``[..., H, W]`` in [0, 1] -> the same shape: gamma, contrast around the
    foreground mean, brightness, clamped to [0, 1]; pixels equal to 0 (background, padding)
    stay 0 (module docstring)."""
    fg = img > 0
    out = TF.adjust_gamma(img, gamma) if gamma != 1.0 else img
    if contrast != 1.0 and bool(fg.any()):
        m = out[fg].mean()
        out = torch.where(fg, m + contrast * (out - m), out)
    if brightness != 1.0:
        out = out * brightness
    return torch.where(fg, out.clamp(0.0, 1.0), torch.zeros_like(out))


def apply_view(img: torch.Tensor, boxes: np.ndarray, p: ViewParams
               ) -> tuple[torch.Tensor, np.ndarray]:
    """One view: float32 ``[1, H, W]`` in [0, 1] and boxes ``[N, 4]`` xyxy (pixels of that
    image) -> the augmented image (same shape) and boxes (float32 ``[N, 4]``, the enclosing
    box of each moved box, clipped to the image). Order: flips, affine (bilinear, fill 0,
    about the centre), intensity."""
    if p == IDENTITY:
        return img, np.asarray(boxes, np.float32).reshape(-1, 4)
    h, w = int(img.shape[-2]), int(img.shape[-1])
    x = tv_tensors.Image(img)
    b = tv_tensors.BoundingBoxes(torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4)),
                                 format="XYXY", canvas_size=(h, w))
    if p.hflip:
        x, b = TF.horizontal_flip(x), TF.horizontal_flip(b)
    if p.vflip:
        x, b = TF.vertical_flip(x), TF.vertical_flip(b)
    if p.angle or p.zoom != 1.0 or p.shift != (0.0, 0.0):
        kw = dict(angle=p.angle, translate=[p.shift[0] * w, p.shift[1] * h], scale=p.zoom,
                  shear=[0.0, 0.0])
        x = TF.affine(x, **kw, interpolation=TF.InterpolationMode.BILINEAR, fill=0.0)
        b = TF.affine(b, **kw)
    out = x.as_subclass(torch.Tensor)
    if p.gamma != 1.0 or p.contrast != 1.0 or p.brightness != 1.0:
        out = intensity_jitter(out, p.gamma, p.contrast, p.brightness)
    bx = b.as_subclass(torch.Tensor).numpy().astype(np.float32)
    bx[:, [0, 2]] = bx[:, [0, 2]].clip(0, w)
    bx[:, [1, 3]] = bx[:, [1, 3]].clip(0, h)
    return out, bx
