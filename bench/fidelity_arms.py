"""Do the authors' advantage whitening or token-mean loss change the toy study's gains?

A paired comparison on the CPU organisms through the pipeline itself: for each arm a copy
of the toy config (``config.yaml``) restricted to one model, some rewards (variant
``clip``), some seeds and one benchmark is written to ``<work>/<arm>/config.yaml`` and
``snakemake`` builds the base evaluation and every run's evaluation there. Arms:

* ``default``: the toy config as is (``advantage_whitening: none``, ``seq-mean-token-mean``);
* ``whitening``: ``grpo.advantage_whitening: batch_token`` (the authors' fork);
* ``token_mean``: ``grpo.loss_agg: token-mean`` (the authors' packed runs).

Same seeds in every arm, so arm - default is paired by (seed, problem). The final-step
gain over the base model and the arm - default difference get hierarchical bootstrap
CIs (seeds, then problems; ``spurious_rewards.stats``). Writes ``<work>/fidelity_arms.json``
and prints a markdown table.

Run (low priority, it trains ``len(arms) x len(rewards) x len(seeds)`` toy runs):
``nice -n 10 python bench/fidelity_arms.py --work /tmp/fidelity-arms --seeds 1 2 3``.
Rerunning with more seeds trains only the missing runs.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from spurious_rewards import paths, stats

ROOT = Path(__file__).resolve().parents[1]

ARMS: dict[str, dict] = {
    "default": {},
    "whitening": {"advantage_whitening": "batch_token"},
    "token_mean": {"loss_agg": "token-mean"},
}


def arm_config(base: dict, arm: str, *, model: str, rewards: list[str], seeds: list[int], steps: int,
               benchmark: str) -> dict:
    """The toy config cut down to one model, the given rewards (clip only) and one benchmark."""
    cfg = copy.deepcopy(base)
    m = dict(cfg["models"][model])
    m["path"] = str((ROOT / m["path"]).resolve())  # the shipped organism, not rebuilt in the work dir
    cfg["models"] = {model: m}
    cfg["rewards"] = {r: {**cfg["rewards"][r], "variants": ["clip"]} for r in rewards}
    cfg["seeds"] = list(seeds)
    cfg["grpo"] = {**cfg["grpo"], "steps": steps, "save_every": steps, **ARMS[arm]}
    b = cfg["benchmarks"][benchmark]
    cfg["benchmarks"] = {benchmark: b}
    keep = {cfg["training_data"], b["dataset"]}
    keep |= {n for n, d in cfg["datasets"].items() if d.get("kind") == "one_shot"}
    cfg["datasets"] = {n: d for n, d in cfg["datasets"].items() if n in keep}
    cfg["audit"] = {**cfg.get("audit", {}), "clean": [benchmark], "verdict": {"benchmark": benchmark}}
    return cfg


def per_problem(samples: Path) -> dict[str, float]:
    """Mean correctness of each problem's samples (avg@k: the problem is the unit)."""
    acc: dict[str, list[bool]] = {}
    with gzip.open(samples, "rt") as fh:
        for line in fh:
            r = json.loads(line)
            acc.setdefault(r["id"], []).append(bool(r["correct"]))
    return {k: sum(v) / len(v) for k, v in acc.items()}


def run_arm(work: Path, cfg: dict, model: str, cores: int) -> float:
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    targets = [paths.results(paths.EVAL_BASE_SUMMARY, model=model)]
    for reward in cfg["rewards"]:
        for seed in cfg["seeds"]:
            targets.append(paths.results(paths.EVAL_RUN_SUMMARY, model=model, reward=reward, variant="clip",
                                         seed=seed))
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [str(snakemake), "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--configfile",
           str(work / "config.yaml"), "--cores", str(cores), "--quiet", "rules", "--", *targets]
    t0 = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - t0


def analyse(work: Path, model: str, rewards: list[str], seeds: list[int], steps: int, benchmark: str,
            arms: list[str], n_boot: int) -> dict:
    base = per_problem(paths.under(work / arms[0] / "results", paths.EVAL_BASE_SAMPLES, model=model)
                       / f"step0_{benchmark}.jsonl.gz")
    ids = sorted(base)
    base_x = np.array([base[i] for i in ids])
    out: dict = {"base_accuracy": float(base_x.mean()), "problems": len(ids), "cells": []}
    finals: dict[tuple[str, str], np.ndarray] = {}
    for arm in arms:
        res = work / arm / "results"
        arm_base = per_problem(paths.under(res, paths.EVAL_BASE_SAMPLES, model=model) / f"step0_{benchmark}.jsonl.gz")
        if arm_base != base:
            raise RuntimeError(f"{arm}: the base evaluation differs from {arms[0]}'s (same model and seed)")
        for reward in rewards:
            rows = []
            for seed in seeds:
                d = paths.under(res, paths.EVAL_RUN_SAMPLES, model=model, reward=reward, variant="clip", seed=seed)
                p = per_problem(d / f"step{steps}_{benchmark}.jsonl.gz")
                rows.append([p[i] for i in ids])
            x = np.array(rows)
            finals[(arm, reward)] = x
            g = stats.gain_ci(base_x, x, n_boot=n_boot, seed=0)
            cell = {"arm": arm, "reward": reward, "accuracy": float(x.mean()),
                    "per_seed_gain": [float(v) for v in (x - base_x).mean(axis=1)],
                    "gain": g._asdict()}
            if arm != arms[0]:
                diff = x - finals[(arms[0], reward)]
                cell["minus_default"] = stats.mean_ci(diff, n_boot=n_boot, seed=0)._asdict()
            out["cells"].append(cell)
    return out


def markdown(result: dict) -> str:
    def pp(ci: dict) -> str:
        return f"{100 * ci['estimate']:+.1f} [{100 * ci['low']:+.1f}, {100 * ci['high']:+.1f}]"

    lines = [f"base accuracy {100 * result['base_accuracy']:.1f}% on {result['problems']} problems", "",
             "| arm | reward | accuracy | gain (pp, 95% CI) | per-seed gains | arm - default (pp, 95% CI) |",
             "|---|---|---|---|---|---|"]
    for c in result["cells"]:
        seeds = ", ".join(f"{100 * v:+.1f}" for v in c["per_seed_gain"])
        lines.append(f"| {c['arm']} | {c['reward']} | {100 * c['accuracy']:.1f}% | {pp(c['gain'])} | {seeds} | "
                     f"{pp(c['minus_default']) if 'minus_default' in c else '—'} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (one sub-folder per arm)")
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    ap.add_argument("--model", default="toy-qwen-math")
    ap.add_argument("--rewards", nargs="+", default=["ground_truth", "random"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--benchmark", default="arith")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--n-boot", type=int, default=4000)
    ap.add_argument("--analyse-only", action="store_true")
    args = ap.parse_args()
    base = yaml.safe_load(args.config.read_text())
    walls = {}
    if not args.analyse_only:
        for arm in args.arms:
            cfg = arm_config(base, arm, model=args.model, rewards=args.rewards, seeds=args.seeds, steps=args.steps,
                             benchmark=args.benchmark)
            walls[arm] = run_arm(args.work / arm, cfg, args.model, args.cores)
            print(f"{arm}: {walls[arm]:.0f} s", flush=True)
    result = analyse(args.work, args.model, args.rewards, args.seeds, args.steps, args.benchmark, args.arms,
                     args.n_boot)
    result.update({"model": args.model, "seeds": args.seeds, "steps": args.steps, "benchmark": args.benchmark,
                   "wall_s": walls, "load_average": os.getloadavg()})
    (args.work / "fidelity_arms.json").write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
