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
unchanged by where they run.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from .diagnostics import SpecError
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


def _decide_forked(i: int) -> tuple[int, Verdict]:
    obligations, program, timeout = _FORKED
    return i, decide(obligations[i], program, timeout)


def _lost(model: Model, i: int, why: str) -> Verdict:
    ob = model.obligations[i]
    return Verdict(name=ob.name, kind=ob.kind, verdict=UNKNOWN, engine=LOST,
                   reason=f"the worker process deciding it {why}")


def _forked(model: Model, indices: Sequence[int], timeout: float, jobs: int,
            on_done: OnDone) -> None:
    global _FORKED
    _FORKED = (model.obligations, model.program, timeout)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork"),
                               initializer=_child_init)
    try:
        pending = {pool.submit(_decide_forked, i): i for i in indices}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                try:
                    _, v = fut.result()
                except BrokenProcessPool:
                    v = _lost(model, i, "died (out of memory or killed)")
                on_done(i, v)
    except BaseException:
        for p in list(getattr(pool, "_processes", {}).values()):  # do not wait for them
            p.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        _FORKED = None
    pool.shutdown(wait=True)


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
