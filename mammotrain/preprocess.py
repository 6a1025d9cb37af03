"""The loader's preprocessing of a stored shard image: 16-bit pixels to [0, 1], resize to the
model input (``square`` stretch or ``letterbox``), boxes moved with the image and back,
normalisation; and the model input size (``S`` or ``ROWSxCOLS``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mammoprep import geometry as box_ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Per-view image preparation (a pure function of its inputs and the flip decision).

    size: model input in pixels: ``S`` (square ``S x S``) or ``(rows, cols)``, e.g.
        ``(1024, 512)`` (:func:`input_hw`, :func:`parse_size`).
    resize: 'square' (stretch to the input shape, as in LUMINA) or 'letterbox' (keep the
        aspect ratio: scaled to fit inside the input, centred, padded with 0 = background).
    intensity: 'bits' (divide by ``2**bits - 1``, the image's bit depth from the sample JSON:
        ``value_bits`` when present, else ``bits``; harmonised shards record the reference's
        depth) or 'u16' (divide by 65535).
    interpolation: the resize filter, 'bilinear' (LUMINA) or 'bicubic' (most timm weights'
        data config; ``--interpolation timm``); antialiased where it shrinks.

    The output stays one grayscale channel in [0, 1]: replication to 3 channels and the
    ImageNet mean/std are applied on the device by the model's :class:`InputNorm` (3x less
    memory and inter-process traffic in the loader).
    """

    size: int | tuple[int, int] = 224
    resize: str = "square"
    intensity: str = "bits"
    interpolation: str = "bilinear"

    def __post_init__(self):
        object.__setattr__(self, "size", parse_size(self.size))
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                             f"got {self.interpolation!r}")
        if self.resize not in ("square", "letterbox"):
            raise ValueError(f"resize must be 'square' or 'letterbox', got {self.resize!r}")
        if self.intensity not in ("bits", "u16"):
            raise ValueError(f"intensity must be 'bits' or 'u16', got {self.intensity!r}")
        if min(self.hw) < 8:
            raise ValueError(f"size must be >= 8 pixels, got {format_size(self.size)}")

    @property
    def hw(self) -> tuple[int, int]:
        """Model input (rows, cols)."""
        return input_hw(self.size)

    def __call__(self, px: np.ndarray, bits: int | None, boxes, flip: bool
                 ) -> tuple[torch.Tensor, np.ndarray]:
        """``uint16 [H, W]`` -> (float32 ``[1, rows, cols]`` in [0, 1], boxes float32
        ``[N, 4]`` xyxy in input pixels)."""
        img = to_unit(px, bits if self.intensity == "bits" else 16)
        fit = resize_square if self.resize == "square" else letterbox
        img, (sx, sy, dx, dy) = fit(img, self.size, self.interpolation)
        b = box_ops.scale(boxes if boxes is not None else np.zeros((0, 4)), sx, sy, dx, dy)
        if flip:
            img = img.flip(-1)
            b = box_ops.hflip(b, self.hw[1])
        return img[None], b.astype(np.float32)


    def to_stored(self, boxes, stored_hw: tuple[int, int]) -> np.ndarray:
        """Boxes ``[N, 4]`` xyxy at the model input (no flip) -> pixels of the stored image
        of size ``stored_hw`` (rows, cols): the inverse of this resize."""
        sx, sy, dx, dy = fit_mapping(stored_hw, self.size, self.resize)[:4]
        return box_ops.unscale(boxes, sx, sy, dx, dy)


def parse_size(value: Any) -> int | tuple[int, int]:
    """A model input size -> ``S`` (square) or ``(rows, cols)``: ints, ``"512"``,
    ``"1024x512"`` / ``"1024,512"`` (rows x cols), ``[1024, 512]``; a square pair becomes
    ``S``. Raises ValueError naming the value."""
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    try:
        nums = [int(p) for p in parts]
        if len(nums) not in (1, 2) or any(float(p) != n for p, n in zip(parts, nums)):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"size must be S or ROWSxCOLS (e.g. 512 or 1024x512), got {value!r}"
                         ) from None
    return nums[0] if len(nums) == 1 or nums[0] == nums[1] else (nums[0], nums[1])


def input_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """Model input (rows, cols) of a size ``S`` or ``(rows, cols)``."""
    size = parse_size(size)
    return (size, size) if isinstance(size, int) else size


def format_size(size: int | Sequence[int]) -> str:
    """``512`` or ``1024x512`` (rows x cols)."""
    h, w = input_hw(size)
    return str(h) if h == w else f"{h}x{w}"


def fit_mapping(hw: tuple[int, int], size: int | tuple[int, int], resize: str
                ) -> tuple[float, float, float, float, int, int]:
    """How an image of ``hw`` (rows, cols) is fitted into the model input ``size`` (``S`` or
    ``(rows, cols)``): box mapping ``(sx, sy, dx, dy)`` for :func:`mammoprep.geometry.scale` and
    the resized ``(rows, cols)`` before padding. 'square' stretches to the input shape;
    'letterbox' scales both axes by one factor (the largest that fits), centred."""
    h, w = hw
    rows, cols = input_hw(size)
    if resize == "square":
        return cols / w, rows / h, 0.0, 0.0, rows, cols
    s = min(rows / h, cols / w)
    nh, nw = min(rows, max(1, round(h * s))), min(cols, max(1, round(w * s)))
    return nw / w, nh / h, float((cols - nw) // 2), float((rows - nh) // 2), nh, nw


def to_unit(px: np.ndarray, bits: int | None) -> torch.Tensor:
    """``uint16 [H, W]`` -> float32 ``[H, W]`` in [0, 1]: ``px / (2**bits - 1)`` (16 if None)."""
    maxv = float((1 << int(bits or 16)) - 1)
    return torch.from_numpy(px.astype(np.float32, copy=False)).div_(maxv).clamp_(0.0, 1.0)


#: resize filters of :class:`Preprocess`
INTERPOLATIONS = ("bilinear", "bicubic")


def _resize(img: torch.Tensor, hw: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Bilinear or bicubic resize of ``[H, W]`` in [0, 1]; antialiased where it shrinks
    (same as plain interpolation where it enlarges, and cheaper); bicubic overshoot clamped
    to [0, 1]."""
    shrink = hw[0] < img.shape[0] or hw[1] < img.shape[1]
    out = F.interpolate(img[None, None], size=hw, mode=mode, align_corners=False,
                        antialias=shrink)[0, 0]
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


def resize_square(img: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear"
                  ) -> tuple[torch.Tensor, tuple[float, ...]]:
    """float ``[H, W]`` -> ``[rows, cols]`` of ``size`` (stretched; ``mode``: bilinear or
    bicubic); returns the box mapping ``(sx, sy, dx, dy)`` for :func:`mammoprep.geometry.scale`."""
    sx, sy, dx, dy, _, _ = fit_mapping(tuple(img.shape), size, "square")
    return _resize(img, input_hw(size), mode), (sx, sy, dx, dy)


def letterbox(img: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear"
              ) -> tuple[torch.Tensor, tuple[float, ...]]:
    """float ``[H, W]`` -> ``[rows, cols]`` of ``size``: aspect kept (the largest scale that
    fits), centred, zero padded; returns the box mapping ``(sx, sy, dx, dy)``."""
    sx, sy, dx, dy, nh, nw = fit_mapping(tuple(img.shape), size, "letterbox")
    out = img.new_zeros(input_hw(size))
    out[int(dy):int(dy) + nh, int(dx):int(dx) + nw] = _resize(img, (nh, nw), mode)
    return out, (sx, sy, dx, dy)


def normalize(img: torch.Tensor, in_chans: int, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """float ``[..., 1, H, W]`` in [0, 1] -> ``[..., C, H, W]``: replicated to 3 channels with
    ``mean``/``std`` (per channel; the backbone's timm data config, default ImageNet), or one
    channel with the means of those values (ImageNet: 0.449, 0.226)."""
    if in_chans == 1:
        return (img - sum(mean) / len(mean)) / (sum(std) / len(std))
    m = img.new_tensor(tuple(mean)).view(3, 1, 1)
    s = img.new_tensor(tuple(std)).view(3, 1, 1)
    return (img - m) / s
