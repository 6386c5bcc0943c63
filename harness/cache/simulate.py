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
A smaller scan is simulated line by line.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from harness import __version__
from harness.cache import llc as llc_mod
from harness.cache.llc import LLCConfig, LLCState
from harness.cache.timing import TimingConfig, step_time
from harness.cache.tokencache import TokenStream, lru_hits, min_hits
from harness.core.accesstrace import LineAccesses, Requests
from harness.core.traffic import TRAFFIC_CLASSES, WEIGHTS


def per_phase(runs: list, phases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Line hits, misses and writebacks of every phase, from the kernel's per-chunk runs, joined
    with the stream's phase table (trace_gen.stream: step, layer, kind, flops); without one, the
    phases are a generic trace's (kind -1, no compute). When the weights came as scans, the
    weights' own share is counted apart too (``weights_hits``, ``weights_misses``,
    ``weights_writebacks``: the writebacks of the lines the scans evicted)."""
    cols = ("phase", "accesses", "hits", "writebacks", "step")
    runs_df = pd.DataFrame({c: np.concatenate([getattr(r, c) for r in runs]) if runs else np.zeros(0, np.int64)
                            for c in cols})
    runs_df["weights"] = np.concatenate([np.full(len(r.phase), r.weights) for r in runs]) if runs else False
    for c in ("accesses", "hits", "writebacks"):
        runs_df[f"weights_{c}"] = runs_df[c].where(runs_df.weights, 0)
    counts = runs_df.groupby("phase", sort=False).agg(
        step=("step", "first"), accesses=("accesses", "sum"), hits=("hits", "sum"),
        writebacks=("writebacks", "sum"), weights_accesses=("weights_accesses", "sum"),
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
    return out.fillna({c: 0 for c in ("hits", "misses", "writebacks", "weights_hits", "weights_misses",
                                       "weights_writebacks") if c in out})


def simulate(chunks: Iterable[Requests | LineAccesses], cfg: LLCConfig,
             timing: TimingConfig | None = None, bounds: bool = True,
             extra_config: dict | None = None, phases: pd.DataFrame | None = None, batch: int = 1,
             return_phases: bool = False) -> dict | tuple[dict, pd.DataFrame]:
    """Simulate every chunk in order through one LLC and return the summary dict. ``phases`` is
    the stream's phase table (``StreamSource.phases()``) and ``batch`` its number of concurrent
    requests, for the step time; without them every step is one phase without compute. With
    ``return_phases``, also the per-phase counts (:func:`per_phase`) the step time came from."""
    timing = timing or TimingConfig.make()
    timing.validate()
    state = LLCState(cfg, batch)
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
        summary.update(step_time(counts, timing, batch))
        if summary["by_class"].get("weights") and "weights_misses" not in counts:
            # weights mixed into the phases' counts (not as scans): a whole step, its part unknown
            summary.update(step_scope="whole", attention_time_cycles=None, attention_share=None)
        summary["bounds"] = _bounds(stream, cfg, state.lines_per_token(), summary["kv_tokens"]["accesses"]) \
            if stream else None
    finally:
        if stream is not None:
            stream.close()
    summary["batch"] = batch
    summary["config"] = {"llc": cfg.to_dict(), "timing": timing.to_dict(), **(extra_config or {})}
    summary["version"] = __version__
    return (summary, counts) if return_phases else summary


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
    once when it flushes every set (see the module docstring), else line by line."""
    start = 0
    for i in np.flatnonzero(acc.cls == WEIGHTS):
        _access(state, acc.part(start, i), runs, stream)
        first, count = int(acc.line[i]), int(acc.scan_lines[i])
        step, phase, request = int(acc.step[i]), int(acc.phase[i]), int(acc.request[i])
        scanned = state.scan(first, count, step, phase, request)
        if scanned is not None:
            runs.append(scanned)
        for lo in range(0, count if scanned is None else 0, piece_lines):
            n = min(piece_lines, count - lo)
            lines = LineAccesses(np.arange(first + lo, first + lo + n, dtype=np.int64), np.zeros(n, np.uint8),
                                 np.full(n, WEIGHTS, np.uint8), np.full(n, -1, np.int64), np.full(n, step, np.int64),
                                 np.full(n, phase, np.int64), np.full(n, request, np.int64))
            done = len(runs)
            _access(state, lines, runs, stream)
            for r in runs[done:]:
                r.weights = True
        start = i + 1
    _access(state, acc.part(start, len(acc)), runs, stream)


def _counts(accesses: int, hits: int) -> dict:
    return {"accesses": int(accesses), "hits": int(hits), "misses": int(accesses - hits),
            "hit_rate": (hits / accesses) if accesses else None}


def _summarise(state: LLCState) -> dict:
    ctr = state.counters
    per_class = state.by_class
    out = _counts(per_class[0].sum(), per_class[1].sum())
    out["by_class"] = {name: _counts(per_class[0, i], per_class[1, i])
                       for i, name in enumerate(TRAFFIC_CLASSES) if per_class[0, i]}
    out["by_request"] = [{name: _counts(r[0, i], r[1, i]) for i, name in enumerate(TRAFFIC_CLASSES) if r[0, i]}
                         for r in state.by_request]
    full, part, miss = (int(ctr[i]) for i in (llc_mod.C_TR_FULL, llc_mod.C_TR_PARTIAL, llc_mod.C_TR_MISS))
    out["kv_tokens"] = {"accesses": full + part + miss, "full_hits": full, "partial_hits": part,
                        "misses": miss, "full_hit_rate": full / (full + part + miss) if full + part + miss else None}
    out["evictions"] = int(ctr[llc_mod.C_EVICT])
    out["token_invalidations"] = int(ctr[llc_mod.C_TOKEN_INVAL])
    out["writebacks"] = int(ctr[llc_mod.C_WB])
    out["bypasses"] = int(ctr[llc_mod.C_BYPASS])
    return out


def _bounds(stream: TokenStream, cfg: LLCConfig, lines_per_token: int, reads: int) -> dict | None:
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
    lru, opt = lru_hits(stream, capacity), min_hits(stream, capacity)
    return {"capacity_tokens": capacity, "lines_per_token": lines_per_token, "token_reads": reads,
            "token_references": stream.n, "fa_lru_hits": lru, "fa_lru_hit_rate": lru / reads if reads else None,
            "min_hits": opt, "min_hit_rate": opt / reads if reads else None}
