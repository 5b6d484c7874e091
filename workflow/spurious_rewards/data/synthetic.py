"""Contamination-free arithmetic problems, in the spirit of RandomCalculation (Wu et al. 2025).

Why our own generator: no library produces seeded, exact, difficulty-graded
arithmetic with the structure the model organisms need (the expression tree, so
the code-style solution can print it and the language-style one can word it).
``mathematics-dataset`` is broken on current sympy/numpy and far slower.

Problems are split into ``train`` and ``test`` by a hash of the expression, so a
test problem can never appear in any training set or pretraining corpus, however
many problems either side draws, and no file has to know about another.

Every problem also carries a worked solution (:meth:`Node.steps`: one operation at a
time, innermost first, then the boxed answer), written into a record only when the
dataset asks for it (``solutions: true``): the few-shot baseline shows it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

#: Share of the problem space reserved for the test (benchmark) split.
TEST_SHARE = 0.2

#: Level-1 families, as in the organism trial (docs/organisms.md §1).
LEVEL1_KINDS = ("add", "sub", "mul", "addmul")


@dataclass(frozen=True)
class Node:
    """An expression tree node: a leaf holds ``value``; an inner node holds ``op`` and children."""

    value: int | None = None
    op: str | None = None
    left: Node | None = None
    right: Node | None = None

    def evaluate(self) -> int:
        """Exact integer value (no ``eval``: nothing generated is ever executed as code)."""
        if self.op is None:
            assert self.value is not None
            return self.value
        a, b = self.left.evaluate(), self.right.evaluate()  # type: ignore[union-attr]
        if self.op == "+":
            return a + b
        if self.op == "-":
            return a - b
        return a * b

    def steps(self) -> list[str]:
        """The worked evaluation, one operation per step in evaluation order: ``["3+4 = 7", "7*2 = 14"]``.

        Each step's operands are the values already worked out, so the last step's
        result is :meth:`evaluate` exactly; a negative right operand is bracketed
        (``5-(-7) = 12``), never written ``5--7``.
        """
        if self.op is None:
            return []
        a, b = self.left.evaluate(), self.right.evaluate()  # type: ignore[union-attr]
        right = f"({b})" if b < 0 else str(b)
        return [*self.left.steps(), *self.right.steps(), f"{a}{self.op}{right} = {self.evaluate()}"]  # type: ignore[union-attr]

    def render(self, parent_op: str | None = None, right_side: bool = False) -> str:
        if self.op is None:
            return str(self.value)
        text = f"{self.left.render(self.op)}{self.op}{self.right.render(self.op, True)}"  # type: ignore[union-attr]
        needs = parent_op == "*" and self.op in "+-" or (right_side and parent_op == "-" and self.op in "+-")
        return f"({text})" if needs else text


@dataclass(frozen=True)
class ArithmeticProblem:
    """One generated problem. ``kind`` names the family (used to word language-style solutions)."""

    id: str
    expression: str
    answer: int
    kind: str
    operands: tuple[int, ...]
    level: int
    #: the worked evaluation (:meth:`Node.steps`), its last step ending in ``answer``
    steps: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        return f"What is {self.expression}?"

    @property
    def solution(self) -> str:
        """The worked solution: every step, then the boxed answer (the organisms' closing line)."""
        return " ".join(f"{s}." for s in self.steps) + f"\nThe answer is \\boxed{{{self.answer}}}."

    def record(self, source: str, *, solution: bool = False) -> dict:
        """The normalized dataset record (see :mod:`spurious_rewards.data`); ``solution`` adds the worked one."""
        rec = {"id": self.id, "prompt": self.prompt, "answer": str(self.answer), "source": source}
        return {**rec, "solution": self.solution} if solution else rec


def split_of(expression: str) -> str:
    """``test`` or ``train``, fixed by the expression alone (stable across runs and machines)."""
    h = int.from_bytes(hashlib.blake2b(expression.encode(), digest_size=8).digest(), "big")
    return "test" if (h % 10_000) < TEST_SHARE * 10_000 else "train"


def _level1(rng: random.Random) -> tuple[Node, str]:
    kind = rng.choice(LEVEL1_KINDS)
    if kind == "add":
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        return Node(op="+", left=Node(a), right=Node(b)), kind
    if kind == "sub":
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        a, b = max(a, b), min(a, b)
        return Node(op="-", left=Node(a), right=Node(b)), kind
    if kind == "mul":
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        return Node(op="*", left=Node(a), right=Node(b)), kind
    a, b, c = rng.randint(1, 6), rng.randint(1, 6), rng.randint(2, 4)
    return Node(op="*", left=Node(op="+", left=Node(a), right=Node(b)), right=Node(c)), kind


def _random_tree(rng: random.Random, terms: int, digits: int) -> Node:
    """A random expression over ``terms`` operands of up to ``digits`` digits (multiplication kept small)."""
    if terms == 1:
        return Node(rng.randint(0, 10**digits - 1))
    split = rng.randint(1, terms - 1)
    op = rng.choice("+-*")
    if op == "*":
        # one factor small so answers stay readable at high levels
        return Node(op="*", left=_random_tree(rng, split, digits), right=Node(rng.randint(2, 9)))
    return Node(op=op, left=_random_tree(rng, split, digits), right=_random_tree(rng, terms - split, digits))


def _leaves(node: Node) -> tuple[int, ...]:
    if node.op is None:
        return (node.value,)  # type: ignore[return-value]
    return _leaves(node.left) + _leaves(node.right)  # type: ignore[arg-type]


def generate(
    n: int,
    seed: int,
    *,
    level: int = 1,
    split: str = "train",
    id_prefix: str = "arith",
    unique: bool = True,
) -> list[ArithmeticProblem]:
    """Draw ``n`` problems of a difficulty ``level`` from one ``split``.

    Level 1 is the organism family set (a+b, a-b, a*b, (a+b)*c with small
    operands). Level k ≥ 2 draws random trees of k+1 operands with k digits, so
    length and difficulty grow together without bound. ``unique`` drops repeats
    (level 1 has only a few thousand distinct problems per split; asking for more
    than exist raises instead of looping forever).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if level < 1:
        raise ValueError(f"level must be >= 1, got {level}")
    rng = random.Random(f"{seed}:{level}:{split}")
    out: list[ArithmeticProblem] = []
    seen: set[str] = set()
    misses = 0
    while len(out) < n:
        if level == 1:
            tree, kind = _level1(rng)
        else:
            tree, kind = _random_tree(rng, level + 1, level), f"level{level}"
        expr = tree.render()
        if split_of(expr) != split or (unique and expr in seen):
            misses += 1
            if misses > 50 * n + 10_000:
                raise ValueError(
                    f"cannot draw {n} distinct {split} problems at level {level}: only {len(out)} found"
                )
            continue
        seen.add(expr)
        out.append(
            ArithmeticProblem(
                id=f"{id_prefix}-{len(out):06d}",
                expression=expr,
                answer=tree.evaluate(),
                kind=kind,
                operands=_leaves(tree),
                level=level,
                steps=tuple(tree.steps()),
            )
        )
    return out
