"""DICOM file -> :class:`~mammoprep.record.Record`: the one place pixels are read.

``read_dicom(path)`` returns ``uint16 [rows, cols]`` pixels in MONOCHROME2 polarity (higher =
brighter = denser) and identity-free metadata. :func:`mammoprep.io.header.read_header`
gives the same metadata without decoding pixels (for fast planning of large archives);
:mod:`mammoprep.io.paths` finds the files. Every failure is a typed
:class:`~mammoprep.errors.MammoprepError` naming the file, the tag and the value.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .. import decoders
from . import header_checks, limits, photometric
from ..decoders import codestream
from ..errors import (DecodeError, ImplausibleImageError, InvalidHeaderError, MammoprepError,
                      NoContrastError, NoPixelDataError, PixelLengthError, TruncatedError,
                      UnsupportedImageError)
from ..identity import resolve_salt
from ..record import Record
from .header import (EXPLICIT_BE, EXPLICIT_LE, IMPLICIT_LE, _num, _tag, _text, header_meta,
                     inversion_decision, open_dataset)


def _check_image(ds, path: Path, ts: str) -> None:
    """Reject what is not one grayscale unsigned frame, before decoding."""
    if "PixelData" not in ds or not ds["PixelData"].value:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        value = "absent" if "PixelData" not in ds else "empty"
        rows, cols = _num(ds, "Rows"), _num(ds, "Columns")
        hint = ("this is a header-only or non-image object; use `mammoprep inspect "
                "--header-only` for its metadata")
        if rows and cols and not other:  # an image header without its pixels
            hint = (f"the header describes a {int(rows)}x{int(cols)} image but the file holds "
                    "no pixels: it is truncated before (7FE0,0010), or a header-only export; "
                    "re-export or re-download it")
        raise NoPixelDataError(path, "no pixel data" + (f" (only {other[0]})" if other else ""),
                               tag="(7FE0,0010) PixelData", value=value, hint=hint)
    header_checks.check_image_numbers(ds, path)
    limits.check_image_size(ds, path)  # open_dataset checked it too, before reading pixels
    if ts in (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, "1.2.840.10008.1.2.1.99"):
        have, need = len(ds.PixelData), _expected_bytes(ds)
        if have < need:
            raise TruncatedError(path, "pixel data is shorter than the header says",
                                 tag="(7FE0,0010) PixelData",
                                 value=f"{have} bytes, expected {need}",
                                 hint="the file is truncated; re-export or re-download it")
        if have > need + 1:  # PS3.5 8.1.1: at most one pad byte to an even length
            raise PixelLengthError(
                path, "pixel data is longer than Rows x Columns x Bits Allocated / 8 (plus "
                "one pad byte)", tag="(7FE0,0010) PixelData",
                value=f"{have} bytes, header implies {need}",
                hint="(0028,0010) Rows, (0028,0011) Columns or (0028,0100) Bits Allocated "
                     "do not describe the data; re-export the image")
    elif ts in CODESTREAM_END:
        _check_codestream_end(ds, path, ts)
    photo = _text(ds, "PhotometricInterpretation").upper()
    spp = int(_num(ds, "SamplesPerPixel") or 1)
    if photo not in ("MONOCHROME1", "MONOCHROME2") or spp != 1:
        raise UnsupportedImageError(
            path, "colour or non-grayscale image", tag=_tag("PhotometricInterpretation"),
            value=f"{photo or 'absent'} (SamplesPerPixel {spp})",
            hint="mammograms are MONOCHROME1/MONOCHROME2; exclude this file")
    frames = int(_num(ds, "NumberOfFrames") or 1)
    if frames != 1:
        raise UnsupportedImageError(
            path, "multi-frame image", tag=_tag("NumberOfFrames"), value=frames,
            hint="mammoprep takes single 2-D views; export the 2-D (or synthesised 2-D) view")
    if int(_num(ds, "PixelRepresentation") or 0) != 0:
        raise UnsupportedImageError(
            path, "signed pixel data", tag=_tag("PixelRepresentation"), value=1,
            hint="mammogram detector values are unsigned; this is not a mammogram")
    if int(_num(ds, "BitsStored")) > 16:
        raise UnsupportedImageError(path, "more than 16 bits stored", tag=_tag("BitsStored"),
                                    value=int(_num(ds, "BitsStored")),
                                    hint="rescale to 16 bits before preprocessing")
    if ts in codestream.PARSERS:
        _check_codestream(ds, path, ts)


def _check_codestream(ds, path: Path, ts: str) -> None:
    """The codestream's own header must describe the image the DICOM header does, before
    any decoder runs (it allocates what the codestream says).

    Rule (PS3.5 8.2 and the files vendors write): codestream rows, columns and components
    equal (0028,0010) Rows, (0028,0011) Columns and (0028,0002) SamplesPerPixel; its
    precision (SOF P, SIZ Ssiz + 1) lies in 1..(0028,0100) BitsAllocated. Precision may
    differ from (0028,0101) BitsStored both ways: GE writes 16-bit JPEG lossless SOFs for
    12-bit data (BitsStored 12, BitsAllocated 16; unused high bits are masked after
    decoding), and a precision below BitsStored cannot widen the values. JPEG 2000
    tile-parts must chain to the EOC (:func:`~mammoprep.decoders.codestream.j2k_tile_parts`),
    JPEG / JPEG-LS scans run from SOI to EOI (:func:`~mammoprep.decoders.codestream.jpeg_scans`);
    an RLE frame has SamplesPerPixel x ceil(BitsAllocated / 8) segments inside the fragment.
    A JPEG SOF height of 0 (rows given later by a DNL marker, not used by DICOM writers) is
    a mismatch like any other.
    """
    def corrupt(exc: Exception) -> DecodeError:
        return DecodeError(path, f"the compressed codestream is corrupt ({exc})",
                           tag="(7FE0,0010) PixelData", value=decoders._ts_name(ts),
                           hint="the codestream is corrupt; re-export or re-download the "
                                "image")

    structural = (codestream.CodestreamError, ValueError, StopIteration, struct.error)
    try:
        data = decoders.single_frame_bytes(ds)
        frame = codestream.PARSERS[ts](data)
    except structural as exc:
        raise corrupt(exc) from None
    if ts == codestream.RLE:
        need = int(_num(ds, "SamplesPerPixel") or 1) * -(-int(_num(ds, "BitsAllocated")) // 8)
        if len(frame) != need:
            raise corrupt(f"RLE header gives {len(frame)} segment(s), SamplesPerPixel x "
                          f"BitsAllocated / 8 needs {need}")
        return
    header = {"rows": int(_num(ds, "Rows")), "cols": int(_num(ds, "Columns")),
              "components": int(_num(ds, "SamplesPerPixel") or 1)}
    tags = {"rows": "(0028,0010) Rows", "cols": "(0028,0011) Columns",
            "components": "(0028,0002) SamplesPerPixel"}
    for key, want in header.items():
        got = getattr(frame, key)
        if got != want:
            raise InvalidHeaderError(
                path, f"the codestream's {frame.marker} header disagrees with the DICOM "
                f"header", tag=tags[key], value=f"{want} in the DICOM header, {got} in "
                f"{frame.marker}", hint="header and pixel data do not belong together or "
                "the codestream is corrupt; re-export or re-download the image")
    bits = int(_num(ds, "BitsAllocated"))
    if not 1 <= frame.precision <= bits:
        raise InvalidHeaderError(
            path, f"the codestream's {frame.marker} precision does not fit Bits Allocated",
            tag="(0028,0100) BitsAllocated",
            value=f"{bits} in the DICOM header, {frame.precision}-bit samples in "
                  f"{frame.marker}",
            hint="header and pixel data do not belong together or the codestream is "
                 "corrupt; re-export or re-download the image")
    walk = codestream.j2k_tile_parts if frame.marker == "SIZ" else codestream.jpeg_scans
    try:  # tile-parts chain to the EOC / marker segments and scans run from SOI to EOI
        walk(data)
    except structural as exc:
        raise corrupt(exc) from None


#: Compressed transfer syntaxes whose codestream must end with FFD9 (see
#: :data:`mammoprep.decoders.codestream.ENDS_WITH_FFD9`).
CODESTREAM_END = codestream.ENDS_WITH_FFD9


def _check_codestream_end(ds, path: Path, ts: str) -> None:
    """The last fragment of an encapsulated codestream must end with FFD9 (trailing zero
    padding allowed)."""
    from pydicom.encaps import generate_fragments

    last = b""
    try:
        for frag in generate_fragments(ds.PixelData):
            last = frag
    except (ValueError, EOFError, KeyError, TypeError) as exc:
        raise TruncatedError(path, f"the encapsulated pixel data cannot be split into "
                             f"fragments ({exc})", tag="(7FE0,0010) PixelData",
                             value=f"{len(ds.PixelData)} bytes",
                             hint="the file is truncated or corrupt; re-export it") from None
    if not last.rstrip(b"\0").endswith(b"\xff\xd9"):
        raise TruncatedError(path, "the compressed codestream ends without its end marker "
                             "(FFD9): it is truncated or corrupt", tag="(7FE0,0010) PixelData",
                             value=f"{decoders._ts_name(ts)}, last bytes "
                                   f"{last[-4:].hex() or 'none'}",
                             hint="re-export or re-download the image")


def _expected_bytes(ds) -> int:
    """Native pixel data length the header implies: Rows x Columns x Samples x Frames x
    Bits Allocated / 8 (without the pad byte to an even length)."""
    bits = int(_num(ds, "BitsAllocated"))
    n = (int(_num(ds, "Rows")) * int(_num(ds, "Columns"))
         * int(_num(ds, "SamplesPerPixel") or 1) * max(1, int(_num(ds, "NumberOfFrames") or 1)))
    return (n * bits + 7) // 8


def read_dicom(path: str | os.PathLike, *, voi: bool = False, salt: str | bytes | None = None,
               decoder: str | None = None,
               min_size: int | tuple[int, int] | None = None) -> Record:
    """Decode one DICOM file into a MONOCHROME2 ``uint16 [rows, cols]`` record.

    Args:
        path: a DICOM file (Part 10, or a raw data set without File Meta).
        voi: apply the VOI LUT / window (first VOI LUT Sequence item, else first window)
            before inversion. Off by default: harmonisation works on detector values.
        salt: pseudonymisation salt (see :mod:`mammoprep.identity`).
        decoder: preferred decoder plug-in name (see :mod:`mammoprep.decoders`).
        min_size: None (default) decodes the full image. Else the pixels only need to be at
            least this large: ``(rows, cols)``, or an int for the longer side. JPEG 2000 is
            then decoded at ``1 / 2**r`` of its size where a plug-in can (the largest ``r``
            that stays at least ``min_size``); ``meta["decode_reduction"]`` is ``r`` (0 =
            full), ``rows`` / ``columns`` stay the header's (original) size and
            ``pixel_spacing_mm`` becomes the spacing of the returned pixels (x ``2**r``).

    Steps: decode -> Modality LUT / Rescale -> optional VOI -> MONOCHROME1 inversion ->
    Pixel Padding Value (and range) to 0. Raises MammoprepError subclasses on bad input.
    """
    path = Path(path)
    salt_b = salt if isinstance(salt, bytes) else resolve_salt(salt)
    ds, ts = open_dataset(path, header_only=False)
    _check_image(ds, path, ts)
    meta = header_meta(ds, ts, salt_b)

    stored, used, reduction = _decode(ds, ts, path, meta, decoder, min_size)
    stored, lo, hi = _own_stored_bits(stored, int(meta["bits_stored"]))
    _check_contrast(lo, hi, path)
    pad = _padding_mask(ds, stored)
    px, lut_kind, value_bits = _modality(ds, stored, int(meta["bits_stored"]), path)
    voi_desc = None
    if voi:
        choice = photometric.choose_voi(ds)
        if choice is not None:
            px, value_bits = photometric.apply_voi(px, choice, value_bits)
            voi_desc = choice.description
    inverted, reason = inversion_decision(ds)
    if inverted:  # px is this function's own array (decoded, or made by the LUTs)
        px = photometric.invert(px, value_bits, inplace=True)
    else:
        px = photometric.to_uint16(px)
    n_pad = 0
    if pad is not None:
        n_pad = int(np.count_nonzero(pad))
        if n_pad:
            px = px.copy() if px is stored else px
            px[pad] = 0
    if lut_kind or n_pad or voi_desc:  # the values harmonize and shard see: still an image?
        _check_contrast(*_value_range(px), path,
                        [t for t, on in (("Modality LUT / Rescale", lut_kind), ("VOI", voi_desc),
                                         ("(0028,0120) Pixel Padding", n_pad)) if on])
    meta.update(inverted=inverted, inversion_reason=reason, modality_lut=lut_kind, voi=voi_desc,
                value_bits=value_bits, padding_pixels=n_pad, decoder=used, steps=["decode"],
                decode_reduction=reduction)
    if reduction:  # reduced pixel i covers original pixels [i 2^r, (i+1) 2^r), like a crop
        px = decoders.recentre(px, reduction)
    if reduction and meta.get("pixel_spacing_mm"):
        meta["pixel_spacing_mm"] = [v * (1 << reduction) for v in meta["pixel_spacing_mm"]]
    return Record(pixels=np.ascontiguousarray(px, dtype=np.uint16), meta=meta, path=str(path))


def _decode(ds, ts: str, path: Path, meta: dict[str, Any], decoder: str | None,
            min_size) -> tuple[np.ndarray, str, int]:
    """(stored pixels, decoder used, resolution levels dropped): the full image, or with
    ``min_size`` the smallest JPEG 2000 reduction at least that large. The pixels must be
    2-D and of the header's (reduced) size."""
    reduction = 0
    if min_size is None:
        stored, used = decoders.decode(ds, ts, path=str(path), prefer=decoder)
    else:
        got = decoders.decode_at_least(ds, ts, _min_rows_cols(min_size, meta), path=str(path),
                                       prefer=decoder)
        stored, used, reduction = got.pixels, got.decoder, got.reduction
    if stored.ndim != 2:
        raise UnsupportedImageError(path, "decoded pixel data is not 2-D",
                                    tag="(0028,0004) PhotometricInterpretation",
                                    value=f"array shape {stored.shape}",
                                    hint="exclude this file")
    expected = decoders.reduced_size(meta["rows"], meta["columns"], reduction)
    if stored.shape != expected:
        raise DecodeError(path, "decoded size differs from the header", tag=_tag("Rows"),
                          value=f"{meta['rows']}x{meta['columns']} (reduced {reduction} "
                                f"level(s): {expected}) vs decoded {stored.shape}",
                          hint="the file is inconsistent; re-export it")
    return stored, used, reduction


def _own_stored_bits(stored: np.ndarray, bits: int) -> tuple[np.ndarray, int, int]:
    """(pixels, min, max): ``stored`` contiguous, writable (copied if it was a view of the
    file's bytes) and with the bits above Bits Stored cleared; in one pass for uint16."""
    stored = np.ascontiguousarray(stored)
    if stored.dtype == np.uint16:  # one pass: high bits cleared, range found, array owned
        from .. import kernels

        return kernels.mask_range(
            stored, min(bits, 16), out=stored if stored.flags.writeable else None)
    if stored.dtype.itemsize > 1 and bits < stored.dtype.itemsize * 8:  # unused high bits
        mask = np.asarray((1 << bits) - 1, dtype=stored.dtype)
        stored = np.bitwise_and(stored, mask, out=stored if stored.flags.writeable else None)
    elif not stored.flags.writeable:  # a view of the file's bytes: later steps write
        stored = stored.copy()
    lo, hi = (int(stored.min()), int(stored.max())) if stored.size else (0, 0)
    return stored, lo, hi


def _check_contrast(lo: int, hi: int, path: Path, after: list[str] | None = None) -> None:
    """NoContrastError when every pixel has one value (``lo == hi``): of the stored pixels,
    or ``after`` the named transforms (which can map every value to one)."""
    if lo == hi:
        where = f" after the {' and '.join(after)}" if after else ""
        raise NoContrastError(path, f"no contrast: every pixel has the same value{where}",
                              tag="(7FE0,0010) PixelData", value=lo,
                              hint="a blank or failed exposure, corrupt pixel data, or a "
                                   "header whose LUT or padding covers every value; exclude "
                                   "this file")


def _value_range(px: np.ndarray) -> tuple[int, int]:
    """(min, max) of ``px``, in one pass for an owned uint16 image."""
    if px.dtype == np.uint16 and px.ndim == 2 and px.flags.writeable and px.flags.c_contiguous:
        from .. import kernels

        return kernels.mask_range(px, 16, out=px)[1:]
    return (int(px.min()), int(px.max())) if px.size else (0, 0)


def _min_rows_cols(min_size: int | tuple[int, int], meta: dict[str, Any]) -> tuple[int, int]:
    """(rows, cols) from ``min_size``: as given, or an int for the longer side (the shorter
    side then scaled in proportion to the header's size)."""
    if not isinstance(min_size, (int, np.integer)):
        return int(min_size[0]), int(min_size[1])
    rows, cols = int(meta["rows"]), int(meta["columns"])
    k = int(min_size) / max(rows, cols, 1)
    return int(np.ceil(rows * k - 1e-9)), int(np.ceil(cols * k - 1e-9))


def _padding_mask(ds, stored: np.ndarray) -> np.ndarray | None:
    """Pixels equal to (0028,0120) Pixel Padding Value or inside its range limit."""
    value = _num(ds, "PixelPaddingValue")
    if value is None:
        return None
    limit = _num(ds, "PixelPaddingRangeLimit")
    lo, hi = (value, value) if limit is None else sorted((value, limit))
    if lo == hi:
        return stored == lo
    return (stored >= lo) & (stored <= hi)


def _modality(ds, stored: np.ndarray, bits: int, path: Path) -> tuple[np.ndarray, str | None, int]:
    """Modality LUT Sequence or Rescale Slope/Intercept. Returns (values, kind, value bits)."""
    lut = header_checks.modality_lut(ds, path)
    if lut is not None:
        first, table, lut_bits = lut
        return photometric.lut_lookup(stored, first, table), "lut", lut_bits
    slope = _num(ds, "RescaleSlope")
    intercept = _num(ds, "RescaleIntercept")
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept
    if slope == 1.0 and intercept == 0.0:
        return stored, None, bits
    if slope <= 0:
        raise InvalidHeaderError(path, "non-positive rescale slope would reverse polarity",
                                 tag=_tag("RescaleSlope"), value=slope,
                                 hint="fix the header or exclude this file")
    low = slope * float(stored.min(initial=0)) + intercept
    if low < 0:
        raise UnsupportedImageError(
            path, "the Modality Rescale gives negative values (not detector values of a "
            "mammogram)", tag=_tag("RescaleIntercept"), value=intercept,
            hint=f"rescaled minimum would be {low:g}; exclude this file (e.g. CT)")
    high = slope * float(stored.max(initial=0)) + intercept
    if high > photometric.UINT16_MAX:
        raise ImplausibleImageError(
            path, "the Modality Rescale takes values beyond 16 bits (not detector values of a "
            "mammogram)", tag=_tag("RescaleSlope"), value=slope,
            hint=f"rescaled maximum would be {high:g} (intercept {intercept:g}); fix the "
                 "header or exclude this file")
    top = slope * ((1 << bits) - 1) + intercept
    return photometric.rescale(stored, slope, intercept), "rescale", photometric.bits_for(top)


def safe_read(path, **kwargs) -> tuple[Record | None, MammoprepError | None]:
    """:func:`read_dicom` that returns (record, None) or (None, typed error), never raises
    for one bad file (unexpected exceptions are wrapped as DecodeError)."""
    try:
        return read_dicom(path, **kwargs), None
    except MammoprepError as err:
        return None, err
    except Exception as exc:  # noqa: BLE001 - a batch must survive one bad file
        return None, DecodeError(path, f"unexpected failure while reading "
                                 f"({type(exc).__name__}: {exc})",
                                 hint="please report this file's header (without patient data)")
