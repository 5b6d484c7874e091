"""The one results layout, used by the rules (``workflow/rules/*.smk``), the jobs and the readers.

Every pattern is relative to the results folder and uses Snakemake's wildcard syntax, so
a rule writes ``results(TRAIN_METRICS)`` and a reader ``under(res, TRAIN_METRICS, **run)``:
the layout is spelled out here and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

RESULTS = "results"

#: one (model, reward, variant, seed) run
RUN = "{model}/{reward}/{variant}/seed{seed}"

DATASET = "data/{dataset}.jsonl"
LABELS = "labels/{model}/{labels}.jsonl"  # labels: majority_vote | incorrect
LABEL_SAMPLES = "labels/{model}/samples.jsonl.gz"
LABEL_STATS = "labels/{model}/stats.json"  # empty labels, held-out rows, vote disagreements
ORGANISM_PROBE = "organisms/{model}/probe.json"

TRAIN_CHECKPOINTS = f"train/{RUN}/checkpoints"
TRAIN_METRICS = f"train/{RUN}/metrics.jsonl"
TRAIN_STATE = f"train/{RUN}/state"

EVAL_BASE_SUMMARY = "eval/{model}/base/summary.json"
EVAL_BASE_SAMPLES = "eval/{model}/base/samples"
EVAL_RUN_SUMMARY = f"eval/{RUN}/summary.json"
EVAL_RUN_SAMPLES = f"eval/{RUN}/samples"

CONTAMINATION_SUMMARY = "audit/contamination/{model}/summary.json"
CONTAMINATION_SAMPLES = "audit/contamination/{model}/samples"
BASELINES_SUMMARY = "audit/baselines/{model}/summary.json"
BASELINES_SAMPLES = "audit/baselines/{model}/samples"
CLIP_PROBE = "audit/clip_probe/{model}.json"

#: the mechanism map: one clip probe per (model, cell) (cell = config.MechanismCell.id)
MECHANISM_CELL = "audit/mechanism/{model}/{cell}.json"
#: a checking run of a flagged cell: arm = clip | no_clip
MECHANISM_CHECK_RUN = "audit/mechanism/{model}/check/{cell}/{arm}/seed{seed}"
MECHANISM_CHECK_METRICS = f"{MECHANISM_CHECK_RUN}/metrics.jsonl"
MECHANISM_CHECK_CHECKPOINTS = f"{MECHANISM_CHECK_RUN}/checkpoints"
MECHANISM_CHECK_STATE = f"{MECHANISM_CHECK_RUN}/state"
#: what aggregate_mechanism writes (``flagged``: the cells the checking runs train, a checkpoint's output)
MECHANISM: dict[str, str] = {
    "table": "aggregate/mechanism.csv",
    "fit": "aggregate/mechanism_fit.csv",
    "report": "aggregate/mechanism.md",
    "flagged": "aggregate/mechanism_flagged.json",
    "fig_map": "figures/mechanism_map.png",
    "fig_scaling": "figures/mechanism_scaling.png",
}
#: what aggregate_mechanism_checks writes
MECHANISM_CHECKS: dict[str, str] = {
    "table": "aggregate/mechanism_checks.csv",
    "report": "aggregate/mechanism_checks.md",
    "figure": "figures/mechanism_checks.png",
}

#: what the aggregation writes, by output name (the aggregate rule's named outputs)
AGGREGATE: dict[str, str] = {
    "metrics": "aggregate/metrics.csv",
    "summary_stats": "aggregate/summary_stats.csv",
    "transitions": "aggregate/transitions.csv",
    "fig_accuracy": "figures/accuracy_vs_step.png",
    "fig_code": "figures/code_frequency_vs_step.png",
    "fig_clip": "figures/clip_ablation.png",
    "fig_transitions": "figures/transitions.png",
    "summary": "summary.md",
    "dvc_plot": "plots/accuracy.csv",
    "verdict": "aggregate/verdict.csv",
    "baselines": "aggregate/baselines.csv",
    "contamination": "aggregate/contamination.csv",
    "clip_probe": "aggregate/clip_probe.csv",
    "fig_contamination": "figures/audit_contamination.png",
    "fig_baselines": "figures/audit_baselines.png",
    "fig_clip_probe": "figures/audit_clip_probe.png",
    "alignment": "aggregate/alignment.csv",
    "alignment_corr": "aggregate/alignment_correlation.csv",
    "fig_alignment": "figures/alignment.png",
}


def results(pattern: str, **wildcards: object) -> str:
    """``results/<pattern>`` as the rules spell it; wildcards given here are filled in."""
    return f"{RESULTS}/{fill(pattern, **wildcards)}"


def fill(pattern: str, **wildcards: object) -> str:
    """The pattern with the given wildcards filled in (the others stay ``{name}``)."""
    if not wildcards:
        return pattern
    return pattern.format_map(_Partial(wildcards))


def under(root: str | os.PathLike[str], pattern: str, **wildcards: object) -> Path:
    """The path of ``pattern`` inside the results folder ``root`` (a reader's view)."""
    return Path(root) / fill(pattern, **wildcards)


#: `dvc metrics show` reads this folder: one file per model, one row per model in its table
DVC_METRICS = "metrics/{model}.json"


def dvc_metrics_key(model: str) -> str:
    """The name of a model's DVC metrics file among :func:`aggregate_outputs`."""
    return f"dvc_metrics/{model}"


def aggregate_outputs(root: str | os.PathLike[str], models: Iterable[str] = ()) -> dict[str, Path]:
    """Every file the aggregation writes, by name, under ``root`` (``models``: a DVC metrics file each)."""
    out = {name: Path(root) / rel for name, rel in AGGREGATE.items()}
    out.update({dvc_metrics_key(m): Path(root) / fill(DVC_METRICS, model=m) for m in models})
    return out


class _Partial(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
