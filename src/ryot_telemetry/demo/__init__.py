"""The demo: a simulated router (``simulate``) and its traffic and summary (``run``, ``ryot-telemetry demo``)."""
