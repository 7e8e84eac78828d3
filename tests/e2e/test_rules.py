"""collector/: the recording and alert rules pass promtool, their unit tests pass, and every name they use is real."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ryot_telemetry import catalogue

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR = ROOT / "collector"
RULES = COLLECTOR / "rules"
RULE_FILES = [RULES / "ryot_recording_rules.yml", RULES / "ryot_alerts.yml"]
RULE_TESTS = sorted((RULES / "tests").glob("*.yml"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found (Debian package `prometheus`; scripts/setup.d/prometheus.sh)"
)

_METRIC = re.compile(r"(?<![\w:])ryot_[a-z_]+")
_RECORDED = re.compile(r"(?<![\w:])ryot:[a-z0-9_:]+")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def unknown_metric_names(expr: str) -> list[str]:
    """Names in ``expr`` that are not exposed: not in the catalogue, or a histogram without its series suffix."""
    bad = []
    for name in _METRIC.findall(expr):
        spec = catalogue.BY_PROMETHEUS_NAME.get(name)
        if spec is not None:
            if spec.prometheus_type == "histogram":
                bad.append(name)  # a histogram family is only queryable as _bucket, _sum or _count
            continue
        base = next((name[: -len(s)] for s in _HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        hist = catalogue.BY_PROMETHEUS_NAME.get(base) if base else None
        if hist is None or hist.prometheus_type != "histogram":
            bad.append(name)
    return bad


_SELECTOR = re.compile(r"(?<![\w:])(ryot_[a-z_]+)\{([^}]*)\}")
_MATCHER_KEY = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")
_TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


def _spec_labels(name: str) -> set[str]:
    spec = catalogue.BY_PROMETHEUS_NAME.get(name)
    if spec is None:
        for suffix in _HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and (spec := catalogue.BY_PROMETHEUS_NAME.get(name[: -len(suffix)])):
                return set(spec.all_labels) | _TARGET_LABELS | ({"le"} if suffix == "_bucket" else set())
        return set()
    return set(spec.all_labels) | _TARGET_LABELS


def unknown_labels(expr: str, recorded_labels: set[str] = frozenset()) -> list[str]:
    """Label names matched on a ryot metric that it does not carry, and grouping labels no metric in ``expr`` has."""
    bad = [
        f"{name}:{key}"
        for name, body in _SELECTOR.findall(expr)
        for key in _MATCHER_KEY.findall(body)
        if key not in _spec_labels(name)
    ]
    available = set(recorded_labels).union(*(_spec_labels(n) for n in _METRIC.findall(expr)))
    for group in _GROUPING.findall(expr):
        bad += [f"by:{k}" for k in (x.strip() for x in group.split(",")) if k and k not in available]
    return bad


def _rules() -> list[dict]:
    return [
        rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_unknown_metric_names_catches_typos_and_bare_histograms() -> None:
    """The name check rejects a misspelt name, the design's un-suffixed cost counter and a bare histogram family."""
    assert unknown_metric_names("rate(ryot_inference_requests_total[5m])") == []
    assert unknown_metric_names("rate(ryot_ttft_latency_seconds_bucket[5m])") == []
    assert unknown_metric_names("increase(ryot_token_cost_estimate_usd[1h])") == ["ryot_token_cost_estimate_usd"]
    assert unknown_metric_names("ryot_gpu_memory_bytes > 0") == ["ryot_gpu_memory_bytes"]
    assert unknown_metric_names("ryot_inference_latency_seconds") == ["ryot_inference_latency_seconds"]
    assert unknown_metric_names("ryot_queue_depth_bucket") == ["ryot_queue_depth_bucket"]


def test_rules_use_only_exposed_metric_names() -> None:
    """Every ryot_* name in a rule expression is a catalogue metric (histograms via _bucket/_sum/_count)."""
    bad = {rule.get("record") or rule["alert"]: unknown_metric_names(rule["expr"]) for rule in _rules()}
    assert {k: v for k, v in bad.items() if v} == {}


def test_unknown_labels_catches_wrong_label_names() -> None:
    """The label check rejects a matcher the metric lacks and a grouping label no metric in the query carries."""
    assert unknown_labels('sum by (model, le) (rate(ryot_ttft_latency_seconds_bucket{prompt_size="tiny"}[5m]))') == []
    assert unknown_labels('ryot_ttft_latency_seconds_count{status="error"}') == [
        "ryot_ttft_latency_seconds_count:status"
    ]
    assert unknown_labels("sum by (gpu) (ryot_gpu_memory_percentage)") == ["by:gpu"]
    assert unknown_labels("sum by (le) (ryot_ttft_latency_seconds_count)") == ["by:le"]


def test_rules_use_only_labels_the_metrics_carry() -> None:
    """Every label a rule matches or groups by exists on the metrics it reads (or on the recorded series it reads)."""
    recorded = {"model", "token_type", "job", "instance"}  # the labels recording rules keep
    bad = {rule.get("record") or rule["alert"]: unknown_labels(rule["expr"], recorded) for rule in _rules()}
    assert {k: v for k, v in bad.items() if v} == {}


def test_recorded_series_used_by_rules_are_defined() -> None:
    """Every ryot:* series an expression reads is produced by a recording rule."""
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    used = {name for rule in _rules() for name in _RECORDED.findall(rule["expr"])}
    assert used - recorded == set()


def test_rule_set_is_the_documented_one() -> None:
    """The shipped rules are exactly the documented recording rules and alerts, with severity labels."""
    rules = _rules()
    assert sorted(r["record"] for r in rules if "record" in r) == [
        "ryot:batch_size:avg:5m",
        "ryot:engine_batch_size:avg:5m",
        "ryot:error_rate:rate5m",
        "ryot:gpu_efficiency:ratio",
        "ryot:inference_latency:p95:5m",
        "ryot:inference_latency:p99:5m",
        "ryot:inference_latency_standard:p95:5m",
        "ryot:requests:rate5m",
        "ryot:tokens_per_second:rate1m",
        "ryot:tokens_per_second:rate5m",
        "ryot:ttft_latency:p95:5m",
    ]
    alerts = {r["alert"]: (r["for"], r["labels"]["severity"]) for r in rules if "alert" in r}
    assert alerts == {
        "RyotHighErrorRate": ("5m", "warning"),
        "RyotHighLatency": ("10m", "warning"),
        "RyotHighRequestLatency": ("10m", "warning"),
        "RyotGPUMemoryPressure": ("5m", "critical"),
        "RyotLowTokenThroughput": ("10m", "warning"),
        "RyotQueueBacklog": ("5m", "critical"),
    }


def test_prometheus_yml_scrapes_the_plugin_with_the_rules() -> None:
    """collector/prometheus.yml scrapes localhost:9464/metrics and loads both rule files."""
    cfg = yaml.safe_load((COLLECTOR / "prometheus.yml").read_text())
    assert [COLLECTOR / f for f in cfg["rule_files"]] == RULE_FILES
    (job,) = cfg["scrape_configs"]
    assert (job["metrics_path"], job["static_configs"]) == ("/metrics", [{"targets": ["localhost:9464"]}])


def test_prometheus_yml_keeps_semconv_http_and_target_info() -> None:
    """The scrape job's keep filter (a fully anchored regex, as Prometheus applies it) keeps ryot_*, gen_ai_*,
    http_server_* and target_info series and drops the default registry's python_* / process_*."""
    (job,) = yaml.safe_load((COLLECTOR / "prometheus.yml").read_text())["scrape_configs"]
    (keep,) = job["metric_relabel_configs"]
    assert (keep["source_labels"], keep["action"]) == (["__name__"], "keep")
    kept = {
        name
        for name in (
            "ryot_inference_requests_total",
            "ryot_ttft_latency_seconds_bucket",
            "gen_ai_server_request_duration_seconds_bucket",
            "gen_ai_server_time_to_first_token_seconds_count",
            "gen_ai_client_token_usage_sum",
            "http_server_request_duration_seconds_count",
            "target_info",
            "python_gc_objects_collected_total",
            "process_cpu_seconds_total",
            "otel_scope_info",
        )
        if re.fullmatch(keep["regex"], name)
    }
    assert kept == {
        "ryot_inference_requests_total",
        "ryot_ttft_latency_seconds_bucket",
        "gen_ai_server_request_duration_seconds_bucket",
        "gen_ai_server_time_to_first_token_seconds_count",
        "gen_ai_client_token_usage_sum",
        "http_server_request_duration_seconds_count",
        "target_info",
    }


def _keys(node: object) -> set[str]:
    """Every mapping key anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        return set(node).union(*(_keys(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_keys(v) for v in node))
    return set()


def test_otelcol_config_pipeline() -> None:
    """The collector receives OTLP on 4317/4318 and runs memory_limiter into prometheus and debug: no batch processor
    before the pull exporter, remote write batched and queued in its exporter, no deprecated fields."""
    text = (COLLECTOR / "otelcol-config.yaml").read_text()
    cfg = yaml.safe_load(text)
    protocols = cfg["receivers"]["otlp"]["protocols"]
    assert (protocols["grpc"]["endpoint"], protocols["http"]["endpoint"]) == ("0.0.0.0:4317", "0.0.0.0:4318")
    assert cfg["service"]["pipelines"]["metrics"] == {
        "receivers": ["otlp"],
        "processors": ["memory_limiter"],
        "exporters": ["prometheus", "debug"],
    }
    assert set(cfg["processors"]) == {"memory_limiter"}
    assert set(cfg["exporters"]) == {"prometheus", "prometheusremotewrite", "debug"}
    assert "resource_to_telemetry_conversion" not in _keys(cfg)
    rw = cfg["exporters"]["prometheusremotewrite"]
    assert (rw["max_batch_size_bytes"], rw["remote_write_queue"]["enabled"], rw["retry_on_failure"]["enabled"]) == (
        3000000,
        True,
        True,
    )
    # the commented remote-write pipeline, once uncommented, is valid and batch-free too
    lines = text.splitlines()
    start = lines.index("    # metrics/remote_write:")
    block = "\n".join(line.replace("# ", "", 1) for line in lines[start : start + 4])
    assert yaml.safe_load(block)["metrics/remote_write"] == {
        "receivers": ["otlp"],
        "processors": ["memory_limiter"],
        "exporters": ["prometheusremotewrite"],
    }


@needs_promtool
def test_promtool_check_rules() -> None:
    """promtool accepts both rule files: 11 recording rules and 6 alerts."""
    out = _promtool("check", "rules", *map(str, RULE_FILES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 11 rules found" in out.stdout and "SUCCESS: 6 rules found" in out.stdout


@needs_promtool
def test_promtool_check_prometheus_config() -> None:
    """promtool accepts collector/prometheus.yml and the rule files it points at."""
    out = _promtool("check", "config", str(COLLECTOR / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
@pytest.mark.parametrize("unit_test", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_rule_unit_tests_pass(unit_test: Path) -> None:
    """Each promtool unit test file passes: alerts fire and stay silent, recording rules give exact values."""
    assert len(RULE_TESTS) == 2
    out = _promtool("test", "rules", str(unit_test))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@needs_promtool
def test_promtool_alert_tests_catch_the_design_thresholds(tmp_path: Path) -> None:
    """With the design's thresholds (GPU memory > 0.85, errors/s > 0.05), the alert unit tests fail."""
    rules = tmp_path / "rules"
    (rules / "tests").mkdir(parents=True)
    shutil.copy(RULES / "tests" / "ryot_alerts_test.yml", rules / "tests")
    shutil.copy(RULE_FILES[0], rules)
    alerts = RULE_FILES[1].read_text()
    broken = alerts.replace("ryot_gpu_memory_percentage > 85", "ryot_gpu_memory_percentage > 0.85").replace(
        "ryot:error_rate:rate5m > 0.05",
        "sum by (model) (rate(ryot_inference_errors_total[5m])) > 0.05",
    )
    assert broken.count("0.85") == 1 and broken != alerts
    (rules / "ryot_alerts.yml").write_text(broken)
    out = _promtool("test", "rules", str(rules / "tests" / "ryot_alerts_test.yml"))
    assert out.returncode == 1
    assert "alertname: RyotGPUMemoryPressure" in out.stdout + out.stderr
    assert "alertname: RyotHighErrorRate" in out.stdout + out.stderr


@pytest.mark.skipif(PROMTOOL is None or shutil.which("prometheus") is None, reason="prometheus/promtool not installed")
def test_setup_script_skips_apt_when_prometheus_is_installed(tmp_path: Path) -> None:
    """scripts/setup.d/prometheus.sh is idempotent: with prometheus and promtool present it never calls apt-get."""
    stub = tmp_path / "apt-get"
    stub.write_text("#!/bin/sh\necho apt-get called >&2\nexit 1\n")
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.d" / "prometheus.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert (out.returncode, out.stderr) == (0, "")


_QUANTILE_ALERT = re.compile(r"^(?P<lhs>.+?)\s*>\s*(?P<threshold>[0-9.]+(?:e-?\d+)?)\s*$", re.S)
_BUCKET_SERIES = re.compile(r"(?<![\w:])(ryot_[a-z_]+)_bucket\b")


def quantile_thresholds(rules: list[dict]) -> list[tuple[str, str, float]]:
    """(alert, histogram family, threshold) for every alert comparing a histogram_quantile, directly or through a
    recording rule, with ``> threshold``."""
    recorded = {r["record"]: r["expr"] for r in rules if "record" in r}
    out = []
    for rule in rules:
        if "alert" not in rule:
            continue
        m = _QUANTILE_ALERT.match(rule["expr"].strip())
        if m is None:
            continue
        lhs = m["lhs"].strip()
        expr = recorded.get(lhs, lhs)
        if "histogram_quantile" not in expr:
            continue
        for family in sorted(set(_BUCKET_SERIES.findall(expr))):
            out.append((rule["alert"], family, float(m["threshold"])))
    return out


def off_boundary_thresholds(rules: list[dict]) -> list[str]:
    """Alerts whose quantile threshold lies strictly inside a bucket: histogram_quantile interpolates linearly within a
    bucket, so a quantile that really crosses such a threshold can be reported on either side of it."""
    bad = []
    for alert, family, threshold in quantile_thresholds(rules):
        buckets = catalogue.BY_PROMETHEUS_NAME[family].buckets or ()
        if not any(abs(b - threshold) <= 1e-12 * max(1.0, b) for b in buckets):
            bad.append(f"{alert}: {threshold} is not a bucket boundary of {family} {list(buckets)}")
    return bad


def _all_rules() -> list[dict]:
    """Every rule of every rule file shipped in collector/rules/ (generated SLO rules included)."""
    return [
        rule
        for path in sorted(RULES.glob("*.yml"))
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", [])
        for rule in group["rules"]
    ]


def test_quantile_thresholds_finds_direct_and_recorded_quantiles() -> None:
    """Both a histogram_quantile in the alert and one behind a recording rule are found, with their histogram."""
    rules = [
        {
            "record": "x:ttft:p95",
            "expr": "histogram_quantile(0.95, sum by (le) (rate(ryot_ttft_latency_seconds_bucket[5m])))",
        },
        {"alert": "A", "expr": "x:ttft:p95 > 0.75"},
        {"alert": "B", "expr": "histogram_quantile(0.5, rate(ryot_time_per_output_token_seconds_bucket[5m])) > 0.02"},
        {"alert": "C", "expr": "ryot_queue_depth > 100"},
    ]
    assert quantile_thresholds(rules) == [
        ("A", "ryot_ttft_latency_seconds", 0.75),
        ("B", "ryot_time_per_output_token_seconds", 0.02),
    ]
    assert off_boundary_thresholds(rules) == [
        "A: 0.75 is not a bucket boundary of ryot_ttft_latency_seconds"
        " [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]"
    ]


def test_every_quantile_alert_threshold_is_a_bucket_boundary() -> None:
    """Each alert on a histogram quantile compares against a bucket boundary of that histogram, so it can fire."""
    found = quantile_thresholds(_all_rules())
    assert sorted(found) == [
        ("RyotHighLatency", "ryot_ttft_latency_seconds", 1.0),
        ("RyotHighRequestLatency", "ryot_inference_latency_seconds", 10.0),
        ("RyotLowTokenThroughput", "ryot_time_per_output_token_seconds", 0.02),
    ]
    assert off_boundary_thresholds(_all_rules()) == []
