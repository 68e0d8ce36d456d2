"""The layout holds: every module imports; the library's layers (``speechtune.LAYERS``) only
import downwards; no modules import each other in a circle; the stage CLIs and corpus recipes
sit above the library and never the other way round. The checker itself is tried on a small
package with a circle and an upward import, so it can fail."""
import ast
import importlib
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Set, Tuple

import pytest

import speechtune
from tests.conftest import REPO_ROOT

Graph = Dict[str, Set[str]]


def module_files(root: Path, package: str) -> Dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package`` under ``root``."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph(root: Path, packages: Sequence[str]) -> Graph:
    """module -> the modules of ``packages`` it imports anywhere in its file (function-level
    imports included). ``from a.b import c`` is an edge to ``a.b.c`` where that is a module,
    else to ``a.b``."""
    modules = {name: path for package in packages for name, path in module_files(root, package).items()}
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                           for alias in node.names]
            else:
                continue
            graph[name].update(target for target in targets if target in modules and target != name)
    return graph


def circles(graph: Mapping[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str, layers: Sequence[Sequence[str]]) -> int:
    """The layer of ``package.<name>...``: the index of the LAYERS entry holding ``<name>``."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the package's own docstring and LAYERS
    for number, names in enumerate(layers):
        if parts[1] in names:
            return number
    raise AssertionError(f"{module}: its name {parts[1]!r} is in no layer of LAYERS")


def upward_imports(graph: Mapping[str, Set[str]], layers: Sequence[Sequence[str]]) -> List[Tuple[str, str]]:
    """(importer, imported) pairs of the library where the importer's layer is the lower one."""
    return sorted((a, b) for a, targets in graph.items() for b in targets
                  if layer_of(a, layers) < layer_of(b, layers))


GRAPH = import_graph(REPO_ROOT, ["speechtune", "stages", "local"])


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_every_module_imports(module):
    importlib.import_module(module)


def test_no_circles():
    assert circles(GRAPH) == []


def test_the_library_imports_only_downwards():
    library = {name: {t for t in targets if t.startswith("speechtune")}
               for name, targets in GRAPH.items() if name.startswith("speechtune")}
    for module in library:
        layer_of(module, speechtune.LAYERS)  # every module is in a layer
    assert upward_imports(library, speechtune.LAYERS) == []


def test_stages_and_recipes_stay_above_the_library():
    for module, targets in GRAPH.items():
        if module.startswith("speechtune"):
            assert not {t for t in targets if t.startswith(("stages", "local"))}, module
        if module.startswith("local"):
            assert not {t for t in targets if t.startswith("stages")}, module
        if module.startswith("stages"):  # a stage is a CLI, never another stage's library
            assert not {t for t in targets if t.startswith("stages")}, module


def test_the_checker_finds_a_circle_and_an_upward_import(tmp_path):
    package = tmp_path / "toy"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    (package / "low" / "a.py").write_text("from toy.high import helper\n")   # upwards
    (package / "high.py").write_text("def helper():\n    from toy.low import a\n")  # and back: a circle
    graph = import_graph(tmp_path, ["toy"])
    assert graph["toy.low.a"] == {"toy.high"} and graph["toy.high"] == {"toy.low.a"}
    assert circles(graph) == [["toy.high", "toy.low.a"]]
    assert upward_imports(graph, [("low",), ("high",)]) == [("toy.low.a", "toy.high")]
