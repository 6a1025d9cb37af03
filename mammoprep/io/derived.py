"""Writing a processed record as a derived DICOM (the input file is never touched).

By default the derived file is **de-identified** following DICOM PS3.15 Annex E, the Basic
Application Level Confidentiality Profile, with the *Retain Device Identity* and *Clean
Pixel Data* options. It is built from a keep-list, not by editing a copy of the source:
the output data set holds only the attributes in :data:`KEEP` (device and acquisition
attributes that harmonisation and training depend on: vendor, model, kVp, anode, filter,
thickness, force, exposure, laterality, view, spacing...), replaced identifiers, the
de-identification record and the new pixel data. Everything else, private tags, dates,
names, free-text descriptions and the source's preamble included, is never written.

* Patient ID and Patient's Name become the salted pseudonym of the Patient ID (the same
  ``patient_hash`` the manifests use); birth date, sex, study date/time, accession number,
  study ID and referring physician are written empty (Type 2).
* UIDs are replaced by salted derivations (:func:`mammoprep.identity.derived_uid`): the
  study and frame of reference keep their structure, the derived images form a new series
  per source series and options, and reruns with the same salt write the same UIDs.
* ``PatientIdentityRemoved`` YES, ``DeidentificationMethod`` and its code sequence (CID
  7050), ``LongitudinalTemporalInformationModified`` REMOVED; ``ImageType`` DERIVED and
  ``BurnedInAnnotation`` NO once burned-in text was removed (the source's value otherwise).

``keep_identity=True`` (``harmonize --keep-identity``) instead keeps the whole source header
(for writing back into the source PACS) and only replaces what the new pixels make stale.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import write_parts
from ..errors import WriteError
from ..histogram import foreground_histogram
from ..identity import derived_uid, pseudonym, resolve_salt
from ..record import Record
from .header import read_header_dataset

#: Attributes copied from the source header as they are (PS3.15 Table E.1-1 keeps them,
#: or the Retain Device Identity option does). Anything not listed is not written.
KEEP: tuple[str, ...] = (
    # SOP, general image and series
    "SpecificCharacterSet", "SOPClassUID", "Modality", "PresentationIntentType",
    "SeriesNumber", "InstanceNumber", "AcquisitionNumber", "PatientOrientation",
    "ImageLaterality", "Laterality", "BodyPartExamined", "ViewPosition", "ViewCodeSequence",
    "AnatomicRegionSequence", "PartialView", "BreastImplantPresent", "QualityControlImage",
    "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod",
    # equipment (Retain Device Identity option)
    "Manufacturer", "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions",
    "DetectorType", "DetectorConfiguration", "DetectorID", "DetectorManufacturerName",
    "DetectorManufacturerModelName", "DetectorBinning", "DetectorElementPhysicalSize",
    "DetectorElementSpacing", "DetectorActiveShape", "DetectorActiveDimensions",
    # acquisition (what the energy rule, harmonisation and training read)
    "KVP", "AnodeTargetMaterial", "FilterMaterial", "FilterType", "FilterThicknessMinimum",
    "FilterThicknessMaximum", "BodyPartThickness", "CompressionForce", "Exposure",
    "ExposureInuAs", "ExposureTime", "ExposureTimeInuS", "XRayTubeCurrent",
    "XRayTubeCurrentInuA", "ExposureControlMode", "DistanceSourceToDetector",
    "DistanceSourceToPatient", "DistanceSourceToEntrance",
    "EstimatedRadiographicMagnificationFactor", "FocalSpots", "Grid", "RelativeXRayExposure",
    "EntranceDoseInmGy", "OrganDose", "HalfValueLayer", "PositionerType",
    "PositionerPrimaryAngle", "PositionerSecondaryAngle", "ExposureIndex",
    "TargetExposureIndex", "DeviationIndex", "Sensitivity",
    # geometry
    "ImagerPixelSpacing", "PixelSpacing", "PixelSpacingCalibrationType", "PixelAspectRatio",
    "FieldOfViewShape", "FieldOfViewDimensions", "FieldOfViewOrigin", "FieldOfViewRotation",
    "FieldOfViewHorizontalFlip",
)

#: What items of the kept code sequences (view, anatomic region) may hold.
KEEP_IN_CODE_ITEMS: frozenset[str] = frozenset({
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
    "LongCodeValue", "URNCodeValue", "MappingResource", "ContextGroupVersion",
    "ContextIdentifier", "ViewModifierCodeSequence", "AnatomicRegionModifierSequence",
})

#: Type 2 attributes of the Patient and General Study modules written empty.
EMPTY: tuple[str, ...] = ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                          "ReferringPhysicianName", "StudyID", "AccessionNumber")

#: (code value, meaning) of CID 7050 De-identification Method, scheme DCM.
BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
RETAIN_DEVICE_IDENTITY = ("113109", "Retain Device Identity Option")
CLEAN_PIXEL_DATA = ("113101", "Clean Pixel Data Option")

# attributes that describe the old pixel values and would mislead a viewer afterwards
_STALE = ("VOILUTSequence", "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation",
          "VOILUTFunction", "ModalityLUTSequence", "PixelPaddingValue",
          "PixelPaddingRangeLimit", "SmallestImagePixelValue", "LargestImagePixelValue")


def text_removed(rec: Record) -> bool:
    """True if burned-in text removal ran on ``rec`` and its mask passed the quality gate
    (then ``BurnedInAnnotation`` NO is true of the new pixels)."""
    return "remove_text" in rec.meta.get("steps", ()) and rec.meta.get("qc", "ok") == "ok"


def write_derived_dicom(source: str | Path, rec: Record, dest: str | Path,
                        description: str, uid_salt: str = "", *,
                        salt: bytes | str | None = None, keep_identity: bool = False,
                        header=None) -> None:
    """Write ``rec.pixels`` (uint16 MONOCHROME2 ``[rows, cols]``) as a derived DICOM.

    Args:
        source: the DICOM ``rec`` was read from (its header is parsed again, without pixels).
        rec: the processed record.
        dest: file to write (atomically: temporary file, fsync, rename).
        description: Derivation Description text (at most 1024 characters kept).
        uid_salt: what else makes the output distinct (the options' digest): the new series
            and SOP Instance UIDs derive from the old ones and this.
        salt: pseudonymisation salt (see :mod:`mammoprep.identity`).
        keep_identity: keep the source header (identifiers included) instead of
            de-identifying.
        header: the source's header data set (:func:`mammoprep.io.dicom.read_header_dataset`)
            when the caller already has it; None reads it here.

    Uncompressed explicit VR little endian; Bits Stored/High Bit from the new values; a
    window from the new foreground's 0.5-99.5 % range; LUT and window attributes of the old
    values dropped; a Source Image Sequence reference to the source image.
    """
    if header is None:
        header, _ = read_header_dataset(Path(source))
    salt_b = salt if isinstance(salt, bytes) else resolve_salt(salt)
    px = np.ascontiguousarray(rec.pixels, dtype=np.uint16)
    if keep_identity:
        ds = _identified(header, source, uid_salt)
    else:
        ds = _deidentified(header, source, salt_b, uid_salt, text_removed(rec))
    _set_pixels(ds, px, rec, header)
    ds.DerivationDescription = description[:1024]
    if text_removed(rec):
        ds.BurnedInAnnotation = "NO"
    elif "BurnedInAnnotation" in header:
        ds.BurnedInAnnotation = header.BurnedInAnnotation
    try:
        _atomic_save(ds, px, Path(dest))
    except OSError as exc:
        raise WriteError(dest, f"cannot write the derived DICOM ({exc.strerror or exc})",
                         hint="free disk space or fix the output folder's permissions, then "
                              "rerun; no partial file was left") from None


def _copy(item, keep) -> object:
    """A new Dataset with the ``keep`` attributes of ``item``; sequence items filtered
    with :data:`KEEP_IN_CODE_ITEMS` (recursively)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    out = Dataset()
    for kw in keep:
        try:
            if kw not in item:
                continue
            elem = item[kw]
            if elem.VR == "SQ":
                out.add_new(elem.tag, "SQ",
                            Sequence([_copy(x, KEEP_IN_CODE_ITEMS) for x in elem.value]))
            else:
                out[elem.tag] = elem
        except Exception:  # noqa: BLE001 - an unparsable optional value is left out
            continue
    return out


def _code(value: str, meaning: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _deidentified(header, source, salt: bytes, uid_salt: str, cleaned: bool):
    """The de-identified data set: :data:`KEEP` + pseudonyms + derived UIDs + the record
    of the method (no pixel attributes yet)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def uid(keyword: str) -> str:
        return str(header.get(keyword, "") or "").strip()

    ds = _copy(header, KEEP)
    patient = pseudonym(header.get("PatientID"), salt) or ""
    ds.PatientID = patient
    ds.PatientName = patient
    for kw in EMPTY:
        setattr(ds, kw, "")
    old_sop = uid("SOPInstanceUID")
    fallback = f"path:{os.path.abspath(source)}"
    ds.StudyInstanceUID = derived_uid(salt, "uid", uid("StudyInstanceUID") or fallback)
    ds.SeriesInstanceUID = derived_uid(salt, "derived-series",
                                       uid("SeriesInstanceUID") or fallback, uid_salt)
    ds.SOPInstanceUID = derived_uid(salt, "derived-sop", old_sop or fallback, uid_salt)
    if uid("FrameOfReferenceUID"):
        ds.FrameOfReferenceUID = derived_uid(salt, "uid", uid("FrameOfReferenceUID"))
    ds.SeriesDescription = "mammoprep derived"
    if old_sop:
        ref = Dataset()
        ref.ReferencedSOPClassUID = uid("SOPClassUID") or "1.2.840.10008.5.1.4.1.1.1.2"
        ref.ReferencedSOPInstanceUID = derived_uid(salt, "uid", old_sop)
        ds.SourceImageSequence = Sequence([ref])
    image_type = [str(v) for v in (header.get("ImageType") or ["ORIGINAL", "PRIMARY"])]
    ds.ImageType = ["DERIVED", *(image_type[1:] or ["PRIMARY"])]
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    methods = [BASIC_PROFILE, RETAIN_DEVICE_IDENTITY] + ([CLEAN_PIXEL_DATA] if cleaned else [])
    ds.DeidentificationMethod = [
        f"mammoprep {__version__}: PS3.15 E.1 Basic Profile, keep-list",
        "Retain Device Identity Option", "UIDs: salted HMAC-SHA256; dates removed",
        *(["Clean Pixel Data: burned-in text zeroed"] if cleaned else [])]
    ds.DeidentificationMethodCodeSequence = Sequence([_code(*m) for m in methods])
    return ds


def _identified(header, source, uid_salt: str):
    """The source header (identity kept), minus what the new pixels make stale, with a new
    series and SOP Instance UID and a Source Image Sequence reference."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    ds = header
    old_uid = str(ds.get("SOPInstanceUID", "") or "")
    for kw in _STALE:
        if kw in ds:
            delattr(ds, kw)
    for tag in [t for t in ds.keys() if t.element == 0]:  # group lengths would go stale
        del ds[tag]
    image_type = [str(v) for v in (ds.get("ImageType") or ["ORIGINAL", "PRIMARY"])]
    ds.ImageType = ["DERIVED", *(image_type[1:] or ["PRIMARY"])]
    if old_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.get("SOPClassUID", "") or "1.2.840.10008.5.1.4.1.1.1.2"
        ref.ReferencedSOPInstanceUID = old_uid
        ds.SourceImageSequence = Sequence([ref])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[
        "series", str(ds.get("SeriesInstanceUID", "") or source), uid_salt])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[old_uid or str(source), uid_salt])
    return ds


def _window(hist: np.ndarray) -> tuple[float, float] | None:
    """(centre, width) from the 0.5-99.5 % range of the non-zero pixels counted by
    ``hist`` (their foreground histogram: ``int [levels]``, bin 0 ignored); None if there
    are none."""
    hist = np.asarray(hist, np.int64).copy()
    hist[:1] = 0
    total = int(hist.sum())
    if not total:
        return None
    cdf = np.cumsum(hist)
    lo = int(np.searchsorted(cdf, 0.005 * total))
    hi = int(np.searchsorted(cdf, 0.995 * total))
    return (lo + hi) / 2, max(hi - lo, 1)


def _foreground_histogram(px: np.ndarray, rec: Record) -> np.ndarray:
    """The foreground histogram of ``px`` (the values of ``rec.pixels``, as written): the
    record's own (:attr:`Record.histogram`, carried through the harmonisation LUT) when it
    has one, else counted here (one pass over the image)."""
    if rec.histogram is not None:
        return rec.histogram
    return foreground_histogram(px, 16)


def _set_pixels(ds, px: np.ndarray, rec: Record, header) -> None:
    """Image Pixel module, window, rescale and File Meta for the new pixels (the pixel
    data element itself is written by :func:`_atomic_save`)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    hist = _foreground_histogram(px, rec)
    levels = np.flatnonzero(hist)
    used = max(1, int(levels[-1]).bit_length() if len(levels) else 0)
    bits = max(used, int(rec.meta.get("bits_stored") or used))
    ds.PhotometricInterpretation = "MONOCHROME2"
    if "PresentationLUTShape" in header:
        ds.PresentationLUTShape = "IDENTITY"
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = px.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if "RescaleSlope" in header or "RescaleIntercept" in header:
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    window = _window(hist)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:.1f}", f"{window[1]:.1f}"
    sop_class = str(header.get("SOPClassUID", "") or "") or "1.2.840.10008.5.1.4.1.1.1.2"
    ds.SOPClassUID = sop_class
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "PixelData" in ds:
        del ds.PixelData


def _pixel_element_header(nbytes: int) -> bytes:
    """(7FE0,0010) Pixel Data, VR OW, explicit VR little endian, 32-bit length."""
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, nbytes)


def _atomic_save(ds, px: np.ndarray, dest: Path) -> None:
    """Write ``ds`` then the pixel data element of ``px`` (uint16, C order, taken from the
    array without a copy) atomically (:func:`mammoprep.atomic.write_parts`: temporary
    file, fsync, rename; O_DIRECT where the file system allows): ``dest`` is either
    absent/old or the complete new file, never a partial one (kill -9, disk full). ``ds``
    must hold no element after (7FE0,0010)."""
    import io

    px = np.ascontiguousarray(px, dtype="<u2")
    head = io.BytesIO()
    ds.preamble = b"\0" * 128
    ds.save_as(head, enforce_file_format=True)
    write_parts(dest, [head.getbuffer(), _pixel_element_header(px.nbytes),
                       memoryview(px).cast("B")])
