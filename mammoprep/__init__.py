"""mammoprep: multi-vendor mammography DICOM -> training-ready data.

The pipeline works on one record type, :class:`mammoprep.record.Record` (pixels + metadata),
through small pure functions. Importing this package never imports torch.
"""

__version__ = "0.1.0"
