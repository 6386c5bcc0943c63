"""Built-in simulator throughput against pycachesim's per-access API, on a DSA-like stream.

Builds a ~20M-line-access stream (KV gathers of a DeepSeek-V3.2 geometry mixed with the
indexer-key scan, a streaming class) from a synthetic index log, then:
  1. LRU, R = 0: the built-in simulator and pycachesim on the same 32 MiB / 16-way LLC; checks
     that their miss counts are identical (loads only: pycachesim does not refresh LRU on a
     store hit) and prints accesses/s for both and the ratio;
  2. token-lru with whole-token eviction (R = 8): accesses/s; ``--policies`` names other
     reserved-way policies to time the same way (``all``: every one).
The simulator runs on one thread (numba kernels are single-threaded), fed 4M-line chunks as
`dsa-harness simulate` feeds it; each figure is the best of three runs (this machine's speed
varies run to run), timing everything from the first chunk on.

    python bench/sim_throughput.py [--accesses 20e6] [--pycachesim-accesses N] [--policies all]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _timing import best_of

from harness.cache.llc import RESERVED_POLICIES, LLCConfig, LLCState
from harness.core.accesstrace import LineAccesses
from trace_gen.geometry import PRESETS
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log


def build_stream(target: int) -> LineAccesses:
    # one step of 8 log layers x k=512 over a 4096-token prompt, stretched to 61 layers:
    # ~61 * (512 * 11 + 4096 * 132 / 64) = 0.86 M lines per step and request
    steps = max(1, int(np.ceil(target / 0.86e6 / 2)))
    with tempfile.TemporaryDirectory() as d:
        log = IndexLog(write_synthetic_log(f"{d}/log", steps=steps, layers=8, topk=512, prompt=4096,
                                           requests=2, seed=1))
        src = StreamSource(log, PRESETS["deepseek-v3.2"], Layout(kind="paged", page_tokens=64, page_order="shuffled", seed=1))
        parts = list(src.chunks())
    cat = lambda f: np.concatenate([getattr(p, f) for p in parts])[:target]  # noqa: E731
    return LineAccesses(cat("line"), cat("write"), cat("cls"), cat("token"), cat("step"))


CHUNK = 1 << 22  # lines per call, as simulate() feeds the kernel


def run_builtin(acc: LineAccesses, cfg: LLCConfig, writes: bool = True, repeats: int = 3) -> tuple[int, float]:
    """Misses and the best time of ``repeats`` runs (this VM's speed varies by +-30% run to run)."""
    LLCState(cfg).access(acc.line[:1000], acc.cls[:1000], acc.token[:1000], acc.write[:1000])  # compile
    w = acc.write if writes else np.full(len(acc), 0, dtype=np.uint8)  # full: pages touched now

    def run():
        state, hits = LLCState(cfg), 0
        for s in range(0, len(acc), CHUNK):
            e = s + CHUNK
            out, _, _ = state.access(acc.line[s:e], acc.cls[s:e], acc.token[s:e], w[s:e], acc.step[s:e])
            hits += int(out.sum())
        return hits

    hits, best = best_of(run, repeats)
    return len(acc) - hits, best


def run_pycachesim(lines: np.ndarray, cfg: LLCConfig) -> tuple[int, float]:
    from cachesim import Cache, CacheSimulator, MainMemory

    mem = MainMemory()
    cache = Cache("LLC", cfg.sets, cfg.ways, 64, "LRU")
    mem.load_to(cache)
    mem.store_from(cache)
    sim = CacheSimulator(cache, mem)
    addrs = (lines << 6).tolist()
    load = sim.load
    t = time.perf_counter()
    for a in addrs:
        load(a, 1)
    dt = time.perf_counter() - t
    return cache.stats()["MISS_count"], dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accesses", type=float, default=20e6)
    ap.add_argument("--pycachesim-accesses", type=float, default=None,
                    help="compare pycachesim on a prefix of this length (default: all)")
    ap.add_argument("--policies", nargs="+", default=["token-lru"], metavar="POLICY",
                    help="reserved-way policies to time at R=8 (default: token-lru; all: every one)")
    a = ap.parse_args()
    policies = RESERVED_POLICIES if a.policies == ["all"] else a.policies
    acc = build_stream(int(a.accesses))
    kinds = {name: int((acc.cls == code).sum()) for code, name in enumerate(["kv", "kv_write", "index"])}
    print(f"stream: {len(acc):,} line accesses ({', '.join(f'{k} {v:,}' for k, v in kinds.items())})")

    lru = LLCConfig.make("32MiB", 16, 0, "lru")
    n_py = int(a.pycachesim_accesses or len(acc))
    prefix = LineAccesses(acc.line[:n_py], acc.write[:n_py], acc.cls[:n_py], acc.token[:n_py], acc.step[:n_py])
    ours_miss, ours_dt = run_builtin(prefix, lru, writes=False)
    py_miss, py_dt = run_pycachesim(prefix.line, lru)
    ours_rate, py_rate = n_py / ours_dt, n_py / py_dt
    print(f"LRU R=0 32MiB/16: built-in {ours_rate / 1e6:.1f} M accesses/s, pycachesim "
          f"{py_rate / 1e6:.2f} M accesses/s, ratio {ours_rate / py_rate:.0f}x over {n_py:,} accesses")
    print(f"  misses: built-in {ours_miss:,}, pycachesim {py_miss:,} -> "
          f"{'identical' if ours_miss == py_miss else 'DIFFERENT'}")

    full_miss, full_dt = run_builtin(acc, lru)
    print(f"LRU R=0 on the full stream: {len(acc) / full_dt / 1e6:.1f} M accesses/s")
    for policy in policies:
        _, dt = run_builtin(acc, LLCConfig.make("32MiB", 16, 8, policy, True))
        whole = " whole-token eviction" if policy != "lru" else ""
        print(f"{policy} R=8{whole}: {len(acc) / dt / 1e6:.1f} M accesses/s")
    if ours_miss != py_miss:
        raise SystemExit("miss counts differ")


if __name__ == "__main__":
    main()
