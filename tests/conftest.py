from __future__ import annotations

import threading
from typing import Any

import pytest

from ryot_telemetry.testing import Capture, capture
from support.polling import until


@pytest.fixture
def cap() -> Capture:
    c = capture()
    yield c
    c.shutdown()


@pytest.fixture(autouse=True)
def _no_leaked_drainer() -> Any:
    """Every test stops the background drainers it starts (Telemetry.shutdown() does): no thread outlives a test."""
    before = {t for t in threading.enumerate() if t.name == "ryot-telemetry-drain"}
    yield

    def leaked() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "ryot-telemetry-drain" and t not in before]

    until(lambda: not leaked(), 5, interval=0.01)
    assert not leaked(), f"background drainer threads left running: {leaked()}"
