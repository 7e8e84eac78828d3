"""SLOs: the table, the goodput counter's exact counts, and the burn-rate rules generated from the table."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import ryot_telemetry.router.wrapper as wrapper_module
from ryot_telemetry import ConfigurationError, SloTable, configure
from ryot_telemetry.artifacts.slo_rules import EXAMPLE_TABLE, rules_yaml
from ryot_telemetry.artifacts.slo_rules import main as slo_main
from ryot_telemetry.recording import recorder as _recorder
from ryot_telemetry.recording import request as _request
from ryot_telemetry.slo import Slo, judge
from ryot_telemetry.testing import Capture, capture
from support.fakes import ChatParams, Completion, CompletionParams, content_chunk, usage, usage_chunk

ROOT = Path(__file__).resolve().parents[2]
SLO = "ryot.slo.requests"
TABLE = {"m": {"ttft": 0.5, "tpot": 0.05}}


class Clock:
    """A controlled clock: the request path reads it; the router moves it forward as if time passed."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class TimedRouter:
    """Streams ``tokens`` content chunks: the first after ``ttft`` seconds, then one every ``gap`` seconds.

    ``fail_after``: raise after that many chunks; ``latency``: non-streaming calls take that long.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.ttft, self.gap, self.tokens, self.latency = 0.0, 0.0, 1, 0.0
        self.fail_after: int | None = None
        self.raises: BaseException | None = None
        self.choices = 1  # usage reports tokens x choices, as providers do for n > 1

    def set(self, **kw: Any) -> TimedRouter:
        self.fail_after, self.raises, self.choices = None, None, 1
        for k, v in kw.items():
            setattr(self, k, v)
        return self

    async def openai_chat_completion(self, params: Any) -> Any:
        return await self._respond(params)

    async def openai_completion(self, params: Any) -> Any:
        return await self._respond(params)

    async def _respond(self, params: Any) -> Any:
        if params.stream:
            return self._stream()
        self.clock.t += self.latency
        if self.raises is not None:
            raise self.raises
        return Completion(usage=usage(10, self.tokens))

    async def _stream(self) -> AsyncIterator[Any]:
        for i in range(self.tokens):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("engine crashed mid-stream")
            self.clock.t += self.ttft if i == 0 else self.gap
            yield content_chunk(str(i))
        yield usage_chunk(usage(10, self.tokens * self.choices))


@pytest.fixture
def timed(monkeypatch: pytest.MonkeyPatch) -> tuple[Clock, TimedRouter]:
    clock = Clock()
    monkeypatch.setattr(_recorder, "_clock", clock)
    monkeypatch.setattr(_request, "_clock", clock)
    monkeypatch.setattr(wrapper_module, "_clock", clock)
    return clock, TimedRouter(clock)


async def _stream(router: Any, model: str = "m", stop_after: int | None = None, n: int | None = None) -> None:
    stream = await router.openai_chat_completion(ChatParams(model=model, stream=True, n=n))
    n = 0
    async for _ in stream:
        n += 1
        if n == stop_after:
            await stream.aclose()
            return


def slo_counts(cap: Capture, model: str = "m") -> dict[str, float]:
    """``met`` and ``missed:<objective>`` -> count, for one model."""
    cap.collect()
    out = {}
    for p in cap.points(SLO):
        a = dict(p.attributes)
        if a["model"] == model:
            out[a["result"] + (":" + a["objective"] if "objective" in a else "")] = p.value
    return out


async def test_streams_judged_on_ttft_then_tpot_exact_counts(timed: tuple[Clock, TimedRouter]) -> None:
    """ttft 0.5 s, tpot 0.05 s: 2 meet both, 3 miss TTFT (one also TPOT), 2 miss TPOT only; counted by hand."""
    _, router = timed
    cap = capture(slos=TABLE)
    try:
        r = cap.instrument_router(router)
        cases = [
            (0.3, 0.04, 5),  # met: TTFT 0.3, TPOT 0.04
            (0.5, 0.05, 3),  # met: exactly on both objectives
            (0.7, 0.04, 5),  # missed ttft
            (0.9, 0.01, 2),  # missed ttft
            (0.7, 0.06, 5),  # misses both: ttft is reported, it comes first
            (0.3, 0.06, 5),  # missed tpot
            (0.1, 0.2, 2),  # missed tpot
        ]
        for ttft, gap, tokens in cases:
            router.set(ttft=ttft, gap=gap, tokens=tokens)
            await _stream(r)
        assert slo_counts(cap) == {"met": 2, "missed:ttft": 3, "missed:tpot": 2}
        # the TPOT histogram saw the same per-stream values the SLO was judged on
        tpot = cap.histogram("ryot.time_per_output_token", model="m")
        assert tpot.count == 7 and tpot.sum == pytest.approx(0.04 + 0.05 + 0.04 + 0.01 + 0.06 + 0.06 + 0.2)
    finally:
        cap.shutdown()


async def test_tpot_is_judged_per_choice_like_the_histogram(timed: tuple[Clock, TimedRouter]) -> None:
    """n=2, 5 tokens per choice 60 ms apart (usage: 10): TPOT 0.24 s / 4 = 0.06 s per choice misses 0.05 s; over all
    10 tokens it would have been 0.24 / 9 = 0.027 s and met. The TPOT histogram shows the same 0.06 s."""
    _, router = timed
    cap = capture(slos=TABLE)
    try:
        r = cap.instrument_router(router)
        router.set(ttft=0.1, gap=0.06, tokens=5, choices=2)
        await _stream(r, n=2)
        router.set(ttft=0.1, gap=0.04, tokens=5, choices=2)
        await _stream(r, n=2)
        assert slo_counts(cap) == {"met": 1, "missed:tpot": 1}
        tpot = cap.histogram("ryot.time_per_output_token", model="m")
        assert tpot.count == 2 and tpot.sum == pytest.approx(0.06 + 0.04)
    finally:
        cap.shutdown()


async def test_errors_timeouts_and_failed_streams_are_missed_abandoned_streams_not_counted(
    timed: tuple[Clock, TimedRouter],
) -> None:
    """Error before the stream, timeout, stream failing after 2 chunks: missed/error. Abandoned: in neither."""
    _, router = timed
    cap = capture(slos=TABLE)
    try:
        r = cap.instrument_router(router)
        router.set(ttft=0.1, gap=0.01, tokens=4)
        await _stream(r)  # met
        await _stream(r, stop_after=2)  # the client hangs up: counted in neither
        router.set(ttft=0.1, gap=0.01, tokens=4, fail_after=2)
        with pytest.raises(RuntimeError):
            await _stream(r)  # partial with an error: the caller got a broken answer
        for exc in (TimeoutError("deadline"), ValueError("prompt too long")):
            router.set(raises=exc)
            with pytest.raises(type(exc)):
                await r.openai_chat_completion(ChatParams(model="m"))
        assert slo_counts(cap) == {"met": 1, "missed:error": 3}
        assert cap.value("ryot.inference.requests", model="m", endpoint="chat_completion", status="partial") == 2
    finally:
        cap.shutdown()


async def test_non_streaming_requests_judged_on_latency_only(timed: tuple[Clock, TimedRouter]) -> None:
    """Non-streaming: latency objective only (ttft/tpot do not apply); no latency objective = met."""
    _, router = timed
    cap = capture(slos={"m": {"ttft": 0.5, "tpot": 0.05, "latency": 2.0}, "n": {"ttft": 0.5}})
    try:
        r = cap.instrument_router(router)
        for latency in (1.0, 2.0, 2.5, 9.0):
            router.set(latency=latency, tokens=50)
            await r.openai_chat_completion(ChatParams(model="m"))
        router.set(latency=2.5, tokens=50)
        await r.openai_completion(CompletionParams(model="m", prompt=["a", "b"]))  # batch: judged like standard
        await r.openai_chat_completion(ChatParams(model="n"))
        assert slo_counts(cap) == {"met": 2, "missed:latency": 3}
        assert slo_counts(cap, "n") == {"met": 1}
        # a stream meeting TTFT and TPOT but over the latency objective
        router.set(ttft=0.2, gap=0.04, tokens=60)  # 0.2 + 59 * 0.04 = 2.56 s
        await _stream(r)
        assert slo_counts(cap)["missed:latency"] == 4
    finally:
        cap.shutdown()


async def test_default_entry_and_unlisted_models(timed: tuple[Clock, TimedRouter]) -> None:
    """'*' applies to unlisted models; without '*' an unlisted model is not judged (no series at all)."""
    clock, _ = timed
    for table, expected in (({"m": {"latency": 0.5}, "*": {"latency": 5}}, {"met": 1}), ({"m": {"latency": 0.5}}, {})):
        cap = capture(slos=table)
        try:
            r = cap.instrument_router(TimedRouter(clock).set(latency=1.0, tokens=5))
            await r.openai_chat_completion(ChatParams(model="other"))
            await r.openai_chat_completion(ChatParams(model="m"))
            assert slo_counts(cap, "other") == expected
            assert slo_counts(cap, "m") == {"missed:latency": 1}
        finally:
            cap.shutdown()


async def test_no_table_no_slo_series(cap: Capture) -> None:
    """Without an SLO table the goodput family is never created."""
    r = cap.instrument_router(TimedRouter(Clock()))
    await r.openai_chat_completion(ChatParams(model="m"))
    cap.collect()
    assert cap.points(SLO) == [] and cap.recorder.slo is None


def test_stream_without_a_token_misses_ttft_and_a_one_token_stream_has_no_tpot() -> None:
    """judge(): no first token misses ttft; fewer than two tokens leaves tpot unjudged; order error, ttft, tpot."""
    s = Slo(ttft=0.5, tpot=0.05, latency=10)
    assert judge(s, error=False, stream=True, latency=1.0, ttft=None, tpot=None) == "ttft"
    assert judge(s, error=False, stream=True, latency=1.0, ttft=0.2, tpot=None) is None
    assert judge(s, error=True, stream=True, latency=99, ttft=9, tpot=9) == "error"
    assert judge(s, error=False, stream=True, latency=99, ttft=0.1, tpot=0.5) == "tpot"
    assert judge(s, error=False, stream=False, latency=10.5, ttft=None, tpot=None) == "latency"


# --- the table -----------------------------------------------------------------------------------------------------


def test_table_from_json_and_yaml_files_via_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RYOT_TELEMETRY_SLOS names a JSON or YAML file; target defaults to 0.99; '*' is the default entry."""
    (tmp_path / "s.json").write_text(json.dumps({"*": {"latency": 3}, "m": {"ttft": 0.5, "target": 0.995}}))
    (tmp_path / "s.yaml").write_text("'*':\n  latency: 3\nm:\n  ttft: 0.5\n  target: 0.995\n")
    for name in ("s.json", "s.yaml"):
        monkeypatch.setenv("RYOT_TELEMETRY_SLOS", str(tmp_path / name))
        cap = capture()
        try:
            t = cap.recorder.slos
            assert t is not None
            assert (t.get("m"), t.get("x")) == (Slo(ttft=0.5, target=0.995), Slo(latency=3.0, target=0.99))
        finally:
            cap.shutdown()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"m": {"ttft": -1}}, "slos: SLO table entry for 'm': ttft must be a number of seconds > 0, got -1"),
        ({"m": {"target": 0.99}}, "slos: SLO table entry for 'm' has no objective; expected {\"<model or *>\""),
        ({"m": {"ttft": 1, "target": 99}}, "target must be a fraction strictly between 0 and 1 such as 0.99, got 99"),
        ({"m": {"e2el": 1}}, "slos: SLO table entry for 'm': unknown key 'e2el'; expected"),
        ({"m": 0.5}, "slos: SLO table entry for 'm' must be a mapping, got 0.5; expected"),
        ({}, "slos: SLO table must be a non-empty mapping of model -> objectives"),
        ({"m": {"ttft": True}}, "ttft must be a number of seconds > 0, got True"),
    ],
)
def test_malformed_table_is_one_configuration_error(table: Any, message: str) -> None:
    """configure(slos=...) rejects a bad table with one ConfigurationError naming the fix; nothing is left bound."""
    with pytest.raises(ConfigurationError) as e:
        configure(exporters="none", slos=table, gpu=False)
    assert message in str(e.value)


def test_malformed_table_file(tmp_path: Path) -> None:
    """An unreadable or unparsable file names the file."""
    bad = tmp_path / "slos.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigurationError, match=f"slos: malformed SLO table {bad}"):
        configure(exporters="none", slos=str(bad), gpu=False)
    with pytest.raises(ConfigurationError, match="slos: cannot read SLO table"):
        configure(exporters="none", slos=tmp_path / "missing.json", gpu=False)


def test_table_round_trips() -> None:
    t = SloTable({"*": {"latency": 30}, "m": {"ttft": 0.5, "tpot": 0.05, "target": 0.999}})
    assert t.as_dict() == {"m": {"ttft": 0.5, "tpot": 0.05, "target": 0.999}, "*": {"latency": 30.0, "target": 0.99}}
    assert SloTable(t.as_dict()).as_dict() == t.as_dict() and len(t) == 2


# --- the generated rules -------------------------------------------------------------------------------------------


def test_committed_rules_match_the_generator(capsys: pytest.CaptureFixture[str]) -> None:
    """collector/rules/ryot_slo_rules.yml is exactly what `ryot-telemetry slo-rules` writes."""
    assert slo_main(["rules"]) == 0
    out = capsys.readouterr().out
    assert out == (ROOT / "collector" / "rules" / "ryot_slo_rules.yml").read_text()
    assert out == rules_yaml(SloTable(EXAMPLE_TABLE), "ryot_telemetry.artifacts.slo_rules.EXAMPLE_TABLE")


def test_cli_writes_rules_for_a_user_table(tmp_path: Path) -> None:
    """`ryot-telemetry slo-rules TABLE -o FILE`: per-model targets, a '*' default for every other model."""
    import yaml

    table = tmp_path / "t.json"
    table.write_text(json.dumps({"llama-3.1-8b": {"ttft": 0.5, "target": 0.995}, "*": {"latency": 10}}))
    from ryot_telemetry.cli import main

    assert main(["slo-rules", str(table), "-o", str(tmp_path / "r.yml")]) == 0
    groups = yaml.safe_load((tmp_path / "r.yml").read_text())["groups"]
    targets = [r for r in groups[0]["rules"] if r.get("record") == "ryot:slo:target"]
    assert targets == [
        {"record": "ryot:slo:target", "expr": "vector(0.995)", "labels": {"model": "llama-3.1-8b"}},
        {
            "record": "ryot:slo:target",
            "expr": '0.99 * group by (model) (ryot_slo_requests_total{model!~"llama\\\\-3\\\\.1\\\\-8b"})',
        },
    ]
    (tmp_path / "bad.json").write_text('{"m": {"target": 2}}')
    assert main(["slo-rules", str(tmp_path / "bad.json")]) == 2


def test_python_dash_m_slo_rules_documented_before_the_move_still_writes_the_rules(tmp_path: Path) -> None:
    """``python -m ryot_telemetry.slo rules TABLE -o FILE`` (the docs before the rule generator moved) writes the
    same rules as ``python -m ryot_telemetry.artifacts.slo_rules``, with a DeprecationWarning naming it."""
    import subprocess
    import sys

    table = tmp_path / "slos.json"
    table.write_text('{"*": {"ttft": 0.5, "target": 0.99}}')
    ran = [
        subprocess.run(
            [sys.executable, "-m", module, "rules", str(table), "-o", str(tmp_path / f"{i}.yml")],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        for i, module in enumerate(("ryot_telemetry.slo", "ryot_telemetry.artifacts.slo_rules"))
    ]
    assert [r.returncode for r in ran] == [0, 0], [r.stderr for r in ran]
    assert (tmp_path / "0.yml").read_text() == (tmp_path / "1.yml").read_text()
    assert "ryot:slo_burn_rate" in (tmp_path / "1.yml").read_text()
    assert (
        ran[0].stderr.count(
            "DeprecationWarning: python -m ryot_telemetry.slo is deprecated and is removed in the next minor release; "
            "use python -m ryot_telemetry.artifacts.slo_rules"
        )
        == 1
    )
    assert "DeprecationWarning" not in ran[1].stderr
