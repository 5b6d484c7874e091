"""spurious_rewards.stats: seed summaries and the hierarchical (seeds, then problems) bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spurious_rewards import stats


def test_bootstrap_is_seeded_and_vectorised() -> None:
    x = np.random.default_rng(0).random((3, 50))
    a = stats.bootstrap_means(x, n_boot=500, seed=7)
    assert a.shape == (500,)
    assert np.array_equal(a, stats.bootstrap_means(x, n_boot=500, seed=7))
    assert not np.array_equal(a, stats.bootstrap_means(x, n_boot=500, seed=8))
    # a stack of cells gives each cell's own replicates (shared draws)
    stack = np.stack([x, x + 1])
    both = stats.bootstrap_means(stack, n_boot=500, seed=7)
    assert both.shape == (2, 500)
    assert np.allclose(both[0], a) and np.allclose(both[1], a + 1)


def test_replicates_match_explicit_index_resampling() -> None:
    """Counts-times-values equals drawing seed and problem indices and averaging the resampled grid."""
    x = np.random.default_rng(1).random((3, 20))
    n_boot, seed = 50, 3
    c = stats.seed_counts(n_boot, 3, seed)
    w = stats.problem_counts(n_boot, 20, seed)
    for b in range(n_boot):
        s_idx = np.repeat(np.arange(3), c[b].astype(int))
        p_idx = np.repeat(np.arange(20), w[b].astype(int))
        assert stats.bootstrap_means(x, n_boot, seed)[b] == pytest.approx(x[np.ix_(s_idx, p_idx)].mean())


def test_percentile_coverage_of_a_bernoulli_mean_is_about_95_percent() -> None:
    rng = np.random.default_rng(2024)
    p, n, reps = 0.3, 200, 1000
    x = (rng.random((reps, 1, n)) < p).astype(float)  # reps independent benchmarks, one seed each
    lo, hi = stats.percentile_ci(stats.bootstrap_means(x, n_boot=1000, seed=0), 0.05)
    coverage = np.mean((lo <= p) & (p <= hi))
    assert 0.92 <= coverage <= 0.975, coverage


def test_ci_width_scales_as_one_over_sqrt_n() -> None:
    rng = np.random.default_rng(5)
    widths = {}
    for n in (400, 1600):
        x = (rng.random((200, 1, n)) < 0.5).astype(float)
        lo, hi = stats.percentile_ci(stats.bootstrap_means(x, n_boot=800, seed=1), 0.05)
        widths[n] = np.mean(hi - lo)
    assert widths[400] / widths[1600] == pytest.approx(2.0, rel=0.1)
    # and the width is the normal-theory one, 2 * 1.96 * sqrt(p (1 - p) / n)
    assert widths[400] == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 400), rel=0.1)


def test_seed_variance_widens_the_hierarchical_interval() -> None:
    """Seeds that disagree must widen the CI beyond what problems alone give."""
    rng = np.random.default_rng(9)
    n_seeds, n = 5, 300
    p_seed = rng.normal(0.5, 0.1, size=(200, n_seeds, 1)).clip(0.05, 0.95)
    x = (rng.random((200, n_seeds, n)) < p_seed).astype(float)
    lo, hi = stats.percentile_ci(stats.bootstrap_means(x, n_boot=600, seed=0), 0.05)
    pooled = x.reshape(200, 1, n_seeds * n)  # the same data, treated as one seed
    plo, phi = stats.percentile_ci(stats.bootstrap_means(pooled, n_boot=600, seed=0), 0.05)
    assert np.mean(hi - lo) > 2 * np.mean(phi - plo)


def test_gain_ci_is_paired() -> None:
    rng = np.random.default_rng(3)
    base = (rng.random(500) < 0.5).astype(float)
    ckpt = np.tile(base, (3, 1))
    ckpt[:, :50] = 1.0  # a fixed set of problems becomes correct
    true_gain = (1 - base[:50]).sum() / 500
    g = stats.gain_ci(base, ckpt, n_boot=1000, seed=0)
    assert g.estimate == pytest.approx(true_gain)
    assert g.low <= true_gain <= g.high
    # pairing: the interval reflects only the changed problems, far narrower than two independent CIs
    b = stats.mean_ci(base, n_boot=1000, seed=0)
    assert (g.high - g.low) < 0.5 * (b.high - b.low)
    # the same problem draws enter both sides: replicates of the gain = checkpoint minus base replicates
    assert np.allclose(stats.bootstrap_means(ckpt - base, 300, 4),
                       stats.bootstrap_means(ckpt, 300, 4) - stats.bootstrap_means(base, 300, 4))
    assert stats.gain_ci(base, np.tile(base, (2, 1)), 200, 0) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="problems"):
        stats.gain_ci(base, ckpt[:, :10])


def test_mean_ci_of_a_constant_is_a_point() -> None:
    ci = stats.mean_ci(np.full((2, 30), 0.25), n_boot=100)
    assert ci == pytest.approx((0.25, 0.25, 0.25))


def test_seed_summary_mean_sd_count() -> None:
    df = pd.DataFrame({"cell": ["a", "a", "a", "b"], "value": [0.1, 0.2, 0.3, 0.5]})
    out = stats.seed_summary(df, ["cell"]).set_index("cell")
    assert out.loc["a", "mean"] == pytest.approx(0.2)
    assert out.loc["a", "sd"] == pytest.approx(0.1)  # ddof 1
    assert out.loc["a", "n_seeds"] == 3
    assert np.isnan(out.loc["b", "sd"]) and out.loc["b", "n_seeds"] == 1
