"""`dsa-harness simulate --access-trace` through click's CliRunner, good and bad input."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import one_error, run


@pytest.fixture
def kv_trace(tmp_path):
    """Parquet trace: 2000 kv token reads (4 lines each) over 300 tokens, plus an index stream."""
    tok = (np.arange(2000) * 7919) % 300  # consecutive reads never repeat a token
    kv = pd.DataFrame({"addr": tok * 256 + (1 << 30), "size": 256, "op": "r", "cls": "kv",
                       "token": tok, "step": np.arange(2000) // 100})
    idx = pd.DataFrame({"addr": np.arange(2000) * 64, "size": 64, "op": "R", "cls": "index",
                        "token": -1, "step": np.arange(2000) // 100})
    df = pd.concat([kv, idx]).sort_values("step", kind="stable")
    path = tmp_path / "trace.parquet"
    df.to_parquet(path)
    return path


def test_json_output_has_the_documented_keys(kv_trace):
    res = run("simulate", "--access-trace", kv_trace, "--llc-size", "64KiB", "--ways", "16",
              "--reserve-ways", "4", "--policy", "token-lru", "--format", "json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    for key in ("accesses", "hits", "misses", "hit_rate", "mshr_merged", "memory_reads", "mshr_window", "by_class",
                "kv_tokens", "evictions", "step_time_cycles", "tokens_per_s", "memory_wait_share", "timing", "config"):
        assert key in r
    assert r["accesses"] == 2000 * 4 + 2000
    assert set(r["by_class"]) == {"kv", "index"}
    assert r["by_class"]["kv"]["accesses"] == 8000
    for c in [r, *r["by_class"].values()]:  # memory reads are the misses that merged into no fill in flight
        assert set(c) >= {"accesses", "hits", "misses", "hit_rate", "mshr_merged", "memory_reads"}
        assert c["memory_reads"] == c["misses"] - c["mshr_merged"]
    assert r["mshr_window"] == 11_931  # h100-sxm: its in-flight limit (below 80/cycle x 400 cycles)
    assert set(r["kv_tokens"]) >= {"accesses", "full_hits", "partial_hits", "misses"}
    assert r["kv_tokens"]["accesses"] == 2000
    assert r["config"]["llc"] == {"size": 65536, "ways": 16, "reserve_ways": 4, "policy": "token-lru",
                                  "whole_token_eviction": True, "line": 64, "sample_sets": None,
                                  "reserve_index": 0, "reserve_weights": 0, "hint_kv": "normal", "hint_index": "normal",
                                  "hint_weights": "normal", "set_aside": None, "what_if": False}
    assert r["steps"] == 20 and r["step_time_cycles"] > 0
    assert r["bounds"]["capacity_tokens"] == 64 * 4 // 4


def test_formats_agree(kv_trace, tmp_path):
    out = tmp_path / "r.json"
    res = run("simulate", "--access-trace", kv_trace, "--llc-size", "64KiB", "--ways", "16", "--reserve-ways", "2",
              "--no-whole-token-eviction", "--out", out)
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert f"{r['hits']:,}" in res.output and "no whole-token eviction" in res.output
    assert r["config"]["llc"]["whole_token_eviction"] is False


def test_csv_npy_and_parquet_agree(tmp_path):
    addrs = np.random.default_rng(0).integers(0, 1 << 20, 5000).astype(np.uint64)
    np.save(tmp_path / "a.npy", addrs)
    pd.DataFrame({"addr": addrs.astype(np.int64)}).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame({"addr": addrs.astype(np.int64)}).to_csv(tmp_path / "a.csv", index=False)
    results = [json.loads(run("simulate", "--access-trace", tmp_path / f"a.{ext}", "--llc-size",
                              "16KiB", "--ways", "16", "--format", "json").output) for ext in ("npy", "parquet", "csv")]
    assert len({(r["hits"], r["misses"]) for r in results}) == 1
    assert results[0]["accesses"] == 5000


def test_requests_spanning_lines_count_every_line(tmp_path):
    # 100 bytes starting at byte 60 touch lines 0, 1 and 2
    pd.DataFrame({"addr": [60, 60], "size": [100, 100]}).to_csv(tmp_path / "t.csv", index=False)
    r = json.loads(run("simulate", "--access-trace", tmp_path / "t.csv", "--llc-size", "4KiB", "--ways", "16",
                       "--format", "json").output)
    assert (r["accesses"], r["hits"], r["misses"]) == (6, 3, 3)


def test_a_request_spanning_many_lines_is_simulated_in_pieces(tmp_path):
    from harness.core.accesstrace import Requests

    r = Requests.of(np.array([100, 1 << 20]), size=np.array([64 * 1000, 130]))
    pieces = list(r.line_chunks(max_lines=300))
    assert [len(p) for p in pieces] == [300, 300, 300, 104]
    whole = np.concatenate([p.line for p in pieces])
    assert np.array_equal(whole, r.lines().line) and len(whole) == 1001 + 3


def bad(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, pd.DataFrame):
        content.to_parquet(path) if name.endswith(".parquet") else content.to_csv(path, index=False)
    elif isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("name, content, args, message", [
    ("missing.npy", None, [], "does not exist"),
    ("noaddr.parquet", pd.DataFrame({"address": [1, 2]}), [], "no 'addr' column"),
    ("neg.npy", np.array([5, -3], dtype=np.int64), [], "negative address at row 1"),
    ("float.parquet", pd.DataFrame({"addr": [1.5, 2.0]}), [], "must hold integers"),
    ("floatnpy.npy", np.array([1.5]), [], "must be integers"),
    ("op.csv", pd.DataFrame({"addr": [1, 2], "op": ["R", "X"]}), [], "op must be R or W"),
    ("cls.csv", pd.DataFrame({"addr": [1], "cls": ["kvv"]}), [], "unknown traffic class 'kvv'"),
    ("corrupt.parquet", b"PAR1garbage", [], "cannot read access trace"),
    ("corrupt.npy", b"\x93NUMPY garbage", [], "cannot read access trace"),
    ("ok.npy", np.array([1, 2], dtype=np.uint64), ["--reserve-ways", "17"], "reserve_ways"),
    ("ok.npy", np.array([1, 2], dtype=np.uint64), ["--llc-size", "1000", "--ways", "16"], "not a multiple"),
    ("ok.npy", np.array([1, 2], dtype=np.uint64), ["--policy", "mru"], "unknown policy 'mru'"),
    ("trace.txt", b"1,2\n", [], "unknown format"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, name, content, args, message):
    path = tmp_path / name if content is None else bad(tmp_path, name, content)
    out = tmp_path / "result.json"
    res = run("simulate", "--access-trace", path, "--out", out, *args)
    assert res.exit_code != 0
    assert message in res.output
    assert res.output.strip().count("\n") == 0, res.output  # one line
    assert "Traceback" not in res.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".result.json")]


def test_bad_traces_are_one_line(tmp_path):
    cases = [(bad(tmp_path, "empty.npy", np.zeros(0, np.uint64)), "is empty"),
             (bad(tmp_path, "header.csv", b"addr,size\n"), "is empty"),
             (bad(tmp_path, "end.parquet", pd.DataFrame({"addr": [(1 << 63) - 8], "size": [64]})),
              "ends beyond 2**63"),
             (bad(tmp_path, "huge.parquet", pd.DataFrame({"addr": [0], "size": [100 << 30]})), "exceeds"),
             (bad(tmp_path, "nulls.parquet", pd.DataFrame({"addr": [1, None]}, dtype="Int64")), "is empty at row 1")]
    for path, message in cases:
        one_error(run("simulate", "--access-trace", path, "--llc-size", "64KiB", "--out", tmp_path / "r.json"), message)
    assert not (tmp_path / "r.json").exists()
