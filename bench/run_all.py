"""Run every benchmark in bench/, each at two or more sizes, and write BENCHMARKS.md.

One command (``make bench``)::

    python bench/run_all.py            # the full run (paper-size grid included; ~15-25 min on 2 cores)
    python bench/run_all.py --quick    # smaller sizes, no paper-size aggregation grid (~5 min)

Each script runs in its own process, one after another (they would otherwise
compete for the cores they measure), and writes ``results/bench/<name>.json``;
this runner then reads those files, prints one line per figure (figure | target |
measured | scaling | pass) and writes the same table, with the machine (platform,
nproc, load average at start) and the commands, to ``BENCHMARKS.md``. A script that
fails or times out is reported as such and the others still run; the exit status
is 1 when any figure misses its target or could not be measured (``--no-fail`` to
always exit 0).

Synthetic inputs come from the scripts themselves (bench_analysis.py's paper-size
grid generator, bench_grading.py's answer mix, bench_planning.py's scaled configs);
nothing needs a GPU or the network.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = ROOT / "results" / "bench"
PY = sys.executable


def plan(quick: bool, grids: Path | None = None) -> list[tuple[str, list[str], int]]:
    """(name, argv, timeout seconds) of every script run, in order; ``grids``: where bench_analysis keeps its grids."""
    def script(name: str, *args: str) -> list[str]:
        keep = ["--grids", str(grids)] if grids is not None and name == "bench_analysis.py" else []
        return [PY, str(BENCH / name), *args, *keep]

    if quick:
        return [
            ("planning", script("bench_planning.py", "--scales", "1", "2", "--out", str(OUT / "planning.json")), 600),
            ("grading_small", script("bench_grading.py", "--n", "500", "--baseline-n", "100",
                                     "--out", str(OUT / "grading_small.json")), 900),
            ("grading", script("bench_grading.py", "--n", "1000", "--baseline-n", "200",
                               "--out", str(OUT / "grading.json")), 900),
            ("analysis", script("bench_analysis.py", "--sizes", "100000", "250000", "--skip-grid",
                                "--grid-models", "1", "2", "--grown-models",
                                "--out", str(OUT / "analysis.json")), 1200),
            ("train_small", script("bench_train.py", "--steps", "3", "--out", str(OUT / "train_small.json")), 900),
            ("train", script("bench_train.py", "--steps", "5", "--out", str(OUT / "train.json")), 900),
            ("generation_small", script("bench_generation.py", "--problems", "32", "--repeats", "1",
                                        "--out", str(OUT / "generation_small.json")), 900),
            ("generation", script("bench_generation.py", "--problems", "64", "--repeats", "1",
                                  "--out", str(OUT / "generation.json")), 900),
            ("plan_memory", script("bench_plan_memory.py", "--sizes", "s", "m",
                                   "--out", str(OUT / "plan_memory.json")), 900),
        ]
    return [
        ("planning", script("bench_planning.py", "--scales", "1", "2", "4", "--out", str(OUT / "planning.json")), 1200),
        ("grading_small", script("bench_grading.py", "--n", "1000", "--baseline-n", "200",
                                 "--out", str(OUT / "grading_small.json")), 1200),
        ("grading", script("bench_grading.py", "--n", "3000", "--baseline-n", "400",
                           "--out", str(OUT / "grading.json")), 1800),
        ("analysis", script("bench_analysis.py", "--sizes", "250000", "1000000",
                            "--grid-models", "2", "5", "--grown-models", "10",
                            "--out", str(OUT / "analysis.json")), 5400),
        ("train_small", script("bench_train.py", "--steps", "4", "--out", str(OUT / "train_small.json")), 1200),
        ("train", script("bench_train.py", "--steps", "8", "--out", str(OUT / "train.json")), 1800),
        ("generation_small", script("bench_generation.py", "--problems", "64",
                                    "--out", str(OUT / "generation_small.json")), 1200),
        ("generation", script("bench_generation.py", "--out", str(OUT / "generation.json")), 1800),
        ("plan_memory", script("bench_plan_memory.py", "--sizes", "s", "m", "l",
                               "--out", str(OUT / "plan_memory.json")), 1200),
    ]


def run_scripts(steps: list[tuple[str, list[str], int]], only: set[str] | None) -> dict[str, dict]:
    status: dict[str, dict] = {}
    for name, argv, timeout in steps:
        if only and name.split("_")[0] not in only and name not in only:
            continue
        out = Path(argv[argv.index("--out") + 1])
        if out.exists():
            out.unlink()  # never report a stale figure as this run's
        # paths as a reader would type them: the repository's relative, a --grids folder as $GRIDS
        cmd = " ".join("python" if a == PY else "$GRIDS" if i and argv[i - 1] == "--grids" else
                       (Path(a).relative_to(ROOT).as_posix() if a.startswith(str(ROOT)) else a)
                       for i, a in enumerate(argv))
        print(f"\n=== {name}: {cmd}", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(argv, cwd=ROOT, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        wall = time.perf_counter() - t0
        status[name] = {"command": cmd, "rc": rc, "wall_s": round(wall, 1), "ok": rc == 0 and out.exists()}
        print(f"=== {name}: rc={rc} in {wall:.0f} s", flush=True)
    return status


def _load(name: str) -> dict | None:
    p = OUT / f"{name}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _row(figure: str, target: str, measured: str, scaling: str, ok: bool | None) -> dict:
    return {"figure": figure, "target": target, "measured": measured, "scaling": scaling,
            "pass": "n/a" if ok is None else ("PASS" if ok else "MISS")}


def _missing(figure: str, target: str, why: str = "not measured") -> dict:
    return _row(figure, target, why, "–", False)


def figures(quick: bool) -> list[dict]:
    rows: list[dict] = []

    p = _load("planning")
    if p:
        one = next(s for s in p["sizes"] if s["scale"] == 1)
        rows.append(_row("Planning: `snakemake -n` of the full paper grid (1x)", "≤ 20 s",
                         f"{one['seconds']:.1f} s ({one['jobs']} jobs)",
                         "; ".join(f"x{s['scale']}: {s['jobs']} jobs {s['seconds']:.1f} s "
                                   f"({s['linear_ratio']:.2f}× linear)" for s in p["sizes"]),
                         p["meets_target"]))
    else:
        rows.append(_missing("Planning: `snakemake -n` of the full paper grid (1x)", "≤ 20 s"))

    grads = [g for g in (_load("grading_small"), _load("grading")) if g]
    if grads:
        g = grads[-1]
        ratio = g["ratio_warm_vs_baseline_x_cores"]
        rows.append(_row("Grading: answers/s, `grade_many` on all cores vs single-call math-verify × cores",
                         "≥ 0.8×",
                         f"{ratio:.2f}× ({g['grade_many']['warm_per_s']:.0f}/s vs "
                         f"{g['baseline_math_verify']['per_s_x_cores']:.0f}/s, {g['machine']['workers']} workers)",
                         "; ".join(f"{x['mix']['pairs']} pairs: {x['ratio_warm_vs_baseline_x_cores']:.2f}× "
                                   f"({x['grade_many']['warm_per_s']:.0f}/s)" for x in grads)
                         + f"; without pathological pairs {g['ratio_no_pathological']:.2f}×",
                         ratio >= 0.8))
    else:
        rows.append(_missing("Grading: answers/s vs single-call math-verify × cores", "≥ 0.8×"))

    a = _load("analysis")
    if a:
        cl = a["classification"]
        best = cl[-1]
        rows.append(_row("Classification (style, repetition, transitions) from per-sample files",
                         "≥ 1M responses/min",
                         f"{best['responses_per_minute'] / 1e6:.2f}M/min ({best['responses']:,} responses, one core)",
                         "; ".join(f"{c['responses']:,}: {c['responses_per_minute'] / 1e6:.2f}M/min" for c in cl)
                         + f"; text re-classified (no flags): "
                           f"{a['classification_unflagged']['responses_per_minute'] / 1e6:.2f}M/min",
                         all(c["meets_target"] for c in cl)))
        g = a.get("aggregation")
        # fewer models of the same grid (bench_analysis.py --grid-models), measured in the same run
        sc = [x for x in a.get("aggregation_sizes", []) if x["cells_per_model"] < 19]
        grow = ("; ".join(f"{x['models']} models ({x['runs']} runs, {x['responses'] / 1e6:.1f}M responses): "
                          f"{x['full_seconds']:.1f} s" for x in sc) + "; ") if sc else ""
        if g:
            rows.append(_row("Aggregation of the full paper grid (all samples, CIs, transitions, figures)",
                             "< 60 s",
                             f"{g['full_seconds']:.1f} s ({g['responses']:,} responses, {g['sample_files']:,} files, "
                             f"{g['full_workers']} workers, {g['full_cpu_seconds']:.0f} CPU s)",
                             grow + f"summaries only ({g['tidy_rows']:,} tidy rows): {g['table_seconds']:.1f} s; "
                             f"all samples: {g['full_seconds']:.1f} s = "
                             f"{g['full_responses_per_minute'] / 1e6:.1f}M responses/min",
                             g["full_meets_target"]))
        else:
            rows.append(_row("Aggregation of the full paper grid", "< 60 s",
                             "skipped (--quick)" if quick else "not measured", grow or "–",
                             None if quick else False))
        rows.append(floor_row(a, quick))
        mem = a.get("peak_rss_mb", {})
        peak = max(mem.values()) if mem else None
        rows.append(_row("Memory of classification + aggregation (peak RSS)", "bounded (< 4 GB)",
                         f"main {mem.get('main', '?')} MB, largest worker {mem.get('largest_worker', '?')} MB",
                         "per-problem tables, one (model, reward, variant) cell in memory at a time",
                         peak is not None and peak < 4096))
    else:
        rows.append(_missing("Classification from per-sample files", "≥ 1M responses/min"))
        rows.append(_missing("Aggregation of the full paper grid", "< 60 s"))

    trains = [t for t in (_load("train_small"), _load("train")) if t]
    if trains:
        t = trains[-1]
        rows.append(_row("Toy training: TRL GRPO step vs raw torch step", "≤ 1.5×",
                         f"{t['ratio']:.2f}× ({t['trl_step_s']:.2f} s vs {t['raw_step_s']:.2f} s)",
                         "; ".join(f"{len(x['raw_steps_s'])} steps: {x['ratio']:.2f}×" for x in trains)
                         + f"; peak RSS {t['peak_rss_mb']:.0f} MB",
                         all(x["ratio"] <= 1.5 for x in trains)))
    else:
        rows.append(_missing("Toy training vs raw torch", "≤ 1.5×"))

    gens = [x for x in (_load("generation_small"), _load("generation")) if x]
    figure, target = "Toy generation: CPU engine (`sample_ids`) at batch 256 vs `generate` at batch 64, time per answer", \
        "≤ 0.8×"
    if gens:
        def at256(x: dict) -> dict:
            return {r["template"]: r for r in x["rows"] if r["kind"] == "engine" and r["batch"] == 256}

        worst = max(r["ratio_to_generate_64"] for x in gens for r in at256(x).values())
        g = gens[-1]
        rows.append(_row(figure, target,
                         f"worst {worst:.2f}× (" + ", ".join(
                             f"{t} {r['ratio_to_generate_64']:.2f}×, {r['ms_per_seq']:.1f} ms" for t, r in at256(g).items())
                         + ")",
                         "; ".join(f"{x['sequences_per_template']} answers/template: " + ", ".join(
                             f"{t} {r['ratio_to_generate_64']:.2f}×" for t, r in at256(x).items()) for x in gens),
                         worst <= 0.8))
    else:
        rows.append(_missing(figure, target))

    pm = _load("plan_memory")
    target = "within ±30%"
    if pm:
        worst = max(pm["rows"], key=lambda r: abs(r["ratio"] - 1))
        rows.append(_row("Memory plan: estimated vs measured peak (probe step, TRL update, bf16 checkpointed, "
                         "generate)", target,
                         f"worst {worst['ratio']:.2f}× ({worst['case']}, size {worst['size']})",
                         "; ".join(f"{r['case']} {r['size']}: {r['ratio']:.2f}×" for r in pm["rows"]),
                         pm["meets_target"]))
    else:
        rows.append(_missing("Memory plan: estimated vs measured peak", target))
    return rows


def floor_row(a: dict, quick: bool) -> dict:
    """Aggregation against its I/O floor (read + decompress + parse every sample file), per grid size.

    Both are timed back to back in one bench run on the same tree and workers, so
    the ratio holds on a loaded machine where the seconds do not.
    """
    figure = ("Aggregation vs its I/O floor (read + gunzip + parse every sample file, same workers; "
              "the aggregation reads the files' column indexes)")
    sizes = list(a.get("aggregation_sizes", []))
    g = a.get("aggregation")
    if g and "floor_seconds" in g:
        sizes.append({"models": g["models"], "cells_per_model": g["cells_per_model"], "runs": g["runs"],
                      "responses": g["responses"], "floor_seconds": g["floor_seconds"],
                      "full_seconds": g["full_seconds"], "ratio": g["ratio_to_floor"],
                      "cpu_ratio": g.get("cpu_ratio_to_floor"), "floor_cpu_seconds": g.get("floor_cpu_seconds"),
                      "full_cpu_seconds": g.get("full_cpu_seconds"),
                      "load_average_before": g["load_average_before_full"]})
    if not sizes:
        return _missing(figure, "≤ 1.5×")
    sizes.sort(key=lambda x: (x["cells_per_model"], x["models"]))
    worst = max(sizes, key=lambda x: x["ratio"])
    return _row(figure, "≤ 1.5×",
                f"worst {worst['ratio']:.2f}× ({worst['models']} models x {worst['cells_per_model']:g} cells: "
                f"{worst['full_seconds']:.1f} s vs {worst['floor_seconds']:.1f} s)",
                "; ".join(f"{x['models']}x{x['cells_per_model']:g} cells ({x['responses'] / 1e6:.1f}M responses, "
                          f"load {x['load_average_before']:.1f}): floor {x['floor_seconds']:.1f} s, "
                          f"aggregate {x['full_seconds']:.1f} s = {x['ratio']:.2f}×{_cpu_ratio(x)}{_text_ratio(x)}"
                          for x in sizes),
                all(x["ratio"] <= 1.5 for x in sizes))


def _text_ratio(x: dict) -> str:
    """"; without column indexes 20.1 s = 2.01×" where the size was also aggregated from the sample files' text."""
    if x.get("text_seconds") is None:
        return ""
    return f"; without column indexes (every file parsed) {x['text_seconds']:.1f} s = {x['text_ratio']:.2f}×"


def _cpu_ratio(x: dict) -> str:
    """", CPU 20 s vs 30 s = 1.50×" where the size has CPU times (results written before they were recorded lack them)."""
    if x.get("cpu_ratio") is None or x.get("floor_cpu_seconds") is None:
        return ""
    return f" (CPU {x['floor_cpu_seconds']:.0f} s vs {x['full_cpu_seconds']:.0f} s = {x['cpu_ratio']:.2f}×)"


def machine() -> dict:
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        nproc = str(os.cpu_count())
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "nproc": nproc, "python": sys.version.split()[0],
            "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


#: BENCHMARKS.md below this line is written by hand and kept by :func:`write_markdown`.
KEEP_MARKER = "<!-- kept by bench/run_all.py: hand-written sections below -->"


def write_markdown(rows: list[dict], mach: dict, status: dict[str, dict], quick: bool, path: Path) -> None:
    md = [
        "# Benchmarks",
        "",
        "Written by `python bench/run_all.py`" + (" --quick" if quick else "") + " (`make bench`); "
        "raw numbers in `results/bench/*.json`. Every figure is measured at two or more sizes (column *scaling*).",
        "",
        f"Machine: `{mach['platform']}`, {mach['processor']}, nproc {mach['nproc']}, python {mach['python']}, "
        f"load average at start {mach['load_average_at_start']}; run {time.strftime('%Y-%m-%d %H:%M %Z')}"
        + (" (**quick** sizes)" if quick else "") + ".",
        "",
        "| Figure | Target | Measured | Scaling | Pass |",
        "|---|---|---|---|---|",
    ]
    md += [f"| {_md_escape(r['figure'])} | {_md_escape(r['target'])} | {_md_escape(r['measured'])} | "
           f"{_md_escape(r['scaling'])} | {r['pass']} |" for r in rows]
    md += ["", "## Commands", "", "| Benchmark | Command | Exit | Wall |", "|---|---|---|---|"]
    md += [f"| {n} | `{s['command']}` | {s['rc']} | {s['wall_s']:.0f} s |" for n, s in status.items()]
    md += ["", "## Notes", "",
           "- Planning scales the paper grid by its seeds (3, 6, 12 seeds): training/evaluation jobs grow "
           "linearly, per-model jobs stay fixed; *× linear* is (time ratio) / (job ratio).",
           "- Aggregation: the full paper grid (10 models x 14 reward/variant cells x 3 seeds) is generated and "
           "aggregated by `bench_analysis.py`, which repeats it on the same generator with fewer models "
           "(`--grid-models`) and on the grown grid (`--grown-models`: + random p 0.7/0.3/0.001/0 and a "
           "rollout-8 no-clip arm, 19 cells per model); the summaries-only pass is timed separately. "
           "Each size is timed against its I/O floor (every sample file read, gunzipped and parsed with one "
           "`json.loads`, as the fast path does, nothing else, same workers) right before `aggregate()` on "
           "the same tree (the grids are written as the evaluation writes, each sample file with its column index, "
           "which is what `aggregate()` reads): the ratio is the figure, since machine load moves both; the CPU ratio (user + sys "
           "of the bench process and its workers) is shown beside it, as it moves least on a shared machine. "
           "`--grids DIR` keeps the synthetic grids and reuses them (the 10-model grid takes longer to write "
           "than to aggregate). "
           "Classification throughput is measured at two sizes on one core.",
           "- Grading, training and generation compare against a baseline measured in the same process on the "
           "same machine, so machine load affects both sides.",
           "- The paper grid has 7 benchmarks since the audit added two clean levels (arith_l2, arith_l5), and "
           "five arms on one model (random p 0.7/0.3/0.001/0, a rollout-8 no-clip arm): 20.5M responses in 45,745 files, 52% "
           "more than the 13.5M of the first measurement (46.3 s then). "
           "The audit's own jobs (contamination, baselines, clip probe) are measured per job by Snakemake's "
           "`benchmark:` files; their `make run` figures are in the stop notes.", ""]
    # hand-written sections (e.g. the GPU check on a lent machine) below the marker survive a rewrite
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if KEEP_MARKER in old:
        md += [KEEP_MARKER + old.split(KEEP_MARKER, 1)[1].rstrip("\n"), ""]
    path.write_text("\n".join(md), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes; no paper-size aggregation grid")
    ap.add_argument("--only", nargs="+", default=None,
                    help="run only these benchmarks (planning grading analysis aggregation train generation); "
                         "the table still reads every results/bench/*.json")
    ap.add_argument("--report-only", action="store_true", help="run nothing; tabulate results/bench/*.json")
    ap.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--no-fail", action="store_true", help="exit 0 even when a target is missed")
    ap.add_argument("--grids", type=Path, default=None,
                    help="keep bench_analysis.py's synthetic grids here and reuse them (the 10-model ones take "
                         "~10 and ~13 minutes to write, longer than their aggregation)")
    args = ap.parse_args()
    mach = machine()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"machine: {mach['platform']}, nproc {mach['nproc']}, load average {mach['load_average_at_start']}")
    status_path = OUT / "run_all.json"
    status: dict[str, dict] = {}
    if args.report_only and status_path.exists():
        status = json.loads(status_path.read_text()).get("runs", {})
    if not args.report_only:
        prev = json.loads(status_path.read_text()).get("runs", {}) if args.only and status_path.exists() else {}
        status = {**prev, **run_scripts(plan(args.quick, args.grids), set(args.only) if args.only else None)}
    rows = figures(args.quick)
    status_path.write_text(json.dumps({"machine": mach, "quick": args.quick, "runs": status, "figures": rows},
                                      indent=2) + "\n")
    w = [max(len(r[k]) for r in rows) for k in ("figure", "target", "measured")]
    print("\n" + " | ".join(["figure".ljust(w[0]), "target".ljust(w[1]), "measured".ljust(w[2]), "pass"]))
    for r in rows:
        print(" | ".join([r["figure"].ljust(w[0]), r["target"].ljust(w[1]), r["measured"].ljust(w[2]), r["pass"]]))
        print(" " * 4 + "scaling: " + r["scaling"])
    write_markdown(rows, mach, status, args.quick, args.markdown)
    print(f"\nwrote {args.markdown} and {status_path}")
    if not args.no_fail and any(r["pass"] == "MISS" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
