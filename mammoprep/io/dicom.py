"""DICOM file -> :class:`~mammoprep.record.Record`: the one place pixels and headers are read.

``read_dicom(path)`` returns ``uint16 [rows, cols]`` pixels in MONOCHROME2 polarity (higher =
brighter = denser) and identity-free metadata. ``read_header(path)`` gives the same metadata
without decoding pixels (for fast planning of large archives). Every failure is a typed
:class:`~mammoprep.errors.MammoprepError` naming the file, the tag and the value.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .. import decoders
from . import header_checks, photometric
from ..decoders import codestream
from ..errors import (DecodeError, ImplausibleImageError, InvalidHeaderError, MammoprepError,
                      NoContrastError, NoPixelDataError, NotDicomError, NotRegularFileError,
                      PixelLengthError, TooLargeError, TruncatedError, UnreadableError,
                      UnsupportedImageError)
from ..identity import pseudonym, resolve_salt
from ..record import Record

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"

#: Inflated bytes of a deflated data set read before its image size is known (the header).
INFLATE_HEADER_LIMIT = 16 << 20
#: Allowance beyond header + Rows x Columns x Samples x Frames x BitsAllocated / 8 for
#: elements after the pixel data (padding, signatures) when inflating.
INFLATE_MARGIN = 1 << 20

#: File name endings treated as DICOM when walking directories (plus extension-less files
#: that look like DICOM). Files named explicitly on the command line are always read.
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}

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


# ----------------------------------------------------------------------------- discovery

_FILE_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
               stat.S_IFDIR: "a directory"}


def regular_file_problem(path: str | os.PathLike) -> MammoprepError | None:
    """None if ``path`` is (a symlink to) a regular file, else the typed error to report.

    Only ``stat``/``lstat`` are used: a FIFO, device or socket is never opened, so it can
    neither block nor stream without end."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return NotRegularFileError(path, "a symbolic link to a missing file",
                                       value=_link_target(path),
                                       hint="fix or remove the link")
        return NotDicomError(path, "file not found", hint="check the path")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return NotRegularFileError(path, "a symbolic link loop (the link points back to "
                                       "itself)", value=_link_target(path),
                                       hint="fix or remove the link")
        return _os_error(path, exc)
    if stat.S_ISREG(st.st_mode):
        return None
    what = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
    if stat.S_ISDIR(st.st_mode):
        try:
            with os.scandir(path):
                pass
        except OSError as exc:
            return UnreadableError(path, f"a folder that cannot be listed "
                                   f"({exc.strerror or exc}); its files were not read",
                                   hint="check the folder's permissions")
        return NotDicomError(path, "is a directory")
    return NotRegularFileError(path, f"not a regular file but {what}",
                               hint="pass DICOM files; it was not opened (reading it could "
                                    "block or never end)")


def _link_target(path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _os_error(path, exc: OSError) -> MammoprepError:
    """Typed error for an OS refusal to read ``path``."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return UnreadableError(path, "permission denied", hint="check the file's permissions")
    return UnreadableError(path, f"cannot read the file ({exc.strerror or exc})",
                           hint="check the disk and the path")


def looks_like_dicom(path: Path) -> bool:
    """Cheap sniff: 'DICM' at byte 128, or an implicit-VR group 0002/0008 tag at byte 0.
    False for anything but a regular file (never opens a FIFO or device)."""
    if regular_file_problem(path) is not None:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[3:4] == b"\x00"


def iter_dicom_paths(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files named explicitly, and DICOM-looking files under directories (recursive, sorted).

    Under a directory, a file counts if its suffix is in :data:`DICOM_SUFFIXES`, or it has no
    suffix and :func:`looks_like_dicom`. Yields each path once. Nothing is opened but
    extension-less regular files: a FIFO, device, socket or symlink loop named ``*.dcm`` is
    yielded so that reading it gives a typed reject (:func:`regular_file_problem`), an
    extension-less one is skipped. Symlinked folders are not followed (no cycles). A
    folder that cannot be listed is yielded too, so that reading it reports it
    (:class:`~mammoprep.errors.UnreadableError`) instead of skipping it without a word.
    """
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if _is_dir(p):
            found: list[Path] = []

            def unlisted(exc: OSError, found=found) -> None:
                if exc.filename is not None:
                    found.append(Path(exc.filename))

            for root, dirs, files in os.walk(p, onerror=unlisted):
                dirs.sort()
                for name in files:
                    f = Path(root) / name
                    suffix = f.suffix.lower()
                    if suffix in DICOM_SUFFIXES or (not suffix and looks_like_dicom(f)):
                        found.append(f)
            candidates = sorted(found)
        else:
            candidates = [p]
        for f in candidates:
            if f not in seen:
                seen.add(f)
                yield f


def _is_dir(p: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(p).st_mode)
    except OSError:  # missing, loop, no permission: reported when read as a file
        return False


# ----------------------------------------------------------------------------- reading

def _open(path: Path, header_only: bool):
    """dcmread with typed errors; fills in the transfer syntax of files without File Meta."""
    from pydicom.errors import InvalidDicomError

    problem = regular_file_problem(path)  # stat only: FIFOs and devices are never opened
    if problem is not None:
        raise problem
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise _os_error(path, exc) from None
    # this thread's warnings only: a writer thread's must not reject the file being read
    with fh, decoders.codec_messages() as caught:
        try:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # replaced after the check
                raise NotRegularFileError(path, "not a regular file",
                                          hint="pass DICOM files")
            ds = _read_dataset(fh, path, header_only)
            size = os.fstat(fh.fileno()).st_size
        except MammoprepError:
            raise
        except InvalidDicomError as exc:
            raise _not_dicom(path, str(exc)) from None
        except RecursionError:
            raise InvalidHeaderError(path, "sequences nested too deeply to parse",
                                     tag="(FFFE,E000) Item",
                                     value="nesting beyond Python's recursion limit",
                                     hint="the header is corrupt or hostile; exclude this "
                                          "file") from None
        except (EOFError, OSError, ValueError, KeyError, TypeError, IndexError,
                zlib.error) as exc:
            raise TruncatedError(path, f"could not parse the DICOM data set "
                                 f"({type(exc).__name__}: {exc})",
                                 hint="the file is truncated or corrupt; re-export it") from None
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


def _read_dataset(fh, path: Path, header_only: bool):
    """``dcmread`` of an open regular file; a deflated data set goes through
    :func:`_read_deflated` (bounded inflation) instead of pydicom's unbounded one."""
    import pydicom

    head = fh.read(4096)
    fh.seek(0)
    if head[128:132] == b"DICM" and DEFLATED_LE.encode() in head:
        return _read_deflated(fh, path, header_only)
    return pydicom.dcmread(fh, force=True, stop_before_pixels=header_only)


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


def _read_deflated(fh, path: Path, header_only: bool):
    """Deflated Explicit VR Little Endian, inflated with a cap.

    The first :data:`INFLATE_HEADER_LIMIT` bytes are inflated and parsed up to (7FE0,0010);
    the rest may only hold Rows x Columns x SamplesPerPixel x NumberOfFrames x
    BitsAllocated / 8 bytes of pixel data plus :data:`INFLATE_MARGIN`. More is a
    :class:`~mammoprep.errors.TooLargeError` (a decompression bomb), raised before the
    excess is ever held in memory."""
    import pydicom
    from pydicom.dataset import FileDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    preamble = read_preamble(fh, True)
    file_meta = _read_file_meta_info(fh)
    if str(file_meta.get("TransferSyntaxUID", "")).rstrip("\0 ") != DEFLATED_LE:
        fh.seek(0)
        return pydicom.dcmread(fh, force=True, stop_before_pixels=header_only)
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    data, pending = _inflate(d, fh.read(), INFLATE_HEADER_LIMIT)
    if not d.eof:
        head = DicomBytesIO(data)
        found: list[int] = []

        def at_pixels(tag, vr, length) -> bool:
            if _at_pixel_data(tag, vr, length):
                found.append(int(tag))
            return bool(found)

        header = read_dataset(head, False, True, stop_when=at_pixels)
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
    dataset = read_dataset(DicomBytesIO(data), False, True,
                           stop_when=_at_pixel_data if header_only else None)
    ds = FileDataset(str(path), dataset, preamble, file_meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds


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
    with open(path, "rb") as fh:
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
    _check_image_size(ds, path)
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


#: Largest Rows x Columns read (pixels). Full-field mammography detectors reach about
#: 5928 x 4728 (Fujifilm Amulet, 50 um: 28 Mpx; Hologic 4096 x 3328 at 70 um, GE 3062 x 2394
#: at 100 um); 8192 x 8192 leaves 2.4x margin above the largest, and bounds one decoded
#: 16-bit frame at 128 MiB before any decoder allocates it.
MAX_IMAGE_PIXELS = 8192 * 8192


def _check_image_size(ds, path: Path) -> None:
    """Rows x Columns must be at most :data:`MAX_IMAGE_PIXELS` (checked before decoding, so
    a hostile header cannot make a decoder allocate gigabytes)."""
    rows, cols = int(_num(ds, "Rows")), int(_num(ds, "Columns"))
    if rows * cols > MAX_IMAGE_PIXELS:
        raise TooLargeError(path, "the image is larger than any mammogram",
                            tag="(0028,0010) Rows x (0028,0011) Columns",
                            value=f"{rows}x{cols} = {rows * cols} pixels, limit "
                                  f"{MAX_IMAGE_PIXELS}",
                            hint="a corrupt or hostile header; exclude the file (a genuine "
                                 "image this large: downsample it, or raise "
                                 "mammoprep.io.dicom.MAX_IMAGE_PIXELS)")


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


def read_header(path: str | os.PathLike, salt: str | bytes | None = None) -> dict[str, Any]:
    """Metadata only (no pixel decoding); raises the same typed errors as :func:`read_dicom`
    for unreadable headers."""
    path = Path(path)
    salt_b = salt if isinstance(salt, bytes) else resolve_salt(salt)
    ds, ts = _open(path, header_only=True)
    meta = header_meta(ds, ts, salt_b)
    meta["inverted"], meta["inversion_reason"] = inversion_decision(ds)
    return meta


def read_header_dataset(path: str | os.PathLike):
    """(pydicom data set without pixel data, transfer syntax UID) of a regular file, with
    the same typed errors and limits as :func:`read_dicom`. The data set holds identifiers:
    only :mod:`mammoprep.io.derived` uses it, to write derived files."""
    return _open(Path(path), header_only=True)


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
    ds, ts = _open(path, header_only=False)
    _check_image(ds, path, ts)
    meta = header_meta(ds, ts, salt_b)

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
    stored = np.ascontiguousarray(stored)
    bits = int(meta["bits_stored"])
    if stored.dtype == np.uint16:  # one pass: high bits cleared, range found, array owned
        from .. import kernels

        stored, lo, hi = kernels.mask_range(
            stored, min(bits, 16), out=stored if stored.flags.writeable else None)
    else:
        if stored.dtype.itemsize > 1 and bits < stored.dtype.itemsize * 8:  # unused high bits
            mask = np.asarray((1 << bits) - 1, dtype=stored.dtype)
            stored = np.bitwise_and(stored, mask, out=stored if stored.flags.writeable else None)
        elif not stored.flags.writeable:  # a view of the file's bytes: later steps write
            stored = stored.copy()
        lo, hi = (int(stored.min()), int(stored.max())) if stored.size else (0, 0)
    _check_contrast(lo, hi, path)
    pad = _padding_mask(ds, stored)
    px, lut_kind, value_bits = _modality(ds, stored, bits, path)
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
