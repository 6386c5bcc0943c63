"""The report's section on the host tier (runs of backend ``tier``, ``harness.cache.tier``): how
many requests a device holds with the KV in host memory and hot buffers in HBM, the throughput
against the batch with and without the tier, the crossover batch, the hot buffers' hit rates
(and that they have settled), beside HiSparse's published figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.study.report.registry import ReportContext, section
from harness.study.report.render import Doc

# HiSparse's published figures, the anchor of the section.
HISPARSE_GAIN = 3.0  # "over 3x the baseline throughput at 256 concurrent requests"
HISPARSE = (
    "HiSparse, the anchor (SGLang): the LMSYS blog \"HiSparse: Turbocharging Sparse Attention "
    "with Hierarchical Memory\" (Xie, Huang, Huang, 2026-04-10, lmsys.org/blog/2026-04-10-sglang-hisparse) reports "
    "\"over 3x the baseline throughput at 256 concurrent requests\" for GLM-5.1-FP8 with 32k-input, 8k-output "
    "queries on a PD-colocated 8 x H200 deployment, and that \"at low concurrency, HiSparse introduces modest "
    "overhead\". A comment on sgl-project/sglang PR #33075 measures 8 x RTX PRO 6000 (SM120, TP8, 32k in, 2k out, "
    "top_k 2048, device_buffer_size 4096, host_to_device_ratio 10): 0.92x at batch 1, 1.19x at 8, 1.66x at 16, "
    "2.43x at 32, 3.00x at 54, the baseline saturating its KV pool at 6 running requests. vLLM PR #53781 (merged) "
    "implements the same hot buffering with a GPU-side LRU.")
KEY = ["backbone", "context_tokens", "topk", "geometry", "platform"]


def _runs(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[(df._status == "ok") & (df.backend == "tier")].copy()
    if ok.empty:
        return ok
    ok["platform"] = ok.timing_platform
    ok["context_tokens"] = ok.context_tokens.astype(int)
    return ok


def summary_table(runs: pd.DataFrame, per_k: float = 2.0) -> pd.DataFrame:
    """Per backbone, context, k, geometry and platform, at ``per_k`` x k hot tokens: the largest
    batch and its throughput without and with the tier (token-lru), the gain and the crossover,
    and the hot-buffer hit rate of every policy run."""
    at = runs[runs.hot_tokens_per_k == per_k]
    if at.empty:
        return pd.DataFrame()
    rates = at.pivot_table(index=KEY, columns="hot_policy", values="hot_hit_rate").add_prefix("hit rate ")
    lru = at[at.hot_policy == "token-lru"].set_index(KEY)
    cols = {"hot_tokens": "hot tokens/layer", "full_max_batch": "batch, full HBM",
            "full_max_batch_tokens_per_s": "tokens/s, full HBM", "tier_max_batch": "batch, tier",
            "tier_max_batch_tokens_per_s": "tokens/s, tier", "tier_gain": "gain", "crossover_batch": "crossover batch",
            "link_bytes_per_step": "link bytes/step at batch 1", "link_wait_share": "link share of step"}
    table = lru[list(cols)].astype({c: "Int64" for c in ("hot_tokens", "full_max_batch", "tier_max_batch",
                                                          "crossover_batch")})
    return table.rename(columns=cols).join(rates, how="outer").reset_index().sort_values(KEY)


def throughput_plot(runs: pd.DataFrame, folder: Path) -> str | None:
    """Batch tokens/s against the batch, one panel per platform: the full-HBM device up to its
    largest batch (dashed) and the tier up to its own (solid), token-lru at 2k hot tokens, the
    largest k of the sweep."""
    from harness.core.plotting import plt, save

    sel = runs[(runs.hot_policy == "token-lru") & (runs.hot_tokens_per_k == 2.0) & (runs.topk == runs.topk.max())]
    if sel.empty:
        return None
    platforms = sorted(sel.platform.unique())
    fig, axes = plt.subplots(1, len(platforms), figsize=(5.2 * len(platforms), 4.2), squeeze=False)
    for ax, platform in zip(axes[0], platforms):
        for i, (key, r) in enumerate(sel[sel.platform == platform].groupby(["backbone", "context_tokens", "geometry"])):
            curve = pd.DataFrame(r.throughput_curve.iloc[0], columns=["batch", "full", "tier"])
            label = f"{key[0]} {key[1] // 1024}k {key[2]}"
            full = curve.dropna(subset=["full"])
            ax.plot(full.batch, full.full, ls="--", color=f"C{i}", marker=".")
            ax.plot(curve.dropna(subset=["tier"]).batch, curve.tier.dropna(), color=f"C{i}", marker=".", label=label)
        ax.set(xscale="log", yscale="log", xlabel="batch (requests on the device)", ylabel="batch tokens/s",
               title=f"{platform}: full HBM (dashed) and host tier")
        ax.legend(fontsize=7)
    return save(fig, folder / "host_tier_throughput.png")


def _one_geometry(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of one geometry (the first by name): a geometry weights the log's layers by how
    many of its own replay each, so hit rates are compared within one."""
    return runs[runs.geometry == min(runs.geometry)]


def hit_rate_plot(runs: pd.DataFrame, folder: Path) -> str | None:
    """The hot buffers' hit rate per decode step at 2k hot tokens, one panel per backbone,
    context and k, one line per policy: has it settled?"""
    from harness.core.plotting import plt, save

    runs = _one_geometry(runs)
    sel = runs[runs.hot_tokens_per_k == 2.0].drop_duplicates(["backbone", "context_tokens", "topk", "hot_policy"])
    if sel.empty:
        return None
    panels = list(sel.groupby(["backbone", "context_tokens", "topk"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (key, g) in zip(axes[0], panels):
        for _, r in g.sort_values("hot_policy").iterrows():
            ax.plot(r.hot_hit_rate_per_step, label=r.hot_policy, lw=1)
        ax.set(xlabel="decode step", ylabel="hot-buffer hit rate", ylim=(0, 1.02),
               title=f"{key[0]}, {key[1] // 1024}k, k = {key[2]}, {g.geometry.iloc[0]}")
        ax.legend(fontsize=7)
    return save(fig, folder / "host_tier_hit_rate.png")


def settling(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean hit rate over each quarter of the decode steps (token-lru, streak, min at 2k): a hit
    rate that has settled is flat over the last quarters; and the lowest of the log's layers (a
    backbone's sliding-window layers, e.g. Gemma's, hit almost always: their window moves by one
    token a step)."""
    runs = _one_geometry(runs)
    sel = runs[runs.hot_tokens_per_k == 2.0].drop_duplicates(["backbone", "context_tokens", "topk", "hot_policy"]) \
        .sort_values(["backbone", "context_tokens", "topk", "hot_policy"])
    rows = []
    for _, r in sel.iterrows():
        rate = pd.Series(r.hot_hit_rate_per_step)
        q = len(rate) // 4
        rows.append({"backbone": r.backbone, "context_tokens": r.context_tokens, "topk": r.topk, "geometry": r.geometry,
                     "policy": r.hot_policy, "steps": len(rate),
                     **{f"steps {i * q}-{(i + 1) * q - 1}": rate.iloc[i * q:(i + 1) * q].mean() for i in range(4)},
                     "lowest log layer": min(r.hot_hit_rate_per_log_layer)})
    return pd.DataFrame(rows)


def anchor(runs: pd.DataFrame) -> list[str]:
    """Each platform's gain at the largest batch beside HiSparse's >3x, for the sweep's closest
    point to HiSparse's (GLM-5 geometry if run, the longest context, k = 2048, 2k hot tokens)."""
    sel = runs[(runs.hot_policy == "token-lru") & (runs.hot_tokens_per_k == 2.0)]
    if sel.empty:
        return []
    sel = sel[sel.context_tokens == sel.context_tokens.max()]
    sel = sel[sel.geometry == ("glm-5" if (sel.geometry == "glm-5").any() else sel.geometry.iloc[0])]
    lines = []
    for _, r in sel.sort_values(["platform", "backbone"]).iterrows():
        gain = "no gain computed (the full-HBM device holds no request)" if pd.isna(r.tier_gain) else \
            f"{r.tier_gain:.2f}x ({r.tier_gain / HISPARSE_GAIN:.2f} of HiSparse's 3x)"
        lines.append(f"{r.platform}, {r.geometry}, {r.backbone} selections at {r.context_tokens:,} tokens, k = {r.topk}: "
                     f"{int(r.full_max_batch)} requests fit without the tier, {int(r.tier_max_batch)} with it; "
                     f"throughput at those batches {r.full_max_batch_tokens_per_s:,.0f} and "
                     f"{r.tier_max_batch_tokens_per_s:,.0f} tokens/s: {gain}; crossover batch "
                     f"{'none' if pd.isna(r.crossover_batch) else int(r.crossover_batch)}.")
    return lines


@section("Host tier: KV in host memory, hot buffers in HBM", order=35)
def host_tier(ctx: ReportContext, doc: Doc) -> None:
    runs = _runs(ctx.results)
    if runs.empty:
        return
    doc.p("Each request's KV cache lives in host memory and its indexer keys in HBM; every layer of every request has "
          "a hot buffer of KV tokens in HBM under a token policy; a miss crosses the platform's host link "
          "(PCIe 5.0 x16: 63 GB/s per direction; NVLink-C2C on gh200: 450 GB/s; 1 us per transfer, assumed) before "
          "its layer's attention, with no prefetch: per layer, time = index phase + link transfer of its misses + "
          "gather phase, each phase the roofline of its HBM bytes (weights, indexer-key scan, hot-buffer reads and "
          "writes) and compute (harness/cache/tier.py). The largest batch is what fits in the platform's HBM less "
          "the weights the geometry's deployment keeps on a device (without the tier: full KV and indexer keys; with "
          "it: indexer keys, hot buffers and one layer's staging of k tokens; and the host memory per device must "
          "hold the full KV). The crossover is the smallest batch at which the tier's throughput passes the "
          "full-HBM device's at its own largest batch. The selections come from the backbones' index logs, stretched "
          "to the geometry's layers (DESIGN.md, section 5). Throughputs are one device's roofline (no expert-parallel "
          "all-to-all, kernel or scheduling overheads): upper bounds, to be compared as ratios; DeepSeek's own EP144 "
          "decode averages about 1,850 tokens/s per H800 (open-infra-index, Open-Source Week day 6).")
    doc.p(HISPARSE)
    for line in anchor(runs):
        doc.p(line)
    table = summary_table(runs)
    if not table.empty:
        doc.p("At 2k hot tokens per layer and request (token-lru for the batches and throughputs; hit rates of every "
              "policy run; link bytes per step at the log's batch):")
        doc.table(table)
    doc.image(throughput_plot(runs, ctx.folder))
    doc.p("Hot-buffer hit rate per decode step (2k hot tokens): the mean over each quarter of the steps shows whether "
          "it has settled.")
    doc.table(settling(runs))
    doc.image(hit_rate_plot(runs, ctx.folder))
    cols = KEY + ["hot_policy", "hot_tokens_per_k", "hot_tokens", "hot_hit_rate", "link_bytes_per_step",
                  "step_time_s", "full_hbm_step_time_s", "full_max_batch", "tier_max_batch",
                  "full_max_batch_tokens_per_s", "tier_max_batch_tokens_per_s", "tier_gain", "crossover_batch"]
    every = runs[cols].sort_values(KEY + ["hot_policy", "hot_tokens_per_k"])
    every.to_csv(ctx.folder / "host_tier.csv", index=False)
    doc.p("Every host-tier run (also in host_tier.csv):")
    doc.table(every)
