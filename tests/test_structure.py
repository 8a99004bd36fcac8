"""The package's layering: no import cycle between its modules, counting the imports inside functions too."""

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xmoco_zoo"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("xmoco_zoo", *parts))
        mods[name.removesuffix(".__init__")] = p
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports, at module level or inside a function (``from . import x`` counts x, not the package:
    a parent package is already being initialised when its children run)."""
    mods = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                for dep in subs or ([target] if target in mods else []):
                    if dep != name:
                        graph[name].add(dep)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods and a.name != name:
                        graph[name].add(a.name)
    return graph


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(" -> ".join(path[path.index(m) :] + [m]))
            elif not state.get(m):
                visit(m, path)
        path.pop()
        state[n] = 2

    for n in sorted(_modules()):
        if not state.get(n):
            visit(n, [])
    assert not cycles, "\n".join(cycles)


def test_the_layers_point_down():
    """config and the registry are at the bottom; a base never imports the regularizer layer."""
    graph = import_graph()
    assert not {d for d in graph["xmoco_zoo.config"] if d != "xmoco_zoo.errors"}
    assert graph["xmoco_zoo.registry"] <= {"xmoco_zoo.config", "xmoco_zoo.errors"}
    for base in ("xmoco_zoo.methods.mocov2", "xmoco_zoo.methods.mocov3"):
        assert not any(d.startswith("xmoco_zoo.regularizers") for d in graph[base]), graph[base]
