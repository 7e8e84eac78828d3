"""collector/k8s/: the Prometheus Operator resources `ryot-telemetry k8s` generates, their shape, and their rules."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ryot_telemetry.artifacts import k8s
from ryot_telemetry.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "collector" / "k8s"
RULE_FILES = [ROOT / "collector" / "rules" / f for f in k8s.DEFAULT_RULES]
FILES = ("podmonitor.yaml", "servicemonitor.yaml", "prometheusrule.yaml")
PROMTOOL = shutil.which("promtool")


def _load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def test_generated_files_are_up_to_date(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """collector/k8s/ is exactly what `ryot-telemetry k8s -o collector/k8s` writes, from any directory: a
    catalogue or rule-file change without regenerating fails here."""
    monkeypatch.chdir(tmp_path)
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
    assert [g["name"] for g in doc["spec"]["groups"]] == [
        "ryot_recording_rules",
        "ryot_provider_rules",
        "ryot_alerts",
        "ryot_provider_alerts",
        "ryot_slo",
    ]
    assert doc["spec"]["groups"] == shipped


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (scripts/setup.d/prometheus.sh)")
def test_embedded_rules_pass_promtool(tmp_path: Path) -> None:
    """spec.groups, extracted to a rule file, pass `promtool check rules`: the 45 rules of the three files."""
    groups = _load("prometheusrule.yaml")["spec"]["groups"]
    extracted = tmp_path / "extracted.yml"
    extracted.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    out = subprocess.run([PROMTOOL, "check", "rules", str(extracted)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 45 rules found" in out.stdout


def test_cli_options_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--kind prints one resource with the given namespace, selector and labels; a malformed --selector is exit 2
    with one line saying what to pass; from any directory the PrometheusRule holds the shipped rules."""
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
    monkeypatch.chdir(tmp_path)  # the shipped rules come from the package, not the working directory
    assert cli(["k8s", "--kind", "PrometheusRule"]) == 0
    assert capsys.readouterr().out == (K8S / "prometheusrule.yaml").read_text()


_DNS_SUBDOMAIN = (
    "must be a DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', starting and ending with a "
    "letter or digit"
)
_DNS_LABEL = (
    "must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
)
_KEY_NAME = (
    "the key's name must be at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
)
_KEY_PREFIX = "the key's prefix must be a DNS-1123 subdomain (e.g. example.com/name)"
_VALUE = (
    "a label value must be empty or at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter "
    "or digit"
)
_PORT = "must be a port name: at most 15 lowercase letters, digits and single '-' between them, with a letter"
_DURATION = "must be a positive Prometheus duration such as 15s, 1m30s or 500ms (integers and units)"


@pytest.mark.parametrize(("option", "value", "why"), [
    ("--name", "Ryot", _DNS_SUBDOMAIN),
    ("--name", "a" * 254, _DNS_SUBDOMAIN),
    ("--name", "-ryot", _DNS_SUBDOMAIN),
    ("--name", "ryot telemetry", _DNS_SUBDOMAIN),
    ("--name", "", _DNS_SUBDOMAIN),
    ("--name", "ryöt", _DNS_SUBDOMAIN),
    ("--namespace", "my ns", _DNS_LABEL),
    ("--namespace", "LLM", _DNS_LABEL),
    ("--namespace", "a" * 64, _DNS_LABEL),
    ("--namespace", "team.llm", _DNS_LABEL),
    ("--namespace", "llm-", _DNS_LABEL),
    ("--label", "bad key=x", _KEY_NAME),
    ("--label", "=x", _KEY_NAME),
    ("--label", "/x=y", _KEY_PREFIX),
    ("--label", "Example.com/x=y", _KEY_PREFIX),
    ("--label", "example.com/=y", _KEY_NAME),
    ("--label", "a/b/c=y", _KEY_PREFIX),
    ("--label", "k" * 64 + "=y", _KEY_NAME),
    ("--label", "release=" + "v" * 64, _VALUE),
    ("--label", "release=-v", _VALUE),
    ("--label", "release=v w", _VALUE),
    ("--selector", "app=a/b", _VALUE),
    ("--selector", "app=router\n", _VALUE),
    ("--selector", "router", "expected key=value"),
    ("--port", "Metrics", _PORT),
    ("--port", "metrics-port-long", _PORT),
    ("--port", "9464", _PORT),
    ("--port", "my--metrics", _PORT),
    ("--port", "metrics-", _PORT),
    ("--interval", "15", _DURATION),
    ("--interval", "1.5s", _DURATION),
    ("--interval", "0s", _DURATION),
    ("--interval", "1m1m", _DURATION),
    ("--interval", "15S", _DURATION),
    ("--interval", "30s1m", _DURATION),
    ("--interval", "\u0661\u0665s", _DURATION),  # Arabic-Indic digits: Python's \\d, not Prometheus'

    ("--interval", "293y", "is longer than Prometheus can hold (about 292 years)"),
])  # fmt: skip
def test_hostile_values_exit_2_with_one_line(
    option: str, value: str, why: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each value Kubernetes or Prometheus would reject exits 2 with one line naming the option, the value and the
    rule, and writes nothing."""
    monkeypatch.chdir(ROOT)
    assert cli(["k8s", f"{option}={value}"]) == 2  # one argument, so argparse takes "-ryot" as the value
    assert capsys.readouterr() == ("", f"ryot-telemetry k8s: {option} {value!r}: {why}\n")


def test_values_at_the_limits_are_accepted(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """253-character names, 63-character namespaces and label parts, prefixed keys, empty label values, port names
    of 15 characters and compound durations are what Kubernetes and Prometheus accept, so they are written."""
    monkeypatch.chdir(ROOT)
    key = "example.com/" + "k" * 63
    argv = ["k8s", "--name", "a" * 253, "--namespace", "n" * 63, "--label", f"{key}={'v' * 63}"]
    argv += ["--selector", "app.kubernetes.io/name=", "--selector", "tier=A_b.c-D", "--port", "metrics-port-15"]
    assert cli([*argv, "--interval", "1m30s"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["metadata"]["name"] == "a" * 253 and doc["metadata"]["namespace"] == "n" * 63
    assert doc["metadata"]["labels"][key] == "v" * 63
    assert doc["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "", "tier": "A_b.c-D"}}
    (endpoint,) = doc["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["interval"]) == ("metrics-port-15", "1m30s")


_RULE = "{record: 'job:up:sum', expr: 'sum by (job) (up)'}"
_ALERT = "{alert: Down, expr: 'up == 0', for: 5m, labels: {severity: page}}"
_FORMS = {
    "flow": "groups: [{name: a, rules: [" + _RULE + ", " + _ALERT + "]}]\n",
    "comment after groups": f"groups:  # ours\n  - name: a\n    rules:\n      - {_RULE}\n      - {_ALERT}\n",
    "quoted key": f'"groups":\n  - "name": a\n    "rules": [{_RULE}, {_ALERT}]\n',
    "items at column 0": f"# top comment\ngroups:\n- name: a\n  rules:\n  - {_RULE}\n  - {_ALERT}\n",
    "items at column 6": f"groups:\n      - name: a\n        rules:\n          - {_RULE}\n          - {_ALERT}\n",
    "document marker and an anchor": f"---\ngroups:\n  - name: a\n    rules: [&r {_RULE}, {_ALERT}]\n",
}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (scripts/setup.d/prometheus.sh)")
@pytest.mark.parametrize("form", list(_FORMS))
def test_rule_files_in_any_form_promtool_accepts(form: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A rule file in a form promtool accepts becomes a PrometheusRule whose spec.groups are the file's groups,
    which promtool accepts again once extracted, beside a shipped file of another indentation."""
    rules = tmp_path / "mine.yml"
    rules.write_text(_FORMS[form])
    assert subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, timeout=60).returncode == 0
    shipped = RULE_FILES[0]
    assert cli(["k8s", "--kind", "PrometheusRule", "--rules", str(shipped), str(rules)]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    mine = yaml.safe_load(_FORMS[form])["groups"]
    assert doc["spec"]["groups"] == yaml.safe_load(shipped.read_text())["groups"] + mine
    extracted = tmp_path / "extracted.yml"
    extracted.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}, sort_keys=False))
    out = subprocess.run([PROMTOOL, "check", "rules", str(extracted)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 17 rules found" in out.stdout  # 15 shipped (alerts and provider alerts), 2 of the file


def test_block_rule_file_keeps_its_comments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A plain block rule file is embedded as written, comments included; a flow one is written out again."""
    rules = tmp_path / "mine.yml"
    rules.write_text(_FORMS["comment after groups"].replace("    rules:", "    # why these rules\n    rules:"))
    assert cli(["k8s", "--kind", "PrometheusRule", "--rules", str(rules)]) == 0
    assert "      # why these rules\n      rules:\n" in capsys.readouterr().out


@pytest.mark.parametrize(("content", "why"), [
    (b"groups:\n  - name: a\n    rules: [\n",
     "not valid YAML: while parsing a flow node: expected the node content, but found '<stream end>' at line 4, "
     "column 1"),
    (b"foo: 1\n", "not a Prometheus rule file: no top-level 'groups'"),
    (b"", "not a Prometheus rule file: no top-level 'groups'"),
    (b"- name: a\n", "not a Prometheus rule file: no top-level 'groups'"),
    (b"apiVersion: v1\nkind: ConfigMap\n", "not a Prometheus rule file: no top-level 'groups'"),
    (b"groups: []\nextra: 1\n", "not a Prometheus rule file: unknown top-level key 'extra'"),
    (b"groups: {name: a}\n", "not a Prometheus rule file: 'groups' is not a list"),
    (b"groups: [{rules: []}]\n", "not a Prometheus rule file: group 1 has no name"),
    (b"groups: [{name: a}, {name: a}]\n", "not a Prometheus rule file: group 'a' is repeated"),
    (b"groups: [{name: a, rules: {}}]\n", "not a Prometheus rule file: group 'a': 'rules' is not a list"),
    (b"groups: [{name: a, rules: [{expr: up}]}]\n",
     "not a Prometheus rule file: group 'a': rule 1 needs 'record' or 'alert', and 'expr'"),
    (b"groups: [{name: a, rules: [{record: r, alert: A, expr: up}]}]\n",
     "not a Prometheus rule file: group 'a': rule 1 needs 'record' or 'alert', and 'expr'"),
    (b"groups:\n  - name: \xff\n", "not valid YAML: unacceptable character #x00ff: invalid start byte"),
    (b"a: b\n---\nc: d\n",
     "not valid YAML: expected a single document in the stream: but found another document at line 2, column 1"),
])  # fmt: skip
def test_files_that_are_not_rule_files_are_refused(
    content: bytes, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Broken YAML, a file without groups or with malformed groups exits 2 with one line naming the file."""
    bad = tmp_path / "bad.yml"
    bad.write_bytes(content)
    assert cli(["k8s", "--kind", "PrometheusRule", "--rules", str(bad)]) == 2
    assert capsys.readouterr() == ("", f"ryot-telemetry k8s: --rules {str(bad)!r}: {why}\n")


def test_missing_rule_file_and_group_in_two_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --rules file that does not exist or is a directory, and a group name two files share (one PrometheusRule
    is one rule file to Prometheus, which refuses repeated groups), exit 2 with one line naming the file."""
    missing = tmp_path / "missing.yml"
    assert cli(["k8s", "--rules", str(missing)]) == 2
    assert capsys.readouterr().err == f"ryot-telemetry k8s: --rules {str(missing)!r}: no such file\n"
    assert cli(["k8s", "--rules", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"ryot-telemetry k8s: --rules {str(tmp_path)!r}: not a file\n"
    first, second = tmp_path / "first.yml", tmp_path / "second.yml"
    first.write_text("groups: [{name: a, rules: []}]\n")
    second.write_text("groups:\n  - name: a\n    rules: []\n")
    assert cli(["k8s", "--rules", str(first), str(second)]) == 2
    assert capsys.readouterr().err == (
        f"ryot-telemetry k8s: --rules {str(second)!r}: group 'a' is already in {first.as_posix()!r}\n"
    )


def test_slos_option_embeds_the_rules_of_that_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--slos TABLE puts the SLO rules generated from that table in the PrometheusRule, after the shipped recording
    rules and alerts; an unreadable table is exit 2 naming the option; --slos and --rules exclude each other."""
    table = tmp_path / "slos.json"
    table.write_text(json.dumps({"m": {"ttft": 0.5, "target": 0.99}}))
    assert cli(["k8s", "--kind", "PrometheusRule", "--slos", str(table)]) == 0
    groups = yaml.safe_load(capsys.readouterr().out)["spec"]["groups"]
    assert [g["name"] for g in groups] == [
        "ryot_recording_rules",
        "ryot_provider_rules",
        "ryot_alerts",
        "ryot_provider_alerts",
        "ryot_slo",
    ]
    (target,) = [r for r in groups[4]["rules"] if r.get("record") == "ryot:slo:target"]
    assert (target["expr"], target["labels"]) == ("vector(0.99)", {"model": "m"})
    missing = tmp_path / "none.json"
    assert cli(["k8s", "--slos", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"ryot-telemetry k8s: --slos {str(missing)!r}: cannot read SLO table {missing}: No such file or directory\n"
    )
    assert cli(["k8s", "--slos", str(table), "--rules", str(RULE_FILES[0])]) == 2
    assert "argument --rules: not allowed with argument --slos" in capsys.readouterr().err


def test_nested_aliases_are_embedded_without_expanding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A rule file of nested YAML aliases (10^12 leaves once expanded) is embedded as written, anchors and all:
    nothing walks the expansion (comparing the parsed objects would, for hours)."""
    anchors = ['x0: &x0 ["l", "l", "l", "l", "l", "l", "l", "l", "l", "l"]']
    anchors += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, 12)]
    rules = tmp_path / "aliases.yml"
    rules.write_text("groups:\n  - name: a\n    rules:\n      - record: r\n        expr: up\n        annotations:\n"
                     + "".join(f"          {line}\n" for line in anchors))  # fmt: skip
    assert cli(["k8s", "--kind", "PrometheusRule", "--rules", str(rules)]) == 0
    out = capsys.readouterr().out
    assert out.endswith("".join(f"            {line}\n" for line in anchors))
