"""Answer extraction, shared by every trainer, the rewards and evaluation.

Extraction follows the Qwen2.5-Math parser the paper used (the Minerva phrase "final
answer is $...$. I hope", else the last ``\\boxed{}``, else "the answer is X", else the
last number), but it is written to be linear-time and total: it never raises, whatever
bytes a policy emits. Nothing from a model is ever executed; it is only parsed.

Deliberate differences from the parser (docs/fidelity.md): "the answer is X" ends at the
sentence (the parser takes all the remaining text, which then never grades as equal), and
answers are returned as written; the parser's ``strip_string`` normalisation lives in
:mod:`.normalize` and is applied where the authors' runs depended on it (votes, the
format reward, empty answers), while grading (math-verify) reads the raw answer.
"""

from __future__ import annotations

import re

from .counters import count as _count

# --------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------

_LAST_NUMBER = re.compile(r"-?\d*\.?\d+")
_NEWLINES = re.compile(r"\n\s*")
_BRACES = re.compile(r"[{}]")
_TOKEN = re.compile(r"[^\s$]+")


def brace_content(s: str) -> str:
    """Content of the group opening at ``s[0] == '{'``; the rest of ``s`` if never closed.

    Counts every brace, escaped or not, like the Qwen parser, but jumps brace to brace so a
    megabyte of text costs one regex scan rather than a Python loop per character.
    """
    depth = 0
    for m in _BRACES.finditer(s):
        if m.group() == "{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return s[1 : m.start()]
    return s[1:]


def _after_last_box(text: str) -> str | None:
    """The argument of the last ``boxed``/``fbox`` in ``text``, or None if there is none."""
    i = text.rfind("boxed")
    j = text.rfind("fbox")
    if i < 0 and j < 0:
        return None
    rest = text[i + 5 :] if i >= 0 and (i + 5 >= j + 4) else text[j + 4 :]
    if rest.startswith("{"):
        return brace_content(rest)
    # ``\boxed 5``: LaTeX boxes one token; models mean the whole number, so take the word
    m = _TOKEN.search(rest.split("$", 1)[0])
    return m.group() if m else ""


def _after_phrase(text: str, phrase: str) -> str | None:
    """``X`` in "...<phrase> X": a ``$...$`` span if it starts with ``$``, else to the sentence end."""
    k = text.rfind(phrase)
    if k < 0:
        return None
    rest = text[k + len(phrase) :].lstrip()
    if rest.startswith(":"):
        rest = rest[1:].lstrip()
    if rest.startswith("$"):
        rest = rest.lstrip("$")
        return rest.split("$", 1)[0]
    rest = rest.split("\n", 1)[0]
    return re.split(r"\.\s", rest, maxsplit=1)[0]


def _minerva(text: str) -> str | None:
    """The parser's first rule: ``X`` in "final answer is $X$. I hope" (Minerva's few-shot form)."""
    if "final answer is $" not in text or "$. I hope" not in text:
        return None
    return text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()


def _last_number(text: str) -> str | None:
    last = None
    for m in _LAST_NUMBER.finditer(text.replace(",", "")):
        last = m
    return last.group() if last else None


def _clean(pred: str) -> str:
    """The Qwen parser's post-processing: drop newlines, a leading ':' and a trailing '.' or '/'."""
    pred = _NEWLINES.sub("", pred).strip()
    if pred.startswith(":"):
        pred = pred[1:]
    if pred.endswith("."):
        pred = pred[:-1]
    if pred.endswith("/"):
        pred = pred[:-1]
    return pred.strip()


def r1_answer_span(response: str) -> str:
    """Text after the last ``<answer>``, cut at the literal ``</answer>``.

    The authors' ``rstrip("</answer>")`` strips a *set of characters* (``"yes</answer>"``
    becomes ``"y"``, and text after the tag is kept); we cut at the tag instead. With no ``<answer>``
    tag the whole response is used, like the authors' ``split("<answer>")[-1]``.
    """
    return response.rsplit("<answer>", 1)[-1].split("</answer>", 1)[0]


def extract_answer(response: str, r1: bool = False) -> str | None:
    """The final answer in ``response``, or None when there is nothing answer-like.

    Order, as the Qwen parser: the Minerva phrase "final answer is $...$. I hope" (before
    any box), then the last ``\\boxed{...}``/``\\fbox{...}`` (brace-matched; ``\\boxed 5`` too), then
    "final answer is $...$", then "the answer is X" / "final answer is X" / "答案是", then the
    last number ``-?\\d*\\.?\\d+`` with commas removed. An empty box gives None (no fallback
    to the last number, as in the Qwen parser). Never raises; linear in ``len(response)``.
    """
    try:
        if not isinstance(response, str):
            return None
        text = response.replace("\u043a\u0438", "")  # the Qwen parser drops stray "ки" tokens
        if r1:
            text = r1_answer_span(text)
        pred = _minerva(text)
        if pred is None:
            pred = _after_last_box(text)
        if pred is None and "final answer is $" in text:  # Minerva style
            pred = _after_phrase(text, "final answer is")
        if pred is None:
            for phrase in ("he answer is", "final answer is", "答案是"):
                pred = _after_phrase(text, phrase)
                if pred is not None:
                    break
        if pred is None:
            pred = _last_number(text)
        if pred is None:
            return None
        pred = _clean(pred)
        return pred or None
    except Exception:  # pragma: no cover - defensive: extraction must never take a run down
        _count("errors")
        return None

