"""Test support: the helpers the tests and the benchmarks share, and the only part of
``tests/`` that ``bench/`` may import.

- ``dicom_files``: the reference table of real DICOM files (pydicom, pydicom-data).
- ``handlers``: a function's ``app.py`` loaded as Lambda loads it, and REST proxy events.
- ``served``: ``python -m local`` as a process of its own, on a free port.
- ``uploads``: the upload path as a client drives it.
- ``orthanc``: Debian's Orthanc as a DICOMweb peer.
- ``debian_tools``: Debian command-line tools installed on demand (``python -m
  tests.support.debian_tools`` installs them all before ``make test`` runs pytest).
- ``fuzz``: seeded mutations of DICOM files and hostile HTTP requests.
- ``fuzz_stow``: those mutations sent through the STOW-RS handler in-process.
- ``gateway_peer``: a raw-socket DICOM peer of the C-STORE gateway, and hostile cases.

Names without a leading underscore are the public surface; ``tests/unit/test_layout.py``
checks that nobody imports anything else across modules.
"""
