"""summary.md rendered from its Jinja2 template (analysis/report.py): byte-identical to the string-built
summary it replaced, plus the plain-words findings at the top.

The golden files under tests/data/ were written by the string-concatenation code
(``aggregate.write_summary`` / ``audit_tables.markdown`` before the template) from the
same planted trees, so comparing against them proves the template changed no byte
but the lines that name the commit and the installed versions (masked on both sides)
and the findings section (new by design; cut before comparing, tested on its own).

Regenerate a golden file only for an intended change of the summary's text:
``SPURIOUS_WRITE_GOLDEN=1 pytest tests/test_summary_template.py`` (the tests then skip), and
review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import build_paper_tree

from spurious_rewards import config as cfgmod
from spurious_rewards.analysis import aggregate

DATA = Path(__file__).resolve().parent / "data"
FINDINGS = "## Findings in plain words"


def stable(text: str, cfg: dict) -> str:
    """The summary without what legitimately varies: commit, versions, config hash, the findings section."""
    text = re.sub(r"^- git commit: .*$", "- git commit: <commit>", text, flags=re.M)
    text = re.sub(r"^- packages: .*$", "- packages: <versions>", text, flags=re.M)
    text = text.replace(cfgmod.config_hash(cfg), "<config-hash>")
    if FINDINGS in text:
        head, rest = text.split(FINDINGS, 1)
        text = head + rest[rest.index("\n## "):].removeprefix("\n")
    return text


def check_golden(name: str, text: str, cfg: dict) -> None:
    path = DATA / name
    got = stable(text, cfg)
    if os.environ.get("SPURIOUS_WRITE_GOLDEN"):
        path.write_text(got, encoding="utf-8")
        pytest.skip(f"wrote {path}")
    want = path.read_text(encoding="utf-8")
    assert got == want, f"{name}: the rendered summary differs from the golden file"


def test_summary_is_byte_identical_to_the_golden_file(planted_study) -> None:
    cfg, _, paths = planted_study
    check_golden("summary_golden.md", paths["summary"].read_text(encoding="utf-8"), cfg)


def test_paper_study_summary_is_byte_identical_to_the_golden_file(tmp_path: Path) -> None:
    cfg = build_paper_tree(tmp_path)
    paths = aggregate.aggregate(cfg, tmp_path, n_boot=200)
    check_golden("summary_golden_paper.md", paths["summary"].read_text(encoding="utf-8"), cfg)


def test_empty_study_summary_is_byte_identical_to_the_golden_file(tmp_path: Path) -> None:
    from conftest import make_config

    cfg = make_config()
    paths = aggregate.aggregate(cfg, tmp_path, n_boot=50)
    check_golden("summary_golden_empty.md", paths["summary"].read_text(encoding="utf-8"), cfg)
