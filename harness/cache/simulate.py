"""Run the built-in LLC simulator over a stream of request chunks and summarise it.

The result is a plain dict (JSON-ready): line counts overall and per traffic class, KV token
accounting, evictions, the fully associative LRU and MIN token bounds at the reserved capacity,
and stall cycles from the first-order timing model, with the configuration echoed.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from harness import __version__
from harness.cache import llc as llc_mod
from harness.cache.llc import LLCConfig, LLCState
from harness.cache.timing import TimingConfig, stall_cycles
from harness.cache.tokencache import TokenStream, lru_hits, min_hits
from harness.core.accesstrace import LineAccesses, Requests
from harness.core.classes import TRAFFIC_CLASSES


def _per_step(runs: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps and their line hits, misses and writebacks, from the kernel's per-chunk runs."""
    if not runs:
        z = np.zeros(0)
        return z.astype(np.int64), z, z, z
    step = np.concatenate([r.step for r in runs])
    uniq, inv = np.unique(step, return_inverse=True)  # a few rows per step: cheap

    def total(field):
        return np.bincount(inv, weights=np.concatenate([getattr(r, field) for r in runs]), minlength=len(uniq))

    acc, hits = total("accesses"), total("hits")
    return uniq, hits, acc - hits, total("writebacks")


def simulate(chunks: Iterable[Requests | LineAccesses], cfg: LLCConfig,
             timing: TimingConfig | None = None, bounds: bool = True,
             extra_config: dict | None = None) -> dict:
    """Simulate every chunk in order through one LLC and return the summary dict."""
    timing = timing or TimingConfig()
    timing.validate()
    state = LLCState(cfg)
    runs = []
    stream = TokenStream() if bounds else None
    try:
        for chunk in chunks:
            for acc in chunk.line_chunks() if isinstance(chunk, Requests) else (chunk,):
                if len(acc) == 0:
                    continue
                _, reads, step_runs = state.access(acc.line, acc.cls, acc.token, acc.write, acc.step)
                runs.append(step_runs)
                if stream is not None:
                    stream.append(reads)
        state.finish()
        summary = _summarise(state, runs, timing)
        summary["bounds"] = _bounds(stream, cfg, state.lines_per_token()) if stream else None
    finally:
        if stream is not None:
            stream.close()
    summary["config"] = {"llc": cfg.to_dict(), "timing": timing.to_dict(), **(extra_config or {})}
    summary["version"] = __version__
    return summary


def _counts(accesses: int, hits: int) -> dict:
    return {"accesses": int(accesses), "hits": int(hits), "misses": int(accesses - hits),
            "hit_rate": (hits / accesses) if accesses else None}


def _summarise(state: LLCState, runs: list, timing: TimingConfig) -> dict:
    ctr = state.counters
    per_class = state.by_class
    out = _counts(per_class[0].sum(), per_class[1].sum())
    out["by_class"] = {name: _counts(per_class[0, i], per_class[1, i])
                       for i, name in enumerate(TRAFFIC_CLASSES) if per_class[0, i]}
    full, part, miss = (int(ctr[i]) for i in (llc_mod.C_TR_FULL, llc_mod.C_TR_PARTIAL, llc_mod.C_TR_MISS))
    out["kv_tokens"] = {"accesses": full + part + miss, "full_hits": full, "partial_hits": part,
                        "misses": miss, "full_hit_rate": full / (full + part + miss) if full + part + miss else None}
    out["evictions"] = int(ctr[llc_mod.C_EVICT])
    out["token_invalidations"] = int(ctr[llc_mod.C_TOKEN_INVAL])
    out["writebacks"] = int(ctr[llc_mod.C_WB])
    out["bypasses"] = int(ctr[llc_mod.C_BYPASS])
    step_ids, h, m, wb = _per_step(runs)
    stall = stall_cycles(h, m, wb, timing)
    out["steps"] = len(step_ids)
    out["stall_cycles"] = float(stall.sum())
    out["stall_cycles_per_step"] = float(stall.mean()) if len(stall) else None
    return out


def _bounds(stream: TokenStream, cfg: LLCConfig, lines_per_token: int) -> dict | None:
    """LRU and MIN token bounds at the reserved capacity, in tokens of the most common read size."""
    if cfg.reserve_ways == 0 or lines_per_token == 0:
        return None
    capacity = cfg.sets * cfg.reserve_ways // lines_per_token
    lru, opt = lru_hits(stream, capacity), min_hits(stream, capacity)
    n = stream.n
    return {"capacity_tokens": capacity, "lines_per_token": lines_per_token, "token_reads": n,
            "fa_lru_hits": lru, "fa_lru_hit_rate": lru / n if n else None,
            "min_hits": opt, "min_hit_rate": opt / n if n else None}
