"""How aggregation time grows with the grid: ``aggregate()`` on paper-shaped grids of fewer models.

Not a test. The synthetic results tree is bench_analysis.py's generator (``write_grid``:
the exact sample-file format, 5 benchmarks of the paper's sizes, checkpoints every 10
of 150 steps, 151-row training logs), here for the first ``--models`` models of
config/paper.yaml (default 2 and 5 of its 10, i.e. 0.2x and 0.5x the paper grid; the
full 1x grid is bench_analysis.py's). For each size: generation time, then the whole
``aggregate()`` (all sample files, bootstrap CIs, transitions, figures, summary.md) with
``--workers`` processes: seconds, CPU seconds and responses per minute.

Results go to ``results/bench/aggregation_scaling.json``.

    python bench/synthetic_grid.py [--models 2 5] [--workers 2] [--n-boot 2000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_analysis as ba

from spurious_rewards.analysis import aggregate

ROOT = Path(__file__).resolve().parents[1]


def sub_config(n_models: int) -> dict:
    return ba.paper_grid_config(n_models)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, nargs="+", default=[2, 5])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--grid-chars", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scratch", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "aggregation_scaling.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    n_all = len(ba.paper_grid_config()["models"])
    sizes = []
    load = os.getloadavg()[0]
    for n in args.models:
        scratch = Path(tempfile.mkdtemp(prefix="bench_grid_", dir=args.scratch))
        try:
            cfg = sub_config(n)
            t0 = time.perf_counter()
            shape = ba.write_grid(scratch / "grid", cfg, args.grid_chars, args.seed)
            gen = time.perf_counter() - t0
            t0, c0 = time.perf_counter(), ba._cpu()
            aggregate.aggregate(cfg, scratch / "out", results_dir=scratch / "grid", n_boot=args.n_boot,
                                workers=args.workers)
            dt, cpu = time.perf_counter() - t0, ba._cpu() - c0
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        row = {**shape, "models": n, "fraction_of_paper_grid": round(n / n_all, 3), "generate_s": round(gen, 1),
               "seconds": round(dt, 2), "cpu_seconds": round(cpu, 2),
               "responses_per_minute": round(shape["responses"] / dt * 60)}
        sizes.append(row)
        print(f"aggregate, {n}/{n_all} models ({row['runs']} runs, {row['responses']:,} responses, "
              f"{row['sample_files']:,} files): {dt:.1f} s ({cpu:.0f} CPU s, {args.workers} workers) = "
              f"{row['responses_per_minute'] / 1e6:.1f}M responses/min")
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                          "load_average_at_start": round(load, 2)},
              "workers": args.workers, "n_boot": args.n_boot, "sizes": sizes}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
