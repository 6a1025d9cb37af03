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

from .geometry import Transform, bbox_xyxy, hflip_box
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
        reduced image; the crop box, stored size and transform are the same as under
        'full' (:func:`read_geometry`, :func:`crop_and_resize`).
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
DECODE_SCALES = ("auto", "full")
#: The crop box of a JPEG 2000 image that ``auto`` could decode reduced is found, at every
#: decode scale, on one coarse decode: the coarsest level offered whose longer side keeps at
#: least this many pixels (and at least ``size / 2``), so that the stored geometry is the
#: same whatever the pixels are decoded at (:func:`geometry_level`).
GEOMETRY_MIN_SIDE = 512
#: ... and that decode's breast box is grown by this many of its pixels a side: its blurred
#: skin line can sit a cell inside the full-resolution mask's (measured on the real images
#: of ../shared/testdata: up to 2 original pixels beyond a one-cell margin at level 2).
GEOMETRY_PAD_CELLS = 2


def auto_reduction(crop_long: float, size: int, levels: int = 16) -> int:
    """The most resolution levels ``r`` (at most ``levels``) for which a breast crop whose
    longer side is ``crop_long`` original pixels keeps ``crop_long / 2**r >=
    AUTO_MARGIN * r * size`` pixels; 0 when even one level would not."""
    r = 0
    while r < levels and crop_long / (1 << (r + 1)) >= AUTO_MARGIN * (r + 1) * size:
        r += 1
    return r


def geometry_level(rows: int, cols: int, size: int | None, offered: tuple[int, ...]) -> int:
    """The JPEG 2000 level (resolution levels dropped) whose decode gives the crop box of a
    ``rows`` x ``cols`` image stored at ``size``, at every decode scale: the largest level in
    ``offered`` that keeps ``max(GEOMETRY_MIN_SIDE, size / 2)`` pixels on the longer side
    (a box cell of at most two stored pixels). 0 (the box comes from the decoded pixels
    themselves) without a size, or when even the whole image could not be decoded reduced
    under ``auto`` (:func:`auto_reduction`), or when no level fits."""
    long = max(rows, cols)
    if not size or auto_reduction(long, size) == 0:
        return 0
    need = max(GEOMETRY_MIN_SIDE, size / 2)
    return max((r for r in offered if r >= 1 and long / (1 << r) >= need), default=0)


def pad_box(bbox, cell: int, rows: int, cols: int) -> list[int]:
    """A ``breast_bbox`` ``[y0, x0, y1, x1]`` (original pixels) grown by ``cell`` pixels on
    every side and clipped to the ``rows`` x ``cols`` image."""
    y0, x0, y1, x1 = (int(v) for v in bbox)
    return [max(y0 - cell, 0), max(x0 - cell, 0), min(y1 + cell, rows), min(x1 + cell, cols)]


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
               min_side: int | tuple[int, int] | None = None, decoder: str | None = None
               ) -> Record:
    """The chain's first step alone: decode ``path`` under ``prep``'s options (``min_side``:
    see :func:`mammoprep.io.dicom.read_dicom`'s ``min_size``; None = full resolution;
    ``decoder``: a plug-in to prefer over the config's)."""
    from .io.dicom import read_dicom

    cfg = prep.cfg
    return read_dicom(path, voi=cfg.voi, salt=salt, decoder=decoder or cfg.decoder,
                      min_size=min_side)


def full_decode(cfg: PrepConfig) -> bool:
    """True if the chain decodes every image at full resolution under ``cfg`` (then a file
    can be read ahead with :func:`read_image` and passed to :func:`preprocess`)."""
    return cfg.decode_scale == "full" or not cfg.size


def j2k_levels(path: str | Path, transfer_syntax: str) -> tuple[int, ...]:
    """Resolution levels the reducing JPEG 2000 plug-in (``pillow-openjpeg``) can drop for
    ``path`` (always 0; only 0 for other transfer syntaxes, without the plug-in, or when
    the codestream header cannot be read: the decode then says why)."""
    from . import decoders
    from .decoders import pillow_j2k

    if (transfer_syntax not in pillow_j2k.TRANSFER_SYNTAXES
            or not decoders.is_available("pillow-openjpeg")):
        return (0,)
    from .io.dicom import open_dataset

    try:
        ds, ts = open_dataset(Path(path), header_only=False)
        return pillow_j2k.reductions(ds, ts)
    except Exception:  # noqa: BLE001 - the full read reports what is wrong with the file
        return (0,)


@dataclass(frozen=True)
class Geometry:
    """The crop box of an image, found on a coarse JPEG 2000 decode (:func:`read_geometry`).

    level: resolution levels dropped for it. box: ``[y0, x0, y1, x1]`` original pixels
    (unflipped frame), the breast box of that decode times ``2**level``, grown by
    ``GEOMETRY_PAD_CELLS`` cells (``2**level`` pixels each) a side and clipped to the
    image. raw: that decode (before text removal), kept so that the pixels can be taken
    from it when ``auto`` picks its level. offered: the levels the plug-in offers.
    """

    level: int
    box: list[int]
    raw: Record
    offered: tuple[int, ...]


def read_geometry(path: str | Path, prep: Prepared, salt: bytes | str | None,
                  head: dict[str, Any]) -> Geometry | None:
    """The crop box of ``path`` from its decode at :func:`geometry_level` (always with the
    ``pillow-openjpeg`` plug-in, so that it is the same on every machine and decode scale);
    None when the crop comes from the decoded pixels (no size or crop, not JPEG 2000, no
    level offered) or no breast is found at that level."""
    from .segmentation.foreground import NoBreastError, remove_text

    cfg = prep.cfg
    rows, cols = int(head["rows"] or 0), int(head["columns"] or 0)
    if not (cfg.size and cfg.crop) or not geometry_level(rows, cols, cfg.size, (1,)):
        return None  # not even level 1 would be used: nothing to open the codestream for
    offered = j2k_levels(path, str(head.get("transfer_syntax") or ""))
    level = geometry_level(rows, cols, cfg.size, offered)
    if not level:
        return None
    from .decoders import reduced_size

    raw = read_image(path, prep, salt, reduced_size(rows, cols, level), "pillow-openjpeg")
    if int(raw.meta.get("decode_reduction") or 0) != level:
        return None
    try:
        bbox = original_bbox(remove_text(raw, keep_suspect=True).meta)
    except NoBreastError:
        return None
    return Geometry(level, pad_box(bbox, GEOMETRY_PAD_CELLS << level, rows, cols), raw,
                    offered)


def auto_level(cfg: PrepConfig, head: dict[str, Any], geo: Geometry | None) -> int:
    """The level ``decode_scale='auto'`` decodes at: :func:`auto_reduction` of the crop
    box's longer side (the whole image with ``crop=False``), the largest level offered up to
    it; 0 (full) when the crop box has no :class:`Geometry` (it then comes from the decoded
    pixels, which must be the full ones to be the same as ``full``'s)."""
    if cfg.decode_scale not in DECODE_SCALES:
        raise ValueError(f"decode_scale must be one of {DECODE_SCALES}, got {cfg.decode_scale!r}")
    rows, cols = int(head["rows"] or 0), int(head["columns"] or 0)
    if cfg.decode_scale == "full" or not cfg.size:
        return 0
    if not cfg.crop:  # the decoder takes the largest level it offers up to this one
        return auto_reduction(max(rows, cols), cfg.size)
    if geo is None:
        return 0
    y0, x0, y1, x1 = geo.box
    want = auto_reduction(max(y1 - y0, x1 - x0), cfg.size)
    return max((r for r in geo.offered if r <= want), default=0)


def preprocess(path: str | Path, prep: Prepared, salt: bytes | str | None = None,
               read: Record | None = None) -> Record:
    """Read, remove text, and harmonise where the metadata-only energy rule says so.

    ``read``: ``path`` already decoded at full resolution by :func:`read_image` (a reader
    thread reading ahead); only when :func:`full_decode` holds for ``prep.cfg``.

    With a ``size`` and ``crop``, a JPEG 2000 image that ``auto`` could decode reduced has
    its crop box found on one coarse decode (:func:`read_geometry`) at every decode scale,
    recorded as ``meta['crop_box']``; :func:`crop_and_resize` then stores the same geometry
    for ``auto`` and ``full``."""
    from .harmonise.energy import energy_class, should_harmonize
    from .io.header import read_header
    from .segmentation.foreground import orient_left, remove_text

    cfg = prep.cfg
    if read is not None and not full_decode(cfg):
        raise ValueError("a pre-read record needs decode_scale 'full' or no size")
    geo, level = None, 0
    if cfg.size:
        head = read.meta if read is not None else read_header(path, salt=salt)
        geo = read_geometry(path, prep, salt, head)
        level = auto_level(cfg, head, geo)
    if read is None and level:
        from .decoders import reduced_size

        rows, cols = int(head["rows"]), int(head["columns"])
        read = geo.raw if geo is not None and geo.level == level else read_image(
            path, prep, salt, reduced_size(rows, cols, level))
    rec = remove_text(read if read is not None else read_image(path, prep, salt),
                      keep_suspect=cfg.keep_suspect)
    if geo is not None:
        rec = rec.evolve(crop_box=list(geo.box))
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
    """Crop to the breast and resize so the longer side is ``size`` (aspect kept; area
    averaging when shrinking). Returns the new record and the original->stored
    :class:`~mammoprep.geometry.Transform` (which includes any flip made by orientation
    normalisation).

    The crop box (:func:`crop_box`) and the stored size are computed in original pixels
    (``meta['rows']`` x ``meta['columns']``) from the box and ``size`` alone, whatever the
    pixels were decoded at: a reduced decode (``meta['decode_reduction'] = r``: decoded
    pixel ``i`` covers original pixels ``[i 2**r, (i + 1) 2**r)``, the last one clipped to
    the image) is resampled onto exactly that grid, the box mapped into it by ``1 / 2**r``
    (fractional ends included)."""
    px = rec.pixels
    f = 1 << int(rec.meta.get("decode_reduction") or 0)
    rows, cols = (int(rec.meta["rows"]), int(rec.meta["columns"])) if f > 1 else px.shape
    flipped = bool(rec.meta.get("flipped", False))
    x0, y0, x1, y1 = crop_box(rec.meta, (rows, cols), px.shape[1], crop)
    h, w = y1 - y0, x1 - x0
    # the box in decoded-pixel units of the record's (possibly flipped) frame
    u0, u1 = (px.shape[1] - x1 / f, px.shape[1] - x0 / f) if flipped else (x0 / f, x1 / f)
    v0, v1 = y0 / f, y1 / f
    scale = 1.0
    if size:
        scale = size / max(h, w)
        new_h, new_w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        from .resize import resize_window_uint16  # Numba: imported where images are resized

        out = resize_window_uint16(px, (v0, v1), (u0, u1), new_h, new_w)
    elif f > 1:
        raise ValueError("a reduced-resolution decode is only stored resized (give a size)")
    else:
        out = np.ascontiguousarray(px[y0:y1, int(u0):int(u1)])
    t = Transform(crop_xyxy=(x0, y0, x1, y1), scale=scale, flipped=flipped,
                  original_size=(rows, cols), stored_size=tuple(out.shape))
    return rec.evolve(pixels=out, step="crop_resize", transform=t.to_dict()), t


def crop_box(meta: dict[str, Any], original: tuple[int, int], width: int, crop: bool = True
             ) -> tuple[int, int, int, int]:
    """The crop window ``(x0, y0, x1, y1)`` in original pixels of the unflipped frame:
    ``meta['crop_box']`` (found on a coarse decode, :func:`read_geometry`) when present, else
    ``meta['breast_bbox']`` (in the record's frame: mirrored back when ``meta['flipped']``,
    decoded ``width`` pixels wide; times ``2**decode_reduction``, ends clipped), else (or
    without ``crop``) the whole ``original`` = (rows, cols) image."""
    rows, cols = original
    if not crop or not meta.get("breast_bbox"):
        return 0, 0, cols, rows
    if meta.get("crop_box"):
        return bbox_xyxy(meta["crop_box"])
    box = bbox_xyxy(meta["breast_bbox"])
    x0, y0, x1, y1 = hflip_box(box, width) if meta.get("flipped") else box
    f = 1 << int(meta.get("decode_reduction") or 0)
    return x0 * f, y0 * f, min(x1 * f, cols), min(y1 * f, rows)


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
