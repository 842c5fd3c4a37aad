"""The layering rules of docs/architecture.md, checked on the source (no import is executed):

* `detector` (the model) imports neither `train` nor `streamer`;
* `train` does not import `streamer`;
* the service (`detector`, `train`, `streamer`: what the wheel ships) never imports the tools
  wing `vigil_tools` (benchmarks, soak, demo and the test harness: the outside view of the
  service, kept in the checkout and out of the wheel; `vigil` finds their verbs by name);
* no import cycle between modules;
* the alert client (`streamer.subscriber`) reaches no server code, only `streamer.protocol`.

Every `import` counts, at module level or inside a function: a function-level import still
makes one module depend on the other, it only delays the failure.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = "vigil_tools"
PACKAGES = ("detector", "train", "streamer", TOOLS)
# Upward imports: package -> packages it must not import.
FORBIDDEN = {"detector": ("train", "streamer"), "train": ("streamer",)}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def import_graph() -> dict[str, dict[str, int]]:
    """Each module of the three packages -> {project module it imports: line of the import}."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` imports the module pkg.mod; `from mod import f`, mod.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for target in targets:
                # `import a.b.c` depends on the deepest project module named.
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert graph["streamer.cli"].keys() >= {"streamer.logs", "detector.errors"}  # relative
    assert "train.synth" in graph["train.cli"]  # inside a function: `from .synth import ...`


def test_no_package_imports_a_package_above_it():
    bad = [f"{mod}:{line} imports {dep}" for mod, deps in import_graph().items()
           for dep, line in deps.items()
           for pkg, above in FORBIDDEN.items() if _within(mod, pkg)
           for up in above if _within(dep, up)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_tools_wing_is_in_the_graph():
    graph = import_graph()
    assert "vigil_tools.harness" in graph["vigil_tools.demo"]
    assert "streamer.subscriber" in graph["vigil_tools.soak"]   # the tools use the service


def test_the_service_never_imports_the_tools_wing():
    bad = [f"{mod}:{line} imports {dep}" for mod, deps in import_graph().items()
           if not _within(mod, TOOLS) for dep, line in deps.items() if _within(dep, TOOLS)]
    assert not bad, "service code importing the tools wing:\n" + "\n".join(bad)


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_find_cycles_reports_a_loop_and_nothing_else():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycles():
    graph = import_graph()
    cycles = find_cycles(graph)
    detail = ["  " + " <-> ".join(c) + ": " + ", ".join(
        f"{m}:{graph[m][d]}->{d}" for m in c for d in graph[m] if d in c) for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(detail)


def _reachable(graph: dict[str, dict[str, int]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph.get(todo.pop(), {}):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_alert_client_needs_only_the_protocol():
    """`streamer.subscriber` (what a client of the daemon runs) reaches no server code: only the
    alert protocol, the bounds on what a socket takes in, the CURVE key-file reader and the
    error types."""
    assert _reachable(import_graph(), "streamer.subscriber") <= {
        "streamer.protocol", "streamer.wire.limits", "streamer.curve_keys", "detector.errors"}
