"""Writing a processed record back as a derived DICOM (the input file is never touched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .record import Record

# attributes that describe the old pixel values and would mislead a viewer afterwards
_STALE = ("VOILUTSequence", "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation",
          "VOILUTFunction", "ModalityLUTSequence", "PixelPaddingValue",
          "PixelPaddingRangeLimit", "SmallestImagePixelValue", "LargestImagePixelValue")


def write_derived_dicom(source: str | Path, rec: Record, dest: str | Path,
                        description: str, uid_salt: str = "") -> None:
    """Copy ``source``'s header, replace pixels with ``rec.pixels`` (uint16 MONOCHROME2,
    uncompressed explicit VR LE), update Bits Stored/High Bit, give a new SOP Instance UID
    (deterministic from the old one and ``uid_salt``), add Derivation Description and a
    Source Image Sequence reference, and drop LUT/window attributes of the old values."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.dcmread(source, force=True)
    px = np.ascontiguousarray(rec.pixels, dtype=np.uint16)
    bits = max(1, int(px.max(initial=0)).bit_length())
    bits = max(bits, int(rec.meta.get("bits_stored") or bits))
    old_uid = str(ds.get("SOPInstanceUID", ""))
    for kw in _STALE:
        if kw in ds:
            delattr(ds, kw)
    ds.PhotometricInterpretation = "MONOCHROME2"
    if "PresentationLUTShape" in ds:
        ds.PresentationLUTShape = "IDENTITY"
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = px.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    fg = px[px > 0]
    if fg.size:
        lo, hi = np.percentile(fg, [0.5, 99.5])
        ds.WindowCenter, ds.WindowWidth = f"{(lo + hi) / 2:.1f}", f"{max(hi - lo, 1):.1f}"
    image_type = list(ds.get("ImageType", ["ORIGINAL", "PRIMARY"]))
    ds.ImageType = ["DERIVED", *image_type[1:]] if image_type else ["DERIVED", "PRIMARY"]
    ds.DerivationDescription = description[:1024]
    if old_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.get("SOPClassUID", "")
        ref.ReferencedSOPInstanceUID = old_uid
        ds.SourceImageSequence = [ref]
    new_uid = generate_uid(entropy_srcs=[old_uid or str(source), uid_salt])
    ds.SOPInstanceUID = new_uid
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.1.2")
    ds.file_meta.MediaStorageSOPInstanceUID = new_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = px.tobytes()
    ds["PixelData"].VR = "OW"
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, enforce_file_format=True)
