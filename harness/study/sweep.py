"""Sweeps: a TOML grid of decode x stream x LLC x timing x backend points, run once each.

A spec has sections ``[sweep]``, ``[decode]``, ``[stream]``, ``[llc]``, ``[timing]``, ``[gem5]``
and any number of ``[[exclude]]`` tables. Every key of decode/stream/llc/timing (and
``sweep.backend``) takes one value or a list (the grid's axes); an exclude table drops the
points that match all its keys. :data:`SCHEMA` declares every key's default, type and range
(``harness.core.fields``). The spec is validated before anything runs: every value on its own
(so an unknown key or a wrong type hides nothing else), then each section's combinations (e.g.
``reserve_ways`` against ``ways``), and every distinct problem is reported once, all together.

A sweep folder holds ``sweep.json`` (the spec that made it), ``logs/<name>/`` (index logs, one
per decode configuration, shared by every run that needs it, named
``<backbone>-<indexer>-k<topk>-<hash>``; folders of older sweeps named ``<hash>`` are found and
reused) and ``runs/<id>/`` (one per run, named by the hash of its canonical config; see
``harness.study.runs``). Each folder is built under a temporary hidden name and renamed when
complete, so an interrupted sweep leaves no half result and re-running it skips what is done.

A running sweep holds an exclusive lock on its folder (``.lock``): a second sweep into the same
folder refuses, or waits with ``wait=True``. Under the lock, hidden temporaries left in
``runs/`` and ``logs/`` by killed processes are deleted. Worker processes end when the sweep
that started them dies.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import re
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from harness import __version__
from harness.cache import RESULTS_VERSION
from harness.core.canon import config_hash
from harness.core.errors import UserError, first_line, problems_error
from harness.core.locks import FileLock, LockHeld
from harness.core.settings import SETTINGS
from harness.core.units import remove_path, require_memory, write_text_atomic
from harness.study.runs import is_stale, read_run, write_run

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["SCHEMA", "Spec", "execute", "is_stale", "load_spec", "loads_spec", "parse_spec", "run_id"]

MAX_GRID_POINTS = 5_000_000  # checked in seconds; examples/full_sweep.toml has 215,040

# Every key of a spec: default, type and range, by section (declared once, with the options').
SCHEMA = SETTINGS
GRID_SECTIONS = ("decode", "stream", "llc", "timing")
# Sections checked together: a group's canonical configs may depend on each other's values.
GROUPS = (("decode",), ("stream",), ("llc", "timing"))
AXES = {(s, k) for s in GRID_SECTIONS for k in SCHEMA[s]} | {("sweep", "backend")}
FLAT = {k: (s, k) for s, k in AXES}  # exclude tables name grid keys without their section


@dataclass
class Spec:
    raw: dict
    runs: list[dict] = field(default_factory=list)     # canonical run configs
    decodes: dict = field(default_factory=dict)        # decode id -> decode config

    @property
    def digest(self) -> str:
        return config_hash(self.raw, 16)

    @property
    def uses_gem5(self) -> bool:
        return any(r["backend"] == "gem5" for r in self.runs)


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep spec {path} does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"sweep spec {path} is not UTF-8 text") from None
    return loads_spec(text, str(path))


def loads_spec(text: str, where: str = "spec") -> Spec:
    """A spec from TOML text (``where`` names it in messages)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"sweep spec {where} does not parse: {e}") from None
    return parse_spec(raw, where)


def parse_spec(raw: dict, where: str = "spec") -> Spec:
    """Validate a spec and expand it into canonical run configs; every distinct problem is
    reported once, all together (see the module docstring)."""
    problems: list[str] = []
    axes = _axes(raw, problems)
    excludes = _excludes(raw.get("exclude", []) if isinstance(raw, dict) else [], problems)
    points = math.prod(len(axes[(s, k)]) for s, k in AXES)
    if points > MAX_GRID_POINTS:
        problems.append(f"the grid has {points:,} points before exclusions; at most {MAX_GRID_POINTS:,}")
        raise problems_error(f"sweep spec {where}", problems)
    groups = [_group_points(group, axes, problems, excludes) for group in GROUPS]
    spec = Spec(raw)
    if all(groups) and axes[("sweep", "backend")]:
        gem5 = {k: (axes[("gem5", k)] or [None])[0] for k in SCHEMA["gem5"]}  # None: invalid, reported
        seen = set()
        for parts in itertools.product(*groups, axes[("sweep", "backend")]):
            *points, backend = parts
            flat = {"backend": backend}
            for given, _ in points:
                flat.update(given)
            if any(all(flat.get(k) == v for k, v in ex.items()) for ex in excludes):
                continue
            canonical = {section: dict(c) for _, group in points for section, c in group.items()}
            run = {section: canonical[section] for section in GRID_SECTIONS} | {"backend": backend}
            if backend == "gem5":
                try:
                    from harness.cache.llc import LLCConfig
                    from harness.gem5.launcher import check_llc

                    cfg = LLCConfig(**run["llc"])
                    check_llc(cfg)
                    if gem5["model"] == "closed-loop":
                        from harness.cache.timing import TimingConfig
                        from harness.gem5.steptime import check_step_config

                        check_step_config(cfg, TimingConfig(**run["timing"]), gem5["steps"])
                except UserError as e:
                    problems.append(str(e))
                    continue
                keys = ("model", "steps") if gem5["model"] == "closed-loop" else ("model", "tick_spacing_ps", "dram", "clock")
                run["gem5"] = {k: gem5[k] for k in keys}
            rid = run_id(run)
            if rid in seen:  # e.g. the baseline repeated under several policies
                continue
            seen.add(rid)
            spec.runs.append(run)
            spec.decodes[decode_id(run["decode"])] = run["decode"]
        if not spec.runs and not problems:
            problems.append("the grid is empty after exclusions")
    if problems:
        raise problems_error(f"sweep spec {where}", problems)
    return spec


def _axes(raw, problems: list[str]) -> dict:
    """Each key's checked values (defaults for absent keys, a key without a default is required;
    invalid values are reported and left out)."""
    given: dict = {}
    if not isinstance(raw, dict):
        problems.append("the spec is not a table")
        raw = {}
    for section, body in raw.items():
        if section == "exclude":
            continue
        if section not in SCHEMA:
            problems.append(f"unknown section [{section}]")
        elif not isinstance(body, dict):
            problems.append(f"[{section}] must be a table")
        else:
            for key, value in body.items():
                name = f"{section}.{key}"
                if key not in SCHEMA[section]:
                    problems.append(f"unknown key {name}")
                elif isinstance(value, list) and (section, key) not in AXES:
                    problems.append(f"{name} takes one value, not a list")
                elif isinstance(value, list) and not value:
                    problems.append(f"{name} is an empty list")
                else:
                    given[(section, key)] = value if isinstance(value, list) else [value]
    axes = {}
    for section, fields in SCHEMA.items():
        for key, f in fields.items():
            values = []
            if (section, key) not in given and f.default is None and not f.nullable:
                problems.append(f"{section}.{key} is required")
            for value in given.get((section, key), [] if f.default is None and not f.nullable else [f.default]):
                try:
                    checked = f.check(f"{section}.{key}", value)
                except UserError as e:
                    problems.append(str(e))
                    continue
                if checked not in values:
                    values.append(checked)
            axes[(section, key)] = values
    return axes


def _excludes(excludes, problems: list[str]) -> list[dict]:
    if not isinstance(excludes, list) or not all(isinstance(x, dict) for x in excludes):
        problems.append("[[exclude]] must be an array of tables")
        return []
    out = []
    for ex in excludes:
        checked = {}
        for key, value in ex.items():
            if key not in FLAT:
                problems.append(f"unknown key {key} in [[exclude]]")
                continue
            section, _ = FLAT[key]
            try:
                checked[key] = SCHEMA[section][key].check(f"[[exclude]] {key}", value)
            except UserError as e:
                problems.append(str(e))
        out.append(checked)
    return out


def _group_points(group: tuple[str, ...], axes: dict, problems: list[str],
                  excludes: list[dict] = ()) -> list[tuple[dict, dict]]:
    """Each combination of a group's values that forms a valid configuration, as (the values
    given, by key; the canonical config of each section of the group); the invalid ones reported,
    except those an exclude table naming only this group's keys leaves out."""
    keys = [(s, k) for s in group for k in SCHEMA[s]]
    names = {k for _, k in keys}
    own = [ex for ex in excludes if ex and set(ex) <= names]
    out = []
    for values in itertools.product(*(axes[key] for key in keys)):
        given = {s: {} for s in group}
        for (s, k), v in zip(keys, values):
            given[s][k] = v
        flat = {k: v for (_, k), v in zip(keys, values)}
        if any(all(flat.get(k) == v for k, v in ex.items()) for ex in own):
            continue
        try:
            canonical = {s: _canonical(s, given) for s in group}
        except UserError as e:
            problems.append(str(e))
            continue
        out.append(({k: v for (_, k), v in zip(keys, values)}, canonical))
    return out


def _canonical(section: str, given: dict) -> dict:
    """A section's canonical config (equal runs get equal configs), validated as a whole, from
    the values of its group (``given``: section -> key -> value)."""
    v = given[section]
    try:
        if section == "decode":
            from trace_gen.decode import DecodeConfig, check_context

            cfg = DecodeConfig(**v)
            cfg.validate()
            check_context(cfg)
            return dict(v)
        if section == "stream":
            from trace_gen.stream import Layout

            Layout.from_settings(v).validate()
            return dict(v)
        if section == "llc":
            from harness.cache.llc import LLCConfig
            from harness.cache.platforms import get_platform

            platform = get_platform(given["timing"]["platform"])  # its LLC unless size and ways are given
            size = platform.llc_size if v["size"] is None else v["size"]
            ways = platform.llc_ways if v["ways"] is None else v["ways"]
            llc = LLCConfig.make(size, ways, v["reserve_ways"], v["policy"], v["whole_token_eviction"])
            require_memory(llc.memory_bytes(), f"an LLC of {size}")
            if llc.reserve_ways == 0 or llc.policy == "lru":  # the policy and whole-token flag do not apply
                llc = LLCConfig(llc.size, llc.ways, llc.reserve_ways, "lru" if llc.reserve_ways == 0 else llc.policy, True)
            return llc.to_dict()
        from harness.cache.timing import TimingConfig

        timing = TimingConfig.make(v["platform"], v["model"],
                                   **{k: x for k, x in v.items() if k not in ("platform", "model")})
        return timing.to_dict()
    except UserError as e:
        raise UserError(f"{section}: {e}") from None


def decode_id(decode: dict) -> str:
    return config_hash(decode)


def run_id(run: dict) -> str:
    return config_hash(run)


def log_name(decode: dict) -> str:
    """The folder name of a decode's index log: ``<backbone>-<indexer>-k<topk>-<hash>``."""
    backbone = re.sub(r"[^A-Za-z0-9._]+", "_", Path(str(decode["backbone"])).name)[:40] or "backbone"
    return f"{backbone}-{decode['indexer']}-k{decode['topk']}-{decode_id(decode)}"


def log_dir(folder: Path, decode: dict) -> Path:
    """Where a decode's index log lives: its named folder, or the hash-only folder an older
    sweep left (reused as it is)."""
    named = folder / "logs" / log_name(decode)
    legacy = folder / "logs" / decode_id(decode)
    return legacy if not named.exists() and (legacy / "metadata.json").exists() else named


def log_ready(folder: Path, decode: dict) -> bool:
    """Is the decode's index log there and readable (metadata, schema and row count; a log that
    is not is decoded again)?"""
    from trace_gen.indexlog import IndexLog

    path = log_dir(folder, decode)
    if not (path / "metadata.json").exists():
        return False
    try:
        IndexLog(path)
    except UserError:
        return False
    return True


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


def prepare(folder: Path, spec: Spec, force: bool) -> None:
    """Record the spec in ``sweep.json`` (refusing another spec's folder unless ``force``)
    and delete temporaries that killed processes left (call it under the lock)."""
    marker = folder / "sweep.json"
    if marker.exists():
        try:
            old = json.loads(marker.read_text())
            digest = old.get("spec_digest") if isinstance(old, dict) else None
        except (ValueError, UnicodeDecodeError):
            digest = "unreadable"
        if digest != spec.digest and not force:
            raise UserError(f"{folder} holds a sweep made by a different spec; pass --force to add to it anyway")
    (folder / "runs").mkdir(exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    for sub in ("runs", "logs"):
        for entry in (folder / sub).iterdir():
            if entry.name.startswith("."):  # a writer's temporary or a decode's progress file
                remove_path(entry)
    write_text_atomic(marker, json.dumps({"spec_digest": spec.digest, "spec": spec.raw, "version": __version__},
                                         indent=1))


def run_state(folder: Path, rid: str) -> str:
    """'ok', 'stale', 'failed', 'corrupt' or 'missing' (``harness.study.runs``)."""
    return read_run(folder / "runs" / rid).status


def _provenance(started: float) -> dict:
    return {"version": __version__, "results_version": RESULTS_VERSION, "host": platform.node(), "python": sys.version.split()[0],
            "pid": os.getpid(), "started": started, "ended": time.time(),
            "seconds": time.time() - started}


def _error_record(e: BaseException) -> dict:
    return {"error": _error_line(e), "type": type(e).__name__, "traceback": traceback.format_exc()}


def _error_line(e: BaseException) -> str:
    return first_line(e) if isinstance(e, UserError) else f"{type(e).__name__}: {first_line(e)}"


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
    progress = folder / "logs" / f".progress-{did}.json"
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
    from harness.cache.simulate import simulate
    from harness.cache.timing import TimingConfig
    from trace_gen.stream import StreamSource

    if not log_ready(folder, run["decode"]):
        raise UserError(f"index log {log_name(run['decode'])} is missing")
    src = StreamSource.from_options(log_dir(folder, run["decode"]), run["stream"])
    cfg = LLCConfig(**run["llc"])
    if run["backend"] == "gem5":
        from harness.gem5.launcher import simulate_gem5

        g = run["gem5"]
        with tempfile.TemporaryDirectory(prefix="gem5-") as out:
            if g.get("model") == "closed-loop":
                from harness.gem5.steptime import simulate_step_gem5

                return simulate_step_gem5(src, cfg, TimingConfig(**run["timing"]), gem5_binary, out, g["steps"],
                                          gem5_timeout)
            return simulate_gem5(src.chunks(reuse=True), cfg, src.amap.describe(), gem5_binary, out,
                                 gem5_timeout, g["tick_spacing_ps"], g["dram"], g["clock"])
    return simulate(src.chunks(reuse=True), cfg, TimingConfig(**run["timing"]), bounds=True, phases=src.phases(),
                    batch=src.log.requests)


# --- executors ---------------------------------------------------------------------------

def execute(spec: Spec, folder: str | Path, jobs: int | None = None, scheduler: str | None = None,
            rerun_failed: bool = False, force: bool = False, progress: bool = True,
            gem5_binary: str | None = None, gem5_timeout: float | None = None, wait: bool = False) -> dict:
    """Run every unfinished run of ``spec`` in ``folder`` under the folder's lock.

    Returns counts: ``ok`` and ``failed`` (run now), ``skipped`` (finished or failed before and
    not retried) and ``still_failed`` (the skipped runs that had failed)."""
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    folder = Path(folder).absolute()
    check_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with SweepLock(folder, wait):
        prepare(folder, spec, force)
        return _execute(spec, folder.resolve(), jobs, scheduler, rerun_failed, progress, gem5_binary, gem5_timeout)


def _execute(spec, folder, jobs, scheduler, rerun_failed, progress, gem5_binary, gem5_timeout) -> dict:
    from harness.study.progress import SweepProgress

    gem5 = spec.raw.get("gem5", {})
    gem5_binary = gem5_binary or gem5.get("binary")  # None: each worker's $GEM5
    gem5_timeout = float(gem5_timeout or gem5.get("timeout", 3600))
    states = {run_id(r): run_state(folder, run_id(r)) for r in spec.runs}
    redo = ("missing", "stale", "corrupt", "failed") if rerun_failed else ("missing", "stale", "corrupt")
    todo = [r for r in spec.runs if states[run_id(r)] in redo]
    needed = {decode_id(r["decode"]) for r in todo}
    decodes = {did: d for did, d in spec.decodes.items() if did in needed and not log_ready(folder, d)}
    counts = {"ok": 0, "failed": 0, "skipped": len(spec.runs) - len(todo),
              "still_failed": 0 if rerun_failed else sum(s == "failed" for s in states.values())}
    if not todo:
        return counts
    executor = _dask_executor(scheduler) if scheduler else _local_executor(jobs)
    bar = SweepProgress(folder, decodes, todo, enabled=progress)
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
                record_failure(folder, runs[rid][1], {"error": error, "type": "WorkerFailed"})
            counts["ok" if outcome and outcome[1] == "ok" else "failed"] += 1
        aborted = False
    finally:
        bar.close()
        executor.close(abort=aborted)
    return counts


def _call(fn, args):
    """Run a task; (its result, None) or (None, its error in one line)."""
    try:
        return fn(*args), None
    except Exception as e:
        return None, _error_line(e)


def _watch_parent(parent: int) -> None:
    """In a worker: exit as soon as the sweep that started it is gone (no orphan keeps writing)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


class _LocalExecutor:
    def __init__(self, jobs: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.workers = jobs
        # spawn, not fork: a forked child of a process that already runs torch or numba threads
        # can deadlock on a lock held by a thread that did not survive the fork
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_watch_parent, initargs=(os.getpid(),)) \
            if jobs > 1 else None

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

        futures = {self.pool.submit(_call, fn, args): key for key, args in tasks.items()}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            if poll:
                poll()
            for f in done:
                try:
                    value, error = f.result()
                except Exception as e:  # the worker process died (killed, out of memory)
                    value, error = None, _error_line(e)
                yield futures[f], value, error

    def close(self, abort: bool = False):
        if self.pool:
            if abort:  # interrupted: stop the workers now rather than let them finish their runs
                for process in list(getattr(self.pool, "_processes", {}).values()):
                    process.terminate()
            self.pool.shutdown(wait=not abort, cancel_futures=True)


def _poll_until(poll, stop: threading.Event, every: float = 0.5) -> None:
    while not stop.wait(every):
        poll()


def _local_executor(jobs):
    return _LocalExecutor(max(1, jobs or os.cpu_count() or 1))


class _DaskExecutor:
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

    def map(self, fn, tasks: dict, poll=None):
        from dask.distributed import as_completed

        futures = {self.client.submit(_call, fn, args, pure=False): key for key, args in tasks.items()}
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
                    value, error = None, _error_line(e)
                yield futures[f], value, error

    def close(self, abort: bool = False):
        self.client.close()


def _dask_executor(address):
    return _DaskExecutor(address)
