"""Parse-check OpenRLHF commands with OpenRLHF's own parser (runs inside the isolated OpenRLHF venv).

Usage: ``parse_check.py COMMANDS.json OUT.json``. Reads ``{"commands": [[python, "-m",
module, *args], ...]}`` and writes ``{"results": [...]}`` to OUT.json (not stdout, where
DeepSpeed and friends print at import), one result per command: ``{"ok": true, "args": {...}}`` with the fully validated,
nested namespace, or ``{"ok": false, "error": ...}``. Why not ``--help`` or a dry run:
the module's ``__main__`` block is where OpenRLHF parses *and* validates (its asserts on
GPU counts, packing, estimators...), then calls ``train(args)``. We import the module once
(the slow part: ray, deepspeed, transformers), then execute only that block per command
with ``train`` replaced by a function that records the namespace, so hundreds of commands
cost one import. A command of our launcher has its ``--spurious.fidelity`` flag taken out by
the launcher's own parser, its patches installed on the real OpenRLHF modules (reported as
``"patches"``), and the rest parsed as above. Needs the vllm/flash_attn stubs beside this
file and the repository's ``workflow/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import json
import sys
from types import SimpleNamespace
from typing import Any

#: Our launcher (``python -m spurious_rewards.training.openrlhf_patches --spurious.fidelity JSON <OpenRLHF argv>``).
LAUNCHER = "spurious_rewards.training.openrlhf_patches"


class _Parsed(Exception):
    """Raised by the fake ``train`` to stop after parsing and validation."""

    def __init__(self, args: Any) -> None:
        super().__init__("parsed")
        self.namespace = args


def _plain(x: Any) -> Any:
    if isinstance(x, SimpleNamespace):
        return {k: _plain(v) for k, v in vars(x).items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


def _main_block(module: Any) -> Any:
    """The compiled body of the module's ``if __name__ == "__main__":`` block."""
    path = module.__file__
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    for node in tree.body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "__name__"
        ):
            return compile(ast.Module(body=node.body, type_ignores=[]), path, "exec")
    raise RuntimeError(f"{path}: no __main__ block")


def check(argv: list[str], module: Any, code: Any) -> dict[str, Any]:
    def fake_train(args: Any) -> None:
        raise _Parsed(args)

    g = dict(vars(module))
    g["train"] = fake_train
    g["__name__"] = "__main__"
    out, err = io.StringIO(), io.StringIO()
    old_argv = sys.argv
    sys.argv = [f"{module.__name__}.py", *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(code, g)
    except _Parsed as p:
        return {"ok": True, "args": _plain(p.namespace), "printed": out.getvalue()}
    except SystemExit as exc:  # argparse: unknown or malformed flags
        return {"ok": False, "error": f"exit {exc.code}: {err.getvalue().strip()}"}
    except Exception as exc:  # OpenRLHF's own post-parse asserts
        import traceback

        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    finally:
        sys.argv = old_argv
    return {"ok": False, "error": "train(args) was never called"}


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as fh:
        request = json.load(fh)
    modules: dict[str, tuple[Any, Any]] = {}
    results = []
    for cmd in request["commands"]:
        if len(cmd) < 3 or cmd[1] != "-m":
            results.append({"ok": False, "error": f"not a 'python -m module ...' command: {cmd[:3]}"})
            continue
        name, argv, patches = cmd[2], cmd[3:], None
        if name == LAUNCHER:  # our launcher: its flag out, its patches applied to the real modules
            launcher = importlib.import_module(LAUNCHER)
            try:
                options, argv = launcher.split_argv(argv)
                patches = launcher.check_targets(options)
            except Exception as exc:
                results.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
                continue
            name = launcher.OPENRLHF_ENTRY
        if name not in modules:
            mod = importlib.import_module(name)
            modules[name] = (mod, _main_block(mod))
        result = check(argv, *modules[name])
        if patches is not None:
            result["patches"] = patches
        results.append(result)
    with open(sys.argv[2], "w", encoding="utf-8") as fh:
        json.dump({"results": results}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
