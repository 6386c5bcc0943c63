"""Collect a sweep's run folders into one tidy table: one row per run.

Columns: bookkeeping (``_run_id``, ``_status``: ok, failed or stale (made by an older built-in
simulator, see ``harness.cache.RESULTS_VERSION``; the report leaves it out, the next sweep redoes it),
``_error``, ``_host``, ``_version``, ``_results_version``, ``_started``, ``_seconds``), parameters under their plain names (backbone, geometry,
reserve_ways, ...), and results with units in their names (``llc_bytes``, ``step_time_cycles``,
``tokens_per_s``, ``kv_hit_rate``, ``misses_lines``, ...); ``step_time_model`` names the model
that produced the step time. gem5 and built-in runs share the table; a result a
backend does not produce is empty.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.core.errors import UserError
from harness.core.units import atomic_path
from harness.study.sweep import is_stale

DECODE_PARAMETERS = ("backbone", "indexer", "topk", "prompt_tokens", "steps", "requests", "text", "sink_tokens",
                     "local_window", "observe_only", "seed")
STREAM_PARAMETERS = ("geometry", "layout", "page_tokens", "page_order", "layout_seed", "weights")
# parameter columns (besides timing_<key>, one per timing value)
PARAMETERS = tuple("decode_steps" if k == "steps" else k for k in DECODE_PARAMETERS) + STREAM_PARAMETERS + (
    "llc_bytes", "ways", "reserve_ways", "policy", "whole_token_eviction", "backend")


def _params(cfg: dict) -> dict:
    d, s, llc, t = cfg["decode"], cfg["stream"], cfg["llc"], cfg["timing"]
    out = {("decode_steps" if k == "steps" else k): d[k] for k in DECODE_PARAMETERS}
    out.update({k: s[k] for k in STREAM_PARAMETERS})
    out.update({"llc_bytes": llc["size"], "ways": llc["ways"], "reserve_ways": llc["reserve_ways"],
                "policy": llc["policy"], "whole_token_eviction": llc["whole_token_eviction"],
                "backend": cfg["backend"]})
    out.update({f"timing_{k}": v for k, v in t.items()})
    return out


def _results(r: dict) -> dict:
    kv = r.get("by_class", {}).get("kv", {})
    tokens = r.get("kv_tokens") or {}
    bounds = r.get("bounds") or {}
    out = {
        "accesses_lines": r.get("accesses"), "hits_lines": r.get("hits"), "misses_lines": r.get("misses"),
        "hit_rate": r.get("hit_rate"), "kv_accesses_lines": kv.get("accesses"), "kv_misses_lines": kv.get("misses"),
        "kv_hit_rate": kv.get("hit_rate"),
        "kv_token_reads": tokens.get("accesses"), "kv_token_full_hits": tokens.get("full_hits"),
        "kv_token_partial_hits": tokens.get("partial_hits"), "kv_token_full_hit_rate": tokens.get("full_hit_rate"),
        "evictions_lines": r.get("evictions"), "token_invalidations_lines": r.get("token_invalidations"),
        "writebacks_lines": r.get("writebacks"), "steps": r.get("steps"),
        "measured_steps": r.get("measured_steps"), "step_time_cycles": r.get("step_time_cycles"),
        "step_time_s": r.get("step_time_s"), "tokens_per_s": r.get("tokens_per_s"),
        "batch_tokens_per_s": r.get("batch_tokens_per_s"), "memory_cycles_per_step": r.get("memory_cycles_per_step"),
        "compute_cycles_per_step": r.get("compute_cycles_per_step"),
        "step_time_model": (r.get("timing") or {}).get("produced_by"),
        "bound_capacity_tokens": bounds.get("capacity_tokens"), "lines_per_token": bounds.get("lines_per_token"),
        "fa_lru_token_hit_rate": bounds.get("fa_lru_hit_rate"), "min_token_hit_rate": bounds.get("min_hit_rate"),
    }
    per_request = r.get("by_request") or []
    for name in ("kv", "index"):  # each request's misses (a list; the report's spread over requests)
        out[f"request_{name}_misses_lines"] = [int((q.get(name) or {}).get("misses", 0)) for q in per_request] or None
    for kind, share in (r.get("memory_wait_share") or {}).items():
        out[f"memory_wait_share_{kind}"] = share
    for name, c in r.get("by_class", {}).items():
        out[f"{name}_misses_lines"] = c.get("misses")
        if name != "kv":
            out[f"{name}_hit_rate"] = c.get("hit_rate")
    g = r.get("gem5") or {}
    if g:
        out.update({"gem5_sim_ticks": g.get("sim_ticks"), "gem5_host_seconds": g.get("host_seconds"),
                    "gem5_avg_miss_latency_ticks": g.get("avg_miss_latency_ticks"),
                    "gem5_line_accesses_per_host_second": g.get("line_accesses_per_host_second")})
    return out


def collect(folder: str | Path, out: str | Path | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The table of a sweep folder and the runs that could not be read (reported, skipped)."""
    folder = Path(folder)
    runs = folder / "runs"
    if not runs.is_dir():
        raise UserError(f"{folder} is not a sweep folder (no runs/)")
    rows, bad = [], []
    for d in sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            cfg = json.loads((d / "config.json").read_text())
            prov = json.loads((d / "provenance.json").read_text())
            if (d / "result.json").exists():
                result, error = json.loads((d / "result.json").read_text()), None
                status = "stale" if is_stale(cfg, prov) else "ok"
            else:
                status, result = "failed", {}
                error = json.loads((d / "error.json").read_text())["error"]
            row = {"_run_id": d.name, "_status": status, "_error": error, "_host": prov.get("host"),
                   "_version": prov.get("version"), "_results_version": prov.get("results_version"),
                   "_started": prov.get("started"), "_seconds": prov.get("seconds"),
                   **_params(cfg), **_results(result)}
        except (OSError, ValueError, KeyError, TypeError) as e:
            bad.append(f"{d.name}: {type(e).__name__}: {e}")
            continue
        rows.append(row)
    df = pd.DataFrame(rows)
    if out is not None:
        with atomic_path(out) as tmp:
            df.to_parquet(tmp, index=False)
    return df, bad
