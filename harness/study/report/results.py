"""The report's sections on the sweep's results, with their tables and plots.

The first screen gives, per backbone, the best reservation's decode-step speed-up, the traffic
class whose saved misses make it, and how often reservations help and hurt (harness.study.headline),
with the model that produced the step times and its measured error against gem5; then a compact
table (one row per configuration and policy). Below: the detailed tables and the plots. The fully
associative token caches of the reserved capacity (LRU and MIN) are token hit rates of the
selections, not bounds on a set-associative LLC whose shared ways also hold other traffic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.units import format_size
from harness.study.headline import CLASSES, comparisons, identities, kv_runs
from harness.study.report.registry import ReportContext, section
from harness.study.report.render import Doc


def first_screen_table(h: pd.DataFrame, best_only: bool = True) -> pd.DataFrame:
    """The headline as a compact table with readable headers and units, one row per configuration
    (its best policy; ``best_only=False``: every policy's best reservation); the configuration
    columns that take one value in the whole sweep are left out (the text names them)."""
    if h.empty:
        return h
    if best_only:
        from harness.study.headline import configuration_columns

        h = h.loc[h.groupby(configuration_columns(h), dropna=False).speedup.idxmax()]
    t = pd.DataFrame({"backbone": h.backbone, "geometry": h.geometry, "LLC": h.llc_bytes.map(format_size)})
    for col, name in (("prompt_tokens", "context"), ("topk", "k"), ("batch_requests", "batch"),
                      ("timing_platform", "platform")):
        if col in h and h[col].nunique() > 1:
            t[name] = h[col]
    whole = (h.step_scope == "whole") if "step_scope" in h else pd.Series(False, index=h.index)
    t["policy (reserved ways)"] = [f"{p} ({int(r)}/{int(w)})" for p, r, w in zip(h.policy, h.reserve_ways, h.ways)]
    t["step"] = ["whole" if w else "attention only" for w in whole]
    t["baseline step (us)"] = [f"{x:,.1f}" for x in h.baseline_step_time_cycles / h.timing_clock_hz * 1e6]
    t["speed-up"] = [f"{x:.2f}x" for x in h.speedup]
    if "attention_speedup" in h:
        t["attention part: share, speed-up"] = [
            f"{s:.0%}, {a:.2f}x" if w and a == a and s == s else "" for w, s, a in
            zip(whole, h.baseline_attention_share, h.attention_speedup)]
    t["tokens/s per device"] = [f"{x:,.0f}" if w else "" for w, x in zip(whole, h.batch_tokens_per_s)]
    for c, name in CLASSES.items():
        if f"saved_{c}" in h and (h[f"saved_{c}"].abs() >= 0.5).any():
            t[f"{name} misses saved/step (k)"] = [f"{x / 1e3:,.1f}" for x in h[f"saved_{c}"]]
    return t.reset_index(drop=True)


def model_note(df: pd.DataFrame) -> str:
    """Which model produced the step times, and its measured error against gem5 (platforms'
    validation, harness.cache.calibration) when there is one."""
    from harness.cache.calibration import validation_summary

    models = sorted(set(df.step_time_model.dropna())) if "step_time_model" in df else []
    platforms = sorted(set(df.timing_platform.dropna())) if "timing_platform" in df else []
    text = f"Decode-step times from the {', '.join(models) or 'unknown model'} on platform {', '.join(platforms)}."
    for name in platforms:
        v = validation_summary(name)
        text += f" Against gem5's closed-loop decode steps on {name}: " + (_validation_text(v) if v else
                                                                           "not validated (run bench/gem5_steptime.py).")
    return text


def step_note(df: pd.DataFrame) -> str:
    """What a decode step includes in these results."""
    from trace_gen.geometry import PRESETS

    scopes = set(df.step_scope.dropna()) if "step_scope" in df else set()
    parts = []
    if "sampled_sets" in df and (df.sampled_sets > 1).any():
        ok = df[df._status == "ok"] if "_status" in df else df
        sampled = ok[ok.sampled_sets > 1]
        parts.append(f"{len(sampled)} of {len(ok)} runs are set-sampled (1 in {int(sampled.sampled_sets.max())} groups of "
                     "sets simulated, counts scaled to the stream's own: harness.core.sampling); against full "
                     "simulation such runs keep per-class misses and step times within 1 % (median) and 3 % (max) "
                     "(tests/data/set_sampling/errors.csv).")
    if "whole" in scopes:
        deployments = [f"{g} ({PRESETS[g].weights.deployment})" for g in sorted(set(df.geometry.dropna()))
                       if g in PRESETS]
        parts.append("A whole decode step is, per layer, the indexer-key scan and its top-k, then the gather of the "
                     "selected KV, the new token's KV and indexer key, and the layer's share of the weights one device "
                     "reads per step (dense parts, LM head and the routed experts its batch activates), with every "
                     "phase's compute (indexer, attention, projections and MLP or experts), memory and compute "
                     "overlapping as the platform's `overlap` says; tokens/s are per device, for its batch. Weights "
                     "as deployed: " + ("; ".join(deployments) or "the backbones' own, on one device") + ".")
    if "attention" in scopes:
        parts.append("Runs marked attention only leave the weights' traffic out (--no-weights, and every gem5 run): "
                     "their speed-ups are of that part, never of decode, and they have no tokens/s.")
    return " ".join(parts)


def _validation_text(v: dict) -> str:
    in_flight = v.get("in_flight")
    return (f"median |error| {v['median_abs_error']:.1%}, max {v['max_abs_error']:.1%} on {v['configurations']} "
            f"configurations held out from the calibration"
            + (f" (at {' and '.join(map(str, in_flight))} requests in flight)" if in_flight else "")
            + (f"; reserved-way speed-ups within {v['speedup_max_abs_difference']:.1%} of gem5's, "
               f"{v['speedups_other_side']} on the other side of 1.0" if "speedup_max_abs_difference" in v else "")
            + " (bench/gem5_steptime.py).")


# --- plots --------------------------------------------------------------------------------

def _panel_grid(plt, n: int, width: float = 4.6, height: float = 3.6):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.9), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)  # a list: the caller zips over it, then the legend reads it again


def _legend_below(fig, axes) -> None:
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(6, len(handles)),
                   fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.08 + 0.02 * (len(handles) // 6), 1, 1))


def sweep_plots(df: pd.DataFrame, folder: Path) -> list[str]:
    """KV hit rate, LLC misses and decode-step time against reserved ways, one panel per
    backbone and geometry, one line per LLC size and policy."""
    from harness.core.plotting import plt, save

    df = kv_runs(df)
    ok = df[(df._status == "ok") & (df.backend == "builtin")]
    out = []
    panels = list(ok.groupby(["backbone", "geometry"], sort=True))
    if not panels:
        return out
    for metric, ylabel, name in [("kv_hit_rate", "KV line hit rate", "kv_hit_rate"),
                                 ("misses_lines", "LLC misses (lines)", "llc_misses"),
                                 ("step_time_cycles", "decode-step time (cycles)", "step_time")]:
        fig, axes = _panel_grid(plt, len(panels))
        for ax, ((backbone, geometry), g) in zip(axes, panels):
            for (size, policy), p in g.groupby(["llc_bytes", "policy"], sort=True):
                base = g[(g.llc_bytes == size) & (g.reserve_ways == 0)]
                p = pd.concat([base, p[p.reserve_ways > 0]]).sort_values("reserve_ways")
                if len(p) < 2 and policy == "lru" and (p.reserve_ways == 0).all():
                    continue
                ax.plot(p.reserve_ways, p[metric], marker="o", ms=3, label=f"{int(size) >> 20} MiB {policy}")
            ax.set(title=f"{backbone} / {geometry}", xlabel="reserved ways", ylabel=ylabel)
            ax.grid(alpha=0.3)
        _legend_below(fig, axes)
        out.append(save(fig, folder / f"sweep_{name}.png", tight=False))
    return out


def speedup_plot(h: pd.DataFrame, folder: Path) -> str | None:
    """One bar per configuration and policy (the policy's best reservation), labelled with its
    reserved ways."""
    from harness.core.plotting import plt, save

    if h.empty:
        return None
    key = ["backbone", "geometry", "llc_bytes"] + [c for c in ("prompt_tokens", "topk", "requests") if h[c].nunique() > 1]
    groups = list(h.groupby(key, sort=True))
    policies = sorted(set(h.policy))
    width = 0.8 / len(policies)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.35 * len(groups) * len(policies) + 2), 4.4))
    for i, policy in enumerate(policies):
        for j, (_, g) in enumerate(groups):
            row = g[g.policy == policy]
            if row.empty:
                continue
            x, y = j + i * width, float(row.speedup.iloc[0])
            # bars grow up or down from 1.0 (no change), so small gains and losses are visible
            ax.bar(x, y - 1.0, bottom=1.0, width=width, color=f"C{i}", label=policy if j == 0 else None)
            ax.text(x, y, str(int(row.reserve_ways.iloc[0])), ha="center", va="bottom" if y >= 1 else "top",
                    fontsize=6)
    ax.axhline(1.0, color="black", lw=0.8)
    spread = max(abs(h.speedup.max() - 1), abs(h.speedup.min() - 1), 0.02) * 1.25
    ax.set_ylim(1 - spread, 1 + spread)
    labels = ["\n".join([str(k[0]), str(k[1]), f"{int(k[2]) >> 20} MiB"] + [f"{c} {v}" for c, v in zip(key[3:], k[3:])])
              for k, _ in groups]
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, labels, fontsize=7)
    ax.set(ylabel="decode-step speed-up over no reservation",
           title="Best reservation per policy (bar label: reserved ways)")
    ax.legend(fontsize=7, ncol=len(policies))
    return save(fig, folder / "speedup.png")


def scale_plots(c: pd.DataFrame, folder: Path) -> list[str]:
    """Speed-up against context length and against LLC size (one line per policy, the best
    reservation at each point, one panel per backbone and geometry), when the sweep varies them."""
    from harness.core.plotting import plt, save

    out = []
    for x, label, name in (("prompt_tokens", "context length (tokens)", "context"),
                           ("llc_bytes", "LLC size (MiB)", "llc_size")):
        if c.empty or c[x].nunique() < 2:
            continue
        panels = list(c.groupby(["backbone", "geometry"], sort=True))
        fig, axes = _panel_grid(plt, len(panels))
        for ax, ((backbone, geometry), g) in zip(axes, panels):
            best = g.groupby(["policy", x]).speedup.max().reset_index()
            for policy, p in best.groupby("policy"):
                xs = p[x] / (1 << 20) if x == "llc_bytes" else p[x]
                ax.plot(xs, p.speedup, marker="o", ms=3, label=policy)
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set(title=f"{backbone} / {geometry}", xlabel=label, ylabel="best decode-step speed-up", xscale="log")
            ticks = sorted(best[x].unique())
            ax.set_xticks([t / (1 << 20) if x == "llc_bytes" else t for t in ticks],
                          [f"{t >> 20}" if x == "llc_bytes" else f"{round(t / 1024)}k" for t in map(int, ticks)])
            ax.minorticks_off()
            ax.grid(alpha=0.3)
        _legend_below(fig, axes)
        out.append(save(fig, folder / f"speedup_vs_{name}.png", tight=False))
    return out


MAX_CLASS_BARS = 24


def class_misses_plot(df: pd.DataFrame, h: pd.DataFrame, folder: Path) -> str | None:
    """LLC misses per decode step by traffic class: each configuration's baseline beside its
    best reservation (all policies)."""
    from harness.core.plotting import plt, save
    from harness.study.headline import configuration_columns

    if h.empty:
        return None
    key = configuration_columns(h)
    best = h.loc[h.groupby(key, dropna=False).speedup.idxmax()]
    shown = f"all {len(best)} configurations"
    if len(best) > MAX_CLASS_BARS:  # a readable plot: where the reservation changes the step time most
        best = best.loc[(best.speedup - 1).abs().nlargest(MAX_CLASS_BARS).index].sort_values(key)
        shown = f"the {MAX_CLASS_BARS} configurations (of {len(h.groupby(key, dropna=False))}) whose best reservation changes the step time most"
    df = kv_runs(df)
    base = df[(df._status == "ok") & (df.backend == "builtin") & (df.reserve_ways == 0)]
    base = best[key].merge(base, on=key)
    classes = [c for c in CLASSES if f"{c}_misses_lines" in df]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(best) + 2), 4.2))
    for side, (frame, offset) in enumerate(((base, -0.2), (best, 0.2))):
        bottom = np.zeros(len(frame))
        for i, c in enumerate(classes):
            v = (frame[f"{c}_misses_lines"].fillna(0) / frame.steps).to_numpy()
            ax.bar(np.arange(len(frame)) + offset, v, width=0.38, bottom=bottom, color=f"C{i}",
                   alpha=1.0 if side else 0.45, label=f"{CLASSES[c]}" if side else None)
            bottom += v
    labels = [f"{r.backbone}\n{r.geometry}\n{int(r.llc_bytes) >> 20} MiB"
              + (f"\nctx {round(int(r.prompt_tokens) / 1024)}k k {int(r.topk)}" if "prompt_tokens" in best else "")
              + (f" B{int(r.requests)}" if "requests" in best and best.requests.nunique() > 1 else "")
              + f"\n{r.policy} {int(r.reserve_ways)}w {r.speedup:.2f}x"
              for r in best.itertuples()]
    ax.set_xticks(np.arange(len(best)), labels, fontsize=7)
    ax.set(ylabel="LLC misses per decode step (lines)",
           title=f"Misses by traffic class, {shown}: baseline (left, pale) and the best reservation (right)")
    ax.legend(fontsize=7)
    return save(fig, folder / "misses_by_class.png")


# --- the sections ---------------------------------------------------------------------------

def llc_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The runs of the LLC models (builtin, gem5): these sections' subject (a sweep may also hold,
    or only hold, host-tier runs, which the Host tier section reports)."""
    return df[df.backend != "tier"]


@section("Does reserving LLC ways for KV tokens speed up DSA decode?", order=10, level=1)
def first_screen(ctx: ReportContext, doc: Doc) -> None:
    if llc_runs(ctx.results).empty:
        return
    for line in ctx.verdict:
        doc.p(line)
    doc.p(model_note(ctx.results) + " A reservation keeps ways for KV lines only (the rest of the traffic gets the "
          "other ways); speed-ups are of the decode-step time against the same configuration without one.")
    doc.p(step_note(ctx.results))
    for line in identities(ctx.results):
        doc.p(line)
    doc.table(first_screen_table(ctx.headline))
    doc.image(speedup_plot(ctx.headline, ctx.folder))


@section("Every policy's best reservation", order=20)
def best_reservations(ctx: ReportContext, doc: Doc) -> None:
    if llc_runs(ctx.results).empty:
        return
    doc.table(first_screen_table(ctx.headline, best_only=False))
    doc.image(class_misses_plot(ctx.results, ctx.headline, ctx.folder))
    doc.images(scale_plots(comparisons(ctx.results), ctx.folder))


@section("KV hit rate, misses and step time against reserved ways", order=30)
def against_reserved_ways(ctx: ReportContext, doc: Doc) -> None:
    doc.images(sweep_plots(ctx.results, ctx.folder))


@section("All runs", order=60)
def all_runs(ctx: ReportContext, doc: Doc) -> None:
    df = llc_runs(ctx.results)
    if not df.empty:
        doc.p("fa_lru / fa_min token hit rate: a fully associative cache of whole tokens with the reserved capacity, "
              "under LRU / Belady's MIN with bypass, fed the run's KV token reads and writes. fa_min bounds the run's "
              "KV full-token hit rate (kv_token_full_hit_rate) under any policy of the reserved ways; fa_lru bounds "
              "nothing. Neither bounds the step time: the shared ways' traffic changes with the reservation too.")
        cols = ["backbone", "geometry", "prompt_tokens", "topk", "requests", "llc_bytes", "ways", "reserve_ways",
                "policy", "kv_hit_rate", "index_hit_rate", "misses_lines", "step_time_cycles", "batch_tokens_per_s",
                "kv_token_full_hit_rate", "fa_lru_token_hit_rate", "min_token_hit_rate", "_status"]
        doc.table(df[[c for c in cols if c in df]].sort_values(cols[:9])
                  .rename(columns={"min_token_hit_rate": "fa_min_token_hit_rate"}))
    if ctx.unreadable:
        doc.p("Unreadable run folders (skipped): " + "; ".join(ctx.unreadable))
