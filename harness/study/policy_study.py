"""Reservation policies below one decode step's footprint: every policy on the fully
associative token cache at fractions of k x layers x requests, beside token-LRU and MIN."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from harness.cache.policies import POLICIES, TokenReads, get_policy
from harness.core.mdtable import markdown_table
from trace_gen.indexlog import IndexLog

FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 1, 2)


def policy_sweep(path: str | Path, policies: list[str] | None = None, fractions=FRACTIONS,
                 params: dict | None = None) -> pd.DataFrame:
    """Token hit rate of each policy at each capacity (fractions of one step's footprint)."""
    log = IndexLog(path)
    reads = TokenReads.from_log(log)
    names = policies or [p for p in POLICIES if p != "lru"]  # lru = token-lru on a token cache
    backbone = log.meta["backbone"]["name"]
    label = f"{backbone}/{log.meta['indexer']['name']}/k{reads.topk}"
    rows = []
    policies = {name: get_policy(name, **(params or {}).get(name, {})) for name in names}
    for f in fractions:
        capacity = max(1, int(round(f * reads.footprint)))
        for name, policy in policies.items():
            t = time.perf_counter()
            hits = policy.run(reads, capacity)
            rows.append({"backbone": backbone, "log": label, "policy": name, "capacity_kxl": f,
                         "capacity_tokens": capacity, "hits": hits, "accesses": len(reads),
                         "hit_rate": hits / max(len(reads), 1), "seconds": time.perf_counter() - t})
    df = pd.DataFrame(rows)
    if "min" in names:
        best = df[df.policy == "min"].set_index("capacity_kxl").hits
        df["share_of_min"] = df.hits / df.capacity_kxl.map(best).where(lambda s: s > 0)
    return df


def policy_plots(df: pd.DataFrame, folder: Path) -> list[str]:
    from harness.core.plotting import plt, save

    out = []
    for log, g in df.groupby("log", sort=False):
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, p in g.groupby("policy", sort=False):
            style = {"min": dict(color="black", ls="--", marker="o"),
                     "token-lru": dict(color="grey", lw=2.5, marker="s")}.get(name, dict(marker="."))
            ax.plot(p.capacity_kxl, p.hit_rate, label=name, **style)
        ax.set(xscale="log", xlabel="reserved capacity (x k x layers x requests tokens)", ylabel="token hit rate",
               title=f"Reservation policies: {log}", ylim=(0, 1))
        ax.set_xticks(sorted(g.capacity_kxl.unique()), [f"{x:g}" for x in sorted(g.capacity_kxl.unique())])
        ax.legend(fontsize=7, ncol=2)
        out.append(save(fig, folder / f"policies_{_slug(log)}.png"))
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def policy_markdown(df: pd.DataFrame, plots: list[str]) -> str:
    lines = ["# Reservation policies below one decode step's footprint", "",
             "Token hit rate of a fully associative token cache at fractions of k x layers x requests "
             "tokens (share of MIN's hits in brackets).", ""]
    for log, g in df.groupby("log", sort=False):
        wide = g.pivot_table(index="policy", columns="capacity_kxl", values="hit_rate", sort=False)
        share = g.pivot_table(index="policy", columns="capacity_kxl", values="share_of_min", sort=False) \
            if "share_of_min" in g else None
        cells = wide.copy().astype(object)
        for c in wide.columns:
            cells[c] = [f"{h:.3f}" + (f" ({s:.0%})" if share is not None and s == s else "")
                        for h, s in zip(wide[c], share[c] if share is not None else [float("nan")] * len(wide))]
        cells.columns = [f"{c:g} kL" for c in wide.columns]
        lines += [f"## {log}", "", markdown_table(cells.reset_index()), ""]
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"
