"""Deciding a model's obligations: in this process, on forked processes, or on a Dask cluster.

Obligations of one model are independent, so they can be decided in any order; callers get
each verdict as soon as it exists (`on_done(index, verdict)`) and put them back in spec order.

- `jobs > 1`: a fork-based process pool. The children inherit the loaded model (its program
  can be large, and pickling sympy terms is slow) and receive only obligation indices; only
  verdicts travel back. Each child marks itself daemonic, which engines read as "do not fork
  workers of your own" (the ReLU engine then runs its branch and bound in the child), and
  limits BLAS/OpenMP to one thread, so N jobs use about N cores, not N times more.
- a `Cluster` (`--scheduler ADDRESS`): the program is sent once to every Dask worker and
  each obligation is one task. Dask is imported only here, when asked for.

The per-obligation timeout is the engines' own (`engines.decide(ob, program, timeout)`),
unchanged by where they run. Forked workers are also watched: one that dies, or gives no
verdict long after the timeout (`hard_limit`), is killed and replaced, and its obligation is
`unknown` with the reason (never cached).
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing import connection

from .diagnostics import InternalError, SpecError
from .engines import decide
from .engines.verdict import UNKNOWN, Verdict
from .obligations import Model

OnDone = Callable[[int, Verdict], None]
LOST = "lost"  # engine name of a verdict whose worker process died (never cached)

_FORKED: tuple | None = None  # (obligations, program, timeout) inherited by forked workers


def decide_all(model: Model, indices: Sequence[int], timeout: float, on_done: OnDone, *,
               jobs: int = 1, cluster: Cluster | None = None) -> None:
    """Decide the obligations `indices` of `model`, calling `on_done` as each is decided."""
    if not indices:
        return
    if cluster is not None:
        cluster.decide(model, indices, timeout, on_done)
    elif jobs > 1 and len(indices) > 1:
        _forked(model, indices, timeout, min(jobs, len(indices)), on_done)
    else:
        for i in indices:
            on_done(i, decide(model.obligations[i], model.program, timeout))


def _child_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # engines fork their own workers only outside daemonic processes (`relu_route.workers`):
    # marking the child daemonic keeps N jobs at N processes instead of N times theirs
    try:
        mp.current_process().daemon = True
    except AssertionError:  # pragma: no cover - not a forked child after all
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scipy/sklearn stacks
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _lost(model: Model, i: int, why: str) -> Verdict:
    ob = model.obligations[i]
    return Verdict(name=ob.name, kind=ob.kind, verdict=UNKNOWN, engine=LOST,
                   reason=f"the worker process deciding it {why}")


def hard_limit(timeout: float) -> float:
    """Seconds after which a forked decider is stopped: engines keep their own timeout, and
    overrun it a little (the final z3 check of the emitted SMT-LIB, replaying a point); this
    only catches one that hangs."""
    return timeout + max(GRACE_MIN, timeout)


GRACE_MIN = 30.0


def _serve(conn) -> None:
    """A forked worker: decide the obligation indices it is sent until it is sent None."""
    _child_init()
    obligations, program, timeout = _FORKED
    while True:
        i = conn.recv()
        if i is None:
            return
        try:
            conn.send((i, decide(obligations[i], program, timeout)))
        except Exception as err:  # noqa: BLE001 - our bug: the parent reports it, no traceback
            conn.send((i, f"{type(err).__name__}: {err}"))


class _Worker:
    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=False)
        self.proc.start()
        child.close()
        self.task: int | None = None
        self.since = 0.0

    def give(self, i: int) -> None:
        self.task, self.since = i, time.monotonic()
        self.conn.send(i)

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                self.proc.kill()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _forked(model: Model, indices: Sequence[int], timeout: float, jobs: int,
            on_done: OnDone) -> None:
    """`jobs` forked workers, each sent one index at a time; a worker that dies or runs past
    `hard_limit` is killed (its obligation is unknown) and replaced."""
    global _FORKED
    _FORKED = (model.obligations, model.program, timeout)
    ctx = mp.get_context("fork")
    todo = list(reversed(indices))
    workers: list[_Worker] = []
    limit = hard_limit(timeout)
    try:
        workers = [_Worker(ctx) for _ in range(jobs)]
        for w in workers:
            if todo:
                w.give(todo.pop())
        while any(w.task is not None for w in workers):
            busy = [w for w in workers if w.task is not None]
            left = min(w.since + limit for w in busy) - time.monotonic()
            ready = connection.wait([w.conn for w in busy], timeout=max(left, 0))
            for k, w in enumerate(workers):
                if w.task is None:
                    continue
                v = None
                if w.conn in ready:
                    try:
                        _, v = w.conn.recv()
                    except (EOFError, OSError):
                        v = _lost(model, w.task, "died (out of memory or killed)")
                    if isinstance(v, str):
                        raise InternalError(f"deciding {model.obligations[w.task].name}: {v}")
                elif time.monotonic() - w.since >= limit:
                    v = _lost(model, w.task, f"gave no verdict within {limit:g} s (the time "
                                             f"limit is {timeout:g} s) and was stopped")
                if v is None:
                    continue
                i = w.task
                w.task = None
                if v.engine == LOST:
                    w.stop(kill=True)
                    w = workers[k] = _Worker(ctx)
                on_done(i, v)
                if todo:
                    w.give(todo.pop())
    finally:
        _FORKED = None
        for w in workers:
            w.stop(kill=w.task is not None)


# ---- Dask distributed -------------------------------------------------------------------------


_ONE_AT_A_TIME = threading.Lock()


def _decide_remote(ob, program, timeout: float) -> Verdict:
    # z3's default context and the engines' caches are not thread-safe: a worker with several
    # threads decides one obligation at a time (run workers with --nthreads 1 to scale out)
    with _ONE_AT_A_TIME:
        return decide(ob, program, timeout)


class Cluster:
    """A connection to a Dask distributed scheduler (`--scheduler ADDRESS`)."""

    def __init__(self, address: str, connect_timeout: float = 10.0) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise SpecError("--scheduler needs the Dask distributed package",
                            fix="pip install 'dask[distributed]'") from None
        try:
            self.client = Client(address, timeout=f"{connect_timeout}s",
                                 set_as_default=False)
        except (OSError, TimeoutError, ValueError, TypeError) as err:
            raise SpecError(f"cannot reach the Dask scheduler at {address}: {err}",
                            fix="start one with `dask scheduler` and give its address, "
                                "e.g. tcp://127.0.0.1:8786") from None

    def decide(self, model: Model, indices: Sequence[int], timeout: float,
               on_done: OnDone) -> None:
        from distributed import as_completed

        program = self.client.scatter(model.program, broadcast=True, hash=False)
        futures = {self.client.submit(_decide_remote, model.obligations[i], program, timeout,
                                      pure=False): i for i in indices}
        try:
            for fut in as_completed(futures, loop=self.client.loop):
                i = futures[fut]
                try:
                    v = fut.result()
                except Exception as err:  # noqa: BLE001 - a lost worker is not our verdict
                    if fut.status != "error" or not _is_lost_worker(err):
                        raise
                    v = _lost(model, i, f"on the cluster was lost ({err})")
                on_done(i, v)
        finally:
            self.client.cancel(list(futures) + [program])

    def close(self) -> None:
        self.client.close()


def _is_lost_worker(err: Exception) -> bool:
    try:
        from distributed.scheduler import KilledWorker
    except ImportError:  # pragma: no cover
        return False
    return isinstance(err, KilledWorker)
