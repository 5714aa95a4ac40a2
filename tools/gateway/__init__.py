"""``dicomweb-gateway``: a DICOM Storage SCP that forwards what modalities send to the archive."""
