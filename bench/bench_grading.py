"""Grading throughput: ``grade_many`` on all cores vs. plain math-verify calls x cores.

Not a test. Builds a seeded, realistic mix of model responses (boxed integers, fractions,
symbolic expressions, responses with no answer, long responses that fall back to the last
number, and a few pathological ones), extracts answers once, then times

* ``grade_many(pairs, workers=cores)`` cold (worker start-up included) and warm
  (workers running, answer cache cleared), and
* the naive baseline: one ``verify(parse(gold), parse(pred))`` per pair in one process,
  with math-verify's own signal timeouts, scaled by the number of cores (ideal speed-up).

The baseline skips pairs whose sympy evaluation cannot be interrupted by ``signal.alarm``
(power towers such as ``10^{10^{10}}`` hang in C big-integer code); ``grade_many`` grades
all of them. Results go to ``results/bench/grading.json``.

    python bench/bench_grading.py [--n 3000] [--baseline-n 400] [--timeout 1.0]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import time
from importlib.metadata import version
from pathlib import Path

from spurious_rewards import scoring as grading
from spurious_rewards.scoring import counters

MIX = {  # kind -> share of the responses
    "boxed_int": 0.40,
    "fraction": 0.15,
    "expression": 0.20,
    "no_answer": 0.10,
    "long": 0.145,
    "pathological": 0.005,
}
UNINTERRUPTIBLE = ("10^{10^{10}}", "9^{9^{9}}", "2^{2^{2^{2^{2^{2}}}}}")
SLOW = ("(x+y+z+1)^{60}", "(x+y+1)^{200}", "(" * 20 + "1" + ")" * 20)
FILLER = (
    "We consider the problem carefully. Let $n$ be the number of ways, and note that each step "
    "contributes {a} cases while the remaining {b} cases are symmetric. Hence the count is {c}. "
)


def _boxed(ans: str) -> str:
    return (
        f"Working through the algebra step by step, we find the result.\n\nThe answer is $\\boxed{{{ans}}}$."
    )


def _boxed_int(rng: random.Random) -> tuple[str, str]:
    truth = rng.randint(0, 999)
    pred = truth if rng.random() < 0.6 else truth + rng.choice([-2, -1, 1, 3, 10])
    r = rng.random()
    label = f"{truth:03d}" if r < 0.15 else (f"{truth}.0" if r < 0.3 else str(truth))
    return _boxed(str(pred)), label


def _fraction(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(1, 40), rng.randint(2, 41)
    label = f"\\frac{{{a}}}{{{b}}}"
    r = rng.random()
    if r < 0.3:
        pred = f"\\dfrac{{{2 * a}}}{{{2 * b}}}"
    elif r < 0.5:
        pred = f"{a}/{b}"
    elif r < 0.7:
        pred = f"{a / b:.6f}".rstrip("0")
    elif r < 0.85:
        pred = f"\\frac{{{a + 1}}}{{{b}}}"
    else:
        pred = f"\\frac{{{a}\\sqrt{{1}}}}{{{b}}}"
    return _boxed(pred), label


def _expression(rng: random.Random) -> tuple[str, str]:
    k, m, a, b = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7]), rng.randint(1, 9), rng.randint(10, 20)
    ok = rng.random() < 0.6
    options = [
        (f"{k}\\sqrt{{{m}}}", f"\\sqrt{{{k * k * m + (0 if ok else 1)}}}"),
        (f"x^2+{2 * a}x+{a * a + (0 if ok else 1)}", f"(x+{a})^2"),
        (f"[{a}, {b})", f"[{a},{b})" if ok else f"({a},{b}]"),
        (f"({a}, {b})", f"({a},{b})" if ok else f"({b},{a})"),
        (f"\\frac{{{a}\\pi}}{{{b}}}", f"\\frac{{{a if ok else a + 1}}}{{{b}}}\\pi"),
        (f"\\{{{a}, {b}\\}}", f"\\{{{b},{a}\\}}" if ok else f"\\{{{a},{b + 1}\\}}"),
        (f"{a}\\%", f"{a if ok else a + 1}"),
        (f"x={a}", f"{a if ok else -a}"),
    ]
    label, pred = rng.choice(options)
    return _boxed(pred), label


def _no_answer(rng: random.Random) -> tuple[str, str]:
    text = rng.choice(["I am not sure how to proceed with this problem.", "Let me think about it again.", ""])
    return text, str(rng.randint(0, 99))


def _long(rng: random.Random) -> tuple[str, str]:
    parts = []
    while sum(map(len, parts)) < 3000:
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        parts.append(FILLER.format(a=a, b=b, c=a * b))
    truth = rng.randint(1, 500)
    last = truth if rng.random() < 0.5 else truth + 1
    return "".join(parts) + f"Therefore we conclude with {last}", str(truth)


def _pathological(rng: random.Random) -> tuple[str, str]:
    return _boxed(rng.choice(UNINTERRUPTIBLE + SLOW)), str(rng.randint(1, 9))


MAKERS = {
    "boxed_int": _boxed_int,
    "fraction": _fraction,
    "expression": _expression,
    "no_answer": _no_answer,
    "long": _long,
    "pathological": _pathological,
}


def make_mix(n: int, seed: int) -> list[tuple[str, str, str]]:
    """``n`` (kind, response, label) triples with the shares of :data:`MIX`, shuffled."""
    rng = random.Random(seed)
    rows = []
    for kind, share in MIX.items():
        rows += [(kind, *MAKERS[kind](rng)) for _ in range(max(1, round(n * share)))]
    rng.shuffle(rows)
    return rows


def baseline(pairs: list[tuple[str | None, str]], timeout: int) -> tuple[float, int, int]:
    """Seconds for plain math-verify calls in this (main) thread; (seconds, graded, correct)."""
    from math_verify import parse, verify

    logging.disable(logging.WARNING)  # math-verify logs every timeout
    t0 = time.perf_counter()
    graded = correct = 0
    for pred, label in pairs:
        graded += 1
        if pred is None:
            continue
        gold = parse("$" + label + "$", parsing_timeout=timeout)
        for cand in ("\\boxed{" + pred + "}", "$" + pred + "$"):
            target = parse(cand, parsing_timeout=timeout)
            if target and verify(gold, target, timeout_seconds=timeout):
                correct += 1
                break
    logging.disable(logging.NOTSET)
    return time.perf_counter() - t0, graded, correct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="pairs for grade_many")
    ap.add_argument("--baseline-n", type=int, default=400, help="pairs for the single-process baseline")
    ap.add_argument("--timeout", type=float, default=1.0, help="seconds per pair (both sides)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/bench/grading.json")
    args = ap.parse_args()
    cores = args.workers

    rows = make_mix(args.n, args.seed)
    t0 = time.perf_counter()
    pairs = [(grading.extract_answer(resp), label) for _, resp, label in rows]
    extract_s = time.perf_counter() - t0
    kinds = {k: sum(1 for r in rows if r[0] == k) for k in MIX}

    grading.shutdown_workers()
    grading.reset_grading_stats()
    t0 = time.perf_counter()
    cold = grading.grade_many(pairs, workers=cores, timeout=args.timeout)
    cold_s = time.perf_counter() - t0
    cold_stats = grading.grading_stats()

    counters._cache.clear()  # same pairs again, workers warm, nothing remembered
    grading.reset_grading_stats()
    t0 = time.perf_counter()
    warm = grading.grade_many(pairs, workers=cores, timeout=args.timeout)
    warm_s = time.perf_counter() - t0
    warm_stats = grading.grading_stats()
    assert warm == cold, "grade_many is not deterministic on this mix"

    clean = [p for p, row in zip(pairs, rows, strict=True) if row[0] != "pathological"]
    counters._cache.clear()
    t0 = time.perf_counter()
    grading.grade_many(clean, workers=cores, timeout=args.timeout)
    clean_s = time.perf_counter() - t0
    grading.shutdown_workers()

    # the baseline on a prefix of the same shuffled mix, minus what it cannot survive
    sample = [p for p in pairs[: args.baseline_n] if not (p[0] and p[0] in UNINTERRUPTIBLE)]
    skipped = min(args.baseline_n, len(pairs)) - len(sample)
    base_s, base_n, base_correct = baseline(sample, max(1, round(args.timeout)))
    per_core = base_n / base_s
    ours = len(pairs) / warm_s
    clean_sample = [p for p, row in zip(pairs, rows, strict=True) if row[0] != "pathological"][
        : args.baseline_n
    ]
    base_clean_s, base_clean_n, _ = baseline(clean_sample, max(1, round(args.timeout)))
    per_core_clean = base_clean_n / base_clean_s
    ours_clean = len(clean) / clean_s

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "workers": cores,
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "math_verify": version("math-verify"),
            "sympy": version("sympy"),
        },
        "mix": {"seed": args.seed, "pairs": len(pairs), "kinds": kinds, "timeout_s": args.timeout},
        "extract_answer": {"seconds": round(extract_s, 4), "per_s": round(len(rows) / extract_s)},
        "grade_many": {
            "cold_s": round(cold_s, 3),
            "cold_per_s": round(len(pairs) / cold_s, 1),
            "warm_s": round(warm_s, 3),
            "warm_per_s": round(ours, 1),
            "correct": sum(warm),
            "stats_cold": cold_stats,
            "stats_warm": warm_stats,
            "no_pathological_pairs": len(clean),
            "no_pathological_warm_s": round(clean_s, 3),
            "no_pathological_warm_per_s": round(ours_clean, 1),
        },
        "baseline_math_verify": {
            "pairs": base_n,
            "skipped_uninterruptible": skipped,
            "seconds": round(base_s, 3),
            "per_s_one_core": round(per_core, 1),
            "per_s_x_cores": round(per_core * cores, 1),
            "correct": base_correct,
            "no_pathological_pairs": base_clean_n,
            "no_pathological_per_s_one_core": round(per_core_clean, 1),
            "no_pathological_per_s_x_cores": round(per_core_clean * cores, 1),
        },
        "ratio_warm_vs_baseline_x_cores": round(ours / (per_core * cores), 2),
        "ratio_no_pathological": round(ours_clean / (per_core_clean * cores), 2),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    g, b = result["grade_many"], result["baseline_math_verify"]
    print(f"mix: {len(pairs)} pairs {kinds}, timeout {args.timeout}s, {cores} workers")
    print(f"extract_answer: {result['extract_answer']['per_s']}/s")
    print(
        f"grade_many cold: {g['cold_per_s']}/s ({g['cold_s']}s)   warm: {g['warm_per_s']}/s ({g['warm_s']}s)"
    )
    print(f"  {warm_stats}")
    print(
        f"math-verify one call at a time: {b['per_s_one_core']}/s on one core "
        f"({b['pairs']} pairs, {skipped} uninterruptible skipped) x {cores} cores = {b['per_s_x_cores']}/s"
    )
    print(f"ratio (warm grade_many / baseline x cores): {result['ratio_warm_vs_baseline_x_cores']}")
    print(
        f"without the pathological pairs: grade_many {g['no_pathological_warm_per_s']}/s vs "
        f"{b['no_pathological_per_s_x_cores']}/s -> ratio {result['ratio_no_pathological']}"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
