"""raylth's imports (those inside functions count) form no cycle and never
run up the layers: errors -> specs -> engine, store, cluster -> stages ->
sweep, reporting -> plugins -> search -> api -> cli. The core (everything
below plugins) never imports a plugin: each registers itself into the core's
registries when the package raylth imports raylth.plugins. Run as a script
to print them."""

import ast
from pathlib import Path

RAYLTH = Path(__file__).resolve().parents[1] / "raylth"
PACKAGES = ("raylth.",)
LAYERS = {"raylth.errors": 0, "raylth.specs": 1, "raylth.engine": 2, "raylth.store": 2, "raylth.cluster": 2,
          "raylth.stages": 3, "raylth.sweep": 4, "raylth.reporting": 4, "raylth.plugins": 5, "raylth.search": 6,
          "raylth.api": 7, "raylth.cli": 8}


def module_name(path: Path) -> str:
    parts = path.relative_to(RAYLTH.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every raylth module's raylth imports, module-level and inside functions."""
    graph = {}
    for path in RAYLTH.rglob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("raylth")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raylth"):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}  # from raylth.x import module
        name = module_name(path)
        graph[name] = found - {name}  # a package's `from itself import submodule`
    return {name: {m for m in found if m in graph} for name, found in graph.items()}


def cycles(graph: dict[str, set[str]], within=PACKAGES) -> list[list[str]]:
    """Cycles among the modules of ``within`` (strongly connected components of more than one module,
    or a module importing itself)."""
    nodes = {n for n in graph if n.startswith(within)}
    edges = {n: graph[n] & nodes for n in nodes}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                out.append(sorted(component))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def layer(module: str) -> int | None:
    return next((rank for prefix, rank in LAYERS.items() if module == prefix or module.startswith(prefix + ".")),
                None)


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a module of a higher layer (or of a sibling layer: sweep and reporting)."""
    out = []
    for n in sorted(graph):
        for m in sorted(graph[n]):
            a, b = layer(n), layer(m)
            if a is not None and b is not None and (b > a or (a == b and n.split(".")[1] != m.split(".")[1])):
                out.append(f"{n} -> {m}")
    return out


def test_raylth_imports_no_cycle_and_nothing_upward():
    graph = imports()
    assert cycles(graph) == [] and upward(graph) == []


if __name__ == "__main__":
    graph = imports()
    print("import cycles in raylth:", cycles(graph) or "none")
    print("imports up or across the layers:", upward(graph) or "none")
