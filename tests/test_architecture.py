"""The house's walls: no import cycles, no layer importing upward, no private name
borrowed from another module (read from the source with ast, nothing imported).

Layers, bottom to top: ``annsnn`` (the method, pure PyTorch) < ``interop``, ``tracking``,
``lightning_modules`` < ``bench``, ``studies``. A module may import its own layer or
those below it (packages of one layer may use each other, without cycles); imports inside
functions count too (a lazy import is still a dependency).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("annsnn", "interop", "tracking", "lightning_modules", "bench", "studies")
LAYER = {"annsnn": 0, "interop": 1, "tracking": 1, "lightning_modules": 1, "bench": 2, "studies": 2}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")) if (root / pkg).is_dir() else []:
            out[module_name(path) if root == ROOT else ".".join(path.relative_to(root).with_suffix("").parts)
                .removesuffix(".__init__")] = path
    return out


def _resolve(current: str, is_pkg: bool, level: int, module: str | None) -> str:
    """The absolute module an ``from ...x import`` names, seen from ``current``."""
    if level == 0:
        return module or ""
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports(modules: dict[str, Path]) -> list[tuple[str, str, str | None]]:
    """(importer, imported module, imported name or None) for every project import."""
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in PACKAGES:
                        found.append((name, alias.name, None))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, is_pkg, node.level, node.module)
                if target.split(".")[0] not in PACKAGES:
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    # ``from pkg import module`` depends on that module, else on pkg itself
                    found.append((name, sub if sub in modules else target, None if sub in modules else alias.name))
    return found


def edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for src, dst, _ in imports(modules):
        while dst and dst not in modules:   # a name inside a module: the module
            dst = dst.rpartition(".")[0]
        if dst and dst != src:
            graph[src].add(dst)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted.
    A package's ``__init__`` importing its own submodules is not a cycle with them."""
    def is_parent_init(a, b):
        return b.startswith(a + ".")
    g = {a: {b for b in bs if not is_parent_init(a, b) and not is_parent_init(b, a)} for a, bs in graph.items()}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def upward(modules: dict[str, Path]) -> list[str]:
    bad = []
    for src, dst, _ in imports(modules):
        a, b = src.split(".")[0], dst.split(".")[0]
        if LAYER[b] > LAYER[a]:
            bad.append(f"{src} imports {dst}")
    return sorted(set(bad))


def private_names(modules: dict[str, Path]) -> list[str]:
    return sorted({f"{src} imports {name} from {dst}" for src, dst, name in imports(modules)
                   if name and name.startswith("_") and not name.startswith("__") and dst != src})


MODULES = project_modules()


def test_no_import_cycles():
    assert cycles(edges(MODULES)) == []


def test_no_layer_imports_upward():
    assert upward(MODULES) == []


def test_no_private_names_across_modules():
    assert private_names(MODULES) == []


@pytest.mark.parametrize("source, finds", [
    # each check on a tiny made-up tree: it must see what it is there to catch
    ({"bench/a.py": "from . import b\n", "bench/b.py": "def f():\n    from .a import x\n"}, "cycle"),
    ({"annsnn/a.py": "def f():\n    import bench.b\n", "bench/b.py": ""}, "upward"),
    ({"lightning_modules/a.py": "from studies.b import y\n", "studies/b.py": ""}, "upward"),
    ({"bench/a.py": "from .b import _helper\n", "bench/b.py": ""}, "private"),
])
def test_checks_catch_what_they_are_for(tmp_path, source, finds):
    for rel, text in source.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.parent / "__init__.py").touch()
        p.write_text(text)
    mods = {}
    for rel in source:
        parts = Path(rel).with_suffix("").parts
        mods[".".join(parts)] = tmp_path / rel
    for pkg in {Path(rel).parts[0] for rel in source}:
        mods[pkg] = tmp_path / pkg / "__init__.py"
    found = {"cycle": bool(cycles(edges(mods))), "upward": bool(upward(mods)),
             "private": bool(private_names(mods))}
    assert found[finds], f"the {finds} check missed {source}"
    assert [k for k, v in found.items() if v] == [finds]
