"""Honest reruns through the snakemake CLI: a change reruns every job it affects, in one call.

The link that used to be missing: evaluation depended on its checkpoints only through
``ancient()``, so a retrained run kept its old evaluations and the summary was built from them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import job_counts, run_snakemake, tiny_study, write_config

pytestmark = pytest.mark.slow

REWARDS = {
    "ground_truth": {"spec": "ground_truth", "labels": "true_labels", "variants": ["clip"]},
    "format": {"spec": "format", "labels": "true_labels", "variants": ["clip"]},
}
RUN = "toy-nocode/{reward}/clip/seed1"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_changing_a_reward_spec_reruns_training_evaluation_and_summary_in_one_call(workdir):
    cfg = tiny_study(rewards=REWARDS)
    wd = workdir(cfg)
    res = run_snakemake(wd, "--cores", "2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    results = wd / "results"
    evals = {r: results / "eval" / RUN.format(reward=r) / "summary.json" for r in REWARDS}
    before = {r: (p.stat().st_mtime_ns, digest(p)) for r, p in evals.items()}
    summary_before = (results / "summary.md").stat().st_mtime_ns
    metrics_before = digest(results / "train" / RUN.format(reward="format") / "metrics.jsonl")

    cfg["rewards"]["format"]["spec"] = "format AND no_python"
    write_config(wd, cfg)
    plan = run_snakemake(wd, "-n", "--quiet", "rules")
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = job_counts(plan.stdout)
    assert jobs.get("train_grpo") == 1 and jobs.get("evaluate_run") == 1 and jobs.get("aggregate_results") == 1, jobs

    res = run_snakemake(wd, "--cores", "2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # the changed run: retrained, re-evaluated; the other run: untouched
    assert digest(results / "train" / RUN.format(reward="format") / "metrics.jsonl") != metrics_before
    assert evals["format"].stat().st_mtime_ns > before["format"][0]
    assert (evals["ground_truth"].stat().st_mtime_ns, digest(evals["ground_truth"])) == before["ground_truth"]
    assert (results / "summary.md").stat().st_mtime_ns > summary_before
    # and nothing is left to do
    again = run_snakemake(wd, "-n", "--quiet", "rules")
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]
