"""Planning time: ``snakemake -n`` of the paper grid at 1x, 2x and 4x its size.

Not a test. The paper grid (config/paper.yaml: every model, reward, variant, seed,
checkpoint and benchmark expanded) is dry-run with

    python -m snakemake -n --quiet rules --nolock --configfile <cfg>

for scaled copies of the config written to a temporary folder: scale s multiplies
the seeds (1x = the paper's seeds, 2x = twice as many seeds, ...), so the number of
training/evaluation jobs grows s-fold while the per-model jobs stay fixed. Each size
is timed ``--repeats`` times (the best is reported); the job count is parsed from
snakemake's job table. ``linear_ratio`` = (seconds at s / seconds at 1x) / (jobs at s /
jobs at 1x): about 1 or below means planning grows no worse than linearly in jobs.

Target: the 1x dry run in <= 20 s on 2 cores. Results go to ``results/bench/planning.json``.

    python bench/bench_planning.py [--scales 1 2 4] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 20.0


def scaled_config(base: dict, scale: int) -> dict:
    """The config with ``scale`` times as many seeds (new seeds continue after the largest)."""
    cfg = dict(base)
    seeds = list(base["seeds"])
    start = max(seeds) + 1
    extra = list(range(start, start + len(seeds) * (scale - 1)))
    cfg["seeds"] = seeds + extra
    return cfg


def dry_run(cfg_path: Path, timeout: float) -> tuple[float, int, str]:
    cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--nolock", "--configfile", str(cfg_path)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake -n failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = proc.stdout + proc.stderr
    totals = re.findall(r"^total\s+(\d+)\s*$", out, flags=re.M)
    return dt, int(totals[-1]) if totals else -1, " ".join(cmd[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "planning.json")
    args = ap.parse_args()

    base = yaml.safe_load(args.config.read_text())
    load = os.getloadavg()[0]
    sizes = []
    with tempfile.TemporaryDirectory(prefix="bench_planning_") as tmp:
        for scale in args.scales:
            cfg = scaled_config(base, scale)
            path = Path(tmp) / f"paper_x{scale}.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            runs = []
            for _ in range(max(1, args.repeats)):
                dt, jobs, cmd = dry_run(path, args.timeout)
                runs.append(dt)
            best = min(runs)
            sizes.append({"scale": scale, "seeds": len(cfg["seeds"]), "jobs": jobs, "seconds": round(best, 2),
                          "all_seconds": [round(r, 2) for r in runs],
                          "ms_per_job": round(1000 * best / max(jobs, 1), 2)})
            print(f"snakemake -n, paper grid x{scale} ({len(cfg['seeds'])} seeds): {jobs} jobs in {best:.1f} s")
    first = sizes[0]
    for s in sizes:
        s["linear_ratio"] = round((s["seconds"] / first["seconds"]) / (s["jobs"] / first["jobs"]), 3)
    one = next((s for s in sizes if s["scale"] == 1), first)
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "load_average_at_start": round(load, 2)},
        "command": "python -m snakemake -n --quiet rules --nolock --configfile <scaled paper.yaml>",
        "sizes": sizes,
        "target_seconds": TARGET_S,
        "seconds_1x": one["seconds"],
        "meets_target": one["seconds"] <= TARGET_S,
    }
    print(f"1x: {one['seconds']:.1f} s (target <= {TARGET_S:.0f} s) {'OK' if result['meets_target'] else 'MISSED'}; "
          "vs linear: " + ", ".join(f"x{s['scale']} {s['linear_ratio']}" for s in sizes))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
