"""Keep pydicom from writing values into the logs; every module that reads datasets imports it.

pydicom's value-validation warnings quote the value (a patient's name, an ID), and nothing of
a dataset may reach the logs. Files are served and stored as received anyway; the checks
that matter are made explicitly where they matter.
"""

from __future__ import annotations

import logging

from pydicom import config as pydicom_config

pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
logging.getLogger("pydicom").setLevel(logging.ERROR)
