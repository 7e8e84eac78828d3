"""`ryot-telemetry k8s --autoscaling`: KEDA ScaledObject, prometheus-adapter rules and HPA, their shape and checks."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ryot_telemetry import catalogue
from ryot_telemetry.artifacts import autoscaling
from ryot_telemetry.cli import main as cli

PROMTOOL = shutil.which("promtool")
# The exact rules ryot-telemetry k8s states for each kind of Kubernetes or Prometheus value (artifacts/kube_values.py).
DNS_LABEL = (
    "must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
)
DNS_SUBDOMAIN = (
    "must be a DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', starting and ending with a "
    "letter or digit"
)
DURATION = "must be a positive Prometheus duration such as 15s, 1m30s or 500ms (integers and units)"
LABEL_KEY_NAME = (
    "the key's name must be at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
)
LABEL_VALUE = (
    "a label value must be empty or at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter "
    "or digit"
)
SLOS = {"*": {"ttft": 0.5, "target": 0.99}, "llama-3-8b": {"ttft": 0.25}, "no-ttft": {"latency": 10}}


@pytest.fixture
def slos(tmp_path: Path) -> Path:
    p = tmp_path / "slos.json"
    p.write_text(json.dumps(SLOS))
    return p


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[Any], str]:
    code = cli(["k8s", "--autoscaling", *argv])
    out, err = capsys.readouterr()
    return code, [d for d in yaml.safe_load_all(out) if d is not None] if code == 0 else [], err


def test_keda_scaled_object_for_inflight(capsys: pytest.CaptureFixture[str]) -> None:
    """--autoscaling keda --signal inflight: a ScaledObject on the Deployment, AverageValue of the in-flight sum."""
    code, docs, err = run(
        capsys,
        "keda",
        *("--target", "router", "--namespace", "llm", "--inflight-target", "8", "--label", "release=prom"),
        *("--prometheus", "http://prometheus.monitoring:9090", "--min-replicas", "2", "--max-replicas", "20"),
    )
    assert (code, err) == (0, "")
    assert docs == [
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {
                "name": "ryot-telemetry",
                "namespace": "llm",
                "labels": {"app.kubernetes.io/part-of": "ryot-telemetry", "release": "prom"},
            },
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "router"},
                "minReplicaCount": 2,
                "maxReplicaCount": 20,
                "triggers": [
                    {
                        "type": "prometheus",
                        "metricType": "AverageValue",
                        "metadata": {
                            "serverAddress": "http://prometheus.monitoring:9090",
                            "query": 'sum(ryot_active_inference_requests{namespace="llm",'
                            'pod=~"router-[a-z0-9]+-[a-z0-9]+"}) or vector(0)',
                            "threshold": "8",
                        },
                    }
                ],
            },
        }
    ]


def test_keda_ttft_threshold_comes_from_the_slo_table(capsys: pytest.CaptureFixture[str], slos: Path) -> None:
    """--signal ttft: Value metric of the p95 over --window, threshold the model's ttft objective (else "*")."""
    _, (doc,), _ = run(capsys, "keda", "--signal", "ttft", "--target", "router", "--slos", str(slos))
    trigger = doc["spec"]["triggers"][0]
    assert (trigger["metricType"], trigger["metadata"]["threshold"]) == ("Value", "0.5")
    assert trigger["metadata"]["query"] == (
        "(histogram_quantile(0.95, sum by (le) (rate(ryot_ttft_latency_seconds_bucket"
        '{pod=~"router-[a-z0-9]+-[a-z0-9]+"}[2m]))) >= 0) or vector(0)'
    )
    argv = ("keda", "--signal", "ttft", "--target", "router", "--slos", str(slos), "--model", "llama-3-8b")
    _, (doc,), _ = run(capsys, *argv, "--window", "5m")
    trigger = doc["spec"]["triggers"][0]
    assert trigger["metadata"]["threshold"] == "0.25"
    assert 'model="llama-3-8b"' in trigger["metadata"]["query"] and "[5m]" in trigger["metadata"]["query"]


def test_hpa_with_adapter_rules_for_queue_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--autoscaling hpa -o DIR: the adapter's ConfigMap (config.yaml with one rule) and an autoscaling/v2 HPA."""
    argv = ["k8s", "--autoscaling", "hpa", "--signal", "queue", "--target", "router", "--queue-target", "0.1"]
    assert cli([*argv, "--model", "llama-3-8b", "--namespace", "llm", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hpa.yaml", "prometheus-adapter-rules.yaml"]
    config_map = yaml.safe_load((tmp_path / "prometheus-adapter-rules.yaml").read_text())
    assert (config_map["apiVersion"], config_map["kind"], config_map["metadata"]["name"]) == (
        "v1",
        "ConfigMap",
        "ryot-telemetry-adapter-rules",
    )
    q = autoscaling.QUEUE_FAMILY
    assert yaml.safe_load(config_map["data"]["config.yaml"]) == {
        "rules": [
            {
                "seriesQuery": f'{q}_count{{namespace!="",pod!=""}}',
                "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
                "name": {"matches": f"^{q}_count$", "as": "ryot_queue_seconds"},
                "metricsQuery": f"(sum by (<<.GroupBy>>) (rate({q}_sum{{<<.LabelMatchers>>}}[2m])) / "
                "sum by (<<.GroupBy>>) (rate(<<.Series>>{<<.LabelMatchers>>}[2m]))) >= 0",
            }
        ]
    }
    assert yaml.safe_load((tmp_path / "hpa.yaml").read_text()) == {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "ryot-telemetry",
            "namespace": "llm",
            "labels": {"app.kubernetes.io/part-of": "ryot-telemetry"},
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "router"},
            "minReplicas": 1,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "ryot_queue_seconds", "selector": {"matchLabels": {"model": "llama-3-8b"}}},
                        "target": {"type": "AverageValue", "averageValue": "0.1"},
                    },
                }
            ],
        },
    }
    # printed without -o: the ConfigMap, then the HPA
    _, docs, _ = run(capsys, "hpa", "--signal", "inflight", "--target", "router")
    assert [d["kind"] for d in docs] == ["ConfigMap", "HorizontalPodAutoscaler"]


def test_plain_k8s_output_is_unchanged_by_the_autoscaling_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --autoscaling, `k8s -o DIR` writes the three monitor/rule files only."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert cli(["k8s", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "podmonitor.yaml",
        "prometheusrule.yaml",
        "servicemonitor.yaml",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "--autoscaling needs --target DEPLOYMENT"),
        (("--target", "Router"), f"--target 'Router': {DNS_LABEL}\n"),
        (("--target", "router.v2"), f"--target 'router.v2': {DNS_LABEL}\n"),
        (("--target=-router",), f"--target '-router': {DNS_LABEL}\n"),
        (("--target", "r" * 64), f"--target '{'r' * 64}': {DNS_LABEL}\n"),
        (("--target", "router\n"), f"--target 'router\\n': {DNS_LABEL}\n"),
        (("--target", "router", "--namespace", "LLM"), f"--namespace 'LLM': {DNS_LABEL}\n"),
        (("--target", "router", "--name", "a_b"), f"--name 'a_b': {DNS_SUBDOMAIN}\n"),
        (("--target", "router", "--window", "0m"), f"--window '0m': {DURATION}\n"),
        (("--target", "router", "--window", "2"), f"--window '2': {DURATION}\n"),
        (("--target", "router", "--window", "1e3m"), f"--window '1e3m': {DURATION}\n"),
        (("--target", "router", "--window", ""), f"--window '': {DURATION}\n"),
        (("--target", "router", "--window", "30s1m"), f"--window '30s1m': {DURATION}\n"),
        (("--target", "router", "--inflight-target", "0"), "the threshold must be a number > 0"),
        (("--target", "router", "--inflight-target", "-3"), "the threshold must be a number > 0"),
        (("--target", "router", "--inflight-target", "nan"), "the threshold must be a number > 0"),
        (("--target", "router", "--inflight-target", "inf"), "the threshold must be a number > 0"),
        (("--target", "router", "--inflight-target", "1e12"), "the threshold must be a number > 0"),
        (("--target", "router", "--inflight-target", "1e-9"), "the threshold must be at least 0.000001"),
        (("--target", "router", "--min-replicas", "0"), "--min-replicas must be a whole number > 0"),
        (("--target", "router", "--min-replicas", "5", "--max-replicas", "2"), "--max-replicas 2 is below"),
        (("--target", "router", "--prometheus", "ftp://p:9090"), "--prometheus 'ftp://p:9090': expected an http(s)"),
        (("--target", "router", "--prometheus", "http://a b"), "--prometheus 'http://a b': expected an http(s)"),
        (("--target", "router", "--prometheus", "http://p\n"), "--prometheus 'http://p\\n': expected an http(s)"),
        (("--target", "router", "--model", "m\x00"), "--model 'm\\x00': expected a model label value"),
        (("--target", "router", "--model", "x" * 300), "--model 'xxx"),
        (("--target", "router", "--label", "bad key=v"), f"--label 'bad key=v': {LABEL_KEY_NAME}\n"),
        (("--target", "router", "--label", "k=a b"), f"--label 'k=a b': {LABEL_VALUE}\n"),
        (("--target", "router", "--signal", "ttft"), "--signal ttft needs an SLO table: --slos FILE"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each bad name, duration, number, URL or label is exit 2 and one stderr line naming the option."""
    monkeypatch.delenv("RYOT_TELEMETRY_SLOS", raising=False)
    code, _, err = run(capsys, "keda", *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"ryot-telemetry k8s: {message}"), err


def test_ttft_needs_an_objective_and_hpa_a_label_safe_model(capsys: pytest.CaptureFixture[str], slos: Path) -> None:
    """A model without a ttft objective, a missing table, and an HPA --model no label can hold: exit 2, one line."""
    code, _, err = run(capsys, "keda", "--signal", "ttft", "--target", "r", "--slos", str(slos), "--model", "no-ttft")
    assert (code, err) == (
        2,
        f"ryot-telemetry k8s: --slos {slos}: no ttft objective for model 'no-ttft' "
        "(pass --model, or add a ttft to its entry)\n",
    )
    code, _, err = run(capsys, "keda", "--signal", "ttft", "--target", "r", "--slos", str(slos) + ".missing")
    assert code == 2 and err.startswith("ryot-telemetry k8s: ") and err.count("\n") == 1, err
    code, _, err = run(capsys, "hpa", "--target", "r", "--model", "meta-llama/Llama-3-8B")
    assert (code, err) == (
        2,
        "ryot-telemetry k8s: --model 'meta-llama/Llama-3-8B': the HPA selects it as a Kubernetes label value "
        f"({LABEL_VALUE}); use --autoscaling keda, whose query takes any model name\n",
    )
    code, (doc,), _ = run(capsys, "keda", "--target", "r", "--model", 'meta-llama/Llama-3-8B"x')
    assert 'model="meta-llama/Llama-3-8B\\"x"' in doc["spec"]["triggers"][0]["metadata"]["query"]


def test_yaml_writer_round_trips_hostile_strings() -> None:
    """Quotes, backslashes, newlines, non-ASCII and YAML words survive to_yaml exactly as PyYAML reads them back."""
    data = {
        "a": 'x"y\\z',
        "yes": "no",
        "b": ["on", "null", "~", "- item", "#c", "ünï", ""],
        "c": {"d": 1, "e": 0.25, "f": True, "g": None, "h": [], "i": {}},
        "j": [{"k": "v", "l": [1, 2]}, "m"],
        "file.yaml": "rules:\n  - x: 1\n\n  - y: '2'\n",
    }
    assert yaml.safe_load(autoscaling.to_yaml(data)) == data


def test_quantities_are_plain_decimals() -> None:
    """Thresholds are written as Kubernetes quantities: plain decimals, no exponent, no float noise."""
    assert [autoscaling._quantity(v) for v in (8, 0.5, 1e-05, 0.1 + 0.2, 1e9, 0.000001)] == [
        "8",
        "0.5",
        "0.00001",
        "0.3",
        "1000000000",
        "0.000001",
    ]


def test_scaling_validates_when_built_in_code() -> None:
    """Scaling(...) checks its fields itself, so resources built in code are checked as the CLI's are."""
    with pytest.raises(ValueError, match=r"^--signal must be one of inflight, ttft, queue, got 'gpu'$"):
        autoscaling.Scaling(signal="gpu", target="router", threshold=1.0)
    with pytest.raises(ValueError, match=r"^--min-replicas must be a whole number > 0"):
        autoscaling.Scaling(signal="inflight", target="router", threshold=1.0, min_replicas=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^the threshold must be a number > 0"):
        autoscaling.Scaling(signal="inflight", target="router", threshold="8")  # type: ignore[arg-type]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"target": None}, f"--target None: {DNS_LABEL}"),
        ({"target": "Router"}, f"--target 'Router': {DNS_LABEL}"),
        ({"name": b"ryot"}, f"--name b'ryot': {DNS_SUBDOMAIN}"),
        ({"namespace": 7}, f"--namespace 7: {DNS_LABEL}"),
        ({"window": 120}, f"--window 120: {DURATION}"),
        ({"window": "1m1m"}, f"--window '1m1m': {DURATION}"),
        ({"labels": {"team": 1}}, f"--label 'team=1': {LABEL_VALUE}"),
        ({"labels": {3: "x"}}, f"--label '3=x': {LABEL_KEY_NAME}"),
        (
            {"labels": {"a/b/c": "x"}},
            "--label 'a/b/c=x': the key's prefix must be a DNS-1123 subdomain (e.g. example.com/name)",
        ),
    ]
    for fields, message in cases:
        with pytest.raises(ValueError) as raised:
            autoscaling.Scaling(**{"signal": "inflight", "target": "router", "threshold": 1.0, **fields})
        assert str(raised.value) == message


def test_queue_family_is_the_catalogues_once_declared() -> None:
    """The queue signal reads ryot_engine_queue_seconds; when the catalogue declares it, it is a histogram there."""
    spec = catalogue.BY_PROMETHEUS_NAME.get(autoscaling.QUEUE_FAMILY)
    assert spec is None or spec.prometheus_type == "histogram"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (scripts/setup.d/prometheus.sh)")
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """Every KEDA query and every adapter metricsQuery (filled in as the adapter does) passes promtool."""
    rules = []
    for signal in autoscaling.SIGNALS:
        for i, model in enumerate((None, 'we"ird\\model')):
            s = autoscaling.Scaling(signal=signal, target="router", threshold=1.0, namespace="llm", model=model)
            q = autoscaling.signal_queries(s)
            series = autoscaling.adapter_rule(s)["seriesQuery"].split("{", 1)[0]
            adapter = (
                q["adapter"]
                .replace("<<.Series>>", series)
                .replace("<<.LabelMatchers>>", 'namespace="llm",pod=~"a|b"')
                .replace("<<.GroupBy>>", "pod")
            )
            rules += [
                {"record": f"check:{signal}:keda{i}", "expr": q["keda"]},
                {"record": f"check:{signal}:hpa{i}", "expr": adapter},
            ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "autoscaling", "rules": rules}]}))
    out = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 12 rules found" in out.stdout


def test_guide_shows_the_generated_keda_queries() -> None:
    """docs/guides/autoscaling.md's promql block is exactly the three KEDA queries for --target router -n llm."""
    import re

    guide = (Path(__file__).resolve().parents[2] / "docs" / "guides" / "autoscaling.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```promql\n(.*?)```", guide, re.S)
    expected = [
        autoscaling.signal_queries(autoscaling.Scaling(signal=s, target="router", threshold=1.0, namespace="llm"))[
            "keda"
        ]
        for s in autoscaling.SIGNALS
    ]
    assert block.splitlines() == expected


def test_unreadable_slos_and_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An SLO table that is a directory or not UTF-8, and an --output that cannot be created: exit 2, one line."""
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{")
    for source in (tmp_path, bad):
        code, _, err = run(capsys, "keda", "--signal", "ttft", "--target", "r", "--slos", str(source))
        assert code == 2 and err.startswith(f"ryot-telemetry k8s: --slos {source}: ") and err.count("\n") == 1, err
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(capsys, "keda", "--target", "r", "-o", str(blocker / "sub"))
    assert code == 2 and err.startswith(f"ryot-telemetry k8s: cannot write to --output {blocker / 'sub'}: "), err
