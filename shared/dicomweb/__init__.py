"""Pure DICOMweb protocol code: media types, multipart, paths, responses."""
