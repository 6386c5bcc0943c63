"""Run folders of a sweep: what a finished run must hold, read and written in one place.

``runs/<id>/`` holds ``config.json`` (the canonical run config, whose hash is ``<id>``),
``provenance.json`` and either ``result.json`` (a finished run) or ``error.json`` (a failed one).
:func:`read_run` gives every folder one state, the same for the sweep (which redoes what is not
finished) and for ``collect`` (which tabulates it):

- ``ok``: a result that passes :func:`result_problem`, from the current built-in simulator;
- ``stale``: a valid built-in result of an older simulator (``harness.cache.RESULTS_VERSION``);
- ``failed``: a recorded error (redone with ``--rerun-failed``; by any sweep when its process
  crashed or was killed, ``transient`` in ``error.json``: that was not the run's fault);
- ``corrupt``: anything else (unreadable or truncated JSON, a result of the wrong shape, a config
  that does not hash to the folder's name); redone by the next sweep, reported with the reason;
- ``missing``: no folder.

:func:`write_run` builds a folder under a temporary name and renames it into place, and never
lets a failure replace a finished run.

Run identity lives here too: a run is named by the hash of its canonical config
(:func:`run_id`), a decode by the hash of its ``[decode]`` config (:func:`decode_id`), its index
log is ``logs/<backbone>-<indexer>-k<topk>-<hash>`` (:func:`log_dir`) and a decode in flight
reports to :func:`progress_file`.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.cache import RESULTS_VERSION
from harness.core.canon import config_hash
from harness.core.errors import UserError
from harness.core.files import remove_path, replace_path, temp_name
from harness.core.traffic import TRAFFIC_CLASSES

FINISHED = ("ok", "stale")
STEP_SCOPES = ("whole", "attention", "trace")  # harness.cache.timing: what a step time includes


@dataclass
class RunRecord:
    rid: str
    status: str                      # ok, stale, failed, corrupt or missing
    config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    error: str | None = None         # a failed run's error, or why a run is corrupt
    transient: bool = False          # a failed run whose process crashed or was killed: redone by any sweep


BUILT_IN = ("builtin", "tier")  # the backends whose results RESULTS_VERSION versions


def is_stale(config: dict, provenance: dict) -> bool:
    """Was this finished run made by a built-in model whose results have changed since?"""
    return config.get("backend", "builtin") in BUILT_IN and provenance.get("results_version") != RESULTS_VERSION


# --- the result schema ----------------------------------------------------------------------

def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _rate(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1)


def _cycles(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _counts_problem(c, name: str) -> str | None:
    if not isinstance(c, dict):
        return f"{name} is not an object"
    for key in ("accesses", "hits", "misses"):
        if not _count(c.get(key)):
            return f"{name}.{key} is not a count ({c.get(key)!r})"
    if c["hits"] + c["misses"] != c["accesses"]:
        return f"{name}: hits + misses != accesses"
    if not _rate(c.get("hit_rate")):
        return f"{name}.hit_rate is not a rate ({c.get('hit_rate')!r})"
    return None


_BUILTIN_COUNTS = ("evictions", "writebacks", "token_invalidations", "bypasses", "steps")
_BOUND_COUNTS = ("capacity_tokens", "lines_per_token", "token_reads", "fa_lru_hits", "min_hits")


def _tier_problem(result: dict) -> str | None:
    """Why ``result`` is not a valid result of the host-tier model (``harness.cache.tier``)."""
    hot = result.get("hot_buffer")
    if not isinstance(hot, dict) or not all(_count(hot.get(k)) for k in ("reads", "hits", "tokens_per_layer")):
        return "result.hot_buffer is not a set of counts"
    if hot["hits"] > hot["reads"] or not _rate(hot.get("hit_rate")):
        return "result.hot_buffer.hit_rate is not a rate of its reads"
    rates = hot.get("hit_rate_per_step")
    if not isinstance(rates, list) or not all(_rate(x) for x in rates):
        return "result.hot_buffer.hit_rate_per_step is not a list of rates"
    for key in ("step_time_s", "link_bytes_per_step", "batch_tokens_per_s"):
        if not _cycles(result.get(key)):
            return f"result.{key} is not a finite non-negative number ({result.get(key)!r})"
    cap, tp = result.get("capacity"), result.get("throughput")
    if not isinstance(cap, dict) or not all(_count(cap.get(k)) for k in ("full_max_batch", "tier_max_batch")):
        return "result.capacity lacks the largest batches"
    if not isinstance(tp, dict) or not all(_cycles(tp.get(k)) for k in ("full_batch_tokens_per_s",
                                                                         "tier_batch_tokens_per_s")):
        return "result.throughput lacks the throughputs at the largest batches"
    return None


def result_problem(result, backend: str) -> str | None:
    """Why ``result`` is not a valid result of a ``backend`` run (None when it is): the keys the
    built-in simulator (``harness.cache.simulate``), the gem5 backend (``harness.gem5``) or the
    host-tier model (``harness.cache.tier``) write, with their types and ranges (counts are
    non-negative integers, rates in [0, 1], cycles finite)."""
    if not isinstance(result, dict):
        return "the result is not a JSON object"
    if backend == "tier":
        return _tier_problem(result)
    problem = _counts_problem(result, "result")
    if problem:
        return problem
    by_class = result.get("by_class")
    if not isinstance(by_class, dict):
        return "result.by_class is not an object"
    for name, c in by_class.items():
        if name not in TRAFFIC_CLASSES:
            return f"result.by_class has an unknown traffic class {name!r}"
        problem = _counts_problem(c, f"result.by_class.{name}")
        if problem:
            return problem
    tokens = result.get("kv_tokens")
    if tokens is not None:
        if not isinstance(tokens, dict) or not all(_count(tokens.get(k)) for k in
                                                   ("accesses", "full_hits", "partial_hits", "misses")):
            return "result.kv_tokens is not a set of counts"
        if not _rate(tokens.get("full_hit_rate")):
            return "result.kv_tokens.full_hit_rate is not a rate"
    if not isinstance(result.get("config"), dict):
        return "result.config is not an object"
    for key in ("evictions", "writebacks") if backend == "gem5" else _BUILTIN_COUNTS:
        if not _count(result.get(key)):
            return f"result.{key} is not a count ({result.get(key)!r})"
    if backend == "gem5":
        g = result.get("gem5")
        if not isinstance(g, dict) or not _count(g.get("sim_ticks")):
            return "result.gem5 lacks sim_ticks"
        if "step_time_cycles" not in result:  # the trace replay counts only
            return None
    if not _cycles(result.get("step_time_cycles")):
        return f"result.step_time_cycles is not a finite cycle count ({result.get('step_time_cycles')!r})"
    for key in ("memory_cycles_per_step", "compute_cycles_per_step"):
        if not _cycles(result.get(key)):
            return f"result.{key} is not a finite cycle count ({result.get(key)!r})"
    if result.get("step_scope") not in STEP_SCOPES:
        return f"result.step_scope is not one of {', '.join(STEP_SCOPES)} ({result.get('step_scope')!r})"
    if result.get("attention_time_cycles") is not None and not _cycles(result["attention_time_cycles"]):
        return f"result.attention_time_cycles is not a finite cycle count ({result['attention_time_cycles']!r})"
    bounds = result.get("bounds")
    if bounds is not None:
        if not isinstance(bounds, dict) or not all(_count(bounds.get(k)) for k in _BOUND_COUNTS):
            return "result.bounds is not a set of counts"
        if not (_rate(bounds.get("fa_lru_hit_rate")) and _rate(bounds.get("min_hit_rate"))):
            return "result.bounds has a hit rate outside [0, 1]"
    return None


# --- reading ----------------------------------------------------------------------------------

def _load(path: Path):
    """(object, None) or (None, why it cannot be read)."""
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except UnicodeDecodeError:
        return None, f"{path.name} is not UTF-8 text"
    except ValueError as e:
        return None, f"{path.name} is not valid JSON ({e})"
    except OSError as e:
        return None, f"{path.name} cannot be read ({e.strerror})"


def read_run(folder: Path) -> RunRecord:
    """The state of the run folder ``folder`` (see the module docstring)."""
    rid = folder.name
    if not folder.is_dir():
        return RunRecord(rid, "missing")
    config, why = _load(folder / "config.json")
    if why or not isinstance(config, dict):
        return RunRecord(rid, "corrupt", error=why or "config.json is not a JSON object")
    if config_hash(config) != rid:
        return RunRecord(rid, "corrupt", config, error="config.json does not hash to the run's id")
    provenance, why = _load(folder / "provenance.json")
    if why or not isinstance(provenance, dict):
        return RunRecord(rid, "corrupt", config, error=why or "provenance.json is not a JSON object")
    if (folder / "result.json").exists():
        result, why = _load(folder / "result.json")
        why = why or result_problem(result, config.get("backend", "builtin"))
        if why:
            return RunRecord(rid, "corrupt", config, provenance, error=why)
        status = "stale" if is_stale(config, provenance) else "ok"
        return RunRecord(rid, status, config, provenance, result)
    if (folder / "error.json").exists():
        error, why = _load(folder / "error.json")
        if why or not isinstance(error, dict) or not isinstance(error.get("error"), str):
            return RunRecord(rid, "corrupt", config, provenance, error=why or "error.json has no error message")
        return RunRecord(rid, "failed", config, provenance, error=error["error"],
                         transient=error.get("transient") is True)
    return RunRecord(rid, "corrupt", config, provenance, error="neither result.json nor error.json")


def run_folders(runs: Path) -> list[Path]:
    """The run folders of ``runs/`` (hidden names are temporaries of writers at work)."""
    return sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))


# --- writing ----------------------------------------------------------------------------------

def write_run(runs: Path, rid: str, files: dict) -> bool:
    """Write the run folder ``runs/<rid>`` from ``files`` (name -> JSON object) under a temporary
    name, then rename it into place. A folder holding a failure (``error.json``) never replaces
    a finished run: then nothing is written and False is returned."""
    final = runs / rid
    tmp = temp_name(final)
    try:
        tmp.mkdir()
        for name, obj in files.items():
            (tmp / name).write_text(json.dumps(obj, indent=1, allow_nan=False, default=str) + "\n")
        failure = "error.json" in files
        if final.exists():
            if failure and read_run(final).status in FINISHED:
                return False
            replace_path(tmp, final)
        else:
            try:
                os.rename(tmp, final)
            except OSError:  # another writer got there first: decide again on what it left
                if failure and read_run(final).status in FINISHED:
                    return False
                replace_path(tmp, final)
        return True
    finally:
        remove_path(tmp)


# --- run identity ---------------------------------------------------------------------------

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


def progress_file(folder: Path, did: str) -> Path:
    """Where a decode in flight reports its progress for the sweep's bar (``logs/.progress-<id>.json``)."""
    return folder / "logs" / f".progress-{did}.json"
