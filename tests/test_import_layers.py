"""raylth.sweep and raylth.search import no cycle (imports inside functions
count), and sweep never imports search. Run as a script to print them."""

import ast
from pathlib import Path

RAYLTH = Path(__file__).resolve().parents[1] / "raylth"
PACKAGES = ("raylth.sweep", "raylth.search")


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
        graph[module_name(path)] = found
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


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports of raylth.search from raylth.sweep."""
    return [f"{n} -> {m}" for n in sorted(graph) if n.startswith("raylth.sweep")
            for m in sorted(graph[n]) if m.startswith("raylth.search")]


def test_sweep_and_search_import_no_cycle_and_sweep_not_search():
    graph = imports()
    assert cycles(graph) == [] and upward(graph) == []


if __name__ == "__main__":
    graph = imports()
    print("cycles among raylth/sweep and raylth/search:", cycles(graph) or "none")
    print("raylth.sweep importing raylth.search:", upward(graph) or "none")
