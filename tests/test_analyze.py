"""Locality metrics and miss-ratio curves, checked against values worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import write_log
from hypothesis import given, settings
from hypothesis import strategies as st
from test_properties import python_lru_hits

from harness.analysis.locality import analyze_log, layer_metrics, layer_pair_overlaps
from harness.cache.tokencache import StackDistances, TokenStream, lru_hits
from harness.cli import cli
from trace_gen.synthetic import write_synthetic_log

# one request, one layer, k = 4:  S0 = {0,1,2,5}, S1 = {0,1,3,5}, S2 = {0,8,9,10}
HAND = [[0, 1, 2, 5], [0, 1, 3, 5], [0, 8, 9, 10]]


def test_layer_metrics_by_hand():
    m, hist = layer_metrics([np.array(s) for s in HAND], 22)
    # overlaps: |{0,1,5}|/4 = 0.75, |{0}|/4 = 0.25; Jaccard 3/5 and 1/7
    assert m["overlap_mean"] == pytest.approx(0.5)
    assert m["overlap_p10"] == pytest.approx(0.30)
    assert m["overlap_p50"] == pytest.approx(0.5)
    assert m["overlap_p90"] == pytest.approx(0.70)
    assert m["jaccard_mean"] == pytest.approx((3 / 5 + 1 / 7) / 2)
    assert m["prev_step_hit_share"] == pytest.approx(4 / 8)
    # runs: {0-2},{5} | {0-1},{3},{5} | {0},{8-10}: 2, 3, 2
    assert m["runs_mean"] == pytest.approx(7 / 3)
    assert m["run_length_mean"] == pytest.approx(12 / 7)
    # every selection fits in page 0 at 16 and 64 tokens per page
    assert m["pages_touched_16"] == 1 and m["page_utilisation_16"] == pytest.approx(12 / 48)
    assert m["pages_touched_64"] == 1 and m["page_utilisation_64"] == pytest.approx(12 / 192)
    # reuses: token 0 at steps 1 and 2, tokens 1 and 5 at step 1: four reuses at distance 1
    assert hist[1] == 4 and hist.sum() == 4
    assert m["reuse_distance_mean"] == 1.0 and m["first_use_share"] == pytest.approx(8 / 12)
    # working set: 4 tokens per single step; no 4-step window fits in 3 steps
    assert m["working_set_1"] == 4 and math.isnan(m["working_set_4"])


def test_pages_and_reuse_beyond_one_step():
    # positions 15 and 16 straddle a 16-token page; token 7 returns after 3 steps
    m, hist = layer_metrics([np.array(s) for s in [[7, 15, 16], [1], [2], [7]]], 70)
    assert m["pages_touched_16"] == pytest.approx((2 + 1 + 1 + 1) / 4)
    assert m["page_utilisation_16"] == pytest.approx(6 / (5 * 16))
    assert hist[3] == 1 and hist.sum() == 1
    assert m["working_set_4"] == 5  # {7, 15, 16, 1, 2}


def test_full_miss_ratio_curve_of_a_ten_access_stream():
    # a b c a b d a c b a: stack distances - - - 2 2 - 2 3 3 2 (distinct tokens since last use)
    stream = [0, 1, 2, 0, 1, 3, 0, 2, 1, 0]
    sd = StackDistances(4)
    sd.feed(np.array(stream))
    assert sd.hist.tolist() == [0, 0, 4, 2, 4]  # distances 0..3, then cold reads
    assert sd.hits().tolist() == [0, 0, 0, 4, 6]
    assert [python_lru_hits(stream, c) for c in range(1, 5)] == [0, 0, 4, 6]


def test_curve_equals_the_simulators_token_lru_bound(tmp_path):
    path = write_synthetic_log(tmp_path / "s", steps=12, layers=4, topk=32, prompt=300, requests=2)
    a = analyze_log(path)
    curve = a.mrc[(a.mrc.scope == "all") & (a.mrc.policy == "lru")].set_index("capacity_tokens")
    from harness.cache.policies.base import dense_token_ids
    from trace_gen.indexlog import IndexLog

    log = IndexLog(path)
    with TokenStream() as s:  # hashed ids here, dense ids inside analyze_log
        for block in log.blocks():
            s.append(dense_token_ids(block, log.layers, 10_000) * 7 + 3)
        sd = StackDistances(s.distinct)
        sd.feed(np.asarray(s.ids))
        for cap in [1, 10, 64, 256, 300, 1000, s.distinct]:
            hits = lru_hits(s, cap)
            if cap in curve.index:
                assert curve.loc[cap, "hits"] == hits
            assert sd.hits_at(cap) == hits
    # and the bound the simulator reports for a reservation, on the stream of the same log
    from harness.cache.llc import LLCConfig
    from harness.cache.simulate import simulate
    from trace_gen.geometry import get_geometry
    from trace_gen.stream import Layout, StreamSource

    # the simulator's token caches also see each new token's KV write, before the selections that
    # step reads (trace_gen.stream): the same ids with (request, layer, ctx_len - 1) put in front
    with TokenStream() as s:
        for block in log.blocks():
            ids = dense_token_ids(block, log.layers, 10_000)
            new = (block.request * log.layers + block.layer) * 10_000 + block.ctx_len - 1
            s.append(np.insert(ids, block.offsets[:-1], new))
        sd = StackDistances(s.distinct)
        sd.feed(np.asarray(s.ids))
    src = StreamSource(log, get_geometry("native", log.meta), Layout(kind="paged", page_tokens=16))
    for reserve in (2, 4, 8):
        r = simulate(src.chunks(), LLCConfig.make("256KiB", 16, reserve, "token-lru"))
        assert sd.hits_at(r["bounds"]["capacity_tokens"]) == r["bounds"]["fa_lru_hits"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=300))
def test_curve_is_monotone_and_ends_at_all_reuses(tokens):
    with TokenStream.of(np.array(tokens)) as s:
        sd = StackDistances(s.distinct)
        for part in np.array_split(np.asarray(s.ids), 3):
            sd.feed(part)
        h = sd.hits()
        assert (np.diff(h) >= 0).all() and h[0] == 0
        assert h[s.distinct] == len(tokens) - s.distinct  # hit rate 1 - distinct/accesses
        for cap in (1, 2, 5):
            assert h[min(cap, s.distinct)] == python_lru_hits(tokens, min(cap, s.distinct))


def test_analyze_writes_tables_plots_and_summary(tmp_path):
    a = write_synthetic_log(tmp_path / "a", steps=8, layers=3, topk=16, prompt=200)
    b = write_synthetic_log(tmp_path / "b", steps=8, layers=2, topk=16, prompt=200, overlap=0.3, seed=5)
    out = tmp_path / "report"
    res = CliRunner().invoke(cli, ["analyze", str(a), str(b), "--out", str(out), "--geometry", "deepseek-v3.2"])
    assert res.exit_code == 0, res.output
    for name in ("summary", "per_layer", "reuse_distance", "mrc", "layer_pairs"):
        assert (out / f"{name}.parquet").exists() and (out / f"{name}.csv").exists()
    for png in ("overlap_per_layer.png", "reuse_distance.png", "mrc.png"):
        assert (out / png).stat().st_size > 1000
    summary = pd.read_parquet(out / "summary.parquet")
    assert len(summary) == 2 and summary.overlap_mean.iloc[0] > summary.overlap_mean.iloc[1]
    md = (out / "summary.md").read_text()
    assert "![mrc](mrc.png)" in md and "| log |" in md
    mrc = pd.read_parquet(out / "mrc.parquet")
    assert (mrc.capacity_bytes == mrc.capacity_tokens * 704).all()
    assert set(mrc.policy) == {"lru", "min"}
    # MIN is never below LRU at the same capacity
    both = mrc[mrc.policy == "min"].merge(mrc[(mrc.policy == "lru") & (mrc.scope == "all")],
                                          on=["log", "capacity_tokens"], suffixes=("_min", "_lru"))
    assert (both.hit_rate_min >= both.hit_rate_lru).all() and len(both) == 10


def test_single_step_log_says_overlap_is_undefined(tmp_path):
    path = write_log(tmp_path / "one", [(0, 0, 0, 10, [1, 2, 3])], requests=1, steps=1, layers=1, topk=3)
    a = analyze_log(path)
    assert math.isnan(a.summary["overlap_mean"]) and "undefined" in a.summary["note"]
    res = CliRunner().invoke(cli, ["analyze", str(path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0 and "undefined" in (tmp_path / "r" / "summary.md").read_text()


def test_empty_log_and_mixed_versions_are_errors(tmp_path):
    empty = write_log(tmp_path / "empty", [], requests=1, steps=0, layers=1, topk=3)
    res = CliRunner().invoke(cli, ["analyze", str(empty), "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "has no rows" in res.output and res.output.count("\n") == 1
    assert not (tmp_path / "r").exists()
    import json

    import pyarrow.parquet as pq

    good = write_synthetic_log(tmp_path / "good", steps=2, layers=1, topk=4, prompt=20)
    other = tmp_path / "other"
    other.mkdir()
    t = pq.read_table(good / "index_log.parquet")
    meta = json.loads(t.schema.metadata[b"dsa_llc.index_log"])
    meta["schema_version"] = 2
    pq.write_table(t.replace_schema_metadata({b"dsa_llc.index_log": json.dumps(meta)}), other / "index_log.parquet")
    res = CliRunner().invoke(cli, ["analyze", str(good), str(other), "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "schema version 2" in res.output


# two requests, two steps, three layers, k = 4 (request 1 selects the same four tokens everywhere)
PAIRS = {(0, 0): [0, 1, 2, 3], (0, 1): [0, 1, 5, 6], (0, 2): [0, 1, 2, 7],
         (1, 0): [0, 1, 2, 3], (1, 1): [0, 1, 2, 3], (1, 2): [8, 9, 10, 11]}  # (step, layer) of request 0


def test_layer_pair_overlap_by_hand(tmp_path):
    rows = [(0, s, layer, 20 + s, pos) for (s, layer), pos in PAIRS.items()]
    rows += [(1, s, layer, 20 + s, [4, 5, 6, 7]) for s in range(2) for layer in range(3)]
    a = analyze_log(write_log(tmp_path / "pairs", rows, requests=2, steps=2, layers=3, topk=4))
    pairs = a.layer_pairs.set_index(["distance", "layer"]).overlap
    # request 0: layers 0, 1 share {0, 1} then all four (0.5, 1); layers 1, 2 share {0, 1} then none
    # (0.5, 0); layers 0, 2 share {0, 1, 2} then none (0.75, 0); request 1 always shares all four
    assert pairs[1, 0] == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert pairs[1, 1] == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert pairs[2, 0] == pytest.approx((0.75 + 0 + 1 + 1) / 4)
    assert len(pairs) == 3 and set(a.layer_pairs.layer_b - a.layer_pairs.layer) == {1, 2}
    assert a.summary["layer_overlap_d1"] == pytest.approx((0.875 + 0.625) / 2)
    assert a.summary["layer_overlap_d2"] == pytest.approx(0.6875)
    assert math.isnan(a.summary["layer_overlap_d3"]) and "own_layer_overlap_d1" not in a.summary


def test_layer_pair_overlap_of_widened_and_own_selections(tmp_path):
    from trace_gen.indexlog import IndexLogWriter

    # under reuse a selection holds more than k: the overlap is over the larger selection
    df = pd.DataFrame({"request": 0, "step": 0, "layer": [0, 1], "positions": [[1, 2], [1, 2, 3]]})
    assert layer_pair_overlaps(df, 4).overlap.tolist() == [pytest.approx(2 / 3)]
    meta = {"backbone": {"name": "hand"}, "requests": 1, "steps": 1, "layers": 2,
            "indexer": {"name": "hand", "topk": 2, "levers": {"index_share": 2, "index_reuse": 1}}}
    with IndexLogWriter(tmp_path / "lever", meta, own=True) as w:  # layer 1 attends with layer 0's
        w.add(0, 0, 0, 10, np.array([1, 2]), 0.5, 0.5, np.array([1, 2]), 0.5)
        w.add(0, 0, 1, 10, np.array([1, 2]), 0.3, 0.5, np.array([2, 7]), 0.5)
        path = w.close()
    res = CliRunner().invoke(cli, ["analyze", str(path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0 and "adjacent layers 1.000" in res.output, res.output
    pairs = pd.read_parquet(tmp_path / "r" / "layer_pairs.parquet")
    assert pairs.overlap.tolist() == [1.0] and pairs.own_overlap.tolist() == [0.5]
    assert "| own, l+1 |" in (tmp_path / "r" / "summary.md").read_text()
