"""Reservation policies below one decode step's footprint: every policy on the fully
associative token cache at fractions of k x layers x requests, beside token-LRU and MIN. Two
families side by side: the project's policies and libCacheSim's eviction algorithms
(``lcs:<algorithm>``)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from harness.cache.policies import POLICIES, PolicyFailed, TokenReads, get_policy
from harness.core.mdtable import markdown_table
from trace_gen.indexlog import IndexLog

FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 1, 2)
ZOO_FAMILY = "libCacheSim"


def policy_sweep(path: str | Path, policies: list[str] | None = None, fractions=FRACTIONS,
                 params: dict | None = None) -> pd.DataFrame:
    """Token hit rate of each policy at each capacity (fractions of one step's footprint).

    By default every policy whose ``default_sweep`` is set (all but ``lru``, the same as
    token-lru on a token cache, and the slow ``lcs:lrb``). A policy that fails at a capacity
    (``PolicyFailed``: a libCacheSim algorithm that aborts on a cache of a few tokens) gets
    no hits there (NaN) and its message in ``failure``."""
    log = IndexLog(path)
    reads = TokenReads.from_log(log)
    names = policies or [name for name, cls in POLICIES.items() if cls.default_sweep]
    backbone = log.meta["backbone"]["name"]
    label = f"{backbone}/{log.meta['indexer']['name']}/k{reads.topk}"
    rows = []
    policies = {name: get_policy(name, **(params or {}).get(name, {})) for name in names}
    for f in fractions:
        capacity = max(1, int(round(f * reads.footprint)))
        for name, policy in policies.items():
            t = time.perf_counter()
            try:
                hits, failure = policy.run(reads, capacity), ""
            except PolicyFailed as e:
                hits, failure = float("nan"), str(e)
            rows.append({"backbone": backbone, "log": label, "policy": name, "family": policy.family,
                         "offline": policy.offline, "capacity_kxl": f, "capacity_tokens": capacity,
                         "hits": hits, "accesses": len(reads), "hit_rate": hits / max(len(reads), 1),
                         "seconds": time.perf_counter() - t, "failure": failure})
    df = pd.DataFrame(rows)
    if "min" in names:
        best = df[df.policy == "min"].set_index("capacity_kxl").hits
        df["share_of_min"] = df.hits / df.capacity_kxl.map(best).where(lambda s: s > 0)
    return df


def family_best(df: pd.DataFrame) -> pd.DataFrame:
    """Per log and capacity: streak, the best online policy of each family (ties: the first
    listed) and MIN, each with its token hit rate and share of MIN's hits (where MIN ran)."""
    rows = []
    online = df[~df.offline & df.hit_rate.notna()]
    for (log, f), g in online.groupby(["log", "capacity_kxl"], sort=False):
        row = {"log": log, "capacity_kxl": f}
        for label, part in (("streak", g[g.policy == "streak"]),
                            ("best_dsa_llc", g[g.family != ZOO_FAMILY]),
                            ("best_zoo", g[g.family == ZOO_FAMILY])):
            if part.empty:
                continue
            best = part.loc[part.hit_rate.idxmax()]
            if label != "streak":
                row[f"{label}_policy"] = best.policy
            row[f"{label}_hit_rate"] = best.hit_rate
            if "share_of_min" in best:
                row[f"{label}_share_of_min"] = best.share_of_min
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["log", "capacity_kxl"])


def streak_vs_zoo(df: pd.DataFrame, fraction: float = 0.25) -> list[str]:
    """One sentence per log: where streak stands against the best general-purpose (online)
    libCacheSim algorithm at ``fraction`` x k x L tokens (empty when either did not run)."""
    out = []
    for r in family_best(df).to_dict("records"):
        streak, zoo = r.get("streak_hit_rate", float("nan")), r.get("best_zoo_hit_rate", float("nan"))
        if r["capacity_kxl"] != fraction or streak != streak or zoo != zoo:
            continue
        of_min = [f" ({s:.0%} of MIN's hits)" if s == s else ""
                  for s in (r.get("streak_share_of_min", float("nan")), r.get("best_zoo_share_of_min", float("nan")))]
        text = f"{r['log']}: at k x L / {1 / fraction:g}, streak hits {streak:.1%} of the token reads{of_min[0]}"
        if zoo > 0:
            text += (f", {streak / zoo:.2f}x the {zoo:.1%}{of_min[1]} of the best general-purpose libCacheSim "
                     f"algorithm, {r['best_zoo_policy']}.")
        else:
            text += ", while no general-purpose libCacheSim algorithm gets a hit."
        out.append(text)
    return out


def policy_plots(df: pd.DataFrame, folder: Path) -> list[str]:
    """One plot per log: the project's policies, libCacheSim's algorithms in thin grey, and the
    best online libCacheSim algorithm at each capacity."""
    from harness.core.plotting import plt, save

    out = []
    best = family_best(df)
    for log, g in df.groupby("log", sort=False):
        fig, ax = plt.subplots(figsize=(7, 4))
        zoo_labelled = False
        for name, p in g.groupby("policy", sort=False):
            if p.family.iloc[0] == ZOO_FAMILY:
                ax.plot(p.capacity_kxl, p.hit_rate, color="0.8", lw=0.8, zorder=1,
                        label=None if zoo_labelled else "libCacheSim algorithms")
                zoo_labelled = True
                continue
            style = {"min": dict(color="black", ls="--", marker="o"),
                     "token-lru": dict(color="grey", lw=2.5, marker="s")}.get(name, dict(marker="."))
            ax.plot(p.capacity_kxl, p.hit_rate, label=name, **style)
        b = best[best.log == log]
        if "best_zoo_hit_rate" in b:
            ax.plot(b.capacity_kxl, b.best_zoo_hit_rate, color="deepskyblue", ls=":", lw=2, marker="^",
                    label="best online libCacheSim")
        xs = sorted(g.capacity_kxl.unique())
        ax.set(xscale="log", xlabel="reserved capacity (x k x layers x requests tokens)", ylabel="token hit rate",
               title=f"Reservation policies: {log}", ylim=(0, 1))
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()  # the log axis would label its minor ticks over the capacities
        ax.legend(fontsize=7, ncol=2)
        out.append(save(fig, folder / f"policies_{_slug(log)}.png"))
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def family_table(df: pd.DataFrame) -> pd.DataFrame:
    """``family_best`` as display cells: per log and capacity, streak's and each family's best
    online policy's hit rate (share of MIN)."""
    def cell(rate, share):
        if rate != rate:
            return ""
        return f"{rate:.3f}" + (f" ({share:.0%})" if share == share else "")

    best = family_best(df)
    rows = []
    for r in best.to_dict("records"):
        row = {"log": r["log"], "capacity": f"{r['capacity_kxl']:g} kL"}
        for label, title in (("streak", "streak"), ("best_dsa_llc", "best dsa-llc policy"),
                             ("best_zoo", "best online libCacheSim")):
            rate = r.get(f"{label}_hit_rate", float("nan"))
            name = r.get(f"{label}_policy")
            row[title] = (f"{name} " if isinstance(name, str) else "") + cell(rate, r.get(f"{label}_share_of_min", float("nan")))
        rows.append(row)
    return pd.DataFrame(rows)


def policy_markdown(df: pd.DataFrame, plots: list[str]) -> str:
    lines = ["# Reservation policies below one decode step's footprint", "",
             "Token hit rate of a fully associative token cache at fractions of k x layers x requests "
             "tokens (share of MIN's hits in brackets); the project's policies, then libCacheSim's "
             "(`lcs:`). A blank cell: the algorithm failed at that capacity (listed below the table).", ""]
    for log, g in df.groupby("log", sort=False):
        wide = g.pivot_table(index="policy", columns="capacity_kxl", values="hit_rate", sort=False, dropna=False)
        share = g.pivot_table(index="policy", columns="capacity_kxl", values="share_of_min", sort=False,
                              dropna=False) if "share_of_min" in g else None
        cells = wide.copy().astype(object)
        for c in wide.columns:
            cells[c] = [("" if h != h else f"{h:.3f}") + (f" ({s:.0%})" if share is not None and s == s else "")
                        for h, s in zip(wide[c], share[c] if share is not None else [float("nan")] * len(wide))]
        cells.columns = [f"{c:g} kL" for c in wide.columns]
        cells.insert(0, "family", g.groupby("policy", sort=False).family.first().reindex(cells.index))
        lines += [f"## {log}", "", markdown_table(cells.reset_index()), ""]
        lines += [f"- {msg}" for msg in g.failure[g.failure != ""]] + [""] if (g.failure != "").any() else []
    lines += ["## The families side by side", "", markdown_table(family_table(df)), ""]
    lines += streak_vs_zoo(df) + [""]
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"
