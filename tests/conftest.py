from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ryot_telemetry.testing import Capture, capture


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
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t.name == "ryot-telemetry-drain" and t not in before]
        if not leaked:
            break
        time.sleep(0.01)
    assert not leaked, f"background drainer threads left running: {leaked}"
