"""Interruption and child processes: a command stopped by a signal leaves nothing behind.

- :func:`interruptible`: in the command line's process, SIGINT (Ctrl-C), SIGTERM and SIGHUP raise
  :class:`Interrupted`, so every ``finally`` and ``with`` on the way out runs: temporary files
  and folders are deleted, locks released, worker and gem5 processes stopped. The command then
  exits ``128 + signal`` (130, 143, 129) with one line. A second signal while it cleans up is
  ignored (the cleanup is short; SIGKILL still ends it at once).
- :func:`worker_signals`, :func:`in_worker`: in a sweep's worker process, SIGTERM (the sweep
  stopping its workers) raises :class:`Interrupted` inside a task, whose own ``finally`` blocks
  then clean up, and the worker exits; SIGINT is ignored there, because a Ctrl-C reaches every
  process of the terminal's process group and the sweep itself decides what its workers do.
- :func:`run_child`: ``subprocess.run`` for long-running children (gem5), in a session of
  their own (a terminal's Ctrl-C goes to the harness, which stops them; not to them directly,
  where gem5 would end its simulation early and report it as a failure) and, on Linux, killed
  by the kernel when the process that started them dies, however it dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal asked the process to stop (``signum``); a KeyboardInterrupt, so that no
    ``except Exception`` on the way out mistakes it for a failure of the work."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_received: list[int] = []


def _raise(signum, frame):
    if _received:  # already on the way out: let the cleanup finish
        return
    _received.append(signum)
    raise Interrupted(signum)


@contextmanager
def interruptible():
    """Within the block, SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` (in the main
    thread; elsewhere the block runs as it is); the previous handlers come back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise) for s in SIGNALS}
    _received.clear()
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        _received.clear()


def signal_of(e: BaseException) -> int:
    """The signal that ended the work with ``e`` (a plain KeyboardInterrupt: SIGINT)."""
    return e.signum if isinstance(e, Interrupted) else int(signal.SIGINT)


# --- worker processes ------------------------------------------------------------------------

_task_running = threading.Event()


def exit_worker(code: int) -> None:
    """End a worker process at once, but after its multiprocessing finalizers: a semaphore it
    made (tqdm's lock) is unregistered, else Python's resource tracker warns of a "leaked
    semaphore" at the sweep's exit."""
    from multiprocessing import util

    try:
        util._run_finalizers(0)
        util._run_finalizers()
    finally:
        sys.stderr.flush()
        os._exit(code)


def _worker_term(signum, frame):
    if not _task_running.is_set():  # between tasks there is nothing to clean up
        exit_worker(128 + signum)
    _task_running.clear()  # once: the task's cleanup runs undisturbed
    raise Interrupted(signum)


def worker_signals() -> None:
    """In a worker process: SIGTERM stops the task at hand (see :func:`in_worker`), SIGINT is
    left to the sweep (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_term)


def in_worker(fn, *args):
    """Run a task in a worker process; stopped by SIGTERM, its ``finally`` blocks run (its
    temporaries go) and the worker exits."""
    _task_running.set()
    try:
        return fn(*args)
    except Interrupted as e:
        exit_worker(e.exit_code)
    finally:
        _task_running.clear()


# --- child processes --------------------------------------------------------------------------

def _die_with_parent():  # pragma: no cover (runs in the child between fork and exec)
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


try:  # resolved now: the child may do no more than call it
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):  # pragma: no cover
    _prctl = None


def run_child(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, **kwargs)`` for a child that must not outlive this process: in a
    session of its own, killed by the kernel when this thread's process dies (Linux), and killed
    when the call is interrupted (``subprocess.run`` kills it on any exception)."""
    return subprocess.run(cmd, start_new_session=True, preexec_fn=_die_with_parent if _prctl else None,
                          **kwargs)
