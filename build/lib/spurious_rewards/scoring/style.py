"""Reasoning-style tests on response text: code reasoning and repetition.

Each test is defined once, here: the rewards (``python``, ``no_python``, ``no_repetition``),
the evaluation's per-sample flags, the classification of transitions, both training
backends' code frequency and the organisms all call these.
"""

from __future__ import annotations

__all__ = ["detect_repetition", "is_code"]


def is_code(response: str) -> bool:
    """Code reasoning as the paper defines it: the response mentions "python" (case-insensitive).

    This is the authors' ``contain_python_wo_backticks`` test (their code-reasoning
    classifier and the ``python`` reward): no fences needed, any case.
    """
    return "python" in response.lower()


def detect_repetition(
    text: str, min_rep_length: int = 10, max_rep_length: int = 256, min_repeats: int = 10
) -> bool:
    """True if some ``min_rep_length``..``max_rep_length`` character pattern occurs
    ``min_repeats`` times back to back (the authors' ``repetition_detection.py``).

    Same verdicts as their quadratic scan, in O(max_rep_length * n) vectorised work:
    ``min_repeats`` copies of a length-L pattern starting at s <=> ``text[i] == text[i+L]``
    for every i in [s, s + (min_repeats-1)*L). Each such run contains at least
    ``min_repeats - 2`` whole aligned blocks of L matches, so only runs of whole blocks are
    measured exactly.
    """
    if min_repeats < 3 or min_rep_length < 1:
        raise ValueError("detect_repetition needs min_repeats >= 3 and min_rep_length >= 1")
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    n = len(text)
    if n < min_rep_length * min_repeats:
        return False
    import numpy as np  # lazily: keeps `import spurious_rewards.scoring` cheap

    a = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    need_blocks = min_repeats - 2
    for L in range(min_rep_length, min(max_rep_length, n // min_repeats) + 1):
        need = (min_repeats - 1) * L
        eq = a[:-L] == a[L:]
        m = len(eq) // L
        if m < need_blocks:
            continue
        full = eq[: m * L].reshape(m, L).all(axis=1)
        if int(full.sum()) < need_blocks:
            continue
        edges = np.diff(np.concatenate(([0], full.view(np.int8), [0])))
        for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            k = int(end - start)
            if k < need_blocks:
                continue
            lo, hi = int(start) * L, int(end) * L
            left = eq[max(0, lo - L) : lo][::-1]
            right = eq[hi : hi + L]
            left_run = len(left) if left.all() else int(np.argmin(left))
            right_run = len(right) if right.all() else int(np.argmin(right))
            if left_run + k * L + right_run >= need:
                return True
    return False
