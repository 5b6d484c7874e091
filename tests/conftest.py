"""Shared test helpers and fixtures: the repository root, a Snakemake runner on a work dir,
tiny study configs. No test module imports another; what two of them need lives here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ORGANISMS = ROOT / "workflow" / "resources" / "organisms"


def snakemake_cmd(wd: Path, *args: str, configfile: Path | None = None) -> list[str]:
    """``python -m snakemake`` on the repository's Snakefile, run in work dir ``wd``.

    The repository's workflow profile (profiles/default) applies: printshellcmds, rerun-incomplete.
    """
    cf = configfile or (wd / "config.yaml")
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--configfile", str(cf),
            "--directory", str(wd), *args]


def run_snakemake(wd: Path, *args: str, timeout: int = 900, configfile: Path | None = None
                  ) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(snakemake_cmd(wd, *args, configfile=configfile), cwd=wd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def make_workdir(path: Path, cfg: dict) -> Path:
    """A work dir that sees the repository's workflow/ (organisms, fixtures) and holds ``cfg`` as config.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "workflow").exists():
        (path / "workflow").symlink_to(ROOT / "workflow")
    write_config(path, cfg)
    return path


def write_config(wd: Path, cfg: dict) -> Path:
    out = wd / "config.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def default_config() -> dict:
    """``config.yaml`` as a user would edit it (unvalidated: no defaults filled in)."""
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def tiny_study(models: tuple[str, ...] = ("toy-nocode",), rewards: dict | None = None, *, steps: int = 2,
               seeds: tuple[int, ...] = (1,), audit: bool = False) -> dict:
    """A seconds-per-job study: tiny rollouts, one small benchmark, the audit off unless asked."""
    cfg = default_config()
    cfg["models"] = {m: cfg["models"][m] for m in models}
    cfg["rewards"] = rewards or {"ground_truth": {"spec": "ground_truth", "labels": "true_labels",
                                                  "variants": ["clip"]}}
    cfg["seeds"] = list(seeds)
    cfg["datasets"] = {"train": {**cfg["datasets"]["train"], "n": 32},
                       "arith_test": {**cfg["datasets"]["arith_test"], "n": 24}}
    cfg["benchmarks"] = {"arith": {"dataset": "arith_test", "samples": 1, "temperature": 0.0, "pass_at": [1]}}
    cfg["grpo"].update(steps=steps, save_every=1, prompts_per_rollout=2, group_size=4, mini_batch=4, micro_batch=4,
                       max_new_tokens=24, threads=1)
    cfg["audit"] = {"clean": [], "contamination": {"enabled": audit}, "baselines": {"enabled": audit},
                    "clip_probe": {"enabled": audit, "draws": 2, "eval_problems": 4, "eval_samples": 1}}
    return cfg


@pytest.fixture
def workdir(tmp_path: Path):
    """A factory: ``workdir(cfg)`` -> a fresh work dir holding ``cfg``."""

    def make(cfg: dict, name: str = "wd") -> Path:
        return make_workdir(tmp_path / name, cfg)

    return make
