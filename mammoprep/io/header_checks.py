"""Header validation on the reading path: what pydicom parsed is complete, every public
element converts to a value of its VR, and the image attributes mammoprep computes with hold
numbers of their kind, before anything uses them.

Pure checks over a pydicom data set; each raises a typed
:class:`~mammoprep.errors.MammoprepError` naming the file, the tag and the value:

* :func:`check_parsed`: both of the next two, in the order that gives the true reason.
* :func:`check_complete`: the data set does not end inside an element (a cut file).
* :func:`check_values`: every public element, and those in the items of public sequences,
  converts to its VR (pydicom converts lazily, so a 3-byte US would otherwise fail at first
  use, as an "unexpected failure").
* :func:`check_image_numbers`: Rows, Columns, Bits Allocated / Stored are positive integers,
  Number of Frames is at least 1, the Rescale and Pixel Padding values are finite numbers.
* :func:`modality_lut`: the Modality LUT Sequence item (descriptor and table), validated.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InvalidHeaderError, TruncatedError

#: Integer image attributes: keyword -> (tag text, required, smallest valid value).
INTEGERS = {
    "Rows": ("(0028,0010) Rows", True, 1),
    "Columns": ("(0028,0011) Columns", True, 1),
    "BitsAllocated": ("(0028,0100) BitsAllocated", True, 1),
    "BitsStored": ("(0028,0101) BitsStored", True, 1),
    "SamplesPerPixel": ("(0028,0002) SamplesPerPixel", False, 1),
    "NumberOfFrames": ("(0028,0008) NumberOfFrames", False, 1),
    "PixelRepresentation": ("(0028,0103) PixelRepresentation", False, 0),
}
#: Real-valued attributes the pixel path computes with: keyword -> tag text.
REALS = {
    "RescaleSlope": "(0028,1053) RescaleSlope",
    "RescaleIntercept": "(0028,1052) RescaleIntercept",
    "PixelPaddingValue": "(0028,0120) PixelPaddingValue",
    "PixelPaddingRangeLimit": "(0028,0121) PixelPaddingRangeLimit",
}
_UNDEFINED = 0xFFFFFFFF
_HINT = "the header is corrupt; re-export or re-download the image"


def _tag_text(tag) -> str:
    from pydicom.datadict import keyword_for_tag

    return f"({tag.group:04X},{tag.element:04X}) {keyword_for_tag(tag) or 'unknown'}"


def check_parsed(ds, size: int | None, path: Path) -> None:
    """:func:`check_values`, then :func:`check_complete` (``size`` None: skipped, for a
    data set read from inflated bytes). A value that cannot be read is reported as such
    (a bit flip or garbage misaligns everything after it, and the last element then seems
    cut), unless it is the last element and the file ends inside it: then it was cut."""
    last = max(ds.keys()) if len(ds) else None
    raw = None if last is None else ds.get_item(last, keep_deferred=True)  # before conversion
    try:
        check_values(ds, path)
    except InvalidHeaderError as err:
        if size is not None and raw is not None and err.tag == _tag_text(last):
            _check_end(last, raw, size, path)
        raise
    if size is not None and raw is not None:
        _check_end(last, raw, size, path)


def check_complete(ds, size: int, path: Path) -> None:
    """The last element pydicom read must end exactly where the file does, or leave at least
    a whole element header (8 bytes) after it (the Pixel Data a header-only read stopped at).

    pydicom keeps an element cut short with its short value and drops 1-7 trailing bytes
    without a word, so a file cut inside its header would read as a complete header that
    lacks everything after the cut (e.g. no laterality). ``size``: the file's length in
    bytes (the data set read from offset 0 of that file, not an inflated stream). Call it
    before the last element is converted (it reads the raw element)."""
    if len(ds):
        last = max(ds.keys())
        _check_end(last, ds.get_item(last, keep_deferred=True), size, path)


def _check_end(last, raw, size: int, path: Path) -> None:
    from pydicom.dataelem import RawDataElement

    if not isinstance(raw, RawDataElement) or raw.length == _UNDEFINED:
        return  # a sequence or encapsulated data: pydicom warns when its end is missing
    end = raw.value_tell + raw.length
    # a deferred value (not read: None) is present up to the end of the file
    got = len(raw.value) if raw.value is not None else min(raw.length, size - raw.value_tell)
    if got < raw.length or 0 < size - end < 8:
        raise TruncatedError(path, "the file ends inside an element: it is truncated",
                             tag=_tag_text(last),
                             value=f"{raw.length} bytes from byte {raw.value_tell}, "
                                   f"{got} present; file of {size} bytes",
                             hint="re-export or re-download it")


def check_values(ds, path: Path) -> None:
    """Convert every public element (and the public elements of the items of public
    sequences) to its VR's value; a value that cannot be (a US of 3 bytes, a length that
    swallowed its neighbours) is an :class:`~mammoprep.errors.InvalidHeaderError` naming it.
    Private elements are left alone: mammoprep never reads them."""
    stack = [ds]
    while stack:
        current = stack.pop()
        for tag in list(current.keys()):
            if tag.is_private:
                continue
            try:
                elem = current[tag]
            except Exception as exc:  # noqa: BLE001 - any conversion failure: corrupt value
                raw = current.get_item(tag, keep_deferred=True)
                value = getattr(raw, "value", None)
                shown = value[:16] if isinstance(value, bytes) else value
                raise InvalidHeaderError(
                    path, f"an element's value cannot be read as its VR "
                    f"({type(exc).__name__}: {str(exc).split('. ')[0]})",
                    tag=_tag_text(tag),
                    value=f"VR {getattr(raw, 'VR', '?')}, {getattr(raw, 'length', '?')} "
                          f"bytes: {shown!r}", hint=_HINT) from None
            if elem.VR == "SQ" and elem.value:
                stack.extend(elem.value)


def _single(ds, keyword: str, tag: str, path: Path):
    """The one value of ``keyword`` (None if absent or empty); several values are invalid."""
    value = ds.get(keyword)
    if value is None or value == "" or value == b"":
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        values = list(value)
        if len(values) != 1:
            raise InvalidHeaderError(path, f"{len(values)} values where the image attribute "
                                     "has one", tag=tag, value=values, hint=_HINT)
        value = values[0]
    return value


def _number(value) -> float | None:
    try:
        return float(value.decode("ascii") if isinstance(value, bytes) else value)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None


def check_image_numbers(ds, path: Path) -> None:
    """The image attributes of :data:`INTEGERS` hold integers of at least their minimum
    (required ones present), those of :data:`REALS` finite numbers."""
    for keyword, (tag, required, least) in INTEGERS.items():
        value = _single(ds, keyword, tag, path)
        if value is None:
            if required:
                raise InvalidHeaderError(path, "a required image attribute is missing",
                                         tag=tag, value=ds.get(keyword),
                                         hint="the header is incomplete; re-export the image")
            continue
        number = _number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            raise InvalidHeaderError(path, "an image attribute is not an integer", tag=tag,
                                     value=value, hint=_HINT)
        if number < least:
            what = "a frame count" if keyword == "NumberOfFrames" else "it"
            raise InvalidHeaderError(path, f"an image attribute is out of range ({what} must "
                                     f"be at least {least})", tag=tag, value=int(number),
                                     hint=_HINT)
    for keyword, tag in REALS.items():
        value = _single(ds, keyword, tag, path)
        if value is None:
            continue
        number = _number(value)
        if number is None or not math.isfinite(number):
            raise InvalidHeaderError(path, "an image attribute is not a finite number",
                                     tag=tag, value=value, hint=_HINT)


def modality_lut(ds, path: Path) -> tuple[int, np.ndarray, int] | None:
    """The first item of (0028,3000) Modality LUT Sequence: ``(first value mapped, table
    uint16 [entries], bits per entry 1..16)``; None when the sequence is absent.

    The item must hold (0028,3002) LUT Descriptor (3 values: entries, 0 meaning 65536, first
    value mapped, bits 1-16) and (0028,3006) LUT Data with at least one entry (extra entries
    are dropped, missing ones clip to the last, as :func:`~mammoprep.io.photometric.lut_lookup`
    does); a sequence without an item, or an item without them, is an invalid header."""
    seq = ds.get("ModalityLUTSequence")
    if seq is None:
        return None
    tag = "(0028,3000) ModalityLUTSequence"
    if not len(seq):
        raise InvalidHeaderError(path, "the Modality LUT Sequence is present but holds no "
                                 "item", tag=tag, value="0 items", hint=_HINT)
    item = seq[0]
    desc, raw = item.get("LUTDescriptor"), item.get("LUTData")
    raw = [raw] if isinstance(raw, int) else raw  # one entry (VM 1)
    if desc is None or raw is None or len(raw) == 0:
        missing = "(0028,3002) LUTDescriptor" if desc is None else "(0028,3006) LUTData"
        raise InvalidHeaderError(path, f"the Modality LUT item lacks {missing}", tag=tag,
                                 value=f"item with {sorted(e.keyword for e in item)}",
                                 hint=_HINT)
    desc = [int(v) for v in (desc if hasattr(desc, "__len__") else [desc])]
    if len(desc) != 3 or not 1 <= desc[2] <= 16 or desc[0] < 0:
        raise InvalidHeaderError(path, "the Modality LUT Descriptor is not (entries, first "
                                 "value, bits 1-16)", tag="(0028,3002) LUTDescriptor",
                                 value=desc, hint=_HINT)
    if isinstance(raw, bytes):
        wide = desc[2] > 8
        raw = np.frombuffer(raw[: len(raw) - len(raw) % 2] if wide else raw,
                            dtype="<u2" if wide else "u1")
    table = np.asarray(raw).astype(np.uint16)[: desc[0] or 65536]
    if not table.size:
        raise InvalidHeaderError(path, "the Modality LUT Data hold no entry",
                                 tag="(0028,3006) LUTData", value=f"{len(raw)} bytes",
                                 hint=_HINT)
    return desc[1], table, desc[2]
