"""The audit's tables, figures and summary section: "is the gain real?".

Three published critiques of the paper, each answered from the same DAG
(:mod:`contamination`, :func:`evaluate.evaluate_baselines`, :mod:`clip_probe` and the
clean benchmarks produce the inputs; :mod:`aggregate` calls this module):

* contamination (Wu et al. 2025): ``contamination.csv`` and its figure;
* weak baselines: ``baselines.csv`` (every template's accuracy) and each gain
  measured against the best template as well as the paper's;
* variance (Hochlehnert et al. 2025): every gain with a CI over seeds and
  problems, and a verdict computed from the CIs (:func:`stats.verdict`);
* the mechanism: ``clip_probe.csv``, the clipping-bias probe's mean drifts.

Everything here reads finished outputs and tolerates missing ones (an audit
that is disabled or still running leaves its table empty, with a note).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import config as cfgmod
from .. import io, paths, stats
from . import figures, samples

log = logging.getLogger(__name__)

VERDICT_COLUMNS = [
    "model", "family", "reward", "variant", "benchmark", "step", "n_seeds",
    "gain_paper", "gain_paper_low", "gain_paper_high",
    "best_template", "best_accuracy", "gain_best", "gain_best_low", "gain_best_high",
    "clean_problems", "gain_clean", "gain_clean_low", "gain_clean_high", "verdict", "reason",
]
BASELINE_COLUMNS = ["model", "benchmark", "template", "available", "accuracy", "ci_low", "ci_high",
                    "paper_template", "best", "code_frequency"]
CONTAMINATION_COLUMNS = ["model", "dataset", "clean", "problems", "metric", "mean", "ci_low", "ci_high"]
PROBE_COLUMNS = ["model", "dominant_style", "variant", "metric", "mean", "ci_low", "ci_high", "draws"]

PAPER = "paper"  # the best-baseline candidate that is the paper-style base evaluation itself


def is_clean_dataset(cfg: dict, dataset: str) -> bool:
    d = cfg["datasets"].get(dataset, {})
    return d.get("kind") == "synthetic" and d.get("split") == "test"


# ----------------------------------------------------------------------------- baselines


def read_baselines(cfg: dict, res: Path, base_tables: dict[str, dict[str, pd.DataFrame]], *,
                   n_boot: int, seed: int, alpha: float,
                   ) -> tuple[pd.DataFrame, dict[str, dict[str, tuple[str, np.ndarray]]]]:
    """Every (model, benchmark, template) accuracy with a CI, and the best baseline per (model, benchmark).

    The best is the most accurate of the templates *and* the paper-style base
    evaluation (so it is never worse than the paper's baseline); its per-problem
    accuracies are aligned to the base evaluation's problems for paired gains.
    Picking the maximum of several noisy accuracies favours the baseline slightly:
    the conservative direction for a claimed gain. Baseline samples are read with
    the aggregation's own readers, exactly like the base model's.
    """
    rows: list[dict] = []
    best: dict[str, dict[str, tuple[str, np.ndarray]]] = {}
    for model in cfg["models"]:
        summary_path = paths.under(res, paths.BASELINES_SUMMARY, model=model)
        doc = io.read_json(summary_path) if summary_path.exists() else {"results": []}
        paper_template = cfg["models"][model]["template"]
        tables = base_tables.get(model, {})
        for bench, btab in tables.items():
            base_acc = samples.accuracy(btab, btab.index)
            candidates = {PAPER: base_acc}
            for r in doc["results"]:
                if r["benchmark"] != bench:
                    continue
                t = r["template"]
                if not r.get("available", True):
                    rows.append({"model": model, "benchmark": bench, "template": t, "available": False,
                                 "paper_template": t == paper_template})
                    continue
                tabs = samples.read_sample_dir(paths.under(res, paths.BASELINES_SAMPLES, model=model) / t, [bench])
                if (0, bench) not in tabs:
                    continue
                candidates[t] = samples.accuracy(tabs[(0, bench)], btab.index)
                ci = stats.mean_ci(candidates[t][~np.isnan(candidates[t])], n_boot, seed, alpha)
                rows.append({"model": model, "benchmark": bench, "template": t, "available": True,
                             "accuracy": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
                             "paper_template": t == paper_template, "code_frequency": r.get("code_frequency")})
            name = max(candidates, key=lambda k: (np.nanmean(candidates[k]), k == PAPER))
            best.setdefault(model, {})[bench] = (paper_template if name == PAPER else name, candidates[name])
            for row in rows:
                if row["model"] == model and row["benchmark"] == bench:
                    row["best"] = row["template"] == best[model][bench][0]
    return pd.DataFrame(rows, columns=BASELINE_COLUMNS), best


# ----------------------------------------------------------------------------- the verdict


def _final(seeds: dict, bench: str) -> tuple[int, np.ndarray] | None:
    """(final step, accuracy[seeds, problems]) at the last step every seed has, or None."""
    have = [dict(zip(r[bench][0], r[bench][1], strict=True)) for r in seeds.values() if bench in r]
    if not have:
        return None
    common = set.intersection(*(set(h) for h in have))
    if not common:
        return None
    step = max(common)
    return step, np.stack([h[step] for h in have])


def _paired(base: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isnan(base) & ~np.isnan(x).any(axis=0)
    return base[keep], x[:, keep]


def _ci(base: np.ndarray | None, x: np.ndarray | None, n_boot: int, seed: int, alpha: float) -> stats.CI | None:
    if base is None or x is None:
        return None
    b, xx = _paired(base, x)
    if b.size == 0:
        return None
    return stats.gain_ci(b, xx, n_boot, seed, alpha)


def verdict_row(keys: dict, seeds: dict, base_acc: dict[str, np.ndarray],
                best: dict[str, tuple[str, np.ndarray]], main: str, clean: list[str],
                n_boot: int, seed: int, alpha: float) -> dict | None:
    """The verdict of one (model, reward, variant) cell from its seeds' per-problem accuracies.

    ``seeds[seed][benchmark] = (steps, accuracy[steps, base problems], ...)`` as
    the aggregation's sample pass builds it; gains are paired per problem.
    """
    fin = _final(seeds, main)
    if fin is None or main not in base_acc:
        return None
    step, x = fin
    paper = _ci(base_acc[main], x, n_boot, seed, alpha)
    best_t, best_acc = best.get(main, (None, None))
    best_ci = _ci(best_acc, x, n_boot, seed, alpha) if best_acc is not None else None
    # clean: pool the problems of every clean benchmark (each against its own paper-style base)
    diffs, n_clean = [], 0
    for b in clean:
        f = _final(seeds, b)
        if f is None or b not in base_acc or f[1].shape[0] != x.shape[0]:
            continue
        bb, xx = _paired(base_acc[b], f[1])
        diffs.append(xx - bb)
        n_clean += bb.size
    clean_ci = None
    if diffs and n_clean:
        d = np.concatenate(diffs, axis=1)
        clean_ci = stats.mean_ci(d, n_boot, seed, alpha)
    label, reason = stats.verdict(paper, best_ci, clean_ci)

    def trio(ci: stats.CI | None) -> list:
        return [math.nan] * 3 if ci is None else [ci.estimate, ci.low, ci.high]

    return dict(zip(VERDICT_COLUMNS, [
        keys["model"], keys["family"], keys["reward"], keys["variant"], main, step, x.shape[0],
        *trio(paper), best_t, float(np.nanmean(best_acc)) if best_acc is not None else math.nan,
        *trio(best_ci), n_clean, *trio(clean_ci), label, reason,
    ], strict=True))


# ----------------------------------------------------------------------------- contamination and probe


def read_contamination(cfg: dict, res: Path) -> pd.DataFrame:
    rows = []
    for model in cfg["models"]:
        p = paths.under(res, paths.CONTAMINATION_SUMMARY, model=model)
        if not p.exists():
            continue
        for r in io.read_json(p)["results"]:
            for metric in ("exact", "rouge_l", "correct"):
                v = r.get(metric) or {}
                rows.append({"model": model, "dataset": r["dataset"], "clean": is_clean_dataset(cfg, r["dataset"]),
                             "problems": r["problems"], "metric": metric, "mean": v.get("mean"),
                             "ci_low": v.get("ci_low"), "ci_high": v.get("ci_high")})
    return pd.DataFrame(rows, columns=CONTAMINATION_COLUMNS)


def read_clip_probe(cfg: dict, res: Path) -> pd.DataFrame:
    rows = []
    for model in cfgmod.probe_models(cfg):
        p = paths.under(res, paths.CLIP_PROBE, model=model)
        if not p.exists():
            continue
        doc = io.read_json(p)
        rows += [{"model": model, "dominant_style": doc["dominant_style"], **r} for r in doc["summary"]]
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


# ----------------------------------------------------------------------------- figures


def _panels(n: int, title: str, ncols: int = 3, panel: tuple[float, float] = (4.6, 3.4)) -> tuple:
    """aggregate's Figure with ``n`` panels (at least one, for the "no results" note) and a title."""
    fig, axes = figures.figure(max(n, 1), ncols, panel)
    fig.suptitle(title, fontsize=10)
    return fig, axes


def _bars(ax, labels: list[str], means: list[float], lows: list[float], highs: list[float],  # noqa: ANN001
          colors: list[str], scale: float = 100.0) -> None:
    m = np.array(means, dtype=float) * scale
    lo = np.array(lows, dtype=float) * scale
    hi = np.array(highs, dtype=float) * scale
    err = np.nan_to_num(np.vstack([m - lo, hi - m]), nan=0.0).clip(min=0)
    ax.bar(range(len(m)), np.nan_to_num(m), yerr=err, color=colors, capsize=3)
    ax.set_xticks(range(len(m)), labels, rotation=30, ha="right", fontsize=8)


def _level(alpha: float) -> str:
    return f"{100 * (1 - alpha):g}%"


def plot_contamination(df: pd.DataFrame, cfg: dict, path: Path, *, alpha: float) -> None:
    models = [m for m in cfg["models"] if m in set(df["model"])]
    fig, axes = _panels(len(models), "Partial-prompt audit: rest of the problem regenerated,\n"
                                     f"and answered right, from its first part (%, {_level(alpha)} CI)")
    colors = {"exact": "#b2182b", "rouge_l": "#ef8a62", "correct": "#2166ac"}
    names = {"exact": "exact match", "rouge_l": "ROUGE-L ×100", "correct": "partial acc."}
    for ax, model in zip(axes, models, strict=False):
        sub = df[df["model"] == model]
        datasets = list(dict.fromkeys(sub["dataset"]))
        width = 0.8 / 3
        for j, metric in enumerate(("exact", "rouge_l", "correct")):
            s = sub[sub["metric"] == metric].set_index("dataset").reindex(datasets)
            m = s["mean"].astype(float).to_numpy() * 100
            err = np.nan_to_num(np.vstack([m - s["ci_low"].astype(float) * 100,
                                           s["ci_high"].astype(float) * 100 - m]), nan=0).clip(min=0)
            ax.bar(np.arange(len(datasets)) + (j - 1) * width, np.nan_to_num(m), width, yerr=err, capsize=2,
                   color=colors[metric], label=names[metric])
        ax.set_xticks(range(len(datasets)),
                      [f"{d}\n(clean)" if is_clean_dataset(cfg, d) else d for d in datasets], fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("% of problems (ROUGE-L ×100)", fontsize=8)
        ax.set_title(model, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    if not models:
        axes[0].text(0.5, 0.5, "no contamination audit results", ha="center", va="center")
        axes[0].set_axis_off()
    else:
        axes[0].legend(fontsize=7, loc="upper right")
    figures.save(fig, path)


def plot_baselines(df: pd.DataFrame, cfg: dict, path: Path, *, alpha: float) -> None:
    df = df[df["available"] == True]  # noqa: E712 (pandas mask)
    cells = list(dict.fromkeys(zip(df["model"], df["benchmark"], strict=True)))
    fig, axes = _panels(len(cells), "Prompt-robust baselines: base-model accuracy by template\n"
                                    f"(%, {_level(alpha)} CI; hatched = the paper's template, dark = best)")
    for ax, (model, bench) in zip(axes, cells, strict=False):
        s = df[(df["model"] == model) & (df["benchmark"] == bench)]
        colors = ["#08519c" if b else "#9ecae1" for b in s["best"].fillna(False)]
        _bars(ax, list(s["template"]), list(s["accuracy"]), list(s["ci_low"]), list(s["ci_high"]), colors)
        for patch, paper in zip(ax.patches, s["paper_template"], strict=False):
            if paper:
                patch.set_hatch("//")
        ax.set_title(f"{model} · {bench}", fontsize=9)
        ax.set_ylabel(f"{bench} accuracy (%)", fontsize=8)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    if not cells:
        axes[0].text(0.5, 0.5, "no baseline results", ha="center", va="center")
        axes[0].set_axis_off()
    figures.save(fig, path)


def plot_clip_probe(df: pd.DataFrame, cfg: dict, path: Path, *, alpha: float) -> None:
    models = [m for m in cfg["models"] if m in set(df["model"])]
    n = max(len(models), 1)
    # two rows (ΔP(dominant), Δaccuracy) of one panel per model: row-major axes
    fig, axes = _panels(2 * n, "Clipping-bias probe: mean change after one training step from the base model\n"
                               f"under random rewards (pp, {_level(alpha)} CI over draws)", ncols=n,
                      panel=(4.4, 2.9))
    palette = {"clip": "#b2182b", "no_clip": "#2166ac", "one_update": "#4d9221"}
    for j, model in enumerate(models):
        sub = df[df["model"] == model]
        style = sub["dominant_style"].iloc[0]
        for i, (metric, label) in enumerate((("d_p_dominant", f"Δ P({style}) (pp)"),
                                             ("d_accuracy", "Δ accuracy (pp)"))):
            s = sub[sub["metric"] == metric]
            ax = axes[i * n + j]
            _bars(ax, list(s["variant"]), list(s["mean"]), list(s["ci_low"]), list(s["ci_high"]),
                  [palette.get(v, "#777777") for v in s["variant"]])
            ax.axhline(0, color="black", lw=0.7)
            ax.set_ylabel(label, fontsize=8)
            ax.grid(axis="y", alpha=0.3)
            if i == 0:
                ax.set_title(model, fontsize=9)
    if not models:
        axes[0].text(0.5, 0.5, "no clip-probe results", ha="center", va="center")
        for ax in axes:
            ax.set_axis_off()
    figures.save(fig, path)
