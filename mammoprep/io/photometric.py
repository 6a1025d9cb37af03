"""Grey-level transforms of DICOM PS3.3 C.11, as plain functions over arrays.

Order (the standard's pipeline): stored values -> Modality LUT / Rescale -> (optional) VOI
LUT or window -> MONOCHROME1 inversion -> Pixel Padding set to 0. All inputs and outputs are
integer arrays ``[rows, cols]``; outputs are ``uint16``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UINT16_MAX = 65535


def bits_for(max_value: float) -> int:
    """Smallest bit depth (1..16) whose range 0..2^b-1 holds ``max_value``."""
    return int(min(16, max(1, int(np.ceil(np.log2(max(float(max_value), 1.0) + 1.0))))))


def to_uint16(values: np.ndarray) -> np.ndarray:
    """Round half away from zero and clip to 0..65535 (never truncate)."""
    if values.dtype == np.uint16:
        return values
    if np.issubdtype(values.dtype, np.integer):
        return np.clip(values, 0, UINT16_MAX).astype(np.uint16, copy=False)
    return np.clip(np.rint(values), 0, UINT16_MAX).astype(np.uint16, copy=False)


def rescale(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Modality Rescale: ``slope * x + intercept``, rounded, as uint16."""
    if slope == 1 and intercept == 0:
        return to_uint16(stored)
    return to_uint16(stored.astype(np.float64) * slope + intercept)


def lut_lookup(values: np.ndarray, first_mapped: int, table: np.ndarray) -> np.ndarray:
    """A DICOM LUT: below ``first_mapped`` -> table[0], above the last entry -> table[-1]."""
    idx = np.clip(values.astype(np.int64) - int(first_mapped), 0, len(table) - 1)
    return table[idx]


def invert(values: np.ndarray, bits: int, inplace: bool = False) -> np.ndarray:
    """MONOCHROME1 -> MONOCHROME2: ``(2^bits - 1) - x`` on values clipped to the range.

    inplace: overwrite ``values`` (a writeable uint16 array the caller owns) when nothing
    needs clipping, instead of allocating the result."""
    top = (1 << int(bits)) - 1
    if values.dtype == np.uint16 and values.size and int(values.max()) <= top:
        # nothing to clip: one pass (the max is cheap)
        out = values if inplace and values.flags.writeable else None
        return np.subtract(np.uint16(top), values, out=out)
    out = np.minimum(values, top).astype(np.uint16, copy=False)   # one new array ...
    return np.subtract(np.uint16(top), out, out=out)               # ... inverted in place


def window(values: np.ndarray, center: float, width: float, function: str,
           out_bits: int) -> np.ndarray:
    """VOI window (PS3.3 C.11.2.1.2/3) onto 0..2^out_bits-1.

    function: LINEAR, LINEAR_EXACT or SIGMOID. Returns uint16.
    """
    x = values.astype(np.float64)
    ymax = float((1 << int(out_bits)) - 1)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        y = ymax / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {width}")
        y = np.clip(((x - center) / width + 0.5) * ymax, 0.0, ymax)
        y[x <= center - width / 2] = 0.0
        y[x > center + width / 2] = ymax
    elif function == "LINEAR":
        if width < 1:
            raise ValueError(f"LINEAR window width must be >= 1, got {width}")
        lo = center - 0.5 - (width - 1) / 2
        hi = center - 0.5 + (width - 1) / 2
        span = max(width - 1, 1e-12)
        y = np.clip(((x - (center - 0.5)) / span + 0.5) * ymax, 0.0, ymax)
        y[x <= lo] = 0.0
        y[x > hi] = ymax
    else:
        raise ValueError(f"unknown VOI LUT Function {function!r}")
    return to_uint16(y)


@dataclass(frozen=True)
class VOIChoice:
    """Which VOI transform to apply, chosen deterministically, and how to describe it."""

    kind: str                     # "lut" or "window"
    description: str
    first_mapped: int = 0
    table: np.ndarray | None = None
    lut_bits: int = 16
    center: float = 0.0
    width: float = 0.0
    function: str = "LINEAR"


def _multi(value) -> list:
    if value is None:
        return []
    try:
        return list(value)
    except TypeError:
        return [value]


def choose_voi(ds) -> VOIChoice | None:
    """First VOI LUT Sequence item, else the first Window Center/Width pair, else None."""
    seq = ds.get("VOILUTSequence")
    if seq:
        item = seq[0]
        desc = [int(v) for v in item.LUTDescriptor]
        n = desc[0] or 65536
        first = desc[1]
        raw = item.LUTData
        table = np.asarray(raw if not isinstance(raw, bytes)
                           else np.frombuffer(raw, dtype="<u2" if desc[2] > 8 else "u1"))
        table = table.astype(np.uint16)[:n]
        expl = str(item.get("LUTExplanation", "") or "")
        return VOIChoice("lut", f"VOI LUT Sequence item 1 of {len(seq)}"
                         + (f" ({expl})" if expl else ""), first_mapped=first,
                         table=table, lut_bits=int(desc[2]))
    centers = _multi(ds.get("WindowCenter"))
    widths = _multi(ds.get("WindowWidth"))
    if centers and widths:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        expl = _multi(ds.get("WindowCenterWidthExplanation"))
        name = f" ({expl[0]})" if expl else ""
        return VOIChoice("window", f"window 1 of {len(centers)}{name}: center "
                         f"{float(centers[0]):g}, width {float(widths[0]):g}, {function}",
                         center=float(centers[0]), width=float(widths[0]), function=function)
    return None


def apply_voi(values: np.ndarray, choice: VOIChoice, out_bits: int) -> tuple[np.ndarray, int]:
    """Apply a chosen VOI transform. Returns (uint16 values, bit depth of the result)."""
    if choice.kind == "lut":
        assert choice.table is not None
        out = lut_lookup(values, choice.first_mapped, choice.table)
        return out.astype(np.uint16), max(1, min(16, choice.lut_bits))
    return window(values, choice.center, choice.width, choice.function, out_bits), out_bits
