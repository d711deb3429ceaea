"""The package's layout: no import cycles, every module imports, the op list is complete, no outside links.

The import graph is read from the source with ``ast`` (nothing is imported to build it). A module
depends on every ``effrank_fast`` module it imports at module level (``if TYPE_CHECKING:`` blocks
excluded: they never run) and on the packages above that module, whose ``__init__`` runs first;
the packages above the importer itself are already running and add no edge. A package
``__init__`` importing its own submodules is therefore no cycle, while a submodule importing a name
from its package ``__init__`` (or from ``effrank_fast`` itself) is one.
"""

from __future__ import annotations

import ast
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "effrank_fast"

# Function-local ``effrank_fast`` imports that are lazy loads, not cycle dodges: each defers a
# module that pulls in an optional or heavy dependency (Triton)
# until the call that needs it. (importer, imported) -> why. Anything else must import at the top.
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("effrank_fast.ops.gram", "effrank_fast.ops.gram.triton"): "triton",
    ("effrank_fast.ops.linear_act_gram", "effrank_fast.ops.linear_act_gram.triton"): "triton",
    ("effrank_fast.rank.prepare", "effrank_fast.ops.gram.triton"): "triton",
    ("effrank_fast.ops.backends", "effrank_fast.ops.gram.triton"): "triton",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], list[tuple[str, int]]]:
    """(module-level targets, [(function-local target, line)]) within effrank_fast."""
    is_pkg = path.name == "__init__.py"
    top: set[str] = set()
    local: list[tuple[str, int]] = []

    def resolve(base: str, names: list[str]) -> list[str]:
        # ``from a.b import c`` imports the module a.b.c when there is one, else a name of a.b
        out = []
        for n in names:
            out.append(f"{base}.{n}" if f"{base}.{n}" in modules else base)
        return out

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if node.level:
            parts = name.split(".")
            keep = len(parts) - node.level + (1 if is_pkg else 0)
            base = ".".join(parts[:keep] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        return resolve(base, [a.name for a in node.names])

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit_stmt(sub, in_function)
                continue
            visit_stmt(child, in_function)

    def visit_stmt(child: ast.AST, in_function: bool) -> None:
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            for t in targets(child):
                if t == "effrank_fast" or t.startswith("effrank_fast."):
                    if in_function:
                        local.append((t, child.lineno))
                    else:
                        top.add(t)
        visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return top, local


def _edges(name: str, targets: set[str], modules: dict[str, Path]) -> set[str]:
    own_ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    out: set[str] = set()
    for t in targets:
        parts = t.split(".")
        while ".".join(parts) not in modules:  # a name inside a module, or an alias such as ef.measures
            parts.pop()
        for i in range(1, len(parts) + 1):  # the packages above run their __init__ first
            dep = ".".join(parts[:i])
            if dep != name and dep not in own_ancestors:
                out.add(dep)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {n: _edges(n, _imports(n, p, modules)[0], modules) for n, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def test_cycle_finder_sees_a_cycle():
    # the checker itself: a two-module cycle and a package-init edge
    graph = {"a": {"a.b"}, "a.b": {"a.c"}, "a.c": {"a.b"}, "a.d": set()}
    assert _cycles(graph) == [["a.b", "a.c"]]
    assert _cycles({"a": {"a.b"}, "a.b": set()}) == []


def test_import_graph_is_acyclic():
    graph = _graph()
    assert "effrank_fast.rank.api" in graph and graph["effrank_fast.rank.api"], "the graph came out empty"
    cycles = _cycles(graph)
    assert not cycles, "import cycles (module level):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_function_local_imports_are_lazy_loads_only():
    modules = _modules()
    dodges = []
    for name, path in modules.items():
        for target, line in _imports(name, path, modules)[1]:
            resolved = target if target in modules else target.rsplit(".", 1)[0]
            if (name, resolved) not in LAZY_IMPORTS:
                dodges.append(f"{path.relative_to(ROOT)}:{line} imports {target} inside a function")
    assert not dodges, "\n".join(dodges)


_IMPORT_ALL = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:  # an optional third-party dependency that is not installed
        if (exc.name or "").split(".")[0] == "effrank_fast":
            failed.append(f"{name}: {exc!r}")
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


@pytest.mark.parametrize("order", ["sorted", "reversed", "shuffled"])
def test_every_module_imports_in_a_fresh_interpreter(order):
    names = sorted(n for n in _modules() if n != "effrank_fast._build_config")
    if order == "reversed":
        names.reverse()
    elif order == "shuffled":
        random.Random(17).shuffle(names)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *names], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


def test_registry_lists_every_registered_op():
    from effrank_fast.ops import backends, registry

    def registered() -> set[str]:
        prefix = "effrank_fast::"
        return {n[len(prefix) :] for n in torch._C._dispatch_get_all_op_names() if n.startswith(prefix)}

    if backends.triton_import_error() is None:
        import effrank_fast.ops.gram.triton  # noqa: F401  (registers the Triton ops)
        import effrank_fast.ops.linear_act_gram.triton  # noqa: F401

        assert registered() == set(registry.OPS)
    else:
        assert set(registry.NATIVE_OPS) <= registered() <= set(registry.OPS)
    assert len(set(registry.OPS)) == len(registry.OPS)
    doc = registry.__doc__ or ""
    missing = [op for op in registry.OPS if f"{op}(" not in doc]
    assert not missing, f"ops/registry.py's docstring does not describe {missing}"


def test_nothing_points_outside_the_repository():
    needles = ("../" + "shared", "shared/" + "research")  # spelled apart so that this file does not match
    try:
        tracked = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    hits = []
    for rel in filter(None, tracked):
        path = ROOT / rel
        if not path.is_file() or path.suffix in (".png", ".so", ".json", ".pt"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if any(n in line for n in needles):
                hits.append(f"{rel}:{lineno}: {line.strip()[:100]}")
    assert not hits, "links to files users never have:\n" + "\n".join(hits)
