"""Fast checks of the benchmark runner (no benchmark is run)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_planning_scales_seeds() -> None:
    bp = _load("bench_planning")
    base = {"seeds": [1, 2, 3], "models": {"m": {}}}
    assert bp.scaled_config(base, 1)["seeds"] == [1, 2, 3]
    assert bp.scaled_config(base, 4)["seeds"] == list(range(1, 13))
    assert base["seeds"] == [1, 2, 3]


def test_every_figure_has_two_sizes_in_the_plan() -> None:
    ra = _load("run_all")
    for quick in (False, True):
        names = [n for n, _, _ in ra.plan(quick)]
        for bench in ("grading", "train", "generation"):
            assert f"{bench}_small" in names and bench in names
        argv = dict((n, a) for n, a, _ in ra.plan(quick))
        assert len(argv["analysis"][argv["analysis"].index("--sizes") + 1:][:2]) == 2
        assert all("--out" in a for a in argv.values())


def test_table_from_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ra = _load("run_all")
    monkeypatch.setattr(ra, "OUT", tmp_path)
    (tmp_path / "planning.json").write_text(json.dumps({
        "meets_target": True,
        "sizes": [{"scale": 1, "jobs": 869, "seconds": 11.0, "linear_ratio": 1.0},
                  {"scale": 2, "jobs": 1709, "seconds": 20.0, "linear_ratio": 0.92}]}))
    (tmp_path / "train.json").write_text(json.dumps(
        {"ratio": 1.2, "trl_step_s": 1.2, "raw_step_s": 1.0, "raw_steps_s": [1, 1], "peak_rss_mb": 500}))
    gen_rows = [{"template": t, "kind": k, "batch": b, "ms_per_seq": 4.0, "ratio_to_generate_64": r}
                for t, k, b, r in (("chat", "generate", 64, 1.0), ("chat", "engine", 256, 0.6),
                                   ("few_shot", "engine", 64, 0.7), ("few_shot", "engine", 256, 0.85))]
    (tmp_path / "generation.json").write_text(json.dumps({"sequences_per_template": 512, "rows": gen_rows}))
    rows = ra.figures(quick=False)
    by = {r["figure"].split(":")[0]: r for r in rows}
    assert by["Toy generation"]["pass"] == "MISS"  # few_shot at batch 256 is over 0.8x
    assert "worst 0.85×" in by["Toy generation"]["measured"] and "chat 0.60×" in by["Toy generation"]["scaling"]
    assert by["Planning"]["pass"] == "PASS" and "x2" in by["Planning"]["scaling"]
    assert by["Toy training"]["pass"] == "PASS"
    assert by["Grading"]["pass"] == "MISS"  # not measured is never a pass
    md = tmp_path / "B.md"
    ra.write_markdown(rows, ra.machine(), {}, False, md)
    text = md.read_text()
    assert "| Figure | Target | Measured | Scaling | Pass |" in text and "nproc" in text


def test_analysis_grid_matches_the_paper_config() -> None:
    """The synthetic paper grid has config/paper.yaml's benchmarks (it asserts so before a 4-minute run)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        ba = _load("bench_analysis")
        cfg = ba.paper_grid_config()
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert list(cfg["benchmarks"]) == list(ba.PAPER_BENCHMARKS)
    for name, (_n, k) in ba.PAPER_BENCHMARKS.items():
        assert cfg["benchmarks"][name]["samples"] == k, name


def test_fidelity_arms_differ_only_in_the_arm_setting() -> None:
    import yaml

    from spurious_rewards import config as cfgmod

    fa = _load("fidelity_arms")
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfgs = {arm: fa.arm_config(base, arm, model="toy-qwen-math", rewards=["ground_truth", "random"], seeds=[1, 2],
                               steps=20, benchmark="arith") for arm in fa.ARMS}
    for arm, cfg in cfgs.items():
        cfgmod.validate(cfg)
        runs = list(cfgmod.runs(cfg))
        assert {(r.model, r.reward, r.variant, r.seed) for r in runs} == {
            ("toy-qwen-math", rw, "clip", s) for rw in ("ground_truth", "random") for s in (1, 2)}, arm
        assert Path(cfg["models"]["toy-qwen-math"]["path"]).is_absolute()
    assert cfgs["whitening"]["grpo"]["advantage_whitening"] == "batch_token"
    assert cfgs["token_mean"]["grpo"]["loss_agg"] == "token-mean"
    strip = {"advantage_whitening", "loss_agg"}
    grpo = [{k: v for k, v in c["grpo"].items() if k not in strip} for c in cfgs.values()]
    assert all(g == grpo[0] for g in grpo)

def test_grown_grid_and_io_floor(tmp_path: Path) -> None:
    """The grown grid has 19 cells per model; the floor reads every row of every sample folder."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        ba = _load("bench_analysis")
        cfg = ba.paper_grid_config(2, grown=True)
        assert list(cfg["models"]) == list(ba.paper_grid_config()["models"])[:2]
        assert ba.cells_per_model(cfg) == 19 and 14 <= ba.cells_per_model(ba.paper_grid_config()) < 19
        with pytest.raises(ValueError, match="n_models"):
            ba.paper_grid_config(0)
        rng = np.random.default_rng(0)
        pool = ba.response_pool(50, 8, rng)
        n = sum(ba.write_sample_file(tmp_path / "eval" / m / "samples" / f"step{s}_b.jsonl.gz", 5, k, pool, rng)
                for m, k in (("a", 1), ("b", 8)) for s in (0, 10))
        floor = ba.io_floor(tmp_path, workers=1)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert (floor["files"], floor["rows"]) == (4, n) and n == 2 * 5 + 2 * 40


def test_floor_row_reports_the_worst_ratio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ra = _load("run_all")
    monkeypatch.setattr(ra, "OUT", tmp_path)
    size = {"models": 2, "cells_per_model": 14, "runs": 84, "responses": 4_000_000, "floor_seconds": 10.0,
            "full_seconds": 13.0, "ratio": 1.3, "load_average_before": 2.0}
    grown = {**size, "cells_per_model": 19, "full_seconds": 17.0, "ratio": 1.7, "floor_cpu_seconds": 20.0,
             "full_cpu_seconds": 24.0, "cpu_ratio": 1.2}
    (tmp_path / "analysis.json").write_text(json.dumps({
        "classification": [{"responses": 1, "responses_per_minute": 2e6, "meets_target": True}],
        "classification_unflagged": {"responses_per_minute": 1e5}, "aggregation_sizes": [size, grown]}))
    row = next(r for r in ra.figures(quick=True) if r["figure"].startswith("Aggregation vs its I/O floor"))
    assert row["pass"] == "MISS" and "worst 1.70×" in row["measured"] and "2x14 cells" in row["scaling"]
    # the CPU ratio is shown where the size recorded CPU times
    assert "= 1.70× (CPU 20 s vs 24 s = 1.20×)" in row["scaling"] and "= 1.30×;" in row["scaling"]
    (tmp_path / "analysis.json").write_text(json.dumps({
        "classification": [{"responses": 1, "responses_per_minute": 2e6, "meets_target": True}],
        "classification_unflagged": {"responses_per_minute": 1e5}, "aggregation_sizes": [size]}))
    row = next(r for r in ra.figures(quick=True) if r["figure"].startswith("Aggregation vs its I/O floor"))
    assert row["pass"] == "PASS" and "1.30×" in row["measured"]
    # a size also aggregated without its column indexes says so; the target is the indexed aggregation's
    text = {**size, "text_seconds": 21.0, "text_ratio": 2.1}
    (tmp_path / "analysis.json").write_text(json.dumps({
        "classification": [{"responses": 1, "responses_per_minute": 2e6, "meets_target": True}],
        "classification_unflagged": {"responses_per_minute": 1e5}, "aggregation_sizes": [text]}))
    row = next(r for r in ra.figures(quick=True) if r["figure"].startswith("Aggregation vs its I/O floor"))
    assert row["pass"] == "PASS" and "without column indexes (every file parsed) 21.0 s = 2.10×" in row["scaling"]


def test_make_run_bench_patches_the_old_defaults_into_job_specs() -> None:
    """bench_make_run's "before" is the job's own command with only the BEFORE keys of its spec changed."""
    import yaml

    bm = _load("bench_make_run")
    spec = {"evaluation": {"batch_size": 256, "seed": 0}, "model": {"name": "m"}}
    cmd = (f"spurious evaluate --spec '{json.dumps(spec)}' --model-dir 'a b' --out-summary r/s.json "
           "--out-samples r/samples > logs/evaluate_base/m.log 2>&1")
    argv, log = bm._argv(cmd)
    assert log == "logs/evaluate_base/m.log" and Path(argv[0]).name == "spurious"
    assert argv[-1] == "r/samples" and "a b" in argv and bm._outputs(argv) == ["r/s.json", "r/samples"]
    patched = json.loads(bm._patch(argv, {"evaluation.batch_size": 64})[argv.index("--spec") + 1])
    assert patched == {**spec, "evaluation": {"batch_size": 64, "seed": 0}}
    assert bm._patch(argv, bm.BEFORE) == bm._patch(argv, {})  # no probe key here: the job runs once
    assert json.loads(argv[argv.index("--spec") + 1]) == spec  # the original argv is left alone
    # the labelling spec carries the evaluation batch size at its top level; the probe has its draws
    for job, key, old in (({"batch_size": 256, "samples": 8}, ("batch_size",), 64),
                          ({"probe": {"draws": 30, "seed": 0}}, ("probe", "draws"), 50)):
        out = json.loads(bm._patch(["spurious", "--spec", json.dumps(job)],
                                   {**bm.BEFORE, "evaluation.batch_size": 64})[2])
        node = out
        for k in key[:-1]:
            node = node[k]
        assert node[key[-1]] == old
    # every patched key is a real setting of config.yaml
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for key in bm.BEFORE:
        node = cfg
        for k in key.split("."):
            node = node[k]


def test_kept_grids_are_reused_only_for_the_same_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--grids: a kept tree is reused for the same config, chars and seed, and rewritten otherwise."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        ba = _load("bench_analysis")
    finally:
        sys.path.remove(str(ROOT / "bench"))
    written: list[int] = []

    def fake_write_grid(root: Path, cfg: dict, chars: int, seed: int) -> dict:  # the real one takes minutes
        root.mkdir(parents=True)
        (root / "tree").write_text(str(seed))
        written.append(seed)
        return {"runs": len(cfg["models"]), "sample_files": 1, "responses": 2}

    monkeypatch.setattr(ba, "write_grid", fake_write_grid)
    cfg = ba.paper_grid_config(1)
    root, shape = ba.grid_tree(tmp_path / "scratch", tmp_path / "grids", "1", cfg, 200, 0)
    assert root == tmp_path / "grids" / "grid_1" and shape["responses"] == 2 and written == [0]
    again, shape = ba.grid_tree(tmp_path / "scratch", tmp_path / "grids", "1", cfg, 200, 0)
    assert again == root and written == [0] and shape["generate_s"] == 0.0
    ba.grid_tree(tmp_path / "scratch", tmp_path / "grids", "1", cfg, 200, 1)  # another seed: rewritten
    assert written == [0, 1] and (root / "tree").read_text() == "1"
    scratch_root, _ = ba.grid_tree(tmp_path / "scratch", None, "1", cfg, 200, 0)  # no --grids: scratch
    assert scratch_root == tmp_path / "scratch" / "grid_1" and written == [0, 1, 0]
