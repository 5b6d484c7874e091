"""Analysis throughput: sample-file classification/transitions, and aggregation of a paper-size grid.

Not a test. Two measurements, each against its target:

1. **Classification** (target >= 1M responses/minute): synthetic evaluation sample files
   in the pipeline's exact format (gzipped JSONL rows ``{id, i, response, pred, correct,
   code, repetition, tokens}``, 500 problems x 8 samples per file, responses of
   ``--chars`` characters drawn from a pool larger than gzip's window) at two sizes
   (default 250k and 1M responses). Timed: ``classify.read_problems`` on every file (one
   streaming pass -> per-problem table), ``classify.transitions_between`` against a base
   file and ``classify.sample_rates``. Also timed on a small file *without* the
   code/repetition flags, to show what re-classifying the text would cost.
2. **Aggregation** (target < 60 s): a synthetic tree shaped like config/paper.yaml (10
   models x 14 reward/variant cells x 3 seeds = 420 runs, checkpoints every 10 of 150
   steps, 5 benchmarks of the paper's sizes, 151-row training logs). Timed separately:
   the tidy table + seed statistics from the summaries and training logs (``write_tables``
   + ``summary_stats``), and the whole ``aggregate()`` (every sample file read, bootstrap
   CIs, transitions, figures, summary.md) with ``--workers`` processes.

3. **Aggregation against its I/O floor** (target <= 1.5x): for the paper grid and for
   ``--grid-models`` / ``--grown-models`` sizes (the grown grid adds the arms of
   ``GROWN_REWARDS``: 19 reward/variant cells per model), the *floor* (every sample file
   read, decompressed and parsed with one ``json.loads``, nothing else, same workers) and
   the whole ``aggregate()`` are timed back to back on the same tree; their ratio is the
   figure, which machine load moves much less than either time. The grids are written as
   the evaluation writes its outputs, each sample file with its column index
   (``samplefile.py``), which is what ``aggregate()`` reads; at the ``--text-models``
   sizes it is timed a second time with the indexes hidden (results from before indexes
   existed: every sample file parsed).

Results go to ``results/bench/analysis.json``; scratch files to ``--scratch`` (removed); with
``--grids DIR`` the synthetic grids are kept in DIR and reused by later runs (the 10-model
grid takes longer to write than to aggregate).

    python bench/bench_analysis.py [--sizes 250000 1000000] [--chars 1200] [--workers 2]
                                   [--grid-models 2 5] [--grown-models 10] [--skip-grid] [--grids DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import logging
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from spurious_rewards import config as cfgmod
from spurious_rewards import io, samplefile
from spurious_rewards.analysis import aggregate, classify

ROOT = Path(__file__).resolve().parents[1]
PAPER_BENCHMARKS = {"math500": (500, 1), "amc": (83, 8), "aime24": (30, 8), "aime25": (30, 8), "arith_l2": (500, 1),
                    "arith": (500, 1), "arith_l5": (500, 1)}
WORDS = ("we", "let", "so", "the", "sum", "of", "x", "is", "then", "compute", "value", "answer", "therefore",
         "step", "number", "equation", "solve", "for", "and", "where", "2", "3", "17", "=", "+", "\\frac{1}{2}")


def response_pool(chars: int, n: int, rng: np.random.Generator) -> list[tuple[str, bool]]:
    """Distinct responses of about ``chars`` characters, JSON-encoded; about 60% mention python (code style)."""
    pool = []
    for _ in range(n):
        code = bool(rng.random() < 0.6)
        words = rng.choice(WORDS, size=max(1, chars // 5)).tolist()
        text = " ".join(words)[:chars]
        if code:
            text = "```python\nprint(" + text[:chars // 3] + ")\n```\n" + text[chars // 3:]
        pool.append((json.dumps(text + " \\boxed{17}", ensure_ascii=False), code))
    return pool


def write_sample_file(path: Path, n_problems: int, k: int, pool: list, rng: np.random.Generator,
                      flags: bool = True, index: bool = False) -> int:
    """One samples/step{N}_{bench}.jsonl.gz, byte-identical in layout to the evaluation's json.dumps rows.

    Rows are formatted from pre-encoded responses (json.dumps per row would make
    generating the 13.5M-response grid slower than analysing it). ``index``: also its
    column index, as the evaluation writes it (``samplefile.write_index`` reads the
    file back, so the index is the one its rows give).
    """
    picks = rng.integers(0, len(pool), size=n_problems * k).tolist()
    correct = (rng.random(n_problems * k) < 0.5).tolist()
    lines = []
    for j, (pick, ok) in enumerate(zip(picks, correct, strict=True)):
        text, code = pool[pick]
        tail = (f', "code": {"true" if code else "false"}, "repetition": false, "tokens": {len(text) // 4}'
                if flags else "")
        lines.append(f'{{"id": "p{j // k}", "i": {j % k}, "response": {text}, "pred": "17", '
                     f'"correct": {"true" if ok else "false"}{tail}}}')
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        gz.write(("\n".join(lines) + "\n").encode("utf-8"))
    if index and not samplefile.write_index(path):
        raise RuntimeError(f"{path}: no column index written")
    return len(lines)


def bench_classification(scratch: Path, size: int, chars: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    pool = response_pool(chars, 512, rng)
    per_file = 500 * 8
    d = scratch / f"classify_{size}"
    files = [d / f"step{10 * (i + 1)}_b.jsonl.gz" for i in range(max(1, math.ceil(size / per_file)))]
    base = d / "step0_b.jsonl.gz"
    t0 = time.perf_counter()
    write_sample_file(base, 500, 8, pool, rng)
    n = sum(write_sample_file(f, 500, 8, pool, rng) for f in files)
    gen_s = time.perf_counter() - t0
    mb = sum(f.stat().st_size for f in files) / 1e6
    t0, c0 = time.perf_counter(), time.process_time()
    base_tab = classify.read_problems(base)
    groups = np.zeros(4)
    for f in files:
        tab = classify.read_problems(f)
        groups += classify.transitions_between(base_tab, tab)["n"].to_numpy()
        classify.sample_rates(tab)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    shutil.rmtree(d)
    return {"responses": n, "files": len(files), "compressed_mb": round(mb, 1), "response_chars": chars,
            "generate_s": round(gen_s, 2), "seconds": round(dt, 3), "cpu_seconds": round(cpu, 3),
            "responses_per_minute": round(n / dt * 60), "responses_per_cpu_minute": round(n / cpu * 60),
            "target_per_minute": 1_000_000, "meets_target": n / dt * 60 >= 1_000_000}


def bench_unflagged(scratch: Path, chars: int, seed: int, n_problems: int = 2500) -> dict:
    """The same file without code/repetition flags: the text is classified (repetition detector included)."""
    rng = np.random.default_rng(seed)
    pool = response_pool(chars, 512, rng)
    path = scratch / "unflagged.jsonl.gz"
    n = write_sample_file(path, n_problems, 8, pool, rng, flags=False)
    t0 = time.perf_counter()
    classify.read_problems(path)
    dt = time.perf_counter() - t0
    path.unlink()
    return {"responses": n, "seconds": round(dt, 3), "responses_per_minute": round(n / dt * 60)}


#: the arms that grow the grid (issue 15): random rewards at p = 0.7, 0.3, 0.001 and 0, and a
#: no-clip arm at rollout 8 (here a fifth reward under ``no_clip``): 14 -> 19 cells per model.
GROWN_REWARDS = {
    "random_p07": {"spec": "random(0.7)", "labels": "true_labels", "variants": ["clip"]},
    "random_p03": {"spec": "random(0.3)", "labels": "true_labels", "variants": ["clip"]},
    "random_p0001": {"spec": "random(0.001)", "labels": "true_labels", "variants": ["clip"]},
    "random_p0": {"spec": "random(0)", "labels": "true_labels", "variants": ["clip"]},
    "random_rollout8": {"spec": "random(0.5)", "labels": "true_labels", "variants": ["no_clip"]},
}


def paper_grid_config(n_models: int | None = None, grown: bool = False) -> dict:
    """config/paper.yaml, optionally its first ``n_models`` models and the grown arms (19 cells per model)."""
    cfg = cfgmod.load(ROOT / "config" / "paper.yaml")
    assert list(cfg["benchmarks"]) == list(PAPER_BENCHMARKS), "config/paper.yaml benchmarks changed"
    if n_models is not None:
        if not 1 <= n_models <= len(cfg["models"]):
            raise ValueError(f"n_models: {n_models} is outside 1..{len(cfg['models'])}")
        cfg["models"] = dict(list(cfg["models"].items())[:n_models])
    if grown:
        # config/paper.yaml runs the new arms on one model (rewards.*.models); grown = on every model
        limited = [r for r in cfg["rewards"].values() if "models" in r]
        for r in limited:
            del r["models"]
        if not limited:  # a config without the arms: add them
            cfg["rewards"] = {**cfg["rewards"], **{k: dict(v) for k, v in GROWN_REWARDS.items()}}
    return cfg


def cells_per_model(cfg: dict) -> float:
    """Reward/variant cells per model, averaged over the models (19 in the grown grid)."""
    n_runs = sum(1 for _ in cfgmod.runs(cfg))
    return round(n_runs / (len(cfg["models"]) * len(cfg["seeds"])), 1)


def _parse_dir(sample_dir: str) -> tuple[int, int]:
    """The I/O floor of one sample folder: read, decompress and parse every file as the fast path does.

    Exactly the work of :func:`samples.read_problems` before it folds (``read_bytes``,
    ``gzip.decompress``, the UTF-8 check, one ``json.loads`` of the joined lines) and
    nothing after it: the least any aggregation must spend to have the rows as Python
    objects. Returns (files, rows).
    """
    files = rows = 0
    for f in sorted(Path(sample_dir).glob("step*_*.jsonl.gz")):
        data = gzip.decompress(f.read_bytes())
        data.decode("utf-8")
        rows += len(json.loads(b"[" + b",".join(ln for ln in data.split(b"\n") if ln.strip()) + b"]"))
        files += 1
    return files, rows


def io_floor(root: Path, workers: int) -> dict:
    """Time :func:`_parse_dir` over every sample folder of a grid with ``workers`` processes.

    The folders are handed out one per task, as aggregate() hands out one cell (3
    folders) per task, so both sides pay the same process start and scheduling.
    """
    dirs = sorted(str(d) for d in root.glob("eval/**/samples") if d.is_dir())
    t0, c0 = time.perf_counter(), _cpu()
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            counts = list(pool.map(_parse_dir, dirs, chunksize=1))
    else:
        counts = [_parse_dir(d) for d in dirs]
    dt, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"seconds": round(dt, 2), "cpu_seconds": round(cpu, 2), "files": sum(c[0] for c in counts),
            "rows": sum(c[1] for c in counts), "workers": workers}


def grid_tree(scratch: Path, grids: Path | None, label: str, cfg: dict, chars: int, seed: int) -> tuple[Path, dict]:
    """The synthetic results tree of one grid size: generated in ``scratch``, or kept in and reused from ``grids``.

    Why reuse: the 10-model grid takes ~10 minutes to write, longer than its
    aggregation; a kept tree is reused only when its recorded shape (``shape.json``)
    was written for the same config, response length and seed.
    """
    root = (grids if grids is not None else scratch) / f"grid_{label}"
    marker = root / "shape.json"
    want = {"config_hash": cfgmod.config_hash(cfg), "chars": chars, "seed": seed, "index": samplefile.FORMAT}
    if grids is not None and marker.exists():
        doc = json.loads(marker.read_text())
        if doc.get("made_with") == want:
            return root, {**doc["shape"], "generate_s": 0.0}
        shutil.rmtree(root)
    t0 = time.perf_counter()
    shape = write_grid(root, cfg, chars, seed)
    shape["generate_s"] = round(time.perf_counter() - t0, 1)
    if grids is not None:
        marker.write_text(json.dumps({"made_with": want, "shape": shape}))
    return root, shape


@contextlib.contextmanager
def indexes_hidden(root: Path):
    """Every sample file's column index renamed away (and back): the aggregation then reads the sample files."""
    hidden = []
    try:
        for p in sorted(root.rglob("*" + samplefile.INDEX_SUFFIX)):
            p.rename(p.with_name(p.name + ".hidden"))
            hidden.append(p)
        yield len(hidden)
    finally:
        for p in hidden:
            p.with_name(p.name + ".hidden").rename(p)


def _timed_aggregate(cfg: dict, root: Path, out: Path, workers: int, n_boot: int) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), _cpu()
    aggregate.aggregate(cfg, out, results_dir=root, n_boot=n_boot, workers=workers)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    shutil.rmtree(out, ignore_errors=True)
    return wall, cpu


def bench_floor_and_aggregate(scratch: Path, cfg: dict, chars: int, workers: int, n_boot: int, seed: int,
                              label: str, grids: Path | None = None, from_text: bool = False) -> dict:
    """One grid: generate it (or reuse it from ``grids``), then (same run, same workers) its I/O floor and aggregate().

    The ratio aggregate / floor is the figure (target <= 1.5x); absolute seconds
    move with machine load, the ratio of two timings taken back to back much less.
    The CPU ratio (this process and its workers, user + sys) is reported beside it:
    on a shared machine it moves least of all.
    """
    root, shape = grid_tree(scratch, grids, label, cfg, chars, seed)
    gen_s = shape.pop("generate_s")
    load = os.getloadavg()[0]
    floor = io_floor(root, workers)
    if floor["files"] != shape["sample_files"] or floor["rows"] != shape["responses"]:
        raise RuntimeError(f"floor read {floor['files']} files / {floor['rows']} rows, the grid has "
                           f"{shape['sample_files']} / {shape['responses']}")
    full_s, full_cpu = _timed_aggregate(cfg, root, scratch / f"out_{label}", workers, n_boot)
    text = {}
    if from_text:  # the same tree read as results written before indexes existed
        with indexes_hidden(root) as n_hidden:
            if n_hidden != shape["sample_files"]:
                raise RuntimeError(f"{n_hidden} column indexes for {shape['sample_files']} sample files")
            text_s, text_cpu = _timed_aggregate(cfg, root, scratch / f"out_{label}_text", workers, n_boot)
        text = {"text_seconds": round(text_s, 2), "text_cpu_seconds": round(text_cpu, 2),
                "text_ratio": round(text_s / floor["seconds"], 3)}
    load_after = os.getloadavg()[0]
    if grids is None:
        shutil.rmtree(root)
    return {**shape, **text, "label": label, "models": len(cfg["models"]), "cells_per_model": cells_per_model(cfg),
            "generate_s": round(gen_s, 1), "floor_seconds": floor["seconds"],
            "floor_cpu_seconds": floor["cpu_seconds"], "full_seconds": round(full_s, 2),
            "full_cpu_seconds": round(full_cpu, 2), "ratio": round(full_s / floor["seconds"], 3),
            "cpu_ratio": round(full_cpu / floor["cpu_seconds"], 3) if floor["cpu_seconds"] else None,
            "workers": workers, "n_boot": n_boot, "load_average_before": round(load, 2),
            "load_average_after": round(load_after, 2), "target_ratio": 1.5,
            "meets_target": full_s <= 1.5 * floor["seconds"]}


def write_grid(root: Path, cfg: dict, chars: int, seed: int) -> dict:
    """A results tree of the paper grid's shape; summaries are computed from the written samples' flags."""
    rng = np.random.default_rng(seed)
    pool = response_pool(chars, 512, rng)
    steps = cfgmod.checkpoint_steps(cfg)
    n_files = n_rows = 0

    def eval_dir(path: Path, model: str, eval_steps: list[int]) -> None:
        nonlocal n_files, n_rows
        rows = []
        for step in eval_steps:
            for bench, (n_problems, k) in PAPER_BENCHMARKS.items():
                f = path / "samples" / f"step{step}_{bench}.jsonl.gz"
                n_rows += write_sample_file(f, n_problems, k, pool, rng, index=True)
                n_files += 1
                acc = float(rng.random())
                rows.append({"step": step, "benchmark": bench, "problems": n_problems, "samples": n_problems * k,
                             "accuracy": acc, "code_frequency": 0.6, "repetition_rate": 0.0,
                             "mean_length": chars / 4, "accuracy_code": acc, "accuracy_language": acc,
                             "pass@1": acc, **({"pass@8": min(1.0, acc * 1.5)} if k == 8 else {}),
                             "seconds": 1.0})
        io.write_json({"model": model, "grading": {}, "results": rows}, path / "summary.json")

    for model in cfg["models"]:
        eval_dir(root / "eval" / model / "base", model, [0])
    for run in cfgmod.runs(cfg):
        eval_dir(root / "eval" / run.path, run.model, steps)
        train = [{"step": 0, "p_code": 0.5, "wall_time": 0.0}] + [
            {"step": s, "reward_mean": 0.5, "reward_std": 0.5, "accuracy": 0.6, "accuracy_code": 0.7,
             "accuracy_language": 0.4, "code_frequency": 0.6, "clip_fraction": 0.01, "entropy": 1.0, "kl": 0.0,
             "response_length": 300.0, "p_code": 0.5, "updates": 8, "wall_time": 60.0 * s, "grad_norm": 0.2,
             "loss": 0.0} for s in range(1, cfg["grpo"]["steps"] + 1)]
        io.write_jsonl(train, root / "train" / run.path / "metrics.jsonl")
    return {"runs": sum(1 for _ in cfgmod.runs(cfg)), "checkpoint_steps": len(steps),
            "benchmarks": len(PAPER_BENCHMARKS), "sample_files": n_files, "responses": n_rows}


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the sample-reading workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bench_aggregation(scratch: Path, chars: int, workers: int, n_boot: int, seed: int,
                      grids: Path | None = None) -> dict:
    cfg = paper_grid_config()
    root, shape = grid_tree(scratch, grids, "paper", cfg, chars, seed)
    gen_s = shape.pop("generate_s")
    t0, c0 = time.perf_counter(), _cpu()
    evals, trains = aggregate.write_tables(cfg, root, scratch / "tables" / "metrics.csv")
    st = aggregate.summary_stats(evals, trains)
    table_s, table_cpu = time.perf_counter() - t0, _cpu() - c0
    with open(scratch / "tables" / "metrics.csv", "rb") as fh:
        tidy_rows = sum(1 for _ in fh) - 1
    load = os.getloadavg()[0]
    floor = io_floor(root, workers)
    t0, c0 = time.perf_counter(), _cpu()
    aggregate.aggregate(cfg, scratch / "out", results_dir=root, n_boot=n_boot, workers=workers)
    full_s, full_cpu = time.perf_counter() - t0, _cpu() - c0
    if grids is None:
        shutil.rmtree(root)
    return {
        **shape, "response_chars": chars, "generate_s": round(gen_s, 1),
        "tidy_rows": tidy_rows, "summary_stats_rows_without_samples": len(st),
        "table_seconds": round(table_s, 2), "table_cpu_seconds": round(table_cpu, 2),
        "full_seconds": round(full_s, 2), "full_cpu_seconds": round(full_cpu, 2), "full_workers": workers,
        "n_boot": n_boot, "load_average_before_full": round(load, 2),
        "floor_seconds": floor["seconds"], "floor_cpu_seconds": floor["cpu_seconds"],
        "ratio_to_floor": round(full_s / floor["seconds"], 3),
        "cpu_ratio_to_floor": round(full_cpu / floor["cpu_seconds"], 3) if floor["cpu_seconds"] else None,
        "models": len(cfg["models"]),
        "cells_per_model": cells_per_model(cfg),
        "full_responses_per_minute": round(shape["responses"] / full_s * 60),
        "target_seconds": 60, "table_meets_target": table_s < 60, "full_meets_target": full_s < 60,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[250_000, 1_000_000])
    ap.add_argument("--chars", type=int, default=1200, help="response length for the classification files")
    ap.add_argument("--grid-chars", type=int, default=200, help="response length in the paper-size grid")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-grid", action="store_true", help="skip the full paper grid (10 models)")
    ap.add_argument("--grid-models", type=int, nargs="*", default=[2, 5],
                    help="also time floor + aggregate() on the first N models of the paper grid")
    ap.add_argument("--grown-models", type=int, nargs="*", default=[10],
                    help="also time floor + aggregate() on N models of the grown grid (19 cells per model)")
    ap.add_argument("--text-models", type=int, nargs="*", default=[2],
                    help="at these --grid-models sizes also time aggregate() with the column indexes hidden "
                         "(results written before indexes existed: every sample file parsed)")
    ap.add_argument("--scratch", type=Path, default=None)
    ap.add_argument("--grids", type=Path, default=None,
                    help="keep the synthetic grids here and reuse them on later runs (same config, chars, seed)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "analysis.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    scratch = Path(tempfile.mkdtemp(prefix="bench_analysis_", dir=args.scratch))
    try:
        result = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                        "numpy": np.__version__, "load_average_at_start": round(os.getloadavg()[0], 2)},
            "classification": [bench_classification(scratch, n, args.chars, args.seed) for n in args.sizes],
            "classification_unflagged": bench_unflagged(scratch, args.chars, args.seed),
        }
        for r in result["classification"]:
            print(f"classification {r['responses']:>9,} responses ({r['response_chars']} chars): "
                  f"{r['responses_per_minute'] / 1e6:.2f}M/min on one core (target >= 1.00M/min) "
                  f"{'OK' if r['meets_target'] else 'MISSED'}")
        u = result["classification_unflagged"]
        print(f"  same rows without code/repetition flags (text re-classified): {u['responses_per_minute'] / 1e6:.2f}M/min")
        if not args.skip_grid:
            g = bench_aggregation(scratch, args.grid_chars, args.workers, args.n_boot, args.seed, args.grids)
            result["aggregation"] = g
            print(f"paper-size grid: {g['runs']} runs x {g['checkpoint_steps']} checkpoints x {g['benchmarks']} "
                  f"benchmarks, {g['responses']:,} responses in {g['sample_files']:,} files")
            print(f"  tidy table + seed statistics ({g['tidy_rows']:,} rows): {g['table_seconds']:.1f} s "
                  f"(target < 60 s) {'OK' if g['table_meets_target'] else 'MISSED'}")
            print(f"  full aggregate (all samples read, CIs, transitions, figures; {g['full_workers']} workers): "
                  f"{g['full_seconds']:.1f} s (target < 60 s) {'OK' if g['full_meets_target'] else 'MISSED'}; "
                  f"{g['full_cpu_seconds']:.0f} CPU s in all, machine load {g['load_average_before_full']} "
                  f"on {os.cpu_count()} cores before it")
        sizes = [(n, False) for n in args.grid_models] + [(n, True) for n in args.grown_models]
        result["aggregation_sizes"] = []
        for n, grown in sizes:
            cfg = paper_grid_config(n, grown=grown)
            r = bench_floor_and_aggregate(scratch, cfg, args.grid_chars, args.workers, args.n_boot, args.seed,
                                          f"{n}{'_grown' if grown else ''}", args.grids,
                                          from_text=not grown and n in args.text_models)
            result["aggregation_sizes"].append(r)
            print(f"{n} models x {r['cells_per_model']:g} cells ({r['runs']} runs, {r['responses']:,} responses, "
                  f"{r['sample_files']:,} files): I/O floor {r['floor_seconds']:.1f} s, aggregate "
                  f"{r['full_seconds']:.1f} s = {r['ratio']:.2f}x floor (target <= 1.5x) "
                  f"{'OK' if r['meets_target'] else 'MISSED'}; CPU {r['floor_cpu_seconds']:.1f} s vs "
                  f"{r['full_cpu_seconds']:.1f} s = {r['cpu_ratio']:.2f}x; load {r['load_average_before']}")
            if "text_seconds" in r:
                print(f"  without the column indexes (every sample file parsed): aggregate {r['text_seconds']:.1f} s "
                      f"= {r['text_ratio']:.2f}x floor; CPU {r['text_cpu_seconds']:.1f} s")
            io.write_json(result, args.out)  # a run killed later keeps the sizes measured so far
        if "aggregation" in result:
            g = result["aggregation"]
            print(f"  paper grid: I/O floor {g['floor_seconds']:.1f} s, aggregate = {g['ratio_to_floor']:.2f}x floor "
                  f"(CPU {g['floor_cpu_seconds']:.1f} s vs {g['full_cpu_seconds']:.1f} s = "
                  f"{g['cpu_ratio_to_floor']:.2f}x)")
        ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ru_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        result["peak_rss_mb"] = {"main": round(ru), "largest_worker": round(ru_children)}
        print(f"peak memory: main {ru:.0f} MB, largest worker {ru_children:.0f} MB")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    io.write_json(result, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
