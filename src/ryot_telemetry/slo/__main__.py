"""``python -m ryot_telemetry.slo rules [TABLE] [-o FILE]``: write burn-rate rules for an SLO table."""

from . import main

raise SystemExit(main())
