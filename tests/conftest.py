from __future__ import annotations

import pytest

from ryot_telemetry.testing import Capture, capture


@pytest.fixture
def cap() -> Capture:
    c = capture()
    yield c
    c.shutdown()
