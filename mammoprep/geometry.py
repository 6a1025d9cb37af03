"""Box and coordinate conventions: the one place boxes, breast boxes and the crop/resize
transform are defined and converted.

Two box formats, both in pixel coordinates where pixel (row r, column c) covers
[c, c+1) x [r, r+1), ends exclusive:

* **boxes** (lesions, burned-in text, anything a model sees): ``float [N, 4]`` **xyxy**,
  ``(x0, y0, x1, y1)`` = (xmin, ymin, xmax, ymax); a box enclosing pixels c0..c1 is
  (c0, r0, c1 + 1, r1 + 1). Stored as such in shards (``boxes``, ``boxes_original``) and
  label tables.
* **breast_bbox** (the segmented breast, ``Record.meta['breast_bbox']`` and the
  ``breast_bbox`` manifest column): ``int [4]`` **yxyx**, ``[y0, x0, y1, x1]`` =
  [ymin, xmin, ymax, xmax], row first, so that ``pixels[y0:y1, x0:x1]`` is the breast. The
  stored format stays as it is (manifests must not change); code converts it with
  :func:`bbox_xyxy` and flips it with :func:`hflip_bbox`.

A :class:`Transform` maps original stored-DICOM pixel coordinates to the coordinates of the
image written into a shard: crop, uniform scale, optional horizontal flip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Transform:
    """Original -> stored coordinates: ``x' = (x - x0) * scale`` (then ``w - x'`` if flipped).

    crop_xyxy: the kept window of the original image, pixels (x0, y0, x1, y1), exclusive end.
    scale: stored pixels per original pixel (same on both axes).
    original_size / stored_size: [rows, cols].
    """

    crop_xyxy: tuple[int, int, int, int]
    scale: float
    flipped: bool
    original_size: tuple[int, int]
    stored_size: tuple[int, int]

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Transform":
        return cls(tuple(d["crop_xyxy"]), float(d["scale"]), bool(d["flipped"]),
                   tuple(d["original_size"]), tuple(d["stored_size"]))

    def apply(self, boxes) -> np.ndarray:
        """Map ``[N, 4]`` xyxy original-pixel boxes to stored-pixel boxes, clipped to the image."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        x0, y0 = self.crop_xyxy[0], self.crop_xyxy[1]
        b[:, [0, 2]] = (b[:, [0, 2]] - x0) * self.scale
        b[:, [1, 3]] = (b[:, [1, 3]] - y0) * self.scale
        h, w = self.stored_size
        if self.flipped:
            b[:, [0, 2]] = w - b[:, [2, 0]]
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
        return b


    def invert(self, boxes) -> np.ndarray:
        """Map ``[N, 4]`` xyxy stored-pixel boxes back to original-pixel boxes (the inverse of
        :meth:`apply` for boxes inside the stored image)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        if self.flipped:
            b[:, [0, 2]] = self.stored_size[1] - b[:, [2, 0]]
        b[:, [0, 2]] = b[:, [0, 2]] / self.scale + self.crop_xyxy[0]
        b[:, [1, 3]] = b[:, [1, 3]] / self.scale + self.crop_xyxy[1]
        return b


def hflip(boxes, width: float) -> np.ndarray:
    """Horizontal flip of ``[N, 4]`` xyxy boxes in an image ``width`` pixels wide."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = width - b[:, [2, 0]]
    return b


#: ``LabelRow.boxes_frame`` of boxes drawn on the image mirrored to put the chest wall left.
CHEST_WALL_LEFT = "chest_wall_left"


def from_chest_wall_left(boxes, width: float, chest_wall: str | None) -> np.ndarray:
    """``[N, 4]`` xyxy boxes drawn on the image after the publisher mirrored it so that the
    chest wall is on the left (EMBED's ``ROI_coords``) -> boxes in the stored pixels of an
    image ``width`` pixels wide whose chest wall is on side ``chest_wall`` ('left' |
    'right'): mirrored for 'right', unchanged for 'left'."""
    if chest_wall not in ("left", "right"):
        raise ValueError(f"chest_wall must be 'left' or 'right', not {chest_wall!r}")
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return hflip(b, width) if chest_wall == "right" else b.copy()


def label_boxes(boxes: list, frame: str | None, meta: dict, width: int, laterality: str
                ) -> list:
    """A view's label boxes (``LabelRow.boxes`` of frame ``LabelRow.boxes_frame``) in its
    original stored pixels: unchanged, or for :data:`CHEST_WALL_LEFT` mirrored when this
    image's chest wall is on the right (:func:`from_chest_wall_left`). The side is the one
    text removal found in the pixels (``meta['chest_wall']``; ``meta['flipped']`` by
    ``orient_left``: it was on the right), else the usual one of ``laterality`` (R: right).
    width: original columns."""
    if not boxes or frame != CHEST_WALL_LEFT:
        return boxes
    side = "right" if meta.get("flipped") else meta.get("chest_wall")
    if side not in ("left", "right"):
        side = "right" if laterality == "R" else "left"
    return from_chest_wall_left(boxes, width, side).tolist()


def scale(boxes, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """``x * sx + dx``, ``y * sy + dy`` for ``[N, 4]`` xyxy boxes (resize and letterbox)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = b[:, [0, 2]] * sx + dx
    b[:, [1, 3]] = b[:, [1, 3]] * sy + dy
    return b


def unscale(boxes, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """The inverse of :func:`scale`: ``(x - dx) / sx``, ``(y - dy) / sy``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = (b[:, [0, 2]] - dx) / sx
    b[:, [1, 3]] = (b[:, [1, 3]] - dy) / sy
    return b


def xyxy_to_cxcywh(boxes, width: float, height: float) -> np.ndarray:
    """Pixel xyxy -> normalised (cx, cy, w, h) in [0, 1], the detector's target format."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx = (b[:, 0] + b[:, 2]) / 2 / width
    cy = (b[:, 1] + b[:, 3]) / 2 / height
    return np.stack([cx, cy, (b[:, 2] - b[:, 0]) / width, (b[:, 3] - b[:, 1]) / height], 1)


def cxcywh_to_xyxy(boxes, width: float, height: float) -> np.ndarray:
    """Normalised (cx, cy, w, h) -> pixel xyxy."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0 = (b[:, 0] - b[:, 2] / 2) * width
    y0 = (b[:, 1] - b[:, 3] / 2) * height
    return np.stack([x0, y0, x0 + b[:, 2] * width, y0 + b[:, 3] * height], 1)


def box_iou(a, b) -> np.ndarray:
    """IoU ``float64 [N, M]`` of xyxy boxes ``a [N, 4]`` and ``b [M, 4]`` (any units, the same
    for both); 0 where the union is empty."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_area(boxes) -> np.ndarray:
    """Areas ``float64 [N]`` of xyxy boxes (0 for inverted ones)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def bbox_xyxy(bbox) -> tuple[int, int, int, int]:
    """A ``breast_bbox`` ``[y0, x0, y1, x1]`` as an int xyxy box ``(x0, y0, x1, y1)``."""
    y0, x0, y1, x1 = (int(v) for v in bbox)
    return x0, y0, x1, y1


def hflip_box(box, width: int) -> tuple:
    """One xyxy box ``(x0, y0, x1, y1)`` mirrored in an image ``width`` pixels wide (its
    values' type kept: ints stay ints)."""
    x0, y0, x1, y1 = box
    return width - x1, y0, width - x0, y1


def hflip_bbox(bbox, width: int) -> list:
    """A ``breast_bbox`` ``[y0, x0, y1, x1]`` mirrored in an image ``width`` pixels wide."""
    return [bbox[0], width - bbox[3], bbox[2], width - bbox[1]]


def bbox_long_side(bbox) -> int:
    """The longer side, in pixels, of a ``breast_bbox`` ``[y0, x0, y1, x1]`` (at least 1)."""
    return max(int(bbox[2]) - int(bbox[0]), int(bbox[3]) - int(bbox[1]), 1)

