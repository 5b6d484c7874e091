"""What every training backend shares: the state binding, the metrics row, and publishing.

The contract a backend fulfils (:class:`Backend`): ``run(spec, data_path, state_dir)``
leaves ``state_dir/hf/step_N/`` (Hugging Face checkpoints at the configured rollout
steps) and ``state_dir/metrics.jsonl`` (one :data:`MetricsRow` per rollout step, the
same keys whichever backend wrote it); :func:`publish` then moves them to the declared
outputs atomically.

Why the state is bound to its spec (:func:`bind_state`): ``state/`` survives a rerun
(Snakemake never deletes it) so a killed job resumes from its last checkpoint. A rerun
caused by a *changed* spec (a new learning rate, more steps, another reward) must not
resume the old run's state, or it trains zero or the wrong steps and publishes the old
weights under the new config. The spec's hash is stored in ``state/spec.json``; a state
made by another spec is discarded, with a log line naming what changed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypedDict

from .. import io, provenance

log = logging.getLogger(__name__)

__all__ = [
    "METRICS_KEYS",
    "Backend",
    "MetricsLog",
    "MetricsRow",
    "bind_state",
    "check_rows",
    "publish",
    "spec_changes",
]

#: the file in ``state/`` that records which spec made it
STATE_SPEC = "spec.json"


class Backend(Protocol):
    """A GRPO implementation (TRL on CPU/one GPU, OpenRLHF on GPU nodes)."""

    def __call__(self, spec: dict, *, data_path: Path, state_dir: Path) -> None:
        """Train ``spec`` on ``data_path``; leave ``state_dir/hf/step_N`` and ``state_dir/metrics.jsonl``."""


class MetricsRow(TypedDict, total=False):
    """One rollout step of one run, as both backends write it (``None`` where not measured).

    ``p_code`` is the logit probe of :mod:`spurious_rewards.probes` (the TRL backend at every
    step; OpenRLHF at its checkpoint steps, probed from the saved weights); ``code_frequency``
    and ``accuracy`` (against the true answer) are over the step's rollouts.
    """

    step: int
    reward_mean: float | None
    reward_std: float | None
    accuracy: float | None
    code_frequency: float | None
    accuracy_code: float | None
    accuracy_language: float | None
    clip_fraction: float | None
    clip_fraction_low: float | None
    clip_fraction_high: float | None
    entropy: float | None
    kl: float | None
    response_length: float | None
    grad_norm: float | None
    loss: float | None
    p_code: float | None
    updates: int | None
    wall_time: float | None


#: keys every row of steps 1..N carries (step 0, the base model's probe, has step, p_code, wall_time)
METRICS_KEYS: tuple[str, ...] = (
    "step", "reward_mean", "reward_std", "accuracy", "code_frequency", "clip_fraction", "p_code", "wall_time",
)


def check_rows(rows: Iterable[Mapping[str, Any]], where: str) -> None:
    """Raise when a metrics row of a training step lacks a key of :data:`METRICS_KEYS`."""
    for row in rows:
        if row.get("step", 0) == 0:
            continue
        missing = [k for k in METRICS_KEYS if k not in row]
        if missing:
            raise RuntimeError(f"{where}: step {row.get('step')} has no {', '.join(missing)} (see MetricsRow)")


# ---------------------------------------------------------------------------
# the state binding
# ---------------------------------------------------------------------------


def spec_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two specs (for the discard log line)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in old or k not in new:
                out.append(key)
            else:
                out += spec_changes(old[k], new[k], key)
        return out
    return [] if old == new else [prefix or "<spec>"]


def bind_state(spec: Mapping[str, Any], state_dir: str | os.PathLike[str]) -> bool:
    """Make ``state_dir`` belong to ``spec``; return True when it holds a state to resume.

    A state written for another spec (or by an older version that recorded none) is
    deleted first; a state of this very spec is kept, so a killed job resumes.
    """
    state = Path(state_dir)
    want = provenance.spec_hash(spec)
    record = state / STATE_SPEC
    if state.exists() and any(state.iterdir()):
        old = None
        if record.exists():
            try:
                old = json.loads(record.read_text())
            except ValueError:
                old = None
        if isinstance(old, dict) and old.get("hash") == want:
            log.info("resuming the state in %s (same spec %s)", state, want)
            return True
        if isinstance(old, dict):
            changed = spec_changes(old.get("spec"), spec) or ["<unrecorded>"]
            log.warning("discarding the state in %s: it was made by another spec (changed: %s)",
                        state, ", ".join(changed))
        else:
            log.warning("discarding the state in %s: it records no spec, so it cannot be resumed safely", state)
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    io.write_json({"hash": want, "spec": spec}, record)
    return False


# ---------------------------------------------------------------------------
# metrics and publishing
# ---------------------------------------------------------------------------


class MetricsLog:
    """Per-rollout-step metrics, appended to ``state/metrics.jsonl`` as each step ends.

    On resume the rows past the restored step are dropped, so the file always
    matches the checkpoint it continues from.
    """

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        rows = []
        if path.exists():
            rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        # a fresh start (resume_step < 0) keeps nothing; a resume keeps the rows its checkpoint covers
        rows = [r for r in rows if r["step"] <= resume_step]
        with io.atomic_output(path) as tmp:
            Path(tmp).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    def append(self, row: MetricsRow) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def publish(spec: dict, state_dir: Path, out_checkpoints: Path, out_metrics: Path) -> None:
    """Move the finished run's checkpoints and metrics to the declared outputs, atomically."""
    hf = state_dir / "hf"
    steps = spec["checkpoint_steps"]
    missing = [s for s in steps if not (hf / f"step_{s}").is_dir()]
    if missing:
        raise RuntimeError(f"{state_dir}: run ended without checkpoints for steps {missing}")
    rows = [json.loads(line) for line in (state_dir / "metrics.jsonl").read_text().splitlines() if line]
    if not rows or rows[-1]["step"] != spec["grpo"]["steps"]:
        raise RuntimeError(f"{state_dir}/metrics.jsonl: expected {spec['grpo']['steps']} steps, found {len(rows)}")
    check_rows(rows, f"{state_dir}/metrics.jsonl")
    prov = provenance.record(spec, spec["seed"])
    with io.atomic_output(out_checkpoints) as tmp:
        Path(tmp).mkdir(parents=True)
        for s in steps:
            # hard links: the published checkpoints share their bytes with state/hf (no second copy;
            # `spurious prune` can then drop state/ without touching them)
            shutil.copytree(hf / f"step_{s}", Path(tmp) / f"step_{s}", copy_function=os.link)
        # `final` is the last checkpoint, hard-linked (no second copy of the weights;
        # DVC does not track symlinks to folders)
        shutil.copytree(Path(tmp) / f"step_{steps[-1]}", Path(tmp) / "final", copy_function=os.link)
        # index.json is the folder's provenance record (no separate provenance.json)
        io.write_json({"run": spec["run"], "steps": steps, "final": steps[-1], "provenance": prov},
                      Path(tmp) / "index.json")
    # metrics.jsonl.provenance.json is published before metrics.jsonl itself
    io.write_jsonl(rows, out_metrics, sidecar=prov)
