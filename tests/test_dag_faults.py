"""Faults through the DAG: the real ``snakemake`` (``--cores 1``/``2``) training a toy organism.

Each test runs in a fresh work dir (the shipped ``workflow/`` symlinked in, nothing else, as
test_workflow.py does) on a tiny config: toy-nocode, the ground_truth reward, 6 rollout steps
of 2 prompts x 4 samples, a checkpoint every 2 steps. Kills are triggered by what is on disk
(the run's first checkpoint in ``state/``), never by a sleep. See RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from spurious_rewards import config as cfgmod
from spurious_rewards import io, provenance

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MODEL, REWARD, VARIANT = "toy-nocode", "ground_truth", "clip"
STEPS = 6
VOLATILE = {"wall_time"}


def run_dir(seed: int) -> str:
    return f"results/train/{MODEL}/{REWARD}/{VARIANT}/seed{seed}"


def target(seed: int) -> str:
    return f"{run_dir(seed)}/metrics.jsonl"


def tiny_config(validate: bool = True) -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg.pop("audit", None)  # not needed to train; its defaults apply
    cfg["models"] = {MODEL: cfg["models"][MODEL]}
    cfg["rewards"] = {REWARD: {"spec": "ground_truth", "labels": "true_labels", "variants": [VARIANT]}}
    cfg["seeds"] = [1, 2]
    cfg["datasets"]["train"]["n"] = 32
    cfg["grpo"].update(steps=STEPS, save_every=2, prompts_per_rollout=2, group_size=4, mini_batch=4, micro_batch=4,
                       max_new_tokens=24, threads=1)
    return cfgmod.validate(cfg) if validate else cfg


def workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "workflow").symlink_to(ROOT / "workflow")
    (path / "config.yaml").write_text(yaml.safe_dump(tiny_config(validate=False), sort_keys=False))
    return path


def _cmd(wd: Path, *args: str) -> list[str]:
    # the repository's workflow profile (profiles/default) applies: printshellcmds, rerun-incomplete
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--configfile",
            str(wd / "config.yaml"), "--directory", str(wd), *args]


def snakemake(wd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(_cmd(wd, *args), cwd=wd, capture_output=True, text=True, timeout=timeout, env=env)


def metrics(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in io.iter_jsonl(path)]


def spec_of(seed: int) -> dict:
    return cfgmod.run_spec(tiny_config(), cfgmod.Run(MODEL, REWARD, VARIANT, seed))


def train_job_events(res: subprocess.CompletedProcess) -> list[str]:
    """'start'/'end' of each train_grpo job, in the order Snakemake's log reports them."""
    events = []
    for line in (res.stdout + res.stderr).splitlines():
        if re.match(r"^(local)?rule train_grpo:", line.strip()):
            events.append("start")
        elif re.search(r"Finished job(id)?:? \d+ \(Rule: train_grpo\)", line):
            events.append("end")
    return events


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> Path:
    """Seed 1 and seed 2, uninterrupted, each trained alone (``--cores 1``: one job at a time)."""
    wd = workdir(tmp_path_factory.mktemp("alone"))
    res = snakemake(wd, "--cores", "1", target(1), target(2))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert train_job_events(res) == ["start", "end", "start", "end"]
    return wd


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_snakemake_mid_training_then_unlock_and_rerun_resumes(tmp_path, alone):
    """SIGKILL of snakemake's whole process group (snakemake, the job's shell, `spurious train`) once the
    run's first checkpoint is in state/: nothing is published; after `snakemake --unlock` (the lock
    of the killed snakemake stays) the plain rerun resumes from that checkpoint and ends with the
    metrics of an uninterrupted run."""
    wd = workdir(tmp_path / "wd")
    run = wd / run_dir(1)
    first_ckpt = run / "state/hf/step_2"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cmd(wd, "--cores", "1", target(1)), cwd=wd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not first_ckpt.exists():
            assert proc.poll() is None, "snakemake ended before the first checkpoint"
            assert time.monotonic() < deadline, "timed out waiting for the first checkpoint"
            time.sleep(0.005)
        tree = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)  # a node loss: snakemake and its job at once
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(tree) >= 3  # snakemake, the job's bash, spurious train (+ any grading workers)
    deadline = time.monotonic() + 60
    while alive := [p for p in tree if _alive(p)]:
        assert time.monotonic() < deadline, f"processes outlived the kill: {alive}"
        time.sleep(0.05)
    # nothing published: Snakemake sees missing outputs, not finished ones
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()
    killed_rows = list(io.iter_jsonl(run / "state/metrics.jsonl"))
    weights = first_ckpt / "model.safetensors"
    before = weights.stat()

    # the killed snakemake's lock stays: a plain rerun refuses and names the fix
    locked = snakemake(wd, "--cores", "1", target(1))
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    res = snakemake(wd, "--unlock")
    assert res.returncode == 0, res.stderr[-3000:]
    res = snakemake(wd, "--cores", "1", target(1))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]

    log = (wd / f"logs/train_grpo/{MODEL}/{REWARD}/{VARIANT}/seed1.log").read_text()
    m = re.search(r"resuming \S+ from \S+/checkpoint-\d+ \(rollout step (\d+)\)", log)
    assert m, log[-3000:]
    resumed_at = int(m[1])
    assert 2 <= resumed_at < STEPS
    print(f"killed after step {resumed_at}'s checkpoint; resumed from it")
    # the same numbers as the uninterrupted run
    assert metrics(run / "metrics.jsonl") == metrics(alone / target(1))
    # and not recomputed from step 0: the rows up to the resume step are the killed attempt's own,
    # wall times included, and its step-2 export was reused, not rewritten
    final_rows = list(io.iter_jsonl(run / "metrics.jsonl"))
    assert final_rows[: resumed_at + 1] == [r for r in killed_rows if r["step"] <= resumed_at]
    after = weights.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    side = provenance.read_sidecar(run / "metrics.jsonl")
    assert side["seed"] == 1 and side["config_hash"] == provenance.spec_hash(spec_of(1))
    assert side["sha256"] == io.file_sha256(run / "metrics.jsonl")


def test_two_seeds_at_once_match_each_seed_alone(tmp_path, alone):
    """`--cores 2`: both seeds of one (model, reward, variant) train at the same time, each in its own
    state dir, log and benchmark file, with the numbers and weights of each seed trained alone."""
    wd = workdir(tmp_path / "wd")
    res = snakemake(wd, "--cores", "2", target(1), target(2))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    # Snakemake's own log shows both jobs started before either finished
    assert train_job_events(res) == ["start", "start", "end", "end"], res.stdout[-4000:]
    per_run = {}
    for seed in (1, 2):
        run = wd / run_dir(seed)
        own = (run / "state", wd / f"logs/train_grpo/{MODEL}/{REWARD}/{VARIANT}/seed{seed}.log",
               wd / f"benchmarks/train_grpo/{MODEL}/{REWARD}/{VARIANT}/seed{seed}.tsv")
        assert all(p.exists() for p in own), own
        assert "resuming" not in own[1].read_text()
        per_run[seed] = own
        assert metrics(run / "metrics.jsonl") == metrics(alone / target(seed))
        final = f"checkpoints/step_{STEPS}/model.safetensors"
        assert (run / final).read_bytes() == (alone / run_dir(seed) / final).read_bytes()
        side = provenance.read_sidecar(run / "metrics.jsonl")
        assert side["seed"] == seed and side["config_hash"] == provenance.spec_hash(spec_of(seed))
    assert not set(per_run[1]) & set(per_run[2])
    assert metrics(wd / target(1)) != metrics(wd / target(2))  # two different runs, not one run twice
    assert json.loads((wd / run_dir(1) / "checkpoints/index.json").read_text())["provenance"]["seed"] == 1
