"""The DAG through its public entry point: the snakemake CLI (lint, dry runs, bad configs, data prep)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import job_counts, make_workdir

from spurious_rewards import config as cfgmod

ROOT = Path(__file__).resolve().parents[1]


def snakemake(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_lint_is_clean():
    res = snakemake("--lint")
    assert res.returncode == 0, res.stdout + res.stderr


def fresh_workdir(tmp_path: Path) -> Path:
    """A work dir like a fresh clone's: the shipped resources, no results (a dev's results/ would hide jobs)."""
    (tmp_path / "workflow").symlink_to(ROOT / "workflow")
    return tmp_path


def test_default_config_plans_the_organism_grid(tmp_path):
    wd = fresh_workdir(tmp_path)
    res = snakemake("-n", "--quiet", "rules", "--configfile", str(ROOT / "config.yaml"), "--directory", str(wd))
    assert res.returncode == 0, res.stderr
    counts = job_counts(res.stdout)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    n_runs = sum(len(r["variants"]) * len(r.get("models") or cfg["models"]) for r in cfg["rewards"].values()) \
        * len(cfg["seeds"])
    assert n_runs == 20  # 7 (reward, variant) cells x 3 organisms, no_python on the two that write code
    assert counts["train_grpo"] == n_runs
    assert counts["evaluate_run"] == n_runs
    assert counts["evaluate_base"] == len(cfg["models"])
    # the organisms are shipped: a fresh clone never rebuilds them
    assert "build_organism" not in counts
    # the audit: every base model once per audit rule; the probe on the organisms with a code prior
    for rule in ("audit_contamination", "evaluate_baselines"):
        assert counts[rule] == len(cfg["models"]), rule
    assert counts["probe_clip_bias"] == len(cfg["audit"]["clip_probe"]["models"]) == 2


def test_paper_config_plans_the_full_grid(tmp_path):
    wd = fresh_workdir(tmp_path)
    res = snakemake("-n", "--quiet", "rules", "--configfile", str(ROOT / "config/paper.yaml"), "--directory", str(wd))
    assert res.returncode == 0, res.stderr
    counts = job_counts(res.stdout)
    cfg = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    assert len(cfg["models"]) == 10 and len(cfg["seeds"]) == 3
    cells = sum(len(r["variants"]) * len(r.get("models") or cfg["models"]) for r in cfg["rewards"].values())
    assert counts["train_grpo"] == cells * 3
    # the random-reward sweep (Fig. 10) and the rollout-size-8 arm (Fig. 11 iii), on Qwen2.5-Math-7B only
    for reward in ("random_0.7", "random_0.3", "random_0.001", "random_0", "random_rollout8"):
        assert cfg["rewards"][reward]["models"] == ["Qwen2.5-Math-7B"]
    assert cfg["variants"]["rollout8"]["prompts_per_rollout"] == 8
    assert counts["evaluate_run"] == counts["train_grpo"]
    assert counts["evaluate_base"] == 10
    assert counts["label_majority_vote"] == 10
    assert counts["prepare_dataset"] == len(cfg["datasets"])
    assert counts["audit_contamination"] == counts["evaluate_baselines"] == 10
    # the probe only where a full-parameter fp32 step fits one 80 GB GPU
    assert counts["probe_clip_bias"] == len(cfg["audit"]["clip_probe"]["models"]) == 4
    # the mechanism map on the same models (those the memory plan fits on one GPU): 16 cells each
    assert counts["probe_mechanism"] == 4 * 16 and counts["aggregate_mechanism"] == 1
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c["grpo"].__setitem__("lrr", 1e-4), "unknown key 'grpo.lrr'"),
        (lambda c: c["models"]["toy-nocode"].__setitem__("template", "chatml"), "'chatml' is not allowed"),
        (lambda c: c["rewards"]["random"]["variants"].append("noclip"), "'noclip' is not a variant"),
        (lambda c: c["rewards"]["format"].__setitem__("spec", "format AND pyhton"), "pyhton"),
        (lambda c: c.__setitem__("backend", "verl"), "allowed values: trl, openrlhf"),
        (lambda c: c["models"]["toy-nocode"].update(path="Qwen/Qwen2.5 Math", organism=None), "nor a hub id"),
        # a local folder (by its form) that is not there: refused before any job, not inside one
        (lambda c: c["models"]["toy-nocode"].update(path="models/local/my-7b", organism=None),
         "'models/local/my-7b' is a local path, but no such folder exists"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, edit, expected):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    edit(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--configfile", str(bad), "--directory", str(tmp_path))
    assert res.returncode != 0
    assert expected in res.stdout + res.stderr
    assert f"{bad}: invalid config" in res.stdout + res.stderr  # the user's file, not common.smk
    assert not (tmp_path / "results").exists()


def test_yaml11_exponent_floats_are_numbers(tmp_path):
    """``lr: 1e-4`` is a string to YAML 1.1 (PyYAML, Snakemake); the config takes it as the number it means."""
    text = (ROOT / "config.yaml").read_text().replace("  lr: 1.0e-4", "  lr: 1e-4")
    assert "  lr: 1e-4" in text
    assert yaml.safe_load(text)["grpo"]["lr"] == "1e-4"
    wd = make_workdir(tmp_path / "wd", {})
    path = wd / "config.yaml"
    path.write_text(text)
    cfg = cfgmod.load(path)
    assert cfg["grpo"]["lr"] == 1e-4
    res = snakemake("-n", "--quiet", "rules", "--configfile", str(path), "--directory", str(wd))
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.slow
def test_prepare_data_writes_normalized_sets_offline(tmp_path):
    """The default config's data phase, from the generator and the one-shot example, with no network."""
    shutil.copytree(ROOT / "workflow/resources/fixtures", tmp_path / "workflow/resources/fixtures")
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    # add the paper's real-data loaders, pointed at the shipped fixtures (same code path as a hub id)
    paper = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    for name in ("deepscaler", "math500", "amc", "aime24", "aime25"):
        spec = paper["datasets"][name]
        spec["path"] = f"workflow/resources/fixtures/{name}"
        cfg["datasets"][name] = spec
    conf = tmp_path / "config.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    res = snakemake("--cores", "2", "prepare_data", "--configfile", str(conf), "--directory", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    for name in cfg["datasets"]:
        lines = (tmp_path / f"results/data/{name}.jsonl").read_text().splitlines()
        assert lines, name
        for line in lines:
            rec = json.loads(line)
            # a worked solution only where the source has one: the synthetic train set (`solutions: true`)
            # on every row, a hub set with `fields.solution` where that cell is not empty
            spec = cfg["datasets"][name]
            has = spec.get("solutions") or "solution" in (spec.get("fields") or {})
            assert {"id", "prompt", "answer", "source"} <= set(rec) <= {"id", "prompt", "answer", "source", "solution"}
            assert has or "solution" not in rec, name
            assert "solution" in rec or not spec.get("solutions"), name
            assert all(isinstance(v, str) for v in rec.values())
    aime25 = [json.loads(x) for x in (tmp_path / "results/data/aime25.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in aime25}) == len(aime25)


def test_readme_layout_table_names_real_files():
    """README's "What runs where" table matches the package layout: every module and rule file it names exists."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| Phase | Rule file |"):text.index("Every rule is one thin call")]
    pkg = ROOT / "workflow" / "spurious_rewards"
    names = re.findall(r"`([\w/.-]+\.(?:py|smk|yaml))`", table)
    assert len(names) > 20
    for name in names:
        if name.startswith("workflow/"):
            assert (ROOT / name).exists(), name
            continue
        hits = list(pkg.glob(name)) + list(pkg.glob(f"*/{name}"))
        assert hits, f"README names {name}, which is not in workflow/spurious_rewards/"


@pytest.mark.slow
def test_a_plain_install_validates_a_config(tmp_path):
    """``pip install .`` (not editable) carries the schema and the paper numbers as package data."""
    # a copy of the package's sources: setuptools builds in-tree (build/), which must not land in the checkout
    src = tmp_path / "src"
    shutil.copytree(ROOT / "workflow" / "spurious_rewards", src / "workflow" / "spurious_rewards",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    target = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(target), str(src)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    code = ("import spurious_rewards, sys; from spurious_rewards import config; "
            "from spurious_rewards.analysis import aggregate; "
            "assert spurious_rewards.__file__.startswith(sys.argv[1]), spurious_rewards.__file__; "
            "cfg = config.load(sys.argv[2]); assert aggregate.load_paper_numbers().shape[0] > 10; "
            "print(len(list(config.runs(cfg))))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    res = subprocess.run([sys.executable, "-c", code, str(target), str(ROOT / "config/paper.yaml")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert int(res.stdout.strip()) > 100


def test_an_infeasible_setting_fails_the_dry_run_naming_rule_and_setting(tmp_path):
    """The memory plan runs inside the DAG's validation: an fp32 7B TRL run on one 80 GB GPU never
    reaches a queue (snakemake -n already refuses it, with the rule, the estimate and what to change)."""
    cfg = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    cfg["backend"] = "trl"
    cfg["grpo"]["gpus"] = 1
    bad = tmp_path / "paper-trl-1gpu.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--configfile", str(bad), "--directory", str(tmp_path))
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "cannot fit" in out and "train_grpo (Qwen2.5-Math-7B" in out and "grpo.precision: bf16" in out, out[-3000:]
    assert not (tmp_path / "results").exists()
