"""Seams the package keeps: library code never imports the CLI, and module imports form no cycle."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ulv_spark"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules, *, top_level_only: bool) -> set[str]:
    """ulv_spark modules `path` imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ulv_spark")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ulv_spark"):
            submodules = {f"{node.module}.{a.name}" for a in node.names} & set(modules)  # `from pkg import module`
            found |= submodules
            if len(submodules) < len(node.names):
                found.add(node.module)
    return found


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path, modules, top_level_only=top_level_only) if m in modules and m != name}
            for name, path in modules.items()}


def test_no_library_module_imports_the_cli():
    importers = sorted(name for name, deps in _graph(top_level_only=False).items() if "ulv_spark.cli" in deps)
    assert importers == []


def test_module_level_imports_have_no_cycle():
    graph = _graph(top_level_only=True)
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
