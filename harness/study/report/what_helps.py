"""The report's "What helps" section: per backbone and scale point, the best class-aware LLC setting
beside the best KV-only reservation and the unmanaged LLC.

A **scale point** is a run's configuration without its LLC knobs (backbone log, geometry, context,
k, batch, LLC size and ways, platform). Its runs fall in families (``harness.cache.knobstate``):
the unmanaged LLC, KV-only reservations (the seed's proposal), and class-aware settings (any
other knob), split by whether the platform's documented cache controls make them (``allowed``)
or not (what-if). The lever search (``harness.study.search``) makes the class-aware runs; a
sweep's grid may hold any of them too. Per point the section gives each family's best run by
whole-step time, its speed-up of the whole decode step and of its attention part (the KV and
indexer traffic and compute alone: ``attention_time_cycles``), the misses it removes per decode
step by class, its hardware state per line, and the index-key hits per step with and without a
persisting hint; and says plainly where nothing helps (no setting gains ``HELP``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.core.units import format_size
from harness.study.headline import CLASSES, HELP, configuration_columns
from harness.study.report.registry import ReportContext, section
from harness.study.report.render import Doc
from harness.study.search import KNOBS, read_searches

FAMILIES = ("KV-only", "class-aware", "what-if")  # the families compared with the unmanaged LLC


def row_config(row):
    """The LLC config of a collected run (its knob columns; runs from before the knobs have none)."""
    from harness.cache.llc import LLCConfig

    def get(col, default):
        v = row.get(col, default)
        return default if v is None or (isinstance(v, float) and math.isnan(v)) else v

    aside = get("set_aside", None)
    return LLCConfig(int(row.llc_bytes), int(row.ways), int(get("reserve_ways", 0)), str(get("policy", "lru")),
                     bool(get("whole_token_eviction", True)),
                     reserve_index=int(get("reserve_index", 0)), reserve_weights=int(get("reserve_weights", 0)),
                     hint_kv=str(get("hint_kv", "normal")), hint_index=str(get("hint_index", "normal")),
                     hint_weights=str(get("hint_weights", "normal")),
                     set_aside=None if aside is None else int(aside), what_if=bool(get("what_if", False)))


def classify(df: pd.DataFrame) -> pd.DataFrame:
    """The finished built-in runs with their family (unmanaged, KV-only, class-aware, what-if),
    the setting in words, its state per line and whether the platform allows it."""
    from harness.cache.knobstate import allowed, describe, family, state
    from harness.cache.platforms import get_platform

    ok = df[(df._status == "ok") & (df.backend == "builtin")]
    if ok.empty or "step_time_cycles" not in ok:  # e.g. a sweep of host-tier runs only
        return ok.iloc[0:0]
    ok = ok[ok.step_time_cycles.notna()].copy()
    if ok.empty:
        return ok
    fams, words, bits, allow, state_text, beyond_text = [], [], [], [], [], []
    for _, row in ok.iterrows():
        cfg = row_config(row)
        platform = get_platform(row.timing_platform)
        ok_here = allowed(cfg, platform)
        f = family(cfg)
        fams.append({"unmanaged": "unmanaged", "kv-only": "KV-only"}.get(f) or ("class-aware" if ok_here else "what-if"))
        words.append(describe(cfg))
        beyond = row.get("beyond_platform")
        if isinstance(beyond, str):  # the platform's controls are cited once, in the text, not per row
            beyond_text.append(beyond.replace(f" ({platform.knobs.source})", ""))
        else:
            beyond_text.append(beyond)
        s = state(cfg)
        bits.append(s.per_line())
        state_text.append(s.text)
        allow.append(ok_here)
    return ok.assign(family=fams, setting=words, state_per_line=bits, state=state_text, allowed=allow,
                     beyond=beyond_text)


def point_columns(df: pd.DataFrame) -> list[str]:
    """The columns that name a scale point: a configuration's, without any LLC knob."""
    return [c for c in configuration_columns(df) if c not in KNOBS]


def best_per_point(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per scale point: the unmanaged run's step times and, per family, the best run's
    setting, whole-step and attention-only speed-ups, misses removed per step by class, state
    and (for the best class-aware) whether the platform allows it; the index-key hits per step
    of the unmanaged LLC and of the best run with a persisting hint on the indexer keys (of those
    the platform allows, when any)."""
    key = point_columns(runs)
    rows = []
    for values, g in runs.groupby(key, dropna=False, sort=True):
        base = g[g.family == "unmanaged"]
        if base.empty:
            continue
        b = base.iloc[0]
        out = dict(zip(key, values if isinstance(values, tuple) else (values,)))
        out.update(base_step_us=b.step_time_cycles / b.timing_clock_hz * 1e6, base_attention_share=b.attention_share,
                   base_index_hits=_per_step(b, "index_hits_lines"))
        for fam in FAMILIES:
            sub = g[g.family == fam]
            if sub.empty:
                continue
            best = sub.loc[sub.step_time_cycles.idxmin()]
            out[f"{fam}_setting"] = best.setting
            out[f"{fam}_speedup"] = b.step_time_cycles / best.step_time_cycles
            att = (b.attention_time_cycles / best.attention_time_cycles
                   if _num(b.get("attention_time_cycles")) and _num(best.get("attention_time_cycles")) else None)
            out[f"{fam}_attention_speedup"] = att
            out[f"{fam}_state"] = best.state_per_line
            out[f"{fam}_state_text"] = best.state
            out[f"{fam}_beyond"] = best.get("beyond")
            out[f"{fam}_index_hits"] = _per_step(best, "index_hits_lines")
            for c in CLASSES:
                col = f"{c}_misses_lines"
                if col in best and _num(b.get(col)) and _num(best.get(col)):
                    out[f"{fam}_removed_{c}"] = (b[col] - best[col]) / b.steps
        pinned = g[g.hint_index.astype(str).str.startswith("persisting")] if "hint_index" in g else g.iloc[:0]
        if pinned.allowed.any():  # the best the platform allows, else the best of any
            pinned = pinned[pinned.allowed]
        if not pinned.empty:
            p = pinned.loc[pinned.step_time_cycles.idxmin()]
            out["persisting_index_hits"] = _per_step(p, "index_hits_lines")
            out["persisting_setting"] = p.setting
        rows.append(out)
    return pd.DataFrame(rows)


def _num(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _per_step(row, col: str) -> float | None:
    return float(row[col]) / row.steps if col in row and _num(row[col]) and row.steps else None


def _x(v) -> str:
    return f"{v:.3f}x" if _num(v) else ""


def _point_label(t: pd.DataFrame, p: pd.DataFrame) -> pd.DataFrame:
    """The scale point's columns, readable: those the points vary, and always the backbone,
    geometry, LLC and platform."""
    t["backbone"], t["geometry"] = p.backbone, p.geometry
    for col, name in (("prompt_tokens", "context"), ("topk", "k"), ("batch", "batch")):
        if col in p and p[col].nunique() > 1:
            t[name] = p[col].map(lambda v: f"{int(v):,}")
    t["LLC"] = [f"{format_size(int(s))}, {int(w)}-way" for s, w in zip(p.llc_bytes, p.ways)]
    t["platform"] = p.timing_platform
    return t


def speedup_table(p: pd.DataFrame) -> pd.DataFrame:
    t = _point_label(pd.DataFrame(index=p.index), p)
    t["unmanaged step (us)"] = p.base_step_us.map(lambda v: f"{v:,.1f}")
    t["attention share"] = p.base_attention_share.map(lambda v: f"{v:.0%}" if _num(v) else "")
    for fam, name in (("KV-only", "KV-only"), ("class-aware", "class-aware (allowed)"), ("what-if", "what-if")):
        t[f"{name}: whole"] = p.get(f"{fam}_speedup", pd.Series(index=p.index, dtype=float)).map(_x)
        t[f"{name}: attention"] = p.get(f"{fam}_attention_speedup", pd.Series(index=p.index, dtype=float)).map(_x)
    t["verdict"] = [verdict(r) for _, r in p.iterrows()]
    return t.reset_index(drop=True)


def verdict(r) -> str:
    best = max((r.get(f"{f}_speedup") for f in FAMILIES if _num(r.get(f"{f}_speedup"))), default=None)
    if best is None or best < HELP:
        return f"nothing helps (best {best:.3f}x)" if best is not None else "not searched"
    fam = max((f for f in FAMILIES if _num(r.get(f"{f}_speedup"))), key=lambda f: r[f"{f}_speedup"])
    return f"{fam} helps ({best:.3f}x)"


def settings_table(p: pd.DataFrame, fam: str) -> pd.DataFrame:
    """The best setting of ``fam`` per point: in words, the misses it removes by class, its
    state per line, and (class-aware) the index-key hits with and without a persisting hint."""
    if f"{fam}_setting" not in p:
        return pd.DataFrame()
    p = p[p[f"{fam}_setting"].notna()]
    t = _point_label(pd.DataFrame(index=p.index), p)
    t["setting"] = p[f"{fam}_setting"]
    removed = []
    for _, r in p.iterrows():
        parts = [f"{CLASSES[c]} {r[f'{fam}_removed_{c}'] / 1e3:,.1f} k" for c in CLASSES
                 if _num(r.get(f"{fam}_removed_{c}")) and abs(r[f"{fam}_removed_{c}"]) >= 0.5]
        removed.append(", ".join(parts) or "none")
    t["misses removed per step"] = removed
    t["state"] = p[f"{fam}_state"]
    if fam == "what-if":
        t["beyond the platform"] = p[f"{fam}_beyond"].fillna("a token policy in the KV ways (a proposal)")
    t["index-key hits/step: unmanaged"] = p.base_index_hits.map(lambda v: f"{v:,.0f}" if _num(v) else "")
    t["index-key hits/step: this setting"] = p[f"{fam}_index_hits"].map(lambda v: f"{v:,.0f}" if _num(v) else "")
    if fam == "class-aware" and "persisting_index_hits" in p:
        t["index-key hits/step: best persisting hint"] = p.persisting_index_hits.map(
            lambda v: f"{v:,.0f}" if _num(v) else "")
    return t.reset_index(drop=True)


def per_platform(p: pd.DataFrame) -> list[str]:
    """Per platform, the best setting it allows in words (the one best at the most points) and
    the speed-ups, and the points where nothing helps."""
    lines = []
    for name, g in p.groupby("timing_platform", sort=True):
        have = g[g.get("class-aware_setting", pd.Series(index=g.index)).notna()] if "class-aware_setting" in g else g.iloc[:0]
        if have.empty:
            lines.append(f"**{name}**: its documented cache controls make no class-aware setting here"
                         + (" (no user control of the LLC's allocation is documented)." if name == "mi300x" else "."))
        else:
            top = have["class-aware_setting"].value_counts().index[0]
            at = have[have["class-aware_setting"] == top]
            lines.append(
                f"**{name}**: the setting it allows that is best at the most points ({len(at)} of {len(g)}) is to {top}; "
                f"the best it allows at each point gains "
                f"{_range(have['class-aware_speedup'])} of the whole step, "
                f"{_range(have['class-aware_attention_speedup'])} of its attention part (attention-only).")
        if "what-if_speedup" in g and g["what-if_speedup"].notna().any():
            w = g.loc[g["what-if_speedup"].idxmax()]
            lines[-1] += (f" Beyond its controls the largest gain is {_x(w['what-if_speedup'])} of the whole step "
                          f"({_x(w['what-if_attention_speedup'])} attention-only), at {_where(w)}: to "
                          f"{w['what-if_setting']}.")
        none = [r for _, r in g.iterrows() if verdict(r).startswith("nothing helps")]
        if none:
            lines[-1] += (f" Nothing helps (no setting gains {HELP:.2f}x of the whole step) at {len(none)} of {len(g)} "
                          f"points: " + "; ".join(_where(r) for r in none) + ".")
    return lines


def _range(s: pd.Series) -> str:
    s = s.dropna()
    if s.empty:
        return "-"
    return f"{s.min():.3f}x" if math.isclose(s.min(), s.max(), rel_tol=5e-4) else f"{s.min():.3f}x to {s.max():.3f}x"


def _where(r) -> str:
    parts = [str(r.backbone), str(r.geometry), format_size(int(r.llc_bytes))]
    if _num(r.get("prompt_tokens")):
        parts.append(f"ctx {int(r.prompt_tokens):,}")
    if _num(r.get("batch")):
        parts.append(f"batch {int(r.batch)}")
    return ", ".join(parts)


def search_note(searches: list[dict], runs: pd.DataFrame) -> str:
    """How the search pruned: settings screened of the space, seconds, and the screened speed-ups
    of the finalists against their full runs'."""
    if not searches:
        return ""
    screened = sum(len(s["screened"]) for s in searches)
    space = sum(s["space"] for s in searches)
    seconds = sum(s["seconds"]["total"] for s in searches)
    samples = sorted({s["sample"]["every"] for s in searches if s.get("sample")})
    text = (f"The lever search (harness.study.search) screened {screened:,} settings at {len(searches)} scale points, "
            f"{screened / max(space, 1):.1%} of the {space:,} combinations of the classes' options, in {seconds:,.0f} s of "
            f"one core ({seconds / len(searches):,.1f} s a point), on "
            + (f"1 in {' or '.join(map(str, samples))} groups of sets" if samples else "every set")
            + f" and the first {max(s['steps'] for s in searches)} decode steps; the best of each family were then run "
              "in full.")
    diffs = _screen_errors(searches, runs)
    if diffs:
        text += (f" Screened against full speed-ups of the {len(diffs)} finalists: median |difference| "
                 f"{pd.Series(diffs).abs().median():.4f}, max {pd.Series(diffs).abs().max():.4f}.")
    return text


def _screen_errors(searches: list[dict], runs: pd.DataFrame) -> list[float]:
    """Screened speed-up minus full speed-up, per finalist with a finished run."""
    if "_run_id" not in runs:
        return []
    by_id = runs.set_index("_run_id")
    out = []
    for s in searches:
        rows = {json_key(r["knobs"]): r for r in s["screened"]}
        base = rows.get(json_key({}))
        finals = {json_key(f["knobs"]): f["run_id"] for f in s["finalists"]}
        base_id = finals.get(json_key({}))
        if base is None or base_id not in by_id.index:
            continue
        full_base = by_id.loc[base_id, "step_time_cycles"]
        for key, rid in finals.items():
            if key == json_key({}) or rid not in by_id.index or key not in rows:
                continue
            out.append(base["step_time_cycles"] / rows[key]["step_time_cycles"]
                       - full_base / by_id.loc[rid, "step_time_cycles"])
    return out


def json_key(knobs: dict) -> str:
    import json

    return json.dumps(knobs, sort_keys=True)


def speedup_plot(p: pd.DataFrame, folder: Path) -> str | None:
    """Per scale point, each family's best speed-up of the whole step (solid) and of its attention
    part (hatched)."""
    from harness.core.plotting import plt, save

    fams = [f for f in FAMILIES if f"{f}_speedup" in p]
    if not fams:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 0.5 * len(p) * len(fams) + 3), 4.2), squeeze=False)
    width = 0.8 / len(fams)
    for ax, (suffix, title) in zip(axes[0], (("speedup", "whole decode step"), ("attention_speedup", "attention part"))):
        for i, fam in enumerate(fams):
            values = p.get(f"{fam}_{suffix}", pd.Series(index=p.index, dtype=float)).astype(float)
            ax.bar([j + i * width for j in range(len(p))], values.fillna(1.0) - 1.0, bottom=1.0, width=width,
                   color=f"C{i}", label=fam)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(p))],
                      [_where(r).replace(", ", "\n") for _, r in p.iterrows()], fontsize=6)
        ax.set(ylabel="speed-up over the unmanaged LLC", title=title)
        ax.legend(fontsize=7)
    return save(fig, folder / "what_helps.png")


@section("What helps: class-aware LLC settings per scale point", order=22)
def what_helps(ctx: ReportContext, doc: Doc) -> None:
    runs = classify(ctx.results)
    if runs.empty or not runs.family.isin(["class-aware", "what-if"]).any():
        return
    p = best_per_point(runs)
    if p.empty:
        return
    doc.p("Per scale point (backbone log, geometry, context, batch, LLC, platform), the best setting of each family by "
          "whole-step time: KV-only (ways reserved for the KV alone, the seed's proposal), class-aware settings the "
          "platform's documented cache controls make (way masks on Intel's cache allocation; L2 persistence and "
          "evict-first on the Hopper GPUs; none on the MI300X), and class-aware settings beyond them (what-if). "
          "Speed-ups are of the whole decode step and, attention-only, of its attention part (the KV and indexer "
          f"traffic and compute), over the unmanaged LLC. A setting helps above {HELP:.2f}x of the whole step.")
    for line in per_platform(p):
        doc.p(line)
    if any((p.get(f"{f}_setting", pd.Series(dtype=object)).astype(str).str.contains("stream the weights")
            & (p.get(f"{f}_removed_weights", pd.Series(dtype=float)).fillna(0) > 0)).any() for f in FAMILIES):
        doc.p("Where streaming the weights removes weight misses: a streaming fill goes to its set's LRU position "
              "(LIP, Qureshi et al., ISCA 2007; harness.cache.partitions), so of a scan larger than the LLC each set "
              "keeps the lines it took first, and the next step's scan of the same weights hits them. CUDA does not "
              "document the order in which evict-first lines leave the L2; were the oldest to leave first, those "
              "hits would vanish and only the protection of the other classes would remain.")
    note = search_note(read_searches(ctx.sweep), runs)
    if note:
        doc.p(note)
    doc.table(speedup_table(p))
    p.to_csv(ctx.folder / "what_helps.csv", index=False)
    doc.p("Every point's figures: what_helps.csv.")
    doc.image(speedup_plot(p, ctx.folder))
    doc.p("The best class-aware setting each platform allows: the misses it removes per decode step by class, "
          "its hardware state per line (harness.cache.knobstate: a way mask adds none, a persisting hint one "
          "flag bit per line, a token policy its records), and the index-key hits per step.")
    doc.table(settings_table(p, "class-aware"))
    t = settings_table(p, "what-if")
    if not t.empty:
        doc.p("The best setting beyond each platform's documented controls (what-if), and what it asks beyond them.")
        doc.table(t)
    doc.p("The best KV-only reservation at each point.")
    doc.table(settings_table(p, "KV-only").drop(columns=["index-key hits/step: this setting"], errors="ignore"))
