"""The built-in LRU against two independent implementations: pycachesim and real gem5 runs."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cache.llc import LLCConfig
from harness.cache.simulate import simulate
from harness.core.accesstrace import Requests
from harness.core.traffic import OTHER

GEM5_REF = Path(__file__).parent / "data" / "gem5_reference"


def pycachesim_counts(addrs, sets, ways):
    """Hits and misses of pycachesim's LRU for a stream of 1-byte loads.

    Loads only: pycachesim does not refresh LRU order on a store hit (checked by hand:
    r0 r1 w0 r2 r0 misses the last r0 in a 2-way set), whereas gem5 and DESIGN.md's model do."""
    from cachesim import Cache, CacheSimulator, MainMemory

    mem = MainMemory()
    cache = Cache("LLC", sets, ways, 64, "LRU")
    mem.load_to(cache)
    mem.store_from(cache)
    sim = CacheSimulator(cache, mem)
    for a in addrs.tolist():
        sim.load(a, 1)
    stats = cache.stats()
    return stats["HIT_count"], stats["MISS_count"]


def builtin_counts(addrs, sets, ways):
    r = simulate([Requests.of(addrs)], LLCConfig.make(sets * ways * 64, ways, 0, "lru"), bounds=False)
    return r["hits"], r["misses"]


@pytest.mark.parametrize("sets, ways", [(64, 8), (256, 16), (100, 4), (1, 32), (512, 1)])
@pytest.mark.parametrize("dist", ["uniform", "zipf"])
def test_lru_matches_pycachesim(sets, ways, dist):
    rng = np.random.default_rng(sets * 31 + ways)
    n = 60_000
    if dist == "uniform":
        lines = rng.integers(0, 4 * sets * ways, n)
    else:
        lines = rng.zipf(1.2, n) % (64 * sets * ways)
    addrs = lines * 64 + rng.integers(0, 64, n)
    ours = builtin_counts(addrs, sets, ways)
    assert ours == pycachesim_counts(addrs, sets, ways)
    assert 0 < ours[0] < n  # the trace exercises both hits and evictions


@pytest.mark.parametrize("case", ["zipf_64x8", "mixed_256x16"])
def test_lru_matches_real_gem5(case):
    meta = json.loads((GEM5_REF / case / "case.json").read_text())
    trace = pd.read_csv(GEM5_REF / case / "trace.txt.gz", header=None,
                        names=["op", "addr", "size", "tick"])
    reqs = Requests.of(trace.addr.to_numpy(), trace["size"].to_numpy(),
                       (trace.op == "w").to_numpy(), OTHER)
    r = simulate([reqs], LLCConfig.make(meta["llc_bytes"], meta["ways"], 0, "lru"), bounds=False)
    assert (r["hits"], r["misses"]) == (meta["gem5_hits"], meta["gem5_misses"])
    assert r["accesses"] == meta["gem5_accesses"]
