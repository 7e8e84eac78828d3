"""The package's shape: no import cycles, process-wide state in one module, private third-party names in one."""

from __future__ import annotations

import ast
from pathlib import Path

import ryot_telemetry

PACKAGE = Path(ryot_telemetry.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    name = _module_name(path)
    return _imports_in(path.read_text(), name, name if path.name == "__init__.py" else name.rpartition(".")[0], modules)


def _imports_in(source: str, name: str, package: str, modules: set[str]) -> set[str]:
    """ryot_telemetry modules ``source`` imports anywhere: functions and ``if TYPE_CHECKING:`` blocks included (a
    type-level cycle is still a cycle of knowledge: the lower layer would know the upper one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            if base in modules:
                found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    # "from . import x" inside the package names the package itself plus x; the package's own __init__ only
    # re-exports, so edges into it are left out (every module would otherwise "import" the package). Likewise a
    # subpackage's __init__ holds only its docstring.
    packages = {_module_name(p) for p in paths if p.name == "__init__.py"}
    return {_module_name(p): _imports(p, modules) - packages for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def test_import_graph_has_no_cycle() -> None:
    """No ryot_telemetry module imports, directly or through others, a module that imports it back."""
    graph = import_graph()
    assert graph.get("ryot_telemetry.telemetry")
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def _layer_imports(layer: str) -> dict[str, set[str]]:
    """For each module of ``layer`` (a module or subpackage name under ryot_telemetry), what it imports."""
    prefix = f"ryot_telemetry.{layer}"
    return {m: deps for m, deps in import_graph().items() if m == prefix or m.startswith(prefix + ".")}


def _reaching(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{m} -> {d}"
        for m, deps in _layer_imports(layer).items()
        for d in deps
        if any(d == f"ryot_telemetry.{f}" or d.startswith(f"ryot_telemetry.{f}.") for f in forbidden)
    )


def test_layers_import_only_downwards() -> None:
    """recording knows nothing of export, multi-process mode, the router or the assembly on top; settings (and its
    loaders in config/) and the catalogue know nothing of recording; the export side and the sources outside the
    request path (GPU, engine) know nothing of multi-process mode or the router."""
    top = ("telemetry", "testing", "cli", "demo", "artifacts")
    assert _reaching("recording", ("export", "multiproc", "router", "sources", *top)) == []
    assert _reaching("settings", ("recording", "export", "multiproc", "router", "sources", *top)) == []
    assert _reaching("config", ("settings", "recording", "export", "multiproc", "router", "sources", *top)) == []
    assert _reaching("catalogue", ("recording", "export", "multiproc", "router", "sources", "settings", *top)) == []
    assert _reaching("export", ("multiproc", "router", *top)) == []
    assert _reaching("sources", ("export", "multiproc", "router", *top)) == []
    assert {"ryot_telemetry.sources.gpu", "ryot_telemetry.sources.engine"} <= set(_layer_imports("sources"))
    assert _reaching("multiproc", ("router", *top)) == []


def test_recording_rooms_import_downwards_request_measure_drain() -> None:
    """Inside recording: provider reading knows no request, the request no measurement or drain, the measurement
    no drain (request -> measure -> drain -> export); the hot path (router.wrapper) knows nothing of the assembly,
    and no module outside recording.recorder reaches a private name of the recording rooms."""
    rooms = ("provider", "request", "measure", "recorder")
    for i, room in enumerate(rooms):
        above = tuple(f"recording.{r}" for r in rooms[i + 1 :])
        assert _reaching(f"recording.{room}", above) == [], room
    assert _reaching("router.wrapper", ("export", "multiproc", "telemetry")) == []
    private = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith(rooms):
                private += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []


def _lines_besides_data(path: Path) -> int:
    """Lines of ``path``; for the catalogue, those outside its data (the ``CATALOGUE`` tuple of entries)."""
    source = path.read_text()
    total = len(source.splitlines())
    if path != PACKAGE / "catalogue.py":
        return total
    (data,) = (
        n for n in ast.parse(source).body if isinstance(n, ast.AnnAssign) and ast.unparse(n.target) == "CATALOGUE"
    )
    assert data.end_lineno is not None
    return total - (data.end_lineno - data.lineno + 1)


def test_no_module_over_700_lines() -> None:
    """Every room stays readable in one sitting: no module of the package over 700 lines, the catalogue's table of
    entries aside (it is data, one entry per metric)."""
    long = {
        str(p.relative_to(PACKAGE)): n for p in sorted(PACKAGE.rglob("*.py")) if (n := _lines_besides_data(p)) > 700
    }
    assert long == {}
    assert 0 < _lines_besides_data(PACKAGE / "catalogue.py") < len((PACKAGE / "catalogue.py").read_text().splitlines())


def test_import_graph_sees_type_checking_and_function_imports() -> None:
    """An import under ``if TYPE_CHECKING:`` or inside a function counts as an edge of the graph."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..telemetry import Telemetry\n"
        "def f():\n    from ..export import assembly\n"
    )
    modules = {"ryot_telemetry.telemetry", "ryot_telemetry.export", "ryot_telemetry.export.assembly"}
    found = _imports_in(source, "ryot_telemetry.recording.x", "ryot_telemetry.recording", modules)
    assert found == modules


def test_top_level_has_at_most_16_modules() -> None:
    """The package's top level holds the public modules and the few shared internals; the rest live in rooms."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 16, top


def test_public_api_has_at_most_18_names() -> None:
    """``__all__`` is the documented API, and every name in it resolves."""
    assert len(ryot_telemetry.__all__) <= 18
    for name in ryot_telemetry.__all__:
        assert getattr(ryot_telemetry, name) is not None


def test_public_api_names_resolve_without_a_warning() -> None:
    """Importing the package and reading every ``__all__`` name (``EngineMetrics`` and ``GpuGauges`` included, whose
    old module paths are deprecated) raises no DeprecationWarning in a fresh process."""
    import subprocess
    import sys

    code = "import ryot_telemetry as t; print(sorted(n for n in t.__all__ if getattr(t, n) is not None))"
    out = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert (out.returncode, out.stdout.strip()) == (0, str(sorted(ryot_telemetry.__all__))), out.stderr
    assert ryot_telemetry.EngineMetrics.__module__ == "ryot_telemetry.sources.engine"


def test_removed_top_level_names_warn_and_still_work() -> None:
    """Each name cut from the top-level API resolves to the same object as at its new home, with a
    DeprecationWarning naming that module; an unknown name is still an AttributeError."""
    import importlib
    import warnings

    moved = ryot_telemetry._MOVED
    assert set(moved) == {
        "CATALOGUE", "METER_NAME", "MetricSpec", "OVERFLOW", "UNADMITTED", "batch_size_label", "prompt_size_label",
        "SEVERITY", "classify", "create_instrument", "default_recorder", "package_version", "traced_call", "Price",
        "Slo",
    }  # fmt: skip
    for name, (module, attr) in moved.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = getattr(ryot_telemetry, name)
        assert value is getattr(importlib.import_module(module), attr)
        assert [w.category for w in caught] == [DeprecationWarning]
        assert f"import it from {module}" in str(caught[0].message)
        assert name not in ryot_telemetry.__all__
    try:
        ryot_telemetry.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("an unknown name resolved")


def test_cycle_finder_finds_a_cycle() -> None:
    """The checker itself reports a cycle when there is one."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_process_wide_state_lives_in_one_module() -> None:
    """Only _state.py assigns module globals at run time (a ``global`` statement)."""
    users = sorted(
        _module_name(p)
        for p in PACKAGE.rglob("*.py")
        if any(isinstance(n, ast.Global) for n in ast.walk(ast.parse(p.read_text())))
    )
    assert users == ["ryot_telemetry._state"]


def test_private_third_party_names_are_imported_only_by_compat() -> None:
    """``from opentelemetry...._x import`` or ``import _x`` of another package appears only in _compat.py."""
    offenders = []
    for p in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module and node.module != "__future__":
                private = any(part.startswith("_") for part in node.module.split(".")) or any(
                    a.name.startswith("_") for a in node.names
                )
                if private and p.name != "_compat.py":
                    offenders.append(f"{p.name}: {node.module}")
    assert offenders == []


def test_plain_import_does_not_load_the_sdk_configurator() -> None:
    """``import ryot_telemetry`` leaves the SDK's configurator (and the trace/log SDKs it pulls in) to the distro."""
    import subprocess
    import sys

    code = "import sys, ryot_telemetry; print('opentelemetry.sdk._configuration' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, "False"), out.stderr


def test_bucketed_label_values_are_the_catalogue_vocabularies() -> None:
    """batch_size_label and prompt_size_label produce exactly the values the catalogue declares, in order."""
    from ryot_telemetry.catalogue import get
    from ryot_telemetry.recording.labels import batch_size_label, prompt_size_label

    batch = list(dict.fromkeys(batch_size_label(n) for n in range(0, 100)))
    sizes = list(dict.fromkeys(prompt_size_label(n) for n in (0, 49, 50, 499, 500, 1999, 2000, 9999, 10000)))
    assert tuple(batch) == get("ryot.inference.latency").label_values["batch_size"]
    assert tuple(sizes) == get("ryot.ttft.latency").label_values["prompt_size"]


def test_no_prometheus_family_name_is_spelled_outside_the_catalogue() -> None:
    """A Prometheus family name (``ryot_slo_requests_total``, ``..._bucket``) is derived from the catalogue's entry,
    never written as a string of its own in code (prose in messages and docstrings aside): a changed unit or name
    then changes every rule and query with it."""
    from ryot_telemetry.catalogue import CATALOGUE

    families = {m.prometheus_name + s for m in CATALOGUE for s in ("", "_bucket", "_count", "_sum")}
    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "catalogue.py":
            continue
        tree = ast.parse(path.read_text())
        prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        spelled += [
            f"{path.name}:{n.lineno}: {n.value}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and n.value in families and id(n) not in prose
        ]
    assert spelled == []
    assert "ryot_slo_requests_total" in families  # the check looks for what the exporter really exposes


def test_benchmarks_have_no_import_cycle() -> None:
    """The benchmark sections take their fixtures from ``benchmarks/common.py`` and are registered in ``run.py``: no
    module of ``benchmarks/`` imports, directly or through others, one that imports it back, and ``common`` imports
    no section."""
    root = PACKAGE.parent.parent / "benchmarks"
    paths = sorted(root.glob("*.py"))
    modules = {f"benchmarks.{p.stem}" for p in paths} | {"benchmarks"}
    graph = {
        f"benchmarks.{p.stem}": _imports_in(p.read_text(), f"benchmarks.{p.stem}", "benchmarks", modules)
        - {"benchmarks"}
        for p in paths
    }
    assert graph["benchmarks.scale"] >= {"benchmarks.common"}  # the graph sees the sections' imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
    assert graph["benchmarks.common"] == set()


def _port_helpers(source: str) -> list[str]:
    """Functions of ``source`` that bind a socket to port 0 and return the port the OS picked."""

    def picks(fn: ast.AST) -> bool:
        binds = any(
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr == "bind"
            and n.args
            and isinstance(n.args[0], ast.Tuple)
            and ast.unparse(n.args[0].elts[-1]) == "0"
            for n in ast.walk(fn)
        )
        returns = any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(fn))
        return binds and returns and "getsockname" in ast.unparse(fn)

    tree = ast.parse(source)
    return [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and picks(n)]


def test_the_free_port_helper_is_defined_once() -> None:
    """The tests pick a free loopback port through ``support.ports.free_port`` only: no other function in tests/
    binds port 0 and returns the port."""
    tests = PACKAGE.parent.parent / "tests"
    found = sorted(
        f"{p.relative_to(tests)}:{name}" for p in tests.rglob("*.py") for name in _port_helpers(p.read_text())
    )
    assert found == ["support/ports.py:free_port"]
    copy = "import socket\ndef _free_port():\n    with socket.socket() as s:\n        s.bind(('127.0.0.1', 0))\n"
    assert _port_helpers(copy + "        return s.getsockname()[1]\n") == ["_free_port"]  # the check sees a copy
    closed = "def _closed_port():\n    s = socket.socket()\n    s.bind(('127.0.0.1', 0))\n"
    closed += "    port = s.getsockname()[1]\n    s.close()\n    return port\n"
    assert _port_helpers(closed) == ["_closed_port"]


def _poll_loops(source: str) -> list[str]:
    """Functions of ``source`` with a ``while`` loop that sleeps: a poll loop of their own (nested functions apart)."""

    def sleeps_in_a_while(fn: ast.AST) -> bool:
        return any(isinstance(w, ast.While) and "sleep(" in ast.unparse(w) for w in ast.walk(fn))

    funcs = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return [
        f.name
        for f in funcs
        if sleeps_in_a_while(f) and not any(g is not f and g in funcs and sleeps_in_a_while(g) for g in ast.walk(f))
    ]


def test_tests_wait_only_through_support_polling() -> None:
    """A test waits for a condition with ``support.polling.until`` and samples over a while with ``during``: no other
    function in tests/ sleeps in a loop of its own."""
    tests = PACKAGE.parent.parent / "tests"
    found = sorted(f"{p.relative_to(tests)}:{name}" for p in tests.rglob("*.py") for name in _poll_loops(p.read_text()))
    assert found == ["support/polling.py:during", "support/polling.py:until"]
    copy = "import time\ndef _wait(ok):\n    while not ok():\n        time.sleep(0.1)\n"
    assert _poll_loops(copy) == ["_wait"]  # the check sees a copy
    assert _poll_loops("def f():\n    def g():\n        while 1:\n            sleep(1)\n") == ["g"]
