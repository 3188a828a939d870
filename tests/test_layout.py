"""The package layout: every module imports on its own, and no module imports another inside a function
to dodge a cycle: an import inside a function counts as an import."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import avaf.extract
import avaf.shared
import avaf.train

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"avaf.extract": ROOT / "extract", "avaf.shared": ROOT / "shared", "avaf.train": ROOT / "train"}


def _modules() -> list[str]:
    names = []
    for pkg in (avaf.extract, avaf.shared, avaf.train):
        names.append(pkg.__name__)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    return sorted(n for n in names if not n.endswith(".__main__"))  # importing __main__ runs the program


def test_the_tree_has_the_data_flow_rooms():
    names = set(_modules())
    for room in (
        "extract.decode",
        "extract.encoders",
        "extract.synth",
        "shared.store",
        "shared.avqa",
        "shared.exchange",
    ):
        assert f"avaf.{room}" in names
    assert len(names) >= 55  # every module found (a missing __init__ would hide a whole room)


@pytest.mark.parametrize("name", _modules())
def test_every_module_imports_on_its_own(name):
    """In a fresh interpreter, so a module that only works after another was imported is caught."""
    proc = subprocess.run(
        [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def _module_name(path: Path) -> str:
    for pkg, folder in PACKAGES.items():
        if folder in path.parents:
            parts = path.relative_to(folder).with_suffix("").parts
            return (
                ".".join((pkg, *parts))[: -len(".__init__")]
                if parts[-1] == "__init__"
                else ".".join((pkg, *parts))
            )
    raise AssertionError(path)


def _imports(path: Path, names: set[str]) -> set[str]:
    """avaf modules that `path` imports anywhere in it, inside functions included."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return {n for n in found if n in names and n != me}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_even_counting_imports_inside_functions():
    files = [p for d in PACKAGES.values() for p in d.rglob("*.py")]
    names = {_module_name(p) for p in files}
    graph = {_module_name(p): _imports(p, names) for p in files}
    # a package face imports its modules; a module importing its own face is what would close a cycle
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    assert len(graph) >= 55 and graph["avaf.extract.decode.worker"] == {
        "avaf.extract.decode.backends",
        "avaf.extract.decode.sampling",
        "avaf.extract.decode.views",
    }
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]
    ]  # the check can fail


def test_extract_and_train_never_import_each_other():
    for side, other in (("extract", "avaf.train"), ("train", "avaf.extract")):
        for p in (ROOT / side).rglob("*.py"):
            text = p.read_text()
            assert f"from {other}" not in text and f"import {other}" not in text, p


def test_python_m_avaf_train_is_avaf_train():
    proc = subprocess.run(
        [sys.executable, "-m", "avaf.train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "Usage: python -m avaf.train" in proc.stdout, proc.stderr[-2000:]
    assert "--feats" in proc.stdout


def test_the_reader_needs_neither_torch_nor_ray():
    code = "import sys, avaf.shared.store; assert 'torch' not in sys.modules and 'ray' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert importlib.import_module("avaf.shared.store").FeatureStore.__module__ == "avaf.shared.store.reader"
