"""The wings of docs/architecture.md, held against every import statement of the code.

Every `import` and `from ... import` of the project's source files is read with `ast` (module level
and inside functions alike), mapped to the project module it names, and checked: no circle between
modules, no import that runs up the layering of the wings, and none of the imports that must never
exist. A new import that breaks a rule fails here with the file and the line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("shared_protocol", "plugin_gimp", "plugin_krita", "installer", "install.py", "backend", "lab")

# The wing of each top-level name, and its floor: a module may import its own floor or lower ones.
WINGS = {
    "shared_protocol": ("editor side", 1),
    "installer": ("editor side", 2),
    "install": ("editor side", 3),
    "plugin_gimp": ("editor side", 2),
    "plugin_krita": ("editor side", 2),
    "backend": ("serving backend", 2),
    "lab": ("lab", 3),
}
EDITOR_SIDE = ("shared_protocol", "plugin_gimp", "plugin_krita", "installer", "install")
# Imports that must never exist: (importer's top-level names, imported top-level names, why).
NEVER = (
    (EDITOR_SIDE, ("torch", "backend", "lab"), "the editor side runs in GIMP's/Krita's own Python"),
    (("plugin_gimp",), ("plugin_krita",), "each plug-in is glue for its own editor only"),
    (("plugin_krita",), ("plugin_gimp",), "each plug-in is glue for its own editor only"),
    (("installer", "install"), ("backend", "lab", "torch"), "installing must not need the backend's venv"),
    (("backend",), ("lab",), "the serving runtime installs and runs without the lab"),
    (("shared_protocol",), ("plugin_gimp", "plugin_krita", "installer", "install"), "the protocol is below"),
    (
        (*EDITOR_SIDE, "backend"),
        ("resynthesizer", "patchmatch", "patchmatch_cython"),
        "the evaluation's third-party baselines are dev extras (resynthesizer is GPL-3), never shipped",
    ),
)


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name of the importing file
    imported: str  # dotted name as written, resolved for relative imports
    path: Path
    line: int


def source_files() -> Iterator[Path]:
    for name in SOURCE_ROOTS:
        path = ROOT / name
        if path.is_file():
            yield path
        else:
            yield from sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    """Dotted name by path from the root; plug-in files import each other by their installed names,
    which project_graph() maps back under their folder (plugin_gimp.hifill_gimp.plan, ...)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[Import]:
    importer = module_name(path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, alias.name, path, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.split(".")
                base = base[: len(base) - node.level + 1] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                yield Import(importer, f"{target}.{alias.name}", path, node.lineno)


def all_imports() -> list[Import]:
    return [imp for path in source_files() for imp in imports_of(path)]


def project_modules() -> set[str]:
    return {module_name(path) for path in source_files()}


def resolve(name: str, modules: set[str]) -> str | None:
    """The project module that `name` (a module, or module.attribute) lands in, if any."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def top(name: str) -> str:
    return name.split(".")[0]


def project_graph() -> dict[str, set[tuple[str, Import]]]:
    modules = project_modules()
    graph: dict[str, set[tuple[str, Import]]] = {m: set() for m in modules}
    for imp in all_imports():
        target = resolve(imp.imported, modules) or resolve(f"{top(imp.importer)}.{imp.imported}", modules)
        if target and target != imp.importer and not imp.importer.startswith(target + "."):
            graph[imp.importer].add((target, imp))
    return graph


def where(imp: Import) -> str:
    return f"{imp.path.relative_to(ROOT)}:{imp.line} imports {imp.imported}"


def test_the_scan_sees_the_project() -> None:
    modules = project_modules()
    assert {"shared_protocol.client", "backend.cra", "lab.train", "install"} <= modules
    graph = project_graph()
    assert any(target == "backend.network" for target, _ in graph["backend.cra"])
    assert any(target == "shared_protocol.client" for m in graph for target, _ in graph[m])


@pytest.mark.parametrize("importers, forbidden, why", NEVER)
def test_imports_that_must_never_exist(
    importers: tuple[str, ...], forbidden: tuple[str, ...], why: str
) -> None:
    broken = [
        where(imp)
        for imp in all_imports()
        if top(imp.importer) in importers and top(imp.imported) in forbidden
    ]
    assert not broken, f"{why}:\n" + "\n".join(broken)


def test_no_module_imports_one_above_its_floor() -> None:
    broken = []
    for importer, targets in project_graph().items():
        for target, imp in targets:
            if WINGS[top(target)][1] > WINGS[top(importer)][1]:
                broken.append(f"{where(imp)} ({WINGS[top(importer)][0]} -> {WINGS[top(target)][0]})")
    assert not broken, "imports that run up the layering:\n" + "\n".join(broken)


def test_no_circle_between_modules() -> None:
    graph = {m: {t for t, _ in targets} for m, targets in project_graph().items()}
    circles = strongly_connected(graph)
    assert not circles, "modules that import each other in a circle: " + "; ".join(
        " -> ".join(sorted(c)) for c in circles
    )


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the components with more than one module (the circles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_circle_finder_finds_a_planted_circle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_source_file_over_800_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in source_files()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 800
    ]
    assert not long, "split these (one job per module):\n" + "\n".join(long)
