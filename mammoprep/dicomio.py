"""DICOM file -> :class:`~mammoprep.record.Record`: the one place pixels and headers are read.

``read_dicom(path)`` returns ``uint16 [rows, cols]`` pixels in MONOCHROME2 polarity (higher =
brighter = denser) and identity-free metadata. ``read_header(path)`` gives the same metadata
without decoding pixels (for fast planning of large archives). Every failure is a typed
:class:`~mammoprep.errors.MammoprepError` naming the file, the tag and the value.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from . import decoders, photometric
from .errors import (DecodeError, InvalidHeaderError, MammoprepError, NoPixelDataError,
                     NotDicomError, TruncatedError, UnsupportedImageError)
from .identity import pseudonym, resolve_salt, uid_hash
from .record import Record

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"

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

def looks_like_dicom(path: Path) -> bool:
    """Cheap sniff: 'DICM' at byte 128, or an implicit-VR group 0002/0008 tag at byte 0."""
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
    suffix and :func:`looks_like_dicom`. Yields each path once.
    """
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = []
            for root, dirs, files in os.walk(p):
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


# ----------------------------------------------------------------------------- reading

def _open(path: Path, header_only: bool):
    """dcmread with typed errors; fills in the transfer syntax of files without File Meta."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.exists():
        raise NotDicomError(path, "file not found", hint="check the path")
    if path.is_dir():
        raise NotDicomError(path, "is a directory")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=header_only)
        except InvalidDicomError as exc:
            raise NotDicomError(path, f"not a DICOM file ({exc})",
                                tag="(0002,0000) File Meta / 'DICM' prefix at byte 128",
                                value=_prefix(path),
                                hint="pass DICOM files (Part 10 or raw data sets)") from None
        except (EOFError, OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise TruncatedError(path, f"could not parse the DICOM data set "
                                 f"({type(exc).__name__}: {exc})",
                                 hint="the file is truncated or corrupt; re-export it") from None
    for w in caught:
        text = str(w.message)
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
        raise NotDicomError(path, "not a DICOM file (no recognisable DICOM elements)",
                            tag="(0002,0000) File Meta / 'DICM' prefix at byte 128",
                            value=_prefix(path),
                            hint="pass DICOM files (Part 10 or raw data sets)")
    return ds, ts


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
        if v is not None and len(v) == 2:
            try:
                return [float(v[0]), float(v[1])]
            except (TypeError, ValueError):
                continue
    return None


def header_meta(ds, ts: str, salt: bytes) -> dict[str, Any]:
    """Identity-free metadata of a data set (see :data:`mammoprep.record.META_FIELDS`).

    Names, birth dates and accession numbers are never read; the Patient ID and Study
    Instance UID only enter through a salted hash.
    """
    from pydicom.uid import UID

    def intval(key):
        n = _num(ds, key)
        return None if n is None else int(n)

    return {
        "manufacturer": _text(ds, "Manufacturer"),
        "model": _text(ds, "ManufacturerModelName"),
        "modality": _text(ds, "Modality"),
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
        "sop_uid_hash": uid_hash(ds.get("SOPInstanceUID")),
        "patient_hash": pseudonym(ds.get("PatientID"), salt),
        "study_hash": pseudonym(ds.get("StudyInstanceUID"), salt),
    }


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
        raise NoPixelDataError(path, "no pixel data" + (f" (only {other[0]})" if other else ""),
                               tag="(7FE0,0010) PixelData", value=value,
                               hint="this is a header-only or non-image object; use "
                                    "`mammoprep inspect --header-only` for its metadata")
    for key in ("Rows", "Columns", "BitsAllocated", "BitsStored"):
        if _num(ds, key) is None:
            raise InvalidHeaderError(path, "a required image attribute is missing",
                                     tag=_tag(key), value=ds.get(key),
                                     hint="the header is incomplete; re-export the image")
    if ts in (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, "1.2.840.10008.1.2.1.99"):
        have, need = len(ds.PixelData), _expected_bytes(ds)
        if have < need:
            raise TruncatedError(path, "pixel data is shorter than the header says",
                                 tag="(7FE0,0010) PixelData",
                                 value=f"{have} bytes, expected {need}",
                                 hint="the file is truncated; re-export or re-download it")
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


def _expected_bytes(ds) -> int:
    bits = int(_num(ds, "BitsAllocated"))
    return (int(_num(ds, "Rows")) * int(_num(ds, "Columns")) * bits + 7) // 8


def read_header(path: str | os.PathLike, salt: str | bytes | None = None) -> dict[str, Any]:
    """Metadata only (no pixel decoding); raises the same typed errors as :func:`read_dicom`
    for unreadable headers."""
    path = Path(path)
    salt_b = salt if isinstance(salt, bytes) else resolve_salt(salt)
    ds, ts = _open(path, header_only=True)
    meta = header_meta(ds, ts, salt_b)
    meta["inverted"], meta["inversion_reason"] = inversion_decision(ds)
    return meta


def read_dicom(path: str | os.PathLike, *, voi: bool = False, salt: str | bytes | None = None,
               decoder: str | None = None) -> Record:
    """Decode one DICOM file into a MONOCHROME2 ``uint16 [rows, cols]`` record.

    Args:
        path: a DICOM file (Part 10, or a raw data set without File Meta).
        voi: apply the VOI LUT / window (first VOI LUT Sequence item, else first window)
            before inversion. Off by default: harmonisation works on detector values.
        salt: pseudonymisation salt (see :mod:`mammoprep.identity`).
        decoder: preferred decoder plug-in name (see :mod:`mammoprep.decoders`).

    Steps: decode -> Modality LUT / Rescale -> optional VOI -> MONOCHROME1 inversion ->
    Pixel Padding Value (and range) to 0. Raises MammoprepError subclasses on bad input.
    """
    path = Path(path)
    salt_b = salt if isinstance(salt, bytes) else resolve_salt(salt)
    ds, ts = _open(path, header_only=False)
    _check_image(ds, path, ts)
    meta = header_meta(ds, ts, salt_b)

    stored, used = decoders.decode(ds, ts, path=str(path), prefer=decoder)
    if stored.ndim != 2:
        raise UnsupportedImageError(path, "decoded pixel data is not 2-D",
                                    tag="(0028,0004) PhotometricInterpretation",
                                    value=f"array shape {stored.shape}",
                                    hint="exclude this file")
    if stored.shape != (meta["rows"], meta["columns"]):
        raise DecodeError(path, "decoded size differs from the header", tag=_tag("Rows"),
                          value=f"{meta['rows']}x{meta['columns']} vs decoded {stored.shape}",
                          hint="the file is inconsistent; re-export it")
    stored = np.ascontiguousarray(stored)
    bits = int(meta["bits_stored"])
    if stored.dtype.itemsize > 1 and bits < stored.dtype.itemsize * 8:  # unused high bits
        mask = np.asarray((1 << bits) - 1, dtype=stored.dtype)
        stored = np.bitwise_and(stored, mask, out=stored if stored.flags.writeable else None)

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
    meta.update(inverted=inverted, inversion_reason=reason, modality_lut=lut_kind, voi=voi_desc,
                value_bits=value_bits, padding_pixels=n_pad, decoder=used, steps=["decode"])
    return Record(pixels=np.ascontiguousarray(px, dtype=np.uint16), meta=meta, path=str(path))


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
    seq = ds.get("ModalityLUTSequence")
    if seq:
        item = seq[0]
        desc = [int(v) for v in item.LUTDescriptor]
        raw = item.LUTData
        table = np.asarray(raw if not isinstance(raw, bytes)
                           else np.frombuffer(raw, dtype="<u2" if desc[2] > 8 else "u1"))
        table = table.astype(np.uint16)[: desc[0] or 65536]
        return (photometric.lut_lookup(stored, desc[1], table), "lut",
                max(1, min(16, desc[2])))
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
