"""spurious_rewards.analysis.aggregate on a tiny synthetic results tree written in the pipeline's own formats.

The tree is conftest's planted one: 2 models x 2 rewards (ground_truth, random with the clip/no_clip
ablation) x 2 seeds, checkpoints at steps 10 and 20, benchmarks `arith` (1 sample) and `arith_avg4`
(4 samples), with audit outputs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import N_PROBLEMS, build_paper_tree

from spurious_rewards import config as cfgmod
from spurious_rewards import io, provenance, stats
from spurious_rewards import paths as layout
from spurious_rewards.analysis import aggregate, classify

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(planted_study) -> tuple[dict, Path, dict[str, Path]]:
    return planted_study


def test_all_outputs_are_written(study) -> None:
    _, root, paths = study
    assert set(paths) == set(layout.aggregate_outputs(root, study[0]["models"]))
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


def test_tidy_batches_write_what_tidy_writes() -> None:
    """Batched tidy rows (write_tables) are byte for byte the per-piece rows, whatever the pieces hold."""
    rng = np.random.default_rng(0)
    shapes = [
        lambda: pd.DataFrame({"step": [10, 0, 10], "benchmark": ["b", "a", "a"], "x": [1, 2, 3],
                              "y": [0.5, np.nan, 1 / 3]}),  # unsorted steps, a duplicate (step, benchmark), NaN
        lambda: pd.DataFrame({"step": [0, 0], "benchmark": ["z", "z"], "x": [1, 2]}),  # ints only: "1", not "1.0"
        lambda: pd.DataFrame({"step": [5, 1], "benchmark": ["a", "b"], "x": ["1", "oops"], "y": [1e16, 2.5]}),
        lambda: pd.DataFrame({"step": [3.0, 1.0], "x": rng.random(2), "flag": [True, False]}),  # a training log
        lambda: pd.DataFrame({"step": [2, 1, 2], "benchmark": ["c"] * 3, "y": rng.random(3), "x": [7, 8, 9]}),
    ]
    pieces = [(shapes[i % 5](), {"model": f"m{i % 3}", "family": "f", "reward": "r", "variant": "v", "seed": i},
               "train" if i % 5 == 3 else None) for i in range(23)]

    def csv(df: pd.DataFrame) -> str:
        return df.to_csv(header=False, index=False, lineterminator="\n")

    want = "".join(csv(aggregate.tidy(*p)) for p in pieces)
    for n in (1, 2, 7, len(pieces)):
        assert "".join(csv(aggregate._tidy_batch(pieces[i:i + n])) for i in range(0, len(pieces), n)) == want, n


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
    # one file per model: `dvc metrics show` prints one row per model
    metrics = json.loads(paths["dvc_metrics/toy-nocode"].read_text())
    assert paths["dvc_metrics/toy-nocode"].parent.name == "metrics"
    st = pd.read_csv(paths["summary_stats"])
    want = st.query("model == 'toy-nocode' and reward == 'random' and variant == 'no_clip' "
                    "and benchmark == 'arith' and metric == 'gain' and step == 20")["mean"].item()
    assert metrics["random/no_clip"] == pytest.approx(want, abs=1e-4)
    assert list(metrics) == ["base_accuracy", "ground_truth", "random", "random/no_clip"]
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
    for key in ("metrics", "summary_stats", "transitions", "dvc_metrics/toy-nocode", "dvc_plot", "verdict",
                "baselines"):
        assert again[key].read_bytes() == paths[key].read_bytes(), key
    # the figures drawn in the worker pool are the figures drawn in one process, pixel for pixel
    figs = [k for k in paths if k.startswith("fig_")]
    assert len(figs) >= 8
    for key in figs:
        assert again[key].read_bytes() == paths[key].read_bytes(), key
    assert again["summary"].read_text().replace(str(out), "") == paths["summary"].read_text().replace(
        str(paths["summary"].parents[1]), "")


def test_missing_runs_and_paper_numbers(tmp_path: Path) -> None:
    cfg = build_paper_tree(tmp_path)
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


def test_config_alpha_sets_every_interval_and_the_verdict(study, tmp_path: Path) -> None:
    """``audit.verdict.alpha`` reaches `spurious aggregate` end to end: alpha 0.5 gives narrower intervals."""
    import copy
    import json
    import subprocess
    import sys

    cfg, root, paths = study
    wide = copy.deepcopy(cfg)
    wide["audit"]["verdict"]["alpha"] = 0.5
    out = tmp_path / "alpha50"
    res = subprocess.run([sys.executable, "-m", "spurious_rewards.cli", "aggregate", "--spec", json.dumps(wide),
                          "--results-dir", str(root), "--out-dir", str(out), "--n-boot", "400"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    a = pd.read_csv(paths["summary_stats"]).dropna(subset=["ci_low"])
    b = pd.read_csv(out / "aggregate" / "summary_stats.csv").dropna(subset=["ci_low"])
    assert len(a) == len(b) > 0
    width_a, width_b = (a["ci_high"] - a["ci_low"]).to_numpy(), (b["ci_high"] - b["ci_low"]).to_numpy()
    assert (width_b <= width_a + 1e-12).all()
    assert (width_b[width_a > 0] < width_a[width_a > 0]).all()  # every non-degenerate interval shrinks
    va, vb = pd.read_csv(paths["verdict"]), pd.read_csv(out / "aggregate" / "verdict.csv")
    assert not va[["gain_best_low", "gain_best_high"]].equals(vb[["gain_best_low", "gain_best_high"]])
    assert "50% CI" in (out / "summary.md").read_text()


def test_alpha_follows_the_config_into_the_summary_and_figures(study, tmp_path: Path, monkeypatch) -> None:
    """audit.verdict.alpha = 0.1: every interval, the summary's wording and the figures' subtitles say 90%;
    every audit panel has a y-axis label."""
    from spurious_rewards.analysis import audit_tables, figures

    cfg, root, _ = study
    cfg = cfgmod.validate({**cfg, "audit": {**cfg["audit"], "verdict": {**cfg["audit"]["verdict"], "alpha": 0.1}}})
    saved: dict[str, object] = {}
    real_save = figures.save

    def capture(fig, path: Path) -> None:
        saved[path.name] = fig
        real_save(fig, path)

    monkeypatch.setattr(figures, "save", capture)
    paths = aggregate.aggregate(cfg, tmp_path, results_dir=root, n_boot=400)  # the study's draws
    md = paths["summary"].read_text()
    assert "Gain [90% CI]" in md and "95%" not in md and "alpha 0.1" in md
    for key in ("fig_contamination", "fig_baselines", "fig_clip_probe", "fig_clip"):
        title = saved[paths[key].name].get_suptitle()
        assert "90%" in title and "95%" not in title, (key, title)
    for key in ("fig_contamination", "fig_baselines", "fig_clip_probe"):
        axes = [ax for ax in saved[paths[key].name].axes if ax.get_visible() and ax.has_data()]
        assert axes and all(ax.get_ylabel() for ax in axes), key
    assert audit_tables._level(0.1) == "90%"
    # the same bootstrap draws: the 90% CI of a gain lies inside the 95% one
    st90, st95 = pd.read_csv(paths["summary_stats"]), pd.read_csv(study[2]["summary_stats"])
    q = "model == 'toy-qwen-math' and reward == 'random' and variant == 'clip' and benchmark == 'arith' " \
        "and metric == 'gain' and step == 20"
    a, b = st90.query(q).iloc[0], st95.query(q).iloc[0]
    assert b["ci_low"] <= a["ci_low"] <= a["ci_high"] <= b["ci_high"] and a["mean"] == b["mean"]


@pytest.mark.parametrize("case", ["fast", "extra_and_missing", "int_flags", "no_code_flag", "not_json"])
def test_read_accuracy_equals_the_per_problem_table(tmp_path: Path, case: str) -> None:
    """samples.read_accuracy and read_final (the aggregation's shortcuts) give what read_problems(f) gives, exactly."""
    from spurious_rewards.analysis import samples

    rng = np.random.default_rng(3)
    rows = [{"id": f"p{j // 4}", "i": j % 4, "response": "x", "pred": "1", "correct": bool(rng.random() < 0.5),
             "code": bool(rng.random() < 0.5), "repetition": False, "tokens": 3} for j in range(40)]
    wanted = [f"p{j}" for j in range(10)]
    if case == "extra_and_missing":  # a problem beyond the base and one the file lacks
        rows = [r for r in rows if r["id"] != "p3"] + [{**rows[0], "id": "q0"}]
    elif case == "int_flags":
        rows = [{**r, "correct": int(r["correct"])} for r in rows]
    elif case == "no_code_flag":
        rows = [{k: v for k, v in r.items() if k != "code"} for r in rows]
    path = tmp_path / "step10_b.jsonl.gz"
    text = "\n".join(json.dumps(r) for r in rows) + "\n"
    if case == "not_json":  # two values on one line: valid inside an array, not JSONL
        text = text.replace("}\n{", "},{", 1)
    path.write_bytes(gzip.compress(text.encode()))
    # the base model's problems: p0..p9, p5's first sample missing (its Code/Lang flag is unknown)
    base_rows = [{**rows[0], "id": f"p{j // 4}", "i": j % 4, "code": bool(j % 3), "correct": bool(j % 5)}
                 for j in range(40) if j != 20]
    base_path = tmp_path / "step0_b.jsonl.gz"
    base_path.write_bytes(gzip.compress(("\n".join(json.dumps(r) for r in base_rows) + "\n").encode()))
    base = samples.read_problems(base_path)
    if case == "not_json":
        with pytest.raises(io.DataError):
            samples.read_problems(path)
        with pytest.raises(io.DataError):
            samples.read_accuracy(path, {p: i for i, p in enumerate(wanted)})
        with pytest.raises(io.DataError):
            samples.read_final(path, base)
        return
    want = samples.accuracy(samples.read_problems(path), pd.Index(wanted, name="id"))
    got = samples.read_accuracy(path, {p: i for i, p in enumerate(wanted)})
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    # the final step: accuracies and transitions as the per-problem table gives them
    final, trans = samples.read_final(path, base)
    assert list(base.index) == wanted and final.tobytes() == want.tobytes()
    want_trans = classify.transitions_between(base, samples.read_problems(path))
    pd.testing.assert_frame_equal(trans, want_trans, check_exact=True)
    assert trans["n"].sum() == (9 if case != "extra_and_missing" else 8)
    if case == "extra_and_missing":
        assert np.isnan(got[3]) and np.isfinite(np.delete(got, 3)).all()


def _pass_at_k_by_enumeration(sample_file: Path, k: int) -> float:
    """Mean over problems of P(some of k of its samples is correct), listing every k-subset (no formula)."""
    from itertools import combinations

    by: dict[str, list[bool]] = {}
    for r in io.iter_jsonl(sample_file):
        by.setdefault(r["id"], []).append(bool(r["correct"]))
    vals = []
    for outcomes in by.values():
        subsets = list(combinations(outcomes, k))
        vals.append(sum(any(s) for s in subsets) / len(subsets))
    return float(np.mean(vals))


def test_alignment_table_figure_and_summary(study) -> None:
    """Model-task alignment on the planted tree: base pass@k from the sample files, each reward's final
    gain from summary_stats, their correlation across the 2 x 2 (model, benchmark) cells."""
    cfg, root, paths = study
    t = pd.read_csv(paths["alignment"])
    from spurious_rewards.analysis import alignment

    assert list(t.columns) == alignment.ALIGNMENT_COLUMNS
    # 2 models x (arith: k = 1; arith_avg4: k = 1..4) x 2 rewards (main variant clip only)
    assert len(t) == 2 * 5 * 2 and set(t["variant"]) == {"clip"}
    assert set(t.loc[t["benchmark"] == "arith", "k"]) == {1} and set(t.loc[t["benchmark"] == "arith_avg4", "k"]) == {
        1, 2, 3, 4}
    assert set(t.loc[t["k_is_max"], "k"]) == {1, 4}
    assert dict(zip(t["reward"], t["kind"], strict=True)) == {"ground_truth": "ground truth", "random": "spurious"}
    st = pd.read_csv(paths["summary_stats"])
    for model in cfg["models"]:
        for bench, ks in (("arith", [1]), ("arith_avg4", [1, 2, 3, 4])):
            f = root / "eval" / model / "base" / "samples" / f"step0_{bench}.jsonl.gz"
            for k in ks:
                got = t.query("model == @model and benchmark == @bench and k == @k")["base_pass_at_k"]
                assert got.nunique() == 1 and got.iloc[0] == pytest.approx(_pass_at_k_by_enumeration(f, k))
            # pass@1 is the base accuracy (avg@k); pass@4 the base summary's own
            acc = st.query("model == @model and reward == 'base' and benchmark == @bench and metric == 'accuracy'")
            p1 = t.query("model == @model and benchmark == @bench and k == 1")["base_pass_at_k"].iloc[0]
            assert p1 == pytest.approx(acc["mean"].item())
        summ = io.read_json(root / "eval" / model / "base" / "summary.json")["results"]
        p4 = next(r["pass@4"] for r in summ if r["benchmark"] == "arith_avg4")
        assert t.query("model == @model and benchmark == 'arith_avg4' and k == 4")["base_pass_at_k"].iloc[0] == \
            pytest.approx(p4)
    # the gain: summary_stats' final-step gain (mean over both seeds) and its CI
    row = t.query("model == 'toy-qwen-math' and benchmark == 'arith_avg4' and reward == 'random' and k == 4").iloc[0]
    g = st.query("model == 'toy-qwen-math' and reward == 'random' and variant == 'clip' and benchmark == 'arith_avg4'"
                 " and metric == 'gain' and step == 20").iloc[0]
    assert (row["step"], row["n_seeds"]) == (20, 2)
    assert (row["gain"], row["gain_ci_low"], row["gain_ci_high"]) == pytest.approx(
        (g["mean"], g["ci_low"], g["ci_high"]))
    # the correlation across the 4 cells at each benchmark's largest k, and per k
    c = pd.read_csv(paths["alignment_corr"], dtype={"k": str})
    assert list(c.columns) == alignment.CORRELATION_COLUMNS
    assert list(c["k"]) == ["max", "1", "2", "3", "4"] * 2
    alpha = cfg["audit"]["verdict"]["alpha"]
    assert set(c["alpha"]) == {alpha} and set(c["n_boot"]) == {400}
    for reward in ("ground_truth", "random"):
        cells = t[(t["reward"] == reward) & t["k_is_max"]]
        head = c[(c["reward"] == reward) & (c["k"] == "max")].iloc[0]
        assert head["n_cells"] == 4
        assert head["pearson_r"] == pytest.approx(np.corrcoef(cells["base_pass_at_k"], cells["gain"])[0, 1])
        rho = np.corrcoef(cells["base_pass_at_k"].rank(), cells["gain"].rank())[0, 1]
        assert head["spearman_rho"] == pytest.approx(rho)
        assert 0 < head["n_valid_draws"] < 400 and -1 <= head["pearson_low"] <= head["pearson_high"] <= 1
        # k = 2..4: only the sampled benchmark, 2 cells: no correlation
        assert c[(c["reward"] == reward) & c["k"].isin(["2", "3", "4"])]["pearson_r"].isna().all()
    data = paths["fig_alignment"].read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    md = paths["summary"].read_text()
    head = "### Does the gain track the base model's pass@k? (model–task alignment)\n\n"
    assert md.index("## Findings in plain words") < md.index(head) < md.index("## Gain over the base model")
    para = md.split(head, 1)[1].split("\n", 1)[0]
    assert para.startswith("Wu et al. (2025) report that spurious rewards help only where")
    r = c[(c["reward"] == "random") & (c["k"] == "max")].iloc[0]
    assert f"random (spurious): Pearson r = {r['pearson_r']:+.2f} [95% CI bootstrap {r['pearson_low']:+.2f}" in para
    assert "With only 4 cells these intervals are wide" in para and "(figures/alignment.png)" in para
    assert "arith k=1, arith_avg4 k=4" in para
