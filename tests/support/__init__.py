"""Helpers shared by the test modules (fakes, receivers, PromQL and NVML stand-ins); no test module imports another."""
