"""Pure DICOM code: validation, attribute extraction, normalisation.

Reading validation is switched off here, once: pydicom's value warnings quote the value
(a patient's name, an ID), and nothing of a dataset may reach the logs. Files are stored
as received anyway; validation that matters is done explicitly in ``validate``.
"""

from __future__ import annotations

import logging

from pydicom import config as _pydicom_config

_pydicom_config.settings.reading_validation_mode = _pydicom_config.IGNORE
logging.getLogger("pydicom").setLevel(logging.ERROR)
