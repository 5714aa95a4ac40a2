"""Failure Reason (0008,1197) values of a stored instance (PS3.18 Table I.2-2, PS3.4 B.2.3).

Shared by validation, the store service and the STOW response: the codes are facts about an
instance, so they live with the DICOM domain, not with the HTTP response that lists them.

* 0xC000 Cannot understand: not Part 10, unparseable, truncated, a value not readable as its
  VR, nesting too deep, a required UID missing or invalid, or a body part that is not
  ``application/dicom``.
* 0xC122 Referenced Transfer Syntax not supported: unknown Transfer Syntax UID.
* 0xC409 Study Instance UID mismatch: the dataset's study differs from the URL's
  (the value dcm4chee-arc uses).
* 0x0111 Duplicate SOP Instance: the SOP Instance UID is stored with different content.
* 0x0110 Processing failure: the PatientID differs from the one stored for the study, or
  the index cannot hold the instance's entry.
* 0xA700 Out of resources: storage was unavailable; the client may retry.
* 0xA701 Out of resources: the instance would take more memory to read than this archive
  gives one request (a deflated data set inflating beyond the budget); retrying cannot help.
"""

from __future__ import annotations

CANNOT_UNDERSTAND = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
STUDY_UID_MISMATCH = 0xC409
DUPLICATE_SOP_INSTANCE = 0x0111
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
TOO_LARGE = 0xA701
