"""The single ``spurious`` command that every Snakemake rule and DVC stage calls.

Each subcommand takes its settings as one JSON ``--spec`` (what the rule
resolved from the validated config) plus input/output paths, so a job can be
rerun by hand by copying its printed shell command. Heavy imports (torch,
transformers, trl) happen inside the subcommand, keeping ``--help`` instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

# Threads that wait passively: with two jobs on two cores a spinning OpenMP
# thread slowed a pretraining step 8x (0.35 s -> 2.7 s). Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger("spurious")


def _spec(text: str) -> dict:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--spec is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise argparse.ArgumentTypeError("--spec must be a JSON object")
    return spec


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_check_config(args: argparse.Namespace) -> int:
    from . import config

    cfg = config.load(args.configfile)
    missing = config.missing_local_models(cfg)  # relative to here, as Snakemake run from here reads them
    if missing:
        raise config.ConfigError("invalid config:\n  - " + "\n  - ".join(missing))
    runs = list(config.runs(cfg))
    chain = config.extends_chain(args.configfile)
    print(
        f"{args.configfile}: OK ({len(cfg['models'])} models, {len(cfg['rewards'])} rewards, "
        f"{len(runs)} training runs, checkpoints at steps {config.checkpoint_steps(cfg)})"
        + (f"; extends {' -> '.join(str(c) for c in chain[1:])}" if len(chain) > 1 else "")
    )
    if args.out:
        import yaml

        from . import io

        args.out.parent.mkdir(parents=True, exist_ok=True)
        with io.atomic_output(args.out) as tmp:
            tmp.write_text(
                f"# {args.configfile} resolved ({' -> '.join(str(c) for c in chain)}) and validated, defaults\n"
                "# filled in: written by `spurious check-config --out`, never edited by hand.\n"
                + yaml.safe_dump(cfg, sort_keys=False)
            )
    return 0


def cmd_prepare_data(args: argparse.Namespace) -> int:
    from . import data

    n = data.prepare_to_file(args.spec, args.out, with_provenance=True)
    log.info("wrote %d records to %s", n, args.out)
    return 0


def cmd_build_organism(args: argparse.Namespace) -> int:
    from .organisms import build_organism

    _set_threads(args.threads)
    spec = {"name": args.out.name, **args.spec}
    steps = spec.pop("steps", None)
    seed = spec.pop("seed", 0)
    manifest = build_organism(spec, args.out, seed=seed, steps=steps, threads=args.threads)
    log.info("built organism %s: %s", args.out, json.dumps(manifest, default=str)[:500])
    return 0


def cmd_probe_organism(args: argparse.Namespace) -> int:
    from . import io
    from .organisms import probe_organism

    _set_threads(args.threads)
    report = probe_organism(
        args.model, n_problems=args.problems, samples=args.samples, seed=args.seed, threads=args.threads
    )
    io.write_json(report, args.out)
    log.info("probe %s: %s", args.model, report)
    return 0


def cmd_label_majority(args: argparse.Namespace) -> int:
    from .evaluation import labels

    _set_threads(args.threads)
    stats = labels.label_majority(
        args.spec,
        data_path=args.data,
        out_majority=args.out_majority,
        out_incorrect=args.out_incorrect,
        out_samples=args.out_samples,
        out_stats=args.out_stats,
    )
    log.info("majority-vote labelling: %s", {k: v for k, v in stats.items() if k not in ("held_out", "provenance")})
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from . import training

    _set_threads(args.threads)
    training.train(
        args.spec,
        data_path=args.data,
        state_dir=args.state,
        out_checkpoints=args.out_checkpoints,
        out_metrics=args.out_metrics,
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    _set_threads(args.threads)
    if bool(args.model_dir) == bool(args.checkpoints):
        raise SystemExit("spurious evaluate: give exactly one of --model-dir (a base model) or --checkpoints (a run)")
    evaluate.evaluate(
        args.spec,
        model_dir=args.model_dir,
        checkpoints_dir=args.checkpoints,
        out_summary=args.out_summary,
        out_samples=args.out_samples,
    )
    return 0


def cmd_audit_contamination(args: argparse.Namespace) -> int:
    from .audit import contamination

    _set_threads(args.threads)
    contamination.audit(args.spec, model_dir=args.model_dir, out_summary=args.out_summary,
                        out_samples=args.out_samples)
    return 0


def cmd_evaluate_baselines(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    _set_threads(args.threads)
    evaluate.evaluate_baselines(args.spec, model_dir=args.model_dir, out_summary=args.out_summary,
                                out_samples=args.out_samples)
    return 0


def cmd_probe_clip(args: argparse.Namespace) -> int:
    from .audit import clip_probe

    _set_threads(args.threads)
    result = clip_probe.probe(args.spec, model_dir=args.model_dir, out=args.out)
    log.info("clip probe %s: %s", args.model_dir, json.dumps(result["summary"])[:1000])
    return 0


def cmd_aggregate_mechanism(args: argparse.Namespace) -> int:
    from . import config
    from .analysis import mechanism

    cfg = config.validate(args.spec)
    write = mechanism.write_checks if args.checks else mechanism.write_map
    outs = write(cfg, args.results_dir or args.out_dir, args.out_dir, n_boot=args.n_boot)
    log.info("wrote %s", ", ".join(str(p) for p in outs.values()))
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from . import config
    from .analysis import aggregate

    cfg = config.validate(args.spec)
    # every interval and verdict uses the config's alpha (audit.verdict.alpha)
    paths = aggregate.aggregate(
        cfg, args.out_dir, results_dir=args.results_dir, n_boot=args.n_boot, workers=args.workers,
        alpha=cfg["audit"]["verdict"]["alpha"],
    )
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_index_samples(args: argparse.Namespace) -> int:
    from . import samplefile

    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"spurious index-samples: error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    counts = samplefile.index_tree(args.paths, workers=args.workers)
    log.info("sample-file indexes: %d written, %d already fresh, %d files skipped (not gzip, or rows "
             "without the evaluation's flags: read in full)", counts["written"], counts["fresh"], counts["skipped"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spurious", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("check-config", help="validate a config file and summarise its grid")
    s.add_argument("configfile", type=Path)
    s.add_argument("--out", type=Path, default=None,
                   help="also write the resolved, validated config (defaults filled in) as YAML "
                        "(DVC's study stage: the params every phase tracks)")
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("prepare-data", help="normalize one dataset into JSONL {id, prompt, answer, source}")
    s.add_argument("--spec", type=_spec, required=True, help="the dataset's config entry as JSON (plus 'name')")
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(func=cmd_prepare_data)

    s = sub.add_parser("build-organism", help="build a toy model organism from scratch")
    s.add_argument("--spec", type=_spec, required=True, help="the model's `organism` config block as JSON")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--threads", type=int, default=2)
    s.set_defaults(func=cmd_build_organism)

    s = sub.add_parser("probe-organism", help="measure an organism's code frequency and accuracy by style")
    s.add_argument("--model", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--problems", type=int, default=200)
    s.add_argument("--samples", type=int, default=4)
    s.add_argument("--seed", type=int, default=777)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_probe_organism)

    s = sub.add_parser("label-majority", help="majority-vote and incorrect labels from base-model samples")
    s.add_argument("--spec", type=_spec, required=True)
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--out-majority", type=Path, required=True)
    s.add_argument("--out-incorrect", type=Path, required=True)
    s.add_argument("--out-samples", type=Path, required=True)
    s.add_argument("--out-stats", type=Path, default=None,
                   help="JSON counts: empty labels per set, held-out rows, raw vs normalised vote disagreements")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_label_majority)

    s = sub.add_parser("train", help="GRPO for one (model, reward, variant, seed)")
    s.add_argument("--spec", type=_spec, required=True, help="the resolved run spec as JSON")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--state", type=Path, required=True, help="resumable state folder (kept across restarts)")
    s.add_argument("--out-checkpoints", type=Path, required=True)
    s.add_argument("--out-metrics", type=Path, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="evaluate a base model or every checkpoint of a run")
    s.add_argument("--spec", type=_spec, required=True)
    s.add_argument("--model-dir", default=None, help="a base model: local folder or hub id")
    s.add_argument("--checkpoints", type=Path, default=None, help="a run's checkpoints folder")
    s.add_argument("--out-summary", type=Path, required=True)
    s.add_argument("--out-samples", type=Path, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("audit-contamination", help="partial-prompt contamination audit of a base model")
    s.add_argument("--spec", type=_spec, required=True)
    s.add_argument("--model-dir", required=True, help="the base model: local folder or hub id")
    s.add_argument("--out-summary", type=Path, required=True)
    s.add_argument("--out-samples", type=Path, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_audit_contamination)

    s = sub.add_parser("evaluate-baselines", help="evaluate a base model under every baseline prompt template")
    s.add_argument("--spec", type=_spec, required=True)
    s.add_argument("--model-dir", required=True, help="the base model: local folder or hub id")
    s.add_argument("--out-summary", type=Path, required=True)
    s.add_argument("--out-samples", type=Path, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_evaluate_baselines)

    s = sub.add_parser("probe-clip", help="clipping-bias probe: K one-step updates from the frozen base model")
    s.add_argument("--spec", type=_spec, required=True)
    s.add_argument("--model-dir", required=True, help="the base model: local folder or hub id")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_probe_clip)

    s = sub.add_parser("aggregate", help="tables, bootstrap CIs, transitions, figures and summary.md of a study")
    s.add_argument("--spec", type=_spec, required=True, help="the resolved config as JSON")
    s.add_argument("--out-dir", type=Path, default=Path("results"))
    s.add_argument("--results-dir", type=Path, default=None, help="where eval/ and train/ are (default: --out-dir)")
    s.add_argument("--n-boot", type=int, default=2000, help="bootstrap draws per confidence interval")
    s.add_argument("--workers", type=int, default=1, help="processes reading sample files")
    s.set_defaults(func=cmd_aggregate)

    s = sub.add_parser(
        "index-samples",
        help="write the column index of every *.jsonl.gz sample file under PATHS that lacks a fresh one",
        description="The evaluation writes each sample file's column index (samplefile.py), which the "
                    "analysis reads instead of the file; this writes them for results made before indexes "
                    "existed. Results are the same with or without them. In a DVC-tracked results tree, "
                    "`dvc commit` afterwards records the new files (else `dvc repro` takes the stage for changed).")
    s.add_argument("paths", type=Path, nargs="+", metavar="PATHS", help="sample files or folders (searched recursively)")
    s.add_argument("--workers", type=int, default=1, help="processes")
    s.set_defaults(func=cmd_index_samples)

    s = sub.add_parser("aggregate-mechanism",
                       help="the mechanism map's table, scaling fit, heatmaps and paragraphs (--checks: its checking runs)")
    s.add_argument("--spec", type=_spec, required=True, help="the resolved config as JSON")
    s.add_argument("--out-dir", type=Path, default=Path("results"))
    s.add_argument("--results-dir", type=Path, default=None, help="where audit/mechanism/ is (default: --out-dir)")
    s.add_argument("--n-boot", type=int, default=2000, help="bootstrap draws per confidence interval")
    s.add_argument("--checks", action="store_true", help="aggregate the checking runs of the flagged cells")
    s.set_defaults(func=cmd_aggregate_mechanism)

    from . import fetch, plan, prune  # light (no torch): `spurious plan|fetch|prune --configfile ...`

    plan.add_parser(sub)
    fetch.add_parser(sub)
    prune.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .config import ConfigError
    from .io import DataError

    try:
        return args.func(args)
    except (ConfigError, DataError) as exc:
        print(f"spurious {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
