"""Main headers of compressed codestreams, read without decoding: what the codestream says
the image is, to compare with the DICOM header before any decoder allocates memory.

Pure functions over ``bytes`` (one frame's codestream, fragments joined):

* :func:`jpeg_frame`: JPEG baseline / extended / lossless (SOF0-SOF15 but DHT/JPG/DAC) and
  JPEG-LS (SOF55, ``FFF7``): rows, columns, components, precision from the first SOF.
* :func:`j2k_frame`: JPEG 2000 / HTJ2K SIZ (via :mod:`mammoprep.decoders.j2k`).
* :func:`j2k_tile_parts`: walks the tile-parts of a JPEG 2000 codestream by their SOT
  ``Psot`` lengths; they must chain from the end of the main header to the EOC marker and
  cover every tile (inserted or removed bytes break the chain).
* :func:`jpeg_scans`: walks a JPEG / JPEG-LS codestream from SOI to EOI: marker segments
  chain by their lengths, each scan's entropy-coded data run to the next marker, and the
  codestream ends with EOI (a cut codestream has none).
* :func:`rle_segments`: the 64-byte RLE header (segment count and offsets).

Each raises :class:`CodestreamError` (a ``ValueError``) with a one-line reason for what is
structurally wrong; the caller turns it into a typed reject naming the file.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from . import j2k


class CodestreamError(ValueError):
    """A codestream whose structure is broken (missing or inconsistent markers)."""


@dataclass(frozen=True)
class Frame:
    """What a codestream's main header declares.

    rows, cols: image size in samples; components: samples per pixel; precision: bits per
    sample (the largest over components); marker: the header it came from (``"SOF3"``,
    ``"SOF55"``, ``"SIZ"``...).
    """

    rows: int
    cols: int
    components: int
    precision: int
    marker: str


#: JPEG start-of-frame markers (C0-CF without C4 DHT, C8 JPG, CC DAC) and JPEG-LS SOF55.
_SOF = {0xC0 + n for n in range(16)} - {0xC4, 0xC8, 0xCC} | {0xF7}
#: Markers without a length field (RSTm, SOI, EOI, TEM).
_STANDALONE = {0xD0 + n for n in range(8)} | {0xD8, 0xD9, 0x01}


def jpeg_frame(data: bytes) -> Frame:
    """The first SOF of a JPEG or JPEG-LS codestream (SOI, then marker segments)."""
    if data[:2] != b"\xff\xd8":
        raise CodestreamError(f"no JPEG start-of-image marker (FFD8); starts {data[:4].hex()}")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise CodestreamError(f"expected a marker at byte {pos}, found {data[pos]:02x}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == 0xDA:
            raise CodestreamError("scan data (SOS) before any start-of-frame marker")
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if length < 2:
            raise CodestreamError(f"marker FF{marker:02X} at byte {pos} has length {length}")
        if marker in _SOF:
            seg = data[pos + 4:pos + 2 + length]
            if len(seg) < 6:
                raise CodestreamError(f"start-of-frame FF{marker:02X} is cut short")
            precision, rows, cols, comps = struct.unpack(">BHHB", seg[:6])
            name = "SOF55" if marker == 0xF7 else f"SOF{marker - 0xC0}"
            return Frame(rows, cols, comps, precision, name)
        pos += 2 + length
    raise CodestreamError("no start-of-frame marker (SOFn / SOF55) in the codestream")


#: The first marker after a scan's entropy-coded data. JPEG (ITU T.81 B.1.1.5): a data byte
#: FF is followed by a stuffed 00; RSTm (D0-D7) sit inside the scan and FF FF is fill, so any
#: other FF xx is a marker. JPEG-LS (ISO 14495-1 9.1): after a data byte FF the next byte has
#: its high bit clear, so a marker is FF followed by 80-FE (RSTm again inside the scan).
_AFTER_SCAN = {False: re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]"),
               True: re.compile(rb"\xff[\x80-\xcf\xd8-\xfe]")}


def jpeg_scans(data: bytes) -> int:
    """Walk a JPEG or JPEG-LS codestream from SOI to EOI; returns how many scans it has.

    From SOI, marker segments chain by their lengths (fill bytes FF allowed before a
    marker); a segment may not run past the end; each SOS (after a SOFn / SOF55) is
    followed by entropy-coded data up to the next marker (found with one C-speed search,
    :data:`_AFTER_SCAN`); the codestream must end with EOI (``FFD9``), followed by nothing but
    zero padding. A codestream cut anywhere before its EOI fails (the decoders would fill
    the missing rows in silently). Entropy-coded data are not decoded: a flipped bit inside
    them, or a cut scan with an EOI appended, cannot be seen here."""
    end = len(data.rstrip(b"\0")) if data[-1:] == b"\0" else len(data)
    if data[:2] != b"\xff\xd8":
        raise CodestreamError(f"no JPEG start-of-image marker (FFD8); starts {data[:4].hex()}")
    pos, scans, sof = 2, 0, None
    while True:
        if pos + 2 > end:
            raise CodestreamError(f"the codestream ends at byte {end} without its end-of-image "
                                  f"marker (FFD9) after {scans} scan(s): it is truncated")
        if data[pos] != 0xFF:
            raise CodestreamError(f"expected a marker at byte {pos}, found {data[pos]:02x}")
        marker = data[pos + 1]
        if marker == 0xD9:
            break
        if marker == 0xFF or marker in _STANDALONE:  # fill byte; RSTm / TEM outside a scan
            pos += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0] if pos + 4 <= end else 0
        if length < 2 or pos + 2 + length > end:
            raise CodestreamError(f"marker segment FF{marker:02X} at byte {pos} claims "
                                  f"{length} bytes, {end - pos - 2} remain: it is truncated")
        if marker in _SOF:
            sof = marker
        pos += 2 + length
        if marker == 0xDA:
            if sof is None:
                raise CodestreamError("scan data (SOS) before any start-of-frame marker")
            scans += 1
            hit = _AFTER_SCAN[sof == 0xF7].search(data, pos, end)
            if hit is None:
                raise CodestreamError(f"the entropy-coded data of scan {scans} run to the end "
                                      "of the codestream without an end-of-image marker "
                                      "(FFD9): it is truncated")
            pos = hit.start()
    if not scans:
        raise CodestreamError("the codestream ends (EOI) before any scan (SOS)")
    if pos + 2 != end:
        raise CodestreamError(f"{end - pos - 2} bytes follow the end-of-image marker (FFD9) "
                              f"at byte {pos}: bytes were inserted")
    return scans


def j2k_frame(data: bytes) -> Frame:
    """SIZ of a JPEG 2000 / HTJ2K codestream (or JP2 file): the largest component
    precision is reported, so one wide component cannot hide behind a narrow first one."""
    cs = _j2k_codestream(data)
    if len(cs) < 42:
        raise CodestreamError("JPEG 2000 codestream too short for its SIZ marker")
    lsiz = struct.unpack(">H", cs[4:6])[0]
    xsiz, ysiz, xo, yo = struct.unpack(">IIII", cs[8:24])
    (csiz,) = struct.unpack(">H", cs[40:42])
    if lsiz != 38 + 3 * csiz or len(cs) < 4 + lsiz:
        raise CodestreamError(f"SIZ length {lsiz} does not fit {csiz} component(s)")
    if xsiz <= xo or ysiz <= yo:
        raise CodestreamError(f"SIZ image area is empty ({xsiz}x{ysiz} from offset "
                              f"{xo},{yo})")
    precision = max((cs[42 + 3 * i] & 0x7F) + 1 for i in range(csiz)) if csiz else 0
    return Frame(ysiz - yo, xsiz - xo, csiz, precision, "SIZ")


def _j2k_codestream(data: bytes) -> bytes:
    """The raw codestream: ``data`` itself, or the content of a JP2 file's ``jp2c`` box
    (boxes after it are not part of the codestream)."""
    if data[:4] != j2k.SOC_SIZ and data[4:8] == b"jP  ":
        pos = 0
        while pos + 8 <= len(data):
            size, kind = struct.unpack(">I4s", data[pos:pos + 8])
            head = 8
            if size == 1 and pos + 16 <= len(data):
                size, head = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
            end = len(data) if size == 0 else pos + size
            if kind == b"jp2c":
                return _j2k_codestream(data[pos + head:end])
            if size and size < head:
                break
            pos = end
        raise CodestreamError("JP2 file without a codestream box (jp2c)")
    try:
        return j2k.codestream(data)
    except ValueError as exc:
        raise CodestreamError(str(exc)) from None


def j2k_tile_parts(data: bytes) -> int:
    """Walk the tile-parts of a JPEG 2000 codestream; returns how many there are.

    From the end of the main header, each tile-part starts with SOT (``FF90``, ``Lsot`` 10)
    and is ``Psot`` bytes long (``Psot`` 0: up to the EOC, last tile-part only); the walk
    must land exactly on the EOC (``FFD9``), followed by nothing but zero padding, and every
    tile of the SIZ grid must have a tile-part with an index inside it."""
    cs = _j2k_codestream(data)
    j2k_frame(cs)  # validates SIZ first
    xsiz, ysiz, xo, yo, xt, yt, xto, yto = struct.unpack(">IIIIIIII", cs[8:40])
    if not xt or not yt:
        raise CodestreamError("SIZ tile size is 0")
    tiles = (-(-(xsiz - xto) // xt)) * (-(-(ysiz - yto) // yt))
    pos = 4 + struct.unpack(">H", cs[4:6])[0]
    while True:  # main header: marker segments up to the first SOT
        if pos + 4 > len(cs):
            raise CodestreamError("the main header ends without a tile-part (no SOT marker)")
        marker, length = struct.unpack(">HH", cs[pos:pos + 4])
        if marker == 0xFF90:
            break
        if marker >> 8 != 0xFF or length < 2:
            raise CodestreamError(f"main header broken at byte {pos} ({cs[pos:pos + 4].hex()})")
        pos += 2 + length
    seen: set[int] = set()
    count = 0
    end = len(cs)
    while True:
        if cs[pos:pos + 2] == b"\xff\xd9":
            break
        if pos + 12 > end or cs[pos:pos + 4] != b"\xff\x90\x00\x0a":
            raise CodestreamError(f"tile-part {count + 1} does not start with an SOT marker at "
                                  f"byte {pos} (found {cs[pos:pos + 4].hex() or 'end'}): bytes "
                                  "were inserted or removed")
        isot, psot = struct.unpack(">HI", cs[pos + 4:pos + 10])
        if isot >= tiles:
            raise CodestreamError(f"tile-part {count + 1} names tile {isot} of {tiles}")
        seen.add(isot)
        count += 1
        if psot == 0:  # runs to the EOC: must be the last tile-part
            tail = cs.rstrip(b"\0")
            if not tail.endswith(b"\xff\xd9") or len(tail) - 2 < pos + 12:
                raise CodestreamError("the last tile-part (Psot 0) is not followed by EOC")
            pos = len(tail) - 2
            break
        if psot < 14 or pos + psot > end:
            raise CodestreamError(f"tile-part {count} (tile {isot}) claims {psot} bytes, "
                                  f"{end - pos} remain: bytes were removed")
        pos += psot
    if cs[pos + 2:].strip(b"\0"):
        raise CodestreamError(f"{len(cs) - pos - 2} bytes follow the EOC marker: bytes were "
                              "inserted")
    if len(seen) != tiles:
        raise CodestreamError(f"only {len(seen)} of {tiles} tile(s) have tile-parts")
    return count


def rle_segments(data: bytes) -> list[int]:
    """Segment offsets of a DICOM RLE frame (PS3.5 G.3.1): a 64-byte header of 16 unsigned
    32-bit little-endian integers, the segment count (1-15), then each segment's offset:
    the first is 64, they increase and lie inside the fragment, unused ones are 0."""
    if len(data) < 64:
        raise CodestreamError(f"RLE frame of {len(data)} bytes is shorter than its 64-byte "
                              "header")
    n, *offsets = struct.unpack("<16I", data[:64])
    if not 1 <= n <= 15:
        raise CodestreamError(f"RLE header gives {n} segments (1-15 allowed)")
    used = offsets[:n]
    if used[0] != 64:
        raise CodestreamError(f"RLE segment 1 starts at {used[0]}, not 64")
    if any(b <= a for a, b in zip(used, used[1:])) or used[-1] >= len(data):
        raise CodestreamError(f"RLE segment offsets {used} are not increasing inside the "
                              f"{len(data)}-byte frame")
    if any(offsets[n:]):
        raise CodestreamError(f"RLE header has offsets beyond its {n} segment(s)")
    return used


JPEG_FAMILY = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
               "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
J2K_FAMILY = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
              "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")
RLE = "1.2.840.10008.1.2.5"
#: Transfer syntaxes whose codestream ends with an end marker (JPEG and JPEG-LS EOI, JPEG 2000
#: / HTJ2K EOC, all FFD9): one without it is truncated, even where a decoder returns an image
#: (libjpeg-turbo, libjpeg, CharLS and OpenJPEG fill a cut codestream in silently).
ENDS_WITH_FFD9 = frozenset(JPEG_FAMILY + J2K_FAMILY)

#: Transfer syntax UID -> the parser of its codestream's main header.
PARSERS = {**{ts: jpeg_frame for ts in JPEG_FAMILY}, **{ts: j2k_frame for ts in J2K_FAMILY},
           RLE: rle_segments}
