"""The import graph of lit_papers/ and benchmarks/: no cycles between files or folders, leaves stay leaves.

Every import statement is read with `ast`, at the top of a file or inside a function (a lazy
import is still a dependency), and kept when it resolves to a file of the two trees. Imports
flow one way (docs/architecture.md): paper packages -> training/data/models -> the leaves
`lit_papers/registry.py` and `lit_papers/errors.py`, which import nothing of the project.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TREES = ("lit_papers", "benchmarks")
LEAVES = ("lit_papers.registry", "lit_papers.errors")
PAPERS = ("deq", "generalization", "lottery", "mode_connectivity", "neural_ode")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, name: str) -> set[str]:
    """Every module name an import statement of `path` may refer to (relative ones made absolute)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return found


def file_graph(root: Path, trees=TREES) -> tuple[dict[str, set[str]], dict[str, Path]]:
    """{module: modules of the trees it imports}, {module: its file}."""
    files = {module_name(p, root): p for tree in trees for p in sorted((root / tree).rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        targets = set()
        for module in imported_names(path, name):
            while module and module not in files:  # `pkg.mod.Class` -> `pkg.mod`
                module = module.rpartition(".")[0]
            if module and module != name and not name.startswith(module + "."):
                targets.add(module)
        graph[name] = targets
    return graph, files


def folder_graph(graph: dict[str, set[str]], files: dict[str, Path], root: Path) -> dict[str, set[str]]:
    """{folder: folders it imports}, leaving out a folder's own subfolders and parents."""
    folder = lambda module: files[module].parent.relative_to(root).as_posix()
    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        for b in targets:
            fa, fb = folder(a), folder(b)
            if fa != fb and not fa.startswith(fb + "/") and not fb.startswith(fa + "/"):
                out.setdefault(fa, set()).add(fb)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    out.append(sorted(group))
    return out


@pytest.fixture(scope="module")
def project():
    graph, files = file_graph(REPO)
    return graph, files, folder_graph(graph, files, REPO)


def test_no_two_files_import_each_other(project):
    graph, _, _ = project
    found = cycles(graph)
    assert not found, "files importing each other: " + "; ".join(" <-> ".join(group) for group in found)


def test_no_two_folders_import_each_other(project):
    _, _, folders = project
    found = cycles(folders)
    assert not found, "folders importing each other: " + "; ".join(" <-> ".join(group) for group in found)


def test_leaves_import_nothing_of_the_project(project):
    graph, files, _ = project
    for leaf in LEAVES:
        assert leaf in files and graph[leaf] == set(), f"{leaf} imports {sorted(graph.get(leaf, ()))}"


def test_every_registry_and_errors_module_imports_only_the_leaves(project):
    graph, files, _ = project
    modules = [name for name, path in files.items() if path.stem in ("registry", "errors")]
    assert "lit_papers.models.registry" in modules
    for name in modules:
        assert graph[name] <= set(LEAVES), f"{name} imports {sorted(graph[name] - set(LEAVES))}"


def test_no_paper_package_imports_another(project):
    graph, _, _ = project
    paper_of = lambda module: next((p for p in PAPERS if module.startswith(f"lit_papers.{p}.")
                                    or module == f"lit_papers.{p}"), None)
    crossings = [(a, b) for a, targets in graph.items() for b in targets
                 if paper_of(a) and paper_of(b) and paper_of(a) != paper_of(b)]
    assert crossings == []


def test_nothing_in_the_trees_edits_sys_path():
    edits = [str(p.relative_to(REPO)) for tree in TREES for p in (REPO / tree).rglob("*.py")
             if "sys.path.insert" in p.read_text() or "sys.path.append" in p.read_text()]
    assert edits == []


def test_the_reader_sees_lazy_relative_and_from_package_imports(tmp_path):
    """A cycle made only of an in-function relative import and a `from pkg import module` is found,
    between the files and between their folders; a package importing its own parent is not a cycle."""
    write = lambda rel, text: (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True) or \
        (tmp_path / rel).write_text(text)
    write("pkg/__init__.py", "")
    write("pkg/a/__init__.py", "")
    write("pkg/b/__init__.py", "from pkg import leaf\n")
    write("pkg/leaf.py", "")
    write("pkg/a/one.py", "def f():\n    from ..b import two\n    return two\n")
    write("pkg/b/two.py", "from pkg.a import one\n")
    graph, files = file_graph(tmp_path, trees=("pkg",))
    assert graph["pkg.a.one"] == {"pkg.b", "pkg.b.two"} and graph["pkg.b.two"] == {"pkg.a", "pkg.a.one"}
    assert graph["pkg.b"] == {"pkg.leaf"}
    assert cycles(graph) == [["pkg.a.one", "pkg.b.two"]]
    assert cycles(folder_graph(graph, files, tmp_path)) == [["pkg/a", "pkg/b"]]
