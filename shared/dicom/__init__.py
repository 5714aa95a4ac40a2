"""Pure DICOM code: validation, attribute extraction, normalisation."""
