"""Answer extraction and equivalence grading, shared by every trainer and by evaluation.

Why it looks like this:

* **Extraction** follows the Qwen2.5-Math parser the paper used (last ``\\boxed{}``, else
  "final answer is $...$", else "the answer is X", else the last number), but it is written
  to be linear-time and total: it never raises, whatever bytes a policy emits.
* **Grading** uses math-verify (the paper used a sympy ``grade_answer``; see
  paper-setup.md §7 quirk 8). math-verify's own timeouts rely on ``signal.alarm``, which
  raises outside the main thread (OpenRLHF calls rewards from threads) and cannot interrupt
  C-level big-integer arithmetic anyway. So math-verify always runs *without* its timeouts
  inside small persistent worker subprocesses; the caller waits with a deadline and kills the
  worker on overrun. That works the same from the main thread, from other threads, and from
  daemonic worker processes (plain ``subprocess``, not ``multiprocessing``).
* Most calls never reach sympy: exact matches and plain integers/decimals/fractions
  (AIME ``025`` vs ``25``, AMC ``142.0`` vs ``142``) are decided in-process, and absurd
  inputs (huge, power towers, factorials of powers) are rejected cheaply as wrong.
* Nothing from a model is ever executed; it is only parsed.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

__all__ = [
    "extract_answer",
    "grade",
    "grade_many",
    "grading_stats",
    "reset_grading_stats",
    "shutdown_workers",
]

log = logging.getLogger(__name__)

#: Answers longer than this (characters) are never sent to sympy; real answers are short.
MAX_ANSWER_CHARS = 1000
#: Integer exponents with more digits than this are rejected (``x^{100000}``).
MAX_EXPONENT_DIGITS = 4
#: Bracket nesting deeper than this is rejected (latex2sympy's parser slows down per level).
MAX_NESTING = 24
#: Seconds a fresh worker may take to import sympy/math-verify before it counts as failed.
STARTUP_TIMEOUT = 120.0
#: Bytes in flight to one worker; below the 64 KiB pipe buffer, so writes never block.
_WINDOW_BYTES = 32 * 1024
#: Pairs per chunk handed to one worker by :func:`grade_many`.
_CHUNK = 32
_CACHE_SIZE = 1 << 16
#: After a worker fails to start, grade in-process (or score 0) for this long before retrying.
_SPAWN_BACKOFF_S = 30.0


# --------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------

_LAST_NUMBER = re.compile(r"-?\d*\.?\d+")
_NEWLINES = re.compile(r"\n\s*")
_BRACES = re.compile(r"[{}]")
_TOKEN = re.compile(r"[^\s$]+")


def _brace_content(s: str) -> str:
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
        return _brace_content(rest)
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

    Order: last ``\\boxed{...}``/``\\fbox{...}`` (brace-matched; ``\\boxed 5`` too), then
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


# --------------------------------------------------------------------------------------------
# statistics and cache (per process; reset after fork)
# --------------------------------------------------------------------------------------------

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


def _count(key: str, n: int = 1) -> None:
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


def _cache_get(key: tuple[str, str]) -> bool | None:
    with _cache_lock:
        v = _cache.get(key)
        if v is not None:
            _cache.move_to_end(key)
        return v


def _cache_put(key: tuple[str, str], value: bool) -> None:
    with _cache_lock:
        _cache[key] = value
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


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
# worker processes
# --------------------------------------------------------------------------------------------


class _WorkerDied(Exception):
    """The worker's pipe closed: it crashed, was killed, or never started."""


class _Worker:
    """One persistent ``python`` child running :func:`_worker_main`; JSON lines both ways."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        assert proc.stdout is not None and proc.stdin is not None
        self._rfd = proc.stdout.fileno()
        self._wfd = proc.stdin.fileno()
        self._buf = bytearray()
        # poll(), not select(): training processes can hold more than FD_SETSIZE descriptors
        self._poll = select.poll()
        self._poll.register(self._rfd, select.POLLIN | select.POLLHUP | select.POLLERR)

    def wait_ready(self, timeout: float) -> None:
        line = self.read_line(time.monotonic() + timeout)
        if line != b"ready":
            self.kill()
            raise _WorkerDied(f"worker did not start (got {line!r})")

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._wfd, view)
                view = view[n:]
        except OSError as exc:
            raise _WorkerDied(str(exc)) from exc

    def read_line(self, deadline: float) -> bytes | None:
        """The next line, None at the deadline; raises :class:`_WorkerDied` on EOF."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not self._poll.poll(max(1, math.ceil(remaining * 1000))):
                continue  # loop re-checks the deadline
            try:
                chunk = os.read(self._rfd, 65536)
            except OSError as exc:
                raise _WorkerDied(str(exc)) from exc
            if not chunk:
                raise _WorkerDied("EOF")
            self._buf += chunk

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                f.close()  # type: ignore[union-attr]
        with contextlib.suppress(Exception):
            self._poll.unregister(self._rfd)

    def alive(self) -> bool:
        return self.proc.poll() is None


class _Pool:
    """Lazily grown set of workers; a thread leases one exclusively, then returns it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.cond = threading.Condition()
        self.idle: list[_Worker] = []
        self.count = 0  # leased + idle
        self.all: set[_Worker] = set()
        self.spawn_blocked_until = 0.0
        self.spawner: ThreadPoolExecutor | None = None

    def acquire(self, limit: int) -> _Worker:
        """An idle worker, a new one if fewer than ``limit`` exist, else wait for one."""
        with self.cond:
            while True:
                while self.idle:
                    worker = self.idle.pop()
                    if worker.alive():
                        return worker
                    worker.kill()  # died while idle (OOM killer, someone's kill): drop it
                    self.all.discard(worker)
                    self.count -= 1
                if self.count < max(1, limit):
                    self.count += 1
                    break
                self.cond.wait()
        try:
            return self.spawn()
        except BaseException:
            with self.cond:
                self.count -= 1
                self.cond.notify()
            raise

    def release(self, worker: _Worker | None) -> None:
        with self.cond:
            if worker is not None and worker.alive():
                self.idle.append(worker)
            else:
                self.count -= 1
                if worker is not None:
                    self.all.discard(worker)
            self.cond.notify()

    def discard(self, worker: _Worker) -> None:
        """Kill a leased worker (timed out or crashed) and give its slot back."""
        worker.kill()
        self.release(worker)

    def spawn(self) -> _Worker:
        if time.monotonic() < self.spawn_blocked_until:
            raise _WorkerDied("worker start is backing off after a failure")
        try:
            proc = self._popen()
            worker = _Worker(proc)
            with self.cond:
                self.all.add(worker)
            worker.wait_ready(STARTUP_TIMEOUT)
        except Exception as exc:
            self.spawn_blocked_until = time.monotonic() + _SPAWN_BACKOFF_S
            _count("worker_start_failures")
            log.warning(
                "grading worker failed to start (%s); scoring in-process or 0 for %.0fs",
                exc,
                _SPAWN_BACKOFF_S,
            )
            raise _WorkerDied(str(exc)) from exc
        _count("workers_started")
        return worker

    def _popen(self) -> subprocess.Popen[bytes]:
        # Linux ties PR_SET_PDEATHSIG to the *thread* that forks, so every worker is forked
        # from one long-lived spawner thread: workers die with this process, not with the
        # (possibly short-lived) thread that happened to need one.
        with self.cond:
            if self.spawner is None:
                self.spawner = ThreadPoolExecutor(1, thread_name_prefix="grading-spawner")
            spawner = self.spawner
        try:
            return spawner.submit(_popen_worker, True).result()
        except RuntimeError:  # interpreter shutting down: no new threads; fork from here
            return _popen_worker(threading.current_thread() is threading.main_thread())

    def close(self) -> None:
        with self.cond:
            workers = list(self.all)
            self.all.clear()
            self.idle.clear()
            self.count = 0
        for w in workers:
            w.kill()


def _popen_worker(pdeathsig: bool) -> subprocess.Popen[bytes]:
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    code = "from spurious_rewards.grading import _worker_main; _worker_main()"
    args = [sys.executable, "-c", code, str(os.getpid()), "1" if pdeathsig else "0"]
    return subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
        env=env,
        close_fds=True,
        start_new_session=True,  # a Ctrl-C aimed at the trainer must not kill graders mid-batch
    )


_pool = _Pool()
_pool_lock = threading.Lock()


def _get_pool() -> _Pool:
    global _pool
    if _pool.pid != os.getpid():  # belt and braces; register_at_fork normally handles this
        with _pool_lock:
            if _pool.pid != os.getpid():
                _pool = _Pool()
    return _pool


def _after_fork_in_child() -> None:
    """A forked child must not share its parent's workers, pipes or (possibly held) locks."""
    global _pool, _pool_lock, _stats_lock, _cache_lock
    _pool = _Pool()
    _pool_lock = threading.Lock()
    _stats_lock = threading.Lock()
    _cache_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def shutdown_workers() -> None:
    """Kill every grading worker of this process (they are restarted on demand)."""
    _get_pool().close()


atexit.register(shutdown_workers)


def _default_workers() -> int:
    env = os.environ.get("SPURIOUS_GRADING_WORKERS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, os.cpu_count() or 1)


def _run_items(
    pool: _Pool,
    worker: _Worker,
    items: Sequence[tuple[int, str, str]],
    timeout: float,
    out: dict[int, str],
    limit: int,
) -> _Worker | None:
    """Grade ``items`` on ``worker``, pipelined; store an outcome code per index in ``out``.

    Codes: ``1``/``0`` verdict, ``e`` math-verify raised, ``t`` timeout, ``c`` the worker
    died on it, ``x`` no worker could be started.
    The clock for an item starts when the worker becomes free for it (the previous answer
    arrived), so queueing inside the pipe never eats into its budget. A worker that overruns
    is killed; a successor is started only if items remain. Returns the leased worker, or
    None when the lease was given up.
    """
    by_idx = {i: (i, p, g) for i, p, g in items}
    pending = list(reversed(items))
    inflight: list[tuple[int, int]] = []  # (index, bytes) in send order
    inflight_bytes = 0
    head_start = time.monotonic()
    strikes: dict[int, int] = {}  # send failures while an item was at the head
    while pending or inflight:
        code = ""
        try:
            while pending:
                idx, pred, label = pending[-1]
                data = json.dumps([idx, pred, label], ensure_ascii=True).encode() + b"\n"
                if inflight and inflight_bytes + len(data) > _WINDOW_BYTES:
                    break
                pending.pop()
                if not inflight:
                    head_start = time.monotonic()
                inflight.append((idx, len(data)))
                inflight_bytes += len(data)
                worker.send(data)
        except _WorkerDied:
            # The pipe was already broken: the worker died while idle (killed from outside)
            # or on an earlier queued item. Retry everything once before blaming the head.
            head = inflight[0][0]
            strikes[head] = strikes.get(head, 0) + 1
            if strikes[head] >= 2:
                code = "c"
            else:
                pending.extend(reversed([by_idx[i] for i, _ in inflight]))
                inflight.clear()
                inflight_bytes = 0
                pool.discard(worker)
                try:
                    worker = pool.acquire(limit)
                except Exception:
                    for i, _, _ in pending:
                        out[i] = "x"
                    return None
                continue
        if not code:
            try:
                line = worker.read_line(head_start + timeout)
                if line is None:
                    code = "t"
                else:
                    got_idx, _, code = line.decode().partition(" ")
                    if int(got_idx) != inflight[0][0] or code not in ("0", "1", "e"):
                        raise _WorkerDied(f"protocol error: {line!r}")
            except (_WorkerDied, ValueError, UnicodeDecodeError):
                code = "c"
        head_idx, nbytes = inflight.pop(0)
        inflight_bytes -= nbytes
        out[head_idx] = code
        head_start = time.monotonic()
        if code in ("t", "c"):
            # the dead worker's queue goes to its successor, in the same order
            pending.extend(reversed([by_idx[i] for i, _ in inflight]))
            inflight.clear()
            inflight_bytes = 0
            pool.discard(worker)
            if not pending:
                return None
            try:
                worker = pool.acquire(limit)
            except Exception:
                for i, _, _ in pending:
                    out[i] = "x"
                return None
            head_start = time.monotonic()
    return worker


def _worker_outcomes(pairs: Sequence[tuple[str, str]], timeout: float, workers: int) -> list[str]:
    """Outcome codes for pairs that need math-verify, spread over up to ``workers`` workers."""
    pool = _get_pool()
    items = [(i, p, g) for i, (p, g) in enumerate(pairs)]
    out: dict[int, str] = {}
    chunks = [items[k : k + _CHUNK] for k in range(0, len(items), _CHUNK)]
    chunks.reverse()
    lock = threading.Lock()

    def drive() -> None:
        worker: _Worker | None = None
        try:
            while True:
                with lock:
                    if not chunks:
                        break
                    chunk = chunks.pop()
                if worker is None:
                    try:
                        worker = pool.acquire(workers)
                    except Exception:
                        continue  # this chunk stays unanswered: 'x' below
                worker = _run_items(pool, worker, chunk, timeout, out, workers)
        finally:
            if worker is not None:
                pool.release(worker)

    n_threads = min(workers, len(chunks))
    if n_threads <= 1:
        drive()
    else:
        threads = [
            threading.Thread(target=drive, name=f"grade-many-{k}", daemon=True) for k in range(n_threads)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return [out.get(i, "x") for i in range(len(pairs))]


# --------------------------------------------------------------------------------------------
# math-verify (runs inside the worker, or in-process as a last resort)
# --------------------------------------------------------------------------------------------

_gold_cache: OrderedDict[str, list] = OrderedDict()


def _mv_equal(pred: str, label: str, timeout: int | None = None) -> bool:
    """math-verify's verdict; the gold is wrapped in ``$...$`` because bare strings often parse to []."""
    from math_verify import parse, verify

    gold = _gold_cache.get(label)
    if gold is None:
        gold = parse("$" + label + "$", parsing_timeout=timeout) or parse(
            "\\boxed{" + label + "}", parsing_timeout=timeout
        )
        _gold_cache[label] = gold
        if len(_gold_cache) > 4096:
            _gold_cache.popitem(last=False)
    if not gold:
        return False
    for candidate in ("\\boxed{" + pred + "}", "$" + pred + "$"):
        target = parse(candidate, parsing_timeout=timeout)
        if target and verify(gold, target, timeout_seconds=timeout):
            return True
    return False


def _worker_main() -> None:
    """Entry point of a grading worker: read ``[idx, pred, label]`` lines, write ``idx code``."""
    parent = int(sys.argv[1])
    if sys.argv[2] == "1" and sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)
    # the protocol owns the real stdout; anything sympy or a warning prints goes to stderr
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with contextlib.suppress(Exception):
        import resource

        limit = int(os.environ.get("SPURIOUS_GRADING_WORKER_MEM_MB", "4096")) << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # a runaway bigint -> MemoryError

    def watchdog() -> None:  # parent gone (and PDEATHSIG unavailable): leave
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)  # "Timeout is disabled" and friends, once per worker
    _mv_equal("0.5", "\\frac{1}{2}")  # pay sympy's first-call warm-up before saying ready
    proto.write(b"ready\n")
    for raw in sys.stdin.buffer:
        try:
            idx, pred, label = json.loads(raw)
        except Exception:
            continue
        try:
            code = "1" if _mv_equal(pred, label) else "0"
        except BaseException:  # MemoryError, RecursionError, KeyboardInterrupt...
            code = "e"
        proto.write(f"{idx} {code}\n".encode())
    os._exit(0)


def _inprocess(pred: str, label: str, timeout: float) -> str:
    """Last resort when no worker can start: only the main thread can bound math-verify."""
    if threading.current_thread() is not threading.main_thread():
        return "x"
    try:
        return "1" if _mv_equal(pred, label, max(1, math.ceil(timeout))) else "0"
    except Exception:
        return "e"


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
