"""Reading and writing files: DICOM (paths, headers, pixels, header checks, photometric
conversion, mammogram recognition, derived DICOMs) and 16-bit PNG. Imports nothing above
:mod:`mammoprep.decoders` and the top-level plumbing."""
