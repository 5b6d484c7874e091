"""The mechanism map: where in (epsilon, epsilon_high, updates, lr) GRPO's clipping bias shows.

Each cell of ``audit.mechanism`` is one clip probe (``audit/clip_probe.py``) with two
variants, ``clip`` and ``no_clip``, paired by draw. Per cell this module reads:

* **bias** = ``clip - no_clip`` in P(dominant style), paired by draw: what clipping adds
  to a step with a reward that carries no information;
* **clip's own drift** = ``clip``'s change in P(dominant style): the paper's claim is about
  *this* (clipping moves the policy toward its prior), and a positive bias with a negative
  drift only says that ``no_clip`` falls faster;
* the accuracy change of ``clip`` (and its paired difference to ``no_clip``);
* the clipped-token fraction of ``clip``'s updates.

The bias is fitted against the clipped fraction ``f`` as ``bias = a f^b`` (least squares
in log-log space over the cells where both are positive; a bootstrap over cells gives
the CI of ``b``), and, with the exponent fixed at 2, ``bias = a2 f^2`` (least squares
through the origin over every cell). With few cells both CIs are wide; the table says n.

Then, for the checking runs (``audit.mechanism.check``), the cells to check: those where
clip's own drift has its CI above 0, most drift first; if none, those with the largest
bias whose CI is above 0; if none either, the largest bias (to test a negative). The
checking runs' trajectories are read by :func:`check_table` and drawn by
:func:`plot_checks` beside the probe's prediction (the first-step drift, extrapolated
linearly: a prediction of the early trend only, since the probe steps from the base
model with a fresh optimizer).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import config as cfgmod
from .. import io, paths, stats
from . import figures

#: (column stem, probe summary variant, metric): what a cell row carries, each with mean, ci_low, ci_high
CELL_METRICS: tuple[tuple[str, str, str], ...] = (
    ("bias", "clip - no_clip", "d_p_dominant"),
    ("clip_drift", "clip", "d_p_dominant"),
    ("no_clip_drift", "no_clip", "d_p_dominant"),
    ("clip_d_accuracy", "clip", "d_accuracy"),
    ("bias_accuracy", "clip - no_clip", "d_accuracy"),
    ("clip_fraction", "clip", "clip_fraction"),
)
CELL_KEYS = ["model", "cell", "epsilon", "epsilon_high", "updates", "lr", "draws", "style_measure", "dominant_style"]
CELL_COLUMNS = CELL_KEYS + [f"{stem}{suffix}" for stem, _, _ in CELL_METRICS for suffix in ("", "_low", "_high")]
FIT_COLUMNS = ["model", "cells", "cells_positive", "b", "b_low", "b_high", "a", "a2", "a2_low", "a2_high"]
CHECK_COLUMNS = ["model", "cell", "arm", "seed", "steps", "style_start", "style_end", "style_change",
                 "early_slope", "accuracy_start", "accuracy_end", "accuracy_change", "predicted_slope",
                 "predicted_low", "predicted_high"]

#: heatmap panels: (column, title, scale to display units)
PANELS: tuple[tuple[str, str], ...] = (
    ("bias", "bias: clip - no_clip, Δ P(dominant) pp"),
    ("clip_drift", "clip's own drift, Δ P(dominant) pp"),
    ("clip_d_accuracy", "clip: Δ accuracy pp"),
    ("clip_fraction", "clip: clipped tokens %"),
)


# ----------------------------------------------------------------------------- reading the cells


def cell_row(model: str, cell: cfgmod.MechanismCell, doc: dict) -> dict:
    """One table row from a cell's probe result (``audit/mechanism/{model}/{cell}.json``)."""
    summ = {(r["variant"], r["metric"]): r for r in doc["summary"]}
    row: dict = {"model": model, "cell": cell.id, "epsilon": cell.epsilon, "epsilon_high": cell.epsilon_high,
                 "updates": cell.updates, "lr": cell.lr,
                 "draws": max((r["draws"] for r in doc["summary"]), default=0),
                 "style_measure": doc.get("style_measure"), "dominant_style": doc["dominant_style"]}
    for stem, variant, metric in CELL_METRICS:
        r = summ.get((variant, metric), {})
        row[stem], row[f"{stem}_low"], row[f"{stem}_high"] = (r.get("mean"), r.get("ci_low"), r.get("ci_high"))
    return row


def read_cells(cfg: dict, res: Path) -> pd.DataFrame:
    """Every mapped (model, cell) whose result exists, in config order."""
    rows = []
    for model in cfgmod.mechanism_models(cfg):
        for cell in cfgmod.mechanism_cells(cfg):
            p = paths.under(res, paths.MECHANISM_CELL, model=model, cell=cell.id)
            if p.exists():
                rows.append(cell_row(model, cell, io.read_json(p)))
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


# ----------------------------------------------------------------------------- the scaling fit


def fit_scaling(frac: np.ndarray, bias: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                alpha: float = 0.05) -> dict:
    """``bias = a f^b`` (log-log least squares over cells with f, bias > 0) and ``bias = a2 f^2``.

    CIs by a bootstrap over cells (resampled with replacement, seeded); NaN where there are
    too few cells (b needs two distinct positive cells, a2 one cell with f > 0).
    """
    frac, bias = np.asarray(frac, dtype=float), np.asarray(bias, dtype=float)
    ok = np.isfinite(frac) & np.isfinite(bias)
    frac, bias = frac[ok], bias[ok]
    pos = (frac > 0) & (bias > 0)
    out = {"cells": int(len(frac)), "cells_positive": int(pos.sum()), "b": math.nan, "b_low": math.nan,
           "b_high": math.nan, "a": math.nan, "a2": math.nan, "a2_low": math.nan, "a2_high": math.nan}

    def loglog(f: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        x, z = np.log(f), np.log(y)
        if len(x) < 2 or np.ptp(x) == 0:
            return math.nan, math.nan
        b, loga = np.polyfit(x, z, 1)
        return float(b), float(math.exp(loga))

    def through_origin(f: np.ndarray, y: np.ndarray) -> float:
        x = f**2
        den = float((x * x).sum())
        return float((x * y).sum() / den) if den > 0 else math.nan

    rng = np.random.default_rng(seed)
    if pos.sum() >= 2:
        out["b"], out["a"] = loglog(frac[pos], bias[pos])
        fp, bp = frac[pos], bias[pos]
        # a resample of fewer than 3 distinct cells fits a line through 2 points (any slope): dropped;
        # with fewer than 4 cells the only usable resamples reorder the sample, so no interval at all
        idx = [i for i in rng.integers(0, len(fp), size=(n_boot, len(fp))) if len(set(i.tolist())) >= 3]
        boots = np.array([b for b in (loglog(fp[i], bp[i])[0] for i in idx) if np.isfinite(b)])
        if len(fp) >= 4 and len(boots):
            out["b_low"], out["b_high"] = (float(v) for v in np.quantile(boots, [alpha / 2, 1 - alpha / 2]))
    if (frac > 0).any():
        out["a2"] = through_origin(frac, bias)
        boots = np.array([through_origin(frac[i], bias[i]) for i in rng.integers(0, len(frac),
                                                                                   size=(n_boot, len(frac)))])
        boots = boots[np.isfinite(boots)]
        if len(boots):
            out["a2_low"], out["a2_high"] = (float(v) for v in np.quantile(boots, [alpha / 2, 1 - alpha / 2]))
    return out


def fits(cells: pd.DataFrame, *, n_boot: int, seed: int, alpha: float) -> pd.DataFrame:
    rows = []
    for model, g in cells.groupby("model", sort=False):
        rows.append({"model": model, **fit_scaling(g["clip_fraction"].to_numpy(float), g["bias"].to_numpy(float),
                                                   n_boot=n_boot, seed=seed, alpha=alpha)})
    return pd.DataFrame(rows, columns=FIT_COLUMNS)


# ----------------------------------------------------------------------------- flagged cells


def flagged(cells: pd.DataFrame, n: int) -> dict[str, list[dict]]:
    """Per model, the ``n`` cells to check with training runs, each with why (module docstring)."""
    out: dict[str, list[dict]] = {}
    for model, g in cells.groupby("model", sort=False):
        drift = g[g["clip_drift_low"] > 0].sort_values("clip_drift", ascending=False)
        bias = g[g["bias_low"] > 0].sort_values("bias", ascending=False)
        if len(drift):
            chosen, why = drift, "clip's own drift in P(dominant) has its CI above 0"
        elif len(bias):
            chosen, why = bias, "no cell with clip's own drift above 0; clip - no_clip has its CI above 0"
        else:  # the largest bias where clipping acted (with one update per rollout it cannot)
            acted = g[g["clip_fraction"] > 0]
            chosen = (acted if len(acted) else g).sort_values("bias", ascending=False)
            why = "no cell flagged by the map: the largest bias where clipping acted"
        out[str(model)] = [{"cell": c, "why": why} for c in chosen["cell"].head(n)]
    return out


# ----------------------------------------------------------------------------- figures


def _fmt(x: float | None) -> str:
    return "null" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:g}"


def plot_map(cells: pd.DataFrame, path: Path, *, alpha: float) -> None:
    """Heatmaps per model and metric: epsilon (rows) x updates (columns), one panel per (lr, epsilon_high)."""
    import matplotlib.pyplot as plt

    level = f"{100 * (1 - alpha):g}%"
    models = list(dict.fromkeys(cells["model"])) if len(cells) else []
    facets = (list(dict.fromkeys(zip(cells["lr"], cells["epsilon_high"].map(_fmt), strict=True)))
              if len(cells) else [])
    nrows, ncols = max(1, len(models) * len(PANELS)), max(1, len(facets))
    height = 3.0 * nrows + 1.4
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 0.6, height), squeeze=False)
    # room for the three-line figure title, and for each panel's two-line title below the previous
    # panel's x label
    fig.subplots_adjust(hspace=0.6, top=1 - 1.4 / height, bottom=0.5 / height)
    if not len(cells):
        figures.empty(axes[0][0], "no mechanism-map results")
    for mi, model in enumerate(models):
        g = cells[cells["model"] == model]
        for pi, (col, title) in enumerate(PANELS):
            scale = 100.0
            for fi, (lr, hi) in enumerate(facets):
                ax = axes[mi * len(PANELS) + pi][fi]
                sub = g[(g["lr"] == lr) & (g["epsilon_high"].map(_fmt) == hi)]
                eps = sorted(set(g["epsilon"]), reverse=True)
                ups = sorted(set(g["updates"]))
                grid = np.full((len(eps), len(ups)), np.nan)
                sig = np.zeros_like(grid, dtype=bool)
                for _, r in sub.iterrows():
                    i, j = eps.index(r["epsilon"]), ups.index(r["updates"])
                    grid[i, j] = r[col] * scale if r[col] is not None else np.nan
                    lo, hi_ = r.get(f"{col}_low"), r.get(f"{col}_high")
                    sig[i, j] = col != "clip_fraction" and lo is not None and hi_ is not None and (lo > 0 or hi_ < 0)
                lim = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
                cmap, vmin = ("viridis", 0.0) if col == "clip_fraction" else ("RdBu_r", -lim or -1.0)
                ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=lim or 1.0, aspect="auto")
                for i in range(len(eps)):
                    for j in range(len(ups)):
                        if np.isfinite(grid[i, j]):
                            ax.text(j, i, f"{grid[i, j]:+.2f}{'*' if sig[i, j] else ''}" if col != "clip_fraction"
                                    else f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
                ax.set_xticks(range(len(ups)), [str(u) for u in ups], fontsize=8)
                ax.set_yticks(range(len(eps)), [f"{e:g}" for e in eps], fontsize=8)
                ax.set_xlabel("updates per rollout", fontsize=8)
                ax.set_ylabel("clip epsilon", fontsize=8)
                ax.set_title(f"{model}: {title}\nlr {lr:g}, eps_high {hi}", fontsize=8)
    fig.suptitle(f"Mechanism map\n(probe, clip vs no_clip paired by draw;\n* = {level} CI excludes 0)", fontsize=9)
    figures.save(fig, path)


def plot_scaling(cells: pd.DataFrame, fit: pd.DataFrame, path: Path, *, alpha: float) -> None:
    """The bias against the clipped fraction, per model, with both fitted curves."""
    models = list(dict.fromkeys(cells["model"])) if len(cells) else []
    fig, axes = figures.figure(max(1, len(models)), 3, (4.6, 3.4))
    fig.suptitle(f"Clipping bias vs clipped-token fraction ({100 * (1 - alpha):g}% CI over draws)", fontsize=10)
    if not models:
        figures.empty(axes[0], "no mechanism-map results")
    for ax, model in zip(axes, models, strict=False):
        g = cells[cells["model"] == model]
        f = g["clip_fraction"].to_numpy(float) * 100
        y = g["bias"].to_numpy(float) * 100
        err = np.vstack([y - g["bias_low"].to_numpy(float) * 100, g["bias_high"].to_numpy(float) * 100 - y])
        ax.errorbar(f, y, yerr=np.nan_to_num(err).clip(min=0), fmt="o", capsize=3, color="C0", label="cells")
        ax.axhline(0, color="grey", lw=0.8)
        fr = fit[fit["model"] == model]
        if len(fr) and np.isfinite(f).any() and f.max() > 0:
            r = fr.iloc[0]
            xs = np.linspace(0, f.max() * 1.1, 100)
            if np.isfinite(r["a2"]):
                ax.plot(xs, r["a2"] * (xs / 100) ** 2 * 100, "--", color="C1",
                        label=f"a2 f² (a2 = {r['a2']:.3g} [{r['a2_low']:.3g}, {r['a2_high']:.3g}])")
            if np.isfinite(r["b"]):
                ax.plot(xs[1:], r["a"] * (xs[1:] / 100) ** r["b"] * 100, ":", color="C2",
                        label=f"a f^b (b = {r['b']:.2f} [{r['b_low']:.2f}, {r['b_high']:.2f}])")
        ax.set_xlabel("clipped tokens (%)")
        ax.set_ylabel("clip - no_clip, Δ P(dominant) pp")
        ax.set_title(model, fontsize=9)
        ax.legend(fontsize=6)
    figures.save(fig, path)


# ----------------------------------------------------------------------------- words


def _ci(r: pd.Series, stem: str) -> str:
    return f"{100 * r[stem]:+.2f} pp [{100 * r[f'{stem}_low']:+.2f}, {100 * r[f'{stem}_high']:+.2f}]"


def _cell_words(r: pd.Series) -> str:
    hi = "" if r["epsilon_high"] is None or (isinstance(r["epsilon_high"], float) and math.isnan(r["epsilon_high"])) \
        else f", eps_high {r['epsilon_high']:g}"
    u = int(r["updates"])
    return f"eps {r['epsilon']:g}{hi}, {u} update{'' if u == 1 else 's'}, lr {r['lr']:g}"


def paragraphs(cells: pd.DataFrame, fit: pd.DataFrame, *, alpha: float) -> list[str]:
    """Per model, in plain words: where clip's own drift is positive (CI above 0), at what accuracy cost."""
    level = f"{100 * (1 - alpha):g}%"
    out = []
    for model, g in cells.groupby("model", sort=False):
        style = g["dominant_style"].iloc[0]
        pos = g[g["clip_drift_low"] > 0]
        bias_pos = g[g["bias_low"] > 0]
        text = (f"**{model}** (dominant style {style}, measured by {g['style_measure'].iloc[0]}; "
                f"{len(g)} cells, {int(g['draws'].min())} draws each). ")
        if len(pos):
            text += (f"Clip's own drift in P({style}) is positive with its {level} CI above 0 in {len(pos)} of "
                     f"{len(g)} cells: " + "; ".join(
                         f"{_cell_words(r)}: {_ci(r, 'clip_drift')}, accuracy {_ci(r, 'clip_d_accuracy')}"
                         for _, r in pos.sort_values("clip_drift", ascending=False).iterrows()) + ". ")
        else:
            text += f"In no cell is clip's own drift in P({style}) positive with its {level} CI above 0. "
        if len(bias_pos):
            only = bias_pos[~bias_pos["cell"].isin(pos["cell"])]
            text += (f"clip - no_clip is above 0 in {len(bias_pos)} cells"
                     + (f", {len(only)} of them where clip's own drift is not above 0 (there no_clip's "
                        f"P({style}) falls faster than clip's)" if len(only) else "")
                     + ". ")
        else:
            text += "clip - no_clip is not above 0 in any cell. "
        fr = fit[fit["model"] == model]
        if len(fr) and np.isfinite(fr.iloc[0]["b"]):
            r = fr.iloc[0]
            ci = (f" [{r['b_low']:.2f}, {r['b_high']:.2f}]" if np.isfinite(r["b_low"])
                  else " (no CI: fewer than 4 cells)")
            text += (f"Over the {int(r['cells_positive'])} cells with a positive bias, bias ∝ f^b with "
                     f"b = {r['b']:.2f}{ci} (f = clipped-token fraction).")
        else:
            text += "Too few cells with a positive bias to fit its growth with the clipped fraction."
        out.append(text)
    return out


def report_md(cells: pd.DataFrame, fit: pd.DataFrame, flags: dict, *, alpha: float, checked: bool = True) -> str:
    """The map's report (``paths.MECHANISM["report"]``): the paragraphs, the cell table in pp and the
    flagged cells (summary.md includes it)."""
    lines = [*(p + "\n" for p in paragraphs(cells, fit, alpha=alpha))]
    if not len(cells):
        lines.append("_No mechanism-map results yet._\n")
        return "\n".join(lines)
    lines.append("| Model | Cell | Bias pp | Clip drift pp | Clip Δ accuracy pp | Clipped tokens % |")
    lines.append("|---|---|---|---|---|---|")
    for _, r in cells.iterrows():
        lines.append(f"| {r['model']} | {_cell_words(r)} | {_ci(r, 'bias')} | {_ci(r, 'clip_drift')} | "
                     f"{_ci(r, 'clip_d_accuracy')} | {100 * r['clip_fraction']:.2f} |")
    lines.append("")
    for model, cells_ in flags.items() if checked else ():
        if cells_:
            lines.append(f"Checked by training ({model}): " + ", ".join(f"`{c['cell']}`" for c in cells_)
                         + f" ({cells_[0]['why']}).\n")
    return "\n".join(lines)


def write_map(cfg: dict, res: Path, out: Path, *, n_boot: int = 2000) -> dict[str, Path]:
    """Read every cell, write the table, the fit, both figures, the paragraphs and the flagged cells."""
    alpha = float(cfg["audit"]["verdict"]["alpha"])
    seed = int(cfg["audit"]["clip_probe"]["seed"])
    outs = {k: Path(out) / v for k, v in paths.MECHANISM.items()}
    cells = read_cells(cfg, res)
    fit = fits(cells, n_boot=n_boot, seed=seed, alpha=alpha)
    flags = flagged(cells, cfg["audit"]["mechanism"]["check"]["cells"]) if len(cells) else {}
    for key, frame in (("table", cells), ("fit", fit)):
        with io.atomic_output(outs[key]) as tmp:
            frame.to_csv(tmp, index=False, lineterminator="\n")
    plot_map(cells, outs["fig_map"], alpha=alpha)
    plot_scaling(cells, fit, outs["fig_scaling"], alpha=alpha)
    with io.atomic_output(outs["report"]) as tmp:
        Path(tmp).write_text(report_md(cells, fit, flags, alpha=alpha,
                                       checked=cfg["audit"]["mechanism"]["check"]["enabled"]), encoding="utf-8")
    io.write_json(flags, outs["flagged"])
    return outs


# ----------------------------------------------------------------------------- the checking runs


def _style_column(style_measure: str | None) -> str:
    return "p_code" if style_measure == "first_token" else "code_frequency"


def check_row(model: str, cell_id: str, arm: str, seed: int, rows: list[dict], probe_row: pd.Series | None,
              early: int = 5) -> dict:
    """One checking run: P(code) (the probe's style measure) and accuracy from start to end, its slope over
    the first ``early`` steps, and the probe's predicted per-step drift of that arm."""
    col = _style_column(None if probe_row is None else probe_row["style_measure"])
    steps = sorted((r for r in rows if r.get(col) is not None), key=lambda r: r["step"])
    style = [r[col] for r in steps]
    acc = [r for r in rows if r.get("step", 0) > 0 and r.get("accuracy") is not None]
    acc.sort(key=lambda r: r["step"])
    head = steps[: early + 1]
    slope = (float(np.polyfit([r["step"] for r in head], [r[col] for r in head], 1)[0])
             if len(head) >= 2 else math.nan)
    pred = (math.nan, math.nan, math.nan)
    if probe_row is not None:
        stem = "clip_drift" if arm == "clip" else "no_clip_drift"
        # d_p_dominant is signed toward the dominant style; the trajectories are P(code)
        sign = 1.0 if probe_row["dominant_style"] == "code" else -1.0
        lo, hi = sorted((sign * probe_row[f"{stem}_low"], sign * probe_row[f"{stem}_high"]))
        pred = (sign * probe_row[stem], lo, hi)
    return {"model": model, "cell": cell_id, "arm": arm, "seed": seed, "steps": steps[-1]["step"] if steps else 0,
            "style_start": style[0] if style else math.nan, "style_end": style[-1] if style else math.nan,
            "style_change": style[-1] - style[0] if style else math.nan, "early_slope": slope,
            "accuracy_start": acc[0]["accuracy"] if acc else math.nan,
            "accuracy_end": acc[-1]["accuracy"] if acc else math.nan,
            "accuracy_change": acc[-1]["accuracy"] - acc[0]["accuracy"] if acc else math.nan,
            "predicted_slope": pred[0], "predicted_low": pred[1], "predicted_high": pred[2]}


def read_check_runs(cfg: dict, res: Path, flags: dict) -> dict[tuple[str, str, str, int], list[dict]]:
    out = {}
    for model, cells_ in flags.items():
        for c in cells_:
            for arm in cfgmod.MECHANISM_ARMS:
                for seed in cfg["audit"]["mechanism"]["check"]["seeds"]:
                    p = paths.under(res, paths.MECHANISM_CHECK_METRICS, model=model, cell=c["cell"], arm=arm,
                                    seed=seed)
                    if p.exists():
                        out[(model, c["cell"], arm, seed)] = list(io.iter_jsonl(p))
    return out


def plot_checks(runs: dict, cells: pd.DataFrame, path: Path, *, alpha: float) -> None:
    """Per checked cell: P(code) and accuracy vs step per seed (solid clip, dashed no_clip) and the probe's line."""
    keys = list(dict.fromkeys((m, c) for m, c, _, _ in runs))
    fig, axes = figures.figure(max(1, 2 * len(keys)), 2, (4.8, 3.2))
    fig.suptitle(f"Checking runs vs the probe's prediction (band = {100 * (1 - alpha):g}% CI of the "
                 "first-step drift, extrapolated)", fontsize=9)
    if not keys:
        figures.empty(axes[0], "no checking runs")
    colors = {"clip": "C3", "no_clip": "C0"}
    for i, (model, cell_id) in enumerate(keys):
        ax_s, ax_a = axes[2 * i], axes[2 * i + 1]
        sel = cells[(cells["model"] == model) & (cells["cell"] == cell_id)]
        probe_row = sel.iloc[0] if len(sel) else None
        col = _style_column(None if probe_row is None else probe_row["style_measure"])
        for (m, c, arm, seed), rows in runs.items():
            if (m, c) != (model, cell_id):
                continue
            st = sorted((r for r in rows if r.get(col) is not None), key=lambda r: r["step"])
            ax_s.plot([r["step"] for r in st], [100 * r[col] for r in st], "-" if arm == "clip" else "--",
                      color=colors[arm], lw=1, alpha=0.8, label=f"{arm} seed {seed}")
            ac = sorted((r for r in rows if r.get("step", 0) > 0 and r.get("accuracy") is not None),
                        key=lambda r: r["step"])
            ax_a.plot([r["step"] for r in ac], [100 * r["accuracy"] for r in ac], "-" if arm == "clip" else "--",
                      color=colors[arm], lw=1, alpha=0.8)
            if probe_row is not None and st and seed == min(s for mm, cc, aa, s in runs if (mm, cc, aa) == (m, c, arm)):
                row = check_row(m, c, arm, seed, rows, probe_row)
                xs = np.arange(0, st[-1]["step"] + 1)
                y0 = 100 * st[0][col]
                # a probability: the extrapolated line stops at 0 and 100
                ax_s.plot(xs, np.clip(y0 + 100 * row["predicted_slope"] * xs, 0, 100), ":", color=colors[arm],
                          lw=2, label=f"{arm}: probe prediction")
                ax_s.fill_between(xs, np.clip(y0 + 100 * row["predicted_low"] * xs, 0, 100),
                                  np.clip(y0 + 100 * row["predicted_high"] * xs, 0, 100), color=colors[arm],
                                  alpha=0.12)
        label = "P(first token opens code) %" if col == "p_code" else "rollouts mentioning python %"
        ax_s.set(xlabel="rollout step", ylabel=label)
        ax_s.set_title(f"{model}, {cell_id}: style", fontsize=8)
        ax_a.set(xlabel="rollout step", ylabel="rollout accuracy %")
        ax_a.set_title(f"{model}, {cell_id}: accuracy", fontsize=8)
        ax_s.legend(fontsize=5, ncol=2)
    figures.save(fig, path)


def check_paragraphs(table: pd.DataFrame, *, n_boot: int, seed: int, alpha: float) -> list[str]:
    """Per checked cell: the probe's predicted drift against the runs' early slope and final change, per arm."""
    level = f"{100 * (1 - alpha):g}%"
    out = []
    for (model, cell_id), g in table.groupby(["model", "cell"], sort=False):
        parts = []
        for arm, a in g.groupby("arm", sort=False):
            slope = a["early_slope"].to_numpy(float)
            change = a["style_change"].to_numpy(float)
            acc = a["accuracy_change"].to_numpy(float)
            ci_s = stats.mean_ci(slope, n_boot, seed, alpha) if len(slope) > 1 else None
            pr = a.iloc[0]
            agree = int((np.sign(slope) == np.sign(pr["predicted_slope"])).sum())
            parts.append(
                f"{arm}: the probe predicts {100 * pr['predicted_slope']:+.2f} pp/step "
                f"[{100 * pr['predicted_low']:+.2f}, {100 * pr['predicted_high']:+.2f}]; the runs' slope over "
                f"their first 5 steps is {100 * np.nanmean(slope):+.2f} pp/step"
                + (f" [{100 * ci_s.low:+.2f}, {100 * ci_s.high:+.2f}] over {len(slope)} seeds" if ci_s else "")
                + f" (same sign in {agree} of {len(slope)} seeds), P(code) changes by "
                f"{', '.join(f'{100 * x:+.1f}' for x in change)} pp by the end and accuracy by "
                f"{', '.join(f'{100 * x:+.1f}' for x in acc)} pp")
        out.append(f"**{model}, `{cell_id}`** ({level} CIs): " + "; ".join(parts) + ".")
    return out


def write_checks(cfg: dict, res: Path, out: Path, *, n_boot: int = 2000) -> dict[str, Path]:
    """The checking runs' table, figure and paragraphs (``paths.MECHANISM_CHECKS``)."""
    alpha = float(cfg["audit"]["verdict"]["alpha"])
    seed = int(cfg["audit"]["clip_probe"]["seed"])
    outs = {k: Path(out) / v for k, v in paths.MECHANISM_CHECKS.items()}
    flags_path = paths.under(res, paths.MECHANISM["flagged"])
    flags = json.loads(flags_path.read_text()) if flags_path.exists() else {}
    cells = read_cells(cfg, res)
    runs = read_check_runs(cfg, res, flags)
    rows = []
    for (model, cell_id, arm, s), metrics in runs.items():
        sel = cells[(cells["model"] == model) & (cells["cell"] == cell_id)]
        rows.append(check_row(model, cell_id, arm, s, metrics, sel.iloc[0] if len(sel) else None))
    table = pd.DataFrame(rows, columns=CHECK_COLUMNS)
    with io.atomic_output(outs["table"]) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    plot_checks(runs, cells, outs["figure"], alpha=alpha)
    text = "\n\n".join(check_paragraphs(table, n_boot=n_boot, seed=seed, alpha=alpha)) or "_No checking runs._"
    with io.atomic_output(outs["report"]) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")
    return outs
