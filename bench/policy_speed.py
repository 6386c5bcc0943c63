"""Reservation policies: how fast each simulates, against token-LRU.

1. Fully associative token cache (the capacity sweeps of `dsa-harness policies`): token reads
   per second of every project policy on one decode's token stream (a synthetic log shaped like
   the real ones: 30 layers, k = 256, 128 steps; about 1M reads) at k x L / 4.
2. The same for libCacheSim's algorithms (`lcs:`, one forked replay of the oracleGeneral trace
   each), the time to write that trace once, and the whole zoo's wall time.
3. The LLC's reserved ways: line accesses per second of the built-in simulator (32 MiB, 16 ways,
   8 reserved, DeepSeek-V3.2 geometry) with each set-associative token policy.
Each figure of parts 1 and 3 is the best of three runs (this machine's speed varies run to run);
the zoo's are single runs (a whole zoo replay takes seconds to a minute).

    python bench/policy_speed.py [--log runs/x]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _timing import best_of

from harness.cache.llc import RESERVED_POLICIES, LLCConfig
from harness.cache.policies import POLICIES, TokenReads, get_policy
from harness.cache.policies.zoo import trace_of
from harness.cache.simulate import simulate
from trace_gen.geometry import PRESETS
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", default=None, help="an index log (default: a synthetic one)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = a.log or write_synthetic_log(f"{tmp}/log", steps=128, layers=30, topk=256, prompt=2048)
        log = IndexLog(path)
        reads = TokenReads.from_log(log)
        cap = reads.footprint // 4
        print(f"fully associative token cache, {len(reads):,} token reads, capacity k x L / 4 = {cap:,} tokens")
        base = None
        for name, cls in POLICIES.items():
            if name == "lru" or cls.family != "dsa-llc":
                continue
            policy = get_policy(name)
            policy.run(reads, cap)  # compile
            hits, dt = best_of(lambda p=policy: p.run(reads, cap))
            rate = len(reads) / dt
            base = base or rate
            print(f"  {name:12s} {rate / 1e6:7.1f} M reads/s ({rate / base:5.2f} x token-lru), hit rate {hits / len(reads):.3f}")

        print("libCacheSim's algorithms (one forked replay each) on the same stream and capacity:")
        t = time.perf_counter()
        trace_of(reads)  # written once; every replay below reads it
        print(f"  oracleGeneral trace written in {time.perf_counter() - t:.2f} s "
              f"({24 * len(reads) / 2**20:.0f} MiB)")
        swept, left_out = 0.0, []
        for name, cls in POLICIES.items():
            if cls.family == "dsa-llc":
                continue
            t = time.perf_counter()
            hits = get_policy(name).run(reads, cap)
            dt = time.perf_counter() - t
            swept += dt if cls.default_sweep else 0
            left_out += [] if cls.default_sweep else [name]
            print(f"  {name:16s} {len(reads) / dt / 1e6:7.3f} M reads/s ({dt:5.1f} s), hit rate {hits / len(reads):.3f}")
        print(f"  the zoo of the default sweep: {swept:.1f} s per capacity (without {', '.join(left_out)})")

        src = StreamSource(log, PRESETS["deepseek-v3.2"], Layout(kind="paged"))
        lines = None
        print("LLC reserved ways (32 MiB, 16 ways, 8 reserved), built-in simulator incl. stream generation:")
        base = None
        for name in RESERVED_POLICIES:
            cfg = LLCConfig.make("32MiB", 16, 8, name)
            simulate(src.chunks(reuse=True, chunk_lines=1 << 16), cfg, bounds=False)  # compile
            r, dt = best_of(lambda c=cfg: simulate(src.chunks(reuse=True), c, bounds=False))
            lines = r["accesses"]
            rate = lines / dt
            if name == "token-lru":
                base = rate
            rel = f"({rate / base:5.2f} x token-lru)" if base else ""
            print(f"  {name:12s} {rate / 1e6:7.1f} M line accesses/s {rel}, KV hit rate {r['by_class']['kv']['hit_rate']:.3f}")
        print(f"  ({lines:,} line accesses per run)")


if __name__ == "__main__":
    main()
