"""Model–task alignment: does a reward's gain track the base model's pass@k?

Wu, Wang, Zhao and He (2025, "Model–Task Alignment Drives Distinct RL Outcomes") report
that spurious rewards (random, incorrect labels, ...) help only where the base model's
pass@k on the task is already high. This module puts that claim to the study's own
numbers, per (model, benchmark) *cell*:

* the base model's pass@k for every k from 1 to the benchmark's sample count, from its
  per-problem samples with the unbiased estimator of Chen et al. (2021)
  (:func:`spurious_rewards.stats.pass_at_k`, the one the evaluation uses);
* each reward's gain (its main variant, :func:`config.main_variant`): final checkpoint
  minus base on the benchmark's accuracy (avg@k over its samples), mean over seeds, with
  the hierarchical bootstrap CI summary_stats.csv already holds;
* per reward and per k, the Pearson and Spearman correlation across cells between base
  pass@k and the gain, with a percentile bootstrap CI over cells (cells resampled with
  replacement; seeded) and, for Pearson, the Fisher-z interval as a cross-check.

Which k: the headline (``k = "max"``) takes each benchmark's largest k, its sample count,
because the claim is about what the model can reach in several tries and that is the most
tries the evaluation allows; a greedy benchmark (one sample) contributes its pass@1. The
correlation is also given for every fixed k, over the cells whose benchmark has at least
k samples.

Honest limits: with a handful of cells (the default study has 3 models x 3 benchmarks)
the intervals are wide, and cells that share a model or a benchmark are not independent,
so the bootstrap over cells, which treats them as exchangeable, is if anything too narrow.
A resample with fewer than 3 distinct cells (or no spread) has no informative correlation;
such draws are dropped and ``n_valid_draws`` says how many remained.

Writes ``aggregate/alignment.csv`` (one row per cell, k and reward),
``aggregate/alignment_correlation.csv`` (one row per reward and k) and
``figures/alignment.png``; :func:`summary_section` is the paragraph summary.md shows.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import config as cfgmod
from .. import io
from .. import paths as paths_mod
from ..stats import pass_at_k
from . import figures, samples
from .report import _reward_kind

if TYPE_CHECKING:
    from .aggregate import StatIndex

log = logging.getLogger(__name__)

__all__ = [
    "ALIGNMENT_COLUMNS",
    "CORRELATION_COLUMNS",
    "MAX_K",
    "alignment_table",
    "base_pass_at_k",
    "correlation",
    "correlations",
    "final_gains",
    "pass_at_k_curve",
    "plot_alignment",
    "summary_section",
    "write_alignment",
]

#: the k label of the headline correlation: each benchmark's largest k (its sample count)
MAX_K = "max"
BASE_COLUMNS = ["model", "family", "benchmark", "samples", "temperature", "k", "k_is_max", "base_pass_at_k"]
GAIN_COLUMNS = ["model", "benchmark", "reward", "kind", "variant", "step", "n_seeds", "gain",
                "gain_ci_low", "gain_ci_high"]
ALIGNMENT_COLUMNS = [*BASE_COLUMNS, *GAIN_COLUMNS[2:]]
CORRELATION_COLUMNS = ["reward", "kind", "variant", "k", "n_cells", "pearson_r", "pearson_low", "pearson_high",
                       "spearman_rho", "spearman_low", "spearman_high", "fisher_low", "fisher_high",
                       "n_valid_draws", "n_boot", "alpha"]
MARKERS = "osD^vP*Xhp<>"
#: the fewest cells an interval is given for (3 cells: every usable draw is the sample itself)
MIN_CI_CELLS = 4


def _family(cfg: dict, model: str) -> str:
    return cfg["models"][model].get("family") or model


# ----------------------------------------------------------------------------- pass@k of the base models


def pass_at_k_curve(n: np.ndarray, c: np.ndarray, k_max: int) -> np.ndarray:
    """Mean over problems of the unbiased pass@k, for k = 1..k_max (index k - 1).

    ``n[p]`` samples of problem p, ``c[p]`` of them correct. Every problem needs at
    least k_max samples (the estimator is undefined for k > n); an empty benchmark gives NaN.
    """
    n, c = np.asarray(n, dtype=int), np.asarray(c, dtype=int)
    if len(n) == 0:
        return np.full(k_max, math.nan)
    return np.array([np.mean([pass_at_k(int(ni), int(ci), k) for ni, ci in zip(n, c, strict=True)])
                     for k in range(1, k_max + 1)])


def base_pass_at_k(cfg: dict, res: str | os.PathLike[str]) -> pd.DataFrame:
    """Every base model's pass@k on every benchmark, k = 1..samples, from its step-0 sample files.

    A benchmark where some problem has fewer samples than configured gets k only up to
    that problem's count (logged); a base model without samples is left out (logged).
    """
    benches = list(cfg["benchmarks"])
    rows = []
    for model in cfg["models"]:
        d = paths_mod.under(res, paths_mod.EVAL_BASE_SAMPLES, model=model)
        tabs = samples.read_sample_dir(d, benches)
        for bench in benches:
            tab = tabs.get((0, bench))
            if tab is None or tab.empty:
                log.warning("no base samples of %s on %s: no pass@k for that cell", model, bench)
                continue
            spec = cfg["benchmarks"][bench]
            n, c = tab["samples"].to_numpy(), tab["correct"].to_numpy()
            k_top = int(min(spec["samples"], n.min()))
            if k_top < spec["samples"]:
                log.warning("%s on %s: a problem has %d samples (config: %d); pass@k only up to k = %d",
                            model, bench, k_top, spec["samples"], k_top)
            for k, v in enumerate(pass_at_k_curve(n, c, k_top), start=1):
                rows.append({"model": model, "family": _family(cfg, model), "benchmark": bench,
                             "samples": int(spec["samples"]), "temperature": float(spec["temperature"]),
                             "k": k, "k_is_max": k == k_top, "base_pass_at_k": float(v)})
    return pd.DataFrame(rows, columns=BASE_COLUMNS)


# ----------------------------------------------------------------------------- gains


def final_gains(ix: StatIndex, cfg: dict) -> pd.DataFrame:
    """Each reward's (main variant) gain at its final step on every benchmark, mean over seeds, with its CI."""
    rows = []
    for model in cfg["models"]:
        for bench in cfg["benchmarks"]:
            for reward, rspec in cfg["rewards"].items():
                v = cfgmod.main_variant(rspec)
                step = ix.final_step(model, reward, v, bench)
                g = ix.at(model, reward, v, bench, "gain", step) if step is not None else None
                if g is None or pd.isna(g["mean"]):
                    continue
                rows.append({"model": model, "benchmark": bench, "reward": reward, "kind": _reward_kind(rspec),
                             "variant": v, "step": int(step), "n_seeds": int(g["n_seeds"]),
                             "gain": float(g["mean"]), "gain_ci_low": float(g["ci_low"]),
                             "gain_ci_high": float(g["ci_high"])})
    return pd.DataFrame(rows, columns=GAIN_COLUMNS)


def alignment_table(base: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, benchmark, k, reward): base pass@k next to the reward's gain on that cell.

    Only cells with both a base pass@k and a gain; order: the base table's (config order, k up),
    rewards in the gains' order.
    """
    if base.empty or gains.empty:
        return pd.DataFrame(columns=ALIGNMENT_COLUMNS)
    out = base.merge(gains, on=["model", "benchmark"], how="inner", sort=False)
    return out[ALIGNMENT_COLUMNS].reset_index(drop=True)


# ----------------------------------------------------------------------------- correlation with a CI


def _rank(a: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties averaged (Spearman's convention)."""
    return pd.DataFrame(np.atleast_2d(a)).rank(axis=1, method="average").to_numpy().reshape(a.shape)


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis; NaN where x or y takes a single value."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc**2).sum(axis=-1) * (yc**2).sum(axis=-1))
    flat = (np.ptp(x, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=-1) / den
    return np.where(flat, math.nan, np.clip(r, -1.0, 1.0))


def correlation(x: np.ndarray, y: np.ndarray, *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Pearson and Spearman correlation of paired values with percentile bootstrap CIs over the pairs.

    Pairs are resampled with replacement ``n_boot`` times (seeded: the same inputs give the
    same interval); a draw where x or y is constant, or that holds fewer than 3 distinct
    pairs (r = ±1 by construction), is dropped (``n_valid_draws`` counts the rest). ``fisher_low/high`` is the Fisher-z interval of Pearson's r (n > 3).
    Fewer than 3 pairs, or no spread in x or y: every estimate is NaN. With exactly 3 pairs r and
    ρ are given but no interval: the only usable draws would be the sample itself, reordered.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    # pearson_r .. fisher_high start as NaN
    out = {"n_cells": n, **dict.fromkeys(CORRELATION_COLUMNS[5:13], math.nan), "n_valid_draws": 0,
           "n_boot": n_boot, "alpha": alpha}
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    r = float(_pearson(x, y))
    out["pearson_r"], out["spearman_rho"] = r, float(_pearson(_rank(x), _rank(y)))
    if n < MIN_CI_CELLS:
        return out
    idx = np.random.default_rng([seed, 3, n]).integers(0, n, size=(n_boot, n))
    xb, yb = x[idx], y[idx]
    rb, rhob = _pearson(xb, yb), _pearson(_rank(xb), _rank(yb))
    # a draw of fewer than 3 distinct cells has r = ±1 (or none) by construction: with few cells such
    # draws are common and would pile up at the ends, so they are dropped with the constant ones
    srt = np.sort(idx, axis=1)
    distinct = 1 + (np.diff(srt, axis=1) != 0).sum(axis=1)
    ok = ~np.isnan(rb) & (distinct >= 3)
    out["n_valid_draws"] = int(ok.sum())
    if ok.any():
        out["pearson_low"], out["pearson_high"] = map(float, np.quantile(rb[ok], [alpha / 2, 1 - alpha / 2]))
        good = rhob[ok & ~np.isnan(rhob)]
        out["spearman_low"], out["spearman_high"] = map(float, np.quantile(good, [alpha / 2, 1 - alpha / 2]))
    if n > 3 and abs(r) < 1:
        h = NormalDist().inv_cdf(1 - alpha / 2) / math.sqrt(n - 3)
        out["fisher_low"], out["fisher_high"] = math.tanh(math.atanh(r) - h), math.tanh(math.atanh(r) + h)
    return out


def _cells(table: pd.DataFrame, k: int | str) -> pd.DataFrame:
    return table[table["k_is_max"].astype(bool)] if k == MAX_K else table[table["k"] == k]


def correlations(table: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Per reward (main variant): the correlation at k = "max" (each benchmark's largest k), then at each k."""
    rows = []
    if table.empty:
        return pd.DataFrame(columns=CORRELATION_COLUMNS)
    ks: list[int | str] = [MAX_K, *sorted(int(k) for k in table["k"].unique())]
    for (reward, variant), sub in table.groupby(["reward", "variant"], sort=False):
        for k in ks:
            cells = _cells(sub, k).dropna(subset=["base_pass_at_k", "gain"])
            stats = correlation(cells["base_pass_at_k"].to_numpy(), cells["gain"].to_numpy(),
                                n_boot=n_boot, seed=seed, alpha=alpha)
            rows.append({"reward": reward, "kind": sub["kind"].iloc[0], "variant": variant, "k": str(k), **stats})
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


# ----------------------------------------------------------------------------- figure


def _level(alpha: float) -> str:
    return f"{100 * (1 - alpha):g}%"


def _r_words(row: pd.Series | dict, alpha: float) -> str:
    if pd.isna(row["pearson_r"]):
        return f"n = {int(row['n_cells'])}: no correlation (fewer than 3 cells or no spread)"
    ci = "" if pd.isna(row["pearson_low"]) else f" [{row['pearson_low']:+.2f}, {row['pearson_high']:+.2f}]"
    rho = "" if pd.isna(row["spearman_rho"]) else f", ρ = {row['spearman_rho']:+.2f}"
    return f"r = {row['pearson_r']:+.2f}{ci}{rho}, n = {int(row['n_cells'])}"


def _k_note(table: pd.DataFrame) -> str:
    top = table[table["k_is_max"].astype(bool)].drop_duplicates("benchmark")
    return ", ".join(f"{b} k={int(k)}" for b, k in zip(top["benchmark"], top["k"], strict=True))


def plot_alignment(table: pd.DataFrame, corr: pd.DataFrame, cfg: dict, path: Path, *, alpha: float) -> None:
    """Base pass@k (largest k per benchmark) vs each reward's gain: one panel per reward, one marker per cell.

    Colour = model, marker = benchmark, vertical bar = the gain's CI; the panel title gives
    the correlation with its bootstrap CI over cells; a dotted least-squares line where r exists.
    """
    from matplotlib.lines import Line2D

    rewards = list(cfg["rewards"])
    models, benches = list(cfg["models"]), list(cfg["benchmarks"])
    colors = figures.colors(models)
    marker = {b: MARKERS[i % len(MARKERS)] for i, b in enumerate(benches)}
    fig, axes = figures.figure(len(rewards), 3, (4.2, 3.4))
    top = table[table["k_is_max"].astype(bool)] if len(table) else table
    for ax, reward in zip(axes, rewards, strict=True):
        v = cfgmod.main_variant(cfg["rewards"][reward])
        sub = top[(top["reward"] == reward) & (top["variant"] == v)] if len(top) else top
        label = (reward if v == "clip" else f"{reward} ({v})") + (
            " (spurious)" if _reward_kind(cfg["rewards"][reward]) == "spurious" else "")
        if sub.empty:
            figures.empty(ax, "no runs evaluated yet")
            ax.set_title(label, fontsize=10)
        else:
            # one artist per kind (bars, and points per benchmark marker), not an errorbar per cell:
            # at the paper grid's ~70 cells x 12 panels the per-cell artists took ~8 s to draw
            x, y = sub["base_pass_at_k"].to_numpy() * 100, sub["gain"].to_numpy() * 100
            lo, hi = sub["gain_ci_low"].to_numpy() * 100, sub["gain_ci_high"].to_numpy() * 100
            point_colors = [colors[m] for m in sub["model"]]
            bar = ~(np.isnan(lo) | np.isnan(hi))
            if bar.any():
                ax.vlines(x[bar], np.minimum(lo, y)[bar], np.maximum(hi, y)[bar], lw=0.8,
                          colors=[c for c, b in zip(point_colors, bar, strict=True) if b])
            for bench in dict.fromkeys(sub["benchmark"]):
                on = (sub["benchmark"] == bench).to_numpy()
                ax.scatter(x[on], y[on], marker=marker[bench], s=36, zorder=3,
                           c=[c for c, b in zip(point_colors, on, strict=True) if b])
            c = corr[(corr["reward"] == reward) & (corr["variant"] == v) & (corr["k"] == MAX_K)]
            words = _r_words(c.iloc[0], alpha) if len(c) else f"n = {len(sub)}"
            if len(c) and not pd.isna(c.iloc[0]["pearson_r"]):
                xs = sub["base_pass_at_k"].to_numpy() * 100
                slope, icept = np.polyfit(xs, sub["gain"].to_numpy() * 100, 1)
                grid = np.linspace(xs.min(), xs.max(), 2)
                ax.plot(grid, slope * grid + icept, ls=":", color="0.4", lw=1)
            ax.set_title(f"{label}\n{words}", fontsize=9)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xlabel("base pass@k (%), largest k per benchmark")
        ax.set_ylabel("gain at the final step (pp)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], ls="", marker="o", color=colors[m], label=m) for m in models]
    handles += [Line2D([], [], ls="", marker=marker[b], color="0.3", label=b) for b in benches]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7),
               title="colour = model, marker = benchmark")
    note = _k_note(table) if len(table) else "no base samples"
    fig.suptitle("Model–task alignment: does a reward's gain track the base model's pass@k? "
                 f"({note})\nr = Pearson, ρ = Spearman across (model, benchmark) cells, [{_level(alpha)} bootstrap "
                 f"CI over cells]; bars = {_level(alpha)} CI of each gain", fontsize=10)
    figures.save(fig, path)


# ----------------------------------------------------------------------------- summary.md and the entry point


#: below this many cells the summary calls the intervals wide (and says why)
FEW_CELLS = 20
RISES, FALLS = "the gain rises with base pass@k", "the gain falls as base pass@k rises"
TOO_FEW = "too few cells to judge"


def _relation(row: dict) -> str:
    """In words, judged only when both intervals agree: the percentile bootstrap over a handful of
    cells can be far too narrow (its draws are near-copies of the sample), the Fisher-z interval
    assumes normality; a relation is claimed only where neither includes 0."""
    lows, highs = (row["pearson_low"], row["fisher_low"]), (row["pearson_high"], row["fisher_high"])
    if any(pd.isna(v) for v in (*lows, *highs)):
        return TOO_FEW
    if min(lows) > 0:
        return RISES
    if max(highs) < 0:
        return FALLS
    return "no clear relation (a CI includes 0)"


def summary_section(table: pd.DataFrame, corr: pd.DataFrame, cfg: dict, paths: dict[str, Path],
                    here: Path, *, alpha: float) -> dict | None:
    """The plain-words paragraph of summary.md (``{"text": ...}``); None without a correlation to show."""
    head = corr[corr["k"] == MAX_K] if len(corr) else corr
    if head.empty:
        return None
    level = _level(alpha)
    order = {r: i for i, r in enumerate(cfg["rewards"])}
    head = head.sort_values("reward", key=lambda s: s.map(order), kind="stable")
    parts, spurious = [], []
    for r in head.to_dict("records"):
        label = r["reward"] if r["variant"] == "clip" else f"{r['reward']} ({r['variant']})"
        if pd.isna(r["pearson_r"]):
            parts.append(f"{label}: not estimable (n = {r['n_cells']})")
            continue
        side = _relation(r)
        boot = "" if pd.isna(r["pearson_low"]) else f"bootstrap {r['pearson_low']:+.2f}, {r['pearson_high']:+.2f}"
        fisher = "" if pd.isna(r["fisher_low"]) else f"Fisher-z {r['fisher_low']:+.2f}, {r['fisher_high']:+.2f}"
        ci = "; ".join(c for c in (boot, fisher) if c)
        tag = " (spurious)" if r["kind"] == "spurious" else ""
        parts.append(f"{label}{tag}: Pearson r = {r['pearson_r']:+.2f}" + (f" [{level} CI {ci}]" if ci else "")
                     + f", Spearman ρ = {r['spearman_rho']:+.2f}, n = {r['n_cells']}: {side}")
        if r["kind"] == "spurious":
            spurious.append(side)
    n = int(head["n_cells"].max())
    rel = lambda key: Path(os.path.relpath(paths[key], here)).as_posix()  # noqa: E731
    text = ("Wu et al. (2025) report that spurious rewards help only where the base "
            "model's pass@k is already high. Here, across the (model, benchmark) cells, base pass@k at each "
            f"benchmark's largest k ({_k_note(table)}) against each reward's gain at the final step: "
            + "; ".join(parts) + ".")
    if spurious:
        tracked, unjudged = sum(s == RISES for s in spurious), sum(s == TOO_FEW for s in spurious)
        text += (f" Spurious rewards whose gain tracks base pass@k (both intervals above 0): {tracked} of "
                 f"{len(spurious)}" + (f" ({unjudged} with too few cells to judge)" if unjudged else "") + ".")
    few = f" With only {n} cells these intervals are wide, and" if n < FEW_CELLS else " Note that"
    text += (f"{few} cells that share a model or a benchmark are not independent (both intervals treat them as if "
             "they were, so the true uncertainty is larger): a CI that includes 0 means this study cannot tell, not "
             f"that there is no relation. Per-k correlations: [`{rel('alignment_corr')}`]({rel('alignment_corr')}); "
             "the cells: "
             f"[`{rel('alignment')}`]({rel('alignment')}); figure: [`{rel('fig_alignment')}`]({rel('fig_alignment')}).")
    return {"text": text}


def write_alignment(cfg: dict, res: Path, ix: StatIndex, paths: dict[str, Path], *, n_boot: int, seed: int,
                    alpha: float, draw=None) -> dict | None:
    """Write alignment.csv, alignment_correlation.csv and figures/alignment.png; return the summary paragraph.

    ``draw(plot, *args, **kwargs)`` draws the figure (aggregate() hands it to its worker
    pool); None draws it here.
    """
    table = alignment_table(base_pass_at_k(cfg, res), final_gains(ix, cfg))
    corr = correlations(table, n_boot=n_boot, seed=seed, alpha=alpha)
    for key, frame in (("alignment", table), ("alignment_corr", corr)):
        with io.atomic_output(paths[key]) as tmp:
            frame.to_csv(tmp, index=False, lineterminator="\n")
    if draw is None:
        plot_alignment(table, corr, cfg, paths["fig_alignment"], alpha=alpha)
    else:
        draw(plot_alignment, table, corr, cfg, paths["fig_alignment"], alpha=alpha)
    return summary_section(table, corr, cfg, paths, paths["summary"].parent, alpha=alpha)
