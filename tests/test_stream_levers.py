"""Streams follow the indexer levers (trace_gen.levers.StreamLevers): line counts by hand under
share, reuse and key bytes, a lever log followed, a stream lever that reproduces a decode's lever
exactly, the settings, and the report's section."""

import json
from dataclasses import replace

import numpy as np
import pytest
from helpers import run, write_log

from harness.core.errors import UserError
from harness.core.traffic import INDEX, KV, KV_WRITE
from harness.study.spec import loads_spec
from trace_gen.geometry import Geometry
from trace_gen.indexlog import IndexLog, IndexLogWriter
from trace_gen.stream import INDEX_PHASE, Layout, StreamSource, split_token_id

# A hand log: 1 request, 4 steps (ctx_len 10 .. 13), 4 layers of one kind, k = 3.
CTX = [10, 11, 12, 13]
SEL = {(t, layer): sorted({0, (3 * layer + t) % 9 + 1, CTX[t] - 1}) for t in range(4) for layer in range(4)}
# 8 geometry layers over the 4 log layers (layer_map 0 0 1 1 2 2 3 3): one line per KV entry, 1
# indexer FLOP per key scanned and 1 attention FLOP per token gathered
GEO = Geometry("hand8", layers=8, kv_bytes=64, index_bytes=64, index_flops_per_token=1.0,
               attn_flops_per_token=1.0)
CONTIGUOUS = Layout(kind="contiguous", weights=False)


@pytest.fixture
def hand_log(tmp_path):
    rows = [(0, t, layer, CTX[t], SEL[t, layer]) for t in range(4) for layer in range(4)]
    return IndexLog(write_log(tmp_path / "log", rows, requests=1, steps=4, layers=4, topk=3))


def lines_by_class(src):
    chunks = list(src.chunks())
    cls = np.concatenate([c.cls for c in chunks])
    return {name: int((cls == code).sum()) for name, code in (("index", INDEX), ("kv", KV), ("kv_write", KV_WRITE))}


def span(start: int, nbytes: int) -> int:
    """Lines of a byte range (by hand: first to last line touched)."""
    return (start + nbytes - 1) // 64 - start // 64 + 1


@pytest.mark.parametrize("key_bytes", [64, 68])
def test_line_counts_equal_the_formula_under_share_reuse_and_key_bytes(hand_log, key_bytes):
    geo = replace(GEO, index_bytes=key_bytes)
    src = StreamSource(hand_log, geo, CONTIGUOUS, index_share=4, index_reuse=2)
    # share 4 over the geometry's 8 layers: anchors 0 and 4; layers 1-3 gather layer 0's
    # selection (log layer 0), 5-7 layer 4's (log layer 2). Reuse 2: steps 0 and 2 scan.
    anchor = [0, 0, 0, 0, 4, 4, 4, 4]
    log_layer = [g * 4 // 8 for g in range(8)]
    slots = src.amap.total_pages * src.amap.page_tokens  # contiguous: one row of max_ctx slots
    expect = {"index": 0, "kv": 0, "kv_write": 0}
    flops_index, flops_gather = {}, {}
    for t in range(4):
        scan_step = t - t % 2
        for g in range(8):
            row = src.amap.index_base + g * slots * key_bytes  # layer g's indexer keys, position 0
            source = SEL[scan_step, log_layer[anchor[g]]]
            used = set(source) | set(range(CTX[scan_step], CTX[t]))  # widened by the tokens decoded since
            expect["kv"] += len(used)
            expect["kv_write"] += 1
            flops_gather[t, g] = len(used)
            flops_index[t, g] = 0
            if g == anchor[g]:  # an anchor writes its new key every step, and scans at steps 0 and 2
                expect["index"] += span(row + (CTX[t] - 1) * key_bytes, key_bytes)
                if t % 2 == 0:
                    expect["index"] += span(row, CTX[t] * key_bytes)
                    flops_index[t, g] = CTX[t]
    assert lines_by_class(src) == expect
    phases = src.phases().set_index(["step", "layer", "kind"])
    for (t, g), f in flops_index.items():
        assert phases.loc[(t, g, INDEX_PHASE)].attention_flops == f
        assert phases.loc[(t, g, INDEX_PHASE)]["keys"] == f
        assert phases.loc[(t, g, 1)].attention_flops == flops_gather[t, g]
    # no lever: every layer writes and scans every step, and gathers its own log layer's selection
    plain = StreamSource(hand_log, geo, CONTIGUOUS)
    assert lines_by_class(plain) == {
        "index": sum(span(plain.amap.index_base + g * slots * key_bytes + (CTX[t] - 1) * key_bytes, key_bytes)
                     + span(plain.amap.index_base + g * slots * key_bytes, CTX[t] * key_bytes)
                     for t in range(4) for g in range(8)),
        "kv": sum(len(SEL[t, g * 4 // 8]) for t in range(4) for g in range(8)), "kv_write": 32}


def index_lines(ctx: int, key_bytes: int, page_tokens: int = 64) -> tuple[int, int]:
    """By hand, one request's indexer lines at one layer and step in a paged layout (pages of 64
    tokens start on a line whatever the key's bytes): the new key's write and the scan of ``ctx``
    keys, page by page."""
    write = span((ctx - 1) % page_tokens * key_bytes, key_bytes)
    scan = sum(-(-min(page_tokens, ctx - j) * key_bytes // 64) for j in range(0, ctx, page_tokens))
    return write, scan


@pytest.mark.parametrize(("share", "reuse", "key_bytes"), [(1, 1, 132), (4, 1, 132), (1, 3, 68), (3, 2, 68)])
def test_a_synthetic_log_at_deepseek_geometry_has_the_line_counts_of_the_formula(tmp_path, share, reuse, key_bytes):
    """2 requests, 7 steps, 4 log layers replayed by DeepSeek-V3.2's 61 (656 B KV: 11 lines a
    token), paged. Share N: geometry layer g attends with anchor N * (g // N)'s selection (all
    layers full attention), which is log layer ``4 * a // 61``'s; reuse S: step t with the
    selection of step t0 = t - t % S plus the ctx(t) - ctx(t0) tokens decoded since; an anchor
    writes its key every step and scans at t0 = t only; other layers read no indexer key."""
    from trace_gen.geometry import get_geometry
    from trace_gen.synthetic import write_synthetic_log

    log = IndexLog(write_synthetic_log(tmp_path / "syn", steps=7, layers=4, topk=32, prompt=250, requests=2))
    geo = replace(get_geometry("deepseek-v3.2", log.meta), index_bytes=key_bytes)
    src = StreamSource(log, geo, Layout(kind="paged", page_tokens=64, weights=False),
                       index_share=None if share == 1 else share, index_reuse=None if reuse == 1 else reuse)
    table = log.table(["step", "layer", "request", "ctx_len", "positions"]).to_pandas()
    size = {(t, layer, r): len(p) for t, layer, r, p in zip(table.step, table.layer, table.request, table.positions)}
    ctx = dict(zip(table.step, table.ctx_len))
    expect = {"index": 0, "kv": 0, "kv_write": 0}
    for t in range(7):
        t0 = t - t % reuse
        for g in range(61):
            a = share * (g // share)
            for r in range(2):
                expect["kv"] += 11 * (size[t0, 4 * a // 61, r] + ctx[t] - ctx[t0])
                expect["kv_write"] += 11
                if g == a:
                    write, scan = index_lines(ctx[t], key_bytes)
                    expect["index"] += write + (scan if t == t0 else 0)
    assert lines_by_class(src) == expect
    counted = src.line_counts().groupby("cls").lines.sum()
    assert {name: int(counted.get(code, 0)) for name, code in (("index", INDEX), ("kv", KV),
                                                                ("kv_write", KV_WRITE))} == expect
    summary = src.lever_summary()
    anchors = len(range(0, 61, share))
    assert summary["scan_share"] == pytest.approx(anchors / 61 / reuse)
    assert summary["index_bytes"] == key_bytes


def test_the_gather_reads_the_anchors_selection_and_the_index_phase_only_where_it_scans(hand_log):
    src = StreamSource(hand_log, GEO, CONTIGUOUS, index_share=4, index_reuse=2)
    acc = list(src.chunks())[0]
    _, layer, position = split_token_id(acc.token[acc.cls == KV])
    step, phase = acc.step[acc.cls == KV], acc.phase[acc.cls == KV]
    for t in range(4):
        for g in range(8):
            got = position[(step == t) & (layer == g)]
            source = SEL[t - t % 2, [0, 0, 0, 0, 2, 2, 2, 2][g]]
            assert sorted(got) == sorted(set(source) | set(range(CTX[t - t % 2], CTX[t])))
    index_phases = set(acc.phase[(acc.cls == INDEX) & (acc.phase % 2 == 0)])
    assert index_phases == {(t * 8 + g) * 2 for t in (0, 2) for g in (0, 4)}
    # a reusing step's key write goes into the gather phase, before the new token's KV
    odd = acc.phase[(acc.cls == INDEX) & (acc.step % 2 == 1)]
    assert set(odd) == {(t * 8 + g) * 2 + 1 for t in (1, 3) for g in (0, 4)}
    assert src.lever_summary()["scan_share"] == pytest.approx(2 / 8 / 2)
    assert phase.min() % 2 == 1


def lever_log(folder, levers: dict, rows):
    """A hand lever log: 1 request, 2 layers, k = 2, rows (step, layer, ctx, positions, own, recall, own_recall)."""
    meta = {"backbone": {"name": "hand", "config": {"num_hidden_layers": 2, "num_key_value_heads": 1,
                                                    "head_dim": 16}},
            "indexer": {"name": "hand", "topk": 2, "levers": levers}, "requests": 1,
            "steps": len(rows) // 2, "layers": 2}
    with IndexLogWriter(folder, meta, own=True) as w:
        for step, layer, ctx, pos, own, recall, own_recall in rows:
            w.add(0, step, layer, ctx, np.array(pos), recall, 0.9, np.array(own), own_recall)
        return IndexLog(w.close())


def test_a_log_decoded_with_a_lever_is_followed_unless_the_stream_overrides(tmp_path):
    # share 2: layer 1 attended with layer 0's selection; its own is beside it
    log = lever_log(tmp_path / "l", {"index_share": 2, "index_reuse": 1, "anchor_of": [0, 0]}, [
        (0, 0, 8, [1, 5], [1, 5], 0.8, 0.8), (0, 1, 8, [1, 5], [2, 7], 0.6, 0.9),
        (1, 0, 9, [2, 8], [2, 8], 0.7, 0.7), (1, 1, 9, [2, 8], [2, 3], 0.5, 0.6)])
    geo = Geometry("two", layers=2, kv_bytes=64, index_bytes=64)
    follow = StreamSource(log, geo, CONTIGUOUS)
    assert follow.levers.origin == "log" and follow.levers.indexer.tolist() == [1, 0]
    counts = lines_by_class(follow)
    assert counts == {"index": (1 + 8) + (1 + 9), "kv": 8, "kv_write": 4}  # layer 1 has no indexer
    summary = follow.lever_summary()
    assert summary["selection_kept"] == pytest.approx(5 / 8)  # layer 1 keeps 0 of 2, then 1 of 2
    assert summary["recall_kept"] == pytest.approx((0.8 + 0.6 + 0.7 + 0.5) / (0.8 + 0.9 + 0.7 + 0.6))
    same = StreamSource(log, geo, CONTIGUOUS, index_share=2)  # the log's own lever: followed too
    assert same.levers.origin == "log"
    over = StreamSource(log, geo, CONTIGUOUS, index_share=1)  # overridden: both scan, each its own selection
    assert over.levers.origin == "stream" and over.lever_summary()["selection_kept"] == 1.0
    assert lines_by_class(over) == {"index": 2 * (1 + 8) + 2 * (1 + 9), "kv": 8, "kv_write": 4}
    acc = list(over.chunks())[0]
    _, layer, position = split_token_id(acc.token[acc.cls == KV])
    assert sorted(position[(layer == 1) & (acc.step[acc.cls == KV] == 1)]) == [2, 3]


# --- a stream lever is the decode's lever ------------------------------------------------------

@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """tiny-gemma decodes that keep dense attention (observe only: the same tokens with and without
    a lever), without a lever and with share 2 + reuse 3."""
    from trace_gen.decode import DecodeConfig, decode

    folder = tmp_path_factory.mktemp("observed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSA_LLC_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        out = {}
        for name, levers in (("none", {}), ("lever", {"index_share": 2, "index_reuse": 3})):
            cfg = DecodeConfig(backbone="tiny-gemma", indexer="oracle", topk=4, prompt_tokens=40, steps=8,
                               requests=2, observe_only=True, **levers)
            out[name] = IndexLog(decode(cfg, folder / name, progress=False))
    return out


def gathered(src, log) -> dict:
    """(step, geometry layer, request) -> the positions the stream's gather reads."""
    out = {}
    for block, offsets, positions in src.levers.rows(log):
        rows = {(int(t), int(layer), int(r)): positions[offsets[i]:offsets[i + 1]].tolist()
                for i, (t, layer, r) in enumerate(zip(block.step, block.layer, block.request))}
        for t, _, r in rows:
            for g, source in enumerate(src.levers.gather_layer):
                out[t, g, r] = rows[t, int(source), r]
    return out


def test_a_stream_lever_gathers_exactly_what_the_decode_with_that_lever_attended_to(observed):
    from trace_gen.geometry import get_geometry

    none, lever = observed["none"], observed["lever"]
    geo = replace(get_geometry("native", none.meta), index_bytes=68)
    applied = StreamSource(none, geo, CONTIGUOUS, index_share=2, index_reuse=3)
    followed = StreamSource(lever, geo, CONTIGUOUS)
    assert (applied.levers.origin, followed.levers.origin) == ("stream", "log")
    assert applied.levers.gather_layer.tolist() == [0, 0, 2] and followed.levers.indexer.tolist() == [1, 0, 1]
    a, b = gathered(applied, none), gathered(followed, lever)
    assert a == b and any(len(p) > 4 for p in a.values())  # widened rows among them
    a, b = (np.concatenate([c.line for c in s.chunks()]) for s in (applied, followed))
    assert np.array_equal(a, b)
    assert applied.phases().equals(followed.phases())
    kept_a, kept_b = applied.lever_summary(), followed.lever_summary()
    assert kept_a["selection_kept"] == pytest.approx(kept_b["selection_kept"]) and kept_a["selection_kept"] < 1
    assert kept_a["recall_kept"] is None and 0 < kept_b["recall_kept"] < 1


def test_widening_drops_what_slid_out_of_a_sliding_window(observed):
    log = observed["none"]
    levers = StreamSource(log, replace(Geometry("n", 3, 64, 0)), CONTIGUOUS, index_reuse=8).levers
    assert levers.windows.tolist() == [24, 24, 0]  # tiny-gemma: two sliding layers of 24, one full
    for block, offsets, positions in levers.rows(log):
        for i in range(len(block.step)):
            row = positions[offsets[i]:offsets[i + 1]]
            assert len(row) >= min(4, block.ctx_len[i])
            if block.layer[i] < 2:
                assert row.min() >= block.ctx_len[i] - 24


# --- settings ------------------------------------------------------------------------------------

def test_stream_levers_are_stream_settings_of_simulate_and_stream(tmp_path, hand_log):
    res = run("simulate", "--index-log", hand_log.folder, "--geometry", "deepseek-v3.2", "--index-share", "2",
              "--index-reuse", "2", "--index-bytes", "68", "--llc-size", "1MiB", "--ways", "8", "--format", "json")
    assert res.exit_code == 0, res.output
    levers = json.loads(res.output)["levers"]
    assert (levers["origin"], levers["index_share"], levers["index_reuse"], levers["index_bytes"]) == (
        "stream", 2, 2, 68)
    res = run("simulate", "--index-log", hand_log.folder, "--index-share", "2", "--llc-size", "1MiB", "--ways", "8")
    assert res.exit_code == 0 and "indexer levers (on the stream): share 2, reuse 1" in res.output, res.output
    out = tmp_path / "t.parquet"
    assert run("stream", "--index-log", hand_log.folder, "--index-reuse", "2", "--format", "parquet",
               "--out", out).exit_code == 0
    for args, message in ((["--index-share", "0"], "--index-share must be at least 1"),
                          (["--index-bytes", "-1"], "--index-bytes must be at least 0")):
        res = run("simulate", "--index-log", hand_log.folder, *args)
        assert res.exit_code != 0 and message in res.output and res.output.count("\n") == 1, res.output


def test_a_spec_varies_stream_levers_and_names_the_section_of_an_ambiguous_exclude_key():
    base = '[decode]\nbackbone = "tiny-llama"\nindex_share = [1, 2]\n[stream]\nindex_share = [1, 2]\n' \
           'index_bytes = [132, 68]\n'
    spec = loads_spec(base + '[[exclude]]\ndecode.index_share = 2\nstream.index_share = 1\n')
    assert sorted((r["decode"]["index_share"], r["stream"]["index_share"], r["stream"]["index_bytes"])
                  for r in spec.runs) == [(1, 1, 68), (1, 1, 132), (1, 2, 68), (1, 2, 132), (2, 2, 68), (2, 2, 132)]
    with pytest.raises(UserError, match=r"key index_share is a key of \[decode\] and \[stream\]: name its section"):
        loads_spec(base + '[[exclude]]\nindex_share = 2\n')
    with pytest.raises(UserError, match="unknown key stream.share in"):
        loads_spec(base + '[[exclude]]\nstream.share = 2\n')


def test_a_lever_log_with_a_broken_plan_is_refused(tmp_path):
    log = lever_log(tmp_path / "l", {"index_share": 2, "anchor_of": [0, 1, 1]}, [
        (0, 0, 8, [1, 5], [1, 5], 0.8, 0.8), (0, 1, 8, [1, 5], [2, 7], 0.6, 0.9)])
    with pytest.raises(UserError, match="anchor_of is not an anchor at or before each of its 2 layers"):
        StreamSource(log, Geometry("two", 2, 64, 64), CONTIGUOUS)


def test_a_host_tier_run_takes_the_stream_key_bytes(tmp_path):
    """The host tier (harness.study.tierrun) keeps every request's indexer keys in HBM: 68 B keys
    shrink a request's bytes by layers x context x 64 B, with and without the tier."""
    from harness.cache.tier import TierConfig
    from harness.cache.timing import TimingConfig
    from harness.study.tierrun import tier_of_log
    from trace_gen.synthetic import write_synthetic_log

    log = write_synthetic_log(tmp_path / "syn", steps=3, layers=4, topk=32, prompt=250)
    timing, tier = TimingConfig.make("h100-sxm"), TierConfig()
    caps = {b: tier_of_log(log, {"geometry": "deepseek-v3.2", "batch": None, "index_bytes": b}, timing,
                           tier)["capacity"] for b in (None, 68)}
    for key in ("full_request_bytes", "tier_request_bytes"):
        assert caps[None][key] - caps[68][key] == 61 * caps[68]["context_tokens"] * (132 - 68)



# --- the report's section ------------------------------------------------------------------------

LEVER_SPEC = """
[decode]
backbone = "tiny-llama"
indexer = "oracle"
topk = 8
prompt_tokens = 64
steps = 4
index_share = [1, 2]

[stream]
geometry = "deepseek-v3.2"
page_tokens = 16
index_share = [1, 2]
index_bytes = [132, 68]

[llc]
size = "64KiB"
ways = 8
reserve_ways = 0

[[exclude]]
decode.index_share = 2
stream.index_share = 1
"""
SECTION = "Indexer levers: fewer indexer bytes against recall"


@pytest.fixture(scope="module")
def lever_sweep(tmp_path_factory):
    """Two tiny-llama decodes (no lever, share 2) and their six streams: share 1 and 2 on the
    stream of the first, the second's own lever, each with 132 and 68 B keys."""
    from harness.study.sweep import execute

    folder = tmp_path_factory.mktemp("levers")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("DSA_LLC_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        execute(loads_spec(LEVER_SPEC), folder, jobs=1, progress=False)
    return folder


def test_the_report_shows_every_levers_speed_up_against_its_measured_recall(lever_sweep, tmp_path):
    import pandas as pd

    from harness.study.report import build_report

    build_report(lever_sweep, tmp_path / "r", policies=False, locality=False)
    md = (tmp_path / "r" / "report.md").read_text()
    titles = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert titles.index(SECTION) < titles.index("All runs")
    results = pd.read_parquet(tmp_path / "r" / "results.parquet")
    table = pd.read_csv(tmp_path / "r" / "indexer_levers.csv")
    assert len(table) == len(results) == 6
    # by hand: the speed-up over the run without a lever and with the geometry's own 132 B keys ...
    base = results[(results.lever_origin == "none") & (results.index_bytes == 132)].iloc[0]
    # ... and the loss: the recall the decode with share 2 measured, sum(recall) / sum(own_recall)
    decoded = next(IndexLog(f) for f in (lever_sweep / "logs").iterdir()
                   if IndexLog(f).meta["indexer"].get("levers", {}).get("index_share") == 2)
    t = decoded.table(["recall", "own_recall"]).to_pandas()
    lost = 1 - t.recall.astype(float).sum() / t.own_recall.astype(float).sum()
    assert 0 < lost < 0.5
    applied = {"none": "-", "log": "decoded", "stream": "on the stream"}
    for r in results.itertuples():
        row = table[(table.share == r.lever_share) & (table["key bytes"] == r.index_bytes)
                    & (table.applied == applied[r.lever_origin])]
        assert len(row) == 1
        assert row["speed-up, 64KiB LLC"].item() == pytest.approx(base.step_time_cycles / r.step_time_cycles)
        assert row["attention part, 64KiB LLC"].item() == pytest.approx(
            base.attention_time_cycles / r.attention_time_cycles)
        assert row.lost.item() == pytest.approx(lost if r.lever_share == 2 else 0.0)
    # fewer indexer bytes make a faster attention part, sharing more so than FP4 keys
    attention = table.set_index(["share", "key bytes", "applied"])["attention part, 64KiB LLC"]
    assert attention[1, 132, "-"] == 1 < attention[1, 68, "-"] < attention[2, 132, "on the stream"] \
        < attention[2, 68, "on the stream"]
    best = table[table.lost <= 0.02].sort_values("speed-up, 64KiB LLC").iloc[-1]  # 68 B keys at least
    label = f"share {best.share}, reuse 1, {best['key bytes']} B" + (", decoded" if best.applied == "decoded" else "")
    assert f"the best setting within 2% loss is {label}" in md
    assert "![levers_tiny-llama](levers_tiny-llama.png)" in md and (tmp_path / "r" / "levers_tiny-llama.png").exists()
    assert "tiny-llama, Pareto front" in md
    page = (tmp_path / "r" / "report.html").read_text()
    assert SECTION in page


def test_a_sweep_without_levers_has_no_levers_section(tmp_path):
    from helpers import SPEC

    from harness.study.report import build_report
    from harness.study.sweep import execute

    execute(loads_spec(SPEC), tmp_path / "s", jobs=1, progress=False)
    build_report(tmp_path / "s", tmp_path / "r", policies=False, locality=False)
    assert SECTION not in (tmp_path / "r" / "report.md").read_text()


def test_the_example_sweeps_every_stream_lever_and_streams_a_decoded_lever_as_decoded():
    from pathlib import Path

    from harness.study.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parent.parent / "examples" / "indexer_levers.toml")
    decoded = {(r["decode"]["index_share"], r["decode"]["index_reuse"]) for r in spec.runs}
    assert decoded == {(1, 1), (2, 1), (4, 1), (1, 2), (1, 4)}
    per_log = {}
    for r in spec.runs:
        lever = (r["decode"]["index_share"], r["decode"]["index_reuse"])
        stream = (r["stream"]["index_share"], r["stream"]["index_reuse"], r["stream"]["index_bytes"])
        per_log.setdefault(lever, set()).add(stream)
    assert per_log[1, 1] == {(s, u, b) for s in (1, 2, 4) for u in (1, 2, 4) for b in (132, 68)}
    for (share, reuse), streams in per_log.items():
        if (share, reuse) != (1, 1):  # its own lever, followed, with either key size
            assert streams == {(share, reuse, 132), (share, reuse, 68)}
    assert {r["stream"]["geometry"] for r in spec.runs} == {"deepseek-v3.2"}
