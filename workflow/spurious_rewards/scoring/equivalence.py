"""Equivalence grading: cheap in-process verdicts, input rejection, and the public API.

Grading uses math-verify (the paper used a sympy ``grade_answer``; docs/paper-setup.md,
quirk 8). Most calls never reach sympy: exact matches and plain integers/decimals/fractions
(AIME ``025`` vs ``25``, AMC ``142.0`` vs ``142``) are decided in-process, and absurd
inputs (huge, power towers, factorials of powers) are rejected cheaply as wrong. The rest
goes to the killable worker pool (:mod:`.workers`). Nothing from a model is ever
executed; it is only parsed.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from fractions import Fraction

from .counters import cache_get as _cache_get
from .counters import cache_put as _cache_put
from .counters import count as _count
from .extract import brace_content as _brace_content
from .workers import default_workers as _default_workers
from .workers import inprocess as _inprocess
from .workers import worker_outcomes as _worker_outcomes

log = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 1000
#: Integer exponents with more digits than this are rejected (``x^{100000}``).
MAX_EXPONENT_DIGITS = 4
#: Bracket nesting deeper than this is rejected (latex2sympy's parser slows down per level).
MAX_NESTING = 24


# --------------------------------------------------------------------------------------------
# cheap decisions (no sympy)
# --------------------------------------------------------------------------------------------

_WRAPPERS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[!,;: ]|\\left|\\right|\s+|\$")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_FRAC = re.compile(r"([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}")
_FRAC_SHORT = re.compile(r"([+-]?)\\frac(\d)(\d)")
_SLASH = re.compile(r"([+-]?\d+)/(\d+)")


def _normalise(s: str) -> str:
    """Spacing, ``$``, ``\\text{}`` wrappers and ``dfrac``/``tfrac`` removed; sympy-free."""
    s = _WRAPPERS.sub(r"\1", s)
    s = _SPACING.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1]
    return s


def _as_rational(s: str) -> tuple[Fraction, bool] | None:
    """(value, exact) for plain numbers and integer fractions; ``exact`` is False for decimals.

    Decimals with a non-zero fractional part are not "exact" because math-verify compares
    them with rounding (``0.333333`` equals ``1/3`` there); only exact forms may be declared
    *unequal* without sympy.
    """
    if len(s) > 60:
        return None
    if _DECIMAL.fullmatch(s):
        body = s.lstrip("+-")
        frac_part = body.split(".", 1)[1] if "." in body else ""
        value = Fraction(s[:-1] if s.endswith(".") else s)
        return value, frac_part.strip("0") == ""
    for pattern in (_FRAC, _FRAC_SHORT):
        m = pattern.fullmatch(s)
        if m:
            sign, num, den = m.groups()
            if int(den) == 0:
                return None
            value = Fraction(int(num), int(den))
            return (-value if sign == "-" else value), True
    m = _SLASH.fullmatch(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2))), True
    return None


def _cheap_verdict(pred: str, label: str) -> bool | None:
    """True/False when it is certain without sympy, else None."""
    if pred == label:
        return True
    p, g = _normalise(pred), _normalise(label)
    if p == g and p:
        return True
    rp, rg = _as_rational(p), _as_rational(g)
    if rp is None or rg is None:
        return None
    if rp[0] == rg[0]:
        return True
    if rp[1] and rg[1]:
        return False
    return None


_EXPONENT = re.compile(r"\^|\*\*")
_TOWER = re.compile(r"(\^|\*\*)\s*(?:\d+|[A-Za-z])\s*(\^|\*\*)")  # a^b^c without braces
_OPEN = "{(["
_CLOSE = "})]"


def _exponent_arg(s: str, start: int) -> str:
    """The exponent written after a ``^``/``**`` ending at ``start``."""
    rest = s[start:].lstrip()
    if rest.startswith("{"):
        return _brace_content(rest)
    if rest.startswith("("):
        depth = 0
        for k, c in enumerate(rest):
            depth += c == "("
            depth -= c == ")"
            if depth == 0:
                return rest[1:k]
        return rest[1:]
    m = re.match(r"[+-]?(?:\d+|\\?[A-Za-z]+)", rest)
    return m.group() if m else rest[:1]


def _reject_reason(s: str) -> str | None:
    """Why ``s`` must not reach sympy, or None. Cheap: O(len) apart from short exponent scans."""
    if len(s) > MAX_ANSWER_CHARS:
        return "too long"
    if "\x00" in s or any("\ud800" <= c <= "\udfff" for c in s):
        return "control/surrogate characters"
    depth = worst = 0
    for c in s:
        if c in _OPEN:
            depth += 1
            worst = max(worst, depth)
        elif c in _CLOSE:
            depth -= 1
    if worst > MAX_NESTING:
        return "nesting"
    if _TOWER.search(s):
        return "power tower"
    for m in _EXPONENT.finditer(s):
        arg = _exponent_arg(s, m.end())
        if "^" in arg or "**" in arg:
            return "power tower"
        digits = re.sub(r"[\s{}()+-]", "", arg)
        if digits.isdigit() and len(digits.lstrip("0")) > MAX_EXPONENT_DIGITS:
            return "huge exponent"
    if re.search(r"\d{5,}\s*!", s):
        return "huge factorial"
    if "!" in s and re.search(r"[)}\]]\s*!", s) and ("^" in s or "**" in s):
        return "factorial of a power"
    return None


# --------------------------------------------------------------------------------------------
# public grading API
# --------------------------------------------------------------------------------------------


def _prepare(pred: object, label: object) -> tuple[str, str] | bool:
    """Either the final verdict (bool) or the stripped (pred, label) that needs math-verify."""
    if pred is None or label is None:
        return False
    pred_s = pred if isinstance(pred, str) else str(pred)
    label_s = label if isinstance(label, str) else str(label)
    pred_s, label_s = pred_s.strip(), label_s.strip()
    if not pred_s or not label_s:
        return False
    hit = _cache_get((pred_s, label_s))
    if hit is not None:
        _count("cache_hits")
        return hit
    verdict = None if len(pred_s) > MAX_ANSWER_CHARS else _cheap_verdict(pred_s, label_s)
    if verdict is not None:
        _count("cheap")
        _cache_put((pred_s, label_s), verdict)
        return verdict
    if _reject_reason(pred_s) or _reject_reason(label_s):
        _count("rejected")
        _cache_put((pred_s, label_s), False)
        return False
    return pred_s, label_s


def _clamp_timeout(timeout: float) -> float:
    """A usable deadline: NaN, infinite or non-positive values fall back to 5 s (never 'forever')."""
    try:
        t = float(timeout)
    except (TypeError, ValueError):
        return 5.0
    return max(0.05, t) if math.isfinite(t) and t > 0 else 5.0


def _settle(key: tuple[str, str], code: str, timeout: float) -> bool:
    """Count an outcome code, cache it (unless no worker was available) and return the verdict."""
    if code == "x":
        code = _inprocess(key[0], key[1], timeout)
        if code == "x":
            _count("failures")
            return False
        _count("inprocess")
    if code == "t":
        _count("timeouts")
    elif code == "e":
        _count("errors")
    elif code == "c":
        _count("crashes")
    result = code == "1"
    _cache_put(key, result)
    return result


def grade(pred: str | None, label: str, timeout: float = 5.0) -> bool:
    """Whether ``pred`` is mathematically equivalent to ``label``; never raises or hangs.

    ``timeout`` bounds the math-verify part (seconds of worker time for this pair); an
    overrun, a crash, or a refused input scores False and is counted in
    :func:`grading_stats`. Safe from any thread and from daemonic worker processes.
    """
    try:
        _count("calls")
        prepared = _prepare(pred, label)
        if isinstance(prepared, bool):
            return prepared
        _count("sympy")
        timeout = _clamp_timeout(timeout)
        code = _worker_outcomes([prepared], timeout, _default_workers())[0]
        return _settle(prepared, code, timeout)
    except Exception:  # pragma: no cover - the contract is "never raises"
        log.exception("grade() failed; scoring 0")
        _count("failures")
        return False


def grade_many(
    pairs: Iterable[tuple[str | None, str]], workers: int | None = None, timeout: float = 5.0
) -> list[bool]:
    """Grade many ``(pred, label)`` pairs on up to ``workers`` processes (default: all cores).

    Order is preserved; duplicates are graded once. The result equals
    ``[grade(p, l) for p, l in pairs]`` except that pathological pairs may time out
    differently under load (they score False either way).
    """
    try:
        pairs = list(pairs)
        results: list[bool | None] = [None] * len(pairs)
        todo: dict[tuple[str, str], list[int]] = {}
        _count("calls", len(pairs))
        for i, (pred, label) in enumerate(pairs):
            prepared = _prepare(pred, label)
            if isinstance(prepared, bool):
                results[i] = prepared
            else:
                todo.setdefault(prepared, []).append(i)
        if todo:
            keys = list(todo)
            _count("sympy", len(keys))
            n = max(1, int(workers) if workers else _default_workers())
            timeout = _clamp_timeout(timeout)
            codes = _worker_outcomes(keys, timeout, n)
            for key, code in zip(keys, codes, strict=True):
                verdict = _settle(key, code, timeout)
                for i in todo[key]:
                    results[i] = verdict
        return [bool(r) for r in results]
    except Exception:  # pragma: no cover - fall back to the one-by-one path
        log.exception("grade_many() failed; grading one by one")
        return [grade(p, g, timeout) for p, g in pairs]
