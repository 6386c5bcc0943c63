"""Indexer levers on the real backbones: what reading fewer indexer bytes costs in attention
recall and in the text the backbone produces.

Per backbone (the dsa indexer, k = 256, 2,048-token prompts of python-source, 32 decode steps;
R = 4 prompts decoded greedily and R held-out python-docs windows teacher-forced, in one batch),
``trace_gen.fidelity.lever_fidelity`` decodes under dense attention and under index share 1, 2,
4 and index reuse 2, 4 (share 1 = reuse 1: no lever), and this prints per setting:

- scan: the share of (layer, step) pairs whose indexer keys are scanned (the indexer bytes
  read, relative to no lever); k used: positions a layer attends to (more than k under reuse);
- adj own, adj kind: the selection overlap |S_l ∩ S_l+1| / k of adjacent layers' own
  selections, and of each layer and the next one of its kind (what sharing relies on; the
  same on SmolLM2, where every layer attends to the full context);
- recall: the used selection's share of the dense attention mass (mean over layers, steps and
  all requests); own: the layer's own selection's; recall/own: their ratio, and on the
  full-attention layers alone (full r/own; Gemma's sliding layers see 512 keys, half of them
  selected at k = 256);
- same tok: the share of the free-running requests' steps whose greedy token equals the dense
  decode's; 1st diff: the first step that differs (mean over requests; 32: none does); forced
  same: the same on the teacher-forced requests, whose inputs never part from dense
  attention's (each step counts on its own);
- ppl, ppl ratio: the teacher-forced perplexity of the held-out windows' 32 tokens, and its
  ratio to dense attention's (dense ppl in the last column).

One torch thread unless --threads: about 17 minutes per backbone on this 2-core VM while other
jobs kept it busy (a load of 11). The dsa fit is the cached one (``$DSA_LLC_CACHE``).
``--out FILE`` also writes the table as CSV.

    python bench/index_levers.py [--backbones smollm2-135m gemma3-270m] [--topk 256]
        [--prompt-tokens 2048] [--steps 32] [--requests 4] [--threads 1] [--out levers.csv]
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time

import pandas as pd
import torch

from harness.analysis.locality import layer_pair_overlaps
from harness.core.mdtable import markdown_table
from trace_gen.decode import DecodeConfig
from trace_gen.fidelity import LeverRun, lever_fidelity

SETTINGS = ({"index_share": 1, "index_reuse": 1}, {"index_share": 2, "index_reuse": 1},
            {"index_share": 4, "index_reuse": 1}, {"index_share": 1, "index_reuse": 2},
            {"index_share": 1, "index_reuse": 4})


def adjacent_overlaps(run: LeverRun) -> tuple[float, float]:
    """Mean own-selection overlap of layers l and l + 1, and of each layer and the next one of
    its kind (Gemma 3's full layers are 6 apart)."""
    rows, types = run.rows, run.layer_types
    column = "own_positions" if "own_positions" in rows else "positions"
    width = int(rows.ctx_len.max()) + 1
    pairs = layer_pair_overlaps(rows, width, column, distances=range(1, 7))
    adjacent = pairs[pairs.distance == 1].overlap.mean()
    next_of_kind = {a: next((b for b in range(a + 1, len(types)) if types[b] == types[a]), None)
                    for a in range(len(types))}
    kind = pairs[[next_of_kind[a] == b for a, b in zip(pairs.layer, pairs.layer_b)]].overlap.mean()
    return float(adjacent), float(kind)


def keep_large_tensors_off_the_heap() -> None:
    """glibc serves blocks below its mmap threshold from the heap and raises the threshold (up to
    32 MiB) whenever a larger block is freed; the KV cache's tensors, replaced by larger ones at
    every step, then fragment the heap, and the six decodes of one prefill grew SmolLM2's RSS to
    15 GiB with 4 + 4 requests (killed). A fixed threshold keeps them mmapped and returned to the
    system when freed (RSS flat at the prefill's)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD, 64 KiB
    except (OSError, AttributeError):  # not glibc
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--indexer", default="dsa")
    ap.add_argument("--topk", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--requests", type=int, default=4, help="Free-running prompts and held-out windows, each.")
    ap.add_argument("--heldout", default="python-docs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="Also write the table to this CSV file.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_large_tensors_off_the_heap()
    table = []
    for backbone in args.backbones:
        t0 = time.perf_counter()
        cfg = DecodeConfig(backbone, args.indexer, args.topk, args.prompt_tokens, args.steps, args.requests,
                           "python-source")
        dense, runs = lever_fidelity(cfg, list(SETTINGS), args.heldout,
                                     on_progress=lambda label: print(f"  {label}", file=sys.stderr, flush=True))
        for run in runs:
            s = run.summary(dense)
            adjacent, of_kind = adjacent_overlaps(run)
            full = run.rows[run.rows.layer.map(dict(enumerate(run.layer_types))) == "full"]
            own = full.own_recall if "own_recall" in full else full.recall
            table.append({"backbone": backbone, "share": s["index_share"], "reuse": s["index_reuse"],
                          "scan": s["scan_share"], "k used": s["selected"], "adj own": adjacent,
                          "adj kind": of_kind, "recall": s["recall"], "own": s["own_recall"],
                          "recall/own": s["recall_vs_own"], "full r/own": full.recall.mean() / own.mean(),
                          "same tok": s["same_token_rate"],
                          "1st diff": s["first_difference"], "forced same": s["forced_same_token_rate"],
                          "ppl": s["ppl"], "ppl ratio": s["ppl_ratio"],
                          "dense ppl": s["dense_ppl"]})
        print(f"{backbone}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    df = pd.DataFrame(table)
    print(f"k = {args.topk}, {args.prompt_tokens}-token prompts, {args.steps} steps, {args.requests} + "
          f"{args.requests} requests, indexer {args.indexer}, {args.threads} thread(s)\n")
    print(markdown_table(df))
    if args.out:
        df.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
