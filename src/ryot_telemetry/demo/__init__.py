"""The demo: a simulated router and the ``ryot-telemetry`` command line."""
