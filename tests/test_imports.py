"""The package's imports flow one way: no cycles, and no module imports from a layer above its own.

Read from the source with `ast` (nothing is imported), module-level and function-level imports
alike: an import inside a function is still a dependency, only a later one.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tfxfer"

# Lowest first. A module may import from its own layer and the layers below it, never above.
LAYERS = [
    # The package itself (its version), the error type, atomic writes, progress bars, TensorFlow's silence.
    ["tfxfer", "tfxfer.errors", "tfxfer.atomic", "tfxfer.progress", "tfxfer.quiet"],
    ["tfxfer.models"],
    ["tfxfer.treatments"],
    ["tfxfer.config"],
    ["tfxfer.data"],
    ["tfxfer.runs"],  # a run's spec, its directory, a finished run read back
    ["tfxfer.training"],
    ["tfxfer.experiments"],
    ["tfxfer.report", "tfxfer.export", "tfxfer.serving", "tfxfer.probes", "tfxfer.visualize", "tfxfer.diagnose",
     "tfxfer.tuning", "tfxfer.scores"],
    ["tfxfer.cli", "tfxfer.cli_options", "tfxfer.__main__"],
]


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} of every module of the package."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that module `name` imports: `from P import m` names submodule P.m
    when there is one, else P itself."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import tfxfer.data.splits.x`: the module part
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix naming `module` (the package's own name names only
    its __init__: every module must be placed)."""
    best = None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            named = module == prefix or ("." in prefix and module.startswith(prefix + "."))
            if named and (best is None or len(prefix) > len(best[1])):
                best = (i, prefix)
    if best is None:
        raise AssertionError(f"module {module} is in no layer of LAYERS: add it there")
    return best[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                  for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def test_the_graph_sees_module_and_function_level_imports():
    graph = import_graph()
    assert "tfxfer.errors" in graph["tfxfer.config"]  # module level
    assert "tfxfer.treatments" in graph["tfxfer.config"]  # inside a function
    assert "tfxfer.data.sources" in graph["tfxfer.data.registry"]  # `from tfxfer.data import sources`
    assert len(graph) > 60


def test_the_checks_find_a_cycle_and_an_upward_import(tmp_path):
    pkg = tmp_path / "tfxfer"
    (pkg / "data").mkdir(parents=True)
    (pkg / "training").mkdir()
    for init in (pkg, pkg / "data", pkg / "training"):
        (init / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from tfxfer.data import b\n")
    (pkg / "data" / "b.py").write_text("def f():\n    from .a import x\n")
    (pkg / "training" / "loop.py").write_text("from tfxfer.data.a import x\n")
    (pkg / "data" / "c.py").write_text("import tfxfer.training.loop\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [["tfxfer.data.a", "tfxfer.data.b"]]
    assert upward_imports(graph) == ["tfxfer.data.c (tfxfer.data) imports tfxfer.training.loop (tfxfer.training)"]
    with pytest.raises(AssertionError, match="tfxfer.nowhere is in no layer"):
        layer_of("tfxfer.nowhere")


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_import_cycles():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("layer", [prefixes[0] for prefixes in LAYERS])
def test_no_module_imports_from_a_layer_above_its_own(layer):
    graph = import_graph()
    below = {m: t for m, t in graph.items() if LAYERS[layer_of(m)][0] == layer}
    assert upward_imports(below) == []
