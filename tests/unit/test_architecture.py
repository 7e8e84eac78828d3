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


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str]) -> set[str]:
    """ryot_telemetry modules ``path`` imports anywhere (functions too), except under ``if TYPE_CHECKING:``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
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
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    # "from . import x" inside the package names the package itself plus x; the package's own __init__ only
    # re-exports, so edges into it are left out (every module would otherwise "import" the package).
    return {_module_name(p): _imports(p, modules) - {"ryot_telemetry"} for p in paths}


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
    from ryot_telemetry import batch_size_label, prompt_size_label
    from ryot_telemetry.catalogue import get

    batch = list(dict.fromkeys(batch_size_label(n) for n in range(0, 100)))
    sizes = list(dict.fromkeys(prompt_size_label(n) for n in (0, 49, 50, 499, 500, 1999, 2000, 9999, 10000)))
    assert tuple(batch) == get("ryot.inference.latency").label_values["batch_size"]
    assert tuple(sizes) == get("ryot.ttft.latency").label_values["prompt_size"]
