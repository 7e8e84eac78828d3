"""``python -m ryot_telemetry demo``."""

from .demo.cli import main

raise SystemExit(main())
