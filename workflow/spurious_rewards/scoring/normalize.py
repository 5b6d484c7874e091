"""The answer normalisation of the Qwen2.5-Math parser (MATH's ``strip_string``), in full.

The authors' parser (``qwen_math_parser.strip_string``) runs on every extracted answer
before anything uses it, so it decides three things of the paper's runs that this
project reproduces:

* **majority-vote labels**: votes are counted on normalised answers, so ``\\dfrac12``,
  ``\\frac{1}{2}`` and ``1/2`` are one vote three times, not three single votes
  (:mod:`spurious_rewards.evaluation.labels`, ``labelling.vote: normalized``);
* **the format reward**: ``box_only_format`` is 1 iff the last box holds something that
  survives normalisation, so ``\\boxed{$}``, ``\\boxed{\\text{}}`` and ``\\boxed{and}``
  score 0 (:func:`spurious_rewards.scoring.rewards.format_reward`);
* **empty answers**: a response whose answer normalises to ``""`` has no extractable
  answer, which the authors' grader scores 1 against an empty label
  (``labelling.empty_majority: authors``).

It is a line-by-line port, quirks kept (``"and"`` is removed anywhere, ``"j"`` becomes
``"i"`` when there is no ``"i"``, the unit list strips words such as ``"m"`` or ``"s"``),
because the point is to count votes and format rewards as the authors did. One deviation:
their ``convert_word_number`` calls the ``word2number`` package, which turns any string
that *contains* a number word into that number (``"five cats"`` -> ``"5"``); this port
converts only strings made entirely of number words (``"twenty-five"`` -> ``"25"``), so
it needs no extra dependency. Grading never uses this function: math-verify grades the
raw answers (:mod:`.equivalence`).

Linear in the answer's length apart from the unit list (a fixed ~400 patterns, each
tried only when its text occurs). Never raises on a string.
"""

from __future__ import annotations

import re

__all__ = ["UNIT_TEXTS", "strip_string", "vote_key"]

_BASE_UNITS = [
    "east", "degree", "mph", "kmph", "ft", "m sqaure", " m east", "sq m", "deg", "mile", "q .", "monkey",
    "prime", "ratio", "profit of rs", "rd", "o", "gm", "p . m", "lb", "tile", "per", "dm", "lt", "gain", "ab",
    "way", "west", "a .", "b .", "c .", "d .", "e .", "f .", "g .", "h .", "t", "a", "h", "no change", "men",
    "soldier", "pie", "bc", "excess", "st", "inches", "noon", "percent", "by", "gal", "kmh", "c", "acre", "rise",
    "a . m", "th", "π r 2", "sq", "mark", "l", "toy", "coin", "sq . m", "gallon", "° f", "profit", "minw", "yr",
    "women", "feet", "am", "pm", "hr", "cu cm", "square", "v â € ™", "are", "rupee", "rounds", "cubic", "cc",
    "mtr", "s", "ohm", "number", "kmph", "day", "hour", "minute", "min", "second", "man", "woman", "sec", "cube",
    "mt", "sq inch", "mp", "∏ cm ³", "hectare", "more", "sec", "unit", "cu . m", "cm 2", "rs .", "rs", "kg", "g",
    "month", "km", "m", "cm", "mm", "apple", "liter", "loss", "yard", "pure", "year", "increase", "decrease",
    "d", "less", "Surface", "litre", "pi sq m", "s .", "metre", "meter", "inch",
]
#: The parser's unit words (mostly from MathQA), each also with a plural "s", in its order.
UNIT_TEXTS: tuple[str, ...] = (*_BASE_UNITS, *(t + "s" for t in _BASE_UNITS))

# (literal text that must occur for the pattern to match, or None when the text holds a regex
# wildcard, compiled pattern). The unit text is put into the pattern unescaped, as the parser
# does: "q ." matches "q x" too, which is why those patterns are always tried.
_UNIT_PATTERNS = [
    (None if "." in t else t, re.compile(r"(^|\W)" + t + r"($|\W)")) for t in UNIT_TEXTS
]

_ONES = {w: i for i, w in enumerate([
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"])}
_TENS = {w: 10 * (i + 2) for i, w in enumerate(
    ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"])}
_SCALES = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}


def _word_number(text: str) -> str:
    """``"twenty-five"`` -> ``"25"`` when ``text`` is made only of number words, else ``text``."""
    words = text.replace("-", " ").lower().split()
    if not words or not all(w in _ONES or w in _TENS or w in _SCALES or w == "hundred" for w in words):
        return text
    total = current = 0
    for w in words:
        if w in _ONES:
            current += _ONES[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w == "hundred":
            current = max(current, 1) * 100
        else:
            total += max(current, 1) * _SCALES[w]
            current = 0
    return str(total + current)


def _fix_fracs(string: str) -> str:
    substrs = string.split("\\frac")
    new_str = substrs[0]
    for substr in substrs[1:]:
        new_str += "\\frac"
        if substr and substr[0] == "{":
            new_str += substr
            continue
        if len(substr) < 2:
            return string
        a, b = substr[0], substr[1]
        if b != "{":
            new_str += "{" + a + "}{" + b + "}" + substr[2:]
        else:
            new_str += "{" + a + "}" + b + substr[2:]
    return new_str


def _fix_a_slash_b(string: str) -> str:
    parts = string.split("/")
    if len(parts) != 2:
        return string
    a_s, b_s = parts
    try:
        a: int | str = a_s if "sqrt" in a_s else int(a_s)
        b: int | str = b_s if "sqrt" in b_s else int(b_s)
    except ValueError:
        return string
    if string != f"{a}/{b}":
        return string
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _fix_sqrt(string: str) -> str:
    return re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", string)


def strip_string(string: object, skip_unit: bool = False) -> str:
    """The Qwen2.5-Math parser's ``strip_string`` (MATH normalisation), as the authors ran it."""
    string = str(string).strip()
    string = string.replace("\n", "")
    string = string.rstrip(".")
    string = string.replace("\\!", "")
    # matrices
    string = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", string)
    string = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", string)
    string = string.replace("bmatrix", "pmatrix")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("\\{", "{").replace("\\}", "}")
    # a trailing \text{...} is a unit, unless it is all there is
    stripped = re.sub(r"\\text{.*?}$", "", string).strip()
    if stripped != "" and stripped != string:
        string = stripped
    if not skip_unit:
        for _ in range(2):
            for literal, pattern in _UNIT_PATTERNS:
                if literal is not None and literal not in string:
                    continue
                stripped = pattern.sub(r"\1\2", string)
                if stripped != "":
                    string = stripped
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "").replace("$", "")
    string = string.replace("\\(", "").replace("\\)", "")
    string = _word_number(string)
    string = re.sub(r"\\text\{(.*?)\}", r"\1", string)
    for key in ["x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"]:
        string = string.replace(key, "")
    string = string.replace("\\emptyset", r"{}")
    string = string.replace("(-\\infty,\\infty)", "\\mathbb{R}")
    string = string.replace("\\%", "").replace("%", "")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if string.isalnum() and (
        (string.startswith("{") and string.endswith("}"))
        or (string.startswith("(") and string.endswith(")"))
        or (string.startswith("[") and string.endswith("]"))
    ):  # pragma: no cover - isalnum() excludes brackets; kept to mirror the parser
        string = string[1:-1]
    string = string.replace("infinity", "\\infty")
    if "\\infty" not in string:
        string = string.replace("inf", "\\infty")
    string = string.replace("+\\inity", "\\infty")
    string = string.replace("and", "")
    string = string.replace("\\mathbf", "")
    string = re.sub(r"\\mbox{.*?}", "", string)
    if "j" in string and "i" not in string:
        string = string.replace("j", "i")
    string = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", string)
    string = re.sub(r"(\d+)\.0*$", r"\1", string)
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    parts = string.split("=")
    if len(parts) == 2 and len(parts[0]) <= 2:  # "k = 5" -> "5"
        string = parts[1]
    string = _fix_sqrt(string)
    string = string.replace(" ", "")
    string = _fix_fracs(string)
    return _fix_a_slash_b(string)


def vote_key(pred: str | None) -> str:
    """What a majority vote counts: the normalised answer ("" = no answer, which never votes)."""
    if not pred:
        return ""
    try:
        return strip_string(pred)
    except Exception:  # pragma: no cover - defensive: a vote must never take labelling down
        return ""
