"""The README's commands as a newcomer types them, after the two set-up commands.

Every shell line in a ```bash block of README.md is checked: its program must exist once
`.venv` is activated (as the README says to), and the quick ones (dry runs, config checks,
plans, --help, lint) are run for real in a fresh clone of the repository. A README command
that stops working fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

#: what a README command may start with besides the venv's programs
SHELL_WORDS = {"make", "source", "cd", "git", "tmux", "export", "tensorboard", "cp", "mkdir", "ls", "cat"}
#: patterns of commands quick enough to run in the test (no training, no downloads)
QUICK = [
    r"^snakemake\b.*(\s-n\b|--dry-run|--lint|--list-rules)",
    r"^spurious (check-config|plan)\b",
    r"^spurious fetch\b.*--dry-run",
    r"^spurious prune\b.*--dry-run",
    r"\s--help$",
]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            out += [c.strip() for c in line.split("&&") if c.strip()]
    return out


def test_readme_says_how_to_get_the_commands():
    text = (ROOT / "README.md").read_text()
    assert "source .venv/bin/activate" in text
    assert len(readme_commands()) > 15


def test_every_readme_command_names_a_program_that_exists():
    bindir = Path(sys.executable).parent
    for cmd in readme_commands():
        word = shlex.split(cmd)[0]
        if word in SHELL_WORDS or word.startswith(("./", "bash")):
            continue
        assert (bindir / word).exists() or shutil.which(word), f"README: {cmd!r}: {word} is not installed by make"


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("clone") / "spurious-rewards"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, timeout=300)
    return dest


def test_quick_readme_commands_work_verbatim_in_a_fresh_clone(clone):
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    quick = [c for c in readme_commands() if any(re.search(p, c) for p in QUICK)]
    assert len(quick) >= 5, quick
    for cmd in quick:
        res = subprocess.run(cmd, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"README command failed in a fresh clone: {cmd}\n{res.stdout[-2000:]}{res.stderr[-2000:]}"

