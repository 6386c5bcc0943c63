"""Decode speed, memory, index-log compactness and indexer recall on the real backbones.

1. ``speed``: SmolLM2-135M, a 4096-token prompt, k = 256:
   - dense decode tokens/s (the model's own SDPA attention, no harness),
   - observe-only DSA decode (dense attention + the dsa indexer + logging, no recall): the
     indexer-plus-logging cost relative to a dense step,
   - sparse DSA decode tokens/s (attention over the selection only),
   - bytes per logged index.
2. ``long``: long contexts (8k, 16k, 32k tokens; SmolLM2 up to its 8,192-token context, its
   prompt shortened by the steps), sparse DSA decode with k = 2048: prefill seconds, seconds per
   decode step, peak RSS of the `dsa-harness decode` process.
3. ``batch``: B requests of ``python-stdlib`` (one file each) at 8k context: the same figures,
   per batch size.
4. ``recall``: recall of the dsa indexer against the oracle's (the best k tokens' share of the
   dense attention mass): per layer, the mean recall over steps divided by the mean oracle
   recall, then averaged over layers (all, full-attention and sliding-window layers), at
   contexts of 2k, 4k, 8k, 16k, 32k (the last step's context) and several k, on python-source
   (the indexer is fitted on python-docs, on longer windows past 4k: the fit settings used are
   printed).

One torch thread unless --threads.

    python bench/decode_speed.py [--parts speed long batch recall] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trace_gen.backbones import backbone_config, context_limit, load_backbone
from trace_gen.decode import DecodeConfig, decode, greedy_dense
from trace_gen.indexlog import IndexLog

BACKBONES = ("gemma3-270m", "smollm2-135m")


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


def prompt_lengths(backbone: str, contexts, steps: int) -> dict[int, int | None]:
    """context -> prompt tokens: the context minus the steps when it would exceed the backbone's
    own context, None when even that does not fit (a context under half the backbone's)."""
    limit = context_limit(backbone_config(backbone)) or max(contexts)
    out = {}
    for ctx in contexts:
        prompt = ctx if ctx + steps <= limit else limit - steps
        out[ctx] = prompt if prompt > ctx // 2 else None
    return out


def measured_decode(out: Path, backbone: str, prompt: int, steps: int, threads: int,
                    *extra: str) -> dict:
    """Run `dsa-harness decode` (dsa indexer, k = 2048, no recall) in its own process; returns
    its log's timing and memory records and the process's peak RSS (bytes)."""
    argv = [sys.executable, "-m", "harness.cli", "decode", "--backbone", backbone,
            "--indexer", "dsa", "--topk", "2048", "--prompt-tokens", str(prompt),
            "--steps", str(steps), "--threads", str(threads), "--no-recall", "--no-progress",
            "--overwrite", "--out", str(out), *extra]
    with open(out.with_suffix(".stderr"), "w+") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err,
                                cwd=Path(__file__).parents[1])
        t0 = time.perf_counter()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err.seek(0)
        lines = err.read().strip().splitlines()
    if status != 0:
        return {"error": lines[-1] if lines else f"exit status {status}"}
    meta = IndexLog(out).meta
    return {**meta["timing"], **meta["memory"], "prefill_chunk": meta["prefill"]["chunk_tokens"],
            "peak_rss": usage.ru_maxrss * 1024, "wall_s": wall}


def print_point(label: str, r: dict, steps: int) -> None:
    if "error" in r:
        print(f"  {label}: {r['error']}")
        return
    print(f"  {label}: prefill {r['prefill_s']:7.1f} s (chunks of {r['prefill_chunk']}), "
          f"{r['decode_s'] / steps:6.2f} s/step, peak RSS {r['peak_rss'] / 2**30:5.2f} GiB "
          f"(KV cache {r['kv_cache_bytes'] / 2**30:.2f} GiB, indexer keys "
          f"{r['indexer_cache_bytes'] / 2**30:.2f} GiB), {r['wall_s']:.0f} s in all")


def long_context(args, tmp):
    steps = args.long_steps
    print(f"long context: sparse dsa decode, k=2048, {steps} steps, 1 request, python-source, "
          f"{args.threads} thread(s):")
    for backbone in args.backbones:
        for ctx, prompt in prompt_lengths(backbone, args.contexts, steps).items():
            if prompt is None:
                print(f"  {backbone:13s} {ctx:6,d}: beyond its context")
                continue
            r = measured_decode(Path(tmp) / f"long-{backbone}-{ctx}", backbone, prompt, steps,
                                args.threads)
            print_point(f"{backbone:13s} prompt {prompt:6,d}", r, steps)


def batches(args, tmp):
    steps = args.batch_steps
    print(f"batches at 8k context: sparse dsa decode, k=2048, {steps} steps, python-stdlib "
          f"(one file per request), {args.threads} thread(s):")
    for backbone in args.backbones:
        prompt = prompt_lengths(backbone, [8192], steps)[8192]
        for batch in args.batch_sizes:
            r = measured_decode(Path(tmp) / f"batch-{backbone}-{batch}", backbone, prompt, steps,
                                args.threads, "--requests", str(batch), "--text", "python-stdlib")
            print_point(f"{backbone:13s} B={batch:2d} prompt {prompt:,}", r, steps)


def layer_ratios(log: IndexLog):
    """Per layer: mean dsa recall / mean oracle recall over the log's steps and requests."""
    by_layer = log.dataframe().groupby("layer")[["recall", "recall_best"]].mean()
    return by_layer.recall / by_layer.recall_best


def recall(args, tmp):
    steps = args.recall_steps
    print(f"recall of the dsa indexer relative to the oracle (per layer mean recall / mean oracle "
          f"recall, averaged over layers), observe-only, {steps} steps, text python-source:")
    fits = {}
    for backbone in args.backbones:
        limit = context_limit(backbone_config(backbone))
        for ctx in args.contexts_recall:
            prompt = ctx - steps  # the last step sees ctx tokens
            for k in args.recall_k:
                if ctx > limit or k >= prompt:
                    continue
                log = harness_decode(f"{tmp}/recall", backbone=backbone, indexer="dsa", topk=k,
                                     prompt_tokens=prompt, steps=steps, observe_only=True)
                ratio = layer_ratios(log)
                types = np.array(log.meta["backbone"]["config"]["layer_types"])[ratio.index]
                parts = [f"all {ratio.mean():.3f}"] + [f"{t} {ratio[types == t].mean():.3f}"
                                                       for t in ("full", "sliding") if (types == t).any()]
                fit = log.meta["indexer"]["fit"]["settings"]
                fits[(backbone, fit["calibration_tokens"])] = fit
                print(f"  {backbone:13s} ctx {ctx:6,d} k={k:4d}: " + ", ".join(parts)
                      + f"; worst layer {ratio.min():.3f} (layer {int(ratio.idxmin())}); "
                      f"fit on {fit['calibration_windows']} x {fit['calibration_tokens']:,} tokens")
    for (backbone, _), fit in fits.items():
        print(f"  fit {backbone}: {json.dumps(fit, sort_keys=True)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["speed", "long", "batch", "recall"],
                    choices=["speed", "long", "batch", "recall"])
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES,
                    help="long, batch, recall: the backbones")
    ap.add_argument("--steps", type=int, default=32, help="speed: decode steps")
    ap.add_argument("--repeats", type=int, default=3, help="speed: best of this many runs")
    ap.add_argument("--long-steps", type=int, default=16)
    ap.add_argument("--contexts", type=int, nargs="+", default=[8192, 16384, 32768])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--batch-steps", type=int, default=4)
    ap.add_argument("--recall-steps", type=int, default=8)
    ap.add_argument("--contexts-recall", type=int, nargs="+",
                    default=[2048, 4096, 8192, 16384, 32768])
    ap.add_argument("--recall-k", type=int, nargs="+", default=[256, 2048])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            parts = {"speed": speed, "long": long_context, "batch": batches, "recall": recall}
            parts[part](args, tmp)


if __name__ == "__main__":
    main()
