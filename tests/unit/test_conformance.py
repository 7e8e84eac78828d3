"""Exposed Prometheus names, label sets and buckets match the SPEC table exactly; docs derive from the catalogue."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ryot_telemetry import PriceTable, catalogue, configure
from ryot_telemetry.catalogue import CATALOGUE, Instrument
from ryot_telemetry.recording.semconv import SEMCONV, UNAVAILABLE
from support import otlp_names
from support.fakes import (
    ChatChunk,
    ChatParams,
    ChunkChoice,
    Completion,
    CompletionParams,
    Delta,
    ScriptedRouter,
    content_chunk,
    usage,
    usage_chunk,
)
from support.nvml import two_gpus
from support.spec_table import OUTCOMES, SPEC, SPEC_SECTIONS

ROOT = Path(__file__).resolve().parents[2]
SHARED_SPEC = ROOT.parent / "shared" / "SPEC.md"


def _family_name(sample_name: str, kind: str) -> str:
    if kind == "counter":
        return sample_name if sample_name.endswith("_total") else sample_name + "_total"
    return sample_name


def scrape(url: str) -> dict[str, dict]:
    """Exposed ryot families: type, label keys seen (without otel_scope_*), le bounds."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out: dict[str, dict] = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("ryot_"):
            continue
        name = _family_name(fam.name, fam.type)
        entry = out.setdefault(name, {"type": fam.type, "labelsets": [], "le": set()})
        for s in fam.samples:
            # An empty label value is an absent label to Prometheus (the exporter back-fills missing keys with "").
            labels = {k: v for k, v in s.labels.items() if not k.startswith("otel_scope_") and v != ""}
            if s.name.endswith("_bucket"):
                entry["le"].add(labels.pop("le"))
            elif s.name.endswith(("_sum", "_count", "_created")) and fam.type == "histogram":
                continue
            entry["labelsets"].append(frozenset(labels))
    return out


async def _traffic(tel) -> None:
    ok = Completion(usage=usage(600, 5, cached=300))
    tel.instrument_router(ScriptedRouter(response=ok))
    r = tel.instrument_router(ScriptedRouter(response=ok))
    await r.openai_chat_completion(ChatParams(model="m"))
    await r.openai_completion(CompletionParams(model="m", prompt=["a", "b"]))
    s = tel.instrument_router(
        ScriptedRouter(chunks=[content_chunk("a"), content_chunk("b"), usage_chunk(usage(60, 2, 6))])
    )
    stream = await s.openai_chat_completion(ChatParams(model="m", stream=True))
    async for _ in stream:
        pass
    bad = tel.instrument_router(ScriptedRouter(raises=TimeoutError()))
    with pytest.raises(TimeoutError):
        await bad.openai_chat_completion(ChatParams(model="m"))


async def _outcome_traffic(tel) -> None:
    """A llama.cpp-style stream (timings, reasoning tokens, finish_reason) and one the client abandons: every
    family of "Outcomes, token detail and where the time goes" gets a series."""
    timings = {"prompt_n": 20, "prompt_ms": 12.5, "cache_n": 40, "predicted_n": 3, "predicted_per_token_ms": 9.0}
    final = ChatChunk(choices=[ChunkChoice(delta=Delta(), finish_reason="length")])
    last = ChatChunk(choices=[], usage=usage(60, 3, 40, reasoning=1), timings=timings)
    r = tel.instrument_router(ScriptedRouter(chunks=[content_chunk("a"), content_chunk("b"), final, last]))
    async for _ in await r.openai_chat_completion(ChatParams(model="m", stream=True)):
        pass
    r = tel.instrument_router(ScriptedRouter(chunks=[content_chunk("a"), content_chunk("b"), content_chunk("c")]))
    stream = await r.openai_chat_completion(ChatParams(model="m", stream=True))
    await stream.__anext__()
    await stream.aclose()
    # a vLLM-style stream whose final usage chunk carries the engine's per-request metrics, queue time included
    metrics = {"queue_time_ms": 4.0, "time_to_first_token_ms": 10.0, "mean_itl_ms": 5.0}
    last = ChatChunk(choices=[], usage=usage(8, 2), metrics=metrics)
    r = tel.instrument_router(ScriptedRouter(chunks=[content_chunk("a"), content_chunk("b"), last]))
    async for _ in await r.openai_chat_completion(ChatParams(model="m", stream=True)):
        pass


def _engine_reports(tel) -> None:
    eng = tel.engine
    with eng.model_loading("m", "cold_start", "gpu"):
        pass
    eng.record_eviction("m", "memory_pressure")
    eng.record_startup_phase("warmup", 2.0)
    eng.set_queue_depth("m", "normal", 3)
    eng.set_kv_cache_size("m", 4096, 8, 2**30)
    eng.set_gpu_memory_breakdown(0, "kv_cache", 2**30)


def test_exposition_matches_spec_table() -> None:
    """With router traffic, engine reports and (fake) NVML, all 26 SPEC families are exposed exactly as specified."""
    tel = configure(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        prometheus_registry="private",
        prices={"m": {"prompt": 0.001, "completion": 0.002}},
        gpu_backend=two_gpus(),
        gpu_models={0: "m"},
        gpu_detail=True,
    )
    try:
        asyncio.run(_traffic(tel))
        _engine_reports(tel)
        exposed = scrape(tel.prometheus_url)
    finally:
        tel.shutdown()
    table = {name: fam for name, fam in exposed.items() if name not in SPEC_SECTIONS}
    assert set(table) == set(SPEC), sorted(set(SPEC) ^ set(table))
    for name, fam in table.items():
        assert name in SPEC, f"{name} is exposed but not in the SPEC table"
        kind, required, optional, buckets = SPEC[name]
        assert fam["type"] == kind, name
        for labels in fam["labelsets"]:
            assert required <= labels <= required | optional, (name, sorted(labels))
        if buckets is not None:
            assert {float(le) for le in fam["le"]} == {*buckets, float("inf")}, name
    err = [ls for ls in exposed["ryot_inference_requests_total"]["labelsets"] if "error_type" in ls]
    assert len(err) == 1  # error_type only on the timeout series


@pytest.fixture(scope="module")
def full_exposition() -> bytes:
    """/metrics with every family at once: router, engine, GPU, cost, semconv, target_info and process/python."""
    tel = configure(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        prices={"m": {"prompt": 0.001, "completion": 0.002}},
        gpu_backend=two_gpus(),
        gpu_models={0: "m"},
        gpu_detail=True,
        semconv=True,
        slos={"*": {"latency": 30.0}},
    )
    try:
        asyncio.run(_traffic(tel))
        asyncio.run(_outcome_traffic(tel))
        _engine_reports(tel)
        return urllib.request.urlopen(tel.prometheus_url, timeout=10).read()
    finally:
        tel.shutdown()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not found (Debian package `prometheus`)")
def test_full_exposition_passes_promtool_check_metrics(full_exposition: bytes) -> None:
    """`promtool check metrics` finds nothing to flag in the full exposition."""
    assert b"gen_ai_server_request_duration_seconds_bucket{" in full_exposition
    assert b"ryot_gpu_power_watts{" in full_exposition
    check = subprocess.run(["promtool", "check", "metrics"], input=full_exposition, capture_output=True, timeout=30)
    assert (check.returncode, check.stdout + check.stderr) == (0, b"")


# (name, unit, type, expected): otlptranslator's own MetricNamer test cases for UTF8Allowed=false,
# WithMetricSuffixes=true without a namespace (metric_namer_test.go), its README and doc examples, and the case.
_TRANSLATOR_CASES = [
    ("requests", "", otlp_names.COUNTER, "requests_total"),
    ("cpu_usage", "1", otlp_names.GAUGE, "cpu_usage_ratio"),
    ("items", "1", otlp_names.COUNTER, "items_total"),
    ("response_time", "ms", otlp_names.GAUGE, "response_time_milliseconds"),
    ("memory_usage", "By", otlp_names.GAUGE, "memory_usage_bytes"),
    ("requests", "1/s", otlp_names.GAUGE, "requests_per_second"),
    ("throughput", "By/s", otlp_names.GAUGE, "throughput_bytes_per_second"),
    ("custom_metric", "custom_unit", otlp_names.GAUGE, "custom_metric_custom_unit"),
    ("custom_metric", "{custom}", otlp_names.GAUGE, "custom_metric"),
    ("custom_metric", "By/{custom}", otlp_names.GAUGE, "custom_metric_bytes"),
    ("requests_total", "", otlp_names.COUNTER, "requests_total"),
    ("cpu_usage_ratio", "1", otlp_names.GAUGE, "cpu_usage_ratio"),
    ("response_time_seconds", "s", otlp_names.GAUGE, "response_time_seconds"),
    (
        "metric__with__multiple__underscores",
        "unit__multiple__underscores",
        otlp_names.GAUGE,
        "metric_with_multiple_underscores_unit_multiple_underscores",
    ),
    ("custom_metric", "unit@with#special/chars", otlp_names.GAUGE, "custom_metric_unit_with_special_per_chars"),
    ("@#$%", "", otlp_names.GAUGE, ""),
    ("123_requests", "", otlp_names.COUNTER, "_123_requests_total"),
    ("request_duration", "s", otlp_names.HISTOGRAM, "request_duration_seconds"),
    ("active_connections", "", otlp_names.UP_DOWN, "active_connections"),
    ("uptime", "d", otlp_names.GAUGE, "uptime_days"),
    ("duration", "h", otlp_names.GAUGE, "duration_hours"),
    ("http.server.request.duration", "s", otlp_names.HISTOGRAM, "http_server_request_duration_seconds"),
    ("requests.count", "1", otlp_names.COUNTER, "requests_count_total"),
    ("memory.usage", "By", otlp_names.GAUGE, "memory_usage_bytes"),
    # the issue: the per unit is compared as one token, so a name ending in per_second gets it twice
    ("ryot.tokens_per_second", "{token}/s", otlp_names.HISTOGRAM, "ryot_tokens_per_second_per_second"),
]


@pytest.mark.parametrize(("name", "unit", "kind", "expected"), _TRANSLATOR_CASES)
def test_collector_naming_restatement_matches_otlptranslator_cases(
    name: str, unit: str, kind: str, expected: str
) -> None:
    """The re-stated Collector naming rules give otlptranslator's own expected names."""
    assert otlp_names.collector_name(name, unit, kind) == expected


_OTLP_KIND = {
    Instrument.COUNTER: otlp_names.COUNTER,
    Instrument.UP_DOWN_COUNTER: otlp_names.UP_DOWN,
    Instrument.OBSERVABLE_UP_DOWN_COUNTER: otlp_names.UP_DOWN,
    Instrument.OBSERVABLE_COUNTER: otlp_names.COUNTER,
    Instrument.HISTOGRAM: otlp_names.HISTOGRAM,
    Instrument.GAUGE: otlp_names.GAUGE,
    Instrument.OBSERVABLE_GAUGE: otlp_names.GAUGE,
}


def test_collector_and_plugin_expose_the_same_names(full_exposition: bytes) -> None:
    """Every catalogue and semconv metric gets the same Prometheus name through a Collector as on our /metrics."""
    exposed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", full_exposition.decode(), re.M))
    via_collector = {otlp_names.collector_name(m.name, m.unit, _OTLP_KIND[m.instrument]): m for m in CATALOGUE}
    assert sorted(via_collector) == sorted(m.prometheus_name for m in CATALOGUE)
    for name, m in via_collector.items():
        assert exposed.get(name) == m.prometheus_type, name
    semconv = [otlp_names.collector_name(s.name, s.unit, otlp_names.HISTOGRAM) for s in SEMCONV]
    assert semconv == [
        "gen_ai_server_request_duration_seconds",
        "gen_ai_server_time_to_first_token_seconds",
        "gen_ai_server_time_per_output_token_seconds",
        "gen_ai_client_operation_duration_seconds",
        "gen_ai_client_token_usage",  # {token}: an annotation, no unit suffix on either path
    ] + [  # where the installed semconv package defines the chunk metrics (0.63b0 on)
        "gen_ai_client_operation_time_to_first_chunk_seconds",
        "gen_ai_client_operation_time_per_output_chunk_seconds",
    ] * (not UNAVAILABLE)
    assert {name: exposed.get(name) for name in semconv} == dict.fromkeys(semconv, "histogram")


def test_slo_family_exposed_as_its_spec_section_defines() -> None:
    """With an SLO table, ryot_slo_requests_total is exposed as "SLOs and goodput" says: objective on missed only."""
    tel = configure(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        prometheus_registry="private",
        slos={"*": {"latency": 30.0}},
        gpu=False,
    )
    try:
        asyncio.run(_traffic(tel))
        exposed = scrape(tel.prometheus_url)
    finally:
        tel.shutdown()
    fam = exposed["ryot_slo_requests_total"]
    kind, required, optional, _ = SPEC_SECTIONS["ryot_slo_requests_total"]
    assert fam["type"] == kind
    assert sorted(sorted(ls) for ls in fam["labelsets"]) == [
        ["model", "objective", "result"],  # the timeout: missed, objective=error
        ["model", "result"],  # the three successes: met
    ]
    assert all(required <= ls <= required | optional for ls in fam["labelsets"])


@pytest.mark.skipif(not SHARED_SPEC.exists(), reason="../shared/SPEC.md is not beside this checkout")
def test_slo_section_matches_shared_spec() -> None:
    """SPEC_SECTIONS copies the SPEC's "SLOs and goodput" definition: name, unit, labels, values, objective order."""
    text = SHARED_SPEC.read_text()
    section = text[text.index("## SLOs and goodput") :]
    section = " ".join(section[: section.index("\n## ", 1)].split())
    assert "OTel `ryot.slo.requests` (unit `{request}`), exposed `ryot_slo_requests_total`" in section
    assert "labels `model`, `result` (`met`, `missed`) and, on missed series only, `objective`" in section
    assert "in the order `error`, `ttft`, `tpot`, `latency`" in section
    spec = catalogue.get("ryot_slo_requests_total")
    assert (spec.name, spec.unit, spec.labels, spec.optional_labels) == (
        "ryot.slo.requests",
        "{request}",
        ("model", "result"),
        ("objective",),
    )
    assert spec.label_values == {"result": ("met", "missed"), "objective": ("error", "ttft", "tpot", "latency")}


def test_outcome_families_exposed_as_their_spec_section_defines() -> None:
    """The 7 families of "Outcomes, token detail and where the time goes" are exposed with their section's kind,
    labels and buckets."""
    tel = configure(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        prometheus_registry="private",
        gpu=False,
    )
    try:
        asyncio.run(_traffic(tel))
        asyncio.run(_outcome_traffic(tel))
        exposed = scrape(tel.prometheus_url)
    finally:
        tel.shutdown()
    assert set(OUTCOMES) <= set(exposed)
    for name, (kind, required, optional, buckets) in OUTCOMES.items():
        fam = exposed[name]
        assert fam["type"] == kind, name
        assert fam["labelsets"] and all(required <= ls <= required | optional for ls in fam["labelsets"]), name
        if buckets is not None:
            assert {float(le) for le in fam["le"]} == {*buckets, float("inf")}, name


@pytest.mark.skipif(not SHARED_SPEC.exists(), reason="../shared/SPEC.md is not beside this checkout")
def test_outcomes_section_matches_shared_spec() -> None:
    """OUTCOMES copies the SPEC's "Outcomes, token detail and where the time goes": names, labels, buckets."""
    text = SHARED_SPEC.read_text()
    section = text[text.index("## Outcomes, token detail and where the time goes") :]
    section = " ".join(section[: section.index("\n## ", 1)].split())
    for phrase in (
        "`ryot_finish_reasons_total` counter {model, endpoint, finish_reason}",
        "`ryot_cached_prompt_tokens_total` {model, generation_mode}",
        "`ryot_reasoning_tokens_total` {model, generation_mode}",
        "`ryot_estimated_tokens_total` counter {model, token_type}",
        "`ryot_engine_prefill_seconds` histogram {model} (prompt processing, TTFT buckets)",
        "`ryot_engine_time_per_output_token_seconds` histogram {model} (decode per token, TPOT buckets)",
        "`ryot_ttft_outside_engine_seconds` histogram {model}",
        "(`stop`, `length`, `tool_calls`, `content_filter`; anything else `other`)",
        "counts `abort` once per choice",
    ):
        assert phrase in section, phrase
    assert OUTCOMES["ryot_engine_prefill_seconds"][3] == SPEC["ryot_ttft_latency_seconds"][3]
    assert OUTCOMES["ryot_ttft_outside_engine_seconds"][3] == SPEC["ryot_ttft_latency_seconds"][3]
    assert OUTCOMES["ryot_engine_time_per_output_token_seconds"][3] == SPEC["ryot_time_per_output_token_seconds"][3]
    assert catalogue.get("ryot_finish_reasons_total").label_values["finish_reason"] == (
        "stop",
        "length",
        "tool_calls",
        "content_filter",
        "other",
        "abort",
    )


def test_catalogue_matches_spec_table() -> None:
    """The catalogue declares exactly the SPEC's metrics (table and sections), with the same kinds, labels, buckets."""
    assert not set(SPEC) & set(SPEC_SECTIONS)
    assert {m.prometheus_name for m in CATALOGUE} == set(SPEC) | set(SPEC_SECTIONS)
    for m in CATALOGUE:
        kind, required, optional, buckets = {**SPEC, **SPEC_SECTIONS}[m.prometheus_name]
        assert (m.prometheus_type, set(m.labels), set(m.optional_labels)) == (kind, required, optional)
        assert m.buckets == buckets


@pytest.mark.skipif(not SHARED_SPEC.exists(), reason="../shared/SPEC.md is not beside this checkout")
def test_spec_table_matches_shared_spec() -> None:
    """tests/spec_table.py is a faithful copy of the table in ../shared/SPEC.md."""
    text = SHARED_SPEC.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `ryot_")]
    parsed: dict[str, tuple[str, set[str], tuple[float, ...] | None]] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = re.findall(r"`(ryot_[a-z_]+)`", cells[0])
        labels = {part.strip() for part in re.sub(r"\([^)]*\)", "", cells[2]).split(",") if part.strip()}
        buckets = tuple(float(b) for b in cells[3].split()) if cells[3] else None
        for n in names:
            parsed[n] = (cells[1].split()[0], labels, buckets)
    assert set(parsed) == set(SPEC)
    for name, (kind, labels, buckets) in parsed.items():
        mine_kind, required, optional, mine_buckets = SPEC[name]
        assert (mine_kind, mine_buckets) == (kind, buckets), name
        assert required <= labels <= required | optional, (name, labels)


def test_price_table_is_a_public_type() -> None:
    """PriceTable prices per 1k tokens and falls back to the '*' entry."""
    t = PriceTable({"m": {"prompt": 0.5, "completion": 1.0}, "*": [0.1, 0.2]})
    assert (t.get("m").prompt, t.get("other").completion) == (0.5, 0.2)


def test_with_tenants_on_exactly_the_spec_counters_carry_the_tenant_label() -> None:
    """With a tenant resolver, every series of the SPEC's four tenant counters has a tenant label and no other
    family has one; every family still has its SPEC labels (plus tenant where the SPEC adds it)."""
    tel = configure(
        exporters="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        prometheus_registry="private",
        prices={"m": {"prompt": 0.001, "completion": 0.002}},
        slos={"*": {"latency": 30.0}},
        gpu_backend=two_gpus(),
        gpu_models={0: "m"},
        gpu_detail=True,
        tenant=lambda params: "acme",
    )
    try:
        asyncio.run(_traffic(tel))
        _engine_reports(tel)
        exposed = scrape(tel.prometheus_url)
    finally:
        tel.shutdown()
    tenant_families = {m.prometheus_name for m in CATALOGUE if catalogue.TENANT in m.opt_in_labels}
    assert tenant_families == {
        "ryot_inference_requests_total",
        "ryot_tokens_generated_total",
        "ryot_token_cost_estimate_usd_total",
        "ryot_slo_requests_total",
    }
    assert tenant_families <= set(exposed)
    for name, fam in exposed.items():
        _, required, optional, _ = {**SPEC, **SPEC_SECTIONS}[name]
        for labels in fam["labelsets"]:
            if name in tenant_families:
                assert "tenant" in labels and required <= labels - {"tenant"} <= required | optional, (name, labels)
            else:
                assert "tenant" not in labels, (name, sorted(labels))


@pytest.mark.skipif(not SHARED_SPEC.exists(), reason="../shared/SPEC.md is not beside this checkout")
def test_tenant_and_cached_price_sections_match_shared_spec() -> None:
    """The catalogue's opt-in tenant label is on exactly the families the SPEC's "Tenants (opt-in)" names, with
    the default max_tenants it gives; the cost counter's token_type vocabulary has the SPEC's cached_prompt."""
    from ryot_telemetry.settings import Settings

    text = SHARED_SPEC.read_text()
    section = text[text.index("## Tenants (opt-in)") :]
    section = " ".join(section[: section.index("\n## ", 1)].split())
    named = set(re.findall(r"`(ryot_[a-z_]+)`", section))
    assert named == {m.prometheus_name for m in CATALOGUE if catalogue.TENANT in m.opt_in_labels}
    assert "`max_tenants`, default 50, then `__overflow__`" in section
    assert Settings.load().max_tenants == 50
    assert all(m.instrument is Instrument.COUNTER for m in CATALOGUE if m.opt_in_labels)
    outcomes = " ".join(text[text.index("## Outcomes, token detail") :].split())
    assert "the cost counter's token_type gains `cached_prompt`" in outcomes
    assert catalogue.get("ryot_token_cost_estimate_usd_total").label_values["token_type"] == (
        "prompt",
        "completion",
        "cached_prompt",
    )
