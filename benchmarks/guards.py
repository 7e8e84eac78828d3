"""The guarded request path against the bare recorder path, in the same run.

The router wrapper reads the request's shape, starts the request, calls the router, reads usage and ends the
request, each step guarded so that nothing telemetry does (or a hostile name, odd params or a result whose
attribute access raises) can change the call. The baseline is the same recording done by hand through the recorder
API (``rec.start`` / ``req.success``), with no guards and no shape handling. Their difference is what the guards and
the generality of the wrapper cost per request.
"""

from __future__ import annotations

import gc
import statistics
from typing import Any

from .common import MODELS, NoopRouter, make_params, make_response, ns, telemetry, timed


async def bench_guards(n: int, rounds: int) -> dict[str, float]:
    """Non-streaming chat calls over 10 models: bare call, recorder API by hand, the guarded wrapper."""
    params = [make_params(m) for m in MODELS]
    response = make_response()
    bare = NoopRouter(response)
    tel = telemetry()
    rec = tel.recorder
    wrapped = tel.instrument_router(NoopRouter(response))
    inner = NoopRouter(response)

    async def by_hand(p: Any) -> Any:
        req = rec.start(p.model, "chat_completion", "standard", 1)
        resp = await inner.openai_chat_completion(p)
        usage = resp.usage
        req.prompt_tokens, req.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        details = usage.prompt_tokens_details
        req.cached_tokens = details.cached_tokens if details is not None else None
        req.success(rec)
        return resp

    variants = {"bare": bare.openai_chat_completion, "recorder": by_hand, "wrapper": wrapped.openai_chat_completion}
    for call in variants.values():
        await timed(2000, call, params)
    rec.drain()
    times: dict[str, list[float]] = {k: [] for k in variants}
    gc.collect()
    for _ in range(rounds):
        for name, call in variants.items():
            times[name].append(ns(await timed(n, call, params), n))
            rec.drain()  # untimed, so each variant starts from an empty queue (the drain is section 1's)
    tel.shutdown()
    b, r, w = times["bare"], times["recorder"], times["wrapper"]
    return {
        "bare_ns": statistics.median(b),
        "recorder_ns": statistics.median([ri - bi for ri, bi in zip(r, b)]),
        "wrapper_ns": statistics.median([wi - bi for wi, bi in zip(w, b)]),
        "ratio": statistics.median([(wi - bi) / (ri - bi) for wi, ri, bi in zip(w, r, b)]),
    }


def report(r: dict[str, float], n: int, rounds: int) -> tuple[str, str, str, str]:
    """Prints the section; returns its summary row."""
    print(f"\n5. guarded request path, non-streaming, {n} calls x {rounds} rounds over 10 models (median ns/request)")
    print(
        f"   bare call {r['bare_ns']:.0f}; recorder API by hand +{r['recorder_ns']:.0f}; "
        f"guarded wrapper +{r['wrapper_ns']:.0f}"
    )
    return ("guarded wrapper overhead / recorder API by hand", f"{r['ratio']:.2f}x", "", "guards + shape handling")
