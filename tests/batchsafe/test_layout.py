"""The install layout and the import floors: one ``batchsafe`` namespace, no cycles, the floor imports nothing above it."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = {"compiler": "compiler", "runtime": "runtime", "analysis": "analysis", "bundles": "bundles",
          "verification": "verification", "registry": "registry"}
GENERIC = set(STAGES) | {"benchmarks"}


def _modules() -> dict[str, Path]:
    """Installed module name -> source file, from the pyproject package-dir mapping."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mods: dict[str, Path] = {}
    for pkg in cfg["packages"]:
        parts = pkg.split(".")
        head = next(".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in cfg["package-dir"])
        d = ROOT / cfg["package-dir"][head] / Path(*parts[len(head.split(".")):])
        for f in d.glob("*.py"):
            mods[pkg if f.name == "__init__.py" else f"{pkg}.{f.stem}"] = f
    return mods


def _imports(name: str, path: Path, known: set[str], *, top_level_only: bool) -> set[str]:
    """batchsafe modules imported by ``path`` (relative imports resolved); module level only if asked."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known}
    return found - {name}


def test_pyproject_lists_every_package_folder() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {k: v for k, v in cfg["package-dir"].items() if k != "batchsafe"} == {f"batchsafe.{k}": v for k, v in STAGES.items()}
    listed = set(cfg["packages"])
    on_disk = {"batchsafe." + ".".join(p.parent.relative_to(ROOT).parts) if p.parent.relative_to(ROOT).parts[0] != "batchsafe"
               else ".".join(p.parent.relative_to(ROOT).parts)
               for top in ["batchsafe", *STAGES.values()] for p in (ROOT / top).rglob("__init__.py")}
    assert listed == on_disk


def test_no_module_imports_a_bare_stage_name() -> None:
    bad = []
    for f in ROOT.rglob("*.py"):
        if ".venv" in f.parts:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else []
            bad += [f"{f.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in GENERIC - {"benchmarks"}]
    assert bad == []


def test_floor_imports_nothing_above_it_and_there_is_no_import_cycle() -> None:
    mods = _modules()
    known = set(mods)
    # Every import counts, deferred ones inside functions too: a cycle hidden in a function
    # body still ties the two modules together (analysis.analyze -> compiler.compile ->
    # compiler.prior -> analysis.analyze was one).
    graph = {m: _imports(m, p, known, top_level_only=False) for m, p in mods.items()}
    for m in (m for m in mods if m.startswith("batchsafe.core")):
        everything = _imports(m, mods[m], known, top_level_only=False)
        assert {i for i in everything if not i.startswith("batchsafe.core")} == set(), m
    # Cycle search (package __init__ files re-export, so they are edges too).
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []


@pytest.mark.parametrize("name", sorted(GENERIC))
def test_generic_names_are_not_importable_outside_the_checkout(name: str, tmp_path: Path) -> None:
    code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({name!r}) is None else 1)"
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path).returncode == 0
    ok = subprocess.run([sys.executable, "-c", f"import batchsafe.{STAGES.get(name, 'compiler')}"], cwd=tmp_path)
    assert ok.returncode == 0


def test_every_source_folder_is_a_listed_package() -> None:
    # A folder of modules without __init__.py imports in an editable checkout (namespace
    # package) but is silently left out of a wheel: batchsafe/core once was.
    missing = sorted(str(d.relative_to(ROOT)) for top in ["batchsafe", *STAGES.values()]
                     for d in {f.parent for f in (ROOT / top).rglob("*.py") if "__pycache__" not in f.parts}
                     if not (d / "__init__.py").is_file())
    assert missing == []


def test_built_wheel_installs_only_the_batchsafe_namespace(tmp_path: Path) -> None:
    import zipfile
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (whl,) = tmp_path.glob("batchsafe-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert {n.split("/")[0] for n in names} == {"batchsafe", f"{whl.name.split('-')[0]}-{whl.name.split('-')[1]}.dist-info"}
    # Every stage module made it in under its namespace name.
    for stage in STAGES:
        assert f"batchsafe/{stage}/__init__.py" in names
    assert "batchsafe/core/canonical.py" in names and "batchsafe/runtime/launch/provision.py" in names


def test_string_module_references_resolve_outside_the_checkout(tmp_path: Path) -> None:
    # Module paths written as strings (schema generators, lazy imports) escape the AST walk
    # above; run them from a directory where the checkout's folders are not on sys.path.
    r = subprocess.run([sys.executable, "-m", "batchsafe.schemas", "--check", str(ROOT / "schema")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_cycle_search_sees_imports_inside_functions() -> None:
    # compiler.prior imports the store only inside a function; the walk must still see it,
    # or a deferred cycle (analysis.analyze -> compiler.compile -> compiler.prior ->
    # analysis.analyze, now gone) would pass unnoticed.
    mods = _modules()
    prior = _imports("batchsafe.compiler.prior", mods["batchsafe.compiler.prior"], set(mods), top_level_only=False)
    assert "batchsafe.bundles.store" in prior and "batchsafe.analysis.analyze" not in prior


# Floors, lowest first; a module belongs to the longest prefix that names it. The two
# catalogues are declarations (they import nothing of batchsafe), so every stage may read them.
FLOORS = ["batchsafe.core", "batchsafe.runtime.engines.catalogue", "batchsafe.analysis.scorers", "batchsafe.compiler",
          "batchsafe.runtime", "batchsafe.bundles", "batchsafe.analysis", "batchsafe.verification",
          "batchsafe.registry", "batchsafe"]
UPWARD_ALLOWED = {
    # select.from_bundle: the compiler reads a prior bundle's flips from the store, at compile time.
    ("batchsafe.compiler.prior", "batchsafe.analysis.flips"),
    ("batchsafe.compiler.prior", "batchsafe.bundles.store"),
    # adjudicate export opens any bundle reference (store id, directory, archive) as verify does.
    ("batchsafe.analysis.adjudication", "batchsafe.verification.source"),
}


def _floor(module: str) -> int:
    return max((i for i, p in enumerate(FLOORS) if module == p or module.startswith(p + ".")),
               key=lambda i: len(FLOORS[i]))


def test_no_module_imports_from_a_higher_floor() -> None:
    mods = _modules()
    up = {(m, n) for m, p in mods.items() for n in _imports(m, p, set(mods), top_level_only=False)
          if _floor(n) > _floor(m)}
    assert up - UPWARD_ALLOWED == set()
    assert UPWARD_ALLOWED <= up  # an exception that no longer happens is taken off the list
