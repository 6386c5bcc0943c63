"""The report's sections on the sweep's index logs: the locality of the selections
(harness.analysis.locality) and the reservation policies' token hit rates at capacities below one
decode step's footprint (harness.study.policy_study)."""

from __future__ import annotations

import pandas as pd

from harness.study.report.registry import ReportContext, section
from harness.study.report.render import Doc


@section("Locality of the selections", order=40)
def locality(ctx: ReportContext, doc: Doc) -> None:
    from harness.analysis.locality import analyze_log, locality_tables
    from harness.analysis.plots import locality_plots

    if not (ctx.locality and ctx.logs):
        return
    tables = locality_tables([analyze_log(log) for log in ctx.logs], ctx.logs)
    cols = ["log", "overlap_mean", "jaccard_mean", "runs_mean", "page_utilisation_64",
            "reuse_distance_mean", "working_set_16", "lru_hit_rate_kxl_0.25", "lru_hit_rate_kxl_1"]
    doc.table(tables["summary"][[c for c in cols if c in tables["summary"]]])
    doc.images(locality_plots(tables, ctx.folder))
    for name, t in tables.items():
        t.to_parquet(ctx.folder / f"locality_{name}.parquet", index=False)


@section("Reservation policies below one decode step's footprint", order=50)
def policies(ctx: ReportContext, doc: Doc) -> None:
    from harness.study.policy_study import family_table, policy_plots, policy_sweep, streak_vs_zoo

    if not (ctx.policies and ctx.logs):
        return
    pol = pd.concat([policy_sweep(log) for log in ctx.logs], ignore_index=True)
    pol.to_parquet(ctx.folder / "policies.parquet", index=False)
    doc.p("Token hit rate of a fully associative reservation of a fraction of k x layers x requests "
          "tokens, every policy beside token-LRU and MIN (share of MIN's hits): the project's policies "
          "(dsa-llc) and libCacheSim's eviction algorithms (lcs:, the field's standard simulator; "
          "lcs:belady is MIN without bypass, left out of the best online algorithm).")
    for line in streak_vs_zoo(pol):
        doc.p(line)
    doc.table(family_table(pol))
    quarter = pol[pol.capacity_kxl == 0.25].pivot_table(index=["policy", "family"], columns="log",
                                                       values="share_of_min", sort=False, dropna=False)
    doc.table(quarter.reset_index().rename(columns=lambda c: f"share of MIN at kL/4: {c}"
                                           if c not in ("policy", "family") else c))
    for failure in pol.failure[pol.failure != ""]:
        doc.p(f"Failed (no hits counted): {failure}")
    doc.images(policy_plots(pol, ctx.folder))
