"""`spurious fetch`: what a config reads from the hub, downloaded once on a login node."""

from __future__ import annotations

import subprocess
import sys

import yaml
from conftest import ROOT

from spurious_rewards import config, fetch

CLI = [sys.executable, "-m", "spurious_rewards.cli", "fetch"]


def test_paper_config_lists_every_hub_model_and_dataset():
    cfg = config.load(ROOT / "config/paper.yaml")
    items = fetch.downloads(cfg)
    models = [i for i in items if i.kind == "model"]
    assert {i.name for i in models} == set(cfg["models"])  # all ten are hub models
    hub = {n for n, d in cfg["datasets"].items() if d["kind"] == "hub"}
    assert {i.name for i in items if i.kind == "dataset"} == hub
    # AIME 2025's two configs are two downloads
    configs = [i.config for i in items if i.kind == "dataset" and i.repo == cfg["datasets"].get("aime25", {}).get("path")]
    assert len(configs) == len(cfg["datasets"].get("aime25", {}).get("configs") or [None])


def test_dry_run_downloads_nothing_and_the_toy_config_needs_nothing(tmp_path):
    res = subprocess.run([*CLI, "--configfile", str(ROOT / "config/paper.yaml"), "--dry-run"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "model Qwen2.5-Math-7B: Qwen/Qwen2.5-Math-7B" in res.stdout
    res = subprocess.run([*CLI, "--configfile", str(ROOT / "config.yaml")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "0 downloads" in res.stdout, res.stdout + res.stderr


def test_a_local_hub_layout_dataset_is_read_and_a_failed_download_is_reported(tmp_path, monkeypatch):
    """The real download path: a dataset in a hub repo's layout loads; an unreachable model fails by name."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["models"] = {"m": {"path": "no-such-org/no-such-model", "template": "chat", "family": "x"}}
    cfg = config.validate(cfg)
    item = fetch.Download("dataset", "math500", str(ROOT / "workflow/resources/fixtures/math500"), split="test")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = fetch.fetch([item, *fetch.downloads(cfg)])
    assert results[0][1] is None
    assert results[1][0].repo == "no-such-org/no-such-model" and results[1][1]


def test_prune_applies_the_retention_policy_to_finished_runs_only(tmp_path):
    """state/ of a finished run goes (its published checkpoints survive: hard links), a running run keeps it."""
    import os

    from spurious_rewards import paths, prune
    from spurious_rewards.config import runs

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["retention"] = {"state": "prune", "checkpoints": "final"}
    cfg["grpo"].update(steps=20, save_every=10)  # checkpoints 10 and 20, whatever config.yaml trains
    cfg = config.validate(cfg)
    res = tmp_path / "results"
    done, running = list(runs(cfg))[:2]
    for run in (done, running):
        state = paths.under(res, paths.TRAIN_STATE, **run.wildcards)
        (state / "hf" / "step_20").mkdir(parents=True)
        (state / "hf" / "step_20" / "model.safetensors").write_bytes(b"w" * 1000)
    ck = paths.under(res, paths.TRAIN_CHECKPOINTS, **done.wildcards)
    for s in (10, 20):
        (ck / f"step_{s}").mkdir(parents=True)
    os.link(paths.under(res, paths.TRAIN_STATE, **done.wildcards) / "hf/step_20/model.safetensors",
            ck / "step_20" / "model.safetensors")
    paths.under(res, paths.TRAIN_METRICS, **done.wildcards).write_text("{}\n")
    summary = paths.under(res, paths.EVAL_RUN_SUMMARY, **done.wildcards)
    summary.parent.mkdir(parents=True)
    summary.write_text("{}")
    targets = prune.prune_targets(cfg, res)
    assert targets == [paths.under(res, paths.TRAIN_STATE, **done.wildcards), ck / "step_10"]
    cfgfile = tmp_path / "c.yaml"
    cfgfile.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "spurious_rewards.cli", "prune", "--configfile", str(cfgfile),
                          "--results", str(res)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not targets[0].exists() and not (ck / "step_10").exists()
    assert (ck / "step_20" / "model.safetensors").read_bytes() == b"w" * 1000  # the hard link survives
    assert paths.under(res, paths.TRAIN_STATE, **running.wildcards).exists()
