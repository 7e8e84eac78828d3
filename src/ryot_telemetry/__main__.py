"""``python -m ryot_telemetry``: the ``ryot-telemetry`` command line."""

from .cli import main

raise SystemExit(main())
