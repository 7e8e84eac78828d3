"""collector/k8s/: the Prometheus Operator resources `ryot-telemetry k8s` generates, their shape, and their rules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ryot_telemetry.artifacts import k8s
from ryot_telemetry.demo.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "collector" / "k8s"
RULE_FILES = [ROOT / "collector" / "rules" / f for f in k8s.DEFAULT_RULES]
FILES = ("podmonitor.yaml", "servicemonitor.yaml", "prometheusrule.yaml")
PROMTOOL = shutil.which("promtool")


def _load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def test_generated_files_are_up_to_date(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """collector/k8s/ is exactly what `ryot-telemetry k8s -o collector/k8s` writes from the repository root: a
    catalogue or rule-file change without regenerating fails here."""
    monkeypatch.chdir(ROOT)
    assert cli(["k8s", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    stale = [f for f in FILES if (tmp_path / f).read_text() != (K8S / f).read_text()]
    assert stale == [], "regenerate: ryot-telemetry k8s -o collector/k8s"


@pytest.mark.parametrize(("file", "kind", "endpoints"), [
    ("podmonitor.yaml", "PodMonitor", "podMetricsEndpoints"),
    ("servicemonitor.yaml", "ServiceMonitor", "endpoints"),
])  # fmt: skip
def test_monitor_shape(file: str, kind: str, endpoints: str) -> None:
    """apiVersion monitoring.coreos.com/v1, the kind, a label selector, one endpoint on the named port's /metrics
    with the same keep filter as collector/prometheus.yml (here derived from the catalogue)."""
    doc = _load(file)
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == (
        "monitoring.coreos.com/v1",
        kind,
        "ryot-telemetry",
    )
    assert doc["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "ryot-inference"}}
    (endpoint,) = doc["spec"][endpoints]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("metrics", "/metrics", "15s")
    (keep,) = endpoint["metricRelabelings"]
    (job,) = yaml.safe_load((ROOT / "collector" / "prometheus.yml").read_text())["scrape_configs"]
    (plain,) = job["metric_relabel_configs"]
    assert (keep["sourceLabels"], keep["action"], keep["regex"]) == (
        plain["source_labels"],
        plain["action"],
        plain["regex"],
    )
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}


def test_prometheus_rule_holds_every_shipped_rule_group() -> None:
    """The PrometheusRule's spec.groups are the groups of the three rule files, rule for rule."""
    doc = _load("prometheusrule.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    shipped = [g for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"]]
    assert [g["name"] for g in doc["spec"]["groups"]] == ["ryot_recording_rules", "ryot_alerts", "ryot_slo"]
    assert doc["spec"]["groups"] == shipped


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (scripts/setup.d/prometheus.sh)")
def test_embedded_rules_pass_promtool(tmp_path: Path) -> None:
    """spec.groups, extracted to a rule file, pass `promtool check rules`: the 36 rules of the three files."""
    groups = _load("prometheusrule.yaml")["spec"]["groups"]
    extracted = tmp_path / "extracted.yml"
    extracted.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    out = subprocess.run([PROMTOOL, "check", "rules", str(extracted)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 36 rules found" in out.stdout


def test_cli_options_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--kind prints one resource with the given namespace, selector and labels; a malformed --selector and a
    missing rule file are exit 2 with one line saying what to pass."""
    monkeypatch.chdir(ROOT)
    argv = [
        "k8s",
        "--kind",
        "ServiceMonitor",
        "--namespace",
        "llm",
        "--selector",
        "app=router",
        "--label",
        "release=prom",
    ]
    assert cli(argv) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["kind"] == "ServiceMonitor" and doc["metadata"]["namespace"] == "llm"
    assert doc["metadata"]["labels"] == {"app.kubernetes.io/part-of": "ryot-telemetry", "release": "prom"}
    assert doc["spec"]["selector"] == {"matchLabels": {"app": "router"}}
    assert cli(["k8s", "--selector", "router"]) == 2
    assert "--selector 'router': expected key=value" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert cli(["k8s"]) == 2
    assert "no rule file collector/rules/ryot_recording_rules.yml; pass --rules" in capsys.readouterr().err
