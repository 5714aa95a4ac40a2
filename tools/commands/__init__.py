"""The commands a user runs, as console scripts of the virtual environment
(``[project.scripts]`` in pyproject.toml): each runs one module's ``main`` with this
checkout's code, from any directory.

This package is installed as ``o3_dpacs``, the one importable name the project installs.
The code the commands run (``shared``, ``local``, ``tools``) is imported from the checkout,
put first on ``sys.path`` in the command's own process only: a virtual environment gains no
``tools`` or ``local`` of ours (docs/architecture.md, "Commands and installed names").
Developers' generators stay ``python -m tools.<name>``, run from the checkout.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

#: The checkout: this file is ``tools/commands/__init__.py`` in it (``pip install -e``).
CHECKOUT = Path(__file__).resolve().parents[2]
#: Console script -> the module whose ``main(argv=None) -> int`` it runs.
COMMANDS = {
    "dicomweb-serve": "local.__main__",
    "dicomweb-apikeys": "tools.apikeys",
    "dicomweb-audit": "tools.audit",
    "dicomweb-import": "tools.importer.cli",
    "dicomweb-gateway": "tools.gateway.cli",
    "dicomweb-viewer": "tools.viewer",
    "dicomweb-smoke": "tools.smoke",
    "dicomweb-cost": "tools.cost",
    "dicomweb-deid-backfill": "tools.deid_backfill",
    "dicomweb-substring-backfill": "tools.substring_backfill",
    "dicomweb-lifecycle": "tools.lifecycle",
    "dicomweb-follow": "tools.follow",
}


def use_checkout() -> None:
    """Make the checkout's packages importable in this process, ahead of anything installed."""
    if not (CHECKOUT / "template.yaml").is_file():
        raise SystemExit(
            f"{Path(sys.argv[0]).name}: no checkout of the project around {__file__}: "
            "install it from one with pip install -e"
        )
    if sys.path[:1] != [str(CHECKOUT)]:
        sys.path.insert(0, str(CHECKOUT))


def _command(name: str) -> Callable[[], int]:
    module = COMMANDS[name]

    def run() -> int:
        use_checkout()
        return int(importlib.import_module(module).main())

    run.__doc__ = f"``{name}``: ``{module}.main()`` with the checkout's code."
    return run


serve = _command("dicomweb-serve")
apikeys = _command("dicomweb-apikeys")
audit = _command("dicomweb-audit")
import_files = _command("dicomweb-import")
gateway = _command("dicomweb-gateway")
viewer = _command("dicomweb-viewer")
smoke = _command("dicomweb-smoke")
cost = _command("dicomweb-cost")
deid_backfill = _command("dicomweb-deid-backfill")
substring_backfill = _command("dicomweb-substring-backfill")
lifecycle = _command("dicomweb-lifecycle")
follow = _command("dicomweb-follow")
