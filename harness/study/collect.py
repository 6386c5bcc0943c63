"""Collect a sweep's run folders into one tidy table: one row per run.

Columns: bookkeeping (``_run_id``, ``_status``: ok, failed, stale (made by an older built-in
simulator, see ``harness.cache.RESULTS_VERSION``; the report leaves it out, the next sweep redoes it)
or corrupt (a folder that fails the run schema of ``harness.study.runs``; ``_error`` says why, the
next sweep redoes it), ``_error``, ``_host``, ``_version``, ``_results_version``, ``_started``,
``_seconds``), parameters under their plain names (backbone, geometry,
reserve_ways, ...), and results with units in their names (``llc_bytes``, ``step_time_cycles``,
``tokens_per_s``, ``kv_hit_rate``, ``misses_lines``, ...; a host-tier run's ``hot_hit_rate``,
``link_bytes_per_step``, ``full_max_batch``, ``tier_max_batch_tokens_per_s``, ``crossover_batch``,
...); ``step_time_model`` names the model that produced the step time and ``step_scope`` what it
includes (``whole``: the weights' traffic too; ``attention``: without it),
``attention_time_cycles`` the step's attention part; the stream's indexer levers
(``trace_gen.levers``): ``lever_origin`` (none, log, stream), ``lever_share``, ``lever_reuse``,
``scan_share``, ``index_key_bytes``, ``selection_kept`` and ``recall_kept`` (measured, in a log
decoded with the lever). gem5 and built-in runs share the table; a
result a backend does not produce is empty.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.core.errors import UserError
from harness.core.files import atomic_path
from harness.core.outputs import check_output_file
from harness.core.settings import SETTINGS, column_name
from harness.study.runs import FINISHED, read_run, run_folders

# Parameter columns: (column, section, key) of every setting that has a column (harness.core.settings),
# besides timing_<key>, one per value of the resolved timing config.
_COLUMNS = tuple((column_name(section, key), section, key) for section in ("decode", "stream", "llc", "tier", "sweep")
                 for key in SETTINGS[section] if column_name(section, key))
PARAMETERS = tuple(column for column, _, _ in _COLUMNS)


def _params(cfg: dict) -> dict:
    sections = {k: cfg.get(k) if isinstance(cfg.get(k), dict) else {} for k in ("decode", "stream", "llc", "timing",
                                                                                  "tier")}
    sections["sweep"] = cfg  # a run's backend sits at the top of its config
    out = {column: sections[section].get(key) for column, section, key in _COLUMNS}
    out.update({f"timing_{k}": v for k, v in sections["timing"].items()})
    return out


def _tier_results(r: dict) -> dict:
    """The columns of a host-tier run (``harness.cache.tier``)."""
    hot, cap, tp = r["hot_buffer"], r["capacity"], r["throughput"]
    return {
        "steps": r.get("steps"), "measured_steps": r.get("measured_steps"), "measured_batch": r.get("batch"),
        "hot_tokens": hot["tokens_per_layer"], "hot_reads_tokens": hot["reads"], "hot_hits_tokens": hot["hits"],
        "hot_hit_rate": hot["hit_rate"], "hot_hit_rate_per_step": hot["hit_rate_per_step"],
        "hot_hit_rate_per_log_layer": hot.get("hit_rate_per_log_layer"),
        "link_bytes_per_step": r["link_bytes_per_step"], "link_wait_share": r.get("link_wait_share"),
        "link_bytes_per_s_peak": r["link"]["bytes_per_s"],
        "step_time_s": r["step_time_s"], "tokens_per_s": r.get("tokens_per_s"),
        "batch_tokens_per_s": r["batch_tokens_per_s"],
        "full_hbm_step_time_s": r["full_hbm"]["step_time_s"],
        "full_hbm_batch_tokens_per_s": r["full_hbm"]["batch_tokens_per_s"],
        "context_tokens": cap["context_tokens"], "weights_bytes": cap["weights_bytes"],
        "kv_budget_bytes": cap["kv_budget_bytes"], "full_request_bytes": cap["full_request_bytes"],
        "tier_request_bytes": cap["tier_request_bytes"], "host_request_bytes": cap["host_request_bytes"],
        "full_max_batch": tp["full_max_batch"], "tier_max_batch": tp["tier_max_batch"],
        "full_max_batch_tokens_per_s": tp["full_batch_tokens_per_s"],
        "tier_max_batch_tokens_per_s": tp["tier_batch_tokens_per_s"],
        "tier_gain": tp.get("gain"), "crossover_batch": tp.get("crossover_batch"),
        "throughput_curve": [[p["batch"], p["full_batch_tokens_per_s"], p["tier_batch_tokens_per_s"]]
                             for p in tp.get("curve", [])],
        "step_time_model": r["timing"]["produced_by"],
    }


def _results(r: dict) -> dict:
    if "hot_buffer" in r:
        return _tier_results(r)
    kv = r.get("by_class", {}).get("kv", {})
    tokens = r.get("kv_tokens") or {}
    bounds = r.get("bounds") or {}
    out = {
        "accesses_lines": r.get("accesses"), "hits_lines": r.get("hits"), "misses_lines": r.get("misses"),
        "mshr_merged_lines": r.get("mshr_merged"), "memory_reads_lines": r.get("memory_reads"),
        "mshr_window": r.get("mshr_window"),
        "hit_rate": r.get("hit_rate"), "kv_accesses_lines": kv.get("accesses"), "kv_misses_lines": kv.get("misses"),
        "kv_hit_rate": kv.get("hit_rate"),
        "kv_token_reads": tokens.get("accesses"), "kv_token_full_hits": tokens.get("full_hits"),
        "kv_token_partial_hits": tokens.get("partial_hits"), "kv_token_full_hit_rate": tokens.get("full_hit_rate"),
        "evictions_lines": r.get("evictions"), "token_invalidations_lines": r.get("token_invalidations"),
        "beyond_platform": "; ".join(r.get("beyond_platform") or []) or None,
        "writebacks_lines": r.get("writebacks"), "steps": r.get("steps"),
        "measured_steps": r.get("measured_steps"), "step_time_cycles": r.get("step_time_cycles"),
        "step_time_s": r.get("step_time_s"), "tokens_per_s": r.get("tokens_per_s"),
        "batch_requests": r.get("batch"),
        "sampled_sets": (r.get("sampled_sets") or {}).get("every", 1) if r.get("sampled_sets") is not None else 1,
        "step_scope": r.get("step_scope"), "attention_time_cycles": r.get("attention_time_cycles"),
        "attention_share": r.get("attention_share"),
        "batch_tokens_per_s": r.get("batch_tokens_per_s"), "memory_cycles_per_step": r.get("memory_cycles_per_step"),
        "compute_cycles_per_step": r.get("compute_cycles_per_step"),
        "step_time_model": (r.get("timing") or {}).get("produced_by"),
        "bound_capacity_tokens": bounds.get("capacity_tokens"), "lines_per_token": bounds.get("lines_per_token"),
        "fa_lru_token_hit_rate": bounds.get("fa_lru_hit_rate"), "min_token_hit_rate": bounds.get("min_hit_rate"),
    }
    levers = r.get("levers") or {}  # the stream's indexer levers (trace_gen.levers.StreamLevers)
    out.update({"lever_origin": levers.get("origin"), "lever_share": levers.get("index_share"),
                "lever_reuse": levers.get("index_reuse"), "scan_share": levers.get("scan_share"),
                "index_key_bytes": levers.get("index_bytes"), "selection_kept": levers.get("selection_kept"),
                "recall_kept": levers.get("recall_kept")})
    per_request = r.get("by_request") or []
    for name in ("kv", "index"):  # each request's misses (a list; the report's spread over requests)
        out[f"request_{name}_misses_lines"] = [int((q.get(name) or {}).get("misses", 0)) for q in per_request] or None
    for kind, share in (r.get("memory_wait_share") or {}).items():
        out[f"memory_wait_share_{kind}"] = share
    for name, c in r.get("by_class", {}).items():
        out[f"{name}_misses_lines"] = c.get("misses")
        out[f"{name}_hits_lines"] = c.get("hits")
        if name != "kv":
            out[f"{name}_hit_rate"] = c.get("hit_rate")
    g = r.get("gem5") or {}
    if g:
        out.update({"gem5_sim_ticks": g.get("sim_ticks"), "gem5_host_seconds": g.get("host_seconds"),
                    "gem5_avg_miss_latency_ticks": g.get("avg_miss_latency_ticks"),
                    "gem5_line_accesses_per_host_second": g.get("line_accesses_per_host_second")})
    return out


def collect(folder: str | Path, out: str | Path | None = None, overwrite: bool = False
            ) -> tuple[pd.DataFrame, list[str]]:
    """The table of a sweep folder (one row per run folder, corrupt ones included), and a line
    ``<run id>: <reason>`` per corrupt run. With ``out``, also write the table there (the output
    rule of ``harness.core.outputs``: an existing file is replaced only with ``overwrite``)."""
    folder = Path(folder)
    runs = folder / "runs"
    if not runs.is_dir():
        raise UserError(f"{folder} is not a sweep folder (no runs/)")
    check = (lambda: check_output_file(out, overwrite)) if out is not None else None  # noqa: E731
    if check:
        check()
    rows, corrupt = [], []
    for d in run_folders(runs):
        run = read_run(d)
        if run.status == "corrupt":
            corrupt.append(f"{d.name}: {run.error}")
        prov = run.provenance
        rows.append({"_run_id": d.name, "_status": run.status, "_error": run.error, "_host": prov.get("host"),
                     "_version": prov.get("version"), "_results_version": prov.get("results_version"),
                     "_started": prov.get("started"), "_seconds": prov.get("seconds"),
                     **_params(run.config), **(_results(run.result) if run.status in FINISHED else {})})
    df = _uniform_columns(pd.DataFrame(rows))
    if out is not None:
        with atomic_path(out, check) as tmp:
            df.to_parquet(tmp, index=False)
    return df, corrupt


def _uniform_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Columns whose values mix types (a hand-edited or foreign config) become text, so that the
    table can always be written."""
    for col in [c for c in df.columns if pd.api.types.is_object_dtype(df[c])]:
        kinds = {type(v) for v in df[col] if v is not None and v == v}
        if len(kinds) > 1 and not kinds <= {int, float}:
            df[col] = df[col].map(lambda v: v if v is None or v != v else str(v))
    return df
