"""``python -m tools.importer`` = ``dicomweb-import``."""

from tools.importer.cli import main

raise SystemExit(main())
