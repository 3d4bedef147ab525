"""The package's import graph: no cycles, layers respected, no ``os.chdir`` (pure, ``ast`` only).

Why every import counts, including those inside functions: the package imports heavy
modules lazily (Ray, vLLM, DeepSpeed), and a lazy import hides a cycle from Python until
the one call that closes it. Edges are module -> module:

* ``import a.b.c`` / ``from a.b import c`` (``c`` a submodule) depend on ``a.b.c`` only,
  not on the ``__init__`` of ``a`` and ``a.b`` that Python also runs: counting those
  would make every package's ``__init__`` (which re-exports its own submodules) a cycle
  with each submodule;
* ``from a.b import name`` (``name`` not a submodule) and ``import a.b`` depend on
  ``a.b``'s ``__init__``: importing ``tinyllm_ray.x`` from outside means depending on
  whatever ``x/__init__.py`` imports;
* relative imports are resolved against the importing module.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = "tinyllm_ray"
ROOT = Path(__file__).resolve().parents[2] / PKG


def _modules() -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file of the package (``__init__`` -> the package)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The package module ``name`` means, or None when it is outside the package."""
    while name and name not in MODULES:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """Package modules ``module`` imports anywhere in its file (top level and functions)."""
    is_pkg = path.name == "__init__.py"
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from a.b import c`: the submodule a.b.c when it exists, else a.b itself.
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix for a in node.names]
        else:
            continue
        for t in targets:
            dep = _resolve(t) if t.split(".")[0] == PKG else None
            if dep is not None and dep != module:
                deps.add(dep)
    return deps


def import_graph() -> dict[str, set[str]]:
    return {m: _imports(m, p) for m, p in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (iterative DFS, deterministic order)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if color[start] != WHITE:
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        color[start] = GREY
        while stack:
            node, todo = stack[-1]
            if not todo:
                color[node] = BLACK
                stack.pop()
                continue
            nxt = todo.pop(0)
            if color.get(nxt, BLACK) == GREY:
                path = [n for n, _ in stack]
                return path[path.index(nxt):] + [nxt]
            if color.get(nxt) == WHITE:
                color[nxt] = GREY
                stack.append((nxt, sorted(graph[nxt])))
    return None


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "tinyllm_ray.jobs.run" in graph["tinyllm_ray.jobs.stages"]  # top-level import
    assert "tinyllm_ray.student.trainer" in graph["tinyllm_ray.tune"]  # inside a function
    assert "tinyllm_ray.teachers.pipeline" in graph["tinyllm_ray.jobs.stages"]
    assert "tinyllm_ray.jobs" in graph["tinyllm_ray.cli"]  # `from tinyllm_ray import jobs`
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_layers() -> None:
    """student/ never imports teachers/; nothing below jobs/ imports jobs/ (only the CLI does)."""
    graph = import_graph()
    for module, deps in sorted(graph.items()):
        if module.startswith(f"{PKG}.student"):
            bad = sorted(d for d in deps if d == f"{PKG}.teachers" or d.startswith(f"{PKG}.teachers."))
            assert not bad, f"{module} imports {bad}: the student reads the store, never the teachers"
        if not (module.startswith(f"{PKG}.jobs") or module == f"{PKG}.cli"):
            bad = sorted(d for d in deps if d == f"{PKG}.jobs" or d.startswith(f"{PKG}.jobs."))
            assert not bad, f"{module} imports {bad}: only the CLI sits above jobs/"


def test_no_chdir() -> None:
    """Processes of one job must agree on paths: they are made absolute (RunPaths), never chdir'ed."""
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            attribute = isinstance(node, ast.Attribute) and node.attr == "chdir"
            imported = isinstance(node, ast.ImportFrom) and any(a.name == "chdir" for a in node.names)
            if attribute or imported:
                found.append(f"{module}:{node.lineno}")
    assert not found, f"os.chdir in {found}"
