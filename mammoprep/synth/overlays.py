"""What a synthetic image carries besides the breast: burned-in text labels and the
orientation marker (placed in the background away from the breast), and the artefacts of
real archives (:data:`mammoprep.synth.plan.ARTEFACTS`: grey background, skin-line label,
film edges), each drawn from a random stream of its own."""

from __future__ import annotations

import functools
import numpy as np

from .plan import _key

@functools.lru_cache(maxsize=16)
def _font(px: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px)
    except Exception:  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def _text_alpha(text: str, px: int) -> np.ndarray:
    """Anti-aliased glyph coverage of ``text`` in a tight box, float32 [h, w] in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFont

    font = _font(px)
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(img).text((-left, -top), text, fill=255, font=font)
    if not isinstance(font, ImageFont.FreeTypeFont):  # pragma: no cover - bitmap fallback
        scale = max(1, round(px / 11))
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return np.asarray(img, dtype=np.float32) / 255.0


def _marker_alpha(px: int) -> np.ndarray:
    """Filled right triangle orientation marker, float32 [px, px] in {0, 1}."""
    yy, xx = np.mgrid[0:px, 0:px]
    return (xx <= yy).astype(np.float32)


def _place(occupied_fg: np.ndarray, rects: list[tuple[int, int, int, int]], h: int, w: int,
           top: bool, far_right: bool, inset: int, margin: int) -> tuple[int, int] | None:
    """First free (row, col) for an ``h x w`` label, scanning from a far-side corner.

    Free means: the label grown by ``margin`` does not touch the foreground, and the label
    grown by ``margin // 2`` does not touch labels already placed (``rects`` = y0, x0, y1, x1).
    """
    rows, cols = occupied_fg.shape
    if h + inset > rows or w + inset > cols:
        return None
    ys = range(inset, rows - h + 1, max(1, h // 3)) if top else \
        range(rows - h - inset, -1, -max(1, h // 3))
    xs = list(range(cols - w - inset, -1, -max(1, w // 4))) if far_right else \
        list(range(inset, cols - w + 1, max(1, w // 4)))
    half = margin // 2
    for y in ys:
        for x in xs:
            y0, y1 = max(0, y - margin), min(rows, y + h + margin)
            x0, x1 = max(0, x - margin), min(cols, x + w + margin)
            if occupied_fg[y0:y1, x0:x1].any():
                continue
            if any(y - half < r[2] and r[0] < y + h + half and x - half < r[3]
                   and r[1] < x + w + half for r in rects):
                continue
            return y, x
    return None


class _ArtefactRng:
    """A random stream of its own for the artefacts, so an image without artefacts is
    rendered exactly as before."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(np.random.SeedSequence(_key("artefacts", seed)))


def _grey_background(rng: np.random.Generator, fine: np.ndarray, maxv: int,
                     film: bool) -> np.ndarray:
    """uint16 background: level 8-12 % of ``maxv`` with noise (sigma 0.5 %); for film a
    film base that brightens by up to 6 % of ``maxv`` across the image."""
    rows, cols = fine.shape
    level = rng.uniform(0.08, 0.12) * maxv
    bg = level + 0.005 * maxv * fine
    if film:
        ramp = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None] \
            + 0.5 * np.linspace(0.0, 1.0, cols, dtype=np.float32)[None, :]
        bg = bg + 0.04 * maxv * ramp
    return np.clip(np.rint(bg), 1, maxv).astype(np.uint16)


def _skin_label(rng: np.random.Generator, pixels: np.ndarray, fg: np.ndarray, maxv: int,
                far_right: bool) -> list[int] | None:
    """Burn a label box whose chest-wall-side corner touches the skin line (the breast's
    outermost point, at mid height); returns its box or None when it does not fit."""
    rows, cols = pixels.shape
    h, w = max(6, round(0.05 * rows)), max(8, round(0.12 * cols))
    mid = rows // 2 - h - max(2, round(0.08 * rows))
    on = np.nonzero(fg[mid + h - 1])[0]
    if on.size == 0:
        return None
    x = int(on.max()) - 1 if far_right else int(on.min()) - w + 2
    y = mid
    if x < 0 or x + w > cols:
        return None
    region = pixels[y:y + h, x:x + w]
    box_v = np.uint16(maxv * rng.uniform(0.90, 0.97))
    keep = fg[y:y + h, x:x + w]
    region[...] = np.where(keep, region, box_v)
    return [x, y, x + w, y + h]


def _film_edges(rng: np.random.Generator, pixels: np.ndarray, fg: np.ndarray, maxv: int,
                far_right: bool) -> list[list[int]]:
    """Bright unexposed film along the top, bottom and far borders (1-2 % wide, with a
    ragged inner edge) and a scanner label in the far bottom corner. Returns their boxes."""
    rows, cols = pixels.shape
    boxes = []
    k = max(2, round(rng.uniform(0.01, 0.02) * min(rows, cols)))
    edge_v = np.uint16(maxv * rng.uniform(0.85, 0.95))
    for sl, box in (((slice(0, k), slice(None)), [0, 0, cols, k]),
                    ((slice(rows - k, rows), slice(None)), [0, rows - k, cols, rows])):
        pixels[sl] = edge_v
        boxes.append(box)
    xs = slice(cols - k, cols) if far_right else slice(0, k)
    pixels[:, xs] = edge_v
    boxes.append([cols - k, 0, cols, rows] if far_right else [0, 0, k, rows])
    h, w = max(6, round(0.04 * rows)), max(10, round(0.15 * cols))
    y = rows - k - h - max(2, round(0.02 * rows))
    x = cols - k - w - max(2, round(0.03 * cols)) if far_right else k + max(2, round(0.03 * cols))
    if not fg[max(0, y - 3):y + h + 3, max(0, x - 3):x + w + 3].any():
        pixels[y:y + h, x:x + w] = np.uint16(maxv * 0.98)
        pixels[y + h // 3: y + 2 * h // 3, x + 2: x + w - 2: 3] = np.uint16(maxv * 0.3)
        boxes.append([x, y, x + w, y + h])
    return boxes


def burn_labels(rng: np.random.Generator, labels: tuple[str, ...], pixels: np.ndarray,
                fg: np.ndarray, maxv: int, far_right: bool) -> list[list[int]]:
    """Burn the text ``labels`` (white on a bright block, or plain text for the third line
    half of the time; the date at the bottom) and the orientation marker into the
    background of ``pixels`` (in place), away from the breast ``fg``, on the side away from
    the chest wall. Their boxes ``[x0, y0, x1, y1]``."""
    rows, cols = pixels.shape
    text_boxes: list[list[int]] = []
    rects: list[tuple[int, int, int, int]] = []
    font_px = max(9, round(0.021 * rows))
    margin = max(3, round(0.015 * cols))
    for i, text in enumerate(labels):
        alpha = _text_alpha(text, font_px)
        block = i != 2 or rng.random() < 0.5       # the third line is sometimes plain text
        if block:
            pad = max(2, round(0.3 * font_px))
            alpha = np.pad(alpha, ((pad, pad), (pad, pad)))
        top = i != 1                                # the date goes to the bottom corner
        inset = 0 if rng.random() < 0.6 else margin  # flush labels touch the image border
        pos = _place(fg, rects, alpha.shape[0], alpha.shape[1], top, far_right, inset, margin)
        if pos is None:
            continue
        y, x = pos
        h, w = alpha.shape
        box = _burn_text(rng, pixels[y:y + h, x:x + w], alpha, block, maxv, x, y)
        rects.append((y, x, y + h, x + w))
        text_boxes.append([int(v) for v in box])
    mk = max(5, round(0.03 * rows))
    pos = _place(fg, rects, mk, mk, True, far_right, margin, margin)
    if pos is not None:
        y, x = pos
        alpha = _marker_alpha(mk)
        if not far_right:
            alpha = alpha[:, ::-1]
        region = pixels[y:y + mk, x:x + mk]
        region[...] = np.where(alpha > 0, np.uint16(maxv), region)
        text_boxes.append([int(x), int(y), int(x + mk), int(y + mk)])
    return text_boxes


def _burn_text(rng: np.random.Generator, region: np.ndarray, alpha: np.ndarray, block: bool,
               maxv: int, x: int, y: int) -> list[int]:
    """Burn one text label (``alpha``: its coverage) into ``region`` (a view of the image at
    column ``x``, row ``y``): dark text on a bright block, or bright plain text. Its box."""
    h, w = alpha.shape
    if block:
        block_v = maxv * rng.uniform(0.90, 0.97)
        dark_v = maxv * rng.uniform(0.20, 0.35)
        region[...] = np.round(block_v + (dark_v - block_v) * alpha).astype(np.uint16)
        return [x, y, x + w, y + h]
    val = np.round(maxv * rng.uniform(0.93, 1.0) * alpha).astype(np.uint16)
    region[...] = np.maximum(region, val)
    on = np.nonzero(val)
    return [x + int(on[1].min()), y + int(on[0].min()),
            x + int(on[1].max()) + 1, y + int(on[0].max()) + 1]
