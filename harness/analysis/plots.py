"""PNG plots of the locality analysis."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.core.plotting import plt, save


def locality_plots(tables: dict, folder: Path) -> list[str]:
    """Overlap per layer, reuse-distance histogram, token-LRU miss-ratio curves with MIN."""
    out = []
    per_layer = tables["per_layer"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for log, g in per_layer.groupby("log", sort=False):
        by = g.groupby("layer").overlap_mean.mean()
        ax.plot(by.index, by.values, marker=".", label=log)
    ax.set(xlabel="layer", ylabel="|S_t ∩ S_t-1| / k", title="Consecutive-step overlap per layer", ylim=(0, 1))
    ax.legend(fontsize=8)
    out.append(save(fig, folder / "overlap_per_layer.png"))

    reuse = tables["reuse_distance"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    logs = list(dict.fromkeys(reuse.log))
    width = 0.8 / max(1, len(logs))
    for i, log in enumerate(logs):
        g = reuse[reuse.log == log]
        share = g["count"] / max(g["count"].sum(), 1)
        ax.bar(pd.RangeIndex(len(g)) + i * width, share.values, width=width, label=log)
        ticks = g.distance_steps.tolist()
    step = max(1, len(ticks) // 16)
    ax.set_xticks(range(0, len(ticks), step), ticks[::step], fontsize=7)
    ax.set(xlabel="reuse distance (decode steps)", ylabel="share of reuses",
           yscale="log" if (reuse["count"] > 0).any() else "linear",
           title="Reuse distance of selected tokens (per layer)")
    ax.legend(fontsize=8)
    out.append(save(fig, folder / "reuse_distance.png"))

    mrc = tables["mrc"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for log, g in mrc[mrc.scope == "all"].groupby("log", sort=False):
        lru = g[g.policy == "lru"]
        line, = ax.plot(lru.capacity_kxl, lru.hit_rate, label=f"{log} LRU")
        mins = g[g.policy == "min"]
        if len(mins):
            ax.plot(mins.capacity_kxl, mins.hit_rate, "o--", color=line.get_color(), ms=4,
                    label=f"{log} MIN")
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", xlabel="capacity (x k x layers x requests tokens)", ylabel="token hit rate",
           title="Token-granularity miss-ratio curve (all layers, decode order)", ylim=(0, 1))
    ax.legend(fontsize=7)
    out.append(save(fig, folder / "mrc.png"))
    return out
