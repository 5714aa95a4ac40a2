"""``dicomweb-import``: store folders, archives and DICOMDIRs of Part 10 files in the archive."""
