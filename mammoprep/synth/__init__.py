"""Deterministic synthetic multi-vendor cohort (``mammoprep synth``), in layers:

- :mod:`.plan`: vendor profiles, patients, identities, breasts, lesions (no pixels);
- :mod:`.render`: one image's pixels, masks and boxes (:func:`render_image`);
- :mod:`.overlays`: burned-in text, the orientation marker, real-archive artefacts;
- :mod:`.dicom`: the DICOM header and the pixel encoders;
- :mod:`.cohort`: the whole cohort written to disk (:func:`generate_cohort`) with its
  spreadsheets and label tables.
"""

from .cohort import (IDENTITY_COLUMNS, LABEL_COLUMNS, XLSX_COLUMNS, XLSX_ROW_VIEWS,
                     generate_cohort, named_breasts, sheet_labels)
from .dicom import VIEW_CODES, build_dataset, encodable_syntax
from .plan import (DEFAULT_SIZE, VENDORS, BreastPlan, Lesion, PatientPlan, VendorProfile,
                   parse_size, plan_cohort)
from .render import ImageSpec, SynthImage, image_spec, render_image, to_stored

__all__ = [
    "VendorProfile", "VENDORS", "Lesion", "BreastPlan", "PatientPlan", "ImageSpec",
    "SynthImage", "LABEL_COLUMNS", "IDENTITY_COLUMNS", "XLSX_COLUMNS", "XLSX_ROW_VIEWS",
    "named_breasts", "sheet_labels", "DEFAULT_SIZE",
    "VIEW_CODES", "plan_cohort", "image_spec", "render_image", "to_stored",
    "build_dataset", "generate_cohort", "parse_size", "encodable_syntax",
]
