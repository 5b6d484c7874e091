"""DVC on top of Snakemake (dvc.yaml, params.yaml), with a real `dvc` in a temporary git repository.

The repository's pipeline files are copied into a fresh git repo with a toy config
(conftest's `toy_study`: one organism, two rewards, two GRPO steps; a few minutes on 2
cores) and the study and phase stages are reproduced. Which Snakemake jobs ran is read
from their benchmark files (every rule writes one per job), so the tests can say exactly
what a change reruns. Tests that change the study work on their own copy of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from conftest import DVC_STAGES, ROOT, dvc, jobs_since, snakemake_in, tool_env

from spurious_rewards import config as cfgmod
from spurious_rewards import dvcdeps

PHASES = DVC_STAGES[1:]


def stage_status(repo) -> dict:
    """`dvc status --json`: stage name -> what changed (empty when everything is up to date)."""
    return json.loads(dvc(repo, "status", "--json").stdout or "{}")


# ------------------------------------------------------------ without running --


def test_dvc_yaml_matches_the_workflow_and_config():
    """Every phase runs a phase target on params.yaml; its deps exist; its params are study keys."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert list(spec["stages"]) == DVC_STAGES
    study = cfgmod.load(ROOT / "params.yaml")
    rules = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules"], cwd=ROOT, capture_output=True,
                           text=True, env=tool_env())
    assert rules.returncode == 0, rules.stderr
    assert spec["stages"]["study"]["cmd"] == "spurious check-config params.yaml --out results/study.yaml"
    for name in PHASES:
        stage = spec["stages"][name]
        cmds = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
        target = re.fullmatch(r"snakemake (\w+) --cores all --configfile params.yaml", cmds[0])
        assert target, (name, cmds[0])
        assert target.group(1) in rules.stdout.split(), f"stage {name}: no rule {target.group(1)}"
        for dep in stage["deps"]:
            assert (ROOT / dep).exists() or dep.startswith("results/"), (name, dep)
        # the resolved study, never a study file itself: switching `extends:` keeps dvc.yaml as is
        [entry] = stage["params"]
        [(path, keys)] = entry.items()
        assert path == "results/study.yaml", name
        for key in keys or []:
            assert key in study, f"stage {name}: params key {key!r} is not a key of the resolved study"
        for out in stage["outs"]:
            opath, opts = (out, {}) if isinstance(out, str) else next(iter(out.items()))
            # directories Snakemake fills job by job must survive DVC's pre-run cleanup
            if name != "aggregate":
                assert opts.get("persist") is True, (name, opath)
    assert spec["metrics"] == ["results/metrics"]
    assert "results/plots/accuracy.csv" in [next(iter(p)) if isinstance(p, dict) else p for p in spec["plots"]]


def test_params_yaml_is_a_small_overlay_of_config_yaml():
    """DVC's params file only names the study: what it resolves to is config.yaml, no copy."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params == {"extends": "config.yaml"}
    assert cfgmod.read(ROOT / "params.yaml") == yaml.safe_load((ROOT / "config.yaml").read_text())
    # what the study stage's deps cover: every shipped study file
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["study"]["deps"]
    assert {"params.yaml", "config.yaml", "config"} <= set(deps)


def test_dvc_config_links_the_cache_instead_of_copying():
    res = subprocess.run([sys.executable, "-m", "dvc", "config", "cache.type"], cwd=ROOT, capture_output=True,
                         text=True, env=tool_env())
    assert res.stdout.strip() == "hardlink,symlink"


def test_stage_deps_cover_the_import_closure_of_their_jobs():
    """Each stage lists exactly the package files its jobs' subcommands (and Snakemake) import."""
    assert dvcdeps.problems(ROOT) == []
    deps = {n: s["deps"] for n, s in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()}
    # the bug this guards against: evaluation grades with the rewards module, the aggregation
    # reads the paper's numbers, every stage validates with the schema
    assert "workflow/spurious_rewards/scoring/rewards.py" in deps["evaluate"]
    assert "workflow/spurious_rewards/resources/paper_numbers.csv" in deps["aggregate"]
    assert all("workflow/spurious_rewards/schemas/config.schema.yaml" in d for d in deps.values())
    # and the closure is per stage: the figures are the aggregation's, and the audit's (the mechanism
    # map's checkpoint, aggregate_mechanism, runs there: its flagged cells choose the checking runs)
    assert [n for n, d in deps.items() if "workflow/spurious_rewards/analysis/figures.py" in d] == [
        "audit", "aggregate"]
    assert not any("workflow/spurious_rewards/analysis/figures.py" in deps[n] for n in ("data", "train", "evaluate"))
    # --write is a fixpoint that keeps every comment
    assert dvcdeps.rewrite(ROOT) == (ROOT / "dvc.yaml").read_text()


def test_a_new_lazy_import_is_a_missing_dep(tmp_path):
    """Add an import inside a function of a module the evaluate jobs run: the check names the new dep."""
    pkg = tmp_path / "spurious_rewards"
    shutil.copytree(ROOT / "workflow/spurious_rewards", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    mod = pkg / "evaluation" / "evaluate.py"
    mod.write_text(mod.read_text() + "\n\ndef _extra():\n    from ..analysis import figures\n\n    return figures\n")
    found = dvcdeps.problems(ROOT, pkg_root=pkg)
    assert "stage evaluate: missing dep workflow/spurious_rewards/analysis/figures.py (its jobs import it)" in found
    assert not any(p.startswith("stage data:") for p in found), found
    # and the command line says so with exit code 1
    res = subprocess.run([sys.executable, "-m", "spurious_rewards.dvcdeps", "--repo", str(ROOT), "--package", str(pkg)],
                         capture_output=True, text=True, env=tool_env())
    assert res.returncode == 1 and "analysis/figures.py" in res.stdout, res.stdout + res.stderr


# --------------------------------------------------------------- real runs --


@pytest.mark.slow
def test_repro_runs_every_stage_once(toy_study):
    out = toy_study.repro.stdout
    for stage in DVC_STAGES:
        assert f"Running stage '{stage}'" in out, stage
    m = toy_study.model
    assert toy_study.repro_jobs == sorted(
        [
            "aggregate_results",
            f"audit_contamination/{m}",
            f"evaluate_base/{m}",
            f"evaluate_baselines/{m}",
            f"evaluate_run/{m}/ground_truth/clip/seed1",
            f"evaluate_run/{m}/random/clip/seed1",
            "prepare_dataset/arith_test",
            "prepare_dataset/one_shot",
            "prepare_dataset/train",
            f"probe_clip_bias/{m}",
            f"train_grpo/{m}/ground_truth/clip/seed1",
            f"train_grpo/{m}/random/clip/seed1",
        ]
    ), toy_study.repro_jobs
    print(f"first dvc repro: {toy_study.repro_seconds:.0f} s")
    assert "up to date" in dvc(toy_study.repo, "status").stdout
    # the study DVC tracks is the toy config, resolved through params.yaml
    study = yaml.safe_load((toy_study.repo / "results/study.yaml").read_text())
    assert list(study["models"]) == [m] and study["grpo"]["steps"] == 2
    # a second repro finds nothing to do, in DVC and in Snakemake
    t0 = time.time()
    again = dvc(toy_study.repo, "repro")
    assert all(f"Stage '{p}' didn't change" in again.stdout for p in DVC_STAGES), again.stdout
    assert jobs_since(toy_study.repo, t0) == []


@pytest.mark.slow
def test_metrics_and_plots_show(toy_study, tmp_path):
    repo = toy_study.repo
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    # one entry per revision; the workspace's key is "" in dvc 3.67
    mfile = f"results/metrics/{toy_study.model}.json"
    metrics = next(iter(shown.values()))["data"][mfile]["data"]
    assert "base_accuracy" in metrics
    for reward in ("ground_truth", "random"):
        assert -1.0 <= metrics[reward] <= 1.0
    # the table a person reads: a row per model file, a column per metric
    table = dvc(repo, "metrics", "show").stdout.splitlines()
    assert table[0].split()[:3] == ["Path", "base_accuracy", "ground_truth"] and table[1].startswith(mfile)
    assert not any("provenance" in line for line in table), table  # the sidecars are .dvcignore'd
    # metrics are `cache: false`, i.e. in git: diffing against a commit needs no pull
    diff = json.loads(dvc(repo, "metrics", "diff", "HEAD", "--all", "--json").stdout)
    old = {k: v.get("old") for k, v in diff.get(mfile, {}).items()}
    assert old == metrics, f"{mfile} is not in the last commit (is it git-ignored?)"
    plots = json.loads(dvc(repo, "plots", "show", "--json").stdout)["data"]
    # the accuracy curves through .dvc/plots/accuracy_by_run.json: one line per (model, reward)
    curve = plots["results/plots/accuracy.csv"][0]["content"]
    assert curve["encoding"]["color"]["field"] == "reward" and curve["encoding"]["strokeDash"]["field"] == "model"
    assert len(curve["data"]["values"]) == 2 * 3  # two rewards x steps 0, 1, 2
    assert {"results/figures/accuracy_vs_step.png", "results/figures/code_frequency_vs_step.png"} <= set(plots)
    dvc(repo, "plots", "show", "-o", str(tmp_path / "plots"))
    assert "accuracy_vs_step.png" in (tmp_path / "plots/index.html").read_text()


@pytest.mark.slow
def test_cache_hardlinks_checkpoints(toy_study):
    weights = (
        toy_study.repo / f"results/train/{toy_study.model}/random/clip/seed1/checkpoints/step_1/model.safetensors"
    )
    md5 = hashlib.md5(weights.read_bytes()).hexdigest()
    cached = toy_study.repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    # the workspace file IS the cache object: no second copy of every checkpoint
    assert os.path.samefile(weights, cached)
    assert weights.stat().st_nlink >= 2
    # DVC protects linked files (read-only): an in-place edit would corrupt the cache
    assert not weights.stat().st_mode & 0o222


@pytest.mark.slow
def test_changing_one_reward_reruns_only_its_jobs(toy_study_copy):
    """`dvc exp run -S` on one reward's spec: params.yaml gets the override, config.yaml is untouched,
    and only that reward's training, its evaluation and the aggregation run."""
    repo, m = toy_study_copy.repo, toy_study_copy.model
    config_before = (repo / "config.yaml").read_text()
    t0 = time.time()
    time.sleep(0.05)
    # `++`: add the key (params.yaml does not have it yet) or replace it
    res = dvc(repo, "exp", "run", "-S", "++rewards.random.spec='random(0.3)'", timeout=1800)
    assert "Stage 'data' didn't change" in res.stdout and "Stage 'audit' didn't change" in res.stdout
    assert jobs_since(repo, t0) == [
        "aggregate_results",
        f"evaluate_run/{m}/random/clip/seed1",
        f"train_grpo/{m}/random/clip/seed1",
    ], res.stdout[-4000:]
    assert (repo / "config.yaml").read_text() == config_before
    params = (repo / "params.yaml").read_text()
    assert yaml.safe_load(params) == {"extends": "config.yaml", "rewards": {"random": {"spec": "random(0.3)"}}}
    # DVC's rewrite kept params.yaml's comments
    assert params.startswith("# DVC's params file")
    diff = dvc(repo, "params", "diff").stdout
    assert "rewards.random.spec" in diff and "random(0.3)" in diff


@pytest.mark.slow
def test_switching_the_study_is_editing_extends(toy_study_copy):
    """params.yaml pointed at an overlay of the toy study that changes only the clipping probe:
    the audit and the aggregation rerun, nothing else."""
    repo, m = toy_study_copy.repo, toy_study_copy.model
    (repo / "config/toy-more-draws.yaml").write_text("extends: ../config.yaml\naudit:\n  clip_probe:\n    draws: 3\n")
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(text.replace("extends: config.yaml", "extends: config/toy-more-draws.yaml"))
    changed = stage_status(repo)
    assert set(changed) == {"study"}, changed  # the phases' params are known only once the study is resolved
    t0 = time.time()
    time.sleep(0.05)
    res = dvc(repo, "repro", timeout=1800)
    for stage in ("data", "train", "evaluate"):
        assert f"Stage '{stage}' didn't change" in res.stdout, stage
    assert jobs_since(repo, t0) == ["aggregate_results", f"probe_clip_bias/{m}"], res.stdout[-4000:]
    assert yaml.safe_load((repo / "results/study.yaml").read_text())["audit"]["clip_probe"]["draws"] == 3


@pytest.mark.slow
def test_editing_a_module_reruns_the_stages_that_import_it(toy_study_copy):
    """Bug 4: a change in scoring/rewards.py alone makes DVC rerun the stages whose jobs grade or
    validate with it (every one: config validation parses reward specs), one in the figures only
    the stages that draw (the aggregation, and the audit, whose mechanism-map checkpoint draws its map)."""
    repo = toy_study_copy.repo
    with open(repo / "workflow/spurious_rewards/analysis/figures.py", "a") as fh:
        fh.write("\n# an edit\n")
    assert set(stage_status(repo)) == {"audit", "aggregate"}
    with open(repo / "workflow/spurious_rewards/scoring/rewards.py", "a") as fh:
        fh.write("\n# an edit\n")
    assert set(stage_status(repo)) == set(DVC_STAGES)


@pytest.mark.slow
def test_checkout_does_not_reevaluate_checkpoints(toy_study_copy):
    """Checkpoints restored by `dvc checkout` (or a pull: new mtimes) are not evaluated again."""
    repo = toy_study_copy.repo
    shutil.rmtree(repo / "results/train")
    shutil.rmtree(repo / "results/eval")
    dvc(repo, "checkout")
    assert "up to date" in dvc(repo, "status").stdout
    # a pull on another machine gives every restored file a new mtime: make the
    # checkpoints newer than the evaluations that read them
    later = time.time() + 60
    for path in (repo / "results/train").rglob("*"):
        if not path.is_symlink():
            os.utime(path, (later, later))
    for target in ("evaluate_all", "train_all"):
        res = snakemake_in(repo, "-n", target)
        assert "Nothing to be done" in res.stdout + res.stderr, f"{target}:\n{res.stdout[-4000:]}"
