"""Synthetic images as DICOM: the header of one view (:func:`build_dataset`, vendor-specific
SOP class, photometric interpretation and transfer syntax) and the encoders that
compress its pixels (falling back to an encodable syntax, :func:`encodable_syntax`)."""

from __future__ import annotations

import functools

import numpy as np

from .plan import (_NATIVE_COLS, _TS_EXPLICIT, _TS_J2K_LOSSLESS, _TS_JLS_LOSSLESS, _TS_RLE,
                   VENDORS, PatientPlan, _rng, _uid)

#: SNOMED view codes written into View Code Sequence (0054,0220).
VIEW_CODES: dict[str, tuple[str, str, str]] = {
    "CC": ("R-10242", "SRT", "cranio-caudal"),
    "MLO": ("R-10226", "SRT", "medio-lateral oblique"),
}


_SOP_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"


_SOP_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"


#: The encoder plug-ins pydicom may use for each compressed transfer syntax, in order of
#: preference (named explicitly so that output bytes do not depend on plug-in discovery
#: order). RLE: pylibjpeg-rle is ~20x faster than pydicom's native encoder and writes the
#: same bytes; the native one is the fallback.
_ENCODER_PLUGINS = {_TS_J2K_LOSSLESS: ("pylibjpeg",), _TS_JLS_LOSSLESS: ("pyjpegls",),
                    _TS_RLE: ("pylibjpeg", "pydicom")}


#: Where a vendor's transfer syntax cannot be encoded here (its encoder is an optional
#: package), the next one is written instead: JPEG-LS (pyjpegls, extra ``fast``) ->
#: JPEG 2000 lossless (pylibjpeg-openjpeg) -> Explicit VR Little Endian (always).
_ENCODER_FALLBACK = {_TS_JLS_LOSSLESS: _TS_J2K_LOSSLESS, _TS_J2K_LOSSLESS: _TS_EXPLICIT,
                     _TS_RLE: _TS_EXPLICIT}


def _encoder_plugin(transfer_syntax: str) -> str | None:
    """The pydicom encoder plug-in used for ``transfer_syntax`` here (None: none installed)."""
    from pydicom.pixels import get_encoder

    available = get_encoder(transfer_syntax).available_plugins
    return next((p for p in _ENCODER_PLUGINS[transfer_syntax] if p in available), None)


@functools.lru_cache(maxsize=None)
def encodable_syntax(transfer_syntax: str) -> str:
    """``transfer_syntax`` if an installed encoder writes it, else the first fallback that
    one does (:data:`_ENCODER_FALLBACK`; Explicit VR Little Endian needs no encoder)."""
    ts = transfer_syntax
    while ts != _TS_EXPLICIT and _encoder_plugin(ts) is None:
        ts = _ENCODER_FALLBACK[ts]
    return ts


def _ds(x: float, digits: int = 2) -> str:
    """Format a decimal string (DS) value compactly."""
    return f"{x:.{digits}f}".rstrip("0").rstrip(".")


def build_dataset(stored: np.ndarray, plan: PatientPlan, laterality: str, view: str):
    """A complete MG pydicom ``FileDataset`` for one image (uncompressed; call
    :func:`_encode` to apply the vendor's transfer syntax).

    ``stored``: uint16 [rows, cols] values as stored (already inverted for MONOCHROME1).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    prof = VENDORS[plan.vendor]
    sop_class = (_SOP_FOR_PROCESSING if prof.presentation_intent == "FOR PROCESSING"
                 else _SOP_FOR_PRESENTATION)
    sop_uid = _uid(plan.seed, plan.case_id, laterality, view, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MAMMOPREP_SYNTH"
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = (["ORIGINAL", "PRIMARY", ""] if prof.presentation_intent == "FOR PROCESSING"
                    else ["DERIVED", "PRIMARY", ""])
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    _patient_and_study(ds, plan, laterality, view)
    _acquisition(ds, prof, plan, laterality, view, stored.shape[1])
    _view_identification(ds, laterality, view)
    _image_pixel(ds, prof, stored)
    return ds


def _patient_and_study(ds, plan: PatientPlan, laterality: str, view: str) -> None:
    """Patient, study and series modules: the plan's fake identity, dates and UIDs."""
    ident, prof = plan.identity, VENDORS[plan.vendor]
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ident["study_date"]
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = ident["study_time"]
    ds.AccessionNumber = ident["accession_number"]
    ds.Modality = "MG"
    ds.PresentationIntentType = prof.presentation_intent
    ds.Manufacturer = prof.manufacturer
    ds.InstitutionName = ident["institution"]
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "MAMMOGRAPHY BILATERAL"
    ds.SeriesDescription = f"{laterality}{view}"
    ds.ManufacturerModelName = prof.model
    ds.PatientName = ident["patient_name"]
    ds.PatientID = ident["patient_id"]
    ds.PatientBirthDate = ident["birth_date"]
    ds.PatientSex = "F"
    ds.PatientAge = ident["patient_age"]
    ds.BurnedInAnnotation = "YES"
    ds.BodyPartExamined = "BREAST"
    ds.StudyInstanceUID = ident["study_instance_uid"]
    ds.SeriesInstanceUID = _uid(plan.seed, plan.case_id, laterality, view, "series")
    ds.StudyID = ident["accession_number"][-6:]
    ds.SeriesNumber = {("R", "CC"): 1, ("R", "MLO"): 2, ("L", "CC"): 3, ("L", "MLO"): 4}[
        (laterality, view)]
    ds.InstanceNumber = 1


def _acquisition(ds, prof, plan: PatientPlan, laterality: str, view: str, cols: int) -> None:
    """Exposure and detector attributes, drawn (in this order) from the view's own
    ``exposure`` stream; the detector spacing scaled to ``cols``."""
    rng = _rng(plan.seed, plan.case_id, laterality, view, "exposure")
    ds.KVP = _ds(rng.uniform(*prof.kvp), 1)
    ds.DistanceSourceToDetector = "660"
    ds.ExposureTime = str(int(rng.integers(400, 1800)))
    ds.XRayTubeCurrent = str(int(rng.integers(60, 200)))
    ds.Exposure = str(int(rng.integers(prof.mas[0], prof.mas[1] + 1)))
    ds.ImagerPixelSpacing = [_ds(prof.native_spacing_mm * _NATIVE_COLS / cols, 5)] * 2
    ds.AnodeTargetMaterial = prof.anode
    ds.BodyPartThickness = _ds(rng.uniform(*prof.thickness_mm), 1)
    ds.CompressionForce = _ds(rng.uniform(*prof.force_n), 1)
    ds.FilterMaterial = prof.filter
    if prof.view_position:
        ds.ViewPosition = view
    ds.DetectorType = "DIRECT" if prof.energy == "high" else "SCINTILLATOR"


def _view_identification(ds, laterality: str, view: str) -> None:
    """Patient orientation, laterality and the view code sequence (:data:`VIEW_CODES`)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DSequence

    ds.PatientOrientation = (["A", "R"] if laterality == "L" else ["P", "L"]) if view == "CC" \
        else (["A", "FR"] if laterality == "L" else ["P", "FL"])
    ds.Laterality = laterality
    ds.ImageLaterality = laterality
    code, scheme, meaning = VIEW_CODES[view]
    item = Dataset()
    item.CodeValue = code
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    item.ViewModifierCodeSequence = DSequence([])
    ds.ViewCodeSequence = DSequence([item])


def _image_pixel(ds, prof, stored: np.ndarray) -> None:
    """Image pixel module, window, rescale and presentation LUT of the vendor; the pixel
    data uncompressed."""
    rows, cols = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = prof.photometric
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = list(ds.ImagerPixelSpacing)
    ds.BitsAllocated = 16
    ds.BitsStored = prof.bits_stored
    ds.HighBit = prof.bits_stored - 1
    ds.PixelRepresentation = 0
    if prof.presentation_intent == "FOR PRESENTATION":
        centre = prof.maxv * (prof.tone_lo + prof.tone_hi) / 2
        width = prof.maxv * (prof.tone_hi - prof.tone_lo)
        if prof.photometric == "MONOCHROME1":
            centre = prof.maxv - centre
        ds.WindowCenter = _ds(centre, 1)
        ds.WindowWidth = _ds(width, 1)
    if prof.rescale:
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if prof.photometric == "MONOCHROME1" else "IDENTITY"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()


def _encode(ds, stored: np.ndarray, transfer_syntax: str) -> None:
    """Compress ``ds`` in place with ``transfer_syntax`` (no-op for Explicit VR LE)."""
    if transfer_syntax == _TS_EXPLICIT:
        return
    plugin = _encoder_plugin(transfer_syntax)
    if plugin is None:
        raise RuntimeError(
            f"cannot encode transfer syntax {transfer_syntax}: none of the pydicom encoder "
            f"plug-ins {_ENCODER_PLUGINS[transfer_syntax]} is installed "
            "(pip install 'mammoprep[fast]' for pyjpegls)")
    # generate_instance_uid=False: keep the deterministic SOP Instance UID
    ds.compress(transfer_syntax, stored, encoding_plugin=plugin, generate_instance_uid=False)
