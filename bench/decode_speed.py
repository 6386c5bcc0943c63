"""Decode speed, index-log compactness and indexer recall on the real backbones.

1. SmolLM2-135M, a 4096-token prompt, k = 256 (one torch thread unless --threads):
   - dense decode tokens/s (the model's own SDPA attention, no harness),
   - observe-only DSA decode (dense attention + the dsa indexer + logging, no recall): the
     indexer-plus-logging cost relative to a dense step,
   - sparse DSA decode tokens/s (attention over the selection only),
   - bytes per logged index.
2. Recall of the dsa indexer against the oracle's (the best k tokens' share of the dense
   attention mass), per backbone and layer type, at k = 64 and 256, on python-source (the
   indexer was fitted on python-docs), with the indexer's cost (d_I, H_I, key bytes).

    python bench/decode_speed.py [--steps 32] [--threads 1] [--skip-speed] [--skip-recall]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch

from trace_gen.backbones import load_backbone
from trace_gen.decode import DecodeConfig, decode, greedy_dense
from trace_gen.indexlog import IndexLog


def dense_tokens_per_s(backbone: str, prompt: int, steps: int) -> float:
    ids = torch.randint(100, 1000, (1, prompt)).numpy()
    _, seconds = greedy_dense(load_backbone(backbone), ids, steps)
    return steps / seconds


def harness_decode(out, **kw) -> IndexLog:
    return IndexLog(decode(DecodeConfig(**kw), out, overwrite=True, progress=False))


def speed(args, tmp):
    prompt, steps = 4096, args.steps
    common = dict(backbone="smollm2-135m", indexer="dsa", topk=256, prompt_tokens=prompt, steps=steps)
    dense = t_obs = t_sparse = 0.0
    for _ in range(args.repeats):  # best of: this machine's speed drifts by +-20% between runs
        dense = max(dense, dense_tokens_per_s("smollm2-135m", prompt, steps))
        observe = harness_decode(f"{tmp}/observe", observe_only=True, recall=False, **common)
        sparse = harness_decode(f"{tmp}/sparse", recall=False, **common)
        t_obs = max(t_obs, observe.meta["timing"]["decode_tokens_per_s"])
        t_sparse = max(t_sparse, sparse.meta["timing"]["decode_tokens_per_s"])
    overhead = dense / t_obs - 1
    print(f"smollm2-135m, prompt {prompt}, k=256, {steps} steps, {torch.get_num_threads()} thread(s), "
          f"best of {args.repeats}:")
    print(f"  dense decode                  {dense:6.2f} tokens/s")
    print(f"  dense + dsa indexer + logging {t_obs:6.2f} tokens/s -> indexer+logging cost "
          f"{100 * overhead:.1f}% of a dense step")
    print(f"  sparse DSA decode             {t_sparse:6.2f} tokens/s ({t_sparse / dense:.2f}x dense)")
    positions = sum(len(p) for p in sparse.table(["positions"]).column("positions").to_pylist())
    size = os.path.getsize(sparse.path)
    print(f"  index log: {size:,} B for {positions:,} logged indices = {size / positions:.2f} B/index "
          f"(zstd Parquet, recall columns empty)")


def recall(args, tmp):
    print("recall of the dsa indexer vs the oracle (share of dense attention mass, text python-source):")
    for backbone in ("smollm2-135m", "gemma3-270m"):
        for k in (64, 256):
            log = harness_decode(f"{tmp}/{backbone}-{k}", backbone=backbone, indexer="dsa", topk=k,
                                 prompt_tokens=2048, steps=args.recall_steps, observe_only=True)
            df = log.dataframe()
            types = log.meta["backbone"]["config"]["layer_types"]
            df["type"] = df.layer.map(lambda layer, t=types: t[layer])
            ix = log.meta["indexer"]
            parts = []
            for name, g in [("all", df)] + list(df.groupby("type")):
                by_layer = g.groupby("layer")[["recall", "recall_best"]].mean()
                ratio = (by_layer.recall / by_layer.recall_best).mean()
                parts.append(f"{name}: dsa {g.recall.mean():.3f} / oracle {g.recall_best.mean():.3f} "
                             f"= {ratio:.3f}")
            print(f"  {backbone:13s} k={k:3d} (d_I={ix['d_I']}, H_I={ix['H_I']}, key {ix['key_bytes']} B/token/layer): "
                  + "; ".join(parts))
            lows = (df.groupby("layer").recall.mean() / df.groupby("layer").recall_best.mean())
            print(f"      per-layer ratio min {lows.min():.3f} (layer {int(lows.idxmin())}), "
                  f"max {lows.max():.3f}: {np.round(lows.to_numpy(), 2).tolist()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--recall-steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-recall", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_speed:
            speed(args, tmp)
        if not args.skip_recall:
            recall(args, tmp)


if __name__ == "__main__":
    main()
