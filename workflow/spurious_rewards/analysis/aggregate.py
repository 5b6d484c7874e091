"""Every evaluation and training run of a study, folded into tables, figures and a summary.

One entry point, :func:`aggregate`, called by ``spurious aggregate`` (rule
``aggregate_results``). It reads, under ``results_dir``::

    eval/{model}/base/summary.json + samples/step0_{benchmark}.jsonl.gz
    eval/{model}/{reward}/{variant}/seed{seed}/summary.json + samples/step{N}_{benchmark}.jsonl.gz
    train/{model}/{reward}/{variant}/seed{seed}/metrics.jsonl

and writes, under ``out_dir``::

    aggregate/metrics.csv         one tidy row per measured value (model, family, reward, variant,
                                  seed, step, benchmark, metric, value); benchmark "train" = training
                                  metrics; the base model is reward = variant = "base", seed 0, step 0,
                                  which is every run's step 0 (not repeated per run)
    aggregate/summary_stats.csv   per (model, reward, variant, benchmark, step, metric): mean, sd and
                                  number of seeds; accuracy and gain (over the base) also get a 95%
                                  hierarchical bootstrap CI over seeds and problems (stats.py); the
                                  base model is its own cell and step 0 of every run cell
    aggregate/transitions.csv     Code/Lang transitions of each problem's first sample (i == 0),
                                  base -> final step, per run (scope "run") and over seeds ("mean")
    aggregate/alignment.csv, aggregate/alignment_correlation.csv, figures/alignment.png
                                  base pass@k vs each reward's gain per (model, benchmark) and
                                  their correlation with a bootstrap CI (alignment.py)
    figures/*.png                 accuracy / code frequency vs step, clipping ablation, transitions
    summary.md                    findings in plain words, the gains table with CIs (and the paper's
                                  numbers for study: paper), the audit: rendered by report.py
    metrics.json, plots/accuracy.csv   small files for ``dvc metrics show`` / ``dvc plots show``

Why this shape: the tidy table is the one place every number lives (anything
else can be recomputed from it with a groupby); it is written run by run, so
a paper-size grid never sits in memory as one long table. Sample files are read
once, run by run (optionally in worker processes), from their column indexes
(samplefile.py: no response text is read where the evaluation wrote one), into
per-problem accuracies and first-sample flags (classify.py's numbers) that feed
both the bootstrap and the transitions, and are dropped once their (model,
reward, variant) cell is done. Missing inputs are logged
and skipped, so the same code summarises a study that is still running.

The first benchmark in the config is the *main* one (figures, transitions
figure, the summary's first table), as MATH-500 is in the paper; tables and
figures keep the config's order of models and rewards, and a reward is shown
under its ``clip`` variant (see :func:`main_variant`) except in the ablation.

Units: accuracies and frequencies are fractions in the CSV files; the summary
and figures show percent (gains in percentage points), as does
``workflow/spurious_rewards/resources/paper_numbers.csv``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import groupby
from pathlib import Path

import numpy as np
import pandas as pd

from .. import config as cfgmod
from .. import io, provenance, stats
from .. import paths as paths_mod
from . import alignment as align
from . import audit_tables as audit
from . import classify, figures, report, samples

log = logging.getLogger(__name__)

__all__ = [
    "PAPER_NUMBERS",
    "STAT_COLUMNS",
    "StatIndex",
    "TIDY_COLUMNS",
    "TRANSITION_COLUMNS",
    "aggregate",
    "load_paper_numbers",
    "summary_stats",
    "tidy",
    "transitions_mean",
    "write_tables",
]

PAPER_NUMBERS = Path(__file__).resolve().parent.parent / "resources" / "paper_numbers.csv"
BASE = "base"
TRAIN = "train"
RUN_KEYS = ["model", "family", "reward", "variant", "seed"]
TIDY_COLUMNS = [*RUN_KEYS, "step", "benchmark", "metric", "value"]
STAT_KEYS = ["model", "family", "reward", "variant", "benchmark", "step", "metric"]
STAT_COLUMNS = [*STAT_KEYS, "n_seeds", "mean", "sd", "ci_low", "ci_high"]
TRANSITION_COLUMNS = [
    "scope", *RUN_KEYS, "n_seeds", "benchmark", "step", "group",
    "n", "share", "acc_before", "acc_after", "delta", "delta_pp", "contribution",
]
GROUP_COLORS = {"Code→Code": "#1b7837", "Code→Lang": "#a6dba0", "Lang→Code": "#c2a5cf", "Lang→Lang": "#762a83"}


def _family(cfg: dict, model: str) -> str:
    return cfg["models"][model].get("family") or model


# ----------------------------------------------------------------------------- readers


def load_paper_numbers(path: str | os.PathLike[str] = PAPER_NUMBERS) -> pd.DataFrame:
    """The paper's reported numbers (percent; gain in percentage points), one row per (source, cell)."""
    df = pd.read_csv(path, comment="#")
    missing = {"model", "reward", "benchmark", "step", "base", "gain", "source"} - set(df.columns)
    if missing:
        raise io.DataError(path, f"missing columns {sorted(missing)}")
    return df


# ----------------------------------------------------------------------------- tidy table


def tidy(wide: pd.DataFrame, keys: dict, benchmark: str | None = None) -> pd.DataFrame:
    """Wide rows (step, [benchmark], metrics...) -> tidy rows; non-numeric and missing values are dropped."""
    df = wide if benchmark is None else wide.assign(benchmark=benchmark)
    metrics = [c for c in df.columns if c not in ("step", "benchmark")]
    long = df.melt(id_vars=["step", "benchmark"], value_vars=metrics, var_name="metric", value_name="value")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    long = long.dropna(subset=["value"])
    long = long.sort_values(["step", "benchmark"], kind="stable")
    long = long.assign(**keys, step=long["step"].astype(int))
    return long[TIDY_COLUMNS]


def _runs_found(cfg: dict, res: Path) -> Iterator[tuple[cfgmod.Run, pd.DataFrame | None, pd.DataFrame | None]]:
    for run in cfgmod.runs(cfg):
        summ = paths_mod.under(res, paths_mod.EVAL_RUN_SUMMARY, **run.wildcards)
        train = paths_mod.under(res, paths_mod.TRAIN_METRICS, **run.wildcards)
        ev = samples.read_eval_summary(summ) if summ.exists() else None
        tr = samples.read_train_metrics(train) if train.exists() else None
        if ev is None:
            log.warning("missing %s: run left out of the evaluation tables", summ)
        if tr is None:
            log.warning("missing %s: run left out of the training tables", train)
        yield run, ev, tr


#: how many (run, table) pieces :func:`write_tables` folds into one batch (bounds its memory)
TIDY_BATCH = 64


def _with_keys(frames: list[pd.DataFrame], keys: list[dict], names: list[str]) -> pd.DataFrame:
    """``pd.concat([f.assign(**{n: k[n] for n in names}) for f, k in zip(frames, keys)], ignore_index=True)``.

    The same frame (columns in the same order, the same dtypes) from one concat and
    one repeat per key: per frame, ``assign`` cost ~3 ms of pandas overhead, a third of
    writing metrics.csv at paper scale (two assigns per run).
    """
    out = pd.concat(frames, ignore_index=True)
    lengths = [len(f) for f in frames]
    for name in names:
        out[name] = np.repeat(np.array([k[name] for k in keys], dtype=object if name != "seed" else np.int64),
                              lengths)
    order = list(dict.fromkeys(c for f in frames for c in [*(c for c in f.columns if c not in names), *names]))
    return out[order]


def _tidy_batch(pieces: list[tuple[pd.DataFrame, dict, str | None]]) -> pd.DataFrame:
    """``pd.concat([tidy(*p) for p in pieces])``, the same rows in the same order, in a few pandas calls.

    Why: per piece, melt/sort/assign/to_csv cost ~25 ms of pandas overhead for a few
    hundred rows, most of writing metrics.csv at paper scale. Pieces whose wide
    tables have the same columns and dtypes are stacked with their position
    (``_piece``) and melted together: a stable sort by (piece, step, benchmark)
    gives each piece exactly the order :func:`tidy` gives it. Pieces whose values
    are not one float column (``to_numeric`` would infer per piece) go through
    :func:`tidy` itself, and values of differing dtypes are written as each piece
    would write them.
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (wide, _keys, benchmark) in enumerate(pieces):
        sig = tuple((c, str(t)) for c, t in zip(wide.columns, wide.dtypes, strict=True)
                    if c != "benchmark" or benchmark is None)
        groups[(sig, benchmark is None)].append(i)
    single: list[int] = []
    parts = []
    for members in groups.values():
        frames = [pieces[i][0] for i in members]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].copy()
        lengths = [len(f) for f in frames]
        if pieces[members[0]][2] is not None:  # the training tables: benchmark "train"
            frame["benchmark"] = np.repeat(np.array([pieces[i][2] for i in members], dtype=object), lengths)
        frame["_piece"] = np.repeat(np.array(members, dtype=np.int64), lengths)
        metrics = [c for c in frame.columns if c not in ("step", "benchmark", "_piece")]
        long = frame.melt(id_vars=["_piece", "step", "benchmark"], value_vars=metrics, var_name="metric",
                          value_name="value")
        if len(members) == 1 or not pd.api.types.is_float_dtype(long["value"].dtype):
            single += members
            continue
        long = long.dropna(subset=["value"]).sort_values(["_piece", "step", "benchmark"], kind="stable")
        piece = long["_piece"].to_numpy()
        keys = {k: np.array([pieces[i][1][k] for i in range(len(pieces))], dtype=object)[piece]
                for k in RUN_KEYS}
        keys["seed"] = keys["seed"].astype(np.int64)
        parts.append(long.assign(**keys, step=long["step"].astype(int)))
    for i in sorted(single):
        wide, keys, benchmark = pieces[i]
        parts.append(tidy(wide, keys, benchmark).assign(_piece=i))
    if not parts:
        return pd.DataFrame(columns=TIDY_COLUMNS)
    if len({str(p["value"].dtype) for p in parts}) > 1:  # e.g. an all-int piece: keep "500", not "500.0"
        parts = [p.assign(value=p["value"].astype(object)) for p in parts]
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return out.sort_values("_piece", kind="stable")[TIDY_COLUMNS]


def write_tables(cfg: dict, res: Path, path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stream the tidy metrics.csv; return the (small) wide eval and train tables for the statistics.

    Rows are written in batches of :data:`TIDY_BATCH` (run, table) pieces
    (:func:`_tidy_batch`), so the tidy table never sits in memory whole.
    """
    evals: list[tuple[pd.DataFrame, dict]] = []
    trains: list[tuple[pd.DataFrame, dict]] = []
    with io.atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(TIDY_COLUMNS) + "\n")
        pending: list[tuple[pd.DataFrame, dict, str | None]] = []

        def flush() -> None:
            if pending:
                _tidy_batch(pending).to_csv(fh, header=False, index=False, lineterminator="\n")
                pending.clear()

        def emit(wide: pd.DataFrame, keys: dict, benchmark: str | None = None) -> None:
            pending.append((wide, keys, benchmark))
            if len(pending) >= TIDY_BATCH:
                flush()

        for model in cfg["models"]:
            summ = paths_mod.under(res, paths_mod.EVAL_BASE_SUMMARY, model=model)
            if not summ.exists():
                log.warning("missing %s: no base row for %s (its gains are NaN)", summ, model)
                continue
            keys = {"model": model, "family": _family(cfg, model), "reward": BASE, "variant": BASE, "seed": 0}
            ev = samples.read_eval_summary(summ)
            emit(ev, keys)
            evals.append((ev, keys))
        for run, ev, tr in _runs_found(cfg, res):
            keys = {"model": run.model, "family": _family(cfg, run.model), "reward": run.reward,
                    "variant": run.variant, "seed": run.seed}
            if ev is not None:
                emit(ev, keys)
                evals.append((ev, keys))
            if tr is not None:
                emit(tr, keys, TRAIN)
                trains.append((tr, keys))
        flush()
    ev_all = (_with_keys([f for f, _ in evals], [k for _, k in evals], RUN_KEYS) if evals
              else pd.DataFrame(columns=[*RUN_KEYS, "step", "benchmark"]))
    tr_all = (_with_keys([f for f, _ in trains], [k for _, k in trains], RUN_KEYS) if trains
              else pd.DataFrame(columns=[*RUN_KEYS, "step"]))
    return ev_all, tr_all


# ----------------------------------------------------------------------------- statistics


def _long(wide: pd.DataFrame, id_vars: list[str]) -> pd.DataFrame:
    metrics = [c for c in wide.columns if c not in id_vars]
    long = wide.melt(id_vars=id_vars, value_vars=metrics, var_name="metric", value_name="value")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    return long.dropna(subset=["value"])


def summary_stats(evals: pd.DataFrame, trains: pd.DataFrame, ci: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean/sd/n over seeds of every metric per (model, reward, variant, benchmark, step).

    ``gain`` (accuracy minus the base model's accuracy on the same benchmark) is
    added per seed before averaging. The base model is its own cell (reward =
    variant = "base", step 0, n_seeds 1) and also step 0 of every run cell (gain
    0), so each curve starts at the base. ``ci`` (STAT_KEYS + ci_low/ci_high) is
    merged in.
    """
    ids = [*RUN_KEYS, "step", "benchmark"]
    cols = [*STAT_KEYS, "n_seeds", "mean", "sd"]
    base = evals[evals["reward"] == BASE]
    runs = evals[evals["reward"] != BASE]
    if "accuracy" in evals:
        base_acc = base[["model", "benchmark", "accuracy"]].rename(columns={"accuracy": "_base"})
        runs = runs.merge(base_acc, on=["model", "benchmark"], how="left")
        runs = runs.assign(gain=pd.to_numeric(runs["accuracy"]) - pd.to_numeric(runs["_base"])).drop(columns="_base")
    parts = []
    if len(base):
        b = _long(base.drop(columns=["reward", "variant", "seed"]), ["model", "family", "step", "benchmark"])
        b = b.assign(step=0, mean=b["value"], sd=math.nan, n_seeds=1)
        parts.append(b.assign(reward=BASE, variant=BASE)[cols])
        if len(runs):
            cells = runs[["model", "family", "reward", "variant"]].drop_duplicates()
            zero = b[b["metric"] == "accuracy"].assign(metric="gain", mean=0.0)
            parts.append(cells.merge(pd.concat([b, zero]), on=["model", "family"])[cols])
    if len(runs):
        parts.append(stats.seed_summary(_long(runs, ids), STAT_KEYS))
    if len(trains):
        parts.append(stats.seed_summary(_long(trains.assign(benchmark=TRAIN), ids), STAT_KEYS))
    if not parts:
        return pd.DataFrame(columns=STAT_COLUMNS)
    out = pd.concat(parts, ignore_index=True).drop_duplicates(STAT_KEYS, keep="last")
    out["step"] = out["step"].astype(int)
    if ci is not None and len(ci):
        out = out.merge(ci, on=STAT_KEYS, how="left")
    else:
        out = out.assign(ci_low=math.nan, ci_high=math.nan)
    return out.sort_values(STAT_KEYS, kind="stable", ignore_index=True)[STAT_COLUMNS]


# per benchmark: (checkpoint steps, accuracy[steps, base problems], final-step transitions)
RunSamples = dict[str, tuple[list[int], np.ndarray, pd.DataFrame]]


#: per benchmark: the base model's problems as ``{id: place}`` and their first-sample flags
BaseIndex = dict[str, tuple[dict[str, int], np.ndarray]]


def _base_index(base: dict[str, pd.DataFrame]) -> BaseIndex:
    """What :func:`_read_run` aligns every run of a model to, built once per cell, not per run and benchmark."""
    return {bench: ({pid: i for i, pid in enumerate(btab.index)}, samples.base_flags(btab))
            for bench, btab in base.items()}


def _read_run(sample_dir: str, base: dict[str, pd.DataFrame], index: BaseIndex) -> RunSamples:
    """One run's sample folder reduced to what the statistics need (runs in a worker process).

    Accuracies are aligned to the base model's problems here, so the parent only
    stacks arrays; only these arrays and four-row transition tables travel back.
    """
    files = samples.sample_files(sample_dir, base)
    out: RunSamples = {}
    for bench, btab in base.items():
        steps = sorted(s for (s, b) in files if b == bench)
        if steps:
            # every step is folded straight to accuracies aligned to the base problems, the final
            # one also to its transitions (the numbers of the per-problem tables, without them)
            positions, before = index[bench]
            acc = [samples.read_accuracy(files[(s, bench)], positions) for s in steps[:-1]]
            final, trans = samples.read_final(files[(steps[-1], bench)], btab, positions, before)
            out[bench] = (steps, np.stack([*acc, final]), trans)
    return out


def _cell_ci(keys: dict, base_acc: dict[str, np.ndarray], seeds: dict[int, RunSamples],
             n_boot: int, seed: int, alpha: float) -> list[dict]:
    """Bootstrap CIs of accuracy and gain at every (benchmark, step) of one (model, reward, variant) cell.

    Steps are bootstrapped together (one matmul) per set of seeds that has them;
    problems missing anywhere in the set are dropped from both sides.
    """
    rows = []
    for bench, b in base_acc.items():
        ok = ~np.isnan(b)
        lo, hi = stats.percentile_ci(stats.bootstrap_means(b[ok], n_boot, seed), alpha)
        rows.append({**keys, "benchmark": bench, "step": 0, "metric": "accuracy", "ci_low": lo, "ci_high": hi})
        rows.append({**keys, "benchmark": bench, "step": 0, "metric": "gain", "ci_low": 0.0, "ci_high": 0.0})
        have = {sd: dict(zip(r[bench][0], r[bench][1], strict=True)) for sd, r in seeds.items() if bench in r}
        by_seeds: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for step in sorted({st for steps in have.values() for st in steps}):
            by_seeds[tuple(sd for sd, steps in have.items() if step in steps)].append(step)
        for avail, steps in by_seeds.items():
            x = np.stack([np.stack([have[sd][st] for sd in avail]) for st in steps])  # [steps, seeds, problems]
            keep = ~np.isnan(x).any(axis=(0, 1)) & ok
            acc = stats.bootstrap_means(x[..., keep], n_boot, seed)
            gain = acc - stats.bootstrap_means(b[keep], n_boot, seed)  # the same problem draws: paired
            (acc_lo, acc_hi), (gain_lo, gain_hi) = stats.percentile_ci(acc, alpha), stats.percentile_ci(gain, alpha)
            for i, st in enumerate(steps):
                rows.append({**keys, "benchmark": bench, "step": st, "metric": "accuracy",
                             "ci_low": acc_lo[i], "ci_high": acc_hi[i]})
                rows.append({**keys, "benchmark": bench, "step": st, "metric": "gain",
                             "ci_low": gain_lo[i], "ci_high": gain_hi[i]})
    return rows


def transitions_mean(per_run: pd.DataFrame) -> pd.DataFrame:
    """Transitions averaged over seeds; the contribution score is pooled: Σ_seeds delta_d / Σ_seeds delta_D.

    Pooling (rather than averaging per-seed ratios) keeps a seed whose total
    change is near 0 from dominating the mean.
    """
    if per_run.empty:
        return per_run
    keys = ["model", "family", "reward", "variant", "benchmark", "step", "group"]
    df = per_run.assign(_total=per_run.groupby([*RUN_KEYS, "benchmark"])["delta"].transform("sum"))
    g = df.groupby(keys, sort=False)
    out = g[["n", "share", "acc_before", "acc_after", "delta", "delta_pp"]].mean()
    tot = g["_total"].sum()
    out["contribution"] = (g["delta"].sum() / tot).where(tot != 0)
    out["n_seeds"] = g["seed"].nunique()
    return out.reset_index().assign(scope="mean", seed=pd.NA)


def _cell_job(job: tuple) -> tuple[list[dict], list[pd.DataFrame], list[str], dict | None]:
    """One (model, reward, variant) cell: read its runs' sample folders and bootstrap it (in a worker).

    Returns the cell's CI rows, its per-run transition tables, the runs that had
    no samples (the parent logs them) and the cell's verdict row (audit.py). Reading and bootstrapping a whole cell in one
    job keeps both off the parent process, so they use every core.
    """
    keys, runs, base, base_acc, n_boot, seed, alpha, (best, main, clean) = job
    seeds: dict[int, RunSamples] = {}
    trans: list[pd.DataFrame] = []
    empty: list[str] = []
    index = _base_index(base)
    for run_seed, run_path, sample_dir in runs:
        out = _read_run(sample_dir, base, index)
        if not out:
            empty.append(run_path)
            continue
        seeds[run_seed] = out
        tabs = [t for _, _, t in out.values()]
        # one assign per run, not per benchmark (pandas' per-call cost dominated the transitions)
        trans.append(pd.concat(tabs, ignore_index=True).assign(
            scope="run", **keys, seed=run_seed, n_seeds=1,
            benchmark=np.repeat(list(out), [len(t) for t in tabs]),
            step=np.repeat([steps[-1] for steps, _, _ in out.values()], [len(t) for t in tabs])))
    rows = _cell_ci(keys, base_acc, seeds, n_boot, seed, alpha) if seeds else []
    verdict = audit.verdict_row(keys, seeds, base_acc, best, main, clean, n_boot, seed, alpha) if seeds else None
    return rows, trans, empty, verdict


def _start_sample_pass(cfg: dict, res: Path, n_boot: int, seed: int, alpha: float,
                       pool: ProcessPoolExecutor | None):
    """Read the base samples and queue every cell on ``pool``; returns a function that collects the results.

    Splitting the pass lets :func:`aggregate` write the tidy table while the workers read samples.
    """
    benches = list(cfg["benchmarks"])
    base: dict[str, dict[str, pd.DataFrame]] = {}
    ci_rows: list[dict] = []
    for model in cfg["models"]:
        tabs = samples.read_sample_dir(paths_mod.under(res, paths_mod.EVAL_BASE_SAMPLES, model=model), benches)
        base[model] = {b: tabs[(0, b)] for b in benches if (0, b) in tabs}
        if not base[model]:
            log.warning("no base samples for %s: no CIs or transitions for it", model)
    base_acc = {m: {b: samples.accuracy(t, t.index) for b, t in tabs.items()} for m, tabs in base.items()}
    for model, accs in base_acc.items():
        keys = {"model": model, "family": _family(cfg, model), "reward": BASE, "variant": BASE}
        ci_rows += [r for r in _cell_ci(keys, accs, {}, n_boot, seed, alpha) if r["metric"] == "accuracy"]
    baselines, best = audit.read_baselines(cfg, res, base, n_boot=n_boot, seed=seed, alpha=alpha)
    audit_ctx = (cfgmod.verdict_benchmark(cfg), list(cfg["audit"]["clean"]))
    runs = [r for r in cfgmod.runs(cfg) if base[r.model]]
    cell_of = lambda run: (run.model, run.reward, run.variant)  # noqa: E731
    jobs = []
    for (model, reward, variant), group in groupby(runs, key=cell_of):
        keys = {"model": model, "family": _family(cfg, model), "reward": reward, "variant": variant}
        members = [(r.seed, str(r.path), str(paths_mod.under(res, paths_mod.EVAL_RUN_SAMPLES, **r.wildcards))) for r in group]
        jobs.append((keys, members, base[model], base_acc[model], n_boot, seed, alpha,
                     (best.get(model, {}), *audit_ctx)))
    use_pool = pool is not None and len(jobs) > 1
    results = pool.map(_cell_job, jobs, chunksize=1) if use_pool else map(_cell_job, jobs)

    def finish() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        trans: list[pd.DataFrame] = []
        verdicts: list[dict] = []
        for rows, cell_trans, empty, verdict in results:
            for path in empty:
                log.warning("no samples for %s", path)
            trans.extend(cell_trans)
            ci_rows.extend(rows)
            if verdict is not None:
                verdicts.append(verdict)
        ci = pd.DataFrame(ci_rows, columns=[*STAT_KEYS, "ci_low", "ci_high"])
        per_run = pd.concat(trans, ignore_index=True) if trans else pd.DataFrame(columns=TRANSITION_COLUMNS)
        return ci, per_run, pd.DataFrame(verdicts, columns=audit.VERDICT_COLUMNS), baselines

    return finish


# ----------------------------------------------------------------------------- figures


class StatIndex:
    """summary_stats rows by (model, reward, variant, benchmark, metric), each series in step order.

    Why: the figures and summary.md look up thousands of series; a boolean mask over a
    paper-size table (~10^6 rows) per lookup would take minutes, a dict lookup does not.
    """

    KEYS = ["model", "reward", "variant", "benchmark", "metric"]

    def __init__(self, st: pd.DataFrame) -> None:
        # string columns as Python objects: pandas' Arrow-backed strings cost ~20 us per element
        # taken, and the lookups below take rows one at a time thousands of times
        text = [c for c in st.columns if pd.api.types.is_string_dtype(st[c].dtype)]
        self.frame = st.sort_values([*self.KEYS, "step"], kind="stable").astype(dict.fromkeys(text, object))
        self._empty = self.frame.iloc[:0]
        # row positions per key (numpy arrays, in frame order); frames are cut on first use
        self._positions = self.frame.groupby(self.KEYS, sort=False).indices if len(st) else {}
        self._steps = self.frame["step"].to_numpy()
        self._series: dict[tuple, pd.DataFrame] = {}
        base = self.frame[self.frame["step"] == 0].drop_duplicates(["model", "benchmark", "metric"])
        self._base = {(r["model"], r["benchmark"], r["metric"]): r for r in base.to_dict("records")}

    def series(self, model: str, reward: str, variant: str, benchmark: str, metric: str) -> pd.DataFrame:
        """One (model, reward, variant) cell's metric over steps (step 0 = base); empty when absent."""
        key = (model, reward, variant, benchmark, metric)
        s = self._series.get(key)
        if s is None:
            where = self._positions.get(key)
            s = self._series[key] = self._empty if where is None else self.frame.iloc[where]
        return s

    def at(self, model: str, reward: str, variant: str, benchmark: str, metric: str,
           step: int | None) -> pd.Series | None:
        """The row of one step of a series (the last, should a step repeat); None when absent."""
        where = self._positions.get((model, reward, variant, benchmark, metric)) if step is not None else None
        if where is None:
            return None
        hit = where[self._steps[where] == step]
        return self.frame.iloc[hit[-1]] if len(hit) else None

    def base(self, model: str, benchmark: str, metric: str) -> dict | None:
        """The base model's value (step 0 of any of its cells)."""
        return self._base.get((model, benchmark, metric))

    def final_step(self, model: str, reward: str, variant: str, benchmark: str) -> int | None:
        """The last step of a cell's accuracy series; None without one, or where it is the base (step 0)."""
        where = self._positions.get((model, reward, variant, benchmark, "accuracy"))
        last = self._steps[where[-1]] if where is not None and len(where) else 0
        return int(last) if last > 0 else None


def plot_vs_step(ix: StatIndex, cfg: dict, metric: str, benchmark: str, path: Path, *,
                 title: str, ylabel: str, band_note: str) -> None:
    """The paper's Fig. 1 layout: one panel per model, one line per reward (main variant), base at step 0."""
    models, rewards = list(cfg["models"]), list(cfg["rewards"])
    colors = figures.colors(rewards)
    fig, axes = figures.figure(len(models), 4, (4.2, 3.3))
    for ax, model in zip(axes, models, strict=True):
        drawn = False
        for reward in rewards:
            v = cfgmod.main_variant(cfg["rewards"][reward])
            s = ix.series(model, reward, v, benchmark, metric)
            if s.empty:
                continue
            figures.band(ax, s, colors[reward])
            ax.plot(s["step"], s["mean"] * 100, marker="o", ms=3, color=colors[reward], label=reward)
            drawn = True
        base = ix.base(model, benchmark, metric)
        if base is not None:
            ax.axhline(base["mean"] * 100, color="0.3", ls="--", lw=1, label="base model")
        if not drawn:
            figures.empty(ax, "no runs evaluated yet")
        ax.set_title(f"{model}\n(family: {_family(cfg, model)})", fontsize=10)
        ax.set_xlabel("training step (rollout batches)")
        ax.set_ylabel(ylabel)
        if metric == "code_frequency":
            ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    handles = {lab: h for ax in axes for h, lab in zip(*ax.get_legend_handles_labels(), strict=True)}
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncol=min(len(handles), 7), title="reward")
    fig.suptitle(f"{title}\n{band_note}", fontsize=11)
    figures.save(fig, path)


def plot_clip_ablation(ix: StatIndex, cfg: dict, benchmark: str, path: Path, *, alpha: float) -> None:
    """Rewards trained under several variants (the paper's random-reward clipping ablation), per model."""
    ablation = [r for r, spec in cfg["rewards"].items() if len(spec["variants"]) > 1]
    models = list(cfg["models"])
    panels = [
        ("accuracy", benchmark, f"{benchmark} accuracy (%)"),
        ("code_frequency", benchmark, f"{benchmark} code frequency (%)"),
        ("p_code", TRAIN, "p_code: P(code opener) on probe prompts (%)"),
    ]
    lines = [(r, v) for r in ablation for v in cfg["rewards"][r]["variants"]]
    colors = figures.colors([f"{r}/{v}" for r, v in lines])
    fig, axes = figures.figure(len(models) * len(panels), len(panels), (4.4, 3.0))
    for i, model in enumerate(models):
        for j, (metric, bench, ylabel) in enumerate(panels):
            ax = axes[i * len(panels) + j]
            drawn = False
            for r, v in lines:
                s = ix.series(model, r, v, bench, metric)
                if s.empty:
                    continue
                c = colors[f"{r}/{v}"]
                figures.band(ax, s, c)
                ax.plot(s["step"], s["mean"] * 100, color=c, label=f"{r} / {v}", marker="o" if bench != TRAIN else None,
                        ms=3)
                drawn = True
            if not drawn:
                figures.empty(ax, "no clipping ablation in this config" if not ablation else "no data")
            ax.set_title(f"{model} ({_family(cfg, model)})", fontsize=10)
            ax.set_xlabel("training step (rollout batches)")
            ax.set_ylabel(ylabel, fontsize=9)
            if metric == "code_frequency":
                ax.set_ylim(-2, 102)
            elif metric == "p_code":
                ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
    handles = {lab: h for ax in axes for h, lab in zip(*ax.get_legend_handles_labels(), strict=True)}
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(len(handles), 6),
                   title="reward / variant (clip: eps 0.2; no_clip: eps never binds; one_update: ratio = 1)")
    fig.suptitle("Clipping ablation: does the reward help because clipping biases toward the prior?\n"
                 f"mean over seeds; band = {100 * (1 - alpha):g}% bootstrap CI (accuracy) or ± 1 sd over seeds",
                 fontsize=11)
    figures.save(fig, path)


def plot_transitions(trans: pd.DataFrame, cfg: dict, benchmark: str, path: Path) -> None:
    """Per model: the four transition groups' sizes and their share of the gain, per reward (mean over seeds)."""
    models = list(cfg["models"])
    rewards = list(cfg["rewards"])
    fig, axes = figures.figure(2 * len(models), 2, (0.55 * len(rewards) + 3.5, 3.0))
    for i, model in enumerate(models):
        ax_n, ax_d = axes[2 * i], axes[2 * i + 1]
        sub = trans[(trans["model"] == model) & (trans["benchmark"] == benchmark)] if len(trans) else trans
        present = [r for r in rewards if len(sub) and
                   ((sub["reward"] == r) & (sub["variant"] == cfgmod.main_variant(cfg["rewards"][r]))).any()]
        x = np.arange(len(present))
        bottom = np.zeros(len(present))
        width = 0.8 / len(classify.GROUPS)
        total = np.zeros(len(present))
        for k, g in enumerate(classify.GROUPS):
            vals = []
            for r in present:
                row = sub[(sub["reward"] == r) & (sub["variant"] == cfgmod.main_variant(cfg["rewards"][r]))
                          & (sub["group"] == g)]
                vals.append((row["share"].iloc[0] * 100, row["delta_pp"].iloc[0]) if len(row) else (0.0, 0.0))
            share = np.array([v[0] for v in vals])
            dpp = np.array([v[1] for v in vals])
            ax_n.bar(x, share, bottom=bottom, color=GROUP_COLORS[g], label=g, width=0.7)
            bottom += share
            ax_d.bar(x - 0.4 + width * (k + 0.5), dpp, width=width, color=GROUP_COLORS[g], label=g)
            total += dpp
        if len(present):
            ax_d.scatter(x, total, marker="D", color="black", zorder=3, s=18, label="total gain")
        else:
            figures.empty(ax_n, "no runs evaluated yet")
            figures.empty(ax_d, "no runs evaluated yet")
        ax_d.axhline(0, color="0.3", lw=0.8)
        for ax in (ax_n, ax_d):
            ax.set_xticks(x, present, rotation=30, ha="right", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
        ax_n.set_ylabel("share of problems (%)")
        ax_n.set_ylim(0, 100)
        ax_d.set_ylabel("accuracy change (pp)")
        ax_n.set_title(f"{model} ({_family(cfg, model)}): strategy before → after", fontsize=10)
        ax_d.set_title(f"{model}: where the gain comes from", fontsize=10)
    handles = {lab: h for ax in axes for h, lab in zip(*ax.get_legend_handles_labels(), strict=True)}
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=len(handles))
    fig.suptitle(f"Code/Lang transitions on {benchmark}, first sample, base → final step (mean over seeds)\n"
                 "right: each group's Σ(correct_t − correct_0) / N; the bars sum to the total gain (◆)",
                 fontsize=11)
    figures.save(fig, path)


# ----------------------------------------------------------------------------- DVC files (summary.md: report.py)


def write_dvc_files(ix: StatIndex, cfg: dict, paths: dict[str, Path]) -> None:
    """metrics/<model>.json and plots/accuracy.csv.

    One metrics file per model, so ``dvc metrics show`` prints one row per model: its base
    accuracy on the main benchmark and, per reward, the gain at the final step (a reward's
    main variant under the reward's name, other variants as ``reward/variant``).
    """
    main = next(iter(cfg["benchmarks"]))
    plot_rows = []
    for model in cfg["models"]:
        metrics: dict[str, float] = {}
        base = ix.base(model, main, "accuracy")
        if base is not None:
            metrics["base_accuracy"] = round(float(base["mean"]), 4)
        for reward, rspec in cfg["rewards"].items():
            for v in rspec["variants"]:
                step = ix.final_step(model, reward, v, main)
                if step is None:
                    continue
                gain = ix.at(model, reward, v, main, "gain", step)
                label = reward if v == cfgmod.main_variant(rspec) else f"{reward}/{v}"
                if gain is not None and not math.isnan(gain["mean"]):
                    metrics[label] = round(float(gain["mean"]), 4)
                s = ix.series(model, reward, v, main, "accuracy")
                plot_rows += [{"step": int(a), "model": model, "reward": label, "accuracy": round(float(b), 6)}
                              for a, b in zip(s["step"], s["mean"], strict=True)]
        io.write_json(metrics, paths[paths_mod.dvc_metrics_key(model)])
    plot = pd.DataFrame(plot_rows, columns=["step", "model", "reward", "accuracy"])
    with io.atomic_output(paths["dvc_plot"]) as tmp:
        plot.to_csv(tmp, index=False, lineterminator="\n")


# ----------------------------------------------------------------------------- entry point


def aggregate(
    config: dict,
    out_dir: str | os.PathLike[str] = "results",
    *,
    results_dir: str | os.PathLike[str] | None = None,
    n_boot: int = 2000,
    alpha: float | None = None,
    seed: int | None = None,
    workers: int = 1,
    paper_numbers: str | os.PathLike[str] | None = PAPER_NUMBERS,
) -> dict[str, Path]:
    """Aggregate a (validated) study config's results; returns the written paths by name.

    ``results_dir`` is where eval/ and train/ are (default ``out_dir``); ``seed``
    seeds the bootstrap (default: the config's evaluation seed); ``workers``
    processes read sample files in parallel; ``alpha`` sets every interval and the
    verdict (default: the config's ``audit.verdict.alpha``). The paper's numbers are added
    to the summary only for ``study: paper``.

    numpy's BLAS runs one thread here and in the workers (:func:`stats.set_blas_threads`):
    the bootstrap's matrix products are small, and a thread per core in every process
    cost ~10x their CPU on a loaded machine.
    """
    with stats.blas_threads(1):
        return _aggregate(config, out_dir, results_dir=results_dir, n_boot=n_boot, alpha=alpha, seed=seed,
                          workers=workers, paper_numbers=paper_numbers)


def _aggregate(config: dict, out_dir: str | os.PathLike[str], *, results_dir: str | os.PathLike[str] | None,
               n_boot: int, alpha: float | None, seed: int | None, workers: int,
               paper_numbers: str | os.PathLike[str] | None) -> dict[str, Path]:
    """:func:`aggregate`'s body, with the BLAS thread count already set."""
    if alpha is None:
        alpha = float(config.get("audit", {}).get("verdict", {}).get("alpha", 0.05))
    out = Path(out_dir)
    res = Path(results_dir) if results_dir is not None else out
    paths = paths_mod.aggregate_outputs(out, config["models"])
    seed = int(config.get("evaluation", {}).get("seed", 0) if seed is None else seed)
    main = next(iter(config["benchmarks"]))

    # the sample files are read by the workers while this process writes the tidy table; then
    # the same workers draw the figures while this process writes the tables and summary.md
    pool = (ProcessPoolExecutor(workers, initializer=stats.set_blas_threads, initargs=(1,))
            if workers > 1 else None)
    try:
        finish = _start_sample_pass(config, res, n_boot, seed, alpha, pool)
        evals, trains = write_tables(config, res, paths["metrics"])
        log.info("metrics.csv: %d eval rows, %d training rows", len(evals), len(trains))
        ci, per_run, verdicts, baselines = finish()
        draw = _Drawer(pool)
        return _write_results(config, res, out, paths, draw, evals, trains, ci, per_run, verdicts, baselines,
                              main=main, n_boot=n_boot, seed=seed, alpha=alpha, paper_numbers=paper_numbers)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)


class _Drawer:
    """Draws figures in the worker pool (inline without one) and waits for them before the sidecars.

    Why: the figures are a third of the aggregation's time after the sample pass, they
    are independent of each other and of the tables and summary.md the parent writes
    meanwhile, and they need only small frames (a figure's slice of summary_stats,
    not the whole :class:`StatIndex`).
    """

    def __init__(self, pool: ProcessPoolExecutor | None) -> None:
        self.pool, self.futures = pool, []

    def __call__(self, plot, *args, **kwargs) -> None:
        if self.pool is None:
            plot(*args, **kwargs)
        else:
            self.futures.append(self.pool.submit(plot, *args, **kwargs))

    def wait(self) -> None:
        for f in self.futures:
            f.result()  # a failed figure raises here, before any sidecar says the outputs are complete
        self.futures = []


def _stats_slice(st: pd.DataFrame, benchmarks: list[str], metrics: list[str]) -> pd.DataFrame:
    """The summary_stats rows a figure reads (its benchmarks and metrics, the base rows included)."""
    return st[st["benchmark"].isin(benchmarks) & st["metric"].isin(metrics)]


def _plot_from_stats(plot, st: pd.DataFrame, *args, **kwargs) -> None:
    """``plot(StatIndex(st), ...)``: a figure drawn from its slice of summary_stats (in a worker)."""
    plot(StatIndex(st), *args, **kwargs)


def _write_results(config: dict, res: Path, out: Path, paths: dict[str, Path], draw: _Drawer,
                   evals: pd.DataFrame, trains: pd.DataFrame, ci: pd.DataFrame, per_run: pd.DataFrame,
                   verdicts: pd.DataFrame, baselines: pd.DataFrame, *, main: str, n_boot: int, seed: int,
                   alpha: float, paper_numbers: str | os.PathLike[str] | None) -> dict[str, Path]:
    """Everything after the sample pass: statistics, tables, figures (through ``draw``), summary.md, sidecars."""
    st = summary_stats(evals, trains, ci)
    with io.atomic_output(paths["summary_stats"]) as tmp:
        st.to_csv(tmp, index=False, lineterminator="\n")
    trans = pd.concat([per_run, transitions_mean(per_run)], ignore_index=True) if len(per_run) else per_run
    trans = trans.reindex(columns=TRANSITION_COLUMNS)
    with io.atomic_output(paths["transitions"]) as tmp:
        trans.to_csv(tmp, index=False, lineterminator="\n")

    note = (f"mean over seeds; band = {100 * (1 - alpha):g}% bootstrap CI over seeds and problems; "
            "dashed = base model")
    draw(_plot_from_stats, plot_vs_step, _stats_slice(st, [main], ["accuracy"]), config, "accuracy", main,
         paths["fig_accuracy"], title=f"Accuracy on {main} during RLVR, by reward", ylabel=f"{main} accuracy (%)",
         band_note=note)
    draw(_plot_from_stats, plot_vs_step, _stats_slice(st, [main], ["code_frequency"]), config, "code_frequency",
         main, paths["fig_code"], title=f"Code reasoning frequency on {main} during RLVR, by reward",
         ylabel="responses mentioning python (%)",
         band_note="mean over seeds; band = ± 1 sd over seeds; dashed = base model")
    draw(_plot_from_stats, plot_clip_ablation, _stats_slice(st, [main, TRAIN], ["accuracy", "code_frequency", "p_code"]),
         config, main, paths["fig_clip"], alpha=alpha)
    draw(plot_transitions, trans[trans["scope"] == "mean"] if len(trans) else trans, config, main,
         paths["fig_transitions"])
    ix = StatIndex(st)

    contamination = audit.read_contamination(config, res)
    probe = audit.read_clip_probe(config, res)
    for key, frame in (("verdict", verdicts), ("baselines", baselines), ("contamination", contamination),
                       ("clip_probe", probe)):
        with io.atomic_output(paths[key]) as tmp:
            frame.to_csv(tmp, index=False, lineterminator="\n")
    draw(audit.plot_contamination, contamination, config, paths["fig_contamination"], alpha=alpha)
    draw(audit.plot_baselines, baselines, config, paths["fig_baselines"], alpha=alpha)
    draw(audit.plot_clip_probe, probe, config, paths["fig_clip_probe"], alpha=alpha)
    audit_md = report.audit_section(config, verdicts, baselines, contamination, probe, paths,
                                    paths["summary"].parent)

    # the paper's numbers: columns of the gains table for study: paper; what the findings compare with always
    known = load_paper_numbers(paper_numbers) if paper_numbers is not None and Path(paper_numbers).exists() else None
    paper = known if config.get("study") == "paper" else None
    found = {
        "base": evals.loc[evals["reward"] == BASE, "model"].nunique() if len(evals) else 0,
        "runs": len(evals[evals["reward"] != BASE][RUN_KEYS].drop_duplicates()) if len(evals) else 0,
        "train": len(trains[RUN_KEYS].drop_duplicates()) if len(trains) else 0,
        "expected": sum(1 for _ in cfgmod.runs(config)),
    }
    # model-task alignment: base pass@k against each reward's gain (alignment.py)
    alignment_md = align.write_alignment(config, res, ix, paths, n_boot=n_boot, seed=seed, alpha=alpha, draw=draw)
    mech = report.mechanism_section(config, res, out, paths["summary"].parent)
    report.write_summary(ix, trans, config, paths, audit=audit_md, n_boot=n_boot, seed=seed, alpha=alpha,
                         paper=paper, found=found, paper_for_findings=known, alignment=alignment_md,
                         mechanism=mech)
    write_dvc_files(ix, config, paths)
    draw.wait()
    # every table, figure and the summary records what produced it (the config hash
    # stands in for the config; summary.md also lists it). Written last: a kill before
    # this point leaves the rule incomplete, and Snakemake reruns it.
    chash = cfgmod.config_hash(config)
    for p in paths.values():
        provenance.write_sidecar(p, chash, seed, sha256=hashlib.sha256(p.read_bytes()).hexdigest())
    log.info("aggregated %d/%d runs into %s", found["runs"], found["expected"], out)
    return paths
