"""``python -m tools.gateway`` = ``dicomweb-gateway``."""

from tools.gateway.cli import main

raise SystemExit(main())
