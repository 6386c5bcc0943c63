"""Token-LRU miss-ratio curve throughput: 100 M token accesses, every capacity, one pass.

Builds a DSA-like token stream (61 layers x k = 2048 per step, 70% of each layer's selection
kept from the previous step, new picks favouring recent tokens), then times the curve as
`dsa-harness analyze` computes it: dense token ids (layer * width + position) spilled to a
TokenStream, then the stack-distance pass (StackDistances) over them.

    python bench/mrc_speed.py [--accesses 100e6]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from harness.cache.tokencache import StackDistances, TokenStream
from trace_gen.synthetic import dsa_selections


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accesses", type=float, default=100e6)
    ap.add_argument("--layers", type=int, default=61)
    ap.add_argument("--topk", type=int, default=2048)
    a = ap.parse_args()
    target = int(a.accesses)
    steps = -(-target // (a.layers * a.topk))
    t0 = time.perf_counter()
    chunks, chunk, n = [], [], 0
    prompt = 8192
    width = prompt + steps
    for _step, layer, _ctx, pos in dsa_selections(steps, a.layers, a.topk, prompt=prompt, seed=0):
        chunk.append(np.int64(layer) * width + pos.astype(np.int64))
        n += len(pos)
        if len(chunk) == a.layers:
            chunks.append(np.concatenate(chunk))
            chunk = []
        if n >= target:
            break
    ids = np.concatenate(chunks + chunk)[:target]
    print(f"stream: {len(ids):,} token accesses over {steps} steps x {a.layers} layers "
          f"(built in {time.perf_counter() - t0:.0f} s)")
    t1 = time.perf_counter()
    with TokenStream(id_space=a.layers * width) as s:
        for part in np.array_split(ids, max(1, len(ids) // (1 << 22))):
            s.append(part)
        t2 = time.perf_counter()
        sd = StackDistances(s.distinct)
        for start in range(0, s.n, 1 << 22):
            sd.feed(np.asarray(s.ids[start:start + (1 << 22)]))
        t3 = time.perf_counter()
        hits = sd.hits()
    kl = a.layers * a.topk
    distinct = int((sd.slot_of >= 0).sum())
    print(f"distinct tokens {distinct:,}; hit rate at k x L / 4, k x L, 2 k x L: "
          + ", ".join(f"{hits[min(int(f * kl), s.distinct)] / len(ids):.3f}" for f in (0.25, 1, 2)))
    print(f"miss-ratio curve (all {distinct:,} capacities): {t3 - t1:.1f} s "
          f"(stream {t2 - t1:.1f} s + stack distances {t3 - t2:.1f} s) = {len(ids) / (t3 - t1) / 1e6:.1f} M accesses/s")


if __name__ == "__main__":
    main()
