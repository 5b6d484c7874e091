"""spurious_rewards.analysis.aggregate on a tiny synthetic results tree written in the pipeline's own formats.

The tree: 2 models x 2 rewards (ground_truth, random with the clip/no_clip ablation) x 2 seeds,
checkpoints at steps 10 and 20, benchmarks `arith` (1 sample) and `arith_avg4` (4 samples).
Summaries are computed from the sample files with evaluate.summarize, as the pipeline does.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import N_PROBLEMS, build_tree, toy_style

from spurious_rewards import config as cfgmod
from spurious_rewards import io, provenance, stats
from spurious_rewards import paths as layout
from spurious_rewards.analysis import aggregate, classify
from spurious_rewards.audit import clip_probe

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
    return cfgmod.validate(cfg)


def write_audit(root: Path, cfg: dict, rng: np.random.Generator) -> None:
    """Audit outputs as the audit rules write them: toy-qwen-math does much better with `boxed`."""
    model = "toy-qwen-math"
    d = root / "audit" / "baselines" / model
    results = [{"template": "r1", "benchmark": "arith", "available": False, "reason": "test"}]
    for template, acc in (("chat", None), ("plain", 0.1), ("boxed", 0.97)):
        p_code, acc_code, acc_lang = toy_style("qwen-math", "base", "base", 0)
        code = rng.random((N_PROBLEMS, 1)) < p_code
        p = np.where(code, acc_code, acc_lang) if acc is None else np.full((N_PROBLEMS, 1), acc)
        correct = rng.random((N_PROBLEMS, 1)) < p
        io.write_jsonl(({"id": f"arith/{i}", "i": 0, "response": "r", "pred": "7", "correct": bool(correct[i, 0]),
                         "code": bool(code[i, 0]), "repetition": False, "tokens": 5} for i in range(N_PROBLEMS)),
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


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("results")
    cfg = make_config()
    build_tree(root, cfg)
    write_audit(root, cfg, np.random.default_rng(1))
    paths = aggregate.aggregate(cfg, root, n_boot=400)
    return cfg, root, paths


def test_all_outputs_are_written(study) -> None:
    _, root, paths = study
    assert set(paths) == set(layout.aggregate_outputs(root))
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0, p
    # atomic writes leave no temporaries behind
    assert not [p for p in root.rglob(".*tmp-*")]
    # each records what produced it (and which bytes it describes)
    cfg = study[0]
    for p in paths.values():
        rec = provenance.read_sidecar(p)
        assert rec["config_hash"] == cfgmod.config_hash(cfg) and rec["seed"] == 0, p
        assert rec["git_commit"] and rec["packages"]["torch"] and rec["packages"]["math-verify"], p
        assert rec["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest(), p


def test_tidy_metrics_table(study) -> None:
    cfg, root, paths = study
    m = pd.read_csv(paths["metrics"])
    assert list(m.columns) == aggregate.TIDY_COLUMNS
    assert not m["value"].isna().any()
    base = m[m["reward"] == "base"]
    assert set(base["variant"]) == {"base"} and set(base["seed"]) == {0} and set(base["step"]) == {0}
    assert set(base["model"]) == set(cfg["models"])
    assert set(m["family"]) == {"qwen-math", "nocode"}
    runs = m[m["reward"] != "base"]
    assert len(runs[["model", "reward", "variant", "seed"]].drop_duplicates()) == 12
    ev = runs[runs["benchmark"] != "train"]
    # a run's step 0 is its base model's row, not repeated
    assert set(ev["step"]) == {10, 20}
    assert set(ev["benchmark"]) == {"arith", "arith_avg4"}
    assert {"accuracy", "code_frequency", "pass@4", "accuracy_code", "mean_length"} <= set(ev["metric"])
    train = runs[runs["benchmark"] == "train"]
    assert set(train["step"]) == set(range(21))
    assert set(train.loc[train["step"] == 0, "metric"]) == {"p_code", "wall_time"}
    # None (no code responses at step 1) is left out rather than written as an empty value
    first = train[(train["step"] == 1) & (train["model"] == "toy-nocode")]
    assert "accuracy_code" not in set(first["metric"]) and "accuracy_language" in set(first["metric"])
    # values are the summary's own
    summ = io.read_json(root / "eval/toy-qwen-math/random/no_clip/seed2/summary.json")["results"]
    want = next(r["pass@4"] for r in summ if r["step"] == 20 and r["benchmark"] == "arith_avg4")
    got = m.query("model == 'toy-qwen-math' and reward == 'random' and variant == 'no_clip' and seed == 2 "
                  "and step == 20 and benchmark == 'arith_avg4' and metric == 'pass@4'")["value"]
    assert got.item() == pytest.approx(want)


def test_summary_stats_over_seeds(study) -> None:
    _, _, paths = study
    st = pd.read_csv(paths["summary_stats"])
    assert list(st.columns) == aggregate.STAT_COLUMNS
    m = pd.read_csv(paths["metrics"])
    key = {"model": "toy-qwen-math", "reward": "random", "variant": "clip", "benchmark": "arith"}
    q = " and ".join(f"{k} == {v!r}" for k, v in key.items())
    accs = m.query(q + " and step == 20 and metric == 'accuracy'")["value"]
    base = m.query("model == 'toy-qwen-math' and reward == 'base' and benchmark == 'arith' "
                   "and metric == 'accuracy'")["value"].item()
    row = st.query(q + " and step == 20 and metric == 'accuracy'").iloc[0]
    assert row["n_seeds"] == 2
    assert row["mean"] == pytest.approx(accs.mean())
    assert row["sd"] == pytest.approx(accs.std())
    assert row["ci_low"] <= row["mean"] <= row["ci_high"] and row["ci_high"] > row["ci_low"]
    gain = st.query(q + " and step == 20 and metric == 'gain'").iloc[0]
    assert gain["mean"] == pytest.approx(accs.mean() - base)
    assert gain["ci_low"] <= gain["mean"] <= gain["ci_high"]
    # step 0 of every cell is the base model
    s0 = st.query(q + " and step == 0").set_index("metric")
    assert s0.loc["accuracy", "mean"] == pytest.approx(base)
    assert s0.loc["accuracy", "ci_low"] < base < s0.loc["accuracy", "ci_high"]
    assert (s0.loc["gain", ["mean", "ci_low", "ci_high"]] == 0).all()
    # training metrics are summarised over seeds too, with no CI
    pc = st.query("model == 'toy-nocode' and reward == 'ground_truth' and benchmark == 'train' "
                  "and metric == 'p_code'")
    assert list(pc["step"]) == list(range(21)) and set(pc["n_seeds"]) == {2} and pc["ci_low"].isna().all()


def test_transitions_table(study) -> None:
    cfg, root, paths = study
    t = pd.read_csv(paths["transitions"])
    assert list(t.columns) == aggregate.TRANSITION_COLUMNS
    per_run = t[t["scope"] == "run"]
    assert len(per_run) == 12 * 2 * 4  # runs x benchmarks x groups
    assert set(per_run["step"]) == {20}
    for _, g in per_run.groupby(["model", "reward", "variant", "seed", "benchmark"]):
        assert g["n"].sum() == N_PROBLEMS and list(g["group"]) == list(classify.GROUPS)
    # one run by hand, from its files
    run = "toy-qwen-math/random/clip/seed1"
    want = classify.transitions_from_files(root / "eval/toy-qwen-math/base/samples/step0_arith.jsonl.gz",
                                           root / f"eval/{run}/samples/step20_arith.jsonl.gz")
    got = per_run.query("model == 'toy-qwen-math' and reward == 'random' and variant == 'clip' and seed == 1 "
                        "and benchmark == 'arith'")
    assert got["n"].tolist() == want["n"].tolist()
    assert got["delta_pp"].tolist() == pytest.approx(want["delta_pp"].tolist())
    # the nocode toy never writes code: everything is Lang→Lang
    nocode = per_run[per_run["model"] == "toy-nocode"]
    assert (nocode.loc[nocode["group"] != "Lang→Lang", "n"] == 0).all()
    # the mean over seeds pools the contribution score
    mean = t[t["scope"] == "mean"]
    assert len(mean) == 6 * 2 * 4 and set(mean["n_seeds"]) == {2} and mean["seed"].isna().all()
    cell = per_run.query("model == 'toy-qwen-math' and reward == 'ground_truth' and benchmark == 'arith'")
    pooled = cell.groupby("group", sort=False)["delta"].sum() / cell["delta"].sum()
    got = mean.query("model == 'toy-qwen-math' and reward == 'ground_truth' and benchmark == 'arith'")
    assert got["contribution"].tolist() == pytest.approx(pooled.tolist())


def test_figures_are_png(study) -> None:
    _, _, paths = study
    for key in ("fig_accuracy", "fig_code", "fig_clip", "fig_transitions"):
        data = paths[key].read_bytes()
        assert data.startswith(PNG_MAGIC), key
        assert len(data) > 20_000, key  # axes, lines and text, not a blank canvas


def test_summary_markdown(study) -> None:
    cfg, _, paths = study
    md = paths["summary"].read_text()
    assert "## Gain over the base model on `arith` at the final step" in md
    table = [line for line in md.splitlines() if line.startswith("| toy-qwen-math | qwen-math | ground_truth |")]
    assert len(table) == 1
    assert re.search(r"\| [+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\] \|", table[0]), table[0]
    assert " → " in table[0]
    assert "| toy-qwen-math | random | no_clip | " in md  # the ablation variant has its own rows
    assert "## Clipping ablation" in md and "Code→Code" in md
    for name in ("accuracy_vs_step.png", "code_frequency_vs_step.png", "clip_ablation.png", "transitions.png"):
        assert f"(figures/{name})" in md
    assert f"config hash: `{cfgmod.config_hash(cfg)}`" in md
    assert "git commit:" in md and "transformers " in md and "math-verify " in md and "trl " in md
    assert "runs found 12/12" in md
    assert "Paper gain" not in md  # only for study: paper


def test_audit_tables_verdict_and_summary(study) -> None:
    cfg, _, paths = study
    v = pd.read_csv(paths["verdict"])
    assert len(v) == 6  # 2 models x (ground_truth clip, random clip, random no_clip)
    assert set(v["verdict"]) <= set(stats.VERDICTS)
    q = v.query("model == 'toy-qwen-math' and reward == 'ground_truth'").iloc[0]
    # the boxed prompt (97%) is the best baseline: the gain against it is smaller
    assert q["best_template"] == "boxed" and q["gain_best"] < q["gain_paper"]
    assert q["clean_problems"] == N_PROBLEMS and not np.isnan(q["gain_clean"])
    assert q["verdict"] == "no clear gain" and "vanishes against the best prompt" in q["reason"]
    n = v.query("model == 'toy-nocode'")
    assert (n["best_template"] == "chat").all()  # no baselines for it: the paper's template is the best
    assert (n["gain_best"] == n["gain_paper"]).all()
    b = pd.read_csv(paths["baselines"])
    assert b.query("template == 'boxed'")["best"].item() and not b.query("template == 'r1'")["available"].item()
    md = paths["summary"].read_text()
    assert "## Is the gain real? The verdict" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| toy-qwen-math | ground_truth | ")]
    assert any("(boxed)" in r and "**no clear gain**" in r for r in rows), rows
    assert "### Contamination audit (partial prompts)" in md and "arith_test (clean)" in md
    assert "### Clipping-bias probe" in md and "| toy-nocode | code | one_update |" in md
    for key in ("fig_contamination", "fig_baselines", "fig_clip_probe"):
        assert paths[key].read_bytes().startswith(PNG_MAGIC), key
        assert paths[key].stat().st_size > 15_000, key
        assert f"(figures/{paths[key].name})" in md


def test_dvc_files(study) -> None:
    _, _, paths = study
    metrics = json.loads(paths["dvc_metrics"].read_text())
    st = pd.read_csv(paths["summary_stats"])
    want = st.query("model == 'toy-nocode' and reward == 'random' and variant == 'no_clip' "
                    "and benchmark == 'arith' and metric == 'gain' and step == 20")["mean"].item()
    assert metrics["toy-nocode/random/no_clip/gain"] == pytest.approx(want, abs=1e-4)
    assert all(isinstance(v, float) for v in metrics.values())
    plot = pd.read_csv(paths["dvc_plot"])
    assert list(plot.columns) == ["step", "model", "reward", "accuracy"]
    assert set(plot["reward"]) == {"ground_truth", "random", "random/no_clip"}
    assert set(plot["step"]) == {0, 10, 20}


@pytest.mark.slow
def test_deterministic_and_parallel_reading_agrees(study, tmp_path: Path) -> None:
    cfg, root, paths = study
    out = tmp_path / "again"
    again = aggregate.aggregate(cfg, out, results_dir=root, n_boot=400, workers=2)
    for key in ("metrics", "summary_stats", "transitions", "dvc_metrics", "dvc_plot", "verdict", "baselines"):
        assert again[key].read_bytes() == paths[key].read_bytes(), key


def test_missing_runs_and_paper_numbers(tmp_path: Path) -> None:
    models = {
        "Qwen2.5-Math-7B": {"path": "Qwen/Qwen2.5-Math-7B", "template": "chat", "family": "qwen-math"},
        "OLMo-2-1124-7B": {"path": "allenai/OLMo-2-1124-7B", "template": "r1", "family": "olmo"},
    }
    cfg = make_config("paper", models, main="math500")
    build_tree(tmp_path, cfg)
    shutil.rmtree(tmp_path / "eval/OLMo-2-1124-7B/random/no_clip/seed1")
    (tmp_path / "train/OLMo-2-1124-7B/random/no_clip/seed1/metrics.jsonl").unlink()
    paths = aggregate.aggregate(cfg, tmp_path, n_boot=200)
    md = paths["summary"].read_text()
    assert "runs found 11/12" in md
    assert "Paper gain (source)" in md
    row = next(line for line in md.splitlines() if line.startswith("| Qwen2.5-Math-7B | qwen-math | ground_truth |"))
    assert "49.4" in row and "+28.8 ([v0] Fig. 1, step 150)" in row and "+29.1 ([v1] abstract, step 300)" in row
    olmo = next(line for line in md.splitlines() if line.startswith("| OLMo-2-1124-7B | olmo | random |"))
    assert "-8.5 ([v0] Fig. 1, step 150)" in olmo
    st = pd.read_csv(paths["summary_stats"])
    one = st.query("model == 'OLMo-2-1124-7B' and reward == 'random' and variant == 'no_clip' "
                   "and benchmark == 'math500' and metric == 'accuracy' and step == 20")
    assert one["n_seeds"].item() == 1 and np.isnan(one["sd"].item()) and one["ci_low"].notna().item()


def test_paper_numbers_file_is_complete() -> None:
    paper = aggregate.load_paper_numbers()
    v0 = paper[paper["source"] == "[v0] Fig. 1"]
    assert len(v0) == 4 * 6 and set(v0["step"]) == {150} and set(v0["benchmark"]) == {"math500"}
    assert v0.query("model == 'Qwen2.5-7B' and reward == 'random'")["gain"].item() == pytest.approx(7.7)
    v1 = paper[paper["source"] == "[v1] abstract"]
    assert len(v1) == 6 and set(v1["model"]) == {"Qwen2.5-Math-7B"} and set(v1["step"]) == {300}
    # every model named there is one of config/paper.yaml's
    paper_models = set(yaml.safe_load((ROOT / "config/paper.yaml").read_text())["models"])
    assert set(paper["model"]) <= paper_models
