"""The one record type every preprocessing step takes and returns.

A :class:`Record` holds

* ``pixels``: ``uint16 [rows, cols]`` in MONOCHROME2 polarity (higher = brighter = denser),
  detector values after the Modality LUT, MONOCHROME1 already inverted, padding set to 0;
* ``meta``: a flat, JSON-serialisable dict with no patient identity (see :data:`META_FIELDS`);
* ``path``: where it came from (for messages only; never written into shards).

Steps are pure functions ``Record -> Record``; they never modify their input. Each step
that changes pixels appends its name to ``meta["steps"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

#: Metadata keys written by :func:`mammoprep.io.dicom.read_dicom`, with units.
META_FIELDS: dict[str, str] = {
    "manufacturer": "(0008,0070) Manufacturer, '' if absent",
    "model": "(0008,1090) Manufacturer's Model Name, '' if absent",
    "modality": "(0008,0060) Modality",
    "sop_class_uid": "(0008,0016) SOP Class UID, else (0002,0002) Media Storage SOP Class UID; ''",
    "body_part": "(0018,0015) Body Part Examined, upper case; None if absent",
    "mammogram": "True if the header alone shows a mammogram (mammoprep.io.mammogram rules)",
    "mammogram_evidence": "which evidence decided `mammogram`, e.g. 'modality MG', 'sop class "
                          "mammography', 'dx + image laterality', 'body part BREAST', "
                          "'cr + body part CHEST' (table: mammoprep/mammogram.py)",
    "kvp": "(0018,0060) KVP, kV",
    "anode_target": "(0018,1191) Anode Target Material",
    "filter_material": "(0018,7050) Filter Material",
    "body_part_thickness_mm": "(0018,11A0) Body Part Thickness, mm",
    "compression_force_n": "(0018,11A2) Compression Force, N",
    "exposure_mas": "(0018,1152) Exposure, mAs",
    "laterality": "L / R / None: (0020,0062) Image Laterality, then (0020,0060) Laterality",
    "view": "CC / MLO / ML / LM / XCCL / ... : (0018,5101) View Position, then View Code Sequence",
    "presentation_intent": "(0008,0068) Presentation Intent Type: FOR PROCESSING / FOR PRESENTATION",
    "bits_stored": "(0028,0101) Bits Stored",
    "bits_allocated": "(0028,0100) Bits Allocated",
    "photometric": "(0028,0004) Photometric Interpretation as stored",
    "transfer_syntax": "(0002,0010) Transfer Syntax UID (implicit VR LE when no File Meta)",
    "rows": "(0028,0010) Rows",
    "columns": "(0028,0011) Columns",
    "pixel_spacing_mm": "[row, col] spacing in mm from (0028,0030) or (0018,1164), None if absent",
    "sop_uid_hash": "salted HMAC-SHA256 of the SOP Instance UID, 16 hex chars (with the salt, "
                    "`mammoprep inspect` finds a file's hash)",
    "patient_hash": "salted HMAC-SHA256 of the Patient ID, 16 hex chars",
    "study_hash": "salted HMAC-SHA256 of the Study Instance UID, 16 hex chars",
    "inverted": "True if MONOCHROME1 data were inverted as (2^BitsStored - 1) - x",
    "inversion_reason": "which tag decided the inversion",
    "modality_lut": "'rescale', 'lut' or None",
    "voi": "None (default: detector values) or which VOI transform was applied",
    "padding_pixels": "number of pixels set to 0 from (0028,0120) Pixel Padding Value",
    "decoder": "name of the decoder plug-in that produced the pixels",
    "decode_reduction": "JPEG 2000 resolution levels dropped when decoding (0 = full size; "
                        "r: pixels are 2^r times smaller per axis than rows x columns, and "
                        "pixel_spacing_mm is the spacing of those pixels)",
    "steps": "list of processing steps applied, in order",
}


@dataclass(frozen=True)
class Record:
    """Pixels plus identity-free metadata. Immutable: use :meth:`evolve`."""

    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    #: ``int64 [n]``: the number of pixels at each non-zero level of ``pixels`` (index =
    #: level, ``[0] = 0``, no pixel at ``n`` or above), when a step knew it without another
    #: pass over the image (:func:`mammoprep.harmonise.match.harmonize`); None = not known. Never
    #: written anywhere; :meth:`evolve` drops it with the pixels it describes.
    histogram: np.ndarray | None = field(default=None, repr=False, compare=False)

    def evolve(self, pixels: np.ndarray | None = None, step: str | None = None,
               histogram: np.ndarray | None = None, **meta_updates: Any) -> "Record":
        """A new record with new pixels and/or metadata; ``step`` is appended to ``steps``.
        ``histogram``: that of the new ``pixels`` (see :attr:`histogram`); new pixels
        without one have none, unchanged pixels keep theirs."""
        meta = dict(self.meta)
        meta.update(meta_updates)
        if step is not None:
            meta["steps"] = [*meta.get("steps", []), step]
        if pixels is None:
            pixels = self.pixels
            histogram = self.histogram if histogram is None else histogram
        return replace(self, pixels=pixels, meta=meta, histogram=histogram)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]

    def stats(self) -> dict[str, Any]:
        """Pixel statistics: shape, min, max, fraction of exact-zero pixels."""
        px = self.pixels
        return {"shape": list(px.shape), "min": int(px.min()), "max": int(px.max()),
                "zero_fraction": float(np.count_nonzero(px == 0) / px.size)}
