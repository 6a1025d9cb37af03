"""Memory bounds of reading one DICOM file, by design rather than by luck.

Every read of an input goes through these limits, whatever its transfer syntax:

* **Image cap** (:func:`max_image_bytes`): the image a header declares, Rows x Columns x
  Number of Frames x Samples per Pixel x bytes per sample, must be at most
  :data:`DEFAULT_MAX_IMAGE_BYTES` (256 MiB; raise it with ``mammoprep --max-image-bytes`` or
  the environment variable :data:`ENV_MAX_IMAGE_BYTES`). :func:`check_image_size` runs on
  the parsed header before any pixel data is read or any pixel buffer allocated; decoders
  only ever allocate the declared image (the codestream headers are checked against the
  DICOM header, deflated data inflate to at most the declared size), so no codec can expand
  past the cap.
* **Header parsing** (:class:`BoundedReader`, a file wrapper handed to pydicom): at most
  :data:`MAX_HEADER_READS` reads (25,000-50,000 elements and sequence items) and
  :data:`HEADER_BYTES` of values while parsing; values longer than :data:`DEFER_BYTES` are skipped (pydicom's
  ``defer_size``) and only read afterwards, within their own bounds, by
  :func:`resolve_deferred`: the pixel data within the image cap, other values up to
  :data:`MAX_VALUE_BYTES`; a longer private value (or trailing padding) is dropped unread, a
  longer public one is a :class:`~mammoprep.errors.TooLargeError`.

So one worker holds at most the cap's pixels plus 64 MiB of header for any single input.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import TooLargeError

#: Environment variable that raises (or lowers) the image cap, in bytes ("512M", "2G" too).
ENV_MAX_IMAGE_BYTES = "MAMMOPREP_MAX_IMAGE_BYTES"

#: Default image cap: 256 MiB, 4.7x the largest full-field mammogram (Fujifilm Amulet, 50 um:
#: 5928 x 4728 pixels x 2 bytes = 56 MB; Hologic 4096 x 3328 is 27 MB). A 16-bit image of
#: up to 11585 x 11585 pixels passes.
DEFAULT_MAX_IMAGE_BYTES = 256 << 20

#: Most reads while parsing one header (or one pixel data element): each element, sequence
#: item or pixel data fragment costs pydicom 2-4 reads, so this allows 25,000-50,000 of
#: them; the real mammogram headers of the test data take 300-410 reads. Parsing an empty
#: item costs pydicom about 75 us and 700 bytes: the bound keeps a hostile header's parse
#: near 2.5 s and 25 MB (benchmarks/RESULTS.md).
MAX_HEADER_READS = 100_000

#: Values longer than this are not read while parsing (pydicom's ``defer_size``).
DEFER_BYTES = 1 << 20

#: Longest non-pixel value read at all (a deferred value longer than this is dropped if
#: private, refused if public).
MAX_VALUE_BYTES = 16 << 20

#: Most bytes of element values read while parsing one header, plus the deferred non-pixel
#: values loaded afterwards (pixel data are bounded by the image cap instead).
HEADER_BYTES = 64 << 20

#: Allowance beyond the image cap for encapsulated pixel data (offset table, fragment
#: headers, padding) and the pad byte of native data.
PIXEL_MARGIN = 1 << 20

_PIXEL_TAGS = (0x7FE00010, 0x7FE00009, 0x7FE00008)
_TRAILING_PADDING = 0xFFFCFFFC
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str | int) -> int:
    """Bytes from ``268435456``, ``256M``, ``256MiB``, ``2G`` (powers of 1024); ValueError
    for anything else or a size below 1 MiB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a size (e.g. 268435456, 512M, 2G)")
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size < 1 << 20:
        raise ValueError(f"{text!r} is below 1 MiB, smaller than any mammogram")
    return size


def max_image_bytes() -> int:
    """The image cap in bytes: :data:`ENV_MAX_IMAGE_BYTES` if set (the CLI option sets it, so
    worker processes inherit it), else :data:`DEFAULT_MAX_IMAGE_BYTES`."""
    value = os.environ.get(ENV_MAX_IMAGE_BYTES, "").strip()
    if not value:
        return DEFAULT_MAX_IMAGE_BYTES
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ValueError(f"${ENV_MAX_IMAGE_BYTES}: {exc}") from None


def _mib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


_RAISE_HINT = ("a corrupt or hostile header; exclude the file. A genuine image this large: "
               "raise the cap with `mammoprep --max-image-bytes SIZE COMMAND ...` or "
               f"${ENV_MAX_IMAGE_BYTES}=SIZE (e.g. 1G; memory per worker grows with it)")


def declared_image_bytes(ds) -> tuple[int, str] | None:
    """(bytes, description) of the image the header declares: Rows x Columns x Number of
    Frames x Samples per Pixel x bytes per sample, a sample counted as at least 2 bytes
    (every image is worked on as 16-bit; 1-bit data unpack to a byte a pixel). None when
    Rows, Columns or Bits Allocated is missing or not a number (the header checks reject
    those with their own reason)."""
    def number(keyword: str, default: int | None = None) -> int | None:
        from .header import _num

        try:
            value = _num(ds, keyword)
            return default if value is None else int(value)
        except Exception:  # noqa: BLE001 - an unreadable value: the header checks say why
            return default

    rows, cols, bits = number("Rows"), number("Columns"), number("BitsAllocated")
    if rows is None or cols is None or bits is None:
        return None
    frames, spp = max(1, number("NumberOfFrames", 1)), max(1, number("SamplesPerPixel", 1))
    per_sample = max(2, -(-bits // 8))
    total = max(0, rows) * max(0, cols) * frames * spp * per_sample
    text = (f"(0028,0010) Rows {rows} x (0028,0011) Columns {cols} x (0028,0008) "
            f"NumberOfFrames {frames} x (0028,0002) SamplesPerPixel {spp} x {per_sample} bytes "
            f"= {total} bytes ({_mib(total)})")
    return total, text


def check_image_size(ds, path: Path) -> None:
    """:class:`~mammoprep.errors.TooLargeError` when the declared image
    (:func:`declared_image_bytes`) exceeds :func:`max_image_bytes`; called before any pixel
    data is read or decoded."""
    declared = declared_image_bytes(ds)
    cap = max_image_bytes()
    if declared is not None and declared[0] > cap:
        raise TooLargeError(path, "the image the header declares is larger than the memory "
                            "cap", tag="(0028,0010) Rows x (0028,0011) Columns x (0028,0008) "
                            "NumberOfFrames", value=f"{declared[1]}; cap {cap} bytes "
                            f"({_mib(cap)})", hint=_RAISE_HINT)


class LimitExceeded(Exception):
    """Raised by :class:`BoundedReader` (pydicom may wrap it; the reader keeps it in
    ``exceeded`` so the caller reports the real reason)."""


class BoundedReader:
    """A binary file wrapper for pydicom's parser: at most ``max_reads`` read calls (an
    element, item or fragment costs 2-4) and at most ``budget`` bytes read in all, else
    :class:`LimitExceeded` (remembered in ``exceeded``: pydicom turns some exceptions into
    others). Defaults: :data:`MAX_HEADER_READS`, :data:`HEADER_BYTES` (read when the
    reader is made). ``size``: the file's length (a read is counted up to it). Seeks are free, so values
    pydicom defers are skipped without being read. No ``name`` attribute: pydicom then
    never re-opens the file by its name for a deferred value."""

    def __init__(self, fh, max_reads: int | None = None, budget: int | None = None,
                 size: int | None = None):
        self._fh, self._size = fh, size
        self.max_reads = MAX_HEADER_READS if max_reads is None else max_reads
        self.budget = HEADER_BYTES if budget is None else budget
        self.reads = self.used = 0
        self.exceeded: tuple[str, str] | None = None

    def allow(self, max_reads: int, budget: int) -> None:
        """Start a new allowance (e.g. for the pixel data, after the header)."""
        self.max_reads, self.budget, self.reads, self.used = max_reads, budget, 0, 0

    def _fail(self, what: str, value: str):
        self.exceeded = (what, value)
        raise LimitExceeded(what)

    def read(self, n: int = -1) -> bytes:
        if self.exceeded is not None:
            raise LimitExceeded(self.exceeded[0])
        left = self.budget - self.used
        if n is not None and n >= 0 and self._size is not None:  # a read ends at the EOF
            n = min(n, max(0, self._size - self._fh.tell()))
        if n is None or n < 0 or n > left:
            self._fail("bytes", f"a read of {'all' if n is None or n < 0 else n} bytes with "
                       f"{self.used} of {self.budget} already read")
        self.reads += 1
        if self.reads > self.max_reads:
            self._fail("items", f"more than {self.max_reads} reads (over "
                       f"{self.max_reads // 4} elements, items or fragments)")
        data = self._fh.read(n)
        self.used += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    @property
    def closed(self) -> bool:
        return self._fh.closed


def exceeded_error(reader: BoundedReader, path: Path, pixels: bool = False) -> TooLargeError:
    """The TooLargeError for a reader whose limit was hit."""
    what, value = reader.exceeded or ("bytes", "")
    if pixels and what == "items":
        return TooLargeError(path, "the pixel data hold too many fragments; parsing stopped",
                             tag="(7FE0,0010) PixelData", value=value,
                             hint="a corrupt or hostile file; exclude it")
    if pixels:
        return TooLargeError(path, "the pixel data hold more than the memory cap allows",
                             tag="(7FE0,0010) PixelData", value=f"{value}; cap "
                             f"{max_image_bytes()} bytes", hint=_RAISE_HINT)
    if what == "items":
        return TooLargeError(path, "the header holds too many elements and sequence items; "
                             "parsing stopped",
                             tag="(FFFE,E000) Item", value=value,
                             hint="a corrupt or hostile header (e.g. millions of empty "
                                  "items in a private sequence); exclude the file")
    return TooLargeError(path, f"the header's values exceed {_mib(reader.budget)} (pixel data "
                         "aside); parsing stopped", tag="(0000,0000) header",
                         value=value, hint="a corrupt or hostile header (e.g. a huge value "
                                           "inside a sequence); exclude the file")


def resolve_deferred(ds, reader: BoundedReader, size: int, path: Path) -> list[str]:
    """Load or drop every value pydicom deferred (longer than :data:`DEFER_BYTES`), while
    ``reader``'s file is still open, so nothing re-opens the file later: the pixel data
    within the image cap (+ :data:`PIXEL_MARGIN`), other values up to
    :data:`MAX_VALUE_BYTES` (within the header budget); a longer private value or
    (FFFC,FFFC) trailing padding is dropped unread, a longer public value is a
    TooLargeError. Returns the tags dropped, for a debug message."""
    from pydicom.dataelem import RawDataElement

    dropped, pixels = [], []
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or raw.value is not None or not raw.length:
            continue
        name = f"({tag.group:04X},{tag.element:04X})"
        defined = raw.length != 0xFFFFFFFF
        # what a read can return: a value running past the end of the file is cut there
        # (the header checks then call the file truncated, or not DICOM)
        length = min(raw.length, max(0, size - raw.value_tell)) if defined else raw.length
        if int(tag) in _PIXEL_TAGS:
            limit = max_image_bytes() + PIXEL_MARGIN
            if defined and length > limit:
                raise TooLargeError(path, "the pixel data are larger than the memory cap",
                                    tag=f"{name} PixelData", value=f"{raw.length} bytes; cap "
                                    f"{max_image_bytes()} bytes", hint=_RAISE_HINT)
            pixels.append((tag, raw))  # last, with their own allowance
            continue
        if defined and length <= MAX_VALUE_BYTES:
            _load(ds, tag, raw, reader, path)  # within what is left of the header's budget
        elif tag.is_private or int(tag) == _TRAILING_PADDING:
            del ds[tag]
            dropped.append(name)
            continue
        else:
            raise TooLargeError(path, "a header element is longer than mammoprep reads",
                                tag=name, value=f"{raw.length} bytes, limit "
                                f"{MAX_VALUE_BYTES}", hint="a corrupt or hostile header; "
                                "exclude the file")
    for tag, raw in pixels:
        reader.allow(MAX_HEADER_READS, max_image_bytes() + PIXEL_MARGIN)
        _load(ds, tag, raw, reader, path, pixels=True)
    return dropped


def _load(ds, tag, raw, reader: BoundedReader, path: Path, pixels: bool = False) -> None:
    """Read one deferred value through ``reader`` into ``ds``."""
    from pydicom.filereader import read_deferred_data_element

    try:
        ds[tag] = read_deferred_data_element(type(reader), reader, None, raw)
    except Exception:
        if reader.exceeded is not None:
            raise exceeded_error(reader, path, pixels) from None
        raise
