"""DVC on top of Snakemake (dvc.yaml), with a real `dvc` in a temporary git repository.

The repository's pipeline files are copied into a fresh git repo with a tiny
config (one organism, two rewards, two GRPO steps; ~2 minutes on 2 cores) and
the four phase stages are reproduced. Which Snakemake jobs ran is read from
their benchmark files (every rule writes one per job), so the tests can say
exactly what a change reruns.

`toy_study()` is also the toy run tests/test_report.py builds its report from:
it is built once per pytest session, by whichever module asks first.
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
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# What a clone of the project needs to run the pipeline (untracked files included,
# so the copy, unlike a `git clone`, also tests work not committed yet).
SOURCES = [
    "Snakefile",
    "dvc.yaml",
    ".dvcignore",
    ".gitignore",
    "workflow",
    "bin",
    "envs",
    "profiles/default",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",
]
PHASES = ["data", "train", "evaluate", "audit", "aggregate"]


def tool_env() -> dict[str, str]:
    """dvc's stage commands call `snakemake` from PATH: put this interpreter's bin/ first."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["DVC_NO_ANALYTICS"] = "1"
    env.update(
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.invalid",
    )
    return env


def sh(repo: Path, *cmd: str, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(list(cmd), cwd=repo, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-6000:]}\n{res.stderr[-6000:]}"
    return res


def dvc(repo: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return sh(repo, sys.executable, "-m", "dvc", *args, **kw)


def snakemake(repo: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return sh(repo, sys.executable, "-m", "snakemake", *args, **kw)


def toy_config() -> dict:
    """The default study cut down: one shipped organism, rewards ground_truth and random, 2 GRPO steps."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    name, model = next((n, m) for n, m in cfg["models"].items() if (ROOT / m["path"]).is_dir())
    cfg["models"] = {name: model}
    cfg["seeds"] = [1]
    cfg["datasets"]["train"]["n"] = 32
    cfg["datasets"]["arith_test"]["n"] = 16
    cfg["rewards"] = {
        "ground_truth": cfg["rewards"]["ground_truth"],
        "random": {**cfg["rewards"]["random"], "variants": ["clip"]},
    }
    cfg["grpo"].update(
        steps=2,
        save_every=1,
        prompts_per_rollout=2,
        group_size=4,
        mini_batch=4,
        micro_batch=4,
        max_new_tokens=32,
    )
    cfg["evaluation"]["max_new_tokens"] = 32
    main = next(iter(cfg["benchmarks"]))
    cfg["benchmarks"] = {main: {**cfg["benchmarks"][main], "samples": 2, "pass_at": [1, 2]}}
    cfg["datasets"].pop("clean_l2", None)
    # the audit at its smallest: every rule runs, on a few problems and draws
    cfg["audit"] = {
        "contamination": {"fraction": 0.6, "max_new_tokens": 16, "limit": 6},
        "baselines": {"templates": ["chat", "plain", "few_shot"], "shots": 2},
        "clean": [main],
        "clip_probe": {"draws": 2, "eval_problems": 4, "eval_samples": 1},
    }
    return cfg


@dataclass
class ToyStudy:
    repo: Path
    model: str
    repro: subprocess.CompletedProcess
    repro_jobs: list[str]
    repro_seconds: float


_STUDY: ToyStudy | None = None


def toy_study(tmp_path_factory: pytest.TempPathFactory) -> ToyStudy:
    """A git + DVC repo of the pipeline with the toy config, after one `dvc repro` (built once per session)."""
    global _STUDY
    if _STUDY is None:
        repo = tmp_path_factory.mktemp("toy-study")
        for rel in SOURCES:
            src, dst = ROOT / rel, repo / rel
            if src.is_dir():
                shutil.copytree(
                    src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"), symlinks=True
                )
            elif src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        cfg = toy_config()
        (repo / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        sh(repo, "git", "init", "-q")
        sh(repo, "git", "add", "-A")
        sh(repo, "git", "commit", "-qm", "toy study")
        t0 = time.time()
        time.sleep(0.05)  # benchmark mtimes strictly after t0 on coarse clocks
        repro = dvc(repo, "repro", timeout=1800)
        seconds = time.time() - t0
        jobs = jobs_since(repo, t0)
        # commit what a user commits: dvc.lock and the small cache: false outputs
        sh(repo, "git", "add", "-A")
        sh(repo, "git", "commit", "-qm", "toy study results")
        _STUDY = ToyStudy(repo, next(iter(cfg["models"])), repro, jobs, seconds)
    return _STUDY


def jobs_since(repo: Path, t0: float) -> list[str]:
    """The Snakemake jobs that ran since t0: `<rule>/<wildcards>` of every benchmark file written since."""
    bench = repo / "benchmarks"
    return sorted(
        str(p.relative_to(bench).with_suffix("")) for p in bench.rglob("*.tsv") if p.stat().st_mtime > t0
    )


# ------------------------------------------------------------ without running --


def test_dvc_yaml_matches_the_workflow_and_config():
    """Every stage calls an existing phase target; its deps exist; its params are config keys."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert list(spec["stages"]) == PHASES
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    rules = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=tool_env(),
    )
    assert rules.returncode == 0, rules.stderr
    for name, stage in spec["stages"].items():
        cmds = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
        target = re.fullmatch(r"snakemake --cores all (\w+)", cmds[0])
        assert target, (name, cmds[0])
        assert target.group(1) in rules.stdout.split(), f"stage {name}: no rule {target.group(1)}"
        for dep in stage["deps"]:
            assert (ROOT / dep).exists() or dep.startswith("results/"), (name, dep)
        for entry in stage["params"]:
            for keys in entry.values():
                for key in keys or []:
                    assert key in config, f"stage {name}: params key {key!r} is not in config.yaml"
        for out in stage["outs"]:
            path, opts = (out, {}) if isinstance(out, str) else next(iter(out.items()))
            # directories Snakemake fills job by job must survive DVC's pre-run cleanup
            if name != "aggregate":
                assert opts.get("persist") is True, (name, path)
    assert spec["metrics"] == ["results/metrics.json"]
    assert "results/plots/accuracy.csv" in [
        next(iter(p)) if isinstance(p, dict) else p for p in spec["plots"]
    ]


def test_dvc_config_links_the_cache_instead_of_copying():
    res = subprocess.run(
        [sys.executable, "-m", "dvc", "config", "cache.type"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=tool_env(),
    )
    assert res.stdout.strip() == "hardlink,symlink"


# --------------------------------------------------------------- real runs --


@pytest.mark.slow
def test_repro_runs_every_phase_once(tmp_path_factory):
    study = toy_study(tmp_path_factory)
    out = study.repro.stdout
    for phase in PHASES:
        assert f"Running stage '{phase}'" in out, phase
    m = study.model
    assert study.repro_jobs == sorted(
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
    ), study.repro_jobs
    print(f"first dvc repro: {study.repro_seconds:.0f} s")
    assert "up to date" in dvc(study.repo, "status").stdout
    # a second repro finds nothing to do, in DVC and in Snakemake
    t0 = time.time()
    again = dvc(study.repo, "repro")
    assert all(f"Stage '{p}' didn't change" in again.stdout for p in PHASES), again.stdout
    assert jobs_since(study.repo, t0) == []


@pytest.mark.slow
def test_metrics_and_plots_show(tmp_path_factory, tmp_path):
    study = toy_study(tmp_path_factory)
    shown = json.loads(dvc(study.repo, "metrics", "show", "--json").stdout)
    # one entry per revision; the workspace's key is "" in dvc 3.67
    metrics = next(iter(shown.values()))["data"]["results/metrics.json"]["data"]
    assert f"{study.model}/base/accuracy" in metrics
    for reward in ("ground_truth", "random"):
        assert -1.0 <= metrics[f"{study.model}/{reward}/clip/gain"] <= 1.0
    # metrics are `cache: false`, i.e. in git: diffing against a commit needs no pull
    diff = json.loads(dvc(study.repo, "metrics", "diff", "HEAD", "--all", "--json").stdout)
    old = {k: v.get("old") for k, v in diff.get("results/metrics.json", {}).items()}
    assert old == metrics, "results/metrics.json is not in the last commit (is it git-ignored?)"
    plots = json.loads(dvc(study.repo, "plots", "show", "--json").stdout)["data"]
    # the accuracy curves through .dvc/plots/accuracy_by_run.json: one line per (model, reward)
    curve = plots["results/plots/accuracy.csv"][0]["content"]
    assert (
        curve["encoding"]["color"]["field"] == "reward"
        and curve["encoding"]["strokeDash"]["field"] == "model"
    )
    assert len(curve["data"]["values"]) == 2 * 3  # two rewards x steps 0, 1, 2
    assert {"results/figures/accuracy_vs_step.png", "results/figures/code_frequency_vs_step.png"} <= set(
        plots
    )
    # and the page a user opens
    dvc(study.repo, "plots", "show", "-o", str(tmp_path / "plots"))
    assert "accuracy_vs_step.png" in (tmp_path / "plots/index.html").read_text()


@pytest.mark.slow
def test_cache_hardlinks_checkpoints(tmp_path_factory):
    study = toy_study(tmp_path_factory)
    weights = (
        study.repo / f"results/train/{study.model}/random/clip/seed1/checkpoints/step_1/model.safetensors"
    )
    md5 = hashlib.md5(weights.read_bytes()).hexdigest()
    cached = study.repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    # the workspace file IS the cache object: no second copy of every checkpoint
    assert os.path.samefile(weights, cached)
    assert weights.stat().st_nlink >= 2
    # DVC protects linked files (read-only): an in-place edit would corrupt the cache
    assert not weights.stat().st_mode & 0o222


@pytest.mark.slow
def test_changing_one_reward_reruns_only_its_jobs(tmp_path_factory):
    """`dvc exp run -S` on one reward's spec: its training, its evaluation and the aggregation, nothing else."""
    study = toy_study(tmp_path_factory)
    t0 = time.time()
    time.sleep(0.05)
    res = dvc(study.repo, "exp", "run", "-S", "config.yaml:rewards.random.spec='random(0.3)'", timeout=1800)
    assert "Stage 'data' didn't change" in res.stdout
    m = study.model
    assert jobs_since(study.repo, t0) == [
        "aggregate_results",
        f"evaluate_run/{m}/random/clip/seed1",
        f"train_grpo/{m}/random/clip/seed1",
    ], res.stdout[-4000:]
    assert "random(0.3)" in (study.repo / "config.yaml").read_text()
    diff = dvc(study.repo, "params", "diff").stdout
    assert "rewards.random.spec" in diff and "random(0.3)" in diff


@pytest.mark.slow
def test_checkout_does_not_reevaluate_checkpoints(tmp_path_factory):
    """Checkpoints restored by `dvc checkout` (or a pull: new mtimes) are not evaluated again."""
    study = toy_study(tmp_path_factory)
    repo = study.repo
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
        res = snakemake(repo, "-n", target)
        assert "Nothing to be done" in res.stdout + res.stderr, f"{target}:\n{res.stdout[-4000:]}"
