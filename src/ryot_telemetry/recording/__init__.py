"""Recording: the per-request hot path (``Recorder``, ``Request``), the drain into the OTel instruments, labels,
error classification, the new-series gate, the derived gauges and the GenAI semantic-convention instruments.

Imports nothing from ``export``, ``multiproc`` or ``router``: everything here works on a ``Meter`` it is given.
"""
