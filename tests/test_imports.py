"""The import graph of ``pairviz_jax``: no cycle, no private name imported across modules.

Every ``import`` statement is read with ``ast`` (module level and inside functions), so
a function-level import that closes a cycle is caught as well as a module-level one.
"""

from __future__ import annotations

import ast
import pathlib

import pairviz_jax

ROOT = pathlib.Path(__file__).resolve().parents[1] / "pairviz_jax"


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: pathlib.Path, modules) -> list[tuple[str, str | None, int]]:
    """``(module, imported name or None, line)`` for every import of a pairviz_jax module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in modules:
                    found.append((sub, None, node.lineno))
                else:
                    found.append((base, a.name, node.lineno))
    return [f for f in found if f[0] in modules]


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over pairviz_jax (explicit imports only)."""
    modules = _modules()
    return {
        name: {m for m, _, _ in _imports(name, path, modules) if m != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def private_imports() -> list[str]:
    """``module:line imports other._name`` for private objects of other modules."""
    modules = _modules()
    bad = []
    for name, path in modules.items():
        for mod, obj, line in _imports(name, path, modules):
            if obj is not None and obj.startswith("_") and mod != name:
                bad.append(f"{name}:{line} imports {mod}.{obj}")
    return bad


def test_the_walk_sees_every_module_and_function_level_imports():
    graph = import_graph()
    assert "pairviz_jax.explain.maps" in graph and "pairviz_jax.models.vit" in graph
    assert len(graph) > 50, sorted(graph)
    # A cycle closed by a function-level import is found (the walk's own check).
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert pairviz_jax.__name__ == "pairviz_jax"


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_private_name_imported_across_modules():
    # Private *modules* (``checkpoints._io``) are imported inside their own package; a
    # private function, class or constant of another module is not.
    assert private_imports() == []


if __name__ == "__main__":  # prints the graph's cycles and private imports
    for c in cycles(import_graph()):
        print("cycle:", " -> ".join(c))
    for p in private_imports():
        print("private:", p)
