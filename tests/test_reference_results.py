"""The committed reference results (`results/`, from `make run`): what a reader of the repository
sees without running anything. Every link and image of `results/summary.md` resolves to a file git
tracks, the summary opens with the findings in plain words, and its provenance names a clean commit
of this repository's history."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "results" / "summary.md"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def tracked() -> set[str]:
    res = _git("ls-files")
    if res.returncode != 0:
        pytest.skip("not a git checkout")
    return set(res.stdout.splitlines())


def test_every_link_and_image_of_the_summary_is_a_tracked_file(tracked):
    assert "results/summary.md" in tracked
    targets = [t for t in LINK.findall(SUMMARY.read_text(encoding="utf-8")) if "://" not in t and not t.startswith("#")]
    assert len(targets) >= 10, targets  # the figures and tables of every section
    missing = [t for t in targets if (Path("results") / t).as_posix() not in tracked]
    assert not missing, f"results/summary.md links to files git does not track: {missing}"
    images = [t for t in targets if t.endswith(".png")]
    assert images and all((ROOT / "results" / t).stat().st_size > 5_000 for t in images)


def test_the_summary_opens_with_the_findings_and_names_a_clean_commit_of_this_history():
    text = SUMMARY.read_text(encoding="utf-8")
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert heads[0] == "## Findings in plain words", heads[:3]
    (line,) = [x for x in text.splitlines() if x.startswith("- git commit:")]
    assert "uncommitted changes" not in line, line
    commit = re.search(r"`([0-9a-f]{40})`", line)
    assert commit, line
    if _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")
    anc = _git("merge-base", "--is-ancestor", commit.group(1), "HEAD")
    if anc.returncode == 128 and "shallow" in _git("rev-parse", "--is-shallow-repository").stdout.replace("true", "shallow"):
        pytest.skip("a shallow clone does not hold the reference commit")
    assert anc.returncode == 0, f"the summary's commit {commit.group(1)} is not in this repository's history"
    assert re.search(r"runs found (\d+)/\1\b", text), "a partial reference run"


def test_rewritten_results_do_not_make_the_source_dirty(tmp_path):
    """Every run rewrites the committed results/; only a change outside it is "uncommitted changes"."""
    from spurious_rewards import provenance

    def sh(*args: str) -> None:
        subprocess.run(args, cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "summary.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    sh("git", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "ref")
    assert provenance.git_dirty(tmp_path) is False
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    sh("git", "add", "dvc.lock")
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lock")
    (tmp_path / "results" / "summary.md").write_text("new\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert provenance.git_dirty(tmp_path) is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git_dirty(tmp_path) is True


def test_a_fresh_clone_finds_the_committed_results_as_the_lock_recorded(tmp_path):
    """dvc.lock is committed with the reference run: on a fresh clone the git-tracked outputs (summary,
    tables, figures, metrics, the study) match it; what is absent (data, runs, evaluations) is reported as
    not in the cache, never as modified."""
    import json
    import sys

    if _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, capture_output=True)
    res = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=clone, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    status = json.loads(res.stdout or "{}")
    tracked = ("results/summary.md", "results/aggregate", "results/figures", "results/metrics",
               "results/study.yaml", "results/plots/accuracy.csv")
    for stage, changes in status.items():
        for change in changes if isinstance(changes, list) else [changes]:
            outs = change.get("changed outs", {}) if isinstance(change, dict) else {}
            bad = {p: s for p, s in outs.items() if p in tracked and s != "not in cache"}
            assert not bad, f"stage {stage}: committed outputs differ from dvc.lock: {bad}"
    assert status, "no dvc.lock? a fresh clone lacks the run's data, so some stage must report it"
