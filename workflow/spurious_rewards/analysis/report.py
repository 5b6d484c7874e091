"""results/summary.md, rendered from a Jinja2 template over tables prepared here.

Why a template: the summary's prose and layout live in one file
(``templates/summary.md.jinja``) that reads like the output, and every number
in it comes from a small pure function below, one per section, that turns the
aggregation's frames (:class:`aggregate.StatIndex`, the transitions, the audit
tables) into plain rows of formatted cells. The functions take no paths but the
figure links and write nothing; :func:`write_summary` renders and writes.

The "Findings in plain words" section (:func:`findings`) is the only prose made
from data: one paragraph per model naming each reward's gain on the main
benchmark, its CI and what the paper reported for the paper model the study's
model stands for, and one per reward where a sampled and a greedy benchmark of
the same problems disagree in sign, with the measured style shift that explains
it. Every judgement there is a CI against 0 (the same CIs the tables show), never
a fixed number of points.
"""

from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import pandas as pd

from .. import config as cfgmod
from .. import io, provenance
from . import classify
from . import markdown as md

if TYPE_CHECKING:
    from .aggregate import StatIndex

__all__ = [
    "PAPER_ANALOGUES",
    "Table",
    "ablation_table",
    "audit_section",
    "mechanism_section",
    "base_models_table",
    "every_benchmark_table",
    "figures_section",
    "findings",
    "gains_table",
    "provenance_lines",
    "render",
    "transitions_table",
    "write_summary",
]

TEMPLATE = "summary.md.jinja"
PAPER_ANALOGUES = Path(__file__).resolve().parent.parent / "resources" / "paper_analogues.csv"
BASE = "base"
TRAIN = "train"
# the paper's outcome names, by the side of 0 the whole CI lies on
GAIN, LOSS, NONE = "a gain", "a loss", "no clear change"
SWITCHED = ("Code→Lang", "Lang→Code")
KEPT = ("Code→Code", "Lang→Lang")

Table = dict  # {"header": [str, ...], "rows": [[str, ...], ...]}: what the template's table macro draws


def _table(header: list[str], rows: list[list[str]]) -> Table:
    return {"header": header, "rows": rows}


def _family(cfg: dict, model: str) -> str:
    return cfg["models"][model].get("family") or model


def _label(reward: str, variant: str) -> str:
    return reward if variant == "clip" else f"{reward} ({variant})"


def _rel(path: Path, here: Path) -> str:
    return Path(os.path.relpath(path, here)).as_posix()


# ----------------------------------------------------------------------------- the study's tables


def _paper_cell(paper: pd.DataFrame, model: str, reward: str, benchmark: str) -> list[str]:
    rows = paper[(paper["model"] == model) & (paper["reward"] == reward) & (paper["benchmark"] == benchmark)]
    if rows.empty:
        return ["–", "–"]
    base = "; ".join(sorted({f"{b:.1f}" for b in rows["base"].dropna()})) or "–"
    gains = "; ".join(f"{g:+.1f} ({src}, step {int(s)})" for g, src, s in
                      zip(rows["gain"], rows["source"], rows["step"], strict=True))
    return [base, gains]


def gains_table(ix: StatIndex, cfg: dict, paper: pd.DataFrame | None, level: str) -> Table:
    """The first table: each reward (main variant) on the main benchmark at its final step."""
    main = next(iter(cfg["benchmarks"]))
    header = ["Model", "Family", "Reward", "Base", "After (mean ± sd)", f"Gain [{level} CI]",
              "Code freq. before → after", "Seeds"]
    if paper is not None:
        header += ["Paper base", "Paper gain (source)"]
    rows = []
    for model in cfg["models"]:
        for reward, rspec in cfg["rewards"].items():
            v = cfgmod.main_variant(rspec)
            step = ix.final_step(model, reward, v, main)
            if step is None:
                continue
            acc = ix.at(model, reward, v, main, "accuracy", step)
            base = ix.at(model, reward, v, main, "accuracy", 0)
            code0 = ix.at(model, reward, v, main, "code_frequency", 0)
            code1 = ix.at(model, reward, v, main, "code_frequency", step)
            sd = "" if acc is None or math.isnan(acc["sd"]) else f" ± {acc['sd'] * 100:.1f}"
            row = [model, _family(cfg, model), _label(reward, v),
                   md.pct(base["mean"]) if base is not None else "–",
                   (md.pct(acc["mean"]) + sd) if acc is not None else "–",
                   md.gain_cell(ix.at(model, reward, v, main, "gain", step)),
                   f"{md.pct(code0['mean']) if code0 is not None else '–'} → "
                   f"{md.pct(code1['mean']) if code1 is not None else '–'}",
                   str(int(acc["n_seeds"])) if acc is not None else "0"]
            if paper is not None:
                row += _paper_cell(paper, model, reward, main)
            rows.append(row)
    return _table(header, rows)


def every_benchmark_table(ix: StatIndex, cfg: dict) -> Table | None:
    """Every (model, reward, variant)'s final gain on every benchmark; None with a single benchmark."""
    benches = list(cfg["benchmarks"])
    if len(benches) < 2:
        return None
    rows = []
    for model in cfg["models"]:
        for reward, rspec in cfg["rewards"].items():
            for v in rspec["variants"]:
                cells = []
                for b in benches:
                    step = ix.final_step(model, reward, v, b)
                    cells.append(md.gain_cell(ix.at(model, reward, v, b, "gain", step)) if step else "–")
                if any(c != "–" for c in cells):
                    rows.append([model, reward, v, *cells])
    return _table(["Model", "Reward", "Variant", *benches], rows)


def ablation_table(ix: StatIndex, cfg: dict, level: str) -> Table | None:
    """Rewards trained under several clipping variants; None when the config has none."""
    main = next(iter(cfg["benchmarks"]))
    ablation = [r for r, spec in cfg["rewards"].items() if len(spec["variants"]) > 1]
    if not ablation:
        return None
    rows = []
    for model in cfg["models"]:
        for reward in ablation:
            for v in cfg["rewards"][reward]["variants"]:
                step = ix.final_step(model, reward, v, main)
                if step is None:
                    continue
                code1 = ix.at(model, reward, v, main, "code_frequency", step)
                p = ix.series(model, reward, v, TRAIN, "p_code")
                rows.append([model, reward, v, md.gain_cell(ix.at(model, reward, v, main, "gain", step)),
                             md.pct(code1["mean"]) if code1 is not None else "–",
                             f"{md.pct(p['mean'].iloc[0])} → {md.pct(p['mean'].iloc[-1])}" if len(p) else "–"])
    return _table(["Model", "Reward", "Variant", f"Gain [{level} CI]", "Code freq. after", "p_code start → end"],
                  rows)


def base_models_table(ix: StatIndex, cfg: dict) -> Table:
    """The paper's Table 1: each base model's code frequency and accuracy by style."""
    main = next(iter(cfg["benchmarks"]))
    rows = []
    for model in cfg["models"]:
        vals = [ix.base(model, main, m) for m in ("code_frequency", "accuracy_code", "accuracy_language", "accuracy")]
        if vals[-1] is not None:
            rows.append([model, _family(cfg, model), *[md.pct(v["mean"]) if v is not None else "–" for v in vals]])
    return _table(["Model", "Family", "Code freq.", "Acc. with code", "Acc. language only", "Acc."], rows)


def _mean_transitions(trans: pd.DataFrame, benchmark: str) -> pd.DataFrame:
    return trans[(trans["scope"] == "mean") & (trans["benchmark"] == benchmark)] if len(trans) else trans


def _cell_transitions(tm: pd.DataFrame, model: str, reward: str, variant: str) -> pd.DataFrame:
    if not len(tm):
        return tm
    return tm[(tm["model"] == model) & (tm["reward"] == reward) & (tm["variant"] == variant)]


def transitions_table(trans: pd.DataFrame, cfg: dict) -> Table:
    """Code/Lang transitions on the main benchmark, mean over seeds, one row per (model, reward)."""
    tm = _mean_transitions(trans, next(iter(cfg["benchmarks"])))
    # each cell's rows, cut once: a mask per cell and group cost seconds at paper scale
    cells_of = dict(list(tm.groupby(["model", "reward", "variant"], sort=False))) if len(tm) else {}
    rows = []
    for model in cfg["models"]:
        for reward, rspec in cfg["rewards"].items():
            sub = cells_of.get((model, reward, cfgmod.main_variant(rspec)))
            if sub is None or sub.empty:
                continue
            first: dict[str, dict] = {}
            for r in sub.to_dict("records"):
                first.setdefault(r["group"], r)  # a group's first row
            cells = []
            for g in classify.GROUPS:
                r = first[g]
                c = "–" if pd.isna(r["contribution"]) else f"{round(r['contribution'] * 100) + 0}%"
                cells.append(f"{r['n']:.0f} · {r['delta_pp']:+.1f} pp · C={c}")
            rows.append([model, reward, *cells, f"{sub['delta_pp'].sum():+.1f}"])
    return _table(["Model", "Reward", *classify.GROUPS, "Total (pp)"], rows)


# ----------------------------------------------------------------------------- the audit section


def _pp(x, signed: bool = True) -> str:
    return md.pct(None if x is None or pd.isna(x) else float(x), signed)


def _gain(row: pd.Series, key: str) -> str:
    if pd.isna(row[key]):
        return "–"
    return f"{_pp(row[key])} [{_pp(row[key + '_low'])}, {_pp(row[key + '_high'])}]"


def _ci_cell(by: pd.DataFrame, metric: str, signed: bool = True) -> str:
    """``mean [low, high]`` in pp of one metric row of a table indexed by metric."""
    if metric not in by.index:
        return "–"
    r = by.loc[metric]
    return f"{_pp(r['mean'], signed)} [{_pp(r['ci_low'], signed)}, {_pp(r['ci_high'], signed)}]"


def _verdict_rows(cfg: dict, verdicts: pd.DataFrame) -> list[list[str]]:
    rows = []
    for model in cfg["models"]:
        for reward, rspec in cfg["rewards"].items():
            v = cfgmod.main_variant(rspec)
            sub = verdicts[(verdicts["model"] == model) & (verdicts["reward"] == reward) & (verdicts["variant"] == v)]
            if sub.empty:
                continue
            r = sub.iloc[0]
            best = f" ({r['best_template']})" if isinstance(r["best_template"], str) else ""
            rows.append([model, _label(reward, v), _gain(r, "gain_paper"), _gain(r, "gain_best") + best,
                         _gain(r, "gain_clean"), f"**{r['verdict']}**", r["reason"], str(int(r["n_seeds"]))])
    return rows


def _baseline_rows(cfg: dict, baselines: pd.DataFrame) -> list[list[str]]:
    templates = cfg["audit"]["baselines"]["templates"]
    rows = []
    for model in cfg["models"]:
        for bench in cfgmod.baseline_benchmarks(cfg):
            sub = baselines[(baselines["model"] == model) & (baselines["benchmark"] == bench)]
            if sub.empty:
                continue
            cells = []
            for t in templates:
                r = sub[sub["template"] == t]
                if r.empty or not bool(r.iloc[0]["available"]):
                    cells.append("–")
                    continue
                r = r.iloc[0]
                c = f"{_pp(r['accuracy'], False)} [{_pp(r['ci_low'], False)}, {_pp(r['ci_high'], False)}]"
                c = f"**{c}**" if pd.notna(r["best"]) and bool(r["best"]) else c
                cells.append(f"_{c}_" if bool(r["paper_template"]) else c)
            rows.append([model, bench, *cells])
    return rows


def _contamination_rows(contamination: pd.DataFrame) -> list[list[str]]:
    rows = []
    for (model, dataset), sub in contamination.groupby(["model", "dataset"], sort=False):
        by = sub.set_index("metric")
        rows.append([model, dataset + (" (clean)" if bool(sub["clean"].iloc[0]) else ""),
                     str(int(sub["problems"].iloc[0])),
                     *(_ci_cell(by, m, signed=False) for m in ("exact", "rouge_l", "correct"))])
    return rows


def _probe_rows(probe: pd.DataFrame) -> list[list[str]]:
    rows = []
    for model, sub in probe.groupby("model", sort=False):
        for variant, s in sub.groupby("variant", sort=False):
            by = s.set_index("metric")
            clip = by.loc["clip_fraction"]["mean"] if "clip_fraction" in by.index else None
            rows.append([model, str(s["dominant_style"].iloc[0]), variant, _ci_cell(by, "d_p_dominant"),
                         _ci_cell(by, "d_accuracy"), "–" if clip is None else f"{clip * 100:.2f}%"])
    return rows


def audit_section(cfg: dict, verdicts: pd.DataFrame, baselines: pd.DataFrame, contamination: pd.DataFrame,
                  probe: pd.DataFrame, paths: dict[str, Path], here: Path) -> dict:
    """The "Is the gain real?" section: the verdict, baselines, contamination and probe tables, figure links."""
    clean = cfg["audit"]["clean"]
    templates = cfg["audit"]["baselines"]["templates"]
    return {
        "main": cfgmod.verdict_benchmark(cfg),
        "clean": ", ".join(f"`{c}`" for c in clean) or "none configured",
        "fraction": f"{cfg['audit']['contamination']['fraction']:.0%}",
        "probe_setup": cfg["audit"]["clip_probe"],
        "verdicts": _table(["Model", "Reward", "vs paper baseline", "vs best baseline (template)",
                            "Clean benchmarks", "Verdict", "Why", "Seeds"], _verdict_rows(cfg, verdicts)),
        "baselines": _table(["Model", "Benchmark", *templates], _baseline_rows(cfg, baselines)),
        "contamination": _table(["Model", "Dataset", "Problems", "Exact match %", "ROUGE-L ×100",
                                 "Partial acc. %"], _contamination_rows(contamination)),
        "probe": _table(["Model", "Dominant style", "Variant", "Δ P(dominant) pp", "Δ accuracy pp",
                         "Clipped tokens"], _probe_rows(probe)),
        "figures": [{"title": title, "path": _rel(paths[key], here)} for key, title in (
            ("fig_contamination", "Contamination audit"), ("fig_baselines", "Prompt-robust baselines"),
            ("fig_clip_probe", "Clipping-bias probe"))],
        "tables": [_rel(paths[k], here) for k in ("verdict", "baselines", "contamination", "clip_probe")],
    }


def mechanism_section(cfg: dict, res: Path, out: Path, here: Path) -> dict | None:
    """The mechanism map's paragraphs and figures (written by aggregate_mechanism), or None when it is off.

    The text is read from the map's report (``paths.MECHANISM["report"]``, and the checking runs'
    from ``paths.MECHANISM_CHECKS["report"]``) under the results folder ``res``; the figure links
    point at ``out``'s figures, relative to ``here`` (the summary's folder).
    """
    from .. import paths

    if not cfgmod.mechanism_models(cfg):
        return None
    m = cfg["audit"]["mechanism"]

    def text(rel: str, missing: str) -> str:
        p = paths.under(res, rel)
        return p.read_text(encoding="utf-8").strip() if p.exists() else missing

    checks = None
    if m["check"]["enabled"] and paths.under(res, paths.MECHANISM_CHECKS["report"]).exists():
        checks = {"text": text(paths.MECHANISM_CHECKS["report"], "_Checking runs not run yet._"),
                  "figure": _rel(out / paths.MECHANISM_CHECKS["figure"], here),
                  "steps": m["check"]["steps"], "seeds": ", ".join(map(str, m["check"]["seeds"]))}
    ran = paths.under(res, paths.MECHANISM["report"]).exists()  # no links to figures that are not there
    return {
        "text": text(paths.MECHANISM["report"], "_Mechanism map not run yet (target mechanism_all)._"),
        "cells": len(cfgmod.mechanism_cells(cfg)),
        "draws": m["draws"] or cfg["audit"]["clip_probe"]["draws"],
        "figures": [{"title": title, "path": _rel(out / paths.MECHANISM[key], here)} for key, title in (
            ("fig_map", "Mechanism map"), ("fig_scaling", "Bias vs clipped fraction"))] if ran else [],
        "tables": [_rel(out / paths.MECHANISM[k], here) for k in ("table", "fit")] if ran else [],
        "checks": checks,
    }


# ----------------------------------------------------------------------------- figures and provenance


def figures_section(cfg: dict, paths: dict[str, Path], here: Path) -> dict:
    main = next(iter(cfg["benchmarks"]))
    return {
        "figures": [{"title": title, "path": _rel(paths[key], here)} for key, title in (
            ("fig_accuracy", f"Accuracy on {main} vs. training step"),
            ("fig_code", f"Code frequency on {main} vs. training step"),
            ("fig_clip", "Clipping ablation"), ("fig_transitions", "Code/Lang transitions"))],
        "tables": [_rel(paths[k], here) for k in ("metrics", "summary_stats", "transitions")],
    }


def provenance_lines(cfg: dict, prov: dict, *, n_boot: int, seed: int, alpha: float,
                     found: dict[str, int]) -> list[str]:
    """The Provenance bullets; ``prov`` is :func:`provenance.record`'s dict."""
    return [
        f"config hash: `{cfgmod.config_hash(cfg)}` (study `{cfg.get('study', 'organism')}`, "
        f"backend `{cfg.get('backend', '?')}`)",
        f"git commit: `{prov['git_commit'] or 'unavailable (not a git checkout)'}`"
        + (" (with uncommitted changes)" if prov["git_dirty"] else ""),
        "packages: " + ", ".join(f"{p} {v}" for p, v in prov["packages"].items() if v) + f", python {prov['python']}",
        f"training seeds: {', '.join(map(str, cfg['seeds']))}; bootstrap: {n_boot} draws, seed {seed}, alpha {alpha}",
        f"inputs found: {found['base']}/{len(cfg['models'])} base evaluations, {found['runs']}/{found['expected']} "
        f"run evaluations, {found['train']}/{found['expected']} training logs",
    ]


# ----------------------------------------------------------------------------- findings in plain words


@cache
def load_paper_analogues(path: str | os.PathLike[str] = PAPER_ANALOGUES) -> dict[str, str]:
    """family -> the paper model whose reported numbers stand for it (paper families and the toys' analogues)."""
    df = pd.read_csv(path, comment="#")
    missing = {"family", "paper_model"} - set(df.columns)
    if missing:
        raise io.DataError(path, f"missing columns {sorted(missing)}")
    return dict(zip(df["family"], df["paper_model"], strict=True))


def _paper_model(cfg: dict, model: str, paper: pd.DataFrame, analogues: dict[str, str]) -> str | None:
    """The model itself when the paper reports it, else its family's paper model, else None."""
    if (paper["model"] == model).any():
        return model
    cand = analogues.get(_family(cfg, model))
    return cand if cand is not None and (paper["model"] == cand).any() else None


def _paper_gain(paper: pd.DataFrame, paper_model: str | None, reward: str) -> float | None:
    """The paper's gain (pp) for ``reward``: its first listed source (Fig. 1, which covers every paper model)."""
    if paper_model is None:
        return None
    rows = paper[(paper["model"] == paper_model) & (paper["reward"] == reward)]
    return float(rows["gain"].iloc[0]) if len(rows) else None


def outcome(row: pd.Series | dict | None) -> str | None:
    """a gain / a loss / no clear change, from which side of 0 the whole CI lies on (None without a CI)."""
    if row is None or pd.isna(row["ci_low"]) or pd.isna(row["ci_high"]):
        return None
    if row["ci_low"] > 0:
        return GAIN
    if row["ci_high"] < 0:
        return LOSS
    return NONE


def _gain_words(row: pd.Series) -> str:
    return f"{md.pct(row['mean'], True)} pp [{md.pct(row['ci_low'], True)}, {md.pct(row['ci_high'], True)}]"


def _reward_kind(spec: dict) -> str:
    """ground truth, spurious (random, format-only, incorrect labels: the paper's three) or other."""
    name, labels = str(spec["spec"]), spec.get("labels", "true_labels")
    if labels == "incorrect" or name.startswith("random") or name == "format":
        return "spurious"
    return "ground truth" if name == "ground_truth" and labels == "true_labels" else "other"


def _count(outcomes: list[str]) -> str:
    """``1 gain, 2 with no clear change, 1 loss`` (zero counts left out)."""
    words = {GAIN: ("gain", "gains"), NONE: ("with no clear change", "with no clear change"),
             LOSS: ("loss", "losses")}
    return ", ".join(f"{n} {words[o][n != 1]}" for o in (GAIN, NONE, LOSS) if (n := outcomes.count(o)))


def _paper_direction(gains: list[float]) -> str:
    """The paper's numbers for a set of rewards in words: ``a gain for all 3 (+16.4 to +24.6 pp)``."""
    lo, hi = min(gains), max(gains)
    span = f"{lo:+.1f} pp" if len(gains) == 1 else f"{lo:+.1f} to {hi:+.1f} pp"
    if len(gains) == 1:
        word = GAIN if lo > 0 else LOSS if lo < 0 else NONE
        return f"{word} ({span})"
    if lo > 0:
        return f"a gain for all {len(gains)} ({span})"
    if hi < 0:
        return f"a loss for all {len(gains)} ({span})"
    if hi <= 0:
        return f"no gain for any of them ({span})"
    if lo >= 0:
        return f"no loss for any of them ({span})"
    return f"gains and losses ({span})"


def _model_paragraph(ix: StatIndex, cfg: dict, model: str, paper: pd.DataFrame | None,
                     analogues: dict[str, str]) -> dict | None:
    """One model's findings: each reward's final gain on the main benchmark, its CI side, the paper's number."""
    main = next(iter(cfg["benchmarks"]))
    pm = _paper_model(cfg, model, paper, analogues) if paper is not None else None
    parts, steps = [], set()
    spurious: list[tuple[str, str, float | None]] = []  # (label, outcome, paper gain)
    outcomes: dict[str, str | None] = {}
    for reward, rspec in cfg["rewards"].items():
        v = cfgmod.main_variant(rspec)
        step = ix.final_step(model, reward, v, main)
        row = ix.at(model, reward, v, main, "gain", step) if step is not None else None
        if row is None or pd.isna(row["mean"]):
            continue
        steps.add(step)
        label = f"{reward} ({v})" if len(rspec["variants"]) > 1 else reward
        out = outcomes[reward] = outcome(row)
        text = f"{label}: " + (f"{_gain_words(row)}, {out}" if out else f"{md.pct(row['mean'], True)} pp (no CI)")
        pg = _paper_gain(paper, pm, reward) if pm is not None else None
        if pg is not None:
            text += f" (paper: {pg:+.1f} pp)"
        parts.append(text)
        if _reward_kind(rspec) == "spurious" and out:
            spurious.append((label, out, pg))
    if not parts:
        return None
    base = ix.base(model, main, "accuracy")
    head = f"**{model}** (family {_family(cfg, model)}"
    if pm is not None:
        head += "; the paper's numbers are its own" if pm == model else f"; compared with the paper's {pm}"
    head += ")"
    after = f" after {steps.pop()} steps" if len(steps) == 1 else ""
    base_words = f" from a base accuracy of {md.pct(base['mean'])}%" if base is not None else ""
    text = f"{head}, gain on `{main}`{after}{base_words}: " + "; ".join(parts) + "."
    if len(spurious) > 1:
        names = ", ".join(lab for lab, _, _ in spurious)
        text += f" Spurious rewards ({names}): {_count([o for _, o, _ in spurious])}"
        known = [g for _, _, g in spurious if g is not None]
        if len(known) == len(spurious):
            text += f", where the paper reports {_paper_direction(known)}"
        text += "."
    return {"model": model, "text": text, "outcomes": outcomes}


def _style_split(tm: pd.DataFrame, model: str, reward: str, variant: str) -> tuple[float, float, float] | None:
    """(pp from problems that switched style, pp from problems that kept it, share that switched)."""
    sub = _cell_transitions(tm, model, reward, variant)
    if sub.empty:
        return None
    sw = sub[sub["group"].isin(SWITCHED)]
    kept = sub[sub["group"].isin(KEPT)]
    return float(sw["delta_pp"].sum()), float(kept["delta_pp"].sum()), float(sw["share"].sum())


def _sampled_greedy_pairs(cfg: dict) -> list[tuple[str, str]]:
    """(sampled, greedy) benchmark pairs on the same dataset: temperature > 0 against temperature 0."""
    benches = cfg["benchmarks"]
    return [(s, g) for s, bs in benches.items() for g, bg in benches.items()
            if bs["dataset"] == bg["dataset"] and float(bs["temperature"]) > 0 and float(bg["temperature"]) == 0]


def _style_facts(ix: StatIndex, trans: pd.DataFrame, model: str, reward: str, variant: str,
                 benchmark: str) -> tuple[str, tuple[float, float, float] | None]:
    """How the style mix moved on one benchmark, in words, and the transitions' (switched, kept, share)."""
    st = ix.final_step(model, reward, variant, benchmark)
    c0 = ix.at(model, reward, variant, benchmark, "code_frequency", 0)
    c1 = ix.at(model, reward, variant, benchmark, "code_frequency", st)
    split = _style_split(_mean_transitions(trans, benchmark), model, reward, variant)
    words = []
    if c0 is not None and c1 is not None:
        words.append(f"code-style answers {md.pct(c0['mean'])}% → {md.pct(c1['mean'])}%")
    if split is not None:
        sw, kept, share = split
        if share > 0:
            words.append(f"the {md.pct(share)}% of problems whose first answer switched style changed the "
                         f"accuracy by {sw:+.1f} pp, those that kept their style by {kept:+.1f} pp")
        else:
            words.append(f"no problem's first answer switched style, and the accuracy changed by {kept:+.1f} pp")
    return "; ".join(words), split


def _disagreement(ix: StatIndex, trans: pd.DataFrame, cfg: dict, model: str, reward: str, variant: str,
                  sampled: str, greedy: str) -> str | None:
    """A paragraph when a sampled and a greedy benchmark's CIs lie on opposite sides of 0, with the measured
    style shift on each that explains it (None when they do not disagree)."""
    rows = {}
    for b in (sampled, greedy):
        st = ix.final_step(model, reward, variant, b)
        rows[b] = ix.at(model, reward, variant, b, "gain", st) if st is not None else None
    outs = {b: outcome(r) for b, r in rows.items()}
    if {outs[sampled], outs[greedy]} != {GAIN, LOSS}:
        return None
    t = {b: cfg["benchmarks"][b]["temperature"] for b in (sampled, greedy)}
    text = (f"**{model}, {_label(reward, variant)}: sampled and greedy decoding disagree.** "
            f"{_gain_words(rows[sampled])} on `{sampled}` (T={t[sampled]:g}, {outs[sampled]}) but "
            f"{_gain_words(rows[greedy])} on `{greedy}` (T={t[greedy]:g}, {outs[greedy]}).")
    s_words, s_split = _style_facts(ix, trans, model, reward, variant, sampled)
    g_words, g_split = _style_facts(ix, trans, model, reward, variant, greedy)
    if s_words:
        text += f" Sampled: {s_words}."
    if g_words:
        text += f" Greedy: {g_words}."
    if s_split is not None and g_split is not None:
        gs, gg = rows[sampled]["mean"], rows[greedy]["mean"]
        # what the numbers above support, checked rather than assumed: under sampling the change is carried
        # by problems that switched style, under greedy decoding by those that kept it, and fewer switched
        if (s_split[0] * gs > 0 and abs(s_split[0]) > abs(s_split[1]) and g_split[1] * gg > 0
                and abs(g_split[1]) > abs(g_split[0]) and g_split[2] < s_split[2]):
            text += (" So the sampled change comes from training moving the choice of style, which greedy "
                     "decoding, taking each problem's likelier first token, mostly did not see; what the greedy "
                     "benchmark measured is the change within the style each problem already had.")
    return text


def findings(ix: StatIndex, trans: pd.DataFrame, cfg: dict, paper: pd.DataFrame | None,
             analogues: dict[str, str] | None = None) -> dict:
    """The plain-words findings: a paragraph per model, one per sampled/greedy sign disagreement."""
    if analogues is None:
        analogues = load_paper_analogues()
    models = [p for m in cfg["models"] if (p := _model_paragraph(ix, cfg, m, paper, analogues)) is not None]
    disagreements = []
    for model in cfg["models"]:
        for reward, rspec in cfg["rewards"].items():
            for sampled, greedy in _sampled_greedy_pairs(cfg):
                d = _disagreement(ix, trans, cfg, model, reward, cfgmod.main_variant(rspec), sampled, greedy)
                if d is not None:
                    disagreements.append(d)
    return {"models": models, "disagreements": disagreements}


# ----------------------------------------------------------------------------- rendering


@cache
def _environment() -> jinja2.Environment:
    # markdown, not HTML: nothing to escape; undefined names fail loudly
    return jinja2.Environment(loader=jinja2.PackageLoader("spurious_rewards.analysis", "templates"),
                              autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              undefined=jinja2.StrictUndefined)


def render(context: dict) -> str:
    """summary.md's text from the template and a context built by :func:`summary_context`."""
    return _environment().get_template(TEMPLATE).render(**context)


def _final_step(ix: StatIndex, main: str) -> int | None:
    st = ix.frame
    ev = st[(st["benchmark"] == main) & (st["metric"] == "accuracy")] if len(st) else st
    return int(ev["step"].max()) if len(ev) and ev["step"].max() > 0 else None


def summary_context(ix: StatIndex, trans: pd.DataFrame, cfg: dict, paths: dict[str, Path], *, audit: dict,
                    n_boot: int, seed: int, alpha: float, paper: pd.DataFrame | None, found: dict[str, int],
                    prov: dict, paper_for_findings: pd.DataFrame | None = None,
                    alignment: dict | None = None, mechanism: dict | None = None) -> dict:
    """Everything the template shows. ``paper`` adds the paper columns (study: paper only);
    ``paper_for_findings`` is what the findings compare with (every study); ``alignment`` is
    :func:`alignment.summary_section`'s paragraph (None: not shown)."""
    main = next(iter(cfg["benchmarks"]))
    level = f"{100 * (1 - alpha):g}%"
    final = _final_step(ix, main)
    here = paths["summary"].parent
    return {
        "study": cfg.get("study", "organism"), "config_hash": cfgmod.config_hash(cfg), "main": main,
        "final": final if final is not None else "–", "seeds": ", ".join(map(str, cfg["seeds"])), "found": found,
        "level": level, "n_boot": n_boot, "paper": paper is not None,
        "findings": findings(ix, trans, cfg, paper_for_findings),
        "alignment": alignment,
        "gains": gains_table(ix, cfg, paper, level),
        "every_benchmark": every_benchmark_table(ix, cfg),
        "ablation": ablation_table(ix, cfg, level),
        "base_models": base_models_table(ix, cfg),
        "transitions": transitions_table(trans, cfg),
        "audit": audit,
        "mechanism": mechanism,
        "figures": figures_section(cfg, paths, here),
        "provenance": provenance_lines(cfg, prov, n_boot=n_boot, seed=seed, alpha=alpha, found=found),
    }


def write_summary(ix: StatIndex, trans: pd.DataFrame, cfg: dict, paths: dict[str, Path], *, audit: dict,
                  n_boot: int, seed: int, alpha: float, paper: pd.DataFrame | None, found: dict[str, int],
                  paper_for_findings: pd.DataFrame | None = None, alignment: dict | None = None,
                  mechanism: dict | None = None) -> None:
    """Render results/summary.md (atomically)."""
    prov = provenance.record(cfgmod.config_hash(cfg), None)
    text = render(summary_context(ix, trans, cfg, paths, audit=audit, n_boot=n_boot, seed=seed, alpha=alpha,
                                  paper=paper, found=found, prov=prov, paper_for_findings=paper_for_findings,
                                  alignment=alignment, mechanism=mechanism))
    with io.atomic_output(paths["summary"]) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
