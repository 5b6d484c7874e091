"""The paper's rewards as pure functions, and a small spec language that combines them.

Every trainer (TRL in the main thread, OpenRLHF from threads) and the evaluation code score
responses through this module, so a reward means the same thing everywhere. A base reward is
``(response, label, ctx) -> float`` returning exactly 0.0 or 1.0; :func:`parse_reward` turns
a spec such as ``"format AND NOT python"`` into a :class:`Reward` that never raises.

Deviations from the authors' code (docs/paper-setup.md, quirks 2, 8 and 10) are deliberate and documented where
they happen: the random reward is a hash of (seed, prompt id, sample index) rather than an
unseeded global RNG, r1 answers are cut at the literal ``</answer>`` tag, grading is
math-verify (unreduced fractions count as equal), and the repetition detector is linear-time
but gives identical verdicts. An empty label follows ``RewardContext.empty_label``
(``labelling.empty_majority``): ``authors`` scores 1 a response with no extractable answer,
as their grader's ``"" == ""`` did. docs/fidelity.md lists every setting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .equivalence import MAX_ANSWER_CHARS, grade, grade_many
from .extract import brace_content as _brace_content
from .extract import extract_answer, r1_answer_span
from .normalize import strip_string, vote_key
from .style import detect_repetition, is_code

__all__ = [
    "REWARD_NAMES",
    "Reward",
    "RewardContext",
    "RewardFn",
    "EMPTY_LABEL_RULES",
    "detect_repetition",
    "format_authors",
    "empty_label_score",
    "format_reward",
    "ground_truth",
    "has_answer",
    "no_python",
    "no_repetition",
    "parse_reward",
    "python_reward",
    "random_reward",
    "reward_stats",
    "score",
]

log = logging.getLogger(__name__)

#: Seconds of math-verify time one ground-truth check may take before it scores 0.
GROUND_TRUTH_TIMEOUT = 5.0


#: What ground truth does with an empty label (``labelling.empty_majority``): ``zero`` scores
#: every response 0; ``authors`` scores 1 a response with no extractable answer, as the
#: authors' grader did (its ``"" == ""``), and 0 any response with an answer.
EMPTY_LABEL_RULES = ("zero", "authors")


@dataclass(frozen=True)
class RewardContext:
    """What a reward may know besides the text: enough to make random rewards reproducible."""

    seed: int = 0
    prompt_id: str = ""
    sample_index: int = 0
    r1: bool = False  # the model answers in the r1 <think>/<answer> template
    empty_label: str = "zero"  # one of EMPTY_LABEL_RULES

    def __post_init__(self) -> None:
        if self.empty_label not in EMPTY_LABEL_RULES:
            raise ValueError(
                f"RewardContext.empty_label: {self.empty_label!r} is not allowed; allowed values: "
                + ", ".join(EMPTY_LABEL_RULES)
            )


RewardFn = Callable[[str, "str | None", RewardContext], float]
_DEFAULT_CTX = RewardContext()


def _text(response: object) -> str:
    """Response text; TRL's conversational completions are lists of ``{"content": ...}`` messages."""
    if isinstance(response, str):
        return response
    if response is None:
        return ""
    if isinstance(response, (list, tuple)):
        return "".join(m.get("content", "") if isinstance(m, dict) else str(m) for m in response)
    return str(response)


# --------------------------------------------------------------------------------------------
# base rewards
# --------------------------------------------------------------------------------------------


def ground_truth(response: str, label: str | None, ctx: RewardContext = _DEFAULT_CTX) -> float:
    """1 if the extracted answer is equivalent to ``label``.

    Majority-vote, incorrect-label and one-shot rewards are this same function on other labels.
    As in the paper, ``\\boxed{}`` is not required: extraction falls back to the last number.
    An empty label (every labelling sample answerless) follows ``ctx.empty_label``
    (:func:`empty_label_score`).
    """
    if label is None:
        return 0.0
    pred = extract_answer(_text(response), r1=ctx.r1)
    if not str(label).strip():
        return empty_label_score(pred, ctx)
    return 1.0 if pred is not None and grade(pred, str(label), GROUND_TRUTH_TIMEOUT) else 0.0


def has_answer(pred: str | None) -> bool:
    """Whether an extracted answer survives the parser's normalisation (``\\text{}`` does not)."""
    return bool(vote_key(pred))


def empty_label_score(pred: str | None, ctx: RewardContext = _DEFAULT_CTX) -> float:
    """Ground truth against an empty label: 0 (``zero``), or 1 iff ``pred`` is no answer (``authors``).

    The authors' parser returns ``""`` when it finds nothing and their grader compares
    normalised strings first, so ``"" == ""`` scored 1: on their majority/incorrect sets with
    empty labels a response with no extractable answer was rewarded.
    """
    if ctx.empty_label == "authors":
        return 0.0 if has_answer(pred) else 1.0
    return 0.0


def format_reward(response: str, label: str | None = None, ctx: RewardContext = _DEFAULT_CTX) -> float:
    """The paper's ``box_only_format``: 1 if the last ``boxed`` holds a non-empty answer.

    ``\\boxed{}`` scores 0 and ``boxed{3}`` (no backslash) scores 1, as in the authors' code;
    the box's content must survive their full ``strip_string`` (:mod:`.normalize`), so
    ``\\boxed{$}``, ``\\boxed{\\text{}}`` and ``\\boxed{and}`` score 0 too.
    With the r1 template only the text after the last ``<answer>`` counts.
    """
    text = _text(response)
    if ctx.r1:
        text = r1_answer_span(text)
    i = text.rfind("boxed")
    if i < 0:
        return 0.0
    rest = text[i + 5 :]
    ans = _brace_content(rest) if rest.startswith("{") else rest.split("$", 1)[0].strip()
    ans = re.sub(r"\n\s*", "", ans)
    if ans.startswith(":"):
        ans = ans[1:]
    if ans.endswith("."):
        ans = ans[:-1]
    if ans.endswith("/"):
        ans = ans[:-1]
    # strip_string runs ~100 unit patterns twice: on a megabyte "answer" (hostile output) that is
    # seconds per call. Like the grader (MAX_ANSWER_CHARS), look at the first 1,000 characters only:
    # no real answer is longer, and a longer one is non-empty in practice.
    return 1.0 if strip_string(ans[:MAX_ANSWER_CHARS]) else 0.0


def format_authors(response: str, label: str | None = None, ctx: RewardContext = _DEFAULT_CTX) -> float:
    """The format reward as the authors' scripts ran it: ``format`` except on r1 models.

    With the r1 template (``ctx.r1``) their ``box_only_format_r1_style`` needs no box at all:
    1 iff ``text.split("<answer>")[-1].rstrip("</answer>")`` is non-empty (``rstrip`` strips
    the *characters* of ``</answer>``, their quirk, kept). Without an ``<answer>`` tag that is
    the whole response, so nearly every response scores 1: a nearly constant reward, nearly
    zero advantage. The paper's format numbers for the r1 models (base Llama-3.1-8B,
    Llama-3.2-3B, OLMo-2-7B; OLMo's +0.0) need this term; ``format`` (a box inside the
    answer span) is what the paper's text describes. Without r1 it is ``format``.
    """
    if not ctx.r1:
        return format_reward(response, label, ctx)
    return 1.0 if _text(response).split("<answer>")[-1].rstrip("</answer>") else 0.0


def python_reward(response: str, label: str | None = None, ctx: RewardContext = _DEFAULT_CTX) -> float:
    """1 if the response mentions "python" in any case (the paper's ``contain_python_wo_backticks``)."""
    return 1.0 if is_code(_text(response)) else 0.0


def no_python(response: str, label: str | None = None, ctx: RewardContext = _DEFAULT_CTX) -> float:
    """1 if the response never mentions "python" (any case)."""
    return 1.0 - python_reward(response, label, ctx)


def random_reward(p: float) -> RewardFn:
    """Bernoulli(``p``) that ignores the text, drawn from a hash of (seed, prompt id, sample index).

    The authors used Python's unseeded global ``random``; a hash gives the same draw in every
    thread, process and rerun, and the same uniform for every ``p`` (so thresholds nest).
    """
    p = float(p)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"random(p) needs 0 <= p <= 1, got {p!r}")

    def random_p(response: str, label: str | None = None, ctx: RewardContext = _DEFAULT_CTX) -> float:
        return 1.0 if _uniform(ctx) < p else 0.0

    random_p.__name__ = f"random({p!r})"
    random_p.__qualname__ = random_p.__name__
    return random_p


def _uniform(ctx: RewardContext) -> float:
    """A uniform in [0, 1) that depends only on (seed, prompt_id, sample_index)."""
    key = json.dumps([int(ctx.seed), str(ctx.prompt_id), int(ctx.sample_index)], ensure_ascii=True)
    digest = hashlib.blake2b(key.encode("ascii"), digest_size=8, person=b"spurious-random").digest()
    return int.from_bytes(digest, "big") / 2.0**64


def no_repetition(response: str, label: str | None = None, ctx: RewardContext = _DEFAULT_CTX) -> float:
    """0 when the repetition detector fires (App. E of the paper), else 1."""
    return 0.0 if detect_repetition(_text(response)) else 1.0


_BASE: dict[str, RewardFn] = {
    "ground_truth": ground_truth,
    "format": format_reward,
    "format_authors": format_authors,
    "python": python_reward,
    "no_python": no_python,
    "no_repetition": no_repetition,
}
#: Base names a spec may use; ``random(<p>)`` takes a probability in [0, 1].
REWARD_NAMES: tuple[str, ...] = (*_BASE, "random(<p>)")
#: Cheapest first, so a compound reward rarely pays for grading (results are identical).
_COST = {"python": 0, "no_python": 0, "random": 0, "format": 1, "format_authors": 1, "no_repetition": 2, "ground_truth": 3}


# --------------------------------------------------------------------------------------------
# compound rewards
# --------------------------------------------------------------------------------------------

_stats_lock = threading.Lock()
_failures = 0


def reward_stats() -> dict[str, int]:
    """How many reward evaluations raised inside and were scored 0 (this process)."""
    with _stats_lock:
        return {"failures": _failures}


def _count_failure() -> None:
    global _failures
    with _stats_lock:
        _failures += 1


@dataclass(frozen=True)
class _Term:
    name: str  # "format", "random(0.5)", ...
    negated: bool
    fn: RewardFn
    cost: int

    @property
    def text(self) -> str:
        return ("NOT " if self.negated else "") + self.name


class Reward:
    """A parsed spec: callable ``(response, label, ctx) -> 0.0 | 1.0`` that never raises.

    Any exception inside is logged once, counted (``.failures`` and :func:`reward_stats`)
    and scored 0.0. Pickles as its spec, so it can be shipped to worker processes.
    """

    def __init__(self, terms: Sequence[_Term]) -> None:
        self._terms = tuple(terms)
        self._order = tuple(sorted(self._terms, key=lambda t: t.cost))
        self.spec = " AND ".join(t.text for t in self._terms)
        self.needs_label = any(t.name == "ground_truth" for t in self._terms)
        self.failures = 0
        self._lock = threading.Lock()

    def __call__(self, response: str, label: str | None = None, ctx: RewardContext | None = None) -> float:
        ctx = ctx if ctx is not None else _DEFAULT_CTX
        try:
            for term in self._order:
                value = term.fn(response, label, ctx) == 1.0
                if value == term.negated:
                    return 0.0
            return 1.0
        except Exception:
            self._failed()
            return 0.0

    def batch(
        self,
        responses: Sequence[str],
        labels: Sequence[str | None] | None = None,
        ctxs: Sequence[RewardContext] | None = None,
        workers: int | None = None,
    ) -> list[float]:
        """Score many responses; ground truth is graded in parallel with :func:`grade_many`.

        Without ``ctxs`` the i-th response gets ``RewardContext(sample_index=i)``, so random
        rewards still differ between responses.
        """
        n = len(responses)
        labels = list(labels) if labels is not None else [None] * n
        ctxs = list(ctxs) if ctxs is not None else [RewardContext(sample_index=i) for i in range(n)]
        if len(labels) != n or len(ctxs) != n:
            raise ValueError(f"batch: {n} responses, {len(labels)} labels, {len(ctxs)} contexts")
        out = [1.0] * n
        alive = list(range(n))
        for term in self._order:
            if not alive:
                break
            if term.name == "ground_truth":
                values = self._ground_truth_many(responses, labels, ctxs, alive, workers)
            else:
                values = []
                for i in alive:
                    try:
                        values.append(term.fn(responses[i], labels[i], ctxs[i]) == 1.0)
                    except Exception:
                        self._failed()
                        values.append(term.negated)  # forces 0 below
            survivors = []
            for i, v in zip(alive, values, strict=True):
                if v == term.negated:
                    out[i] = 0.0
                else:
                    survivors.append(i)
            alive = survivors
        return out

    def _ground_truth_many(
        self,
        responses: Sequence[str],
        labels: Sequence[str | None],
        ctxs: Sequence[RewardContext],
        idx: list[int],
        workers: int | None,
    ) -> list[bool]:
        preds = [extract_answer(_text(responses[i]), r1=ctxs[i].r1) for i in idx]
        empty = [labels[i] is not None and not str(labels[i]).strip() for i in idx]
        pairs = [(p, None if labels[i] is None or e else str(labels[i]))
                 for p, i, e in zip(preds, idx, empty, strict=True)]
        graded = grade_many(pairs, workers=workers, timeout=GROUND_TRUTH_TIMEOUT)  # type: ignore[arg-type]
        return [empty_label_score(p, ctxs[i]) == 1.0 if e else g
                for p, i, e, g in zip(preds, idx, empty, graded, strict=True)]

    def _failed(self) -> None:
        with self._lock:
            self.failures += 1
            first = self.failures == 1
        _count_failure()
        if first:
            log.exception("reward %r raised; scoring 0 (further failures are only counted)", self.spec)

    def __repr__(self) -> str:
        return f"Reward({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reward) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def __reduce__(self) -> tuple:
        return (parse_reward, (self.spec,))


_RANDOM = re.compile(r"random\(\s*([^()]*?)\s*\)")
_ALLOWED = (
    "allowed: " + ", ".join(REWARD_NAMES) + " (0 <= p <= 1), each optionally prefixed by 'NOT ',"
    " joined by ' AND '"
)


def parse_reward(spec: str) -> Reward:
    """Parse e.g. ``"format AND no_python"``, ``"NOT format"``, ``"random(0.5)"``.

    Grammar: ``term (" AND " term)*``, ``term := ["NOT "] name``, names from
    :data:`REWARD_NAMES`. Raises ValueError naming the bad token and the allowed names.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty reward spec {spec!r}; {_ALLOWED}")
    terms = []
    for raw in re.split(r"\s+AND\s+", spec.strip()):
        tok = raw.strip()
        negated = False
        while tok.startswith("NOT ") or tok.startswith("NOT\t"):
            negated = not negated
            tok = tok[4:].strip()
        if tok in _BASE:
            terms.append(_Term(tok, negated, _BASE[tok], _COST[tok]))
            continue
        m = _RANDOM.fullmatch(tok)
        if m:
            try:
                p = float(m.group(1))
            except ValueError:
                p = math.nan
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"bad probability in {tok!r} (spec {spec!r}): need 0 <= p <= 1; {_ALLOWED}")
            terms.append(_Term(f"random({m.group(1)})", negated, random_reward(p), _COST["random"]))
            continue
        raise ValueError(f"unknown reward {tok!r} in spec {spec!r}; {_ALLOWED}")
    return Reward(terms)


def score(
    spec: str | Reward,
    responses: Sequence[str],
    labels: Sequence[str | None] | None = None,
    ctxs: Sequence[RewardContext] | None = None,
    workers: int | None = None,
) -> list[float]:
    """Batch helper: ``parse_reward(spec).batch(responses, labels, ctxs)``."""
    reward = spec if isinstance(spec, Reward) else parse_reward(spec)
    return reward.batch(responses, labels, ctxs, workers=workers)
