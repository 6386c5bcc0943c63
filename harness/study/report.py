"""The study report: does reserving LLC ways for KV tokens (token-LRU) help DSA decode, by how
much, on which backbone? Markdown and a self-contained HTML page with PNG plots.

Speed-ups are of the memory stall cycles of the first-order timing model (harness.cache.timing):
``stall(baseline) / stall(config)``, i.e. the decode speed-up when decode is bound by memory.
The bounds (a fully associative token cache of the reserved capacity under LRU, and MIN) are
turned into stall cycles by replacing the run's KV line hits with the bound's token hits x lines
per token, on per-step averages (an estimate; the runs themselves use exact per-step counts).
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness.cache.timing import TimingConfig, stall_cycles
from harness.core.errors import UserError
from harness.core.mdtable import markdown_table

GROUP = ["backbone", "indexer", "topk", "geometry", "llc_bytes", "ways"]


def _bound_stall(row, hit_rate_col: str) -> float:
    """Stall cycles per step if the KV token hits were the bound's (see the module docstring)."""
    rate = row[hit_rate_col]
    if rate is None or (isinstance(rate, float) and math.isnan(rate)) or not row["steps"]:
        return math.nan
    lines = row["lines_per_token"] or 0
    kv_hits = row["kv_accesses_lines"] - row["kv_misses_lines"]
    bound_hits = rate * row["kv_token_reads"] * lines
    delta = kv_hits - bound_hits
    t = TimingConfig(int(row["timing_llc_hit_cycles"]), int(row["timing_dram_latency_cycles"]),
                     int(row["timing_max_outstanding"]), float(row["timing_dram_bytes_per_cycle"]))
    s = row["steps"]
    return float(stall_cycles(np.array([(row["hits_lines"] - delta) / s]), np.array([(row["misses_lines"] + delta) / s]),
                              np.array([row["writebacks_lines"] / s]), t)[0])


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """Per backbone, geometry and LLC size: the baseline, the best reservation under each policy,
    and the bounds at the best token-LRU reservation, as memory-stall speed-ups."""
    ok = df[(df._status == "ok") & (df.backend == "builtin")]
    if ok.empty:
        return pd.DataFrame()
    rows = []
    for key, g in ok.groupby(GROUP, sort=True):
        base = g[g.reserve_ways == 0]
        if base.empty:
            continue
        b = base.iloc[0]
        row = dict(zip(GROUP, key))
        row["llc"] = f"{int(b.llc_bytes) // (1 << 20)} MiB" if b.llc_bytes % (1 << 20) == 0 else f"{int(b.llc_bytes)} B"
        row["baseline_stall_cycles_per_step"] = b.stall_cycles_per_step
        row["baseline_kv_hit_rate"] = b.kv_hit_rate
        row["baseline_index_hit_rate"] = b.index_hit_rate
        for policy in sorted(set(g.policy)):
            p = g[(g.reserve_ways > 0) & (g.policy == policy)]
            if p.empty:  # e.g. lru, present only as the baseline
                continue
            best = p.loc[p.stall_cycles_per_step.idxmin()]
            row[f"{policy}_best_reserve_ways"] = int(best.reserve_ways)
            row[f"{policy}_kv_hit_rate"] = best.kv_hit_rate
            row[f"{policy}_index_hit_rate"] = best.index_hit_rate
            row[f"{policy}_speedup"] = b.stall_cycles_per_step / best.stall_cycles_per_step
        tl = g[(g.reserve_ways > 0) & (g.policy == "token-lru")]
        if not tl.empty:
            best = tl.loc[tl.stall_cycles_per_step.idxmin()].to_dict()
            base_est = _bound_stall(best, "kv_token_full_hit_rate")
            for name, col in (("fa_token_lru_bound", "fa_lru_token_hit_rate"), ("min_bound", "min_token_hit_rate")):
                est = _bound_stall(best, col)
                # relative to the run's own estimate, so that the averaging cancels out
                row[f"{name}_speedup"] = (b.stall_cycles_per_step / best["stall_cycles_per_step"]) * (base_est / est) \
                    if est and est == est and base_est == base_est else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def verdict(h: pd.DataFrame) -> list[str]:
    """Plain sentences: the answer on the first screen."""
    if h.empty or "token-lru_speedup" not in h:
        return ["No configuration has both a baseline and a token-LRU reservation: nothing to compare."]
    lines = []
    for backbone, g in h.groupby("backbone", sort=False):
        s = g["token-lru_speedup"]
        best = g.loc[s.idxmax()]
        helped = int((s > 1.01).sum())
        text = (f"**{backbone}**: a token-LRU reservation cuts memory stalls in {helped} of {len(g)} "
                f"configurations; best {s.max():.2f}x ({best.geometry}, {best.llc}, "
                f"{int(best['token-lru_best_reserve_ways'])} of {int(best.ways)} ways reserved; line hit rate "
                f"of KV {best.baseline_kv_hit_rate:.2f} -> {best['token-lru_kv_hit_rate']:.2f}, of the indexer "
                f"keys {best.baseline_index_hit_rate:.2f} -> {best['token-lru_index_hit_rate']:.2f}); "
                f"median {s.median():.2f}x.")
        others = [c for c in g.columns if c.endswith("_speedup") and not c.startswith(("token-lru", "fa_", "min_"))]
        if others:
            text += " Other policies in the reserved ways: " + ", ".join(
                f"{c[:-len('_speedup')]} best {g[c].max():.2f}x" for c in others) + "."
        if "min_bound_speedup" in g and g["min_bound_speedup"].notna().any():
            text += (f" Bounds at the same reserved capacity: fully associative token-LRU "
                     f"{g['fa_token_lru_bound_speedup'].max():.2f}x, MIN {g['min_bound_speedup'].max():.2f}x.")
        lines.append(text)
    return lines


# --- plots --------------------------------------------------------------------------------

def sweep_plots(df: pd.DataFrame, folder: Path) -> list[str]:
    from harness.core.plotting import plt, save

    ok = df[(df._status == "ok") & (df.backend == "builtin")]
    out = []
    panels = list(ok.groupby(["backbone", "geometry"], sort=True))
    if not panels:
        return out
    for metric, ylabel, name in [("kv_hit_rate", "KV line hit rate", "kv_hit_rate"),
                                 ("misses_lines", "LLC misses (lines)", "llc_misses"),
                                 ("stall_cycles_per_step", "stall cycles per step", "stall_cycles")]:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
        for ax, ((backbone, geometry), g) in zip(axes[0], panels):
            for (size, policy), p in g.groupby(["llc_bytes", "policy"], sort=True):
                base = g[(g.llc_bytes == size) & (g.reserve_ways == 0)]
                p = pd.concat([base, p[p.reserve_ways > 0]]).sort_values("reserve_ways")
                if len(p) < 2 and policy == "lru" and (p.reserve_ways == 0).all():
                    continue
                ax.plot(p.reserve_ways, p[metric], marker="o", ms=3,
                        label=f"{int(size) >> 20} MiB {policy}")
            ax.set(title=f"{backbone} / {geometry}", xlabel="reserved ways", ylabel=ylabel)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        out.append(save(fig, folder / f"sweep_{name}.png"))
    return out


def speedup_plot(h: pd.DataFrame, folder: Path) -> str | None:
    from harness.core.plotting import plt, save

    cols = [c for c in ("lru_speedup", "token-lru_speedup", "fa_token_lru_bound_speedup", "min_bound_speedup") if c in h]
    if h.empty or not cols:
        return None
    labels = [f"{r.backbone}\n{r.geometry}\n{r.llc}" for r in h.itertuples()]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(h)), 4))
    width = 0.8 / len(cols)
    for i, c in enumerate(cols):
        ax.bar(np.arange(len(h)) + i * width, h[c].fillna(0), width=width,
               label=c.replace("_speedup", "").replace("_", " "))
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(h)) + 0.4 - width / 2, labels, fontsize=7)
    ax.set(ylabel="memory-stall speed-up over no reservation", title="Reservation vs the unpartitioned LLC")
    ax.legend(fontsize=7)
    return save(fig, folder / "speedup.png")


# --- the document -------------------------------------------------------------------------

class Doc:
    """Blocks rendered both as Markdown and as a self-contained HTML page."""

    def __init__(self):
        self.blocks: list[tuple[str, object]] = []

    def h(self, level, text):
        self.blocks.append(("h", (level, text)))

    def p(self, text):
        self.blocks.append(("p", text))

    def table(self, df: pd.DataFrame):
        self.blocks.append(("table", df))

    def image(self, path):
        if path:
            self.blocks.append(("image", Path(path)))

    def markdown(self) -> str:
        out = []
        for kind, v in self.blocks:
            if kind == "h":
                out.append("#" * v[0] + " " + v[1])
            elif kind == "p":
                out.append(v)
            elif kind == "table":
                out.append(markdown_table(v))
            else:
                out.append(f"![{v.stem}]({v.name})")
        return "\n\n".join(out) + "\n"

    def html(self) -> str:
        import re

        body = []
        for kind, v in self.blocks:
            if kind == "h":
                body.append(f"<h{v[0]}>{html.escape(v[1])}</h{v[0]}>")
            elif kind == "p":
                text = html.escape(v)
                text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
                body.append(f"<p>{text}</p>")
            elif kind == "table":
                body.append(v.to_html(index=False, float_format=lambda x: f"{x:.3f}", na_rep="", border=0))
            else:
                data = base64.b64encode(v.read_bytes()).decode()
                body.append(f'<img alt="{v.stem}" src="data:image/png;base64,{data}">')
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
                 "table{border-collapse:collapse;font-size:12px;margin:1em 0}"
                 "td,th{border-bottom:1px solid #ddd;padding:3px 6px;text-align:right}img{max-width:100%}")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>dsa-llc report</title>"
                f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def build_report(sweep_dir: str | Path, out: str | Path, policies: bool = True, locality: bool = True,
                 overwrite: bool = False) -> dict:
    """Collect the sweep and write report.md, report.html, the plots and the tables into ``out``
    (an earlier report there is replaced only with ``overwrite``: ``harness.core.outputs``)."""
    from harness.analysis.locality import analyze_log, locality_tables
    from harness.analysis.plots import locality_plots
    from harness.core.outputs import check_output_folder, mark_folder
    from harness.core.units import atomic_path
    from harness.study.collect import collect
    from harness.study.policy_study import policy_plots, policy_sweep

    check = lambda: check_output_folder(out, "report", overwrite)  # noqa: E731
    check()
    sweep_dir = Path(sweep_dir)
    df, bad = collect(sweep_dir)
    if df.empty:
        raise UserError(f"{sweep_dir} has no runs to report")
    h = headline(df)
    logs = sorted(p for p in (sweep_dir / "logs").iterdir() if (p / "metadata.json").exists()) \
        if (sweep_dir / "logs").is_dir() else []
    doc = Doc()
    with atomic_path(Path(out), check) as tmp:
        tmp.mkdir()
        mark_folder(tmp, "report")
        doc.h(1, "Does reserving LLC ways for KV tokens help DSA decode?")
        for line in verdict(h):
            doc.p(line)
        doc.p("Speed-ups are of memory stall cycles per decode step (first-order timing model); "
              "reservation = ways kept for KV lines, evicted by token recency (token-lru) or per line (lru).")
        if not h.empty:
            cols = ["backbone", "geometry", "llc", "baseline_kv_hit_rate", "baseline_index_hit_rate"] + \
                   [c for c in h.columns if c.endswith("_speedup") or c.endswith("_best_reserve_ways")]
            doc.table(h[cols])
        doc.image(speedup_plot(h, tmp))
        doc.h(2, "KV hit rate, misses and stalls against reserved ways")
        for p in sweep_plots(df, tmp):
            doc.image(p)
        if locality and logs:
            tables = locality_tables([analyze_log(log) for log in logs], logs)
            doc.h(2, "Locality of the selections")
            cols = ["log", "overlap_mean", "jaccard_mean", "runs_mean", "page_utilisation_64",
                    "reuse_distance_mean", "working_set_16", "lru_hit_rate_kxl_0.25", "lru_hit_rate_kxl_1"]
            doc.table(tables["summary"][[c for c in cols if c in tables["summary"]]])
            for p in locality_plots(tables, tmp):
                doc.image(p)
            for name, t in tables.items():
                t.to_parquet(tmp / f"locality_{name}.parquet", index=False)
        if policies and logs:
            pol = pd.concat([policy_sweep(log) for log in logs], ignore_index=True)
            pol.to_parquet(tmp / "policies.parquet", index=False)
            doc.h(2, "Reservation policies below one decode step's footprint")
            doc.p("Token hit rate of a fully associative reservation of a fraction of k x layers x requests "
                  "tokens, every policy beside token-LRU and MIN (share of MIN's hits).")
            quarter = pol[pol.capacity_kxl == 0.25].pivot_table(index="policy", columns="log", values="share_of_min",
                                                               sort=False)
            doc.table(quarter.reset_index().rename(columns=lambda c: f"share of MIN at kL/4: {c}" if c != "policy" else c))
            for p in policy_plots(pol, tmp):
                doc.image(p)
        doc.h(2, "All runs")
        cols = ["backbone", "geometry", "llc_bytes", "ways", "reserve_ways", "policy", "kv_hit_rate",
                "misses_lines", "stall_cycles_per_step", "fa_lru_token_hit_rate", "min_token_hit_rate", "_status"]
        doc.table(df[[c for c in cols if c in df]].sort_values(cols[:6]))
        if bad:
            doc.p("Unreadable run folders (skipped): " + "; ".join(bad))
        df.to_parquet(tmp / "results.parquet", index=False)
        h.to_csv(tmp / "headline.csv", index=False)
        (tmp / "report.md").write_text(doc.markdown())
        (tmp / "report.html").write_text(doc.html())
    return {"results": df, "headline": h, "unreadable": bad}
