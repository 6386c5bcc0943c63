"""The report's answer, from the collected table: does a KV reservation speed up decode, where the
gain comes from, when it hurts, and why two policies give the same numbers.

A *configuration* is every parameter of a run except the reservation (``reserve_ways``,
``policy``, ``whole_token_eviction``); its *baseline* is its unpartitioned run (``reserve_ways``
0). Every reserved run is compared with its baseline: the decode-step speed-up
``step_time(baseline) / step_time(run)``, and the LLC misses it saves per decode step in each
traffic class (negative: it adds misses there).

A step time is what its run's ``step_scope`` says: the whole step (the weights' traffic too) or
the attention-only step. Beside a whole step's speed-up stands its attention part's
(``attention_speedup``, named so, from ``attention_time_cycles``) and the share of the step that
part takes: a reservation can speed attention up a lot and the step little. A figure in tokens/s
is given only for whole steps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.core.units import format_size

HELP = 1.01  # a reservation helps above this speed-up, hurts below 1 / HELP, is neutral between
CLASSES = {"index": "indexer-key", "kv": "KV", "kv_write": "KV-write", "weights": "weight"}
RESERVATION = ("reserve_ways", "policy", "whole_token_eviction")
RESULTS = ("step_time_cycles", "hits_lines", "misses_lines")
# The class knobs (harness.cache.partitions) beyond the KV reservation: runs that use any are the
# lever search's (harness.study.search), which the "What helps" section reports; the KV
# reservation's study here leaves them out.
CLASS_KNOBS = {"reserve_index": 0, "reserve_weights": 0, "hint_kv": "normal", "hint_index": "normal",
               "hint_weights": "normal", "set_aside": None}


def kv_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The runs without a class knob beyond the KV reservation (runs from before the knobs have
    none)."""
    keep = pd.Series(True, index=df.index)
    for col, default in CLASS_KNOBS.items():
        if col in df:
            keep &= df[col].isna() if default is None else (df[col].isna() | (df[col] == default))
    return df[keep]


def configuration_columns(df: pd.DataFrame) -> list[str]:
    """The parameter columns that identify a configuration (collect's parameters minus the
    reservation)."""
    from harness.study.collect import PARAMETERS

    return [c for c in df.columns if (c in PARAMETERS or c.startswith("timing_")) and c not in RESERVATION]


def comparisons(df: pd.DataFrame) -> pd.DataFrame:
    """Every finished built-in reserved run beside its baseline: ``speedup``,
    ``baseline_step_time_cycles``, ``baseline_batch_tokens_per_s``, and ``saved_<class>`` (misses
    saved per decode step)."""
    df = kv_runs(df)
    ok = df[(df._status == "ok") & (df.backend == "builtin")]
    if "step_time_cycles" not in ok:  # no LLC run at all (a sweep of host-tier runs)
        return pd.DataFrame()
    ok = ok[ok.step_time_cycles.notna()]
    key = configuration_columns(ok)
    base = ok[ok.reserve_ways == 0]
    runs = ok[ok.reserve_ways > 0]
    if base.empty or runs.empty:
        return pd.DataFrame()
    per_request = [c for c in ("request_kv_misses_lines", "request_index_misses_lines") if c in ok]
    attention = [c for c in ("attention_time_cycles", "attention_share") if c in ok]
    cols = key + ["step_time_cycles", "batch_tokens_per_s"] + attention + per_request + [
        f"{c}_misses_lines" for c in CLASSES if f"{c}_misses_lines" in ok]
    both = runs.merge(base[cols].drop_duplicates(key), on=key, suffixes=("", "_baseline"))
    out = both.assign(speedup=both.step_time_cycles_baseline / both.step_time_cycles,
                      baseline_step_time_cycles=both.step_time_cycles_baseline,
                      baseline_batch_tokens_per_s=both.batch_tokens_per_s_baseline)
    if attention:
        out["attention_speedup"] = both.attention_time_cycles_baseline / both.attention_time_cycles
        out["baseline_attention_share"] = both.attention_share_baseline
    for c in CLASSES:
        if f"{c}_misses_lines" in both:
            out[f"saved_{c}"] = (both[f"{c}_misses_lines_baseline"].fillna(0) - both[f"{c}_misses_lines"].fillna(0)) \
                / both.steps
    if len(per_request) == 2:  # KV + indexer-key misses each request saves per step
        out["saved_per_request"] = [
            _saved_per_request(r, per_request) for _, r in both.iterrows()]
    return out.drop(columns=[c for c in out.columns if c.endswith("_baseline")])


def _saved_per_request(row, columns) -> list[float] | None:
    base = [row[f"{c}_baseline"] for c in columns]
    run = [row[c] for c in columns]
    if any(x is None or (not isinstance(x, (list, np.ndarray))) for x in base + run) or len({len(x) for x in base + run}) != 1:
        return None
    return list((np.sum(base, axis=0) - np.sum(run, axis=0)) / row.steps)


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and policy, the reserved run with the shortest decode step."""
    c = comparisons(df)
    if c.empty:
        return c
    best = c.loc[c.groupby(configuration_columns(c) + ["policy"], dropna=False).step_time_cycles.idxmin()]
    return best.sort_values(configuration_columns(c) + ["policy"]).reset_index(drop=True)


def attribution(row) -> str:
    """Where a run's change in misses comes from, per traffic class, per decode step."""
    parts = []
    for c, name in CLASSES.items():
        saved = row.get(f"saved_{c}")
        if saved is None or pd.isna(saved) or abs(saved) < 0.5:
            continue
        parts.append(f"{'saves' if saved > 0 else 'adds'} {abs(saved) / 1e3:,.1f} k {name} misses")
    total = sum(row.get(f"saved_{c}", 0) or 0 for c in CLASSES if not pd.isna(row.get(f"saved_{c}", 0)))
    if not parts:
        return "it changes no class's misses"
    gains = {name: row[f"saved_{c}"] for c, name in CLASSES.items()
             if f"saved_{c}" in row and not pd.isna(row[f"saved_{c}"]) and row[f"saved_{c}"] > 0}
    source = f"; the saved misses are {max(gains, key=gains.get)} misses" if gains and total > 0 else ""
    spread = row.get("saved_per_request")
    if isinstance(spread, (list, np.ndarray)) and len(spread) > 1:
        source += (f" (per request {np.median(spread) / 1e3:,.1f} k KV + indexer-key misses saved, "
                   f"{min(spread) / 1e3:,.1f} to {max(spread) / 1e3:,.1f} k over its {len(spread)} requests)")
    return "per decode step it " + ", ".join(parts) + source


def is_whole(row) -> bool:
    return row.get("step_scope") == "whole"


def speed(row) -> str:
    """A reserved run's speed-up in words: of the whole step, with tokens/s per device and its
    attention part's speed-up and share beside it; or of the attention-only step, without tokens/s."""
    if not is_whole(row):
        return f"{row.speedup:.2f}x the attention-only step time (no weights: not a decode speed)"
    text = (f"{row.speedup:.2f}x the whole decode step ({row.baseline_batch_tokens_per_s:,.0f} -> "
            f"{row.batch_tokens_per_s:,.0f} tokens/s per device for its batch)")
    attention, share = row.get("attention_speedup"), row.get("baseline_attention_share")
    if attention is not None and not pd.isna(attention) and share is not None and not pd.isna(share):
        text += f"; its attention part, {share:.0%} of the step, {attention:.2f}x (attention-only speed-up)"
    return text


def describe(row) -> str:
    """A configuration and its reservation in a few words."""
    parts = [f"{row.geometry}", format_size(int(row.llc_bytes)), f"ctx {int(row.prompt_tokens):,}", f"k {int(row.topk)}"]
    batch = row.get("batch_requests")
    batch = int(row.get("requests", 1)) if batch is None or pd.isna(batch) else int(batch)
    if batch > 1:
        parts.append(f"batch {batch}")
    platform = row.get("timing_platform")
    if isinstance(platform, str):
        parts.append(platform)
    return ", ".join(parts)


def verdict(df: pd.DataFrame) -> list[str]:
    """Plain sentences for the first screen, per backbone: the best reservation with the cause
    of its gain, and how often reservations help and hurt."""
    c = comparisons(df)
    if c.empty:
        return ["No configuration has both an unpartitioned baseline and a reservation: nothing to compare."]
    lines = []
    for backbone, g in c.groupby("backbone", sort=True):
        best, worst = g.loc[g.speedup.idxmax()], g.loc[g.speedup.idxmin()]
        helps, hurts = int((g.speedup >= HELP).sum()), int((g.speedup <= 1 / HELP).sum())
        text = (f"**{backbone}**: the best reservation is {best.policy} in {int(best.reserve_ways)} of "
                f"{int(best.ways)} ways ({describe(best)}): {speed(best)}; "
                f"{attribution(best)}{_token_bound(best)}. Of {len(g)} reserved runs, {helps} help (>= {HELP:.2f}x), {hurts} hurt "
                f"(<= {1 / HELP:.2f}x) and {len(g) - helps - hurts} change less; the worst is {worst.speedup:.2f}x "
                f"({worst.policy} in {int(worst.reserve_ways)} ways, {describe(worst)}).")
        lines.append(text + where_it_pays(g) + dominant_misses(df[df.backbone == backbone]))
    return lines


SCALE = {"prompt_tokens": ("context", lambda v: f"{int(v):,}"), "topk": ("k", lambda v: f"{int(v):,}"),
         "batch_requests": ("batch", lambda v: f"{int(v)}"), "llc_bytes": ("LLC", lambda v: format_size(int(v))),
         "geometry": ("geometry", str)}


def where_it_pays(g: pd.DataFrame) -> str:
    """For every scale parameter the reserved runs vary (context, k, batch, LLC size, geometry):
    the best speed-up at each value and how many of its reserved runs help."""
    parts = []
    for col, (name, fmt) in SCALE.items():
        if col not in g or g[col].nunique() < 2:
            continue
        values = []
        for v, sub in g.groupby(col, sort=True):
            values.append(f"{fmt(v)} {sub.speedup.max():.2f}x ({int((sub.speedup >= HELP).sum())}/{len(sub)} help)")
        parts.append(f"by {name}: " + ", ".join(values))
    return (" Best speed-up " + "; ".join(parts) + ".") if parts else ""


def dominant_misses(df: pd.DataFrame) -> str:
    """Which traffic class makes the unpartitioned LLC's misses (shares of all misses, summed
    over the backbone's baseline runs)."""
    df = kv_runs(df)
    base = df[(df._status == "ok") & (df.reserve_ways == 0)]
    totals = {name: float(base[f"{c}_misses_lines"].fillna(0).sum()) for c, name in CLASSES.items()
              if f"{c}_misses_lines" in base}
    total = sum(totals.values())
    if total <= 0:
        return ""
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    return (" Without a reservation, " + ", ".join(f"{name} reads make {v / total:.0%}" if name != "KV-write"
                                                   else f"KV writes {v / total:.0%}" for name, v in ranked if v > 0)
            + " of the LLC misses.")


def _token_bound(row) -> str:
    """The run's KV full-token hit rate beside its upper bound (MIN of the reserved capacity)."""
    rate, bound = row.get("kv_token_full_hit_rate"), row.get("min_token_hit_rate")
    if rate is None or bound is None or pd.isna(rate) or pd.isna(bound):
        return ""
    return f"; it hits {rate:.2f} of KV token reads whole, of at most {bound:.2f} (MIN, any policy)"


def identities(df: pd.DataFrame) -> list[str]:
    """Sentences naming the policies whose runs give identical results in every configuration
    and reservation where they all ran (one sentence per group, per geometry), with the reason
    when it follows from the geometry."""
    df = kv_runs(df)
    ok = df[(df._status == "ok") & (df.backend == "builtin") & (df.reserve_ways > 0)]
    if ok.empty:
        return []
    key = configuration_columns(ok) + ["reserve_ways"]
    out = []
    for geometry, g in ok.groupby("geometry", sort=True):
        groups: list[list[str]] = []
        for policy in sorted(set(g.policy)):
            for group in groups:
                if _identical(g, group[0], policy, key):
                    group.append(policy)
                    break
            else:
                groups.append([policy])
        for group in (grp for grp in groups if len(grp) > 1):
            runs = g[g.policy == group[0]].merge(g[g.policy == group[1]][key], on=key)
            names = ", ".join(group[:-1]) + f" and {group[-1]}"
            text = f"{names} give identical results in all {len(runs)} {geometry} runs where they all ran"
            lines = runs.lines_per_token.dropna()
            sets = runs.llc_bytes // (runs.ways * 64)
            if {"lru", "token-lru"} <= set(group) and len(lines) and ((sets % lines.iloc[0]) == 0).all():
                m = int(lines.iloc[0])
                text += (f": a token is {m} lines, {m} divides the number of sets, so every token's lines fill "
                         f"one aligned group of {m} sets that only whole tokens share; all sets of a group hold "
                         f"the same tokens in the same order, and line LRU evicts whole tokens by recency, as "
                         f"token-lru does")
            out.append(text + ".")
    return out


def _identical(g: pd.DataFrame, a: str, b: str, key: list[str]) -> bool:
    pair = g[g.policy == a].merge(g[g.policy == b], on=key, suffixes=("_a", "_b"))
    return not pair.empty and all((pair[f"{r}_a"] == pair[f"{r}_b"]).all() for r in RESULTS)
