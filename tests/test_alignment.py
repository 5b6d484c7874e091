"""analysis/alignment.py on hand-made inputs whose answers are known: the pass@k curve (Chen et al.'s
unbiased estimator), the correlation with its bootstrap and Fisher-z intervals, and the per-k grouping.
The same analysis on a planted results tree is in tests/test_aggregate.py."""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from spurious_rewards.analysis import alignment


def enumerated_pass_at_k(n: int, c: int, k: int) -> float:
    """P(some of k samples drawn without replacement is correct), by listing every k-subset."""
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_curve_on_three_problems() -> None:
    # never solved, solved once in 4, always solved
    n, c = np.array([4, 4, 4]), np.array([0, 1, 4])
    got = alignment.pass_at_k_curve(n, c, 4)
    assert got[0] == pytest.approx((0 + 1 / 4 + 1) / 3)  # pass@1 = avg@4
    assert got[1] == pytest.approx((0 + (1 - 3 / 6) + 1) / 3)  # 1 - C(3,2)/C(4,2) for the middle one
    assert got[3] == pytest.approx(2 / 3)  # pass@n = any of the n samples correct
    for k in range(1, 5):
        want = np.mean([enumerated_pass_at_k(4, ci, k) for ci in c])
        assert got[k - 1] == pytest.approx(want)
    assert (np.diff(got) >= 0).all()
    assert np.isnan(alignment.pass_at_k_curve(np.array([]), np.array([]), 2)).all()


def test_correlation_known_values_and_intervals() -> None:
    x, y = np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])
    out = alignment.correlation(x, y, n_boot=2000, seed=7, alpha=0.05)
    # centred: x = y = (-1.5, -0.5, 0.5, 1.5) permuted; sum xy = 4, sum x^2 = sum y^2 = 5
    assert out["pearson_r"] == pytest.approx(0.8)
    assert out["spearman_rho"] == pytest.approx(0.8)  # the values are their own ranks
    h = NormalDist().inv_cdf(0.975) / math.sqrt(4 - 3)
    assert out["fisher_low"] == pytest.approx(math.tanh(math.atanh(0.8) - h))
    assert out["fisher_high"] == pytest.approx(math.tanh(math.atanh(0.8) + h))
    assert -1 <= out["pearson_low"] <= out["pearson_high"] <= 1
    assert out["n_cells"] == 4 and 0 < out["n_valid_draws"] < 2000 and out["n_boot"] == 2000
    # seeded: the same inputs give the same interval; another seed other draws
    assert alignment.correlation(x, y, n_boot=2000, seed=7) == out
    assert alignment.correlation(x, y, n_boot=2000, seed=8) != out
    # a perfect line: every usable draw is +1 (or -1 for a falling one)
    line = alignment.correlation(x, 2 * x + 1, n_boot=500)
    assert (line["pearson_r"], line["pearson_low"], line["pearson_high"]) == pytest.approx((1, 1, 1))
    assert alignment.correlation(x, -x, n_boot=500)["spearman_high"] == pytest.approx(-1)


def test_spearman_averages_tied_ranks() -> None:
    # ranks of x: 1.5, 1.5, 3, 4; centred (-1, -1, .5, 1.5) against (-1.5, -.5, .5, 1.5): 4.5 / sqrt(4.5 * 5)
    out = alignment.correlation(np.array([1.0, 1, 2, 3]), np.array([1.0, 2, 3, 4]), n_boot=100)
    assert out["spearman_rho"] == pytest.approx(4.5 / math.sqrt(4.5 * 5))


def test_correlation_is_undefined_without_three_cells_or_spread() -> None:
    for x, y in (([0.1, 0.5], [0.2, 0.4]), ([0.3, 0.3, 0.3], [0.1, 0.2, 0.3]), ([0.1, 0.2, 0.3], [0.0, 0.0, 0.0])):
        out = alignment.correlation(np.array(x), np.array(y), n_boot=200)
        assert math.isnan(out["pearson_r"]) and math.isnan(out["spearman_rho"]) and math.isnan(out["pearson_low"])
        assert out["n_valid_draws"] == 0 and out["n_cells"] == len(x)


def test_three_cells_give_r_but_no_interval() -> None:
    """With 3 cells the only draws not dropped (fewer than 3 distinct cells: r = ±1 by construction) are the
    sample itself reordered, so no interval is given; r and rho are, and the summary says too few cells."""
    x, y = np.array([0.2, 0.5, 0.9]), np.array([0.1, 0.0, 0.3])
    out = alignment.correlation(x, y, n_boot=400, seed=0)
    assert out["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1]) and out["spearman_rho"] == pytest.approx(0.5)
    assert math.isnan(out["pearson_low"]) and math.isnan(out["fisher_low"]) and out["n_valid_draws"] == 0
    assert alignment._relation(out) == "too few cells to judge"


def test_draws_of_fewer_than_three_distinct_cells_are_dropped() -> None:
    """4 cells: a draw of 4 holds all 4 in 4! = 24 of 4^4 = 256 ways and exactly 3 in 4 x 36 = 144 (36 maps of
    4 draws onto 3 cells that use all 3), so about 168 / 256 of the draws are kept."""
    x, y = np.array([0.1, 0.4, 0.5, 0.9]), np.array([0.0, 0.3, 0.1, 0.2])
    out = alignment.correlation(x, y, n_boot=4000, seed=0)
    assert out["n_valid_draws"] == pytest.approx(4000 * 168 / 256, rel=0.05)
    assert -1 <= out["pearson_low"] < out["pearson_high"] <= 1


def test_relation_needs_both_intervals_on_one_side() -> None:
    row = {"pearson_low": 0.2, "pearson_high": 0.9, "fisher_low": 0.1, "fisher_high": 0.95}
    assert alignment._relation(row) == alignment.RISES
    assert alignment._relation({**row, "fisher_low": -0.3}).startswith("no clear relation")
    neg = {"pearson_low": -0.9, "pearson_high": -0.2, "fisher_low": -0.95, "fisher_high": -0.1}
    assert alignment._relation(neg) == alignment.FALLS


def _table() -> pd.DataFrame:
    """Two benchmarks (one greedy: k = 1 only; one with 2 samples) x 4 models, one reward."""
    rows = []
    gains = {"a": 0.05, "b": 0.10, "c": 0.20, "d": 0.40}
    base = {("a", "g"): 0.1, ("b", "g"): 0.2, ("c", "g"): 0.3, ("d", "g"): 0.4,
            ("a", "s"): 0.4, ("b", "s"): 0.3, ("c", "s"): 0.2, ("d", "s"): 0.1}
    for m in "abcd":
        for bench, ks in (("g", [1]), ("s", [1, 2])):
            for k in ks:
                rows.append({"model": m, "family": m, "benchmark": bench, "samples": max(ks), "temperature": 0.0,
                             "k": k, "k_is_max": k == max(ks), "base_pass_at_k": base[(m, bench)] + 0.1 * (k - 1),
                             "reward": "random", "kind": "spurious", "variant": "clip", "step": 10, "n_seeds": 1,
                             "gain": gains[m] + (0.01 if bench == "s" else 0), "gain_ci_low": 0.0,
                             "gain_ci_high": 0.5})
    return pd.DataFrame(rows, columns=alignment.ALIGNMENT_COLUMNS)


def test_correlations_per_k_and_at_the_largest_k() -> None:
    t = _table()
    c = alignment.correlations(t, n_boot=300, seed=1).set_index("k")
    assert list(c.index) == ["max", "1", "2"] and list(c.columns) == alignment.CORRELATION_COLUMNS[:3] + \
        alignment.CORRELATION_COLUMNS[4:]
    assert c.loc["max", "n_cells"] == 8 and c.loc["1", "n_cells"] == 8 and c.loc["2", "n_cells"] == 4
    # k = 2: only the sampled benchmark, where pass@k falls as the gain rises: a monotone fall, rho = -1
    two = t[t["k"] == 2]
    assert c.loc["2", "spearman_rho"] == pytest.approx(-1.0)
    assert c.loc["2", "pearson_r"] == pytest.approx(np.corrcoef(two["base_pass_at_k"], two["gain"])[0, 1])
    top = t[t["k_is_max"]]
    assert c.loc["max", "pearson_r"] == pytest.approx(np.corrcoef(top["base_pass_at_k"], top["gain"])[0, 1])
    one = t[t["k"] == 1]
    assert c.loc["1", "pearson_r"] == pytest.approx(np.corrcoef(one["base_pass_at_k"], one["gain"])[0, 1])
    assert alignment.correlations(t.iloc[:0]).empty


def test_summary_paragraph_counts_what_it_could_judge(tmp_path) -> None:
    """Three cells: r is reported, no interval, and the spurious reward is counted as not judged."""
    t = _table()
    t = t[(t["benchmark"] == "g") & (t["model"] != "d")]
    corr = alignment.correlations(t, n_boot=200)
    cfg = {"rewards": {"random": {"spec": "random(0.5)", "labels": "true_labels", "variants": ["clip"]}}}
    paths = {k: tmp_path / "aggregate" / f"{k}.csv" for k in ("alignment", "alignment_corr")}
    paths["fig_alignment"] = tmp_path / "figures" / "alignment.png"
    text = alignment.summary_section(t, corr, cfg, paths, tmp_path, alpha=0.05)["text"]
    r = np.corrcoef(t["base_pass_at_k"], t["gain"])[0, 1]
    assert f"random (spurious): Pearson r = {r:+.2f}, Spearman ρ = +1.00, n = 3: too few cells to judge" in text
    assert "(both intervals above 0): 0 of 1 (1 with too few cells to judge)." in text
    assert "With only 3 cells these intervals are wide" in text and "(figures/alignment.png)" in text
    assert alignment.summary_section(t.iloc[:0], alignment.correlations(t.iloc[:0]), cfg, paths, tmp_path,
                                     alpha=0.05) is None
