"""The per-image preprocessing chain shared by `harmonize` and `shard`.

``read -> remove burned-in text -> (harmonise, if the energy rule says so) -> (crop to the
breast, resize)``; each step is a pure ``Record -> Record`` function from its own module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .boxes import Transform
from .record import Record
from .resize import resize_uint16


@dataclass(frozen=True)
class PrepConfig:
    """Options of the chain (frozen; written next to every output).

    reference: path of a reference (.npz, DICOM dir or file) or None (no harmonisation).
    only_energy: None (harmonise all) or 'high' / 'low': harmonise only that energy class.
    size: longer side of the stored image in pixels, None to keep full resolution.
    crop: crop to the breast bounding box before resizing.
    """

    reference: str | None = None
    only_energy: str | None = None
    energy_table: str | None = None
    voi: bool = False
    decoder: str | None = None
    size: int | None = None
    crop: bool = True
    orient_left: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


class Prepared:
    """Loaded-once resources for a config: the reference and the energy table."""

    def __init__(self, cfg: PrepConfig):
        from .energy import load_energy_table

        self.cfg = cfg
        self.table = load_energy_table(cfg.energy_table)
        self.reference = None
        if cfg.reference:
            from .reference import load_reference

            self.reference = load_reference(cfg.reference)


def preprocess(path: str | Path, prep: Prepared, salt: bytes | str | None = None) -> Record:
    """Read, remove text, and harmonise where the metadata-only energy rule says so."""
    from .dicomio import read_dicom
    from .energy import energy_class, should_harmonize
    from .foreground import orient_left, remove_text

    cfg = prep.cfg
    rec = read_dicom(path, voi=cfg.voi, salt=salt, decoder=cfg.decoder)
    energy = energy_class(rec.meta.get("manufacturer", ""), rec.meta.get("model", ""),
                          prep.table)
    rec = remove_text(rec).evolve(energy=energy)
    if cfg.orient_left:
        rec = orient_left(rec)
    harmonise = prep.reference is not None and should_harmonize(rec.meta, cfg.only_energy,
                                                                prep.table)
    if harmonise:
        from .harmonize import harmonize

        rec = harmonize(rec, prep.reference)
    return rec.evolve(harmonized=bool(harmonise))


def crop_and_resize(rec: Record, size: int | None, crop: bool = True) -> tuple[Record, Transform]:
    """Crop to ``meta['breast_bbox']`` ([ymin, xmin, ymax, xmax]) and resize so the longer
    side is ``size`` (aspect kept; area averaging when shrinking). Returns the new record and
    the original->stored :class:`~mammoprep.boxes.Transform` (which includes any flip made by
    orientation normalisation)."""
    px = rec.pixels
    h0, w0 = px.shape
    if crop and rec.meta.get("breast_bbox"):
        y0, x0, y1, x1 = (int(v) for v in rec.meta["breast_bbox"])
    else:
        y0, x0, y1, x1 = 0, 0, h0, w0
    flipped = bool(rec.meta.get("flipped", False))
    # the bbox is in the (possibly flipped) pixel frame; express the crop in original columns
    crop_orig = (w0 - x1, y0, w0 - x0, y1) if flipped else (x0, y0, x1, y1)
    out = px[y0:y1, x0:x1]
    scale = 1.0
    if size:
        scale = size / max(out.shape)
        new_h = max(1, int(round(out.shape[0] * scale)))
        new_w = max(1, int(round(out.shape[1] * scale)))
        out = resize_uint16(out, new_h, new_w)
    out = np.ascontiguousarray(out)
    t = Transform(crop_xyxy=crop_orig, scale=scale, flipped=flipped, original_size=(h0, w0),
                  stored_size=tuple(out.shape))
    return rec.evolve(pixels=out, step="crop_resize", transform=t.to_dict()), t
