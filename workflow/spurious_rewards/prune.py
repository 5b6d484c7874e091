"""``spurious prune``: apply the config's ``retention`` policy to finished runs.

Why a command and not a job setting: what is kept changes no result, so it must not be a
parameter of the training jobs (a changed parameter reruns them). A finished run (its
``metrics.jsonl`` published) no longer needs ``state/`` (optimizer state and TRL/DeepSpeed
checkpoints, kept only to resume a killed job: at paper scale about twice the published
checkpoints) and, once evaluated, not every intermediate checkpoint either. The published
checkpoints are hard links into ``state/hf``, so dropping ``state/`` frees only what nothing
else uses. Run it after ``snakemake`` (or let ``make`` do it); ``--dry-run`` lists what would go.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from . import config, paths

__all__ = ["add_parser", "prune_targets"]


def prune_targets(cfg: dict, results: str | os.PathLike[str] = paths.RESULTS) -> list[Path]:
    """Folders the retention policy removes: ``state/`` of finished runs, and with
    ``checkpoints: final`` every published ``step_N`` but the final one of evaluated runs."""
    policy = cfg["retention"]
    out: list[Path] = []
    for run in config.runs(cfg):
        w = run.wildcards
        finished = paths.under(results, paths.TRAIN_METRICS, **w).is_file()
        if not finished:
            continue  # a running or killed job still needs its state to resume
        state = paths.under(results, paths.TRAIN_STATE, **w)
        if policy["state"] == "prune" and state.exists():
            out.append(state)
        evaluated = paths.under(results, paths.EVAL_RUN_SUMMARY, **w).is_file()
        if policy["checkpoints"] == "final" and evaluated:
            ckpts = paths.under(results, paths.TRAIN_CHECKPOINTS, **w)
            steps = config.checkpoint_steps(cfg)
            out += [ckpts / f"step_{s}" for s in steps[:-1] if (ckpts / f"step_{s}").is_dir()]
    return out


def _size(path: Path) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for p in path.rglob("*"):
        if p.is_file():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen and st.st_nlink == 1:  # hard-linked bytes stay on disk
                total += st.st_size
            seen.add((st.st_dev, st.st_ino))
    return total


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``spurious prune`` on the CLI's subparsers."""
    s = subparsers.add_parser("prune", help="apply the config's retention policy to finished runs")
    s.add_argument("--configfile", type=Path, required=True)
    s.add_argument("--results", type=Path, default=Path(paths.RESULTS))
    s.add_argument("--dry-run", action="store_true")
    s.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    cfg = config.load(args.configfile)
    targets = prune_targets(cfg, args.results)
    freed = 0
    for t in targets:
        freed += _size(t)
        print(("would remove " if args.dry_run else "removing ") + str(t))
        if not args.dry_run:
            shutil.rmtree(t)
    print(f"{len(targets)} folders, {freed / 2**30:.2f} GiB {'to free' if args.dry_run else 'freed'} "
          f"(retention: state {cfg['retention']['state']}, checkpoints {cfg['retention']['checkpoints']})")
    return 0
