"""Scoring: answer extraction, equivalence grading (math-verify in killable workers), the
paper's rewards and the reasoning-style tests.

Layout: :mod:`.extract` (answers out of text), :mod:`.normalize` (the authors' ``strip_string``:
votes, the format reward, empty answers), :mod:`.equivalence` (cheap verdicts and the
public grading API), :mod:`.workers` (the math-verify process pool), :mod:`.counters`
(per-process counters and cache), :mod:`.style` (code reasoning, repetition),
:mod:`.rewards` (reward terms and the spec language).
"""

from .counters import grading_stats, reset_grading_stats
from .equivalence import grade, grade_many
from .extract import extract_answer, r1_answer_span
from .workers import shutdown_workers

__all__ = [
    "extract_answer",
    "grade",
    "grade_many",
    "grading_stats",
    "r1_answer_span",
    "reset_grading_stats",
    "shutdown_workers",
]
