"""JPEG 2000 codestream main header: what reduced-resolution decoding needs to know.

JPEG 2000 is a wavelet code with ``levels`` decomposition levels: dropping the last ``r``
resolution levels (``0 <= r <= levels``) gives the image at ``1 / 2**r`` of its size per
axis, far cheaper than a full decode. Reduced-resolution sample ``i`` sits at original
sample ``i * 2**r`` (the LL band of the 5/3 or 9/7 wavelet is centred there), so a
reduced image maps to original pixel coordinates by a plain factor ``2**r`` per axis.

Only the main header is read (SIZ, COD, COC markers, up to the first tile-part); nothing is
decoded. Raises ``ValueError`` for what is not a JPEG 2000 codestream or JP2 file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SOC_SIZ = b"\xff\x4f\xff\x51"  # start of codestream, then the SIZ marker


@dataclass(frozen=True)
class Header:
    """Main-header facts of a codestream.

    rows, cols: image size in samples (Ysiz - YOsiz, Xsiz - XOsiz).
    y0, x0: image offset on the reference grid (YOsiz, XOsiz); 0 in DICOM in practice.
    precision: bits per sample of the first component; signed: its sign flag.
    components: number of components (1 for grayscale).
    levels: decomposition levels, the fewest over COD and any COC of the main header; at most
        this many resolution levels can be dropped.
    """

    rows: int
    cols: int
    y0: int
    x0: int
    precision: int
    signed: bool
    components: int
    levels: int


def codestream(data: bytes) -> bytes:
    """The raw codestream in ``data``: ``data`` itself, or the content of a JP2 file's
    ``jp2c`` box (some archives wrap DICOM JPEG 2000 frames in JP2)."""
    if data[:4] == SOC_SIZ:
        return data
    start = data.find(SOC_SIZ)
    if start < 0:
        raise ValueError("not a JPEG 2000 codestream (no SOC/SIZ marker)")
    return data[start:]


def parse_header(data: bytes) -> Header:
    """Read SIZ, COD and COC of the main header of ``data`` (codestream or JP2)."""
    cs = codestream(data)
    if len(cs) < 4 + 2 + 38 + 3:
        raise ValueError("JPEG 2000 codestream too short for its SIZ marker")
    # SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz (Ssiz XRsiz YRsiz)*
    _, _, xsiz, ysiz, xo, yo, _, _, _, _, csiz = struct.unpack(">HHIIIIIIIIH", cs[4:42])
    ssiz = cs[42]
    pos = 4 + struct.unpack(">H", cs[4:6])[0]
    cod_levels: int | None = None
    coc_levels: list[int] = []
    while pos + 4 <= len(cs):
        marker, length = struct.unpack(">HH", cs[pos:pos + 4])
        if marker in (0xFF90, 0xFFD9):  # SOT: first tile-part; EOC
            break
        seg = cs[pos + 4:pos + 2 + length]
        if marker == 0xFF52 and len(seg) >= 6:  # COD: Scod SGcod(4) then SPcod[0] = levels
            cod_levels = seg[5]
        elif marker == 0xFF53:  # COC: Ccoc (1 or 2 bytes) Scoc then SPcoc[0] = levels
            idx = 2 if csiz < 257 else 3
            if len(seg) > idx:
                coc_levels.append(seg[idx])
        pos += 2 + length
    if cod_levels is None:
        raise ValueError("JPEG 2000 main header has no COD marker")
    return Header(rows=ysiz - yo, cols=xsiz - xo, y0=yo, x0=xo, precision=(ssiz & 0x7F) + 1,
                  signed=bool(ssiz & 0x80), components=csiz,
                  levels=min([cod_levels, *coc_levels]))


def reduced_shape(header: Header, reduction: int) -> tuple[int, int]:
    """``[rows, cols]`` of the image with ``reduction`` resolution levels dropped (OpenJPEG's
    and the standard's rule: ``ceil(end / 2**r) - ceil(offset / 2**r)`` per axis)."""
    f = 1 << reduction

    def ceil_div(a: int) -> int:
        return -(-a // f)

    return (ceil_div(header.y0 + header.rows) - ceil_div(header.y0),
            ceil_div(header.x0 + header.cols) - ceil_div(header.x0))


def is_htj2k(data: bytes) -> bool:
    """True if the SIZ Rsiz of the codestream in ``data`` has bit 14 set (ISO 15444-15: the
    codestream may use HT code-blocks, which OpenJPH requires)."""
    cs = codestream(data)
    return len(cs) >= 8 and bool(struct.unpack(">H", cs[6:8])[0] & 0x4000)
