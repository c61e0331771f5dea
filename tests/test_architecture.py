"""The package's structure, read from the sources: no import cycle among normbench's modules (imports inside
functions included), the config a leaf, imports only down the layers, and no function in the core longer than a
screen."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "normbench"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports_graph() -> dict[str, set[str]]:
    """Module -> the normbench modules it imports anywhere in its source."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from normbench.x import y` imports the module normbench.x.y when there is one
                names = [f"{node.module}.{a.name}" if is_module(f"{node.module}.{a.name}") else node.module
                         for a in node.names]  # fmt: skip
            else:
                continue
            edges |= {name for name in names if name.split(".")[0] == "normbench"}
        graph[module_name(path)] = edges - {module_name(path)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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


def test_the_graph_sees_function_level_imports():
    graph = imports_graph()
    assert "normbench.validate" in graph["normbench.cli"]  # imported inside _resolve
    assert "normbench.reports.plots" in graph["normbench.cli"]


def test_a_planted_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_normbench_modules():
    assert cycles(imports_graph()) == []


def test_the_config_is_a_leaf():
    assert imports_graph()["normbench.config"] <= {"normbench.errors"}


# The package's layers, lowest first: a module imports from its own layer or those below it, never above, so each
# layer reads (and is tested) without the ones above. Named by the first part of the module's name in the package.
LAYERS = (
    {"errors", "version", "config"},
    {"norms", "models", "protocols", "flops", "conformance", "data", "runtime"},  # the parts: no training loop
    {"core", "catalog"},  # training a grid, and what it can train
    {"results"},  # tables on disk, claims and tuning read from them
    {"reports"},  # figures, summaries, progress shown
    {"study", "bench", "validate"},  # a study or a benchmark run end to end, and what may run
    {"scoring"},  # batteries of studies
    {"api", "cli", "docs_gen", "__main__", ""},  # the entry points, and the package's own __init__
)


def layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    return next(i for i, names in enumerate(LAYERS) if part in names)


def upward(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, imported in graph.items() for b in imported if layer(b) > layer(a)}


def test_every_module_has_a_layer():
    for module in imports_graph():
        layer(module)


def test_a_planted_upward_import_is_found():
    graph = {"normbench.core.sweep": {"normbench.config", "normbench.reports.progress"}, "normbench.cli": {"normbench"}}
    assert upward(graph) == {("normbench.core.sweep", "normbench.reports.progress")}


def test_imports_only_point_down_the_layers():
    assert upward(imports_graph()) == set()


# A function of the core that a reader must scroll through holds more than one idea.
LONGEST_CORE_FUNCTION = 80


def function_lengths(path: Path) -> dict[str, int]:
    """Every function and method in `path` (nested ones too), by qualified name: its lines, decorators excluded."""
    lengths = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths[name] = child.end_lineno - child.lineno + 1
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text()), "")
    return lengths


def test_function_lengths_count_nested_functions_and_methods(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("class A:\n    def f(self):\n        def g():\n            return 1\n\n        return g\n")
    assert function_lengths(source) == {"A.f": 5, "A.f.g": 2}


def test_no_function_in_the_core_is_longer_than_a_screen():
    long = {f"{path.name}:{name}": lines for path in sorted((PACKAGE / "core").glob("*.py"))
            for name, lines in function_lengths(path).items() if lines > LONGEST_CORE_FUNCTION}  # fmt: skip
    assert long == {}
