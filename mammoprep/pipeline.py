"""The per-image preprocessing chain shared by `harmonize` and `shard`.

``read -> remove burned-in text -> (harmonise, if the energy rule says so) -> (crop to the
breast, resize)``; each step is a pure ``Record -> Record`` function from its own module.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .geometry import Transform, bbox_long_side, bbox_xyxy, hflip_box
from .record import Record


@dataclass(frozen=True)
class PrepConfig:
    """Options of the chain (frozen; written next to every output).

    reference: path of a reference (.npz, DICOM dir or file) or None (no harmonisation).
    only_energy: None (harmonise all) or 'high' / 'low': harmonise only that energy class.
    size: longer side of the stored image in pixels, None to keep full resolution.
    crop: crop to the breast bounding box before resizing.
    keep_suspect: store images whose segmentation fails the quality gate (flagged
        ``qc = 'suspect'``) instead of rejecting them with ``segmentation_suspect``.
    decode_scale: 'full' decodes every image at full resolution; 'auto' lets JPEG 2000 be
        decoded at ``1 / 2**r`` of its size when the breast crop still has at least
        ``AUTO_MARGIN * r * size`` pixels on its longer side (:func:`auto_reduction`); only
        with ``size``. Text removal, foreground and harmonisation then run on the
        reduced image; transforms, boxes and pixel spacing account for it.
    """

    reference: str | None = None
    only_energy: str | None = None
    energy_table: str | None = None
    voi: bool = False
    decoder: str | None = None
    size: int | None = None
    crop: bool = True
    orient_left: bool = False
    keep_suspect: bool = False
    decode_scale: str = "full"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


#: ``decode_scale='auto'`` drops ``r`` JPEG 2000 resolution levels only while the decoded
#: breast crop keeps at least ``AUTO_MARGIN * r * size`` pixels on its longer side (so the
#: stored image is always shrunk, and more so the coarser the level). Measured on synthetic
#: and real images harmonised to a low-energy reference (benchmarks/RESULTS.md, "Reduced-
#: resolution JPEG 2000"): level 1 at a crop/size ratio >= 1.35 and level 2 at >= 1.8 stay
#: below 0.6 % / 0.7 % of full scale (mean absolute difference on the foreground).
AUTO_MARGIN = 1.35
#: The breast crop's longer side, as a fraction of the image's longer side, assumed before
#: decoding (typical mammograms: 0.7-1.0). A smaller crop found after decoding triggers one
#: re-decode at the level its true size allows (:func:`auto_reduction`).
AUTO_CROP_FRACTION = 0.7
DECODE_SCALES = ("auto", "full")


def auto_reduction(crop_long: float, size: int, levels: int = 16) -> int:
    """The most resolution levels ``r`` (at most ``levels``) for which a breast crop whose
    longer side is ``crop_long`` original pixels keeps ``crop_long / 2**r >=
    AUTO_MARGIN * r * size`` pixels; 0 when even one level would not."""
    r = 0
    while r < levels and crop_long / (1 << (r + 1)) >= AUTO_MARGIN * (r + 1) * size:
        r += 1
    return r


def decode_min_side(cfg: "PrepConfig", rows: int, cols: int) -> int | None:
    """The longer side, pixels, to decode an image of ``rows`` x ``cols`` at under ``cfg``
    (None: full decode). ``auto`` with a ``size``: the side of :func:`auto_reduction`'s
    level for a crop of ``AUTO_CROP_FRACTION`` of the image (the whole image with
    ``crop=False``)."""
    if cfg.decode_scale not in DECODE_SCALES:
        raise ValueError(f"decode_scale must be one of {DECODE_SCALES}, got {cfg.decode_scale!r}")
    if cfg.decode_scale == "full" or not cfg.size:
        return None
    long = max(rows, cols)
    r = auto_reduction(long * (AUTO_CROP_FRACTION if cfg.crop else 1.0), cfg.size)
    return -(-long // (1 << r)) if r else None


def redecode_min_side(rec: Record, cfg: "PrepConfig") -> int | None:
    """After text removal of a reduced decode: the longer side to decode again at when the
    breast crop found is too small for the level used (None when it is large enough or
    nothing was reduced; the original size when no level fits)."""
    r = int(rec.meta.get("decode_reduction") or 0)
    bbox = rec.meta.get("breast_bbox")
    if not r or not (cfg.crop and cfg.size) or not bbox:
        return None
    crop_long = bbox_long_side(bbox) << r
    new = auto_reduction(crop_long, cfg.size)
    if new >= r:
        return None
    long = max(int(rec.meta["rows"]), int(rec.meta["columns"]))
    return -(-long // (1 << new))


class Prepared:
    """Loaded-once resources for a config: the reference and the energy table. ``salt``:
    the run's pseudonymisation salt, used when the reference is pooled from DICOMs."""

    def __init__(self, cfg: PrepConfig, salt: bytes | str | None = None):
        from .harmonise.energy import load_energy_table

        self.cfg = cfg
        self.table = load_energy_table(cfg.energy_table)
        self.reference = None
        if cfg.reference:
            from .harmonise.reference import load_reference

            self.reference = load_reference(cfg.reference, keep_suspect=cfg.keep_suspect,
                                            salt=salt, energy_table=cfg.energy_table)


_PREPARED: dict[tuple, Prepared] = {}


def _stamp(path: str | None) -> tuple | None:
    """(size, mtime) of ``path`` (a folder: of the folder entry), None if absent."""
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if st else None


def prepared(cfg: PrepConfig, salt: bytes | str | None = None) -> Prepared:
    """:class:`Prepared` of ``cfg``, once per process (a reference given as a DICOM folder
    is pooled once per worker, not once per shard or file). A reference or energy table
    file replaced on disk since is loaded again."""
    key = (cfg, salt, _stamp(cfg.reference), _stamp(cfg.energy_table))
    if key not in _PREPARED:
        if len(_PREPARED) >= 4:
            _PREPARED.clear()
        _PREPARED[key] = Prepared(cfg, salt)
    return _PREPARED[key]


def read_image(path: str | Path, prep: Prepared, salt: bytes | str | None = None,
               min_side: int | None = None) -> Record:
    """The chain's first step alone: decode ``path`` under ``prep``'s options (``min_side``:
    see :func:`mammoprep.io.dicom.read_dicom`'s ``min_size``; None = full resolution)."""
    from .io.dicom import read_dicom

    cfg = prep.cfg
    return read_dicom(path, voi=cfg.voi, salt=salt, decoder=cfg.decoder, min_size=min_side)


def full_decode(cfg: PrepConfig) -> bool:
    """True if the chain decodes every image at full resolution under ``cfg`` (then a file
    can be read ahead with :func:`read_image` and passed to :func:`preprocess`)."""
    return cfg.decode_scale == "full" or not cfg.size


def preprocess(path: str | Path, prep: Prepared, salt: bytes | str | None = None,
               read: Record | None = None) -> Record:
    """Read, remove text, and harmonise where the metadata-only energy rule says so.

    ``read``: ``path`` already decoded at full resolution by :func:`read_image` (a reader
    thread reading ahead); only when :func:`full_decode` holds for ``prep.cfg``."""
    from .harmonise.energy import energy_class, should_harmonize
    from .segmentation.foreground import orient_left, remove_text

    cfg = prep.cfg
    if read is not None and not full_decode(cfg):
        raise ValueError("a pre-read record needs decode_scale 'full' or no size")

    def read_clean(min_side: int | None) -> Record:
        rec = read if read is not None else read_image(path, prep, salt, min_side)
        return remove_text(rec, keep_suspect=cfg.keep_suspect)

    first = None
    if cfg.decode_scale != "full" and cfg.size:
        from .io.header import read_header

        head = read_header(path, salt=salt)
        first = decode_min_side(cfg, int(head["rows"] or 0), int(head["columns"] or 0))
    rec = read_clean(first)
    again = redecode_min_side(rec, cfg)
    if again:
        rec = read_clean(again)
    energy = energy_class(rec.meta.get("manufacturer", ""), rec.meta.get("model", ""),
                          prep.table, path=path)
    rec = rec.evolve(energy=energy)
    if cfg.orient_left:
        rec = orient_left(rec)
    harmonise = prep.reference is not None and should_harmonize(rec.meta, cfg.only_energy,
                                                                prep.table, path)
    if harmonise:
        from .harmonise.match import harmonize

        rec = harmonize(rec, prep.reference, in_place=True)  # the text-free copy is ours
    return rec.evolve(harmonized=bool(harmonise))


def prepare_for_model(path: str | Path, prep: Prepared, cfg: PrepConfig,
                      salt: bytes | str | None = None) -> tuple[Record, Transform]:
    """One file as the model sees it: :func:`preprocess` (read, text removal, harmonisation)
    then :func:`crop_and_resize` to ``cfg.size`` (``cfg.crop``). Returns the stored image
    (``uint16 [rows, cols]`` with its meta) and the original -> stored
    :class:`~mammoprep.geometry.Transform`. The one preparation of ``shard`` (the PNGs in
    the shards) and of ``mammotrain predict --dicom``, so a model meets at inference exactly
    the pixels it was trained on."""
    rec = preprocess(path, prep, salt=salt)
    return crop_and_resize(rec, cfg.size, cfg.crop)


def crop_and_resize(rec: Record, size: int | None, crop: bool = True) -> tuple[Record, Transform]:
    """Crop to ``meta['breast_bbox']`` ([ymin, xmin, ymax, xmax]) and resize so the longer
    side is ``size`` (aspect kept; area averaging when shrinking). Returns the new record and
    the original->stored :class:`~mammoprep.geometry.Transform` (which includes any flip made by
    orientation normalisation, and any reduced-resolution decode: ``meta['decode_reduction']
    = r`` means pixel ``i`` is original pixel ``i * 2**r``)."""
    px = rec.pixels
    h0, w0 = px.shape
    f = 1 << int(rec.meta.get("decode_reduction") or 0)
    original = (int(rec.meta["rows"]), int(rec.meta["columns"])) if f > 1 else (h0, w0)
    if crop and rec.meta.get("breast_bbox"):
        x0, y0, x1, y1 = bbox_xyxy(rec.meta["breast_bbox"])
    else:
        x0, y0, x1, y1 = 0, 0, w0, h0
    flipped = bool(rec.meta.get("flipped", False))
    # the bbox is in the (possibly flipped) pixel frame; express the crop in original columns
    crop_orig = hflip_box((x0, y0, x1, y1), w0) if flipped else (x0, y0, x1, y1)
    out = px[y0:y1, x0:x1]
    scale = 1.0
    if size:
        scale = size / max(out.shape)
        new_h = max(1, int(round(out.shape[0] * scale)))
        new_w = max(1, int(round(out.shape[1] * scale)))
        from .resize import resize_uint16  # Numba: imported only where images are resized

        out = resize_uint16(out, new_h, new_w)
    out = np.ascontiguousarray(out)
    if f > 1:  # decoded pixels -> original pixels (ends clipped to the original image)
        crop_orig = (crop_orig[0] * f, crop_orig[1] * f, min(crop_orig[2] * f, original[1]),
                     min(crop_orig[3] * f, original[0]))
        scale /= f
    t = Transform(crop_xyxy=crop_orig, scale=scale, flipped=flipped, original_size=original,
                  stored_size=tuple(out.shape))
    return rec.evolve(pixels=out, step="crop_resize", transform=t.to_dict()), t


def original_bbox(meta: dict[str, Any]) -> list[int] | None:
    """``meta['breast_bbox']`` ([ymin, xmin, ymax, xmax], max exclusive, in the record's
    possibly flipped frame) in original pixel units: times ``2**decode_reduction``, ends
    clipped to the original ``rows`` x ``columns``. None when there is no bbox."""
    bbox = meta.get("breast_bbox")
    if not bbox:
        return None
    f = 1 << int(meta.get("decode_reduction") or 0)
    if f == 1:
        return [int(v) for v in bbox]
    rows, cols = int(meta["rows"]), int(meta["columns"])
    y0, x0, y1, x1 = (int(v) * f for v in bbox)
    return [y0, x0, min(y1, rows), min(x1, cols)]


def stored_pixel_spacing(meta: dict[str, Any], t: Transform) -> list[float] | None:
    """[row, col] mm per stored pixel: the header's spacing (``meta['pixel_spacing_mm']`` is
    that of the decoded pixels, ``2**decode_reduction`` times the header's) over the
    transform's scale (stored pixels per original pixel). None without a spacing."""
    sp = meta.get("pixel_spacing_mm")
    if not sp:
        return None
    f = 1 << int(meta.get("decode_reduction") or 0)
    return [round(float(v) / f / t.scale, 6) for v in sp]
