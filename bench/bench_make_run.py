"""CPU seconds of the default study (`make run`) per rule, before and after the speed defaults.

`make run` is 65 jobs of a few kinds; its wall time on an idle machine is about
the sum of the jobs' CPU seconds over the cores. Timing the whole study takes
~20 minutes and depends on everything else the machine runs, so this script
measures CPU time (user + system of the job process and its children,
``getrusage(RUSAGE_CHILDREN)``), which load does not inflate much, of one
representative job per rule (model ``--model``, run ``<model>/ground_truth/clip``)
and projects each rule's total as per-job CPU x the rule's job count in the
dry-run of ``config.yaml``.

How: the tracked files of this repository are copied to a scratch directory;
``snakemake -n -p --forceall`` there gives every job's exact ``spurious ...``
command; the datasets are prepared, one training run is trained (its
checkpoints feed ``evaluate_run``), and every other measured job runs twice, in
the same session, one right after the other:

* ``before``: the spec patched back to the old defaults (``BEFORE``:
  ``audit.clip_probe.draws`` 50; ``--before KEY=VALUE`` adds others, e.g.
  ``evaluation.batch_size=256`` to try a batch size);
* ``after``: the command exactly as ``config.yaml`` resolves it.

A job whose spec the ``before`` keys do not change runs once (before = after).

The clip probe is linear in its draws (a fixed start-up plus the same work per
draw), so it runs at two small draw counts (``--probe-draws``) and its cost at
the configured draws is the straight line through the two, not a 50-draw run.
The mechanism map's probes (``probe_mechanism``) are measured the same way, every
cell (their updates per rollout differ), at their own draws, before and after.
Jobs of other rules (data preparation, organism probes, the aggregation, which
another benchmark covers) are not measured; they take a few percent of the study.
A floor is measured too: the CPU seconds of only importing what a training job
and an evaluation job import (`spurious train` imports TRL).

Run: ``python bench/bench_make_run.py`` (~5 min of CPU, one job at a time; not in
``bench/run_all.py``, whose runs it would double). Writes
``results/bench/make_run.json`` and prints one line per rule.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

#: The defaults before the speed change (config key: old value).
BEFORE = {
    "audit.clip_probe.draws": 50,
}

RULES = ("train_grpo", "evaluate_run", "evaluate_base", "evaluate_baselines", "probe_clip_bias",
         "probe_mechanism", "label_majority_vote", "audit_contamination")
#: Probe rules: cost = fixed + per-draw x draws, a line through two small draw counts. The map's
#: cells differ (updates per rollout), so every probe_mechanism job is measured, not one.
PROBES = ("probe_clip_bias", "probe_mechanism")


def copy_repo(dest: Path) -> None:
    """The tracked files of the working tree (edits included), as `make run` would see them."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def dry_run(workdir: Path) -> list[tuple[str, str]]:
    """(rule, shell command) of every job of the default study."""
    out = subprocess.run([str(BIN / "snakemake"), "-n", "-p", "--forceall", "--cores", "1"], cwd=workdir,
                         check=True, capture_output=True, text=True, env=_env(workdir)).stdout
    jobs, rule = [], None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
        elif line.startswith("Shell command: ") and rule:
            jobs.append((rule, line[len("Shell command: "):]))
            rule = None
    if not jobs:
        raise RuntimeError("snakemake -n -p printed no shell command")
    return jobs


def _env(workdir: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(workdir / "workflow"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def _argv(command: str) -> tuple[list[str], str | None]:
    """The command's argv (``spurious`` from this venv) and its log file, the ``> log 2>&1`` removed."""
    m = re.search(r"\s*>\s*(\S+)\s+2>&1\s*$", command)
    log = m.group(1) if m else None
    argv = shlex.split(command[: m.start()] if m else command)
    if argv[0] == "spurious":
        argv[0] = str(BIN / "spurious")
    return argv, log


def _patch(argv: list[str], changes: dict[str, object]) -> list[str]:
    """``argv`` with keys of its ``--spec`` JSON replaced (``a.b`` = nested; ``evaluation.batch_size`` is
    also the top-level ``batch_size`` of the labelling spec); keys the spec lacks are skipped."""
    argv = list(argv)
    i = argv.index("--spec") + 1
    spec = json.loads(argv[i])
    for key, value in changes.items():
        parts = key.split(".")
        if key == "evaluation.batch_size" and "batch_size" in spec and "evaluation" not in spec:
            spec["batch_size"] = value
            continue
        if key == "audit.clip_probe.draws":
            parts = ["probe", "draws"]
        node = spec
        for p in parts[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and parts[-1] in node:
            node[parts[-1]] = value
    argv[i] = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return argv


def _outputs(argv: list[str]) -> list[str]:
    return [argv[j + 1] for j, a in enumerate(argv[:-1]) if a.startswith("--out")]


def run_cpu(argv: list[str], log: str | None, workdir: Path) -> dict:
    """Run one job to completion; its CPU seconds (user + sys of the process tree) and wall seconds."""
    for out in _outputs(argv):
        p = workdir / out
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    log_path = workdir / (log or "logs/bench.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        rc = subprocess.run(argv, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT, env=_env(workdir)).returncode
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc:
        raise RuntimeError(f"{argv[:2]} exited {rc}; see {log_path}:\n{log_path.read_text()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "load1_at_start": round(load, 2)}


def import_floor(workdir: Path) -> dict:
    """CPU seconds of only importing what a training / an evaluation job imports (the per-process floor)."""
    out = {}
    for name, code in (("train (torch + transformers + trl)", "import torch; from trl import GRPOTrainer"),
                       ("evaluate (torch + transformers model)",
                        "import torch; from transformers import AutoModelForCausalLM, AutoTokenizer; "
                        "import transformers.models.qwen2.modeling_qwen2")):
        out[name] = run_cpu([sys.executable, "-c", code], "logs/import.log", workdir)["cpu_s"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="toy-qwen-math", help="the model whose jobs are measured")
    ap.add_argument("--probe-draws", type=int, nargs=2, default=[2, 6], metavar=("D1", "D2"),
                    help="the two draw counts the clip probe's cost line goes through")
    ap.add_argument("--rules", nargs="*", default=list(RULES), choices=RULES, help="rules to measure")
    ap.add_argument("--cores", type=int, default=2, help="cores of the machine the wall time is projected for")
    ap.add_argument("--before", nargs="*", default=[], metavar="KEY=VALUE",
                    help="more settings of the before run (JSON values), e.g. evaluation.batch_size=256")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "make_run.json")
    args = ap.parse_args()

    before = {**BEFORE, **{k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.before)}}
    scratch = Path(tempfile.mkdtemp(prefix="bench-make-run-"))
    t_start, load_start = time.time(), os.getloadavg()
    try:
        copy_repo(scratch)
        jobs = dry_run(scratch)
        counts: dict[str, int] = {}
        for rule, _ in jobs:
            counts[rule] = counts.get(rule, 0) + 1
        for rule, cmd in jobs:  # the datasets every measured job reads (cheap)
            if rule == "prepare_dataset":
                run_cpu(*_argv(cmd), scratch)
        run_key = f"{args.model}/ground_truth/clip/"

        def pick(rule: str) -> tuple[list[str], str | None]:
            for r, cmd in jobs:
                if r == rule and (f"/{args.model}" in cmd or f"{args.model}/" in cmd) and \
                        (rule not in ("train_grpo", "evaluate_run") or run_key in cmd):
                    return _argv(cmd)
            raise RuntimeError(f"no {rule} job for {args.model} in the dry-run")

        results: dict[str, dict] = {}
        if "train_grpo" in args.rules or "evaluate_run" in args.rules:
            argv, log = pick("train_grpo")
            m = run_cpu(argv, log, scratch)
            results["train_grpo"] = {"before": m, "after": m, "note": "unchanged: measured once"}
            print(f"train_grpo: {m['cpu_s']:.1f} CPU s (load {m['load1_at_start']})", flush=True)
        for rule in args.rules:
            if rule == "train_grpo":
                continue
            if rule == "probe_mechanism" and not any(r == rule for r, _ in jobs):
                continue  # the map is off in this config
            argv, log = pick(rule)
            if rule in PROBES:
                d1, d2 = args.probe_draws
                cmds = [_argv(c) for r, c in jobs if r == rule] if rule == "probe_mechanism" else [(argv, log)]
                pts = {"before": {"cpu_s": 0.0}, "after": {"cpu_s": 0.0}, "jobs_measured": len(cmds), "lines": []}
                for job_argv, job_log in cmds:
                    draws = json.loads(job_argv[job_argv.index("--spec") + 1])["probe"]["draws"]
                    # only the default study's own probe had its draws changed (the map keeps its own)
                    draws_before = before.get("audit.clip_probe.draws", draws) if rule == "probe_clip_bias" else draws
                    c1 = run_cpu(_patch(job_argv, {"audit.clip_probe.draws": d1}), job_log, scratch)
                    c2 = run_cpu(_patch(job_argv, {"audit.clip_probe.draws": d2}), job_log, scratch)
                    per_draw = (c2["cpu_s"] - c1["cpu_s"]) / (d2 - d1)
                    fixed = c1["cpu_s"] - per_draw * d1
                    pts["before"]["cpu_s"] += fixed + per_draw * draws_before
                    pts["after"]["cpu_s"] += fixed + per_draw * draws
                    pts["lines"].append({"fixed_cpu_s": round(fixed, 2), "per_draw_cpu_s": round(per_draw, 2),
                                         "draws_before": draws_before, "draws_after": draws,
                                         "measured": {d1: c1, d2: c2}})
                for label in ("before", "after"):
                    pts[label]["cpu_s"] = round(pts[label]["cpu_s"] / len(cmds), 1)  # per job
                    pts[label]["load1_at_start"] = pts["lines"][0]["measured"][d1]["load1_at_start"]
                results[rule] = pts
            elif _patch(argv, before) == _patch(argv, {}):
                m = run_cpu(argv, log, scratch)
                results[rule] = {"before": m, "after": m, "note": "unchanged: measured once"}
            else:
                results[rule] = {"before": run_cpu(_patch(argv, before), log, scratch),
                                 "after": run_cpu(argv, log, scratch)}
            b, a = results[rule]["before"], results[rule]["after"]
            print(f"{rule}: before {b['cpu_s']:.1f} CPU s, after {a['cpu_s']:.1f} CPU s per job "
                  f"(load {b['load1_at_start']}/{a['load1_at_start']})", flush=True)
        floor = import_floor(scratch)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    rows, tot_b, tot_a = [], 0.0, 0.0
    for rule, r in results.items():
        n = counts.get(rule, 0)
        b, a = r["before"]["cpu_s"] * n, r["after"]["cpu_s"] * n
        tot_b, tot_a = tot_b + b, tot_a + a
        rows.append({"rule": rule, "jobs": n, "per_job_before_cpu_s": r["before"]["cpu_s"],
                     "per_job_after_cpu_s": r["after"]["cpu_s"], "rule_before_cpu_s": round(b, 1),
                     "rule_after_cpu_s": round(a, 1), "change": round(a / b - 1, 3) if b else None})
    report = {
        "machine": {"platform": platform.platform(), "nproc": os.cpu_count(),
                    "loadavg_start": [round(x, 2) for x in load_start],
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "model": args.model, "before_settings": before, "job_counts": counts, "rules": rows,
        "measured_total_before_cpu_s": round(tot_b, 1), "measured_total_after_cpu_s": round(tot_a, 1),
        "projected_wall_min_before": round(tot_b / args.cores / 60, 1),
        "projected_wall_min_after": round(tot_a / args.cores / 60, 1),
        "import_floor_cpu_s": floor, "details": results, "seconds": round(time.time() - t_start, 1),
        "note": "rule totals = one representative job x job count; unmeasured rules (data, organism probes, "
                "aggregation) add a few percent; projected wall = measured CPU / cores (an idle machine)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'rule':22} {'jobs':>4} {'before/job':>11} {'after/job':>10} {'rule before':>12} {'rule after':>11}")
    for r in rows:
        print(f"{r['rule']:22} {r['jobs']:>4} {r['per_job_before_cpu_s']:>11.1f} {r['per_job_after_cpu_s']:>10.1f} "
              f"{r['rule_before_cpu_s']:>12.0f} {r['rule_after_cpu_s']:>11.0f}")
    print(f"measured rules: {tot_b:.0f} -> {tot_a:.0f} CPU s ({report['projected_wall_min_before']} -> "
          f"{report['projected_wall_min_after']} min on {args.cores} idle cores); import floor {floor}; "
          f"load {report['machine']['loadavg_start']} -> {report['machine']['loadavg_end']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
