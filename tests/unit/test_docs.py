"""The docs site matches the code: generated tables are current, every page is in the nav, README stays short."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Any

import yaml

import ryot_telemetry
from ryot_telemetry import env
from ryot_telemetry.artifacts import docs as _docs
from ryot_telemetry.catalogue import CATALOGUE, markdown_table

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")


def page(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def nav_pages(nav: Any) -> list[str]:
    """Every page a mkdocs nav names, depth first."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in nav_pages(value)]
    return []


class _MkdocsLoader(yaml.SafeLoader):
    """mkdocs.yml names a Python function (the mermaid fence's formatter): read such a tag as its name."""


_MkdocsLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix)


def mkdocs_config() -> dict[str, Any]:
    return yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_MkdocsLoader)


def _charts() -> Any:
    spec = importlib.util.spec_from_file_location("bench_charts", ROOT / "benchmarks" / "charts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_charts_are_drawn_from_the_committed_json() -> None:
    """docs/charts/*.svg name the SHA-256 of the JSON and generator they were drawn from, and it is the current one
    (python scripts/gen_docs.py redraws a stale chart)."""
    charts = _charts()
    assert sorted(charts.CHARTS) == ["docs/charts/performance.svg", "docs/charts/scale.svg"]
    assert charts.stale(ROOT) == []


def test_stale_finds_a_chart_whose_json_changed(tmp_path: Path) -> None:
    """A changed benchmark JSON, a chart without its source line and a missing chart are stale; the rest is not."""
    charts = _charts()
    for chart, source in charts.CHARTS.items():
        for name in (chart, source):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    assert charts.stale(tmp_path) == []
    scale = tmp_path / "docs" / "scale.json"
    scale.write_text(scale.read_text(encoding="utf-8").replace('"cpus": 2', '"cpus": 3', 1), encoding="utf-8")
    assert charts.stale(tmp_path) == ["docs/charts/scale.svg"]
    svg = tmp_path / "docs" / "charts" / "performance.svg"
    svg.write_text(re.sub(r"ryot-chart-source sha256:\w+", "", svg.read_text(encoding="utf-8")), encoding="utf-8")
    assert charts.stale(tmp_path) == ["docs/charts/performance.svg", "docs/charts/scale.svg"]
    svg.unlink()
    assert charts.stale(tmp_path) == ["docs/charts/performance.svg", "docs/charts/scale.svg"]


def test_charts_redraw_byte_for_byte_with_the_committed_matplotlib() -> None:
    """With the matplotlib version that drew them, the committed SVGs are exactly what the generator draws now
    (another version may lay text out differently, so this runs only with the same one)."""
    matplotlib = __import__("pytest").importorskip("matplotlib")
    charts = _charts()
    for chart in charts.CHARTS:
        committed = page(chart)
        drawn_with = re.search(r"Matplotlib v([\w.]+),", committed)
        assert drawn_with is not None, chart
        if drawn_with.group(1) != matplotlib.__version__:
            __import__("pytest").skip(f"{chart} was drawn with matplotlib {drawn_with.group(1)}, not this one")
        assert charts.render(ROOT, chart) == committed, chart


def test_pages_show_the_charts_and_the_diagram() -> None:
    """The performance and scale pages embed their chart; the architecture page and the home page draw the data
    path as a mermaid diagram, which mkdocs.yml's superfences fence renders."""
    assert "](charts/performance.svg)" in page("docs/performance.md")
    assert "](../charts/scale.svg)" in page("docs/guides/scale.md")
    for name in ("docs/design/architecture.md", "docs/index.md"):
        assert page(name).count("```mermaid\nflowchart TB\n") == 1, name
    extensions = mkdocs_config()["markdown_extensions"]
    fences = next(e["pymdownx.superfences"] for e in extensions if isinstance(e, dict) and "pymdownx.superfences" in e)
    assert fences["custom_fences"] == [
        {"name": "mermaid", "class": "mermaid", "format": "pymdownx.superfences.fence_code_format"}
    ]
    assert mkdocs_config()["hooks"] == ["scripts/mkdocs_hooks.py"]


def test_generated_tables_are_current() -> None:
    """Each page's generated sections are exactly what the generator makes now (python scripts/gen_docs.py)."""
    stale = [
        f"{name}: {marker}"
        for name, markers in _docs.PAGES.items()
        for marker in markers
        if _docs.section(page(name), marker) != _docs.SECTIONS[marker](ROOT)
    ]
    assert stale == []


def test_metric_table_is_generated_from_catalogue() -> None:
    """The metrics page holds the catalogue's table, naming every metric."""
    text = page("docs/reference/metrics.md")
    assert _docs.section(text, "METRICS TABLE") == markdown_table()
    assert [m.prometheus_name for m in CATALOGUE if f"`{m.prometheus_name}`" not in text] == []


def test_configuration_table_lists_every_env_variable() -> None:
    """Every RYOT_TELEMETRY_* constant in env.py is on the configuration page, with its docstring."""
    assert _docs.section(page("docs/reference/configuration.md"), "CONFIG TABLE") == _docs.configuration_table()
    names = [n for n in vars(env) if n.startswith("RYOT_TELEMETRY_")]
    assert sorted(n for n, _ in _docs.env_variables()) == sorted(names)


def test_performance_table_is_generated_from_benchmark_json() -> None:
    """The performance page's table has one row per record of the committed benchmark JSON, missed goals marked."""
    doc = {
        "machine": {
            "python": "3.11.7",
            "implementation": "CPython",
            "platform": "Linux",
            "cpus": 2,
            "load_average": [4.93, 7.5],
            "quick": True,
            "opentelemetry_sdk": "1.45.2",
            "prometheus_client": "0.26.0",
        },
        "records": [
            {"name": "a / b", "value": 2.3, "unit": "ratio", "goal": "<= 2.2", "met": False, "note": "MISSED"},
            {"name": "per chunk", "value": 77.0, "unit": "ns", "goal": None, "met": None, "note": "__exit__ | x"},
        ],
    }
    assert _docs.performance_table(doc).splitlines() == [
        "Python 3.11.7 (CPython), 2 CPUs (load average 4.93 over 1 min, 7.5 over 15 min), Linux; "
        "opentelemetry-sdk 1.45.2, prometheus_client 0.26.0; `--quick` run.",
        "",
        "| measure | result (a ratio unless a unit is given) | goal | note |",
        "|---|---|---|---|",
        "| a / b | 2.30 | <= 2.2 — **missed** |  |",
        "| per chunk | 77 ns |  | \\_\\_exit\\_\\_ \\| x |",
    ]


def test_scale_tables_are_generated_from_the_curves() -> None:
    """One table per axis (a row per size, a column per curve, its peer and ratio where one exists, goals marked),
    then the growth per doubling between sizes, ours and the peer's."""
    machine = {
        "python": "3.11.7",
        "implementation": "CPython",
        "platform": "Linux",
        "cpus": 2,
        "load_average": [3.0, 4.5],
        "quick": False,
        "opentelemetry_sdk": "1.45.2",
        "prometheus_client": "0.26.0",
    }

    def point(axis: str, size: int, curve: str, value: float, baseline: float | None, **more: Any) -> dict[str, Any]:
        peer = "prometheus_client" if baseline is not None else None
        ratio = value / baseline if baseline else None
        return {
            "axis": axis,
            "size": size,
            "curve": curve,
            "value": value,
            "unit": "ms",
            "baseline": peer,
            "baseline_value": baseline,
            "ratio": ratio,
            "goal": None,
            "met": None,
            **more,
        }

    curves = [
        point("models", 10, "scrape", 50.0, 40.0, noise=0.04),
        point("models", 10, "hand-off", 6.0, None),
        point("models", 1000, "scrape", 5000.0, 4000.0, goal="<= 1.5", met=True),
        point("models", 1000, "hand-off", 900.0, None),
        point("trial", 1, "scrapes after its zero", 1, None, goal="<= 1", met=True, unit="scrapes"),
    ]
    assert _docs.scale_tables({"machine": machine, "curves": curves}).splitlines() == [
        "Python 3.11.7 (CPython), 2 CPUs (load average 3 over 1 min, 4.5 over 15 min), Linux; "
        "opentelemetry-sdk 1.45.2, prometheus_client 0.26.0; full run. Noise of the rounds (interquartile range over "
        "the median): median 0.04, at most 0.04.",
        "",
        "| models | scrape (ms) | prometheus\\_client (ms) | ratio | hand-off (ms) |",
        "|---|---|---|---|---|",
        "| 10 | 50 | 40 | 1.25 | 6 |",
        "| 1,000 | 5,000 | 4,000 | 1.25 (<= 1.5 — met) | 900 |",
        "",
        "| growth per doubling of models | scrape | prometheus\\_client | hand-off |",
        "|---|---|---|---|",
        "| 10 → 1,000 | 2.00 | 2.00 | 2.13 |",
        "",
        "| trial | scrapes after its zero (scrapes) |",
        "|---|---|",
        "| 1 | 1 (<= 1 — met) |",
    ]


def test_benchmark_rows_become_json_records() -> None:
    """``python -m benchmarks --json`` turns each summary row into a record with number, unit, baseline and goal."""
    spec = importlib.util.spec_from_file_location("bench_results", ROOT / "benchmarks" / "results.py")
    assert spec is not None and spec.loader is not None
    results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results)
    assert results.record(("total / prometheus_client overhead", "2.30", "<= 2.2", "MISSED")) == {
        "name": "total / prometheus_client overhead",
        "value": 2.3,
        "unit": "ratio",
        "baseline": "prometheus_client overhead",
        "ratio": 2.3,
        "goal": "<= 2.2",
        "met": False,
        "note": "MISSED",
    }
    assert results.record(("stream wrapper overhead per chunk", "77 ns", "<= 150 ns", "met")) == {
        "name": "stream wrapper overhead per chunk",
        "value": 77.0,
        "unit": "ns",
        "baseline": None,
        "ratio": None,
        "goal": "<= 150 ns",
        "met": True,
        "note": "met",
    }
    assert results.record(("scrape / prometheus_client", "1.13x", "", ""))["ratio"] == 1.13


def test_every_docs_page_is_in_the_nav() -> None:
    """mkdocs.yml's nav names every page under docs/, and only pages that exist."""
    config = mkdocs_config()
    listed = nav_pages(config["nav"])
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(listed) == on_disk
    assert len(listed) == len(set(listed))


def test_api_reference_documents_the_public_api() -> None:
    """docs/reference/api.md renders every name of ryot_telemetry.__all__, one ``:::`` block each, and no other."""
    documented = re.findall(r"^::: ryot_telemetry\.(\w+)$", page("docs/reference/api.md"), flags=re.M)
    assert sorted(documented) == sorted(ryot_telemetry.__all__)


def test_readme_is_short_and_names_the_two_commands() -> None:
    """README stays at most 12 KB, names the demo and test commands, and .ci/run runs that same test command."""
    assert len(README.encode("utf-8")) <= 12 * 1024
    assert "bash scripts/demo.sh" in README and "bash scripts/test.sh" in README
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_links_from_the_repository_documents_resolve() -> None:
    """Relative links in README, CONTRIBUTING, CHANGELOG and collector/README point at files that exist."""
    broken = []
    for name in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md", "collector/README.md"):
        source = ROOT / name
        for target in re.findall(r"\]\(([^)\s]+)\)", source.read_text(encoding="utf-8")):
            path = target.split("#", 1)[0]
            if path and not re.match(r"[a-z]+:", path) and not (source.parent / path).exists():
                broken.append(f"{name}: {target}")
    assert broken == []


def test_strict_docs_build_runs_in_the_test_command() -> None:
    """scripts/test.sh builds the site with --strict, so a broken link or a vanished API name fails CI."""
    script = page("scripts/test.sh")
    assert re.search(r"mkdocs build --strict", script)
    assert "site/" in page(".gitignore").splitlines()


def _test_functions(path: Path) -> set[str]:
    """The names of a test file's top-level test functions (what ``path::name`` addresses for pytest)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")
    }


def _citation_problems(text: str, root: Path) -> tuple[list[str], list[str]]:
    """(sections of a page citing no test, cited ``path::name`` that are not a test function of that file)."""
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    cited = {s.splitlines()[0]: re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", s) for s in sections}
    bare = [title for title, tests in cited.items() if not tests]
    missing = [
        f"{path}::{name}"
        for tests in cited.values()
        for path, name in tests
        if not (root / path).is_file() or name not in _test_functions(root / path)
    ]
    return bare, missing


def test_reliability_page_cites_only_tests_that_exist() -> None:
    """docs/guides/reliability.md names each promise with at least one test, and every ``tests/...py::test_name`` it
    cites is a test function of that file, so a renamed or deleted test fails here instead of leaving the page stale."""
    text = page("docs/guides/reliability.md")
    assert len(re.findall(r"^## ", text, flags=re.M)) >= 12
    assert _citation_problems(text, ROOT) == ([], [])


def test_citation_check_catches_missing_tests_files_and_bare_promises(tmp_path: Path) -> None:
    """A misspelt test, a file that does not exist and a promise without a test are each reported; an async test
    function and a plain one are found."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "def test_plain() -> None:\n    pass\n\n\nasync def test_async() -> None:\n    pass\n", encoding="utf-8"
    )
    text = (
        "# Page\n\n## Holds\n\n- `tests/test_a.py::test_plain`\n- `tests/test_a.py::test_async`\n\n"
        "## Broken\n\n- `tests/test_a.py::test_plian`\n- `tests/test_b.py::test_plain`\n\n## Bare\n\nNo test.\n"
    )
    assert _citation_problems(text, tmp_path) == (
        ["Bare"],
        ["tests/test_a.py::test_plian", "tests/test_b.py::test_plain"],
    )


def _pyproject() -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _documents() -> dict[str, str]:
    """The README, CONTRIBUTING and every docs page, by path."""
    names = ["README.md", "CONTRIBUTING.md", *(str(p.relative_to(ROOT)) for p in sorted(DOCS.rglob("*.md")))]
    return {name: page(name) for name in names}


def test_every_extra_the_docs_name_exists() -> None:
    """Each ``ryot-telemetry[extra,...]`` in the README and the docs names extras pyproject.toml declares, and the
    install story shows the base install first, then the user extras otlp-grpc, gpu and yaml, linking the install
    guide."""
    declared = set(_pyproject()["project"]["optional-dependencies"])
    named = {
        (name, extra.strip())
        for name, text in _documents().items()
        for extras in re.findall(r"ryot-telemetry\[([^\]]*)\]", text)
        for extra in extras.split(",")
    }
    assert [f"{name}: [{extra}]" for name, extra in sorted(named) if extra not in declared] == []
    for name, link in (
        ("README.md", "(docs/guides/install.md)"),
        ("docs/index.md", "(guides/install.md)"),
        ("docs/getting-started.md", "(guides/install.md)"),
    ):
        text = page(name)
        installs = re.findall(r"^pip install '?(ryot-telemetry(?:\[[\w-]+\])?)'?", text, flags=re.M)
        assert installs[:4] == [
            "ryot-telemetry",
            "ryot-telemetry[otlp-grpc]",
            "ryot-telemetry[gpu]",
            "ryot-telemetry[yaml]",
        ], name
        assert link in text, name


def _module_map_problems(section: str, package: Path) -> tuple[list[str], list[str]]:
    """(modules of ``package`` the module map does not name, files the map names that do not exist).

    A top-level module is named in a row's first cell (`` `telemetry.py` ``); a module of a room (``recording/``)
    in the row whose first cell is that room, or by its whole path. A room's ``__init__.py`` only marks the room."""
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    top = set(re.findall(r"`([\w.]+\.py)`", " ".join(cell for cell, _ in rows)))
    rooms = {
        cell.strip("` "): set(re.findall(r"`([\w.]+\.py)`", rest)) for cell, rest in rows if cell.strip().endswith("/`")
    }
    modules = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "__pycache__" not in p.parts)

    def named(module: str) -> bool:
        if "/" not in module:
            return module in top
        room, name = module.rsplit("/", 1)
        return name == "__init__.py" or f"`{module}`" in section or name in rooms.get(f"{room}/", set())

    unnamed = [m for m in modules if not named(m)]
    invented = sorted(
        [name for name in top if not (package / name).is_file()]
        + [f"{room}{name}" for room, names in rooms.items() for name in names if not (package / room / name).is_file()]
    )
    return unnamed, invented


def test_architecture_module_map_names_every_module() -> None:
    """docs/design/architecture.md's module map names every module under src/ryot_telemetry, and only modules that
    exist, so a new module cannot go unmapped and a removed one cannot stay on the page."""
    text = page("docs/design/architecture.md")
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    assert _module_map_problems(section, ROOT / "src" / "ryot_telemetry") == ([], [])


def test_module_map_check_finds_unnamed_and_invented_modules(tmp_path: Path) -> None:
    """A module no row names and a row naming a file that does not exist are both reported; a room's __init__.py and
    modules named in their room's row are not."""
    for name in ("__init__.py", "top.py", "lost.py", "room/__init__.py", "room/a.py", "room/b.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("", encoding="utf-8")
    section = (
        "| module | role |\n|---|---|\n| `__init__.py`, `top.py` | x |\n"
        "| `room/` | `a.py` (one), `gone.py` (none) |\n| `ghost.py` | y |\n"
    )
    assert _module_map_problems(section, tmp_path) == (["lost.py", "room/b.py"], ["ghost.py", "room/gone.py"])


def test_readme_links_every_page_of_the_nav() -> None:
    """The README's documentation table reaches every page of the site's nav (and so every guide), by a link to it."""
    linked = {target.split("#", 1)[0] for target in re.findall(r"\]\(docs/([^)\s]+)\)", README)}
    assert [p for p in nav_pages(mkdocs_config()["nav"]) if p not in linked] == []
