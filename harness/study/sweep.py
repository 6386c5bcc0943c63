"""Sweeps: run every point of a spec (``harness.study.spec``) once, in a sweep folder.

A sweep folder holds ``sweep.json`` (the spec that made it), ``logs/<name>/`` (index logs, one
per decode configuration, shared by every run that needs it, named
``<backbone>-<indexer>-k<topk>-<hash>``; folders of older sweeps named ``<hash>`` are found and
reused) and ``runs/<id>/`` (one per run, named by the hash of its canonical config; see
``harness.study.runs``). Each folder is built under a temporary hidden name and renamed when
complete, so an interrupted sweep leaves no half result and re-running it skips what is done.

A running sweep holds an exclusive lock on its folder (``.lock``): a second sweep into the same
folder refuses, or waits with ``wait=True``. Under the lock, hidden temporaries left in
``runs/`` and ``logs/`` by killed processes are deleted. The decodes run first, then the
simulations, as tasks on an executor (``harness.study.executors``: local processes or Dask).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

from harness import __version__
from harness.cache import RESULTS_VERSION
from harness.core import units
from harness.core.errors import BackendFailed, UserError, error_line
from harness.core.files import make_parents, remove_empty, remove_path, write_text_atomic
from harness.core.locks import FileLock, LockHeld
from harness.study.executors import dask_executor, local_executor
from harness.study.runs import (
    decode_id,
    log_dir,
    log_name,
    log_ready,
    progress_file,
    read_run,
    run_id,
    write_run,
)
from harness.study.spec import Spec, run_memory_bytes

# --- the sweep folder ---------------------------------------------------------------------

class SweepLock:
    """An exclusive lock on a sweep folder (``.lock``, ``harness.core.locks``), released when
    the holder exits, however it exits. ``wait``: block until the holder is done, else refuse."""

    def __init__(self, folder: Path, wait: bool = False):
        self.folder = folder
        self._lock = FileLock(folder / ".lock", wait)

    def __enter__(self):
        try:
            self._lock.__enter__()
        except LockHeld as e:
            raise UserError(f"another sweep ({e}) is running in {self.folder}; pass --wait to wait for it") from None
        return self

    def __exit__(self, *exc):
        self._lock.__exit__(*exc)


def check_folder(folder: Path) -> None:
    """A sweep folder is new, empty, or a sweep's (it holds sweep.json)."""
    from harness.core.outputs import check_location

    check_location(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder")
    if folder.is_dir() and any(p.name != ".lock" for p in folder.iterdir()) and not (folder / "sweep.json").exists():
        raise UserError(f"{folder} holds files but is not a sweep folder (no sweep.json); "
                        "choose another folder (nothing was changed)")


def _recorded_digest(folder: Path) -> str | None:
    """The spec digest ``sweep.json`` records (``"unreadable"`` when it cannot be read; None when
    the folder has none)."""
    marker = folder / "sweep.json"
    if not marker.exists():
        return None
    try:
        old = json.loads(marker.read_text())
    except (ValueError, UnicodeDecodeError):
        return "unreadable"
    return old.get("spec_digest") if isinstance(old, dict) else "unreadable"


def check_spec(folder: Path, spec: Spec, force: bool) -> None:
    """Refuse a folder that holds a sweep made by a different spec (unless ``force``): checked
    before the folder is touched (no lock is taken in it), and again under the lock."""
    digest = _recorded_digest(folder)
    if digest is not None and digest != spec.digest and not force:
        raise UserError(f"{folder} holds a sweep made by a different spec; pass --force to add to it anyway")


def prepare(folder: Path, spec: Spec, force: bool, made: list[Path] | None = None) -> None:
    """Record the spec in ``sweep.json`` (refusing another spec's folder unless ``force``)
    and delete temporaries that killed processes left (call it under the lock). ``made``
    collects what it creates, for :func:`undo` should the sweep fail before it runs anything."""
    check_spec(folder, spec, force)
    made = [] if made is None else made
    for sub in ("runs", "logs"):
        if not (folder / sub).is_dir():
            (folder / sub).mkdir()
            made.append(folder / sub)
    for sub in ("runs", "logs"):
        for entry in (folder / sub).iterdir():
            if entry.name.startswith("."):  # a writer's temporary or a decode's progress file
                remove_path(entry)
    marker = folder / "sweep.json"
    new = not marker.exists()
    write_text_atomic(marker, json.dumps({"spec_digest": spec.digest, "spec": spec.raw, "version": __version__},
                                         indent=1))
    if new:
        made.append(marker)


def undo(made: list[Path]) -> None:
    """Remove what :func:`prepare` made, as long as nothing was added to it since: a sweep that
    fails or is interrupted before it produced anything leaves its folder as it found it."""
    kept = False
    for path in made:
        if path.name != "sweep.json":
            try:
                path.rmdir()
            except OSError:  # something was finished in it: the folder is a sweep's now
                kept = True
    if not kept:
        for path in made:
            if path.name == "sweep.json":
                remove_path(path)


def run_state(folder: Path, rid: str) -> str:
    """'ok', 'stale', 'failed', 'corrupt' or 'missing' (``harness.study.runs``)."""
    return read_run(folder / "runs" / rid).status


def _provenance(started: float) -> dict:
    return {"version": __version__, "results_version": RESULTS_VERSION, "host": platform.node(), "python": sys.version.split()[0],
            "pid": os.getpid(), "started": started, "ended": time.time(),
            "seconds": time.time() - started}


def _error_record(e: BaseException) -> dict:
    """A failed run's error.json: the error in one line; a simulator process's last lines of
    output (``log_tail``) and whether it crashed or was killed (``transient``: any later sweep
    tries the run again) when the error says (``harness.core.errors.BackendFailed``)."""
    record = {"error": error_line(e), "type": type(e).__name__, "traceback": traceback.format_exc()}
    if isinstance(e, BackendFailed):
        record.update({"log_tail": e.log_tail, "transient": e.transient})
    return record


# --- tasks (run in worker processes) --------------------------------------------------------

def decode_task(folder: str, decode: dict, threads: int | None = None) -> str:
    """Produce one shared index log (if it is not there yet); reports its progress in
    ``logs/.progress-<id>.json`` for the sweep's progress bar."""
    from trace_gen.decode import DecodeConfig
    from trace_gen.decode import decode as run_decode

    folder = Path(folder)
    did = decode_id(decode)
    if log_ready(folder, decode):
        return did
    if threads:
        import torch

        torch.set_num_threads(threads)
    progress = progress_file(folder, did)
    last = [0.0]

    def report(phase: str, done: int, total: int) -> None:
        if time.time() - last[0] > 0.5 or done == total:
            last[0] = time.time()
            write_text_atomic(progress, json.dumps({"phase": phase, "done": done, "total": total}))

    try:
        run_decode(DecodeConfig(**decode), log_dir(folder, decode), overwrite=True, progress=False,
                   on_progress=report)
    finally:
        remove_path(progress)
    return did


def sim_task(folder: str, run: dict, gem5_binary: str | None = None, gem5_timeout: float = 3600) -> tuple[str, str]:
    """Simulate one run and record its result or its error; never raises. The gem5 settings travel
    with the task, so that workers on other machines get them too."""
    folder = Path(folder)
    rid = run_id(run)
    started = time.time()
    try:
        result = simulate_run(folder, run, gem5_binary, gem5_timeout)
        write_run(folder / "runs", rid, {"config.json": run, "result.json": result,
                                         "provenance.json": _provenance(started)})
        return rid, "ok"
    except Exception as e:  # recorded, so one failing run does not stop the others
        record_failure(folder, run, _error_record(e), started)
        return rid, "failed"


def record_failure(folder: Path, run: dict, error: dict, started: float | None = None) -> None:
    """Write a run's error.json (never over a finished run: see ``harness.study.runs``)."""
    write_run(folder / "runs", run_id(run), {"config.json": run, "error.json": error,
                                             "provenance.json": _provenance(started or time.time())})


def simulate_run(folder: Path, run: dict, gem5_binary: str | None = None, gem5_timeout: float = 3600) -> dict:
    from harness.cache.llc import LLCConfig
    from harness.cache.simulate import simulate_stream
    from harness.cache.timing import TimingConfig
    from trace_gen.stream import StreamSource

    if not log_ready(folder, run["decode"]):
        raise UserError(f"index log {log_name(run['decode'])} is missing")
    if run["backend"] == "tier":
        from harness.cache.tier import TierConfig
        from harness.study.tierrun import tier_of_log

        return tier_of_log(log_dir(folder, run["decode"]), run["stream"], TimingConfig(**run["timing"]),
                           TierConfig(**run["tier"]))
    src = StreamSource.from_options(log_dir(folder, run["decode"]), run["stream"])
    cfg = LLCConfig(**run["llc"])
    if run["backend"] == "gem5":
        from harness.gem5.replay import simulate_gem5

        g = run["gem5"]
        with tempfile.TemporaryDirectory(prefix="gem5-") as out:
            if g.get("model") == "closed-loop":
                from harness.gem5.decode_step import simulate_step_gem5

                return simulate_step_gem5(src, cfg, TimingConfig(**run["timing"]), gem5_binary, out, g["steps"],
                                          gem5_timeout)
            return simulate_gem5(src.chunks(reuse=True), cfg, src.amap.describe(), gem5_binary, out,
                                 gem5_timeout, g["tick_spacing_ps"], g["dram"], g["clock"])
    return simulate_stream(src, cfg, TimingConfig(**run["timing"]))


# --- the sweep ---------------------------------------------------------------------------

def jobs_that_fit(runs: list[dict], decodes, jobs: int) -> int:
    """How many of ``jobs`` worker processes can run at once without the largest tasks' memory
    (``harness.study.spec.run_memory_bytes``, the decodes' caches) passing half of what is
    available (``harness.core.units.require_memory``'s rule); at least one (each task is checked
    alone when the spec is read, and again when it starts)."""
    from trace_gen.decode import DecodeConfig, check_context

    available = units.available_memory()
    if jobs == 1 or not available:
        return jobs
    needs = [run_memory_bytes(r) for r in runs] + [check_context(DecodeConfig(**d)) or 0 for d in decodes]
    total, fit = 0, 0
    for need in sorted(needs, reverse=True)[:jobs]:
        if fit and total + need > available / 2:
            break
        total, fit = total + need, fit + 1
    return max(1, fit)


def execute(spec: Spec, folder: str | Path, jobs: int | None = None, scheduler: str | None = None,
            rerun_failed: bool = False, force: bool = False, progress: bool = True,
            gem5_binary: str | None = None, gem5_timeout: float | None = None, wait: bool = False) -> dict:
    """Run every unfinished run of ``spec`` in ``folder`` under the folder's lock.

    What can be refused is refused before the folder is touched (a file in the way, a folder of
    another spec, an unreachable scheduler); a sweep that then fails or is interrupted before it
    finished anything leaves the folder as it was (:func:`undo`; the lock file goes with the
    lock), and one interrupted later keeps every finished run and index log.

    Returns counts: ``ok`` and ``failed`` (run now), ``skipped`` (finished or failed before and
    not retried) and ``still_failed`` (the skipped runs that had failed)."""
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    folder = Path(folder).absolute()
    check_folder(folder)
    check_spec(folder, spec, force)
    remote = dask_executor(scheduler) if scheduler else None
    parents: list[Path] = []
    try:
        parents = make_parents(folder / ".lock")
        made: list[Path] = []
        with SweepLock(folder, wait):
            try:
                prepare(folder, spec, force, made)
                return _execute(spec, folder.resolve(), jobs, remote, rerun_failed, progress, gem5_binary,
                                gem5_timeout)
            except BaseException:
                undo(made)
                raise
    except BaseException:
        remove_empty(parents)
        raise
    finally:
        if remote is not None:
            remote.close()


def _execute(spec, folder, jobs, executor, rerun_failed, progress, gem5_binary, gem5_timeout) -> dict:
    """The sweep proper, under the lock, on ``executor`` (a Dask one; None: local processes)."""
    from harness.study.progress import SweepProgress

    gem5 = spec.raw.get("gem5", {})
    gem5_binary = gem5_binary or gem5.get("binary")  # None: each worker's $GEM5
    gem5_timeout = float(gem5_timeout or gem5.get("timeout", 3600))
    records = {run_id(r): read_run(folder / "runs" / run_id(r)) for r in spec.runs}
    redo = ("missing", "stale", "corrupt", "failed") if rerun_failed else ("missing", "stale", "corrupt")
    # a run whose process crashed or was killed is tried again by any sweep: that was not its fault
    todo = [r for r in spec.runs if records[run_id(r)].status in redo or records[run_id(r)].transient]
    still_failed = sum(rec.status == "failed" and not rec.transient for rec in records.values())
    needed = {decode_id(r["decode"]) for r in todo}
    decodes = {did: d for did, d in spec.decodes.items() if did in needed and not log_ready(folder, d)}
    counts = {"ok": 0, "failed": 0, "skipped": len(spec.runs) - len(todo),
              "still_failed": 0 if rerun_failed else still_failed}
    if not todo:
        return counts
    bar = SweepProgress(folder, decodes, todo, enabled=progress)
    if executor is None:
        wanted = max(1, jobs or os.cpu_count() or 1)
        workers = jobs_that_fit(todo, decodes.values(), wanted)
        if workers < wanted:
            bar.write(f"running {workers} task(s) at once, not {wanted}: more would not fit in the memory available")
        executor = local_executor(workers)
    aborted = True
    try:
        threads = None if len(decodes) == 1 or executor.workers == 1 else 1
        failed_decodes = {}
        for did, _, error in executor.map(decode_task, {did: (str(folder), d, threads) for did, d in decodes.items()},
                                          poll=bar.poll):
            bar.decode_done(did)
            if error:
                failed_decodes[did] = error
                bar.write(f"decode of {log_name(decodes[did])} failed: {error}")
        runs = {}
        for r in todo:
            did = decode_id(r["decode"])
            if did in failed_decodes:  # its real cause, not "the log is missing"
                record_failure(folder, r, {"error": f"the decode of index log {log_name(r['decode'])} "
                                                    f"failed: {failed_decodes[did]}", "type": "DecodeFailed"})
                bar.run_done(run_id(r))
                counts["failed"] += 1
            else:
                runs[run_id(r)] = (str(folder), r, gem5_binary, gem5_timeout)
        bar.start_simulations()
        for rid, outcome, error in executor.map(sim_task, runs, poll=bar.poll):
            bar.run_done(rid)
            if error:  # the worker itself failed (killed, out of memory): sim_task never raises
                record_failure(folder, runs[rid][1], {"error": error, "type": "WorkerFailed", "transient": True})
            counts["ok" if outcome and outcome[1] == "ok" else "failed"] += 1
        aborted = False
    finally:
        bar.close()
        executor.close(abort=aborted)
    return counts
