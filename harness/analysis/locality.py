"""Locality of DSA selections, from index logs alone (DESIGN.md, section 9).

Per (backbone, request, layer), with S_t the selection at step t:

- overlap |S_t ∩ S_t-1| / |S_t| and Jaccard |S_t ∩ S_t-1| / |S_t ∪ S_t-1| (steps t >= 1): mean,
  p10, p50, p90; the overlap is also the share of S_t a "keep last step's top-k" cache hits;
- reuse distance in steps: for every selected token that was selected before in that layer,
  t - (its previous step); histogram;
- fragmentation: contiguous runs of positions per selection and mean run length; pages touched
  and page utilisation (selected tokens / (pages touched * page size)) at 16 and 64 tokens/page;
- working set: distinct tokens selected in a window of w consecutive steps (w = 1, 4, 16, 64),
  averaged over all windows that fit.

Per pair of layers (l, l + d), d = 1 .. 4, at the same step and request: the selection overlap
|S_l ∩ S_l+d| / k (over the larger of the two selections, which is k unless a lever widened
them), averaged over steps and requests: how much a layer could attend with another's selection
(the indexer levers of ``trace_gen.levers``); in a log made with levers, also the overlap of the
layers' own selections (``own_positions``).

The token-LRU miss-ratio curve: hit rate of a fully associative LRU cache of whole tokens
against its capacity, every capacity in one pass of stack distances, over all layers in decode
order and per layer; MIN (Belady) at a few capacities beside it. Capacities are also given in
bytes under a KV geometry (capacity * the geometry's token stride).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.cache.policies.base import dense_id_space, dense_token_ids
from harness.cache.tokencache import StackDistances, TokenStream, min_hits
from harness.core.errors import UserError
from harness.core.mdtable import markdown_table
from harness.core.units import require_memory
from trace_gen.indexlog import IndexLog

PAGE_SIZES = (16, 64)
WINDOWS = (1, 4, 16, 64)
REUSE_CAP = 64  # reuse distances above this are binned together
LAYER_DISTANCES = (1, 2, 3, 4)  # layer pairs (l, l + d) whose selection overlap is measured
MIN_FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 1, 2)  # MIN capacities, in units of k x layers


def _quantiles(x: np.ndarray) -> dict:
    if len(x) == 0:
        return {"mean": math.nan, "p10": math.nan, "p50": math.nan, "p90": math.nan}
    return {"mean": float(x.mean()), "p10": float(np.quantile(x, 0.1)),
            "p50": float(np.quantile(x, 0.5)), "p90": float(np.quantile(x, 0.9))}


def selection_matrix(positions: list[np.ndarray], width: int) -> np.ndarray:
    """Boolean [steps, width]: M[t, p] = position p selected at step t."""
    m = np.zeros((len(positions), width), dtype=bool)
    rows = np.repeat(np.arange(len(positions)), [len(p) for p in positions])
    if len(rows):
        m[rows, np.concatenate(positions)] = True
    return m


def layer_metrics(positions: list[np.ndarray], width: int) -> tuple[dict, np.ndarray]:
    """Metrics of one (request, layer) selection sequence, and its reuse-distance histogram
    (index d = distance d in steps, 1 <= d <= REUSE_CAP; the last bin holds larger ones)."""
    m = selection_matrix(positions, width)
    size = m.sum(1)
    out: dict = {"steps": len(positions), "k_mean": float(size.mean()) if len(size) else math.nan}
    if len(positions) > 1:
        inter = (m[1:] & m[:-1]).sum(1)
        union = (m[1:] | m[:-1]).sum(1)
        overlap = inter / np.maximum(size[1:], 1)
        jaccard = inter / np.maximum(union, 1)
        out["prev_step_hit_share"] = float(inter.sum() / max(size[1:].sum(), 1))
    else:
        overlap = jaccard = np.zeros(0)
        out["prev_step_hit_share"] = math.nan
    out.update({f"overlap_{k}": v for k, v in _quantiles(overlap).items()})
    out.update({f"jaccard_{k}": v for k, v in _quantiles(jaccard).items()})
    starts = m & ~np.concatenate([np.zeros((len(m), 1), dtype=bool), m[:, :-1]], axis=1)
    runs = starts.sum(1)
    out["runs_mean"] = float(runs.mean()) if len(runs) else math.nan
    out["run_length_mean"] = float(size.sum() / max(runs.sum(), 1))
    for page in PAGE_SIZES:
        pad = -width % page
        pages = np.pad(m, ((0, 0), (0, pad))).reshape(len(m), -1, page).any(-1).sum(1)
        out[f"pages_touched_{page}"] = float(pages.mean()) if len(pages) else math.nan
        out[f"page_utilisation_{page}"] = float(size.sum() / max(pages.sum() * page, 1))
    cs = np.concatenate([np.zeros((1, width), dtype=np.int32), np.cumsum(m, axis=0, dtype=np.int32)])
    for w in WINDOWS:
        if len(m) >= w:
            out[f"working_set_{w}"] = float(((cs[w:] - cs[:-w]) > 0).sum(1).mean())
        else:
            out[f"working_set_{w}"] = math.nan
    pos, steps = np.nonzero(m.T)  # sorted by position, then step
    same = pos[1:] == pos[:-1]
    dist = (steps[1:] - steps[:-1])[same]
    hist = np.bincount(np.minimum(dist, REUSE_CAP), minlength=REUSE_CAP + 1)
    out["reuse_distance_mean"] = float(dist.mean()) if len(dist) else math.nan
    out["first_use_share"] = float((size.sum() - len(dist)) / max(size.sum(), 1))
    return out, hist


def layer_pair_overlaps(rows: pd.DataFrame, width: int, column: str = "positions",
                        distances=LAYER_DISTANCES) -> pd.DataFrame:
    """Selection overlap between layers l and l + d of the same step and request,
    ``|S_l ∩ S_l+d| / max(|S_l|, |S_l+d|)`` (= / k when both select k), averaged over steps and
    requests: one row (distance, layer, layer_b, overlap) per pair of layers ``distances``
    apart. ``rows``: an index log's rows (request, step, layer and the ``column`` of positions,
    every layer with the same steps); ``width``: more than the largest position."""
    totals: dict[tuple[int, int], list] = {}
    for _, request in rows.groupby("request", sort=True):
        recent: dict[int, tuple] = {}  # the selections of the last max(distances) layers
        for layer, g in request.groupby("layer", sort=True):
            m = selection_matrix([np.asarray(p, dtype=np.int64) for p in g.sort_values("step")[column]], width)
            size = m.sum(1)
            for d in distances:
                if layer - d in recent:
                    other, other_size = recent[layer - d]
                    share = (m & other).sum(1) / np.maximum(np.maximum(size, other_size), 1)
                    total = totals.setdefault((d, layer - d), [0.0, 0])
                    total[0] += float(share.sum())
                    total[1] += len(share)
            recent[layer] = (m, size)
            recent.pop(layer - max(distances), None)
    return pd.DataFrame([{"distance": d, "layer": a, "layer_b": a + d, "overlap": s / max(n, 1)}
                         for (d, a), (s, n) in sorted(totals.items())],
                        columns=["distance", "layer", "layer_b", "overlap"])


@dataclass
class LogAnalysis:
    backbone: str
    label: str
    per_layer: pd.DataFrame
    reuse: pd.DataFrame
    mrc: pd.DataFrame
    summary: dict
    layer_pairs: pd.DataFrame


def _capacity_grid(distinct: int, kl: int) -> np.ndarray:
    """Capacities at which the curve is tabulated: log-spaced, plus fractions of k x L."""
    grid = np.unique(np.round(np.logspace(0, math.log10(max(distinct, 1)), 160)).astype(np.int64))
    marks = [int(round(f * kl)) for f in MIN_FRACTIONS]
    return np.unique(np.clip(np.concatenate([grid, marks, [distinct]]), 1, max(distinct, 1)))


def analyze_log(path: str | Path, token_bytes: int | None = None, min_capacities: bool = True) -> LogAnalysis:
    log = IndexLog(path)
    if log.rows == 0:
        raise UserError(f"index log {log.folder} has no rows: nothing to analyse")
    width, id_space = dense_id_space(log)
    # one (request, layer) at a time: a steps x width selection matrix and its running sums;
    # the layer-pair overlaps keep the matrices of the last few layers
    require_memory(log.steps * width * (6 + len(LAYER_DISTANCES) + 1) + id_space * 16,
                   f"the locality analysis of {log.folder}")
    own = ["own_positions"] if log.has_own else []
    df = log.table(["request", "step", "layer", "ctx_len", "positions", *own]).to_pandas()
    topk = log.topk
    backbone = log.meta["backbone"]["name"]
    label = f"{backbone}/{log.meta['indexer']['name']}/k{topk}"
    types = log.meta["backbone"].get("config", {}).get("layer_types") or ["full"] * log.layers
    rows, hists = [], []
    for (request, layer), g in df.groupby(["request", "layer"], sort=True):
        g = g.sort_values("step")
        metrics, hist = layer_metrics([np.asarray(p, dtype=np.int64) for p in g.positions], width)
        rows.append({"backbone": backbone, "log": label, "request": request, "layer": layer,
                     "layer_type": types[layer] if layer < len(types) else "full", **metrics})
        hists.append(hist)
    per_layer = pd.DataFrame(rows)
    pairs = layer_pair_overlaps(df, width)
    if own:
        pairs["own_overlap"] = layer_pair_overlaps(df, width, "own_positions").overlap
    kind = lambda layer: types[layer] if layer < len(types) else "full"  # noqa: E731
    pairs.insert(0, "backbone", backbone)
    pairs.insert(1, "log", label)
    pairs["layer_type"] = pairs.layer.map(kind)
    pairs["layer_type_b"] = pairs.layer_b.map(kind)
    hist = np.sum(hists, axis=0)
    reuse = pd.DataFrame({"backbone": backbone, "log": label, "distance_steps": np.arange(len(hist)),
                          "count": hist}).iloc[1:]
    reuse["distance_steps"] = reuse.distance_steps.astype(str)
    reuse.loc[reuse.index[-1], "distance_steps"] = f">={REUSE_CAP}"

    # one pass over the token stream in decode order, all layers and each layer
    with TokenStream(id_space=id_space) as stream:
        layer_of = []
        for block in log.blocks():
            stream.append(dense_token_ids(block, log.layers, width))
            layer_of.append(np.repeat(block.layer, np.diff(block.offsets)).astype(np.int16))
        layer_of = np.concatenate(layer_of)
        kl = topk * log.layers * log.requests
        curves = []
        overall = StackDistances(stream.distinct)
        per = {int(layer): StackDistances(stream.distinct) for layer in np.unique(layer_of)}
        step = 1 << 22
        for start in range(0, stream.n, step):
            ids = np.asarray(stream.ids[start:start + step])
            overall.feed(ids)
            lay = layer_of[start:start + step]
            order = np.argsort(lay, kind="stable")  # each layer's reads together, in stream order
            ends = np.searchsorted(lay[order], list(per), side="right")
            for sd, end, begin in zip(per.values(), ends, np.r_[0, ends[:-1]]):
                sd.feed(ids[order[begin:end]])
        for scope, sd, scale in [("all", overall, kl)] + [(f"layer {lay}", sd, topk * log.requests)
                                                          for lay, sd in per.items()]:
            distinct = int((sd.slot_of >= 0).sum())
            caps = _capacity_grid(distinct, scale)
            hits = sd.hits()[caps]
            curves.append(pd.DataFrame({"backbone": backbone, "log": label, "scope": scope, "policy": "lru",
                                        "capacity_tokens": caps, "capacity_kxl": caps / scale,
                                        "hits": hits, "accesses": sd.reads,
                                        "hit_rate": hits / max(sd.reads, 1)}))
        if min_capacities:
            caps = sorted({max(1, int(round(f * kl))) for f in MIN_FRACTIONS})
            mh = [min_hits(stream, c) for c in caps]
            curves.append(pd.DataFrame({"backbone": backbone, "log": label, "scope": "all", "policy": "min",
                                        "capacity_tokens": caps, "capacity_kxl": np.array(caps) / kl,
                                        "hits": mh, "accesses": stream.n,
                                        "hit_rate": np.array(mh) / max(stream.n, 1)}))
        accesses, distinct_all = stream.n, int((overall.slot_of >= 0).sum())
    mrc = pd.concat(curves, ignore_index=True)
    if token_bytes:
        mrc["capacity_bytes"] = mrc.capacity_tokens * token_bytes
    lru_all = mrc[(mrc.scope == "all") & (mrc.policy == "lru")]
    summary = {"backbone": backbone, "log": label, "indexer": log.meta["indexer"]["name"], "topk": topk,
               "layers": log.layers, "requests": log.requests, "steps": log.steps,
               "ctx_len_max": width, "token_accesses": accesses, "distinct_tokens": distinct_all}
    for col in ["overlap_mean", "overlap_p10", "overlap_p50", "overlap_p90", "jaccard_mean",
                "prev_step_hit_share", "runs_mean", "run_length_mean", "pages_touched_16",
                "page_utilisation_16", "pages_touched_64", "page_utilisation_64",
                "reuse_distance_mean", "first_use_share"] + [f"working_set_{w}" for w in WINDOWS]:
        summary[col] = float(per_layer[col].mean())
    for f in MIN_FRACTIONS:
        cap = int(round(f * kl))
        row = lru_all[lru_all.capacity_tokens == cap]
        summary[f"lru_hit_rate_kxl_{f:g}"] = float(row.hit_rate.iloc[0]) if len(row) else math.nan
    for d in LAYER_DISTANCES:
        at = pairs[pairs.distance == d]
        summary[f"layer_overlap_d{d}"] = float(at.overlap.mean()) if len(at) else math.nan
        if own:
            summary[f"own_layer_overlap_d{d}"] = float(at.own_overlap.mean()) if len(at) else math.nan
    if log.steps < 2:
        summary["note"] = "one decode step: overlap, Jaccard and reuse are undefined"
    return LogAnalysis(backbone, label, per_layer, reuse, mrc, summary, pairs)


def analyze(paths: list[str | Path], out: str | Path, geometry: str | None = None,
            overwrite: bool = False) -> dict:
    """Analyse several logs side by side; write tables, plots and summary.md into the folder
    ``out`` (the output rule of ``harness.core.outputs``: an earlier analyze output is replaced
    only with ``overwrite``)."""
    from harness.analysis.plots import locality_plots
    from harness.core.files import atomic_path
    from harness.core.outputs import check_output_folder, mark_folder
    from trace_gen.geometry import get_geometry

    if not paths:
        raise UserError("give at least one index log")
    check = lambda: check_output_folder(out, "analyze", overwrite)  # noqa: E731
    check()
    logs = [IndexLog(p) for p in paths]
    versions = {log.meta.get("schema_version") for log in logs}
    if len(versions) > 1:
        raise UserError(f"the logs have mixed schema versions {sorted(versions)}")
    results = []
    for p, log in zip(paths, logs):
        token_bytes = get_geometry(geometry, log.meta).token_stride if geometry else None
        results.append(analyze_log(p, token_bytes))
    tables = locality_tables(results, paths)
    with atomic_path(Path(out), check) as tmp:
        tmp.mkdir()
        mark_folder(tmp, "analyze")
        for name, table in tables.items():
            table.to_parquet(tmp / f"{name}.parquet", index=False)
            table.to_csv(tmp / f"{name}.csv", index=False)
        plots = locality_plots(tables, tmp)
        (tmp / "summary.md").write_text(locality_markdown(tables, plots, [str(p) for p in paths]))
    return tables


def locality_tables(results: list[LogAnalysis], paths) -> dict[str, pd.DataFrame]:
    """The analyses of several logs as one table each (summary, per_layer, reuse_distance, mrc,
    layer_pairs); two logs of the same backbone/indexer/k are told apart by their folder names."""
    labels = [r.label for r in results]
    if len(set(labels)) < len(labels):
        for i, r in enumerate(results):
            r.label = f"{r.label} ({Path(paths[i]).name})"
            for t in (r.per_layer, r.reuse, r.mrc, r.layer_pairs):
                t["log"] = r.label
            r.summary["log"] = r.label
    return {
        "summary": pd.DataFrame([r.summary for r in results]),
        "per_layer": pd.concat([r.per_layer for r in results], ignore_index=True),
        "reuse_distance": pd.concat([r.reuse for r in results], ignore_index=True),
        "mrc": pd.concat([r.mrc for r in results], ignore_index=True),
        "layer_pairs": pd.concat([r.layer_pairs for r in results], ignore_index=True),
    }


def locality_markdown(tables: dict, plots: list[str], sources: list[str]) -> str:
    s = tables["summary"]
    lines = ["# Locality of DSA selections", "",
             f"Index logs: {', '.join(sources)}", ""]
    for note in s.get("note", pd.Series(dtype=object)).dropna().unique():
        lines += [f"Note: {note}.", ""]
    cols = {"log": "log", "overlap_mean": "overlap", "jaccard_mean": "Jaccard",
            "runs_mean": "runs/selection", "page_utilisation_64": "page util. (64)",
            "reuse_distance_mean": "reuse dist. (steps)", "working_set_16": "working set (16 steps)",
            "lru_hit_rate_kxl_0.25": "LRU hit @ kL/4", "lru_hit_rate_kxl_1": "LRU hit @ kL",
            "lru_hit_rate_kxl_2": "LRU hit @ 2kL"}
    table = s[[c for c in cols if c in s]].rename(columns=cols)
    lines += [markdown_table(table), ""]
    pairs = {"log": "log", **{f"layer_overlap_d{d}": f"layers l, l+{d}" for d in LAYER_DISTANCES},
             **{f"own_layer_overlap_d{d}": f"own, l+{d}" for d in LAYER_DISTANCES}}
    lines += ["Selection overlap between layers l and l + d at the same step, |S_l ∩ S_l+d| / k (mean over "
              "layer pairs, steps and requests; own: the layers' own selections in a log made with levers):",
              "", markdown_table(s[[c for c in pairs if c in s]].rename(columns=pairs)), ""]
    mins = tables["mrc"][tables["mrc"].policy == "min"]
    if len(mins):
        lines += ["Token hit rate at fractions of one decode step's footprint (k x layers x requests):", ""]
        lru = tables["mrc"][(tables["mrc"].policy == "lru") & (tables["mrc"].scope == "all")]
        both = mins.merge(lru[["log", "capacity_tokens", "hit_rate"]], on=["log", "capacity_tokens"],
                          suffixes=("_min", "_lru"), how="left")
        both = both[["log", "capacity_kxl", "capacity_tokens", "hit_rate_lru", "hit_rate_min"]]
        lines += [markdown_table(both), ""]
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"
