"""The report's section on the indexer levers (``trace_gen.levers``): per backbone, the whole-step
speed-up of every lever setting (index share, index reuse, indexer key bytes) against the recall it
loses, with the Pareto front and the best setting within a 2 % loss, and one table of every setting
at every LLC size.

A setting's speed-up is over its configuration's run without a lever (same log point, geometry,
batch, LLC and timing; no share, no reuse, the geometry's own key bytes). Its loss is

- **recall lost** (measured), ``1 - recall_kept``: the attention mass the used selections carry
  over what the layers' own would, from a log decoded with the lever (``[decode]`` levers). A
  stream lever applied to a no-lever log takes it from the log decoded with the same share and
  reuse at the same backbone, context and k, when the sweep has one;
- otherwise **selection lost**, ``1 - selection_kept``: the share of the layers' own top-k that
  the selection they attend with misses. A log holds no attention mass of the positions a layer
  did not select, so the recall of a stream-applied lever is not measured; selection lost
  overstates it (the positions two selections share carry most of the mass).

Key bytes change neither (the selections are the log's: what FP4 keys do to the indexer's choice is
not measured here).

A lever decoded into the log (``lever_origin`` log) and the same lever applied to the stream of a
log decoded without one (``stream``) are different settings: on a geometry deeper than the
backbone the first scans on every geometry layer that replays an anchor of the backbone, the second
on every N-th geometry layer, so their labels and table rows say which (``decoded`` / ``on the
stream``).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.settings import SETTINGS, column_name
from harness.core.units import format_size
from harness.study.report.registry import ReportContext, section
from harness.study.report.render import Doc

LOSS_BUDGET = 0.02  # the recall a setting may lose and still count as free
# the levers' parameter columns (harness.core.settings): [decode] and [stream]
LEVER_COLUMNS = ("index_share", "index_reuse", "index_layers", "stream_index_share", "stream_index_reuse",
                 "index_bytes")
DECODE_COLUMNS = tuple(c for c in (column_name("decode", k) for k in SETTINGS["decode"]) if c not in LEVER_COLUMNS)
PANEL = ["prompt_tokens", "topk", "batch_requests"]
MEASURED, SELECTION, NONE = "recall lost (measured)", "selection lost (recall not measured)", "none (no lever)"
APPLIED = {"none": "-", "log": "decoded", "stream": "on the stream"}


def _own_key_bytes(geometry: str) -> int | None:
    from trace_gen.geometry import PRESETS

    return PRESETS[geometry].index_bytes if geometry in PRESETS else None


def lever_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The finished built-in runs that record their levers, each with ``speedup`` over its
    configuration's run without a lever, ``loss`` and its ``measure`` (see the module docstring)
    and a ``setting`` label."""
    from harness.study.collect import PARAMETERS

    if "lever_origin" not in df:
        return pd.DataFrame()
    ok = df[(df._status == "ok") & (df.backend == "builtin") & df.lever_origin.notna() & df.step_time_cycles.notna()]
    if ok.empty:
        return pd.DataFrame()
    key = [c for c in ok.columns if (c in PARAMETERS or c.startswith("timing_")) and c not in LEVER_COLUMNS]
    own = ok.geometry.map(_own_key_bytes)
    plain = (ok.lever_origin == "none") & (ok.index_bytes.isna() | (ok.index_bytes == own))
    base = ok[plain][key + ["step_time_cycles"]].drop_duplicates(key)
    runs = ok.merge(base, on=key, suffixes=("", "_baseline"))
    base_attention = ok[plain][key + ["attention_time_cycles"]].drop_duplicates(key)
    runs = runs.merge(base_attention, on=key, how="left", suffixes=("", "_baseline"))
    runs = runs.assign(speedup=runs.step_time_cycles_baseline / runs.step_time_cycles,
                       attention_speedup=runs.attention_time_cycles_baseline / runs.attention_time_cycles)
    point = [c for c in DECODE_COLUMNS if c in runs]
    decoded = runs[(runs.lever_origin == "log") & runs.recall_kept.notna()]
    recall = decoded.groupby(point + ["lever_share", "lever_reuse"], dropna=False).recall_kept.mean().rename("measured")
    runs = runs.join(recall, on=point + ["lever_share", "lever_reuse"])
    none = runs.lever_origin == "none"
    runs["loss"] = np.where(none, 0.0, np.where(runs.measured.notna(), 1 - runs.measured, 1 - runs.selection_kept))
    runs["measure"] = np.where(none, NONE, np.where(runs.measured.notna(), MEASURED, SELECTION))
    runs["setting"] = [f"share {int(s)}, reuse {int(r)}, {int(b)} B" + (", decoded" if o == "log" else "")
                       for s, r, b, o in zip(runs.lever_share, runs.lever_reuse, runs.index_key_bytes,
                                             runs.lever_origin)]
    return runs.drop(columns=["measured"])


def pareto(points: pd.DataFrame) -> pd.DataFrame:
    """The settings no other beats on both speed-up and loss (sorted by loss)."""
    front, best = [], -np.inf
    for i, r in points.sort_values(["loss", "speedup"], ascending=[True, False]).iterrows():
        if r.speedup > best:
            front.append(i)
            best = r.speedup
    return points.loc[front]


def scope(runs: pd.DataFrame) -> str:
    """What the runs' step times cover (``step_scope``): the whole decode step or its attention part."""
    scopes = set(runs.step_scope.dropna()) if "step_scope" in runs else set()
    if scopes == {"whole"}:
        return "whole decode step"
    if scopes == {"attention"}:
        return "attention part of the step"
    return "decode step (whole or attention part, as each run's scope)"


def _panel_title(key) -> str:
    context, k, batch = key
    return f"{int(context):,} tokens, k {int(k)}, batch {int(batch)}"


def lever_plot(runs: pd.DataFrame, backbone: str, folder: Path) -> str | None:
    """Speed-up against loss, one panel per context, k and batch, one colour per LLC size, one
    marker per key size (filled: measured recall, hollow: selection), the Pareto front dashed."""
    from harness.core.plotting import plt, save

    panels = list(runs.groupby(PANEL, sort=True))
    if not panels:
        return None
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.7 * rows + 0.8), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    sizes = sorted(runs.llc_bytes.unique())
    markers = dict(zip(sorted(runs.index_key_bytes.unique(), reverse=True), itertools.cycle("o^sDv")))
    for ax, (key, g) in zip(axes.flat, panels):
        for i, size in enumerate(sizes):
            at = g[g.llc_bytes == size]
            for (nbytes, measure), p in at.groupby(["index_key_bytes", "measure"]):
                filled = measure != SELECTION
                ax.scatter(p.loss * 100, p.speedup, s=22, marker=markers[nbytes], edgecolors=f"C{i}",
                           facecolors=f"C{i}" if filled else "none",
                           label=f"{format_size(int(size))}, {int(nbytes)} B" + ("" if filled else ", selection"))
            front = pareto(at)
            ax.plot(front.loss * 100, front.speedup, ls="--", lw=0.8, color=f"C{i}")
        ax.axvline(LOSS_BUDGET * 100, color="grey", lw=0.6, ls=":")
        ax.axhline(1.0, color="black", lw=0.6)
        ax.set(title=_panel_title(key), xlabel=_loss_label(g), ylabel=f"{scope(runs)} speed-up")
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(6, len(handles)), fontsize=7,
               frameon=False)
    fig.suptitle(f"{backbone}: indexer levers, {scope(runs)} against what they lose (dashed: Pareto front)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    return save(fig, folder / f"levers_{backbone}.png", tight=False)


def _loss_label(runs: pd.DataFrame) -> str:
    measures = set(runs.measure[runs.lever_origin != "none"]) or {MEASURED}
    if measures == {MEASURED}:
        return "recall lost, % (measured: decodes with the lever)"
    if measures == {SELECTION}:
        return "selection lost, % (1 - |S_used ∩ S_own| / |S_own|; recall not measured)"
    return "% lost: recall (filled, measured) or selection (hollow)"


def best_within(runs: pd.DataFrame, budget: float = LOSS_BUDGET) -> pd.DataFrame:
    """Per context, k, batch and LLC size, the fastest setting that loses at most ``budget``."""
    within = runs[runs.loss <= budget + 1e-12]
    if within.empty:
        return within
    return within.loc[within.groupby(PANEL + ["llc_bytes"]).speedup.idxmax()].sort_values(PANEL + ["llc_bytes"])


def sentences(runs: pd.DataFrame, backbone: str) -> list[str]:
    """Per context: the best setting within the loss budget (its fastest point, and its range over
    the context's other k, batch and LLC points) and the fastest setting of all with its loss."""
    out = []
    for context, g in runs.groupby("prompt_tokens", sort=True):
        best = best_within(g)
        if best.empty:
            continue
        top = best.loc[best.speedup.idxmax()]
        same = g[g.setting == top.setting]
        fastest = g.loc[g.speedup.idxmax()]
        out.append(f"**{backbone}, {int(context):,}-token context**: the best setting within {LOSS_BUDGET:.0%} "
                   f"loss is {top.setting} ({_lost(top)}): {top.speedup:.2f}x the {scope(g)} at k "
                   f"{int(top.topk)}, batch {int(top.batch_requests)}, {format_size(int(top.llc_bytes))} LLC "
                   f"({same.speedup.min():.2f}-{same.speedup.max():.2f}x over the {len(same)} k, batch and LLC "
                   f"points of this context). The fastest setting, {fastest.setting}, gives {fastest.speedup:.2f}x "
                   f"and loses {_lost(fastest)}.")
    return out


def _lost(r) -> str:
    if r.measure == NONE:
        return "nothing: no share, no reuse"
    what = "recall, measured" if r.measure == MEASURED else "of the selection; recall not measured"
    return f"{r.loss:.1%} {what}"


def lever_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every setting at every point, the LLC sizes side by side: scan share, loss, the whole
    step's speed-up and the attention part's."""
    key = ["backbone", *PANEL, "lever_share", "lever_reuse", "index_key_bytes", "lever_origin"]
    parts = []
    for column, name in (("speedup", "speed-up"), ("attention_speedup", "attention part")):
        wide = runs.pivot_table(index=key, columns="llc_bytes", values=column, aggfunc="mean")
        wide.columns = [f"{name}, {format_size(int(c))} LLC" for c in wide.columns]
        parts.append(wide)
    first = runs.groupby(key)[["scan_share", "loss", "measure"]].first()
    t = first.join(parts).reset_index().assign(lever_origin=lambda t: t.lever_origin.map(APPLIED))
    return t.rename(columns={"lever_origin": "applied", "prompt_tokens": "context", "batch_requests": "batch", "lever_share": "share",
                             "lever_reuse": "reuse", "index_key_bytes": "key bytes", "scan_share": "scan share",
                             "loss": "lost"})


@section("Indexer levers: fewer indexer bytes against recall", order=38)
def indexer_levers(ctx: ReportContext, doc: Doc) -> None:
    runs = lever_runs(ctx.results)
    if runs.empty or (runs.lever_origin == "none").all() and runs.index_key_bytes.nunique() < 2:
        return
    geometries = ", ".join(sorted(runs.geometry.unique()))
    doc.p(f"Share N (IndexCache: every N-th layer of each kind runs the indexer; the others read no indexer keys "
          f"and attend with their anchor's selection), reuse S (GVR: a scan every S-th step, the steps between "
          f"attend with the last scan's selection widened by the tokens decoded since, and still write their "
          f"key) and the indexer key's bytes (132 B: FP8 + scale; 68 B: FP4 + scale), on the {geometries} "
          f"geometry, timed on the {scope(runs)}{' (weights included)' if scope(runs) == 'whole decode step' else ''}; "
          f"the table gives the attention part's speed-up too. Speed-up: over the same configuration "
          f"without a lever. Loss: recall lost where a decode with the lever measured it (the attention mass of "
          f"the selection used over the layer's own selection), else selection lost (the share of the layer's "
          f"own top-k the lever's selection misses; a log holds no attention mass of unselected positions, so "
          f"a lever applied to the stream alone has no measured recall, and selection lost overstates it). Key "
          f"bytes change neither.")
    table = lever_table(runs)
    table.to_csv(ctx.folder / "indexer_levers.csv", index=False)
    for backbone, g in runs.groupby("backbone", sort=True):
        for line in sentences(g, backbone):
            doc.p(line)
        doc.image(lever_plot(g, backbone, ctx.folder))
        front = pd.concat([pareto(p) for _, p in g.groupby(PANEL + ["llc_bytes"])])
        doc.p(f"{backbone}, Pareto front (no other setting is both faster and loses less), per context, k, batch "
              f"and LLC: " + "; ".join(
                  f"{_panel_title(k[:3])}, {format_size(int(k[3]))}: " + ", ".join(
                      f"{r.setting} {r.speedup:.2f}x/{r.loss:.1%}" for r in p.itertuples())
                  for k, p in front.groupby(PANEL + ["llc_bytes"])) + ".")
    doc.p(f"Every setting at every point (also in indexer_levers.csv); best within {LOSS_BUDGET:.0%}: "
          f"the fastest setting at each point whose loss is at most {LOSS_BUDGET:.0%}:")
    best = best_within(runs)
    if not best.empty:
        doc.table(best[["backbone", *PANEL, "llc_bytes", "setting", "scan_share", "loss", "measure", "speedup"]]
                  .assign(llc_bytes=best.llc_bytes.map(lambda v: format_size(int(v))))
                  .rename(columns={"prompt_tokens": "context", "batch_requests": "batch", "llc_bytes": "LLC"}))
    doc.table(table)
