"""JPEG 2000 (lossless and lossy) through OpenJPEG as bundled in Pillow, with
reduced-resolution decoding.

At full resolution this gives the same pixels as the default plug-in (both are OpenJPEG
2.5; tests check) at the same speed, so it comes after it in priority. Its reason to exist
is ``reduction``: OpenJPEG's "reduce" (skip the last resolution levels), which neither
pylibjpeg-openjpeg nor imagecodecs expose. On a 4096x3328 14-bit lossless image one level
(2048x1664) decodes ~4x faster than the full image, two levels ~15x (benchmarks/RESULTS.md).

Pillow scales decoded samples of precision ``p`` to 16 bits (``x << (16 - p)``; to 8 bits
for ``p <= 8``); that shift is undone here exactly.

Capability gaps raise :class:`~mammoprep.decoders.Unsupported` (the next plug-in decodes):
more than one component, signed or over 16-bit samples, a reduced size Pillow rounds
differently from OpenJPEG, an unexpected Pillow mode. Anything Pillow or OpenJPEG raise
beyond those is a data error. Pillow sizes a reduced image as ``(n + 2**(r-1)) // 2**r`` where
OpenJPEG produces ``ceil(n / 2**r)``; where the two differ Pillow fails, so
:func:`reductions` only offers levels at which they agree (for 4096x3328 every level; for
2294x1914 levels 1-2).
"""

from __future__ import annotations

import io

import numpy as np

from . import Unsupported, j2k, single_frame_bytes

REQUIRES = "pip install pillow (its wheels bundle OpenJPEG; a source build needs libopenjp2)"
TRANSFER_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})


def is_available() -> bool:
    from PIL import features

    return bool(features.check_codec("jpg_2000"))


def _pillow_shape(header: j2k.Header, reduction: int) -> tuple[int, int]:
    """The size Pillow allocates for ``reduction`` (its own rounding rule)."""
    power = 1 << reduction
    adjust = power >> 1
    return ((header.rows + adjust) // power, (header.cols + adjust) // power)


def reductions(ds, transfer_syntax: str) -> tuple[int, ...]:
    """Resolution levels this plug-in can drop for the frame of ``ds`` (0 always).

    Level ``r`` is offered when the codestream has at least ``r`` decomposition levels, the
    image offset is 0 (so reduced sample ``i`` is original sample ``i * 2**r``), and
    Pillow's size for ``r`` equals OpenJPEG's, which is then ``ceil(rows / 2**r)`` x
    ``ceil(cols / 2**r)``."""
    header = j2k.parse_header(single_frame_bytes(ds))
    if header.components != 1 or header.y0 or header.x0:
        return (0,)
    out = [0]
    for r in range(1, header.levels + 1):
        if _pillow_shape(header, r) == j2k.reduced_shape(header, r):
            out.append(r)
    return tuple(out)


def decode(ds, transfer_syntax: str, reduction: int = 0) -> np.ndarray:
    """Stored values of the frame, ``[ceil(rows / 2**reduction), ceil(cols / 2**reduction)]``,
    uint16 (uint8 for precision <= 8)."""
    from PIL import Image

    data = j2k.codestream(single_frame_bytes(ds))
    header = j2k.parse_header(data)
    if header.precision > 16 or header.signed or header.components != 1:
        raise Unsupported(f"JPEG 2000 frame is {header.components} component(s) of "
                          f"{'signed ' if header.signed else ''}{header.precision} bits; this "
                          "plug-in decodes one unsigned component of up to 16 bits")
    if reduction and (header.y0 or header.x0 or _pillow_shape(header, reduction)
                      != j2k.reduced_shape(header, reduction)):
        raise Unsupported(f"Pillow sizes a {header.rows}x{header.cols} image reduced by "
                          f"{reduction} level(s) differently from OpenJPEG")
    with Image.open(io.BytesIO(data)) as im:
        if reduction:
            im.reduce = reduction  # OpenJPEG cp_reduce (Pillow's Jpeg2K plug-in attribute)
        im.load()
        mode = im.mode
        arr = np.asarray(im)
    if mode not in ("I;16", "L"):
        raise Unsupported(f"unexpected Pillow mode {mode!r} for a grayscale JPEG 2000 frame")
    shift = (16 if mode == "I;16" else 8) - header.precision
    if shift > 0:
        arr = np.right_shift(arr, shift)
    return np.ascontiguousarray(arr)
