"""Seed summaries and hierarchical bootstrap confidence intervals.

Why hierarchical: a reported gain has two sources of noise, the training seed
(the paper's curves move by several points between runs) and the finite
benchmark (30 AIME problems). A CI over problems alone is too narrow when seeds
disagree; a CI over three seeds alone ignores the benchmark. Each bootstrap draw
therefore resamples seeds with replacement, then problems with replacement, and
takes the mean over the resampled (seed, problem) grid. The same problem draw
is applied to the base model and the checkpoint, so a gain's CI is *paired*
(problem difficulty cancels). Within-problem samples of avg@k benchmarks are
not resampled: their per-problem mean is the unit.

Draws are count matrices (how often each seed/problem is drawn) applied by matrix products, so one call
bootstraps a whole stack of cells (every checkpoint step of a run group) at
once; they are seeded, so the same inputs always give the same intervals.
"""

from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:  # pandas only for seed_summary's frames: the evaluation jobs import this module too
    import pandas as pd

__all__ = [
    "CI",
    "blas_threads",
    "bootstrap_means",
    "gain_ci",
    "mean_ci",
    "percentile_ci",
    "problem_counts",
    "seed_counts",
    "seed_summary",
    "set_blas_threads",
    "VERDICTS",
    "verdict",
]


class CI(NamedTuple):
    """A point estimate with its (1 - alpha) interval."""

    estimate: float
    low: float
    high: float


# ----------------------------------------------------------------------------- BLAS threads

#: (set, get) entry points of the OpenBLAS that numpy's wheel bundles, by build (64-bit-int scipy build first)
_OPENBLAS_SYMBOLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                     ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
                     ("openblas_set_num_threads", "openblas_get_num_threads"))


@lru_cache(maxsize=1)
def _openblas() -> tuple | None:
    """(set, get) of the OpenBLAS numpy has loaded, or None (another BLAS, or not found: then nothing is changed).

    Looked up among the libraries numpy's wheel ships (``numpy.libs``), opened with
    RTLD_NOLOAD so only the copy numpy already uses is ever touched. (threadpoolctl does
    this for every BLAS; it is not a dependency of the project, and only this one is used.)
    """
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("lib*openblas*.so*")) if libs.is_dir() else []:
        try:
            lib = ctypes.CDLL(str(path), mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        for set_name, get_name in _OPENBLAS_SYMBOLS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                return setter, getter
    return None


def set_blas_threads(n: int) -> int | None:
    """Set numpy's OpenBLAS to ``n`` threads; returns the previous count (None where it cannot be set).

    Why: the bootstrap's GEMMs are small (tens of rows x ~500 problems x 2000 draws);
    OpenBLAS's default of one thread per core makes each ~10x dearer in CPU on a
    loaded machine, and worker processes that each run that many threads oversubscribe
    the cores. Also a ProcessPoolExecutor ``initializer``.
    """
    fns = _openblas()
    if fns is None:
        return None
    old = int(fns[1]())
    fns[0](int(n))
    return old


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """numpy's OpenBLAS at ``n`` threads inside the block, the previous count restored after."""
    old = set_blas_threads(n)
    try:
        yield
    finally:
        if old is not None:
            set_blas_threads(old)


@lru_cache(maxsize=64)
def problem_counts(n_boot: int, n_problems: int, seed: int) -> np.ndarray:
    """How often each problem is drawn in each replicate: ``[n_boot, n_problems]``, rows sum to n_problems.

    Cached and independent of the number of seeds: every cell with the same
    problems shares these draws (common random numbers), so a paired gain's
    replicates are exactly checkpoint minus base replicates, and a paper-size
    aggregation draws them once.
    """
    return _counts(n_boot, n_problems, np.random.default_rng([seed, 0, n_problems]))


@lru_cache(maxsize=64)
def _problem_weights(n_boot: int, n_problems: int, seed: int) -> np.ndarray:
    """problem_counts transposed to a contiguous float32 ``[n_problems, n_boot]``.

    Why: a contiguous float32 right-hand side makes the GEMM several times cheaper
    than a float64 transposed view, and float32 is exact for the counts and leaves
    the means accurate to ~1e-6, far below the 0.1 pp the intervals are shown at.
    """
    return np.ascontiguousarray(problem_counts(n_boot, n_problems, seed).T, dtype=np.float32)


@lru_cache(maxsize=64)
def seed_counts(n_boot: int, n_seeds: int, seed: int) -> np.ndarray:
    """How often each training seed is drawn in each replicate: ``[n_boot, n_seeds]``."""
    return _counts(n_boot, n_seeds, np.random.default_rng([seed, 1, n_seeds]))


def _counts(n_boot: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw n of n items with replacement, n_boot times; return the per-item counts (read-only)."""
    idx = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    counts = np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)
    counts.setflags(write=False)
    return counts


def bootstrap_means(x: np.ndarray, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Hierarchical bootstrap replicates of the grand mean of ``x[..., seeds, problems]``.

    Leading axes are independent cells sharing one set of draws; returns ``[..., n_boot]``.
    A 1-D ``x`` is one seed. Replicate b is ``sum_s sum_p c[b,s] w[b,p] x[s,p] / (S P)``
    with seed counts c and problem counts w (vectorised as one matmul).
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    n_seeds, n_problems = x.shape[-2:]
    if n_seeds == 0 or n_problems == 0:
        return np.full((*x.shape[:-2], n_boot), math.nan)
    w = _problem_weights(n_boot, n_problems, seed)
    c = seed_counts(n_boot, n_seeds, seed)
    # [..., S, B]: each seed's problem-resampled sum, as one 2-D GEMM (batched matmul is far slower)
    per_seed = (x.reshape(-1, n_problems).astype(np.float32) @ w).astype(float).reshape(*x.shape[:-1], n_boot)
    return (per_seed * c.T).sum(axis=-2) / (n_seeds * n_problems)


def percentile_ci(draws: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the last axis."""
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=-1)
    return lo, hi


def mean_ci(x: np.ndarray, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> CI:
    """Mean of ``x[seeds, problems]`` (or ``x[problems]``) with its hierarchical bootstrap CI."""
    x = np.asarray(x, dtype=float)
    lo, hi = percentile_ci(bootstrap_means(x, n_boot, seed), alpha)
    return CI(float(x.mean()), float(lo), float(hi))


def gain_ci(
    base_correct: np.ndarray, ckpt_correct: np.ndarray, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> CI:
    """Gain of checkpoints ``ckpt_correct[seeds, problems]`` over ``base_correct[problems]``.

    Paired: the same resampled problems enter both sides, so only the change per
    problem varies between replicates.
    """
    base = np.asarray(base_correct, dtype=float)
    ckpt = np.asarray(ckpt_correct, dtype=float)
    if ckpt.ndim == 1:
        ckpt = ckpt[None, :]
    if ckpt.shape[-1] != base.shape[-1]:
        raise ValueError(f"base has {base.shape[-1]} problems, checkpoints have {ckpt.shape[-1]}")
    return mean_ci(ckpt - base, n_boot, seed, alpha)


def seed_summary(df: pd.DataFrame, by: list[str], value: str = "value") -> pd.DataFrame:
    """Mean, sample sd (ddof 1; NaN for one seed) and number of seeds of ``value`` per ``by`` group."""
    out = df.groupby(by, sort=True, dropna=False)[value].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"std": "sd", "count": "n_seeds"})


#: The verdict labels, in the order tables list them.
VERDICTS = ("gain", "no clear gain", "loss")


def verdict(paper: CI | None, best: CI | None, clean: CI | None) -> tuple[str, str]:
    """A plain-words verdict for one (model, reward) from its gains' CIs, with the reason.

    ``paper``: gain over the paper-style baseline; ``best``: over the best prompt
    template; ``clean``: on the clean (generated) benchmarks. A missing CI (no
    baselines, no clean benchmark) is skipped, never counted as evidence.

    * **gain** when every available CI among ``best`` (else ``paper``) and
      ``clean`` lies above 0: the improvement survives the strongest baseline
      and appears on problems no model can have memorized;
    * **loss** when the ``paper`` or ``clean`` CI lies below 0: the model got
      worse than itself before RL, under the same prompt;
    * **no clear gain** otherwise, including a gain that vanishes against the
      best prompt or on clean data (the reason says which).
    """
    def above(ci: CI | None) -> bool:
        return ci is not None and ci.low > 0

    def below(ci: CI | None) -> bool:
        return ci is not None and ci.high < 0

    strongest = best if best is not None else paper
    if strongest is None and clean is None:
        return "no clear gain", "no gains measured"
    judged = [c for c in (strongest, clean) if c is not None]
    if all(above(c) for c in judged):
        return "gain", "CI above 0 against the best baseline" + (" and on clean data" if clean is not None else "")
    if below(paper) or below(clean):
        where = [n for n, c in (("the paper baseline", paper), ("clean data", clean)) if below(c)]
        return "loss", "CI below 0 on " + " and ".join(where)
    if above(strongest):
        return "no clear gain", "no gain on clean data"
    if above(paper) and best is not None:
        return "no clear gain", "gain over the paper baseline vanishes against the best prompt"
    return "no clear gain", "CI includes 0"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): P(at least one of k draws from n samples, c correct, is correct).

    With n == k it is the empirical "any of k correct" the paper reports.
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
