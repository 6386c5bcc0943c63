"""The model's decode speed-up from the indexer levers beside IndexCache's published figures.

The whole-step model (built-in LLC simulation and closed-loop step time, weights streamed) runs a
synthetic index log shaped like the real backbones' selections (trace_gen.synthetic) under
DeepSeek-V3.2 geometry on the H100 (``h100-sxm``), one request, with and without a stream lever
(trace_gen.levers.StreamLevers): index share 4 (the indexer on 1 layer in 4, as IndexCache's
"1/4 retention"; SGLang's ``index_topk_freq = 4``), FP4 indexer keys (68 B in place of 132 B) and
both. It prints the model's speed-up at several contexts, then each published figure beside the
model's at the figure's context, with their ratio.

Published (each verified in its source; the conditions are the sources' own):

- IndexCache (Bai et al., arXiv 2603.12201; github.com/THUDM/IndexCache README, "30B DSA Model -
  Speedup (H100)"): decode at 200K context, 58 tokens/s baseline, 86 tokens/s with 1/4 of the
  indexers retained: 1.48x. A 30B DSA model of 47 DSA layers, in SGLang, on H100.
- SGLang PR #21925 ("[WIP] Implement IndexCache for GLM-5/DeepSeek V3.2", summary table "GLM-5 /
  FP4 / TP=8"): decode throughput at 64K input, 65.25 tokens/s baseline, 87.91 with the
  greedy-searched 1/4 retention pattern: +34.7 % (1.35x). nvidia/GLM-5-NVFP4 (FP4 weights), TP 8;
  the PR names no GPU in its summary (NVFP4 is a Blackwell format).
- SGLang PR #21405 ("Enable IndexCache for DeepSeek V3.2", merged; ``index_topk_freq = 4`` on
  DeepSeek-V3.2-Exp, TP 8): "Throughput improved ~ +6.4 %" (TTFT -5.4 %); its description gives no
  context length, batch or GPU for that figure, so the bench prints the context at which the
  model's speed-up is +6.4 %.

The model's step is one device's memory traffic through the LLC and its compute at the
platform's peak rates; what it leaves out is printed with the results (README, "Indexer levers in
streams").

    python bench/indexcache_anchor.py [--steps 3] [--contexts 8192 32768 65536 131072 200000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from harness.cache.llc import LLCConfig
from harness.cache.platforms import get_platform
from harness.cache.simulate import simulate_stream
from harness.cache.timing import TimingConfig
from trace_gen.geometry import PRESETS
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log

FP4_KEY_BYTES = 68  # MXFP4 indexer key: 128 values x 4 bits + a 4 B scale (FP8 key: 128 B + 4 B = 132 B)
SETTINGS = {"share 4": (4, None), "FP4 keys": (1, FP4_KEY_BYTES), "share 4 + FP4": (4, FP4_KEY_BYTES)}


@dataclass(frozen=True)
class Published:
    name: str
    context: int        # tokens
    baseline: float     # tokens/s without the lever
    lever: float | None  # tokens/s with it (None: only the speed-up is published)
    speedup: float
    setting: str        # the model's setting that stands for the published lever
    layers: int         # the published model's DSA layers ...
    removed: int        # ... and the indexers the lever removed (0: not published)
    source: str


PUBLISHED = [
    Published("IndexCache paper, 30B DSA, H100", 200_000, 58.0, 86.0, 86.0 / 58.0, "share 4", 47, 35,
              "github.com/THUDM/IndexCache README (arXiv 2603.12201): decode (200K) 58 -> 86 tok/s, 1/4 of the "
              "indexers retained (about 12 of 47 DSA layers), 30B DSA model, H100"),
    # the PR's pattern for GLM-5's 78 layers: 22 F (indexer kept), 56 S (shared)
    Published("SGLang #21925, GLM-5 NVFP4 TP8", 65_536, 65.25, 87.91, 87.91 / 65.25, "share 4", 78, 56,
              "github.com/sgl-project/sglang/pull/21925: decode throughput (64K input) 65.25 -> 87.91 tok/s, "
              "+34.7 %, greedy-searched 1/4 retention pattern (22 of 78 layers keep the indexer), "
              "nvidia/GLM-5-NVFP4, TP 8"),
    Published("SGLang #21405, DeepSeek-V3.2-Exp TP8", 0, 0.0, None, 1.064, "share 4", 61, 0,
              "github.com/sgl-project/sglang/pull/21405: throughput ~ +6.4 % with index_topk_freq 4, "
              "DeepSeek-V3.2-Exp, TP 8; context, batch and GPU not given"),
]

LEAVES_OUT = [
    "the top-k selection over every cached token's score (a radix select or sort per layer and step; "
    "GVR, arXiv 2604.22312, makes it 1.88x faster) and its launch: IndexCache removes it with the scan, "
    "the model has no cost for it",
    "kernel launches, synchronisation and the achieved (not peak) bandwidth and FLOP rate of the "
    "indexer's logits kernel: the model's indexer is its key scan and logits at the platform's peak rates",
    "the published models' shapes, which the sources do not give in full (a 30B DSA model of 47 DSA "
    "layers; GLM-5's 78 layers, FP4 weights over TP 8): the model is one device of DeepSeek-V3.2's EP144 "
    "deployment, 23 GB of weights a step, which the indexer's bytes are a small share of",
    "the network (expert-parallel all-to-all, tensor-parallel all-reduce of TP 8)",
]


def simulate(log: Path, share: int, key_bytes: int | None, geometry: str, platform: str) -> dict:
    """One request's decode steps, all of the log's (the first warms the LLC), under a stream lever."""
    g = PRESETS[geometry]
    if key_bytes is not None:
        g = replace(g, index_bytes=key_bytes)
    src = StreamSource(IndexLog(log), g, Layout(kind="paged", page_tokens=64, weights=True),
                       index_share=None if share == 1 else share)
    p = get_platform(platform)
    return simulate_stream(src, LLCConfig.make(p.llc_size, p.llc_ways), TimingConfig.make(platform), bounds=False)


def speedups(log: Path, geometry: str, platform: str) -> dict:
    """The baseline and each setting's result at one context: {name: result}."""
    out = {"baseline": simulate(log, 1, None, geometry, platform)}
    for name, (share, key_bytes) in SETTINGS.items():
        out[name] = simulate(log, share, key_bytes, geometry, platform)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="decode steps per run (the first warms the LLC)")
    ap.add_argument("--contexts", type=int, nargs="+", default=[8192, 32768, 65536, 131072, 200_000])
    ap.add_argument("--geometry", default="deepseek-v3.2")
    ap.add_argument("--platform", default="h100-sxm")
    args = ap.parse_args()
    contexts = sorted(set(args.contexts) | {p.context for p in PUBLISHED if p.context})
    print(f"model: {args.geometry} ({PRESETS[args.geometry].weights.deployment}), {args.platform}, one request, "
          f"k 2048, {args.steps} steps (1 warm-up); whole step (weights included) and its attention part")
    print(f"{'context':>9}{'baseline tok/s':>16}{'index share':>13}  " + "".join(
        f"{name + ' whole/attn':>26}" for name in SETTINGS) + f"{'host (s)':>10}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for context in contexts:
            t0 = time.perf_counter()
            log = write_synthetic_log(Path(tmp) / f"c{context}", steps=args.steps, layers=8, topk=2048,
                                      prompt=context)
            r = results[context] = speedups(log, args.geometry, args.platform)
            base = r["baseline"]
            index = base["by_class"]["index"]["accesses"] / max(base["accesses"], 1)
            cells = "".join(f"{base['step_time_cycles'] / r[n]['step_time_cycles']:>19.3f}x/"
                            f"{base['attention_time_cycles'] / r[n]['attention_time_cycles']:>5.2f}x" for n in SETTINGS)
            print(f"{context:>9,}{base['tokens_per_s']:>16.1f}{index:>13.3f}  {cells}{time.perf_counter() - t0:>10.1f}")
    print("(index share: the indexer keys' share of the baseline's line accesses, weights included)")
    print()
    print(f"{'published':<40}{'context':>9}{'published':>11}{'model':>8}{'ratio':>8}   model tok/s (published)")
    curve = {c: results[c]["baseline"]["step_time_cycles"] / results[c]["share 4"]["step_time_cycles"]
             for c in contexts}
    for p in PUBLISHED:
        if p.context:
            r = results[p.context]
            model = r["baseline"]["step_time_cycles"] / r[p.setting]["step_time_cycles"]
            rates = (f"{r['baseline']['tokens_per_s']:.0f} -> {r[p.setting]['tokens_per_s']:.0f} "
                     f"({p.baseline:g} -> {p.lever:g})")
            print(f"{p.name:<40}{p.context:>9,}{p.speedup:>10.3f}x{model:>7.3f}x{model / p.speedup:>8.2f}   {rates}")
        else:
            xs, ys = np.array(list(curve)), np.array(list(curve.values()))
            at = np.interp(p.speedup, ys, xs) if ys.min() <= p.speedup <= ys.max() else None
            where = f"the model's share-4 speed-up is {p.speedup:.3f}x at ~{at:,.0f} tokens" if at else \
                f"the model's share-4 speed-up ranges {ys.min():.3f}-{ys.max():.3f}x over these contexts"
            print(f"{p.name:<40}{'?':>9}{p.speedup:>10.3f}x{'':>8}{'':>8}   {where}")
        print(f"    {p.source}")
    print()
    # What one removed indexer costs per step, published and modelled, derived the same way: the
    # step time saved over the indexers removed (the model's share 4 removes 45 of 61 at
    # DeepSeek-V3.2 geometry, every 4th layer kept).
    kept = len(range(0, PRESETS[args.geometry].layers, 4))
    removed = PRESETS[args.geometry].layers - kept
    print(f"{'one indexer, per step (saved / removed)':<40}{'context':>9}{'published':>12}{'model':>10}{'ratio':>8}")
    for p in PUBLISHED:
        if not (p.context and p.removed):
            continue
        r = results[p.context]
        published = (1 / p.baseline - 1 / p.lever) / p.removed
        model = (r["baseline"]["step_time_s"] - r[p.setting]["step_time_s"]) / removed
        print(f"{p.name:<40}{p.context:>9,}{published * 1e6:>10.1f}us{model * 1e6:>8.2f}us{published / model:>8.1f}")
    print(f"(model: its indexer key scan, {PRESETS[args.geometry].index_bytes} B a token, and its logits at the "
          f"platform's peak; published: the baseline step less the lever's, over the {'/'.join(str(p.removed) for p in PUBLISHED if p.removed)} indexers removed)")
    print()
    print("The model leaves out:")
    for line in LEAVES_OUT:
        print(f"  - {line}")


if __name__ == "__main__":
    main()
