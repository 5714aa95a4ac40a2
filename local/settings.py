"""Where the local stack keeps its data and says how to reach it, chosen from the environment
the same way by ``dicomweb-serve`` and by the commands that read what it keeps
(``dicomweb-audit``, ``dicomweb-apikeys --local``), whatever the current directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

#: The checkout the stack runs from (its template.yaml, its functions).
CHECKOUT = Path(__file__).resolve().parent.parent
#: The local backend's data directory unless ``DICOMWEB_DATA_DIR`` names another.
DEFAULT_DATA_DIR = CHECKOUT / ".local-data"
#: The running stack's description (backend, data directory, moto endpoint, resources)
#: unless ``LOCAL_STACK_STATE`` names another file.
DEFAULT_STATE_FILE = CHECKOUT / ".local-stack.json"


def data_dir(environ: Mapping[str, str]) -> Path:
    """The local backend's data directory: ``DICOMWEB_DATA_DIR``, else the checkout's."""
    return Path(environ.get("DICOMWEB_DATA_DIR") or DEFAULT_DATA_DIR)


def state_file(environ: Mapping[str, str]) -> Path:
    """The running stack's state file: ``LOCAL_STACK_STATE``, else the checkout's."""
    return Path(environ.get("LOCAL_STACK_STATE") or DEFAULT_STATE_FILE)
