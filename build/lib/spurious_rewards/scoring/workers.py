"""The math-verify worker pool: persistent subprocesses with a deadline per pair.

Why hand-written and not ``pebble`` (the closest library, ``ProcessPool.schedule(fn,
timeout=)``): math-verify's own timeouts rely on ``signal.alarm``, which raises outside
the main thread (OpenRLHF calls rewards from threads) and cannot interrupt C-level
big-integer arithmetic anyway, so a stuck pair must be stopped by killing its process.
pebble kills and restarts a stuck worker too, but (a) its timeout is per scheduled task,
so batching pairs into chunks (needed for throughput: a task round-trip costs more than
most verdicts) makes one pathological pair kill its innocent neighbours, while here each
pair gets its own deadline that starts when the worker reaches it; (b) its workers can
outlive a SIGKILLed parent (here ``PR_SET_PDEATHSIG`` plus a watchdog); (c) it is built on
``multiprocessing``, which cannot start children from daemonic processes. So math-verify
runs *without* its timeouts inside small persistent worker subprocesses (plain
``subprocess`` speaking JSON lines); the caller waits with a deadline and kills the worker
on overrun. ``concurrent.futures`` and ``loky`` cannot kill one running task at all.
The interface is two functions: :func:`worker_outcomes` and :func:`inprocess`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from .counters import count as _count

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 120.0
#: Bytes in flight to one worker; below the 64 KiB pipe buffer, so writes never block.
_WINDOW_BYTES = 32 * 1024
#: Pairs per chunk handed to one worker by :func:`grade_many`.
_CHUNK = 32
_CACHE_SIZE = 1 << 16
#: After a worker fails to start, grade in-process (or score 0) for this long before retrying.
_SPAWN_BACKOFF_S = 30.0


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
    # the package is installed in every environment that grades (no PYTHONPATH edits)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    code = "from spurious_rewards.scoring.workers import _worker_main; _worker_main()"
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
    global _pool, _pool_lock
    _pool = _Pool()
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def shutdown_workers() -> None:
    """Kill every grading worker of this process (they are restarted on demand)."""
    _get_pool().close()


atexit.register(shutdown_workers)


def default_workers() -> int:
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


def worker_outcomes(pairs: Sequence[tuple[str, str]], timeout: float, workers: int) -> list[str]:
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


def inprocess(pred: str, label: str, timeout: float) -> str:
    """Last resort when no worker can start: only the main thread can bound math-verify."""
    if threading.current_thread() is not threading.main_thread():
        return "x"
    try:
        return "1" if _mv_equal(pred, label, max(1, math.ceil(timeout))) else "0"
    except Exception:
        return "e"


