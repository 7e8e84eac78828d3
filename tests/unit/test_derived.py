"""Derived gauges: token efficiency (tokens/s per GPU memory percent) and ryot_service_info."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ryot_telemetry import configure
from ryot_telemetry.export.assembly import package_version
from ryot_telemetry.recording import derived
from ryot_telemetry.recording import recorder as _recorder
from ryot_telemetry.recording import request as _request
from ryot_telemetry.recording.derived import _Ring
from ryot_telemetry.testing import Capture, capture
from support.nvml import FakeNvml, GiB, device

EFF = "ryot.token.efficiency_ratio"


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The recorder's and the sliding windows' clock, set by the test: ``now[0] = t``."""
    t = [1000.0]
    monkeypatch.setattr(_recorder, "_clock", lambda: t[0])
    monkeypatch.setattr(_request, "_clock", lambda: t[0])
    monkeypatch.setattr(derived, "_clock", lambda: t[0])
    return t


def finish(cap: Capture, model: str, completion_tokens: int) -> None:
    req = cap.recorder.start(model, "chat_completion", "standard")
    req.completion_tokens = completion_tokens
    req.success(cap.recorder)


def make(fake: FakeNvml, models: dict) -> Capture:
    return capture(gpu_backend=fake, gpu_models=models)


def test_efficiency_is_tokens_per_second_over_memory_percent(now: list[float]) -> None:
    """300 tokens in the last 30 s of a 30 s-old recorder (10 tok/s) on a GPU 25 % full: ratio 0.4."""
    c = make(FakeNvml([device(20 * GiB, 80 * GiB), device(1 * GiB, 80 * GiB)]), {0: "llama"})
    try:
        now[0] = 1010.0
        finish(c, "llama", 300)
        now[0] = 1030.0
        c.collect()
        assert c.series(EFF) == [{"model": "llama"}]
        assert c.value(EFF, model="llama") == pytest.approx(0.4)
    finally:
        c.shutdown()


def test_efficiency_for_a_model_named_on_mig_instances(now: list[float]) -> None:
    """A model on MIG instances 0/0 and 0/1 (3+5 of 10+20 GiB) and also on the parent: the instances count, once."""
    inst0 = {"memory": (3 * GiB, 10 * GiB), "compute": [], "graphics": []}
    inst1 = {"memory": (5 * GiB, 20 * GiB), "compute": [], "graphics": []}
    fake = FakeNvml([device(8 * GiB, 80 * GiB, mig=[inst0, inst1])])
    c = make(fake, {"0/0": "mistral", "0/1": "mistral", "0": "mistral"})
    try:
        now[0] = 1100.0
        finish(c, "mistral", 1600)  # 1600 tokens over the last minute: 26.67 tok/s
        c.collect()
        assert c.value(EFF, model="mistral") == pytest.approx((1600 / 60) / (100 * 8 / 30))
    finally:
        c.shutdown()


def test_efficiency_over_all_devices_of_a_model(now: list[float]) -> None:
    """A model named on GPUs 0 and 1 (20 and 40 of 80 GiB: 37.5 %) at 60 tok/s over the minute: ratio 1.6."""
    c = make(FakeNvml([device(20 * GiB, 80 * GiB), device(40 * GiB, 80 * GiB)]), {0: "llama", 1: "llama"})
    try:
        now[0] = 1100.0
        finish(c, "llama", 3600)
        c.collect()
        assert c.value(EFF, model="llama") == pytest.approx(60 / 37.5)
        assert c.gpu.sweeps == 1  # the efficiency gauge shares the GPU gauges' sweep
    finally:
        c.shutdown()


def test_efficiency_needs_both_tokens_and_a_nonzero_memory_percent(now: list[float]) -> None:
    """No point for a model without tokens, an unnamed model, or a GPU at 0 % memory used."""
    fake = FakeNvml([device(0, 80 * GiB), device(8 * GiB, 80 * GiB)])
    c = make(fake, {0: "idle-gpu", 1: "no-traffic"})
    try:
        now[0] = 1010.0
        finish(c, "idle-gpu", 100)
        finish(c, "unnamed", 100)
        c.collect()
        assert c.points(EFF) == []
    finally:
        c.shutdown()


def test_efficiency_absent_without_nvml(cap: Capture, now: list[float]) -> None:
    """No GPU data (no NVML): no efficiency point, even with traffic."""
    finish(cap, "m", 100)
    cap.collect()
    assert cap.points(EFF) == []


def test_service_info_is_exposed_with_value_1_and_its_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scrape shows ryot_service_info{component,service,version} 1.0."""
    monkeypatch.setenv("RYOT_TELEMETRY_COMPONENT", "engine")
    tel = configure(
        service_name="chat-svc",
        exporters="prometheus",
        prometheus_registry="private",
        start_prometheus_server=False,
        gpu=False,
    )
    try:
        text = generate_latest(tel.registry).decode()
        samples = [
            (s.name, {k: v for k, v in s.labels.items() if not k.startswith("otel_scope_")}, s.value)
            for family in text_string_to_metric_families(text)
            if family.name == "ryot_service_info"
            for s in family.samples
        ]
        assert samples == [
            ("ryot_service_info", {"component": "engine", "service": "chat-svc", "version": package_version()}, 1.0)
        ]
    finally:
        tel.shutdown()


def test_sliding_window_ignores_values_older_than_the_ring() -> None:
    """A request drained more than 15 minutes late does not wipe the newer second sharing its ring slot."""
    ring = _Ring()
    ring.add(1000, 50)
    ring.add(100, 7)  # 900 s older, same slot: outside every window
    assert ring.sum(1000, 60) == 50


def test_sliding_window_sums_across_the_ring_boundary() -> None:
    """A window whose seconds wrap from the ring's last slot to its first is summed exactly."""
    ring = _Ring()
    for s in range(1780, 1821):  # slots 880..899, then 0..20
        ring.add(s, s - 1700)
    assert ring.sum(1820, 60) == sum(range(80, 121))
    assert ring.sum(1820, 30) == sum(range(91, 121))  # (1790, 1820]
    assert ring.sum(1799, 10) == sum(range(90, 100))  # ends on the ring's last slot
    assert ring.sum(1820, 900) == sum(range(80, 121))


def test_sliding_window_forgets_stale_slots_after_a_gap() -> None:
    """Slots of seconds that left the ring during a quiet spell count as zero, whatever the gap."""
    ring = _Ring()
    ring.add(1000, 5)
    ring.add(1001, 7)
    ring.add(1500, 11)  # 500 s later: 1000 and 1001 still in the 15-minute window
    assert (ring.sum(1500, 60), ring.sum(1500, 300), ring.sum(1500, 900)) == (11, 11, 23)
    ring.add(1900, 13)  # 1000 is now out (the window is (1000, 1900]), 1001 still in
    assert (ring.sum(1900, 900), ring.sum(1900, 60)) == (7 + 11 + 13, 13)
    ring.add(2801, 17)  # a gap of 901 s: every earlier slot is stale
    assert (ring.sum(2801, 900), ring.sum(2801, 1)) == (17, 17)
    ring.add(1901, 99)  # drained 900 s late: outside every window, and no slot is overwritten
    assert ring.sum(2801, 900) == 17
    assert ring.sum(3000, 900) == 17  # queried later with no new second: the window just slides
    assert ring.sum(3701, 900) == 0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 50)), max_size=60),
    st.integers(0, 5000),
    st.sampled_from([1, 60, 300, 900]),
)
def test_sliding_window_equals_a_plain_sum_over_the_kept_seconds(
    adds: list[tuple[int, int]], now_s: int, seconds: int
) -> None:
    """Against the definition: the ring keeps every value of a second within RING_SECONDS of the newest second
    added (values older than that when they arrive are dropped), and a window sums the kept values of its seconds."""
    ring = _Ring()
    kept: list[tuple[int, int]] = []
    head = None
    for second, value in adds:
        head = second if head is None else max(head, second)
        if second > head - derived.RING_SECONDS:
            kept.append((second, value))
        ring.add(second, value)
    expected = sum(
        v for s, v in kept if now_s - seconds < s <= now_s and head is not None and s > head - derived.RING_SECONDS
    )
    assert ring.sum(now_s, seconds) == expected


def test_parts_never_exceed_their_whole(cap: Capture, now: list[float], caplog: pytest.LogCaptureFixture) -> None:
    """250 cached of 100 prompt tokens count as 100 cached (hit ratio 1.0, effectiveness 1.0), 40 reasoning of 10
    completion tokens as 10; one warning per model names what was clamped."""
    import logging

    with caplog.at_level(logging.WARNING, logger="ryot_telemetry"):
        for model in ("m", "m", "other"):
            with cap.recorder.request(model, "chat_completion", "standard") as req:
                req.prompt_tokens, req.cached_tokens = 100, 250
                req.completion_tokens, req.reasoning_tokens = 10, 40
        cap.collect()
    assert cap.value("ryot.cached_prompt_tokens", model="m", generation_mode="standard") == 200
    assert cap.value("ryot.reasoning_tokens", model="m", generation_mode="standard") == 20
    assert cap.value("ryot.cached_prompt_tokens", model="other", generation_mode="standard") == 100
    assert cap.value("ryot.kv_cache.hit_ratio", model="m", context_type="conversation") == 1.0
    assert cap.value("ryot.kv_cache.hit_ratio", model="other", context_type="conversation") == 1.0
    eff = cap.histogram("ryot.prompt_cache.effectiveness", model="m")
    assert eff is not None and (eff.count, eff.sum) == (2, 2.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"ryot-telemetry: model {model!r}: usage reports cached_tokens=250 > prompt_tokens=100 and "
        "reasoning_tokens=40 > completion_tokens=10; clamped to the whole; further ones for this model are not logged"
        for model in ("m", "other")
    ]


def test_usage_derived_hit_ratio_stays_within_0_and_1(now: list[float]) -> None:
    """Window sums whose cached part exceeds the prompt (added past the recorder) still give a ratio of 1.0."""
    windows = derived.SlidingWindows()
    windows.add_sums({}, {("m", "conversation", int(now[0])): [100, 250]})
    assert windows.hit_ratios() == [("m", "conversation", 1.0)]
