"""The mechanism map (audit.mechanism): its cells, the probe per cell, the aggregate table, fit,
figures and paragraphs, and the checking runs of the flagged cells, through Snakemake targets."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import job_counts, run_snakemake, tiny_study

from spurious_rewards import config as cfgmod
from spurious_rewards import io, paths
from spurious_rewards.analysis import mechanism


def _map_config(**check) -> dict:
    cfg = tiny_study(("toy-qwen-math",), rewards={"random": {"spec": "random(0.5)", "labels": "true_labels",
                                                             "variants": ["clip"]}})
    cfg["audit"]["clip_probe"].update(enabled=False, draws=3, eval_problems=4, eval_samples=1)
    cfg["audit"]["mechanism"] = {"enabled": True, "models": ["toy-qwen-math"], "epsilon": [0.2, 0.05],
                                 "updates": [1, 4], "lr": ["1e-2"],
                                 "check": {"enabled": True, "cells": 1, "seeds": [1, 2], "steps": 2, **check}}
    return cfg


def test_cells_are_the_product_of_the_axes_with_lr_resolved():
    cfg = cfgmod.validate(_map_config())
    cells = cfgmod.mechanism_cells(cfg)
    assert [c.id for c in cells] == ["eps0.2-u1-lr0.01", "eps0.2-u4-lr0.01", "eps0.05-u1-lr0.01",
                                     "eps0.05-u4-lr0.01"]
    assert cfgmod.mechanism_models(cfg) == ["toy-qwen-math"]
    g = cells[1].grpo(cfg["grpo"], rollout=8)  # 2 prompts x 4 samples, 4 updates -> mini-batch 2
    assert (g["mini_batch"], g["micro_batch"], g["epsilon"], g["epsilon_high"], g["lr"]) == (2, 2, 0.2, None, 0.01)
    hi = cfgmod.MechanismCell(0.2, 0.28, 8, 3e-4)
    assert hi.id == "eps0.2-hi0.28-u8-lr0.0003"
    # null lr = the probe's lr, else grpo.lr
    cfg2 = _map_config()
    cfg2["audit"]["mechanism"]["lr"] = [None]
    assert cfgmod.mechanism_cells(cfgmod.validate(cfg2))[0].lr == cfgmod.validate(_map_config())["grpo"]["lr"]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("updates", [3], "audit.mechanism.updates: 3 must divide the probe's rollout of 8"),
    ("epsilon_high", [0.1], "audit.mechanism.epsilon_high: 0.1 is below epsilon [0.2]"),
])
def test_bad_map_settings_fail_before_any_job(key, value, message):
    cfg = _map_config()
    cfg["audit"]["mechanism"][key] = value
    with pytest.raises(cfgmod.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cfgmod.validate(cfg)


def test_unconfigured_map_models_are_skipped_as_a_rewards_models_are():
    cfg = _map_config()
    cfg["audit"]["mechanism"]["models"] = ["toy-llama", "toy-qwen-math"]
    assert cfgmod.mechanism_models(cfgmod.validate(cfg)) == ["toy-qwen-math"]


def test_fit_recovers_a_planted_power_law():
    f = np.array([0.001, 0.003, 0.01, 0.02, 0.05])
    fit = mechanism.fit_scaling(f, 3.0 * f**2, n_boot=200, seed=0)
    assert fit["b"] == pytest.approx(2.0, abs=1e-9) and fit["a"] == pytest.approx(3.0, rel=1e-9)
    assert fit["a2"] == pytest.approx(3.0, rel=1e-9) and fit["b_low"] == pytest.approx(2.0, abs=1e-9)
    few = mechanism.fit_scaling(np.array([0.01, 0.02]), np.array([-0.1, 0.2]), n_boot=50)
    assert few["cells_positive"] == 1 and math.isnan(few["b"]) and np.isfinite(few["a2"])


def _cells(drift_low: list[float], bias_low: list[float]) -> pd.DataFrame:
    rows = []
    for i, (dl, bl) in enumerate(zip(drift_low, bias_low, strict=True)):
        rows.append({"model": "m", "cell": f"c{i}", "clip_drift": dl + 0.01, "clip_drift_low": dl,
                     "bias": bl + 0.01 + i / 100, "bias_low": bl, "clip_fraction": 0.01 * (i > 0)})
    return pd.DataFrame(rows)


def test_flagged_cells_prefer_clips_own_drift_then_the_bias():
    assert [c["cell"] for c in mechanism.flagged(_cells([-1, 0.1, 0.2], [0.1, 0.1, 0.1]), 2)["m"]] == ["c2", "c1"]
    only_bias = mechanism.flagged(_cells([-1, -1, -1], [0.1, -1, 0.2]), 1)["m"]
    assert only_bias[0]["cell"] == "c2" and "clip - no_clip" in only_bias[0]["why"]
    none = mechanism.flagged(_cells([-1, -1, -1], [-1, -1, -1]), 1)["m"]
    assert none[0]["cell"] == "c2" and "no cell flagged" in none[0]["why"]
    # cells where clipping never acted (one update per rollout) are not checked while others are there
    acted = _cells([-1, -1], [-1, -1]).assign(bias=[0.5, 0.0])
    assert mechanism.flagged(acted, 1)["m"][0]["cell"] == "c1"


@pytest.mark.slow
def test_map_target_probes_every_cell_then_checks_the_flagged_one(workdir):
    cfg = _map_config()
    wd = workdir(cfg)
    dry = run_snakemake(wd, "mechanism_all", "-n", "--cores", "1")
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = job_counts(dry.stdout + dry.stderr)
    assert counts["probe_mechanism"] == 4 and counts["aggregate_mechanism"] == 1
    proc = run_snakemake(wd, "mechanism_all", "--cores", "2", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = wd / "results"
    table = pd.read_csv(res / paths.MECHANISM["table"])
    assert list(table["cell"]) == [c.id for c in cfgmod.mechanism_cells(cfgmod.validate(_map_config()))]
    # one update per rollout: ratio 1, clipping cannot act, clip equals no_clip exactly
    on_policy = table[table["updates"] == 1]
    assert (on_policy["bias"] == 0).all() and (on_policy["clip_fraction"] == 0).all()
    assert (table.loc[table["updates"] == 4, "clip_fraction"] > 0).all()
    cell = io.read_json(res / paths.fill(paths.MECHANISM_CELL, model="toy-qwen-math", cell="eps0.05-u4-lr0.01"))
    assert cell["settings"] == {"clip": {"epsilon": 0.05, "epsilon_high": 0.05, "updates": 4},
                                "no_clip": {"epsilon": None, "epsilon_high": None, "updates": 4}}
    assert cell["lr"] == 0.01 and len(cell["draws"]) == 2 * 3
    for key in ("fig_map", "fig_scaling"):
        assert (res / paths.MECHANISM[key]).stat().st_size > 10_000
    report = (res / paths.MECHANISM["report"]).read_text()
    assert report.startswith("**toy-qwen-math** (dominant style code") and "| Model | Cell |" in report
    flagged = json.loads((res / paths.MECHANISM["flagged"]).read_text())
    (chosen,) = flagged["toy-qwen-math"]
    # the checking runs: 2 arms x 2 seeds of the flagged cell, each with its trajectory
    runs = sorted((res / "audit/mechanism/toy-qwen-math/check" / chosen["cell"]).glob("*/seed*/metrics.jsonl"))
    assert [p.relative_to(res / "audit/mechanism/toy-qwen-math/check" / chosen["cell"]).parts[:2] for p in runs] == [
        ("clip", "seed1"), ("clip", "seed2"), ("no_clip", "seed1"), ("no_clip", "seed2")]
    rows = list(io.iter_jsonl(runs[0]))
    assert [r["step"] for r in rows] == [0, 1, 2] and rows[1]["updates"] == int(chosen["cell"].split("-u")[1][0])
    checks = pd.read_csv(res / paths.MECHANISM_CHECKS["table"])
    assert len(checks) == 4 and checks["predicted_slope"].notna().all()
    assert (res / paths.MECHANISM_CHECKS["figure"]).stat().st_size > 10_000
    assert "the probe predicts" in (res / paths.MECHANISM_CHECKS["report"]).read_text()
    # nothing left to do; a changed cell axis reruns only the new cells and the aggregates
    again = run_snakemake(wd, "mechanism_all", "-n", "--cores", "1")
    assert "Nothing to be done" in again.stdout + again.stderr
