"""The recorder API for serving loops that are not routers: ``with rec.request(...) as req:`` and manual ends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from ryot_telemetry.testing import Capture

REQ = "ryot.inference.requests"
ERR = "ryot.inference.errors"
TOK = "ryot.tokens.generated"
LAT = "ryot.inference.latency"


class ModelNotFoundError(Exception):
    pass


@pytest.fixture(autouse=True)
def _m_is_served(cap: Capture) -> None:
    """Model "m" already has its label slot, as one the serving loop has served does: its requests are in flight and
    recorded under "m" from the start (a name without a slot is in flight under __unknown__ until admitted, and a
    model_not_found for it stays __unknown__; tests/unit/test_bad_inputs.py pins that)."""
    cap.recorder.models("m")


def test_with_block_records_success_and_tokens(cap: Capture) -> None:
    """A block that completes is one success, with the tokens set inside it and its latency."""
    rec = cap.recorder
    with rec.request(model="m", endpoint="chat_completion", mode="standard", batch_size=1) as req:
        assert rec.active() == {("m", "standard", "chat_completion"): 1}
        req.prompt_tokens, req.completion_tokens = 12, 3
    assert rec.active() == {("m", "standard", "chat_completion"): 0}
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="success") == 1
    assert cap.value(TOK, model="m", token_type="prompt", generation_mode="standard") == 12
    assert cap.value(TOK, model="m", token_type="completion", generation_mode="standard") == 3
    lat = cap.histogram(LAT, model="m", batch_size="1", generation_mode="standard")
    assert lat is not None and lat.count == 1


def test_with_block_records_failure_and_reraises_the_same_exception(cap: Capture) -> None:
    """An exception is classified (model_not_found, severity info) and reaches the caller as the same object."""
    boom = ModelNotFoundError("model 'x' not found")
    with pytest.raises(ModelNotFoundError) as got, cap.recorder.request("m", "completion", "standard"):
        raise boom
    assert got.value is boom
    cap.collect()
    assert cap.series(REQ) == [
        {"model": "m", "endpoint": "completion", "status": "error", "error_type": "model_not_found"}
    ]
    assert cap.value(ERR, model="m", error_type="model_not_found", severity="info") == 1


async def test_async_with_cancellation_is_partial_not_an_error(cap: Capture) -> None:
    """A cancelled task ends its request as partial (the client went away) and the cancellation propagates."""
    started = asyncio.Event()

    async def serve() -> None:
        async with cap.recorder.request("m", "chat_completion", "streaming") as req:
            req.first_token = req.start
            req.delivered = True
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(serve())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cap.collect()
    assert cap.series(REQ) == [{"model": "m", "endpoint": "chat_completion", "status": "partial"}]
    assert cap.points(ERR) == []
    assert cap.recorder.active() == {("m", "streaming", "chat_completion"): 0}


def test_generator_closed_inside_the_block_is_abandoned(cap: Capture) -> None:
    """A generator that serves inside ``with`` and is closed early (GeneratorExit) ends its request as partial."""

    def tokens() -> Iterator[str]:
        with cap.recorder.request("m", "chat_completion", "streaming") as req:
            req.delivered = True
            yield "a"
            yield "b"

    gen = tokens()
    assert next(gen) == "a"
    gen.close()
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 1


def test_request_ends_exactly_once(cap: Capture) -> None:
    """An explicit success() inside the block wins; the exception after it still propagates, uncounted."""
    with pytest.raises(KeyError), cap.recorder.request("m", "chat_completion", "standard") as req:
        req.success()
        raise KeyError("after the end")
    req.fail(RuntimeError("late"))
    req.abandon()
    cap.collect()
    assert cap.series(REQ) == [{"model": "m", "endpoint": "chat_completion", "status": "success"}]
    assert cap.recorder.active() == {("m", "standard", "chat_completion"): 0}


def test_manual_ends_without_and_with_the_recorder_argument(cap: Capture) -> None:
    """req.success()/fail(exc)/abandon() need no recorder; the older success(rec)/fail(rec, exc)/abandon(rec) work."""
    rec = cap.recorder
    rec.start("new", "chat_completion", "standard").success()
    rec.start("new", "chat_completion", "standard").fail(TimeoutError())
    rec.start("new", "chat_completion", "standard").abandon()
    rec.start("old", "chat_completion", "standard").success(rec)
    rec.start("old", "chat_completion", "standard").fail(rec, TimeoutError())
    rec.start("old", "chat_completion", "standard").abandon(rec)
    cap.collect()
    for model in ("new", "old"):
        assert cap.value(REQ, model=model, endpoint="chat_completion", status="success") == 1
        assert cap.value(REQ, model=model, endpoint="chat_completion", status="timeout", error_type="timeout") == 1
        assert cap.value(REQ, model=model, endpoint="chat_completion", status="partial") == 1


def test_failure_after_delivery_is_partial(cap: Capture) -> None:
    """A stream that delivered content and then raised counts as partial, with its error type in the errors."""
    with pytest.raises(MemoryError), cap.recorder.request("m", "chat_completion", "streaming") as req:
        req.delivered = True
        raise MemoryError()
    cap.collect()
    assert cap.value(REQ, model="m", endpoint="chat_completion", status="partial") == 1
    assert cap.value(ERR, model="m", error_type="oom", severity="critical") == 1


def test_telemetry_failure_at_exit_never_replaces_the_outcome(cap: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    """If recording fails, the block's own result or exception is what the caller sees."""

    def broken(req: object) -> None:
        raise RuntimeError("telemetry broke")

    monkeypatch.setattr(cap.recorder, "_submit", broken)
    with cap.recorder.request("m", "chat_completion", "standard"):
        pass
    with pytest.raises(ValueError, match="mine"), cap.recorder.request("m", "chat_completion", "standard"):
        raise ValueError("mine")


def test_a_new_name_takes_a_slot_only_once_accepted(cap: Capture) -> None:
    """Recorder API: a name without a slot is in flight under __unknown__; ``req.admit()`` moves it to its own
    label; a model_not_found for an unslotted name is recorded under __unknown__ and takes no slot."""
    rec = cap.recorder
    with rec.request("new", "chat_completion", "streaming") as req:
        assert {k: v for k, v in rec.active().items() if v} == {("__unknown__", "streaming", "chat_completion"): 1}
        req.admit()  # the engine accepted the model: generation started
        assert {k: v for k, v in rec.active().items() if v} == {("new", "streaming", "chat_completion"): 1}
    with pytest.raises(ModelNotFoundError), rec.request("bogus", "chat_completion", "standard"):
        raise ModelNotFoundError("model 'bogus' not found")
    cap.collect()
    assert cap.value(REQ, model="new", endpoint="chat_completion", status="success") == 1
    nf = {"endpoint": "chat_completion", "status": "error", "error_type": "model_not_found"}
    assert cap.value(REQ, model="__unknown__", **nf) == 1
    assert sorted(rec.models._map) == ["m", "new"]
