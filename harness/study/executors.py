"""Where a sweep's tasks run: local worker processes or a Dask distributed cluster.

An executor maps a task function over ``{key: arguments}`` and yields ``(key, value, error)`` as
tasks finish (``error``: the task's exception in one line, or the worker's death), calling
``poll()`` about every half second while they run (the progress bar reads the decodes' progress
files then). ``close(abort=True)`` stops the workers at once (an interrupted sweep).

- :class:`LocalExecutor`: ``jobs`` spawned processes (``jobs == 1``: in this process, with a
  polling thread). Workers exit as soon as the sweep that started them is gone; the tasks of a
  worker that dies are started again (up to ``MAX_ATTEMPTS`` times).
- :class:`DaskExecutor`: a ``dask.distributed`` client on a scheduler address; its workers must
  see the sweep folder.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from harness.core.errors import UserError, error_line, first_line
from harness.core.interrupt import exit_worker, in_worker, worker_signals

# How long stopped workers get to delete their temporaries before they are killed.
STOP_GRACE_S = 30
# How often a local task is started when its worker process dies under it (Dask's scheduler
# retries a task of a dead worker likewise: distributed.scheduler.allowed-failures, 3).
MAX_ATTEMPTS = 3


def _call(fn, args):
    """Run a task; (its result, None) or (None, its error in one line)."""
    try:
        return fn(*args), None
    except Exception as e:
        return None, error_line(e)


def _watch_parent(parent: int) -> None:
    """In a worker: stop as soon as the sweep that started it is gone (no orphan keeps writing),
    the task at hand cleaning up after itself as when the sweep stops it (SIGTERM)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # its cleanup takes a moment; a task that ignores it does not keep the worker
        exit_worker(1)

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


def _init_worker(parent: int) -> None:
    from tqdm import tqdm

    worker_signals()
    _watch_parent(parent)
    # tqdm's default lock is a multiprocessing semaphore; a worker killed outright would leave it
    # registered, and Python warns of a "leaked semaphore" when the sweep exits
    tqdm.set_lock(threading.RLock())


class LocalExecutor:
    def __init__(self, jobs: int):
        self.workers = jobs
        self.pool = self._new_pool() if jobs > 1 else None

    def _new_pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: a forked child of a process that already runs torch or numba threads
        # can deadlock on a lock held by a thread that did not survive the fork
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(os.getpid(),))

    def map(self, fn, tasks: dict, poll=None):
        """Yield (key, value, error) as the tasks (key -> arguments) finish; ``poll()`` runs
        every half second while they do."""
        if self.pool is None:  # in this process; a thread polls while each task runs
            for key, args in tasks.items():
                stop = threading.Event()
                poller = threading.Thread(target=_poll_until, args=(poll, stop), daemon=True) if poll else None
                if poller:
                    poller.start()
                try:
                    outcome = _call(fn, args)
                finally:
                    stop.set()
                    if poller:
                        poller.join()
                yield key, *outcome
            return
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        # A worker that dies (killed, out of memory) breaks the whole pool: every task in it
        # fails. They go to a new pool, each up to MAX_ATTEMPTS times in all (a task that kills
        # its worker every time then fails alone, and the others are done).
        attempts = dict.fromkeys(tasks, 0)
        todo = list(tasks)
        while todo:
            futures = {self.pool.submit(in_worker, _call, fn, tasks[key]): key for key in todo}
            todo = []
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                if poll:
                    poll()
                for f in done:
                    key = futures[f]
                    try:
                        value, error = f.result()
                    except BrokenProcessPool as e:
                        attempts[key] += 1
                        if attempts[key] < MAX_ATTEMPTS:
                            todo.append(key)
                            continue
                        value, error = None, f"its worker process died {MAX_ATTEMPTS} times ({error_line(e)})"
                    except Exception as e:
                        value, error = None, error_line(e)
                    yield key, value, error
            if todo:
                self.pool.shutdown(wait=True, cancel_futures=True)
                self.pool = self._new_pool()

    def close(self, abort: bool = False):
        """Shut the workers down; ``abort`` (an interrupted sweep): stop them now (SIGTERM: each
        stops its task, deleting its temporaries, and exits; any still there after
        ``STOP_GRACE_S`` is killed) rather than let them finish their runs."""
        if not self.pool:
            return
        if abort:
            from multiprocessing.connection import wait as wait_exited

            processes = [p for p in list(getattr(self.pool, "_processes", {}).values()) if p.is_alive()]
            for process in processes:
                process.terminate()
            wait_exited([p.sentinel for p in processes], timeout=STOP_GRACE_S)
            for process in processes:
                if process.is_alive():
                    process.kill()
        # with its workers gone the pool's manager ends at once: waiting for it frees its queues
        # (else Python warns of "leaked semaphore objects" at exit)
        self.pool.shutdown(wait=True, cancel_futures=True)


def _poll_until(poll, stop: threading.Event, every: float = 0.5) -> None:
    while not stop.wait(every):
        poll()


def local_executor(jobs):
    return LocalExecutor(max(1, jobs or os.cpu_count() or 1))


class DaskExecutor:
    def __init__(self, address: str):
        try:
            from dask.distributed import Client
        except ImportError:  # pragma: no cover
            raise UserError("the Dask executor needs dask[distributed]") from None
        try:
            self.client = Client(address, timeout="10s")
        except Exception as e:
            raise UserError(f"cannot reach the Dask scheduler at {address}: {first_line(e)}") from None
        self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        self._futures: list = []

    def map(self, fn, tasks: dict, poll=None):
        from dask.distributed import as_completed

        futures = {self.client.submit(_call, fn, args, pure=False): key for key, args in tasks.items()}
        self._futures = list(futures)
        done = as_completed(list(futures))
        while not done.is_empty():
            batch = done.next_batch(block=False) or []
            if not batch:
                if poll:
                    poll()
                time.sleep(0.5)
                continue
            for f in batch:
                try:
                    value, error = f.result()
                except Exception as e:
                    value, error = None, error_line(e)
                yield futures[f], value, error

    def close(self, abort: bool = False):
        """Close the client; ``abort``: first cancel the tasks not finished (a task already running
        on a worker runs to its end there, its run folder written as usual)."""
        if abort and self._futures:
            try:
                self.client.cancel(self._futures)
            except Exception:  # the scheduler is gone: there is nothing left to cancel
                pass
        self._futures = []
        self.client.close()  # a second close does nothing


def dask_executor(address):
    return DaskExecutor(address)
