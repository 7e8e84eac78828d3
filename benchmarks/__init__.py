"""Benchmarks for ryot-telemetry; run with ``python -m benchmarks`` (``--quick`` for a smoke run)."""
