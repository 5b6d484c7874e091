"""The package modules each DVC stage's jobs run, derived from the code (``python -m spurious_rewards.dvcdeps``).

DVC reruns a stage when one of its ``deps`` changes, so a stage that misses a module its
jobs import keeps stale results after an edit there (editing ``scoring/rewards.py`` did not
rerun ``evaluate``). The list is therefore computed, not written by hand: per stage, the
``spurious`` subcommands its rules' shell commands call (read from the ``.smk`` files in the
stage's deps and from its ``cmd``), plus what the Snakemake process itself imports (the
``import`` lines of those files), closed over the package's imports with :mod:`ast`:

* relative and absolute imports, at module level and lazily inside functions (a module's
  every import counts: which of its functions a job calls is not known statically);
* of ``cli.py`` only its module level, ``build_parser``, ``main`` and the subcommand's own
  ``cmd_*`` function, so a stage depends on the subcommands it runs, not on all of them;
* modules named in string constants (``"spurious_rewards.training.trl_backend:train_trl"``
  for :func:`importlib.import_module`, the scoring workers' ``-c`` code) and sibling files
  named as ``"<name>.py"`` (the OpenRLHF reward file, copied by path);
* importing a submodule runs its parents' ``__init__.py``: those count too;
* package data a module reads (:data:`DATA_FILES`: the config schema, the paper's numbers).

``python -m spurious_rewards.dvcdeps`` checks dvc.yaml (exit 1 naming each missing or extra entry) and
``--write`` rewrites each stage's ``workflow/spurious_rewards/`` entries in place, leaving
every other line (comments, the other deps) as it is. tests/test_dvc.py runs the check. Not a ``spurious`` subcommand: cli.py's parser is in every
stage's closure, and this tool is no part of any job.
"""

from __future__ import annotations

import argparse
import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PACKAGE = "spurious_rewards"
#: the package folder as dvc.yaml spells its paths (relative to the repository root)
PACKAGE_REL = f"workflow/{PACKAGE}"

#: non-Python files a module reads at run time, relative to the package folder
DATA_FILES: dict[str, list[str]] = {
    f"{PACKAGE}.config": ["schemas/config.schema.yaml"],
    f"{PACKAGE}.analysis.aggregate": ["resources/paper_numbers.csv"],
}

_SUBCOMMAND = re.compile(r"\bspurious ([a-z][a-z0-9-]*)")
_MODULE_IN_STRING = re.compile(rf"\b{PACKAGE}(?:\.\w+)*")
_SIBLING_PY = re.compile(r"^\w+\.py$")
_IMPORT_LINE = re.compile(rf"^\s*((?:from\s+{PACKAGE}[\w.]*\s+import\s+[^#\n]+)|(?:import\s+{PACKAGE}[\w. ,]*))",
                          re.M)


@dataclass
class Package:
    """The package's source tree, parsed once (``root``: the folder holding ``__init__.py``)."""

    root: Path
    _trees: dict[str, ast.Module] = field(default_factory=dict)
    _imports: dict[str, set[str]] = field(default_factory=dict)

    def file(self, module: str) -> Path | None:
        """The file of ``module`` (a package's ``__init__.py``), or None when no such module exists."""
        parts = module.split(".")
        if parts[0] != PACKAGE:
            return None
        base = self.root.joinpath(*parts[1:])
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
        if base.with_suffix(".py").is_file() and parts[1:]:
            return base.with_suffix(".py")
        return None

    def is_package(self, module: str) -> bool:
        f = self.file(module)
        return f is not None and f.name == "__init__.py"

    def tree(self, module: str) -> ast.Module:
        if module not in self._trees:
            path = self.file(module)
            assert path is not None, module
            self._trees[module] = ast.parse(path.read_text(), filename=str(path))
        return self._trees[module]

    def imports(self, module: str) -> set[str]:
        """Every package module ``module`` imports or names, anywhere in it (memoized)."""
        if module not in self._imports:
            tree = self.tree(module)
            self._imports[module] = _named(self, module, [tree], _docstrings(tree))
        return self._imports[module]

    def module_of(self, path: Path) -> str:
        rel = path.relative_to(self.root).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        return ".".join([PACKAGE, *parts])

    def rel(self, module_or_data: str | Path) -> str:
        """A module's file (or a package data file) as dvc.yaml spells it."""
        path = self.file(module_or_data) if isinstance(module_or_data, str) else module_or_data
        assert path is not None
        return f"{PACKAGE_REL}/{path.relative_to(self.root).as_posix()}"


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (they name modules in prose, not imports)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _named(pkg: Package, module: str, nodes: list[ast.AST], docstrings: set[int]) -> set[str]:
    """Package modules that ``nodes`` (of ``module``) import or name."""
    found: set[str] = set()
    here = module if pkg.is_package(module) else module.rpartition(".")[0]
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                for m in _MODULE_IN_STRING.finditer(node.value):
                    name = m.group(0)
                    while name and pkg.file(name) is None:
                        name = name.rpartition(".")[0]
                    if name:
                        found.add(name)
                if _SIBLING_PY.match(node.value):
                    sibling = pkg.file(module).with_name(node.value)  # type: ignore[union-attr]
                    if sibling.is_file():
                        found.add(pkg.module_of(sibling))
    return {m for m in found if pkg.file(m) is not None}


def closure(pkg: Package, roots: set[str]) -> set[str]:
    """Every package module that importing ``roots`` (and running any of their code) can load."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parents' __init__.py
        todo.extend(pkg.imports(module))
    return seen


def subcommand_functions(pkg: Package) -> dict[str, str]:
    """``spurious`` subcommand -> its ``cmd_*`` function in cli.py (from ``build_parser``)."""
    tree = pkg.tree(f"{PACKAGE}.cli")
    build = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build_parser")
    out: dict[str, str] = {}
    current = None
    for node in ast.walk(build):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "add_parser" and node.args and isinstance(node.args[0], ast.Constant):
                current = node.args[0].value
            elif node.func.attr == "set_defaults" and current:
                for kw in node.keywords:
                    if kw.arg == "func" and isinstance(kw.value, ast.Name):
                        out[current] = kw.value.id
    return out


def subcommand_closure(pkg: Package, subcommand: str) -> set[str]:
    """The modules ``spurious <subcommand>`` can load: cli.py's common part plus its own function."""
    cli = f"{PACKAGE}.cli"
    funcs = subcommand_functions(pkg)
    if subcommand not in funcs:
        raise ValueError(f"spurious {subcommand}: no such subcommand; known: {', '.join(sorted(funcs))}")
    tree = pkg.tree(cli)
    wanted = {"build_parser", "main", funcs[subcommand]}
    nodes = [n for n in tree.body
             if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) or n.name in wanted]
    roots = {cli} | _named(pkg, cli, nodes, _docstrings(tree))
    # cli's own other functions are not run: close over what the wanted nodes name, not over cli itself
    return {cli} | closure(pkg, roots - {cli})


def smk_imports(pkg: Package, text: str) -> set[str]:
    """Package modules a Snakefile or .smk file imports (its Python ``import`` lines)."""
    found: set[str] = set()
    for line in _IMPORT_LINE.findall(text):
        try:
            found |= _named(pkg, PACKAGE, [ast.parse(line.strip())], set())
        except SyntaxError:
            continue
    return found


def stage_files(pkg: Package, repo: Path, stage: dict) -> list[str]:
    """The package files (sorted, dvc.yaml spelling) a dvc.yaml stage's jobs run."""
    cmds = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
    texts = list(cmds)
    roots: set[str] = set()
    for dep in stage.get("deps", []):
        if dep == "Snakefile" or dep.endswith(".smk"):
            text = (repo / dep).read_text()
            texts.append(text)
            roots |= smk_imports(pkg, text)
    known = subcommand_functions(pkg)
    modules = closure(pkg, roots) if roots else set()
    for text in texts:
        for sub in _SUBCOMMAND.findall(text):
            if sub in known:
                modules |= subcommand_closure(pkg, sub)
    files = {pkg.rel(m) for m in modules}
    for m in modules:
        files.update(pkg.rel(pkg.root / d) for d in DATA_FILES.get(m, []))
    return sorted(files)


def expected(repo: Path, pkg_root: Path | None = None) -> dict[str, list[str]]:
    """stage -> the package files its deps must list, for ``repo``'s dvc.yaml."""
    pkg = Package(pkg_root or repo / PACKAGE_REL)
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    return {name: stage_files(pkg, repo, stage) for name, stage in spec["stages"].items()}


def problems(repo: Path, pkg_root: Path | None = None) -> list[str]:
    """What dvc.yaml's deps miss or list in excess, one line per entry ([] when in step)."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    out = []
    for name, want in expected(repo, pkg_root).items():
        have = {d for d in spec["stages"][name].get("deps", []) if d.startswith(PACKAGE_REL + "/")}
        out += [f"stage {name}: missing dep {f} (its jobs import it)" for f in want if f not in have]
        out += [f"stage {name}: dep {f} is not imported by its jobs" for f in sorted(have - set(want))]
    return out


def rewrite(repo: Path, pkg_root: Path | None = None) -> str:
    """dvc.yaml with every stage's package entries replaced by the derived ones (other lines kept)."""
    want = expected(repo, pkg_root)
    lines = (repo / "dvc.yaml").read_text().splitlines(keepends=True)
    out: list[str] = []
    stage = None
    in_stages = in_deps = False
    pending: list[str] = []  # the derived entries of the current deps block, written at its first package line
    item = re.compile(rf"^(\s+)- {re.escape(PACKAGE_REL)}/")
    for line in lines:
        if re.match(r"^\S", line):
            in_stages = line.startswith("stages:")
            stage, in_deps = None, False
        elif in_stages and (m := re.match(r"^  (\w[\w-]*):\s*$", line)):
            stage, in_deps = m.group(1), False
        elif stage and re.match(r"^    deps:\s*$", line):
            in_deps, pending = True, list(want[stage])
            out.append(line)
            continue
        elif stage and re.match(r"^    \w", line):
            if in_deps and pending:  # no package entry yet: append the derived ones to the block
                out += [f"      - {f}\n" for f in pending]
            in_deps, pending = False, []
        if in_deps and (m := item.match(line)):
            out += [f"{m.group(1)}- {f}\n" for f in pending]
            pending = []
            continue
        out.append(line)
    text = "".join(out)
    yaml.safe_load(text)  # still YAML
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spurious_rewards.dvcdeps", description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path("."), help="the repository root (holds dvc.yaml)")
    ap.add_argument("--package", type=Path, default=None,
                    help=f"the package source to analyse (default: <repo>/{PACKAGE_REL})")
    ap.add_argument("--write", action="store_true", help="rewrite dvc.yaml's package deps instead of checking")
    args = ap.parse_args(argv)
    if args.write:
        (args.repo / "dvc.yaml").write_text(rewrite(args.repo, args.package))
    found = problems(args.repo, args.package)
    for p in found:
        print(p)
    if not found:
        print("dvc.yaml: every stage lists the package modules its jobs import")
    return 1 if found else 0



if __name__ == "__main__":
    raise SystemExit(main())
