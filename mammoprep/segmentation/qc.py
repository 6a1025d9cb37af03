"""Segmentation contact sheet (`mammoprep qc`): one tile per image, suspect images first.

Each tile shows the decoded image (MONOCHROME2, square-root display window so that noisy
backgrounds stay visible), the removed non-zero pixels tinted red, the outline of the kept
region in green, a blue bar on the chest-wall side, and the verdict with its numbers.
A file that cannot be segmented at all gets a dark red tile with its error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import MammoprepError
from ..io.dicom import read_dicom

#: Tile size in pixels (width, height of the image area) and caption height.
TILE_W, TILE_H, CAPTION_H = 240, 300, 46


@dataclass(frozen=True)
class QCItem:
    """One image of the sheet: ``thumb`` is ``uint8 [h, w, 3]`` (already drawn) or None
    for a file that failed; ``verdict`` is 'ok', 'suspect' or 'error'."""

    name: str
    verdict: str
    caption: str
    thumb: np.ndarray | None


def _display(pixels: np.ndarray) -> np.ndarray:
    """``float32 [h, w]`` in 0..1: square root of the 0.5-99.5 percentile window of the
    non-zero levels (shows dark noisy backgrounds and bright labels alike)."""
    nz = pixels[pixels > 0]
    if nz.size == 0:
        return np.zeros(pixels.shape, np.float32)
    hi = float(np.percentile(nz, 99.5))
    d = np.clip(pixels.astype(np.float32) / max(hi, 1.0), 0.0, 1.0)
    return np.sqrt(d)


def _outline(mask: np.ndarray) -> np.ndarray:
    """``bool [h, w]``: mask pixels with a 4-neighbour outside the mask."""
    pad = np.pad(mask, 1, constant_values=False)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return mask & ~inner


def render_tile(pixels: np.ndarray, clean: np.ndarray, chest_wall: str) -> np.ndarray:
    """``uint8 [h, w, 3]`` thumbnail (longer side fitting ``TILE_W x TILE_H``) of
    ``pixels`` (``uint16 [rows, cols]`` before text removal) and ``clean`` (after)."""
    rows, cols = pixels.shape
    step = max(1, int(np.ceil(max(rows / TILE_H, cols / TILE_W))))
    px = pixels[::step, ::step]
    kept = clean[::step, ::step] > 0
    gray = _display(px)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    removed = (px > 0) & ~kept
    rgb[removed] = rgb[removed] * np.array([0.45, 0.25, 0.25]) + np.array([0.55, 0.0, 0.0])
    line = _outline(kept)
    rgb[line] = (0.1, 1.0, 0.1)
    bar = max(2, px.shape[1] // 40)
    if chest_wall == "left":
        rgb[:, :bar] = (0.2, 0.4, 1.0)
    elif chest_wall == "right":
        rgb[:, -bar:] = (0.2, 0.4, 1.0)
    return (rgb * 255).astype(np.uint8)


def qc_item(path: str | Path, *, decoder: str | None = None) -> QCItem:
    """Decode one file, segment it (suspect images are kept, flagged) and draw its tile.
    Typed failures become an 'error' item with the message; never raises for a file."""
    from .foreground import remove_burned_in

    p = Path(path)
    name = f"{p.parent.name}/{p.name}" if p.parent.name else p.name  # L_CC.dcm is common
    try:
        rec = read_dicom(path, decoder=decoder)
        clean, info = remove_burned_in(rec.pixels)
    except MammoprepError as err:
        return QCItem(name, "error", f"{err.kind}: {err.problem}", None)
    except Exception as exc:  # noqa: BLE001 - the sheet shows every file, even a bug
        return QCItem(name, "error", f"{type(exc).__name__}: {exc}", None)
    m = info["qc_measures"]
    caption = (f"{info['qc'].upper()} cw={info['chest_wall'][0].upper()} "
               f"breast {info['breast_fraction']:.0%} rm {info['removed_fraction']:.0%} "
               f"thr {info['threshold']} bg {info['background_level']:.0f} "
               f"brightrm {m['bright_removed']:.0%} far {m['far_touch']:.0%}")
    if info["qc_reason"]:
        caption += f" | {info['qc_reason']}"
    return QCItem(name, info["qc"], caption,
                  render_tile(rec.pixels, clean, info["chest_wall"]))


def order(items: Iterable[QCItem]) -> list[QCItem]:
    """Errors first, then suspect, then ok; by name within each group."""
    rank = {"error": 0, "suspect": 1, "ok": 2}
    return sorted(items, key=lambda it: (rank.get(it.verdict, 0), it.name))


def _wrap(text: str, width: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > width and cur:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    if cur:
        lines.append(cur)
    return lines


def render_sheet(items: list[QCItem], out: str | Path, columns: int = 6) -> Path:
    """Write the contact sheet PNG of ``items`` (in the given order) to ``out``, atomically
    (:func:`mammoprep.atomic.save_image`: a full disk leaves no partial sheet)."""
    from ..atomic import save_image
    from PIL import Image, ImageDraw

    n = max(1, len(items))
    columns = max(1, min(columns, n))
    nrows = -(-n // columns)
    cell_w, cell_h = TILE_W + 8, TILE_H + CAPTION_H + 8
    sheet = Image.new("RGB", (columns * cell_w, nrows * cell_h), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    colour = {"ok": (120, 230, 120), "suspect": (255, 170, 40), "error": (255, 80, 80)}
    for i, it in enumerate(items):
        x0, y0 = (i % columns) * cell_w + 4, (i // columns) * cell_h + 4
        if it.thumb is not None:
            sheet.paste(Image.fromarray(it.thumb), (x0, y0))
        else:
            draw.rectangle([x0, y0, x0 + TILE_W, y0 + TILE_H], fill=(70, 10, 10))
        if it.verdict != "ok":
            draw.rectangle([x0 - 3, y0 - 3, x0 + TILE_W + 2, y0 + TILE_H + 2],
                           outline=colour.get(it.verdict, (255, 80, 80)), width=3)
        lines = [it.name[:40]] + _wrap(it.caption, 40)
        for k, line in enumerate(lines[:4]):
            draw.text((x0, y0 + TILE_H + 2 + 11 * k), line,
                      fill=colour.get(it.verdict, (255, 255, 255)) if k else (230, 230, 230))
    return save_image(out, lambda fh, fmt: sheet.save(fh, format=fmt))
