"""The package's layering contract (pyproject.toml, ``[tool.importlinter]``) holds, and it can break.

``make lint`` runs the same ``lint-imports``; this test makes ``make test`` enforce it too. Each
check runs in a subprocess on an explicit ``PYTHONPATH``, so it reads this checkout's code and not
whatever copy of the package happens to be installed.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "workflow" / "spurious_rewards"
# the `lint-imports` console script, run by this interpreter (no reliance on PATH)
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _env(package_parent: Path) -> dict[str, str]:
    """This environment with ``package_parent`` first on ``PYTHONPATH``: its package wins over an installed one."""
    rest = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(package_parent), *([rest] if rest else [])])}


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the repository's contracts on the package found under ``package_parent``."""
    try:
        import importlinter  # noqa: F401
    except ImportError:
        pytest.fail("import-linter is not installed: it is in the `test` extra (pip install -e '.[test]')")
    cmd = [sys.executable, "-c", LINT_IMPORTS, "--config", str(ROOT / "pyproject.toml"), "--no-cache"]
    return subprocess.run(cmd, cwd=ROOT, env=_env(package_parent), capture_output=True, text=True, timeout=120)


def test_contracts_kept():
    r = lint_imports(ROOT / "workflow")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout, r.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # an upward import, and a lazy one: function-level imports count
        ("io.py", "def _up():\n    from . import stats\n", "Layers"),
        # two phases are independent of each other
        ("audit/contamination.py", "from ..training import common\n", "Layers"),
        # a cycle inside one layer (the layers contract cannot see it)
        ("scoring/extract.py", "def _cycle():\n    from . import rewards\n", "No import cycles"),
    ],
)
def test_contracts_catch_a_violation(tmp_path: Path, module: str, line: str, broken: str):
    copy = tmp_path / "spurious_rewards"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / module).open("a") as f:
        f.write("\n\n" + line)
    r = lint_imports(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    verdicts = [ln for ln in r.stdout.splitlines() if ln.endswith((" KEPT", " BROKEN"))]
    assert [ln.startswith(broken) for ln in verdicts if ln.endswith(" BROKEN")] == [True], r.stdout


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a self-import): Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = itertools.count()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = next(counter)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
            if len(comp) > 1 or v in graph[v]:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_import_cycle():
    """No cycle between any two modules, a package's ``__init__`` and its own modules included.

    ``acyclic_siblings`` compares siblings only; a package importing a module of its own that
    imports the package back is not a sibling cycle but still a partial-import trap.
    """
    code = (
        "import grimp, json\n"
        "g = grimp.build_graph('spurious_rewards', exclude_type_checking_imports=True)\n"
        "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m) & g.modules) for m in g.modules}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=_env(ROOT / "workflow"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    graph = {m: set(v) for m, v in json.loads(r.stdout).items()}
    assert len(graph) > 30, sorted(graph)  # the whole package, not a stray copy
    assert _cycles(graph) == []


def test_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}}) == [["a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
