"""GRPO training through `spurious train` on a shipped toy organism (CPU, TRL backend)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spurious_rewards import config as cfgmod
from spurious_rewards import data
from spurious_rewards.training import trl_backend

ROOT = Path(__file__).resolve().parents[1]
ORGANISM = ROOT / "workflow/resources/organisms/toy-qwen-math"
VOLATILE = {"wall_time"}


def small_config(steps: int = 2) -> dict:
    cfg = cfgmod.load(ROOT / "config.yaml")
    cfg["models"]["toy-qwen-math"]["path"] = str(ORGANISM)
    cfg["grpo"].update(steps=steps, save_every=1, prompts_per_rollout=4, group_size=4, mini_batch=4,
                       micro_batch=4, max_new_tokens=40, lr=1e-3)
    return cfgmod.validate(cfg)


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    data.prepare_to_file({"name": "train", "kind": "synthetic", "n": 64, "seed": 0, "level": 1, "split": "train",
                          "source": "arith"}, path)
    return path


def run_cli(cfg: dict, reward: str, variant: str, seed: int, data_path: Path, out: Path,
            wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    spec = cfgmod.run_spec(cfg, cfgmod.Run("toy-qwen-math", reward, variant, seed))
    cmd = [sys.executable, "-m", "spurious_rewards.cli", "train", "--spec", json.dumps(spec),
           "--data", str(data_path), "--state", str(out / "state"), "--out-checkpoints", str(out / "checkpoints"),
           "--out-metrics", str(out / "metrics.jsonl"), "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def metrics(path: Path) -> list[dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def test_trl_mapping_is_faithful():
    cfg = cfgmod.load(ROOT / "config/paper.yaml")
    kw = {}
    for variant in ("clip", "no_clip", "one_update"):
        spec = cfgmod.run_spec(cfg, cfgmod.Run("Qwen2.5-Math-7B", "random", variant, 1))
        kw[variant] = trl_backend.trl_config_kwargs(spec, "/tmp/x")
    clip = kw["clip"]
    # 64 prompts x 16 = 1024 responses per rollout, 128 per update -> 8 updates per rollout
    assert clip["num_generations"] == 16
    assert clip["per_device_train_batch_size"] * clip["gradient_accumulation_steps"] == 128
    assert clip["per_device_train_batch_size"] * clip["steps_per_generation"] == 1024
    assert clip["max_steps"] == 150 * 8
    assert clip["epsilon"] == clip["epsilon_high"] == 0.2
    assert clip["beta"] == 0.0 and clip["lr_scheduler_type"] == "constant" and clip["learning_rate"] == 5e-7
    assert clip["loss_type"] == "dapo" and clip["num_iterations"] == 1 and clip["bf16"] is False
    assert kw["no_clip"]["epsilon"] >= 1e9 and kw["no_clip"]["max_steps"] == clip["max_steps"]
    one = kw["one_update"]
    assert one["per_device_train_batch_size"] * one["gradient_accumulation_steps"] == 1024
    assert one["gradient_accumulation_steps"] == one["steps_per_generation"]  # ratio == 1: no old log-probs
    assert one["max_steps"] == 150


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["clip", "no_clip", "one_update"])
def test_two_steps_per_variant(tmp_path, train_data, variant):
    cfg = small_config(steps=2)
    res = run_cli(cfg, "random", variant, 1, train_data, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    for r in rows[1:]:
        for key in ("reward_mean", "reward_std", "accuracy", "clip_fraction", "entropy", "response_length",
                    "code_frequency", "p_code"):
            assert r[key] is not None, key
        assert r["updates"] == (1 if variant == "one_update" else 4)
    clip = sum(r["clip_fraction"] for r in rows[1:])
    if variant == "clip":
        assert clip > 0
    else:
        assert clip == 0.0
    ckpts = tmp_path / "checkpoints"
    assert (ckpts / "step_1" / "model.safetensors").exists() and (ckpts / "step_2" / "model.safetensors").exists()
    final, last = ckpts / "final/model.safetensors", ckpts / "step_2/model.safetensors"
    assert final.stat().st_ino == last.stat().st_ino  # a hard link, not a copy


@pytest.mark.slow
def test_same_seed_same_numbers_and_paired_design(tmp_path, train_data):
    cfg = small_config(steps=2)
    a = run_cli(cfg, "random", "clip", 7, train_data, tmp_path / "a")
    b = run_cli(cfg, "random", "clip", 7, train_data, tmp_path / "b")
    c = run_cli(cfg, "random", "no_clip", 7, train_data, tmp_path / "c")
    assert a.returncode == b.returncode == c.returncode == 0
    ma, mb, mc = (metrics(tmp_path / x / "metrics.jsonl") for x in "abc")
    assert ma == mb
    wa = (tmp_path / "a/checkpoints/step_2/model.safetensors").read_bytes()
    assert wa == (tmp_path / "b/checkpoints/step_2/model.safetensors").read_bytes()
    # clip and no_clip share the first rollout (same reward draws and samples)
    assert ma[1]["reward_mean"] == mc[1]["reward_mean"] and ma[1]["accuracy"] == mc[1]["accuracy"]


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tmp_path, train_data):
    cfg = small_config(steps=4)
    ref = run_cli(cfg, "ground_truth", "clip", 3, train_data, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "killed"
    proc = run_cli(cfg, "ground_truth", "clip", 3, train_data, out, wait=False)
    deadline = time.time() + 300
    while not (out / "state/hf/step_2").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()
    res = run_cli(cfg, "ground_truth", "clip", 3, train_data, out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming" in res.stderr
    assert metrics(out / "metrics.jsonl") == metrics(tmp_path / "ref/metrics.jsonl")


@pytest.mark.slow
def test_changed_spec_discards_the_old_state(tmp_path, train_data):
    """A rerun after a config change (new lr) retrains from scratch: the state of the old spec is not resumed."""
    old_cfg = small_config(steps=2)
    out = tmp_path / "run"
    first = run_cli(old_cfg, "random", "clip", 5, train_data, out)
    assert first.returncode == 0, first.stderr[-3000:]
    old = metrics(out / "metrics.jsonl")
    # what Snakemake does on a params change: delete the declared outputs, keep state/
    (out / "metrics.jsonl").unlink()
    for p in sorted((out / "checkpoints").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (out / "checkpoints").rmdir()

    new_cfg = small_config(steps=2)
    new_cfg["grpo"]["lr"] = 3e-3
    rerun = run_cli(new_cfg, "random", "clip", 5, train_data, out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "discarding the state" in rerun.stderr and "grpo.lr" in rerun.stderr
    fresh = run_cli(new_cfg, "random", "clip", 5, train_data, tmp_path / "fresh")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    new = metrics(out / "metrics.jsonl")
    assert new == metrics(tmp_path / "fresh" / "metrics.jsonl")
    assert new != old
    weights = (out / "checkpoints/step_2/model.safetensors").read_bytes()
    assert weights == (tmp_path / "fresh/checkpoints/step_2/model.safetensors").read_bytes()


def test_state_binding_names_what_changed(tmp_path, caplog):
    from spurious_rewards.training import common

    spec = {"grpo": {"lr": 1e-4, "steps": 20}, "seed": 1}
    assert common.bind_state(spec, tmp_path / "s") is False  # fresh
    (tmp_path / "s" / "trl").mkdir()
    assert common.bind_state(spec, tmp_path / "s") is True  # same spec: resume
    changed = {"grpo": {"lr": 3e-4, "steps": 30}, "seed": 1}
    with caplog.at_level("WARNING"):
        assert common.bind_state(changed, tmp_path / "s") is False
    assert "grpo.lr, grpo.steps" in caplog.text
    assert not (tmp_path / "s" / "trl").exists()
    # a state that records no spec (an older version's) cannot be trusted either
    (tmp_path / "s" / "spec.json").unlink()
    (tmp_path / "s" / "trl").mkdir()
    with caplog.at_level("WARNING"):
        assert common.bind_state(changed, tmp_path / "s") is False
    assert "records no spec" in caplog.text
