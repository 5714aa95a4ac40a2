"""DICOM code: validation, attribute extraction, level tables, normalisation."""
