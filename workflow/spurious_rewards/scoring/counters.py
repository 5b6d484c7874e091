"""Grading counters and the verdict cache (per process; reset after fork).

Why a module of its own: extraction, the cheap checks and the worker pool all count what
happened to a pair, and the fork handler must reset exactly these locks.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

_CACHE_SIZE = 1 << 16

_STAT_KEYS = (
    "calls",  # grade() calls plus grade_many() pairs
    "cache_hits",
    "cheap",  # decided without sympy (exact / numeric match)
    "rejected",  # refused before sympy (too long, power tower, NUL, ...) -> False
    "sympy",  # sent to a math-verify worker
    "timeouts",  # math-verify overran its deadline -> worker killed, False
    "errors",  # math-verify raised inside the worker, or extraction failed -> False
    "crashes",  # the worker died on this pair (segfault, OOM kill) -> False
    "failures",  # no worker could be started and no in-process fallback (non-main thread) -> False
    "inprocess",  # graded in this process because no worker could be started
    "workers_started",
    "worker_start_failures",
)
_stats_lock = threading.Lock()
_stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
_cache_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str], bool] = OrderedDict()


def count(key: str, n: int = 1) -> None:
    """Add ``n`` to one counter."""
    with _stats_lock:
        _stats[key] = _stats.get(key, 0) + n


def grading_stats() -> dict[str, int]:
    """Counters for this process, so callers can report how many answers scored 0 by force.

    ``forced_false`` (= rejected + timeouts + errors + crashes + failures) is the number of
    pairs scored False without math-verify reaching a verdict.
    """
    with _stats_lock:
        out = dict(_stats)
    out["forced_false"] = sum(out[k] for k in ("rejected", "timeouts", "errors", "crashes", "failures"))
    return out


def reset_grading_stats() -> None:
    """Zero the counters (e.g. between evaluation benchmarks)."""
    with _stats_lock:
        for k in _stats:
            _stats[k] = 0


def clear_cache() -> None:
    """Forget every cached verdict, so the next grading of any pair takes the full path (and counts)."""
    with _cache_lock:
        _cache.clear()


def cache_get(key: tuple[str, str]) -> bool | None:
    with _cache_lock:
        v = _cache.get(key)
        if v is not None:
            _cache.move_to_end(key)
        return v


def cache_put(key: tuple[str, str], value: bool) -> None:
    with _cache_lock:
        _cache[key] = value
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def _after_fork_in_child() -> None:
    """A forked child must not inherit locks its parent may hold."""
    global _stats_lock, _cache_lock
    _stats_lock = threading.Lock()
    _cache_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
