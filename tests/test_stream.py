"""Access streams from index logs: hand-computed addresses, token mapping, byte counts,
the gem5 and Parquet writers, and bad input."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import run, write_log

from harness.cli import cli
from harness.core.accesstrace import read_access_trace
from harness.core.errors import UserError
from harness.core.traffic import INDEX, KV, KV_WRITE, TRAFFIC_CLASSES, WEIGHTS
from trace_gen import gem5trace
from trace_gen.geometry import PRESETS, Geometry, Weights
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource, split_token_id, token_id
from trace_gen.synthetic import write_synthetic_log

# A tiny log: 2 requests, 2 steps, 2 layers, k = 2. Request 0 has a 4-token prompt (ctx_len 5
# then 6), request 1 a 2-token prompt (ctx_len 3 then 4).
ROWS = [
    (0, 0, 0, 5, [0, 3]), (1, 0, 0, 3, [1, 2]), (0, 0, 1, 5, [2, 4]), (1, 0, 1, 3, [0, 2]),
    (0, 1, 0, 6, [3, 5]), (1, 1, 0, 4, [0, 3]), (0, 1, 1, 6, [1, 4]), (1, 1, 1, 4, [2, 3]),
]
# KV entry 100 B -> token stride 128 B (2 lines); indexer key 16 B.
TINY = Geometry("tiny", layers=2, kv_bytes=100, index_bytes=16)


@pytest.fixture
def tiny_log(tmp_path):
    return IndexLog(write_log(tmp_path / "log", ROWS, requests=2, steps=2, layers=2, topk=2))


def requests_of(src):
    chunks = list(src.chunks(as_lines=False))
    return pd.concat([pd.DataFrame({"addr": c.addr, "size": c.size, "cls": c.cls, "write": c.write,
                                    "token": c.token, "step": c.step, "phase": c.phase,
                                    "request": c.request}) for c in chunks],
                     ignore_index=True)


def test_contiguous_addresses_by_hand(tiny_log):
    src = StreamSource(tiny_log, TINY, Layout(kind="contiguous"))
    # max_ctx 6: each (request, layer) owns 6 slots; KV region = 2 layers * 2 req * 6 * 128 B
    # = 3072 B, aligned to 4096: the index region starts at 4096.
    kv = lambda r, g, p: (g * 2 * 6 + r * 6 + p) * 128  # noqa: E731
    ix = lambda r, g, p: 4096 + (g * 2 * 6 + r * 6 + p) * 16  # noqa: E731
    df = requests_of(src)
    first = df.iloc[:10]  # step 0, layer 0: the index phase of both requests, then the gather phase
    expect = [
        (ix(0, 0, 4), 16, INDEX, 1, -1, 0),              # request 0: new token's indexer key
        (ix(0, 0, 0), 5 * 16, INDEX, 0, -1, 0),          # scan of 5 keys, one contiguous read
        (ix(1, 0, 2), 16, INDEX, 1, -1, 0),              # request 1 (ctx 3)
        (ix(1, 0, 0), 3 * 16, INDEX, 0, -1, 0),
        (kv(0, 0, 4), 100, KV_WRITE, 1, token_id(0, 0, 4), 1),  # gather: request 0's new KV, its selection
        (kv(0, 0, 0), 100, KV, 0, token_id(0, 0, 0), 1),
        (kv(0, 0, 3), 100, KV, 0, token_id(0, 0, 3), 1),
        (kv(1, 0, 2), 100, KV_WRITE, 1, token_id(1, 0, 2), 1),  # request 1's
        (kv(1, 0, 1), 100, KV, 0, token_id(1, 0, 1), 1),
        (kv(1, 0, 2), 100, KV, 0, token_id(1, 0, 2), 1),
    ]
    cols = ["addr", "size", "cls", "write", "token", "phase"]
    assert [tuple(x) for x in first[cols].itertuples(index=False)] == expect
    assert src.amap.index_base == 4096


def test_paged_addresses_by_hand(tiny_log):
    src = StreamSource(tiny_log, TINY, Layout(kind="paged", page_tokens=2))
    # prefill: request 0's prompt (positions 0-3) gets pages 0, 1; request 1's (0-1) page 2.
    # decode: position 2 of request 1 -> page 3; position 4 of request 0 -> page 4.
    assert src.amap.phys[0].tolist() == [0, 1, 4]
    assert src.amap.phys[1].tolist()[:2] == [2, 3]
    slots = 5 * 2  # physical pages * page_tokens, per layer
    kv = lambda g, page, off: (g * slots + page * 2 + off) * 128  # noqa: E731
    ix = lambda g, page, off: 4096 + (g * slots + page * 2 + off) * 16  # noqa: E731
    assert src.amap.index_base == 4096  # KV region: 2 layers * 10 slots * 128 B, aligned up
    df = requests_of(src)
    # layer 0 takes 13 requests: the index phase 4 for request 0 (1 + 3 pages) and 3 for request 1
    # (1 + 2 pages), the gather phase 3 for each (2 + 1); in layer 1 request 0's index requests
    # come first, then request 1's, then request 0's gather requests
    step0 = df[df.step == 0]
    layer1_req0 = pd.concat([step0.iloc[13:17], step0.iloc[20:23]])
    expect = [
        (ix(1, 4, 0), 16, INDEX, 1, 2),                    # new token, position 4 = page 4 offset 0
        (ix(1, 0, 0), 32, INDEX, 0, 2), (ix(1, 1, 0), 32, INDEX, 0, 2), (ix(1, 4, 0), 16, INDEX, 0, 2),
        (kv(1, 4, 0), 100, KV_WRITE, 1, 3),                        # the new token's KV
        (kv(1, 1, 0), 100, KV, 0, 3), (kv(1, 4, 0), 100, KV, 0, 3),   # positions 2 and 4
    ]
    assert [tuple(x) for x in layer1_req0[["addr", "size", "cls", "write", "phase"]].itertuples(index=False)] == expect


def test_shuffled_pages_are_a_permutation(tiny_log):
    a = StreamSource(tiny_log, TINY, Layout(kind="paged", page_tokens=2))
    b = StreamSource(tiny_log, TINY, Layout(kind="paged", page_tokens=2, page_order="shuffled", seed=3))
    used = [(0, j) for j in range(3)] + [(1, j) for j in range(2)]
    pa_, pb = [a.amap.phys[x] for x in used], [b.amap.phys[x] for x in used]
    assert sorted(pb) == sorted(pa_) and pb != pa_


@pytest.mark.parametrize("layout", [Layout(kind="contiguous"), Layout(kind="paged", page_tokens=16),
                                    Layout(kind="paged", page_tokens=64, page_order="shuffled", seed=1, weights=True)])
def test_every_kv_line_maps_back_to_its_token(tmp_path, layout):
    log = IndexLog(write_synthetic_log(tmp_path / "s", steps=4, layers=3, topk=24, prompt=200, requests=3))
    geo = Geometry("g", layers=5, kv_bytes=656, index_bytes=132, weights=Weights(5 * 4096))
    src = StreamSource(log, geo, layout)
    for c in src.chunks(as_lines=True):
        kv = (c.cls == KV) | (c.cls == KV_WRITE)
        r, g, p = split_token_id(c.token[kv])
        start = src.amap.kv_addr(r, g, p) >> 6
        assert ((c.line[kv] >= start) & (c.line[kv] < start + geo.lines_per_token)).all()
        assert (c.line[kv] < src.amap.index_base >> 6).all()
        assert (c.line[~kv] >= src.amap.index_base >> 6).all()
        # distinct tokens never share a line
        lines = pd.DataFrame({"line": c.line[kv], "tok": c.token[kv]}).drop_duplicates()
        assert not lines.line.duplicated().any()


def test_bytes_per_class_and_step_follow_the_geometry(tmp_path):
    log = IndexLog(write_synthetic_log(tmp_path / "s", steps=3, layers=2, topk=16, prompt=100, requests=2))
    geo = Geometry("g", layers=4, kv_bytes=656, index_bytes=132, weights=Weights(4 * 10_000))
    src = StreamSource(log, geo, Layout(kind="paged", page_tokens=16, weights=True))
    df = requests_of(src)
    rows = log.dataframe()
    for step, part in df.groupby("step"):
        r = rows[rows.step == step]
        k = r.positions.map(len)
        sel = sum(k[r.layer == geo.layer_map(2)[g]].sum() for g in range(4))
        ctx = sum(r.ctx_len[r.layer == geo.layer_map(2)[g]].sum() for g in range(4))
        by = part.groupby("cls")["size"].sum()
        assert by[KV] == sel * 656
        assert by[KV_WRITE] == 4 * 2 * 656
        assert by[INDEX] == ctx * 132 + 4 * 2 * 132
        assert by[WEIGHTS] == 4 * geo.weight_bytes(2) == 4 * 10_048  # whole lines per layer


def test_layer_map_stretches_the_log():
    assert Geometry("g", 5, 64, 64).layer_map(2).tolist() == [0, 0, 0, 1, 1]
    assert PRESETS["deepseek-v3.2"].layer_map(30)[[0, 60]].tolist() == [0, 29]
    assert PRESETS["deepseek-v3.2"].token_stride == 704


def test_gem5_trace_round_trip(tmp_path, tiny_log):
    src = StreamSource(tiny_log, TINY, Layout(kind="paged", page_tokens=2))
    lines = np.concatenate([c.line for c in src.chunks()])
    writes = np.concatenate([c.write for c in src.chunks()])
    path = tmp_path / "t.pb.gz"
    from trace_gen.writers import write_gem5_trace

    n = write_gem5_trace(path, src.chunks(), {"tool": "test"}, tick_spacing=500)
    header, packets = gem5trace.read_packet_trace(path)
    assert header.tick_freq == 10**12
    got = [(p.tick, p.cmd, p.addr, p.size) for p in packets]
    assert n == len(got) == len(lines)
    assert got == [(i * 500, 4 if w else 1, int(a) * 64, 64) for i, (a, w) in enumerate(zip(lines, writes))]
    assert json.loads((tmp_path / "t.pb.gz.json").read_text())["packets"] == n


def test_bulk_encoder_equals_protobuf_serialisation():
    from harness.core.accesstrace import LineAccesses

    lines = np.array([0, 1, 1 << 34, 12345678901], dtype=np.int64)
    acc = LineAccesses(lines, np.array([0, 1, 0, 1], np.uint8), np.zeros(4, np.uint8),
                       np.zeros(4, np.int64), np.zeros(4, np.int64))
    blob = gem5trace._encode(acc, 7, 1_000_000)
    expect = b""
    for i, (line, w) in enumerate(zip(lines.tolist(), [0, 1, 0, 1])):
        body = gem5trace.Packet(tick=(7 + i) * 1_000_000, cmd=4 if w else 1, addr=line * 64,
                                size=64).SerializeToString()
        expect += gem5trace._varint(len(body)) + body
    assert blob == expect


def test_simulating_the_log_equals_simulating_its_parquet_stream(tmp_path):
    log_dir = write_synthetic_log(tmp_path / "s", steps=4, layers=3, topk=32, prompt=300, requests=2)
    out = tmp_path / "s.parquet"
    args = ["--geometry", "deepseek-v3.2", "--layout", "paged", "--page-tokens", "16",
            "--page-order", "shuffled", "--no-weights"]  # weights: see test_weight_scans
    res = CliRunner().invoke(cli, ["stream", "--index-log", str(log_dir), *args, "--format", "parquet",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    sim = ["--llc-size", "1MiB", "--ways", "16", "--reserve-ways", "6", "--format", "json"]
    a = json.loads(CliRunner().invoke(cli, ["simulate", "--index-log", str(log_dir), *args, *sim]).output)
    b = json.loads(CliRunner().invoke(cli, ["simulate", "--access-trace", str(out), *sim]).output)
    # the trace keeps each access's phase (not the compute that follows it): equal memory time
    for key in ("accesses", "hits", "misses", "by_class", "kv_tokens", "evictions", "bounds",
                "memory_cycles_per_step"):
        assert a[key] == b[key], key
    assert a["compute_cycles_per_step"] > 0 == b["compute_cycles_per_step"]
    assert a["kv_tokens"]["accesses"] == 4 * 61 * 2 * 32


def test_chunking_does_not_change_the_stream(tmp_path):
    log = IndexLog(write_synthetic_log(tmp_path / "s", steps=5, layers=2, topk=8, prompt=60))
    # the weights as scans (one record per layer): line by line, llama's 15 GB would not fit
    src = StreamSource(log, PRESETS["llama-3.1-8b"], Layout(kind="paged", page_tokens=16))
    big = np.concatenate([c.line for c in src.chunks(chunk_lines=1 << 22, weight_scans=True)])
    small = list(src.chunks(chunk_lines=1, weight_scans=True))
    assert len(small) > 10
    assert np.array_equal(big, np.concatenate([c.line for c in small]))


def test_bad_input(tmp_path, tiny_log):
    log_dir = tiny_log.folder
    out = tmp_path / "o.parquet"
    cases = [
        (["--geometry", "gpt-9"], "unknown geometry 'gpt-9'"),
        (["--page-tokens", "0"], "--page-tokens must be at least 1, got 0"),
        (["--page-tokens", "-4"], "--page-tokens must be at least 1, got -4"),
        (["--page-tokens", "x"], "'x' is not a valid integer"),
    ]
    for args, message in cases:
        res = run("stream", "--index-log", log_dir, "--format", "parquet", "--out", out, *args)
        assert res.exit_code != 0 and message in res.output and res.output.count("\n") == 1, res.output
        assert not out.exists()
    # unknown schema version
    import pyarrow.parquet as pq

    t = pq.read_table(log_dir / "index_log.parquet")
    meta = json.loads(t.schema.metadata[b"dsa_llc.index_log"])
    meta["schema_version"] = 99
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(t.replace_schema_metadata({b"dsa_llc.index_log": json.dumps(meta)}), bad / "index_log.parquet")
    res = run("simulate", "--index-log", bad)
    assert res.exit_code != 0 and "schema version 99" in res.output
    # truncated file
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    data = (log_dir / "index_log.parquet").read_bytes()
    (trunc / "index_log.parquet").write_bytes(data[: len(data) // 2])
    res = run("simulate", "--index-log", trunc)
    assert res.exit_code != 0 and "corrupt or truncated" in res.output and "Traceback" not in res.output
    res = run("simulate", "--index-log", tmp_path / "nowhere")
    assert res.exit_code != 0 and "does not exist" in res.output
    with pytest.raises(UserError, match="page size"):
        Layout(kind="paged", page_tokens=2.5).validate()


def test_trace_file_says_what_made_it(tmp_path, tiny_log):
    out = tmp_path / "t.parquet"
    assert run("stream", "--index-log", tiny_log.folder, "--format", "parquet", "--out", out).exit_code == 0
    import pyarrow.parquet as pq

    prov = json.loads(pq.read_schema(out).metadata[b"dsa_llc.provenance"])
    assert prov["tool"].startswith("dsa-llc") and prov["geometry"]["name"] == "native:hand"
    chunk = next(read_access_trace(out))
    assert set(np.unique(chunk.cls)) <= set(range(len(TRAFFIC_CLASSES)))


def test_per_request_counts_add_up_to_the_class_counts(tiny_log):
    from harness.cache.llc import LLCConfig
    from harness.cache.simulate import simulate

    src = StreamSource(tiny_log, TINY, Layout(kind="paged", page_tokens=2))
    r = simulate(src.chunks(), LLCConfig.make("4KiB", 4, 2, "token-lru"), batch=2)
    assert len(r["by_request"]) == 2
    for name, c in r["by_class"].items():
        assert sum(q.get(name, {}).get("accesses", 0) for q in r["by_request"]) == c["accesses"]
        assert sum(q.get(name, {}).get("hits", 0) for q in r["by_request"]) == c["hits"]
    # each request's kv lines: its selections (2 lines per token) over both steps and layers
    rows = tiny_log.dataframe()
    for q in (0, 1):
        selected = rows[rows.request == q].positions.map(len).sum()
        assert r["by_request"][q]["kv"]["accesses"] == 2 * selected


def test_a_larger_batch_reuses_the_logs_selections_at_addresses_of_its_own(tmp_path):
    log = IndexLog(write_synthetic_log(tmp_path / "s", steps=2, layers=2, topk=8, prompt=64, requests=2))
    geo = Geometry("g", layers=2, kv_bytes=656, index_bytes=132)
    one = requests_of(StreamSource(log, geo, Layout(kind="paged", page_tokens=16)))
    five = StreamSource(log, geo, Layout(kind="paged", page_tokens=16), batch=5)
    df = requests_of(five)
    assert sorted(df.request.unique()) == [0, 1, 2, 3, 4]
    for v in range(5):  # request v reads what the log's request v mod 2 selected, in its own pages
        mine, src = df[df.request == v], one[one.request == v % 2]
        assert (mine.cls.to_numpy() == src.cls.to_numpy()).all()
        assert (mine["size"].to_numpy() == src["size"].to_numpy()).all()
        kv = mine.cls.to_numpy() == KV
        r, _, p = split_token_id(mine.token.to_numpy()[kv])
        assert (r == v).all() and (p == split_token_id(src.token.to_numpy()[kv])[2]).all()
    kv = df[df.cls == KV]
    assert not kv.groupby("addr").request.nunique().gt(1).any()  # no two requests share a KV address
    phases = five.phases()
    assert phases.flops.sum() == pytest.approx(2.5 * StreamSource(log, geo, Layout()).phases().flops.sum())
