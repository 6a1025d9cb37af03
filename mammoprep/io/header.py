"""DICOM headers: a file opened with typed errors (bounded inflation of deflated data sets,
header checks before any pixel is touched) and its identity-free metadata
(:func:`header_meta`, :func:`read_header`)."""

from __future__ import annotations

import logging
import os
import stat
import zlib
from pathlib import Path
from typing import Any

from .. import decoders
from ..errors import (InvalidHeaderError, MammoprepError, NotDicomError, NotRegularFileError,
                      TooLargeError, TruncatedError)
from ..identity import pseudonym, resolve_salt
from ..errors import display_path
from ..inputs import MAX_DICOM_BYTES, open_input
from . import header_checks, limits

_LOG = logging.getLogger(__name__)
_PIXEL_TAGS = (0x7FE00010, 0x7FE00009, 0x7FE00008)

IMPLICIT_LE = "1.2.840.10008.1.2"


EXPLICIT_LE = "1.2.840.10008.1.2.1"


EXPLICIT_BE = "1.2.840.10008.1.2.2"


DEFLATED_LE = "1.2.840.10008.1.2.1.99"


#: Inflated bytes of a deflated data set read before its image size is known (the header).
INFLATE_HEADER_LIMIT = 16 << 20


#: Allowance beyond header + Rows x Columns x Samples x Frames x BitsAllocated / 8 for
#: elements after the pixel data (padding, signatures) when inflating.
INFLATE_MARGIN = 1 << 20


# View Code Sequence codes (SNOMED RT and SNOMED CT) and meanings -> view abbreviations.
_VIEW_CODES = {
    "R-10242": "CC", "399162004": "CC", "R-10226": "MLO", "399368009": "MLO",
    "R-10224": "ML", "399260004": "ML", "R-10228": "LM", "399352003": "LM",
    "R-10230": "LMO", "399099002": "LMO", "R-1024A": "XCCL", "399192003": "XCCL",
    "R-1024B": "XCCM", "399101009": "XCCM", "R-10244": "FB", "399196006": "FB",
    "R-102D0": "SIO", "399188001": "SIO", "R-40AAA": "ISO", "441555000": "ISO",
    "R-102CF": "AT", "399265009": "AT",
}


_VIEW_MEANINGS = {
    "cranio-caudal": "CC", "medio-lateral oblique": "MLO", "medio-lateral": "ML",
    "latero-medial": "LM", "latero-medial oblique": "LMO", "caudo-cranial": "FB",
    "cranio-caudal exaggerated laterally": "XCCL", "cranio-caudal exaggerated medially": "XCCM",
    "superolateral to inferomedial oblique": "SIO", "axillary tail": "AT",
}


def _tag(ds_tag: str) -> str:
    """'(gggg,eeee) Keyword' for a keyword, for messages."""
    from pydicom.datadict import tag_for_keyword

    t = tag_for_keyword(ds_tag)
    return f"({t >> 16:04X},{t & 0xFFFF:04X}) {ds_tag}" if t is not None else ds_tag


def open_dataset(path: Path, header_only: bool):
    """dcmread with typed errors and bounded memory (:mod:`mammoprep.io.limits`: element
    count, bytes read, long values deferred; with pixels, the declared image checked against
    the memory cap before the pixel data are read); fills in the transfer syntax of files
    without File Meta."""
    # FIFOs, devices and /proc files are never opened; reads stop at MAX_DICOM_BYTES
    fh = open_input(path, "DICOM file", MAX_DICOM_BYTES)
    # this thread's warnings only: a writer thread's must not reject the file being read
    with fh, decoders.codec_messages() as caught:
        reader = None
        try:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):  # replaced after the check
                raise NotRegularFileError(path, "not a regular file",
                                          hint="pass DICOM files")
            size = info.st_size
            # bounded parse: element count, bytes read, long values deferred
            reader = limits.BoundedReader(fh, size=size)
            ds = _read_dataset(fh, reader, path, header_only)
            if not header_only and any(int(t) in _PIXEL_TAGS for t in ds.keys()):
                limits.check_image_size(ds, path)  # before any pixel data is read
            dropped = limits.resolve_deferred(ds, reader, size, path)
        except MammoprepError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a typed error or re-raised
            if reader is not None and reader.exceeded is not None:  # pydicom may wrap it
                raise limits.exceeded_error(reader, path) from None
            raise _parse_error(exc, path) from None
    if dropped:
        _LOG.debug("%s: %d long private value(s) left unread: %s", display_path(path),
                   len(dropped), ", ".join(dropped))
    for text in caught:
        if "End of file reached" in text or "truncated" in text.lower():
            raise TruncatedError(path, "the file ends early, inside an element",
                                 tag="(FFFE,E0DD) Sequence Delimitation Item",
                                 value="missing: end of file reached first",
                                 hint="the file is truncated; re-export or re-download it")
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not ts:
        # No File Meta: pydicom guessed the encoding while reading; record it.
        implicit = getattr(ds, "original_encoding", (True, True))[0]
        little = getattr(ds, "original_encoding", (True, True))[1]
        ts = IMPLICIT_LE if implicit else (EXPLICIT_LE if little else EXPLICIT_BE)
        from pydicom.dataset import FileMetaDataset

        if meta is None:
            ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
    if not _plausible(ds):
        raise _not_dicom(path, "no recognisable DICOM elements")
    # a deflated data set is read from its inflated bytes, not the file's
    header_checks.check_parsed(ds, None if ts == DEFLATED_LE else size, path)
    return ds, ts


def _parse_error(exc: Exception, path: Path) -> Exception:
    """The typed error for an exception raised while pydicom parsed ``path`` (the
    exception itself when it is none of the known kinds)."""
    from pydicom.errors import InvalidDicomError

    if isinstance(exc, InvalidDicomError):
        return _not_dicom(path, str(exc))
    if isinstance(exc, RecursionError):
        return InvalidHeaderError(path, "sequences nested too deeply to parse",
                                  tag="(FFFE,E000) Item",
                                  value="nesting beyond Python's recursion limit",
                                  hint="the header is corrupt or hostile; exclude this file")
    if isinstance(exc, (EOFError, OSError, ValueError, KeyError, TypeError, IndexError,
                        zlib.error)):
        return TruncatedError(path, f"could not parse the DICOM data set "
                              f"({type(exc).__name__}: {exc})",
                              hint="the file is truncated or corrupt; re-export it")
    return exc


def _read_dataset(fh, reader, path: Path, header_only: bool):
    """``dcmread`` of an open regular file through ``reader`` (a
    :class:`~mammoprep.io.limits.BoundedReader` of ``fh``: values longer than
    :data:`~mammoprep.io.limits.DEFER_BYTES` are deferred, not read); a deflated data set
    goes through :func:`_read_deflated` (bounded inflation) instead of pydicom's unbounded
    one."""
    import pydicom

    head = fh.read(4096)
    fh.seek(0)
    if DEFLATED_LE.encode() in head:  # with or without the 128-byte preamble and 'DICM'
        return _read_deflated(fh, reader, path, header_only)
    return pydicom.dcmread(reader, force=True, stop_before_pixels=header_only,
                           defer_size=limits.DEFER_BYTES)


def _at_pixel_data(tag, vr, length) -> bool:
    return tag in (0x7FE00010, 0x7FE00009, 0x7FE00008)


def _inflate(d, pending: bytes, limit: int) -> tuple[bytes, bytes]:
    """Up to ``limit`` more inflated bytes from ``d`` (a raw-deflate decompressobj) fed with
    ``pending``; returns (bytes, input not consumed yet). Never produces more than
    ``limit`` bytes, whatever the compression ratio."""
    out, n = [], 0
    while n < limit and not d.eof:
        piece = d.decompress(pending, limit - n)
        pending = d.unconsumed_tail
        if not piece and not pending:
            break
        n += len(piece)
        out.append(piece)
    return b"".join(out), pending


def _read_deflated(fh, reader, path: Path, header_only: bool):
    """Deflated Explicit VR Little Endian, inflated with a cap.

    The first :data:`INFLATE_HEADER_LIMIT` bytes are inflated and parsed up to (7FE0,0010);
    the rest may only hold Rows x Columns x SamplesPerPixel x NumberOfFrames x
    BitsAllocated / 8 bytes of pixel data plus :data:`INFLATE_MARGIN`. More is a
    :class:`~mammoprep.errors.TooLargeError` (a decompression bomb), raised before the
    excess is ever held in memory."""
    import pydicom
    from pydicom.dataset import FileDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import _read_file_meta_info, read_preamble

    preamble = read_preamble(reader, True)
    file_meta = _read_file_meta_info(reader)
    if str(file_meta.get("TransferSyntaxUID", "")).rstrip("\0 ") != DEFLATED_LE:
        fh.seek(0)
        return pydicom.dcmread(reader, force=True, stop_before_pixels=header_only,
                               defer_size=limits.DEFER_BYTES)
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    most = INFLATE_HEADER_LIMIT + limits.max_image_bytes() + INFLATE_MARGIN  # compressed
    data, pending = _inflate(d, _read_at_most(fh, most, path), INFLATE_HEADER_LIMIT)
    if not d.eof:
        head = limits.BoundedReader(DicomBytesIO(data), budget=1 << 62)
        found: list[int] = []

        def at_pixels(tag, vr, length) -> bool:
            if _at_pixel_data(tag, vr, length):
                found.append(int(tag))
            return bool(found)

        header = _parse_inflated(head, path, stop_when=at_pixels)
        if not found:
            raise TooLargeError(path, "the deflated data set's header inflates to more than "
                                f"{INFLATE_HEADER_LIMIT >> 20} MiB before the pixel data",
                                tag="(0002,0010) TransferSyntaxUID", value=DEFLATED_LE,
                                hint="a decompression bomb or a corrupt file; exclude it")
        if header_only:
            data = data[: head.tell()]
        else:
            dims = {k: _num(header, k) for k in ("Rows", "Columns", "BitsAllocated")}
            missing = [k for k, v in dims.items() if v is None]
            if missing:
                raise InvalidHeaderError(path, "a required image attribute is missing",
                                         tag=_tag(missing[0]), value=None,
                                         hint="the header is incomplete; re-export the image")
            limits.check_image_size(header, path)  # before inflating the pixel data
            pixels = (int(dims["Rows"]) * int(dims["Columns"]) * int(dims["BitsAllocated"])
                      * int(_num(header, "SamplesPerPixel") or 1)
                      * max(1, int(_num(header, "NumberOfFrames") or 1)) + 7) // 8
            cap = head.tell() + 12 + pixels + INFLATE_MARGIN
            rest, pending = _inflate(d, pending, cap - len(data) + 1)
            if len(data) + len(rest) > cap:
                raise TooLargeError(path, "deflated data inflate to more than the header "
                                    "implies", tag=_tag("Rows"),
                                    value=f"{int(dims['Rows'])}x{int(dims['Columns'])}x"
                                          f"{int(dims['BitsAllocated'])} bits: at most "
                                          f"{cap} bytes, got more",
                                    hint="a decompression bomb or a corrupt file; exclude it")
            if not d.eof:
                raise TruncatedError(path, "the deflated data set ends early",
                                     tag="(0002,0010) TransferSyntaxUID", value=DEFLATED_LE,
                                     hint="the file is truncated; re-export or re-download "
                                          "it")
            data += rest
    dataset = _parse_inflated(limits.BoundedReader(DicomBytesIO(data), budget=1 << 62),
                              path, stop_when=_at_pixel_data if header_only else None)
    ds = FileDataset(str(path), dataset, preamble, file_meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds


def _parse_inflated(reader, path: Path, stop_when=None):
    """pydicom's ``read_dataset`` (explicit VR little endian) of inflated bytes through
    ``reader``, a :class:`~mammoprep.io.limits.BoundedReader`, its limit a TooLargeError."""
    from pydicom.filereader import read_dataset

    try:
        return read_dataset(reader, False, True, stop_when=stop_when)
    except Exception:
        if reader.exceeded is not None:
            raise limits.exceeded_error(reader, path) from None
        raise


def _read_at_most(fh, most: int, path: Path) -> bytes:
    """The rest of ``fh``, at most ``most`` bytes (more: TooLargeError, never read)."""
    left = os.fstat(fh.fileno()).st_size - fh.tell()
    data = fh.read(min(left, most) + 1)  # read(n) allocates n bytes first: never more
    if len(data) > most:
        raise TooLargeError(path, "the deflated data set is larger than any image within the "
                            "memory cap", tag="(0002,0010) TransferSyntaxUID",
                            value=f"{DEFLATED_LE}: more than {most} compressed bytes",
                            hint="a corrupt or hostile file; exclude it (or raise the cap: "
                                 "mammoprep --max-image-bytes)")
    return data


def _not_dicom(path: Path, detail: str) -> MammoprepError:
    """NotDicomError, or for a file with the Part 10 'DICM' prefix (a DICOM file whose
    content is unusable) InvalidHeaderError."""
    prefix = _prefix(path)
    if prefix == repr(b"DICM"):
        return InvalidHeaderError(path, f"a DICOM file ('DICM' at byte 128) whose data set "
                                  f"is unusable ({detail})", tag="(0002,0000) File Meta "
                                  "Information and data set", value="no image attributes",
                                  hint="the file is corrupt or truncated after its preamble; "
                                       "re-export or re-download it")
    return NotDicomError(path, f"not a DICOM file ({detail})",
                         tag="(0002,0000) File Meta / 'DICM' prefix at byte 128", value=prefix,
                         hint="pass DICOM files (Part 10 or raw data sets)")


def _prefix(path: Path) -> str:
    """What the file holds where 'DICM' should be (bytes 128-131), for messages."""
    with open_input(path, "DICOM file", MAX_DICOM_BYTES) as fh:
        head = fh.read(132)
    return repr(head[128:132]) if len(head) >= 132 else f"file of {len(head)} bytes"


def _plausible(ds) -> bool:
    keys = ("SOPClassUID", "SOPInstanceUID", "Rows", "Modality", "StudyInstanceUID")
    try:
        return any(k in ds for k in keys) or "PixelData" in ds
    except Exception:  # noqa: BLE001 - garbage parsed by force=True
        return False


def _num(ds, keyword: str) -> float | None:
    v = ds.get(keyword)
    if v is None or v == "":
        return None
    try:
        if isinstance(v, (list, tuple)) or hasattr(v, "__len__") and not isinstance(v, str):
            v = list(v)[0]
        return float(v)
    except (TypeError, ValueError, IndexError):
        return None


def _text(ds, keyword: str) -> str:
    v = ds.get(keyword)
    if v is None:
        return ""
    if not isinstance(v, str) and hasattr(v, "__iter__"):
        v = "\\".join(str(x) for x in v)
    return str(v).strip()


def laterality(ds) -> str | None:
    """(0020,0062) Image Laterality, then (0020,0060) Laterality: 'L', 'R', 'B' or None."""
    for key in ("ImageLaterality", "Laterality"):
        v = _text(ds, key).upper()
        if v in ("L", "R", "B"):
            return v
    return None


def view(ds) -> str | None:
    """(0018,5101) View Position, then the first View Code Sequence item; None if neither."""
    v = _text(ds, "ViewPosition").upper()
    if v:
        return v
    seq = ds.get("ViewCodeSequence")
    if seq:
        item = seq[0]
        code = _text(item, "CodeValue")
        if code in _VIEW_CODES:
            return _VIEW_CODES[code]
        meaning = _text(item, "CodeMeaning").lower()
        if meaning in _VIEW_MEANINGS:
            return _VIEW_MEANINGS[meaning]
    return None


def _spacing(ds) -> list[float] | None:
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        v = ds.get(key)
        if not isinstance(v, (str, bytes)) and hasattr(v, "__len__") and len(v) == 2:
            try:
                return [float(v[0]), float(v[1])]
            except (TypeError, ValueError):
                continue
    return None


def header_meta(ds, ts: str, salt: bytes) -> dict[str, Any]:
    """Identity-free metadata of a data set (see :data:`mammoprep.record.META_FIELDS`),
    with ``mammogram`` / ``mammogram_evidence``: whether the header alone shows a mammogram
    and which evidence decided (:func:`mammoprep.io.mammogram.mammogram_evidence`).

    Names, birth dates and accession numbers are never read; the Patient ID and Study
    Instance UID only enter through a salted hash.
    """
    from pydicom.uid import UID

    from .mammogram import mammogram_evidence

    def intval(key):
        n = _num(ds, key)
        return None if n is None else int(n)

    meta = {
        "manufacturer": _text(ds, "Manufacturer"),
        "model": _text(ds, "ManufacturerModelName"),
        "modality": _text(ds, "Modality"),
        "sop_class_uid": sop_class_uid(ds),
        "body_part": _text(ds, "BodyPartExamined").upper() or None,
        "kvp": _num(ds, "KVP"),
        "anode_target": _text(ds, "AnodeTargetMaterial") or None,
        "filter_material": _text(ds, "FilterMaterial") or None,
        "body_part_thickness_mm": _num(ds, "BodyPartThickness"),
        "compression_force_n": _num(ds, "CompressionForce"),
        "exposure_mas": _num(ds, "Exposure"),
        "laterality": laterality(ds),
        "view": view(ds),
        "presentation_intent": _text(ds, "PresentationIntentType") or None,
        "bits_stored": intval("BitsStored"),
        "bits_allocated": intval("BitsAllocated"),
        "photometric": _text(ds, "PhotometricInterpretation") or None,
        "transfer_syntax": ts,
        "transfer_syntax_name": UID(ts).name,
        "rows": intval("Rows"),
        "columns": intval("Columns"),
        "pixel_spacing_mm": _spacing(ds),
        "sop_uid_hash": pseudonym(ds.get("SOPInstanceUID"), salt),
        "patient_hash": pseudonym(ds.get("PatientID"), salt),
        "study_hash": pseudonym(ds.get("StudyInstanceUID"), salt),
    }
    meta["mammogram"], meta["mammogram_evidence"] = mammogram_evidence(meta)
    return meta


def sop_class_uid(ds) -> str:
    """(0008,0016) SOP Class UID, else (0002,0002) Media Storage SOP Class UID; '' if
    neither."""
    uid = _text(ds, "SOPClassUID")
    meta = getattr(ds, "file_meta", None)
    if not uid and meta is not None:
        uid = _text(meta, "MediaStorageSOPClassUID")
    return uid


def inversion_decision(ds) -> tuple[bool, str]:
    """Invert? (0028,0004)/(2050,0020) rules: Presentation LUT Shape first, then photometric."""
    shape = _text(ds, "PresentationLUTShape").upper()
    if shape == "INVERSE":
        return True, "(2050,0020) PresentationLUTShape = INVERSE"
    if shape == "IDENTITY":
        return False, "(2050,0020) PresentationLUTShape = IDENTITY"
    photo = _text(ds, "PhotometricInterpretation").upper()
    if photo == "MONOCHROME1":
        return True, "(0028,0004) PhotometricInterpretation = MONOCHROME1"
    return False, f"(0028,0004) PhotometricInterpretation = {photo or 'absent'}"


def read_header(path: str | os.PathLike, salt: str | bytes | None = None) -> dict[str, Any]:
    """Metadata only (no pixel decoding); raises the same typed errors as :func:`read_dicom`
    for unreadable headers."""
    path = Path(path)
    salt_b = salt if isinstance(salt, bytes) else resolve_salt(salt)
    ds, ts = open_dataset(path, header_only=True)
    meta = header_meta(ds, ts, salt_b)
    meta["inverted"], meta["inversion_reason"] = inversion_decision(ds)
    return meta


def read_header_dataset(path: str | os.PathLike):
    """(pydicom data set without pixel data, transfer syntax UID) of a regular file, with
    the same typed errors and limits as :func:`read_dicom`. The data set holds identifiers:
    only :mod:`mammoprep.io.derived` uses it, to write derived files."""
    return open_dataset(Path(path), header_only=True)
