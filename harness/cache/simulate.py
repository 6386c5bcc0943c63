"""Run the built-in LLC simulator over a stream of request chunks and summarise it.

The result is a plain dict (JSON-ready): line counts overall and per traffic class, KV token
accounting, evictions, the fully associative LRU and MIN token bounds at the reserved capacity,
and the decode-step time of the timing model (harness.cache.timing), with the configuration
echoed.

Weight scans. A stream may give each layer's weights as one record, a scan of many consecutive
lines (``LineAccesses.scan_lines``). When the scan puts at least ``ways + 1`` of its lines into
every set's ways that weights may use (``LLCState.scan``), its outcome is known without
simulating its lines: every one misses (a cyclic scan of more lines than an LRU region holds,
and the weights' own lines are read once per step), and afterwards that region holds only the
scan's last lines, which no later access hits before the next scan evicts them. The state then
changes at once: those ways hold dead lines older than any later access; the lines they held are
evicted, dirty ones written back; the counts are the scan's. This is exact, not an
approximation (tests/test_weight_scans.py compares it with the scan simulated line by line).
A smaller scan is simulated line by line; so are a scan's lines in a set where it cannot apply
at once (one of its lines is still there, or under the streaming hint a way is free), the other
sets taking it at once (sets are independent).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from harness import __version__
from harness.cache import llc as llc_mod
from harness.cache.llc import LLCConfig, LLCState
from harness.cache.platforms import get_platform
from harness.cache.timing import TimingConfig, step_time
from harness.cache.tokencache import TokenStream, lru_hits, min_hits
from harness.core.accesstrace import LineAccesses, Requests
from harness.core.sampling import SetSample
from harness.core.traffic import TRAFFIC_CLASSES, WEIGHTS
from harness.core.units import format_size, require_memory


def per_phase(runs: list, phases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Line hits, misses and writebacks of every phase, from the kernel's per-chunk runs, joined
    with the stream's phase table (trace_gen.stream: step, layer, kind, flops); without one, the
    phases are a generic trace's (kind -1, no compute). When the weights came as scans, the
    weights' own share is counted apart too (``weights_hits``, ``weights_misses``,
    ``weights_writebacks``: the writebacks of the lines the scans evicted). ``merged``: the
    misses that waited for a fill already in flight (MSHR merging, harness.cache.llc), which
    read no memory."""
    cols = ("phase", "accesses", "hits", "writebacks", "step", "merged")
    runs_df = pd.DataFrame({c: np.concatenate([getattr(r, c) for r in runs]) if runs else np.zeros(0, np.int64)
                            for c in cols})
    runs_df["weights"] = np.concatenate([np.full(len(r.phase), r.weights) for r in runs]) if runs else False
    for c in ("accesses", "hits", "writebacks"):
        runs_df[f"weights_{c}"] = runs_df[c].where(runs_df.weights, 0)
    counts = runs_df.groupby("phase", sort=False).agg(
        step=("step", "first"), accesses=("accesses", "sum"), hits=("hits", "sum"),
        writebacks=("writebacks", "sum"), merged=("merged", "sum"), weights_accesses=("weights_accesses", "sum"),
        weights_hits=("weights_hits", "sum"), weights_writebacks=("weights_writebacks", "sum")).reset_index()
    counts["misses"] = counts.accesses - counts.hits
    counts["weights_misses"] = counts.weights_accesses - counts.weights_hits
    counts = counts.drop(columns="weights_accesses")
    if not runs_df.weights.any():  # no scans: the weights, if any, are mixed into the phases' counts
        counts = counts.drop(columns=["weights_hits", "weights_misses", "weights_writebacks"])
    if phases is None:
        return counts.assign(kind=-1, flops=0.0)
    counts = counts.drop(columns="step")
    simulated = phases.step[phases.phase.isin(counts.phase)].unique()  # a stream cut short ends early
    out = phases[phases.step.isin(simulated)].merge(counts, on="phase", how="left")
    return out.fillna({c: 0 for c in ("hits", "misses", "writebacks", "merged", "weights_hits", "weights_misses",
                                       "weights_writebacks") if c in out})


def simulate(chunks: Iterable[Requests | LineAccesses], cfg: LLCConfig,
             timing: TimingConfig | None = None, bounds: bool = True,
             extra_config: dict | None = None, phases: pd.DataFrame | None = None, batch: int = 1,
             return_phases: bool = False, sample: SetSample | None = None,
             exact: pd.DataFrame | None = None, mshr_window: int | None = None) -> dict | tuple[dict, pd.DataFrame]:
    """Simulate every chunk in order through one LLC and return the summary dict. ``phases`` is
    the stream's phase table (``StreamSource.phases()``) and ``batch`` its number of concurrent
    requests, for the step time; without them every step is one phase without compute. With
    ``return_phases``, also the per-phase counts (:func:`per_phase`) the step time came from.

    ``sample``: the chunks hold only the lines of the sampled sets (``harness.core.sampling``),
    and the counts are scaled to the whole cache (:func:`_scale`); the result says so
    (``sampled_sets``). ``exact``: the stream's line accesses per phase and class
    (``StreamSource.line_counts``), which the scaling uses when given. ``mshr_window``: the
    requests in flight within which misses merge (harness.cache.llc), default the timing's
    (``TimingConfig.mshr_window``); 1 turns merging off (what the model gave before it merged)."""
    timing = timing or TimingConfig.make()
    timing.validate()
    window = timing.mshr_window if mshr_window is None else mshr_window
    state = LLCState(cfg, batch, sample, mshr_window=window)
    runs = []
    stream = TokenStream() if bounds else None
    try:
        for chunk in chunks:
            for acc in chunk.line_chunks() if isinstance(chunk, Requests) else (chunk,):
                if acc.scan_lines is None:
                    _access(state, acc, runs, stream)
                else:
                    _access_with_scans(state, acc, runs, stream)
        state.finish()
        summary = _summarise(state)
        counts = per_phase(runs, phases)
        if sample is not None:
            selected = int(phases.selected.sum()) if phases is not None and "selected" in phases else None
            token_scale = _scale(summary, counts, sample.scale, selected, exact)
        summary.update(step_time(counts, timing, batch))
        if summary["by_class"].get("weights") and "weights_misses" not in counts:
            # weights mixed into the phases' counts (not as scans): a whole step, its part unknown
            summary.update(step_scope="whole", attention_time_cycles=None, attention_share=None)
        summary["bounds"] = _bounds(stream, cfg, state.lines_per_token(), summary["kv_tokens"]["accesses"],
                                    sample.scale if sample else 1.0, token_scale if sample else 1.0) \
            if stream else None
    finally:
        if stream is not None:
            stream.close()
    summary["batch"] = batch
    summary["mshr_window"] = window  # accesses in flight per phase (MSHR merging)
    summary["sampled_sets"] = sample.to_dict() if sample else None
    summary["config"] = {"llc": cfg.to_dict(), "timing": timing.to_dict(), **(extra_config or {})}
    # what the class knobs ask beyond the platform's cache controls (allowed by what_if)
    summary["beyond_platform"] = cfg.beyond(get_platform(timing.platform)) or None
    summary["version"] = __version__
    return (summary, counts) if return_phases else summary


def simulate_stream(src, cfg: LLCConfig, timing: TimingConfig, steps: int | None = None, bounds: bool = True,
                    extra_config: dict | None = None) -> dict:
    """Simulate the first ``steps`` decode steps of a stream (``trace_gen.stream.StreamSource``)
    whole: weights as scans, and set-sampled as ``cfg.sample_for`` decides from the stream's KV
    and indexer line accesses, its counts scaled to the stream's own. The result records the
    stream's indexer levers (``levers``: ``StreamSource.lever_summary``). A run whose LLC state
    and stream buffers together would not fit in memory is refused before it starts."""
    require_memory(cfg.memory_bytes() + src.memory_bytes(),
                   f"simulating {src.log.folder} in an LLC of {format_size(cfg.size)} (its state and the stream's "
                   f"buffers for a batch of {src.batch} at ctx_len {src.amap.max_ctx:,})")
    exact = src.line_counts(steps)
    sample = cfg.sample_for(int(exact.lines[exact.cls != WEIGHTS].sum()))
    chunks = src.chunks(as_lines=True, reuse=True, steps=steps, weight_scans=True, sample=sample)
    result = simulate(chunks, cfg, timing, bounds=bounds, extra_config=extra_config, phases=src.phases(steps),
                      batch=src.batch, sample=sample, exact=exact if sample else None)
    result["levers"] = src.lever_summary()
    return result


def _access(state: LLCState, acc: LineAccesses, runs: list, stream: TokenStream | None) -> None:
    if len(acc) == 0:
        return
    _, refs, phase_runs = state.access(acc.line, acc.cls, acc.token, acc.write, acc.step, acc.phase, acc.request)
    runs.append(phase_runs)
    if stream is not None:
        stream.append(refs)


def _access_with_scans(state: LLCState, acc: LineAccesses, runs: list, stream: TokenStream | None,
                       piece_lines: int = 1 << 22) -> None:
    """A chunk whose weights accesses are scans: the accesses between them as usual, each scan at
    once in the sets where it flushes the weights' ways (see the module docstring), its lines one
    by one in the other sets (``LLCState.scan``; under a set sample, sampled sets only)."""
    start = 0
    for i in np.flatnonzero(acc.cls == WEIGHTS):
        _access(state, acc.part(start, i), runs, stream)
        first, count = int(acc.line[i]), int(acc.scan_lines[i])
        step, phase, request = int(acc.step[i]), int(acc.phase[i]), int(acc.request[i])
        scanned, left = state.scan(first, count, step, phase, request)
        if scanned is not None:
            runs.append(scanned)
        lines_left = _scan_lines(first, count, left, state.cfg.sets) if left is not None else np.zeros(0, np.int64)
        for lo in range(0, len(lines_left), piece_lines):
            line = lines_left[lo:lo + piece_lines]
            n = len(line)
            lines = LineAccesses(line, np.zeros(n, np.uint8),
                                 np.full(n, WEIGHTS, np.uint8), np.full(n, -1, np.int64), np.full(n, step, np.int64),
                                 np.full(n, phase, np.int64), np.full(n, request, np.int64))
            done = len(runs)
            _access(state, lines, runs, stream)
            for r in runs[done:]:
                r.weights = True
        start = i + 1
    _access(state, acc.part(start, len(acc)), runs, stream)


def _scan_lines(first: int, count: int, left: np.ndarray, sets: int) -> np.ndarray:
    """The lines of a scan of ``count`` lines from ``first`` that map to the sets ``left`` (a bool
    per set), in address order: each set's are every ``sets``-th line from its first."""
    chosen = np.flatnonzero(left)
    offset = (chosen - first) % sets
    per = count // sets + (offset < count % sets)
    ends = np.cumsum(per)
    k = np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64) - np.repeat(ends - per, per)
    return np.sort(np.repeat(first + offset, per) + sets * k)


def _counts(accesses: int, hits: int, merged: int = 0) -> dict:
    """Line counts: ``mshr_merged`` are misses that waited for a fill in flight, ``memory_reads``
    the misses that read memory (misses - merged)."""
    return {"accesses": int(accesses), "hits": int(hits), "misses": int(accesses - hits),
            "hit_rate": (hits / accesses) if accesses else None,
            "mshr_merged": int(merged), "memory_reads": int(accesses - hits - merged)}


def _summarise(state: LLCState) -> dict:
    ctr = state.counters
    per_class = state.by_class
    out = _counts(per_class[0].sum(), per_class[1].sum(), per_class[2].sum())
    out["by_class"] = {name: _counts(per_class[0, i], per_class[1, i], per_class[2, i])
                       for i, name in enumerate(TRAFFIC_CLASSES) if per_class[0, i]}
    out["by_request"] = [{name: _counts(r[0, i], r[1, i], r[2, i]) for i, name in enumerate(TRAFFIC_CLASSES)
                          if r[0, i]} for r in state.by_request]
    full, part, miss = (int(ctr[i]) for i in (llc_mod.C_TR_FULL, llc_mod.C_TR_PARTIAL, llc_mod.C_TR_MISS))
    out["kv_tokens"] = {"accesses": full + part + miss, "full_hits": full, "partial_hits": part,
                        "misses": miss, "full_hit_rate": full / (full + part + miss) if full + part + miss else None}
    out["evictions"] = int(ctr[llc_mod.C_EVICT])
    out["token_invalidations"] = int(ctr[llc_mod.C_TOKEN_INVAL])
    out["writebacks"] = int(ctr[llc_mod.C_WB])
    out["bypasses"] = int(ctr[llc_mod.C_BYPASS])
    return out


def _scale(summary: dict, counts: pd.DataFrame, every: float, selected: int | None,
           exact: pd.DataFrame | None = None) -> float:
    """Scale a sampled run's counts to the whole cache, in place. Line accesses: to the stream's
    own counts (``exact``, per class and per phase) with the sampled hit shares kept, a ratio
    estimator whose error is the hit shares' sampling error only; without them by ``every`` (the
    cache's sets over the sampled ones). Evictions and writebacks by ``every``; token reads to
    the ``selected`` tokens of the stream. Returns the factor the token counts were scaled by."""
    factors = {name: float(every) for name in TRAFFIC_CLASSES}
    if exact is not None:
        per_class = exact.groupby("cls").lines.sum()
        for code, name in enumerate(TRAFFIC_CLASSES):
            sampled = summary["by_class"].get(name, {}).get("accesses", 0)
            if sampled and code in per_class.index:
                factors[name] = per_class[code] / sampled

    def scaled(c: dict, f: float) -> None:
        c["hits"] = round(c["hits"] * f)
        c["misses"] = round(c["misses"] * f)
        c["accesses"] = c["hits"] + c["misses"]
        c["mshr_merged"] = min(round(c["mshr_merged"] * f), c["misses"])  # merged misses scale as misses
        c["memory_reads"] = c["misses"] - c["mshr_merged"]

    for name, c in summary["by_class"].items():
        scaled(c, factors[name])
    for r in summary["by_request"]:
        for name, c in r.items():
            scaled(c, factors[name])
    for key in ("hits", "misses", "mshr_merged", "memory_reads"):
        summary[key] = sum(c[key] for c in summary["by_class"].values())
    summary["accesses"] = summary["hits"] + summary["misses"]
    for key in ("evictions", "token_invalidations", "writebacks", "bypasses"):
        summary[key] = round(summary[key] * every)
    _scale_phases(counts, every, exact)
    t = summary["kv_tokens"]
    factor = selected / t["accesses"] if selected and t["accesses"] else float(every)
    for key in ("full_hits", "partial_hits", "misses"):
        t[key] = round(t[key] * factor)
    t["accesses"] = t["full_hits"] + t["partial_hits"] + t["misses"]
    return factor


def _scale_phases(counts: pd.DataFrame, every: float, exact: pd.DataFrame | None) -> None:
    """A sampled run's per-phase counts, scaled in place: each phase's weights and its other
    lines apart, to the phase's own line counts where known, else by ``every``."""
    weights = "weights_misses" in counts
    w = {k: counts[f"weights_{k}"] if weights else 0 for k in ("hits", "misses")}
    other = {k: counts[k] - w[k] for k in ("hits", "misses")}
    f_other = f_weights = pd.Series(float(every), index=counts.index)
    if exact is not None:
        lines = exact.assign(weights=exact.cls == WEIGHTS).pivot_table(
            index="phase", columns="weights", values="lines", aggfunc="sum", fill_value=0)
        lines = lines.reindex(counts.phase, fill_value=0)
        for flag, seen, name in ((False, other, "other"), (True, w, "weights")):
            total = lines[flag].to_numpy() if flag in lines else np.zeros(len(counts))
            have = (seen["hits"] + seen["misses"]).to_numpy() if isinstance(seen["hits"], pd.Series) \
                else np.zeros(len(counts))
            f = pd.Series(np.where(have > 0, total / np.maximum(have, 1), every), index=counts.index)
            if name == "other":
                f_other = f
            else:
                f_weights = f
    for k in ("hits", "misses"):
        counts[k] = other[k] * f_other + w[k] * f_weights
        if weights:
            counts[f"weights_{k}"] = w[k] * f_weights
    counts["merged"] = counts.merged * f_other  # weights never merge (each line is read once a step)
    counts["writebacks"] = counts.writebacks * every
    if weights:
        counts["weights_writebacks"] = counts.weights_writebacks * every
    counts["accesses"] = counts.hits + counts.misses


def _bounds(stream: TokenStream, cfg: LLCConfig, lines_per_token: int, reads: int, every: float = 1.0,
            token_scale: float = 1.0) -> dict | None:
    """Fully associative caches of whole tokens with the reserved capacity (in tokens of the most
    common read size), fed every KV token reference in order (reads, and writes, which can bring
    a token in but never count as hits): LRU, and Belady's MIN with bypass.

    MIN's hits bound the LLC's full token hits (``kv_tokens.full_hits``) under any policy of the
    reserved ways: KV lines live only there, so at most ``capacity`` tokens are whole at any time,
    a token becomes whole only when it is referenced, and the tokens the LLC holds whole form a
    schedule of such a cache, which MIN's hits cannot fall short of. LRU's hits bound nothing.
    Rates are per token read."""
    if cfg.reserve_ways == 0 or lines_per_token == 0:
        return None
    capacity = cfg.sets * cfg.reserve_ways // lines_per_token
    if every > 1:  # the sampled sets' tokens in their share of the capacity, hits scaled as the reads
        lru, opt = (round(f(stream, max(1, round(capacity / every))) * token_scale) for f in (lru_hits, min_hits))
    else:
        lru, opt = lru_hits(stream, capacity), min_hits(stream, capacity)
    return {"capacity_tokens": capacity, "lines_per_token": lines_per_token, "token_reads": reads,
            "token_references": round(stream.n * token_scale), "fa_lru_hits": lru, "fa_lru_hit_rate": lru / reads if reads else None,
            "min_hits": opt, "min_hit_rate": opt / reads if reads else None}
