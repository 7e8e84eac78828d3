"""Measurement sources outside the request path: the NVML GPU gauges and the engine-reported metrics."""
