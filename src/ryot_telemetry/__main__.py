"""``python -m ryot_telemetry demo``."""

from .cli import main

raise SystemExit(main())
