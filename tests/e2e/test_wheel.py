"""The wheel is self-contained: built from the sdist, installed into a fresh venv, every `ryot-telemetry` subcommand
writes its files from an empty directory, and they are the repository's collector/, valid for promtool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ryot_telemetry.artifacts import bundle

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR = ROOT / "collector"
PROMTOOL = shutil.which("promtool")
LICENSE_TEXT = (ROOT / "LICENSE").read_text()


def _tree(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_collector_directory_is_what_the_package_writes(tmp_path: Path) -> None:
    """collector/ (README aside) is exactly `ryot-telemetry bundle -o DIR`: the package data and the generators are
    its one source. After editing src/ryot_telemetry/data/ or the catalogue: ryot-telemetry bundle -o collector."""
    bundle.write(bundle.files(), tmp_path)
    committed = {k: v for k, v in _tree(COLLECTOR).items() if k != "README.md"}
    assert sorted(committed) == sorted(_tree(tmp_path))
    stale = [name for name, text in _tree(tmp_path).items() if committed[name] != text]
    assert stale == [], "regenerate: ryot-telemetry bundle -o collector"


@dataclass
class Installed:
    venv: Path
    wheel: Path
    sdist: Path

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """``ryot-telemetry ARGS`` of the fresh venv, in ``cwd``, with nothing of the checkout on the path."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        exe = self.venv / "bin" / "ryot-telemetry"
        return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _copy_source(dest: Path) -> None:
    """What the sdist is built from: pyproject, README, LICENSE and src/, without caches or build leftovers."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))


def _ok(*cmd: str, cwd: Path | None = None, timeout: float = 300) -> None:
    """Run a set-up step; a failure shows the step's own output (a build error, an unreachable package index)."""
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-3000:]}{out.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The sdist built from a copy of the source, the wheel built from the unpacked sdist, and the wheel installed
    with its dependencies (from the package index, no extras) into a venv that never saw the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    _copy_source(root / "source")
    venv = root / "venv"
    _ok(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = str(venv / "bin" / "python")
    pip = (sys.executable, "-m", "pip", "--python", python, "install", "-q", "--disable-pip-version-check")
    _ok(*pip, "setuptools>=77", "wheel")
    build = "import sys; from setuptools import build_meta as b; getattr(b, sys.argv[1])(sys.argv[2])"
    dist = root / "dist"
    _ok(python, "-c", build, "build_sdist", str(dist), cwd=root / "source")
    (sdist,) = dist.glob("ryot_telemetry-*.tar.gz")
    with tarfile.open(sdist) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # 3.10.12+ / 3.11.4+
        tar.extractall(root / "unpacked", **safe)  # our own sdist
    (unpacked,) = (root / "unpacked").iterdir()
    _ok(python, "-c", build, "build_wheel", str(dist), cwd=unpacked)
    (wheel,) = dist.glob("ryot_telemetry-*.whl")
    _ok(*pip, str(wheel), timeout=600)
    return Installed(venv, wheel, sdist)


def test_wheel_and_sdist_carry_the_license_and_the_data(installed: Installed) -> None:
    """LICENSE (the Apache-2.0 text) is in the sdist and in the wheel's dist-info, the wheel holds every shipped data
    file, and its metadata has the license, the yaml extra, classifiers and authors, and no project URL."""
    with tarfile.open(installed.sdist) as tar:
        (member,) = [m for m in tar.getmembers() if m.name.endswith("/LICENSE")]
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read().decode() == LICENSE_TEXT
    with zipfile.ZipFile(installed.wheel) as whl:
        names = whl.namelist()
        (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert whl.read(license_file).decode() == LICENSE_TEXT
        data = sorted(n.removeprefix("ryot_telemetry/data/") for n in names if n.startswith("ryot_telemetry/data/"))
        metadata = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert data == [
        "otelcol-config.yaml",
        "prometheus.yml",
        "rules/ryot_alerts.yml",
        "rules/ryot_recording_rules.yml",
        "rules/tests/ryot_alerts_test.yml",
        "rules/tests/ryot_budget_rules_test.yml",
        "rules/tests/ryot_provider_rules_test.yml",
        "rules/tests/ryot_recording_rules_test.yml",
        "rules/tests/ryot_slo_rules_test.yml",
    ]
    lines = metadata.splitlines()
    assert "License-Expression: Apache-2.0" in lines and "License-File: LICENSE" in lines
    assert "Provides-Extra: yaml" in lines and 'Requires-Dist: pyyaml<7,>=6; extra == "yaml"' in lines
    assert "Classifier: Framework :: OpenTelemetry :: Instrumentations" in lines
    # No project URLs until the repository's public address is known: an invented one would ship in every upload.
    assert [line for line in lines if line.startswith(("Project-URL: ", "Home-page: "))] == []
    assert any(line.startswith("Author: The ryot-telemetry maintainers") for line in lines)


def test_the_installed_package_is_not_the_checkout(installed: Installed, tmp_path: Path) -> None:
    """The venv imports ryot_telemetry from its own site-packages, and has no PyYAML (no extra was asked for), so
    what follows runs on the wheel's files and its declared dependencies alone."""
    probe = "import importlib.util, ryot_telemetry; print(ryot_telemetry.__file__, importlib.util.find_spec('yaml'))"
    out = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    where, yaml_spec = out.stdout.split()
    assert Path(where).is_relative_to(installed.venv) and not Path(where).is_relative_to(ROOT)
    assert yaml_spec == "None"


def test_every_subcommand_from_an_empty_directory(installed: Installed, tmp_path: Path) -> None:
    """From an empty directory, each file-writing subcommand writes what the repository's collector/ holds, to
    stdout or to --output, without PyYAML (which only --rules files need, and say so), and the demo runs."""
    committed = _tree(COLLECTOR)
    expected_stdout = {
        ("prometheus-config",): committed["prometheus.yml"],
        ("collector-config",): committed["otelcol-config.yaml"],
        ("dashboard",): committed["grafana/ryot-dashboard.json"],
        ("slo-rules",): committed["rules/ryot_slo_rules.yml"],
        ("k8s",): committed["k8s/podmonitor.yaml"],
        ("k8s", "--kind", "PrometheusRule"): committed["k8s/prometheusrule.yaml"],
    }
    for args, text in expected_stdout.items():
        out = installed.run(*args, cwd=tmp_path)
        assert (out.returncode, out.stderr, out.stdout == text) == (0, "", True), args
    for args, name in [
        (("prometheus-config", "-o", "p.yml"), "prometheus.yml"),
        (("collector-config", "-o", "c.yaml"), "otelcol-config.yaml"),
        (("dashboard", "-o", "d.json"), "grafana/ryot-dashboard.json"),
    ]:
        assert installed.run(*args, cwd=tmp_path).returncode == 0
        assert (tmp_path / args[-1]).read_text() == committed[name]
    assert installed.run("bundle", "-o", "all", cwd=tmp_path).returncode == 0
    assert _tree(tmp_path / "all") == {k: v for k, v in committed.items() if k != "README.md"}
    assert installed.run("k8s", "-o", "k8s", cwd=tmp_path).returncode == 0
    assert _tree(tmp_path / "k8s") == {k.removeprefix("k8s/"): v for k, v in committed.items() if k.startswith("k8s/")}
    (tmp_path / "mine.yml").write_text("groups: []\n")
    no_yaml = installed.run("k8s", "--rules", "mine.yml", cwd=tmp_path)
    assert (no_yaml.returncode, no_yaml.stdout, no_yaml.stderr) == (
        2,
        "",
        "ryot-telemetry k8s: --rules 'mine.yml': reading rule files needs PyYAML: pip install 'ryot-telemetry[yaml]'\n",
    )
    table = installed.run("metrics-table", cwd=tmp_path)
    assert table.returncode == 0 and table.stdout.startswith("| Prometheus name | OTel instrument |")
    demo = installed.run(
        "demo", "--requests", "5", "--speed", "0", "--exporters", "none", "--no-progress", cwd=tmp_path
    )
    assert demo.returncode == 0 and "  requests        5  " in demo.stdout, demo.stderr
    json.loads((tmp_path / "d.json").read_text())


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (scripts/setup.d/prometheus.sh)")
def test_installed_rules_pass_promtool(installed: Installed, tmp_path: Path) -> None:
    """The installed package's rules, as three files under the Prometheus config that loads them, as one file, and
    inside the PrometheusRule, all pass promtool."""
    assert installed.run("rules", "-o", "setup/rules", cwd=tmp_path).returncode == 0
    assert installed.run("prometheus-config", "-o", "setup/prometheus.yml", cwd=tmp_path).returncode == 0
    config = subprocess.run([PROMTOOL, "check", "config", "setup/prometheus.yml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS: 3 rule files found" in config.stdout and "SUCCESS: 18 rules found" in config.stdout
    # their promtool unit tests are written beside them; test_rules.py runs them on the same bytes (collector/)
    assert sorted(p.name for p in (tmp_path / "setup" / "rules" / "tests").iterdir()) == [
        "ryot_alerts_test.yml",
        "ryot_budget_rules_test.yml",
        "ryot_provider_rules_test.yml",
        "ryot_recording_rules_test.yml",
        "ryot_slo_rules_test.yml",
    ]
    one = installed.run("rules", cwd=tmp_path)
    (tmp_path / "one.yml").write_text(one.stdout)
    rule = installed.run("k8s", "--kind", "PrometheusRule", cwd=tmp_path)
    spec = yaml.safe_load(rule.stdout)["spec"]
    (tmp_path / "spec.yml").write_text(yaml.safe_dump({"groups": spec["groups"]}, sort_keys=False))
    for name in ("one.yml", "spec.yml"):
        check = subprocess.run([PROMTOOL, "check", "rules", name], cwd=tmp_path, capture_output=True, text=True,
                               timeout=60)  # fmt: skip
        assert check.returncode == 0 and "SUCCESS: 45 rules found" in check.stdout, check.stdout + check.stderr


def test_the_wheel_resolves_with_every_dependency_at_its_floor(installed: Installed, tmp_path: Path) -> None:
    """`pip install --dry-run` of the built wheel, with every user extra, every dependency pinned to the floor
    pyproject declares (scripts/floors.py), resolves: the declared floors are installable together."""
    floors = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "floors.py")], capture_output=True, text=True, timeout=60
    )
    extras = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "floors.py"), "--extras"], capture_output=True, text=True, timeout=60
    )
    assert floors.returncode == 0 and extras.returncode == 0, floors.stderr + extras.stderr
    pins = [line for line in floors.stdout.splitlines() if line and not line.startswith("#")]
    assert any(line.startswith("opentelemetry-sdk==") for line in pins)
    constraints = tmp_path / "floors.txt"
    constraints.write_text(floors.stdout)
    python = str(installed.venv / "bin" / "python")
    _ok(
        *(sys.executable, "-m", "pip", "--python", python, "install", "--dry-run", "--ignore-installed", "-q"),
        *("--disable-pip-version-check", "-c", str(constraints), f"{installed.wheel}[{extras.stdout.strip()}]"),
        timeout=600,
    )
