"""Sweeps: a TOML grid of decode x stream x LLC x timing x backend points, run once each.

A spec has sections ``[sweep]``, ``[decode]``, ``[stream]``, ``[llc]``, ``[timing]``, ``[gem5]``
and any number of ``[[exclude]]`` tables. Every key of decode/stream/llc/timing takes one value
or a list (the grid's axes); an exclude table drops the points that match all its keys. The
spec is validated before anything runs, every problem reported at once.

A sweep folder holds ``sweep.json`` (the spec that made it), ``logs/<id>/`` (index logs, one per
decode configuration, shared by every run that needs it) and ``runs/<id>/`` (one per run, named
by the hash of its canonical config: ``config.json``, ``result.json`` or ``error.json``, and
``provenance.json``). Each folder is built under a temporary name and renamed when complete,
so an interrupted sweep leaves no half result and re-running it skips what is done.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from harness import __version__
from harness.cache import RESULTS_VERSION
from harness.cache.platforms import DEFAULT_PLATFORM
from harness.core.canon import config_hash
from harness.core.errors import UserError, first_line
from harness.core.units import atomic_path, write_text_atomic

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCHEMA = {
    "sweep": {"name": "demo", "backend": "builtin"},
    "decode": {"backbone": None, "indexer": "dsa", "topk": 256, "prompt_tokens": 2048, "steps": 32,
               "requests": 1, "text": "python-source", "sink_tokens": 0, "local_window": 0,
               "observe_only": False, "seed": 0},
    "stream": {"geometry": "native", "layout": "paged", "page_tokens": 64, "page_order": "in-order",
               "layout_seed": 0, "weights": False},
    # size and ways default to the platform's LLC
    "llc": {"size": None, "ways": None, "reserve_ways": 0, "policy": "token-lru", "whole_token_eviction": True},
    # the platform's values, each overridable (None: the platform's)
    "timing": {"platform": DEFAULT_PLATFORM, "model": "closed-loop", "llc_hit_cycles": None,
               "dram_latency_cycles": None, "max_outstanding": None, "dram_bytes_per_cycle": None,
               "issue_per_cycle": None, "warmup_steps": None},
    "gem5": {"binary": None, "timeout": 3600.0, "tick_spacing_ps": 1_000_000, "dram": "DDR4_2400_8x8",
             "clock": "2GHz"},
}
GRID_SECTIONS = ("decode", "stream", "llc", "timing")


@dataclass
class Spec:
    raw: dict
    runs: list[dict] = field(default_factory=list)     # canonical run configs
    decodes: dict = field(default_factory=dict)        # decode id -> decode config

    @property
    def digest(self) -> str:
        return config_hash(self.raw, 16)


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep spec {path} does not exist")
    return loads_spec(path.read_text(), str(path))


def loads_spec(text: str, where: str = "spec") -> Spec:
    """A spec from TOML text (``where`` names it in messages)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"sweep spec {where} does not parse: {e}") from None
    return parse_spec(raw, where)


def parse_spec(raw: dict, where: str = "spec") -> Spec:
    """Validate a spec and expand it into canonical run configs (all problems at once)."""
    problems = []
    for section, body in raw.items():
        if section == "exclude":
            if not isinstance(body, list) or not all(isinstance(x, dict) for x in body):
                problems.append("[[exclude]] must be an array of tables")
            continue
        if section not in SCHEMA:
            problems.append(f"unknown section [{section}]")
            continue
        if not isinstance(body, dict):
            problems.append(f"[{section}] must be a table")
            continue
        for key in body:
            if key not in SCHEMA[section]:
                problems.append(f"unknown key {section}.{key}")
    if "decode" not in raw or "backbone" not in raw.get("decode", {}):
        problems.append("decode.backbone is required")
    all_keys = {k for s in GRID_SECTIONS for k in SCHEMA[s]}
    for ex in raw.get("exclude", []) if isinstance(raw.get("exclude", []), list) else []:
        for key in ex if isinstance(ex, dict) else []:
            if key not in all_keys:
                problems.append(f"unknown key {key} in [[exclude]]")
    if problems:
        raise UserError(f"{where}: " + "; ".join(problems))

    def axis(section, key):
        v = raw.get(section, {}).get(key, SCHEMA[section][key])
        return v if isinstance(v, list) else [v]

    backends = axis("sweep", "backend")
    for b in backends:
        if b not in ("builtin", "gem5"):
            problems.append(f"sweep.backend {b!r} is not builtin or gem5")
    gem5 = {**SCHEMA["gem5"], **raw.get("gem5", {})}
    keys = [(s, k) for s in GRID_SECTIONS for k in SCHEMA[s]]
    excludes = raw.get("exclude", [])
    spec = Spec(raw)
    seen = set()
    for values in itertools.product(*(axis(s, k) for s, k in keys), backends):
        point = {s: {} for s in GRID_SECTIONS}
        for (s, k), v in zip(keys, values[:-1]):
            point[s][k] = v
        flat = {k: v for s in GRID_SECTIONS for k, v in point[s].items()}
        if any(all(flat.get(k) == v for k, v in ex.items()) for ex in excludes):
            continue
        backend = values[-1]
        try:
            run = canonical_run(point, backend, gem5)
        except UserError as e:
            msg = f"point {_describe(flat)}: {e}"
            if msg not in problems:
                problems.append(msg)
            continue
        rid = run_id(run)
        if rid in seen:  # e.g. the baseline repeated under several policies
            continue
        seen.add(rid)
        spec.runs.append(run)
        spec.decodes[decode_id(run["decode"])] = run["decode"]
    if problems:
        raise UserError(f"{where}: {len(problems)} invalid point(s): " + "; ".join(problems[:20])
                        + (" ..." if len(problems) > 20 else ""))
    if not spec.runs:
        raise UserError(f"{where}: the grid is empty after exclusions")
    return spec


def _describe(flat: dict) -> str:
    keys = ("backbone", "geometry", "size", "ways", "reserve_ways", "policy")
    return ",".join(f"{k}={flat[k]}" for k in keys if k in flat)


def canonical_run(point: dict, backend: str, gem5: dict) -> dict:
    """Validated, normalised config of one run (equal runs get equal configs)."""
    from harness.cache.llc import LLCConfig
    from harness.cache.platforms import get_platform
    from harness.cache.timing import TimingConfig
    from trace_gen.decode import DecodeConfig
    from trace_gen.geometry import PRESETS
    from trace_gen.indexers import get_indexer
    from trace_gen.stream import Layout

    d = dict(point["decode"])
    for key in ("topk", "prompt_tokens", "steps", "requests", "sink_tokens", "local_window", "seed"):
        if isinstance(d[key], bool) or not isinstance(d[key], int):
            raise UserError(f"decode.{key} must be an integer, got {d[key]!r}")
    DecodeConfig(**d).validate()
    get_indexer(d["indexer"])
    s = point["stream"]
    if s["geometry"] != "native" and s["geometry"] not in PRESETS:
        raise UserError(f"unknown geometry {s['geometry']!r}")
    Layout(s["layout"], s["page_tokens"], s["page_order"], s["layout_seed"], s["weights"]).validate()
    t = point["timing"]
    platform = get_platform(t["platform"])
    size, ways = point["llc"]["size"], point["llc"]["ways"]
    llc = LLCConfig.make(platform.llc_size if size is None else size, platform.llc_ways if ways is None else ways,
                         point["llc"]["reserve_ways"], point["llc"]["policy"], point["llc"]["whole_token_eviction"])
    if llc.reserve_ways == 0 or llc.policy == "lru":  # the policy and whole-token flag do not apply
        llc = LLCConfig(llc.size, llc.ways, llc.reserve_ways, "lru" if llc.reserve_ways == 0 else llc.policy, True)
    timing = TimingConfig.make(t["platform"], t["model"],
                               **{k: v for k, v in t.items() if k not in ("platform", "model")})
    run = {"decode": dict(d), "stream": dict(s), "llc": llc.to_dict(), "timing": timing.to_dict(),
           "backend": backend}
    if backend == "gem5":
        from harness.gem5.launcher import check_llc

        check_llc(llc)
        run["gem5"] = {k: gem5[k] for k in ("tick_spacing_ps", "dram", "clock")}
    return run


def is_stale(config: dict, provenance: dict) -> bool:
    """Was this finished run made by a built-in simulator whose results have changed since?"""
    return config.get("backend", "builtin") == "builtin" and provenance.get("results_version") != RESULTS_VERSION


def decode_id(decode: dict) -> str:
    return config_hash(decode)


def run_id(run: dict) -> str:
    return config_hash(run)


# --- the sweep folder ---------------------------------------------------------------------

def prepare(folder: Path, spec: Spec, force: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "sweep.json"
    if marker.exists():
        old = json.loads(marker.read_text())
        if old.get("spec_digest") != spec.digest and not force:
            raise UserError(f"{folder} holds a sweep made by a different spec; pass --force to add to it anyway")
    (folder / "runs").mkdir(exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    write_text_atomic(marker, json.dumps({"spec_digest": spec.digest, "spec": spec.raw, "version": __version__},
                                         indent=1))


def run_state(folder: Path, rid: str) -> str:
    """'ok', 'failed', 'stale' (a result of an older simulator) or 'missing'."""
    d = folder / "runs" / rid
    if (d / "result.json").exists():
        try:
            stale = is_stale(json.loads((d / "config.json").read_text()),
                             json.loads((d / "provenance.json").read_text()))
        except (OSError, ValueError, AttributeError):
            stale = True
        return "stale" if stale else "ok"
    if (d / "error.json").exists():
        return "failed"
    return "missing"


def log_ready(folder: Path, did: str) -> bool:
    return (folder / "logs" / did / "metadata.json").exists()


def _provenance(started: float) -> dict:
    return {"version": __version__, "results_version": RESULTS_VERSION, "host": platform.node(), "python": sys.version.split()[0],
            "pid": os.getpid(), "started": started, "ended": time.time(),
            "seconds": time.time() - started}


def _write_run(folder: Path, rid: str, files: dict) -> None:
    """Write a run folder under a temporary name, then rename it into place."""
    with atomic_path(folder / "runs" / rid) as tmp:  # a hidden name until complete: collect skips it
        tmp.mkdir()
        for name, obj in files.items():
            (tmp / name).write_text(json.dumps(obj, indent=1, default=str) + "\n")


def decode_task(folder: str, decode: dict, threads: int | None = None) -> str:
    """Produce one shared index log (if it is not there yet)."""
    from trace_gen.decode import DecodeConfig
    from trace_gen.decode import decode as run_decode

    folder = Path(folder)
    did = decode_id(decode)
    if log_ready(folder, did):
        return did
    if threads:
        import torch

        torch.set_num_threads(threads)
    run_decode(DecodeConfig(**decode), folder / "logs" / did, overwrite=True, progress=False)
    return did


def sim_task(folder: str, run: dict, gem5_binary: str | None = None, gem5_timeout: float = 3600) -> tuple[str, str]:
    """Simulate one run and record its result or its error; never raises. The gem5 settings travel
    with the task, so that workers on other machines get them too."""
    folder = Path(folder)
    rid = run_id(run)
    started = time.time()
    try:
        result = simulate_run(folder, run, gem5_binary, gem5_timeout)
        _write_run(folder, rid, {"config.json": run, "result.json": result, "provenance.json": _provenance(started)})
        return rid, "ok"
    except Exception as e:  # recorded, so one failing run does not stop the others
        err = {"error": first_line(e), "type": type(e).__name__, "traceback": traceback.format_exc()}
        _write_run(folder, rid, {"config.json": run, "error.json": err, "provenance.json": _provenance(started)})
        return rid, "failed"


def simulate_run(folder: Path, run: dict, gem5_binary: str | None = None, gem5_timeout: float = 3600) -> dict:
    from harness.cache.llc import LLCConfig
    from harness.cache.simulate import simulate
    from harness.cache.timing import TimingConfig
    from trace_gen.stream import StreamSource

    did = decode_id(run["decode"])
    if not log_ready(folder, did):
        raise UserError(f"index log {did} is missing (its decode failed?)")
    src = StreamSource.from_options(folder / "logs" / did, run["stream"])
    cfg = LLCConfig(**run["llc"])
    if run["backend"] == "gem5":
        from harness.gem5.launcher import simulate_gem5

        g = run["gem5"]
        with tempfile.TemporaryDirectory(prefix="gem5-") as out:
            return simulate_gem5(src.chunks(reuse=True), cfg, src.amap.describe(), gem5_binary, out,
                                 gem5_timeout, g["tick_spacing_ps"], g["dram"], g["clock"])
    return simulate(src.chunks(reuse=True), cfg, TimingConfig(**run["timing"]), bounds=True, phases=src.phases(),
                    batch=src.log.requests)


# --- executors ---------------------------------------------------------------------------

def execute(spec: Spec, folder: str | Path, jobs: int | None = None, scheduler: str | None = None,
            rerun_failed: bool = False, force: bool = False, progress: bool = True,
            gem5_binary: str | None = None, gem5_timeout: float | None = None) -> dict:
    """Run every missing run of ``spec`` in ``folder``; returns counts by status."""
    from tqdm import tqdm

    folder = Path(folder).resolve()
    prepare(folder, spec, force)
    gem5 = spec.raw.get("gem5", {})
    gem5_binary = gem5_binary or gem5.get("binary")  # None: each worker's $GEM5
    gem5_timeout = float(gem5_timeout or gem5.get("timeout", 3600))
    todo = [r for r in spec.runs
            if (state := run_state(folder, run_id(r))) in ("missing", "stale") or (state == "failed" and rerun_failed)]
    needed = {decode_id(r["decode"]) for r in todo}
    decodes = [d for did, d in spec.decodes.items() if did in needed and not log_ready(folder, did)]
    counts = {"skipped": len(spec.runs) - len(todo), "ok": 0, "failed": 0}
    if not todo:
        return counts
    executor = _dask_executor(scheduler) if scheduler else _local_executor(jobs)
    try:
        with tqdm(total=len(decodes) + len(todo), desc="sweep", unit="task", disable=not progress) as bar:
            threads = None if len(decodes) == 1 or executor.workers == 1 else 1
            for _did, error in executor.map(decode_task, [(str(folder), d, threads) for d in decodes]):
                bar.update(1)
                if error:
                    bar.write(f"decode failed: {error}")
            for (_rid, status), error in executor.map(sim_task, [(str(folder), r, gem5_binary, gem5_timeout) for r in todo]):
                bar.update(1)
                counts["failed" if error or status == "failed" else "ok"] += 1
    finally:
        executor.close()
    return counts


class _LocalExecutor:
    def __init__(self, jobs: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.workers = jobs
        # spawn, not fork: a forked child of a process that already runs torch or numba threads
        # can deadlock on a lock held by a thread that did not survive the fork
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) \
            if jobs > 1 else None

    def map(self, fn, arglist):
        if self.pool is None:
            for args in arglist:
                yield _call(fn, args)
            return
        from concurrent.futures import as_completed

        futures = [self.pool.submit(_call, fn, args) for args in arglist]
        for f in as_completed(futures):
            yield f.result()

    def close(self):
        if self.pool:
            self.pool.shutdown(cancel_futures=True)


def _call(fn, args):
    try:
        return fn(*args), None
    except Exception as e:
        return (None, "failed") if fn is sim_task else None, first_line(e)


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

    def map(self, fn, arglist):
        from dask.distributed import as_completed

        futures = [self.client.submit(_call, fn, args, pure=False) for args in arglist]
        for f in as_completed(futures):
            yield f.result()

    def close(self):
        self.client.close()


def _dask_executor(address):
    return _DaskExecutor(address)
