"""The gem5 backend. Plain tests parse real gem5 outputs committed under tests/data (no gem5
needed); tests marked gem5 run the user's gem5 (--gem5 PATH or GEM5=PATH) and skip without it."""

import ast
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cache.llc import RESERVED_POLICIES, LLCConfig
from harness.cache.simulate import simulate
from harness.cache.timing import TimingConfig
from harness.core.accesstrace import LineAccesses
from harness.core.errors import UserError
from harness.core.traffic import CLASS_CODE, KV, KV_WRITE
from harness.gem5.binary import CONFIG_DIR, EXTENSION_DIR, GEM5_POLICIES, check_extension, find_gem5
from harness.gem5.replay import REPLAY_POLICIES, simulate_gem5
from harness.gem5.stats import parse_stats, results_from_stats
from trace_gen.gem5trace import read_packet_trace
from trace_gen.geometry import Geometry
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log

DATA = Path(__file__).parent / "data"
RUNS = DATA / "gem5_runs"
CASES = sorted(p.name for p in RUNS.iterdir() if (p / "case.json").exists())


def case_classes(case: dict) -> list[str]:
    """Traffic classes in generator order (the order of --trace arguments)."""
    args = case["gem5_args"]
    return [Path(args[i + 1]).name.split(".")[0] for i, a in enumerate(args) if a == "--trace"]


def raw_stat(text: str, name: str) -> int:
    """A stat's value read straight from stats.txt's text (independent of the parser)."""
    return int(re.search(rf"^{re.escape(name)}\s+(\d+)", text, re.M).group(1))


@pytest.mark.parametrize("name", CASES)
def test_committed_gem5_stats_parse_into_the_recorded_results(name):
    case = json.loads((RUNS / name / "case.json").read_text())
    text = (RUNS / name / "stats.txt").read_text()
    stats = parse_stats(RUNS / name / "stats.txt")
    assert set(stats.columns) == {"dump", "stat", "subname", "value"} and stats.dump.max() == 0
    r = results_from_stats(stats, case_classes(case))
    assert r["hits"] == raw_stat(text, "system.llc.overallHits::total")
    assert r["misses"] == raw_stat(text, "system.llc.overallMisses::total")
    assert r["evictions"] == raw_stat(text, "system.llc.replacements")
    assert r["writebacks"] == raw_stat(text, "system.llc.writebacks::total")
    recorded = case["gem5"]["by_class"]  # recorded before MSHR merging's keys existed
    assert {c: {k: v[k] for k in recorded[c]} for c, v in r["by_class"].items()} == recorded
    assert all(v["mshr_merged"] == 0 for v in r["by_class"].values())  # a serial replay merges nothing
    assert sum(c["accesses"] for c in r["by_class"].values()) == r["hits"] + r["misses"]
    assert r["gem5"]["suppressed_packets"] == 0 and r["gem5"]["sim_ticks"] > 0


def replay_traces(case: dict) -> LineAccesses:
    """The committed per-class packet traces merged back into one stream by tick; kv token ids
    follow from the address map (token = (addr - kv_base) // stride), as gem5's extension does."""
    frames = []
    for cls in case_classes(case):
        _, packets = read_packet_trace(RUNS / "traces" / f"{cls}.pb.gz")
        p = pd.DataFrame([(q.tick, q.addr, q.cmd) for q in packets], columns=["tick", "addr", "cmd"])
        p["cls"] = CLASS_CODE[cls]
        frames.append(p)
    df = pd.concat(frames).sort_values("tick", kind="stable")
    amap = case["address_map"]
    kv = df.cls.isin([KV, KV_WRITE]).to_numpy()
    token = np.where(kv, (df.addr.to_numpy() - amap["kv_base"]) // amap["token_stride"], -1)
    return LineAccesses((df.addr.to_numpy() >> 6).astype(np.int64), (df.cmd == 4).to_numpy().astype(np.uint8),
                        df.cls.to_numpy().astype(np.uint8), token.astype(np.int64),
                        np.zeros(len(df), dtype=np.int64))


@pytest.mark.parametrize("name", CASES)
def test_builtin_reproduces_committed_gem5_runs_exactly(name):
    case = json.loads((RUNS / name / "case.json").read_text())
    stream = replay_traces(case)
    cfg = LLCConfig(**case["llc"])
    # the replay is serial (one request in flight): nothing merges, as in gem5
    b = simulate([stream], cfg, TimingConfig.make("h100-sxm", max_outstanding=1), bounds=False)
    g = results_from_stats(parse_stats(RUNS / name / "stats.txt"), case_classes(case))
    assert (b["hits"], b["misses"]) == (g["hits"], g["misses"])
    assert b["by_class"] == g["by_class"]
    assert (b["evictions"], b["writebacks"]) == (g["evictions"], g["writebacks"])


@pytest.mark.parametrize("case", ["zipf_64x8", "mixed_256x16"])
def test_reference_stats_parse(case):
    meta = json.loads((DATA / "gem5_reference" / case / "case.json").read_text())
    stats = parse_stats(DATA / "gem5_reference" / case / "stats.txt")
    r = results_from_stats(stats, ["other"])
    assert (r["hits"], r["misses"], r["accesses"]) == (meta["gem5_hits"], meta["gem5_misses"], meta["gem5_accesses"])


def test_overlapping_reference_shows_mshr_effects():
    stats = parse_stats(DATA / "gem5_reference" / "zipf_1M_overlapping" / "stats.txt")
    r = results_from_stats(stats, ["other"])
    assert r["accesses"] == 1_000_000 and r["hits"] + r["misses"] == 1_000_000
    assert r["gem5"]["mshr_hits"] > 0  # requests 1 ns apart merge in MSHRs


def test_truncated_and_empty_stats_are_one_line_errors(tmp_path):
    text = (RUNS / "lru_r0" / "stats.txt").read_text()
    cut = tmp_path / "stats.txt"
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(UserError, match="truncated"):
        parse_stats(cut)
    cut.write_text("")
    with pytest.raises(UserError, match="no gem5 statistics"):
        parse_stats(cut)
    with pytest.raises(UserError, match="wrote no stats file"):
        parse_stats(tmp_path / "missing.txt")


def test_the_gem5_configs_list_the_policies_the_extension_declares():
    # GEM5_POLICIES comes from DsaLlc.py's enum; the config files that run inside gem5 (and
    # cannot import the harness) and the C++ agree with it
    def parse(name):
        return ast.parse((CONFIG_DIR / name).read_text())

    assert GEM5_POLICIES[0] == "lru" and set(GEM5_POLICIES) <= set(RESERVED_POLICIES)
    assert next(ast.literal_eval(n.value) for n in parse("components.py").body if isinstance(n, ast.Assign)
                and n.targets[0].id == "RESERVED_POLICIES") == GEM5_POLICIES
    assert next(tuple(ast.literal_eval(k.value)) for n in ast.walk(parse("replay_llc.py"))
                if isinstance(n, ast.Call) and n.args and getattr(n.args[0], "value", None) == "--policy"
                for k in n.keywords if k.arg == "choices") == REPLAY_POLICIES
    cxx = (EXTENSION_DIR / "token_policy_tags.cc").read_text()
    assert all(f"KvWayPolicy::{p.replace('-', '_')}" in cxx for p in GEM5_POLICIES)


def test_no_binary_and_a_binary_that_is_not_gem5(monkeypatch, tmp_path):
    monkeypatch.delenv("GEM5", raising=False)
    with pytest.raises(UserError, match="no gem5 binary"):
        find_gem5(None)
    with pytest.raises(UserError, match="does not exist or is not executable"):
        find_gem5(str(tmp_path / "gem5.opt"))
    with pytest.raises(UserError, match="does not run gem5 config scripts"):
        check_extension(find_gem5("true"))


# --- with a real gem5 ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    """Two small DSA streams with asymmetric (11-line) and 64-line tokens."""
    tmp = tmp_path_factory.mktemp("gem5streams")
    a = IndexLog(write_synthetic_log(tmp / "a", steps=10, layers=2, topk=16, prompt=32, requests=2))
    b = IndexLog(write_synthetic_log(tmp / "b", steps=6, layers=3, topk=12, prompt=48, requests=1, seed=4))
    return {"deepseek-like": StreamSource(a, Geometry("g", 3, 656, 132), Layout(kind="paged", page_tokens=8, page_order="shuffled", seed=2)),
            "gqa-like": StreamSource(b, Geometry("h", 2, 1024, 68), Layout(kind="contiguous"))}


@pytest.mark.gem5
@pytest.mark.parametrize("size, ways, reserve, policy, whole", [
    ("128KiB", 8, 0, "lru", False), ("128KiB", 8, 4, "lru", False),
    ("128KiB", 8, 4, "token-lru", False), ("128KiB", 8, 4, "token-lru", True),
    ("64KiB", 16, 12, "token-lru", True), ("64KiB", 4, 3, "token-lru", True),
])
@pytest.mark.parametrize("stream", ["deepseek-like", "gqa-like"])
def test_gem5_equals_builtin_on_non_overlapping_streams(gem5_binary, streams, stream, size, ways, reserve,
                                                        policy, whole, tmp_path):
    src = streams[stream]
    cfg = LLCConfig.make(size, ways, reserve, policy, whole)
    g = simulate_gem5(src.chunks(), cfg, src.amap.describe(), gem5_binary, outdir=tmp_path)
    b = simulate(src.chunks(), cfg, bounds=False)
    assert b["by_class"] == g["by_class"]
    assert (b["hits"], b["misses"], b["evictions"], b["writebacks"]) == \
        (g["hits"], g["misses"], g["evictions"], g["writebacks"])


@pytest.mark.gem5
def test_gem5_failures_are_one_line_errors(gem5_binary, streams, tmp_path):
    src = streams["deepseek-like"]
    cfg = LLCConfig.make("128KiB", 8, 4, "token-lru", True)
    with pytest.raises(UserError, match="timed out after .* its log: .*gem5.stderr"):
        simulate_gem5(src.chunks(), cfg, src.amap.describe(), gem5_binary, outdir=tmp_path / "t", timeout=0.2)
    with pytest.raises(UserError, match=r"gem5 failed \(exit .*its log: .*gem5.stderr"):
        simulate_gem5(src.chunks(), cfg, src.amap.describe(), gem5_binary, outdir=tmp_path / "c",
                      l1_size="not-a-size")
    with pytest.raises(UserError, match="trace replay runs lru and token-lru in the reserved ways, not 'streak'"):
        simulate_gem5(src.chunks(), LLCConfig.make("128KiB", 8, 4, "streak"), src.amap.describe(), gem5_binary,
                      outdir=tmp_path / "s")


@pytest.mark.gem5
def test_binary_without_the_extension_is_refused():
    plain = os.environ.get("GEM5_PLAIN")
    if not plain:
        pytest.skip("set GEM5_PLAIN to a gem5 binary built without dsa-llc's extension")
    with pytest.raises(UserError, match="lacks dsa-llc's gem5 extension"):
        check_extension(find_gem5(plain))


GEM5_SWEEP = """
[sweep]
name = "gem5"
backend = ["builtin", "gem5"]

[decode]
backbone = "tiny-llama"
indexer = "oracle"
topk = 8
prompt_tokens = 48
steps = 2

[stream]
page_tokens = 16

[llc]
size = "64KiB"
ways = 8
reserve_ways = [0, 4]
policy = "token-lru"

[gem5]
model = "replay"   # the open-loop replay's counts equal the built-in model's over the whole stream
"""


@pytest.mark.gem5
def test_gem5_sweep_matches_builtin_and_records_failures(gem5_binary, tmp_path, monkeypatch):
    from harness.study.collect import collect
    from harness.study.spec import loads_spec
    from harness.study.sweep import execute

    monkeypatch.setenv("DSA_LLC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GEM5", raising=False)  # the binary comes from the sweep's argument only
    spec = loads_spec(GEM5_SWEEP)
    folder = tmp_path / "sweep"
    assert execute(spec, folder, jobs=2, progress=False, gem5_binary=gem5_binary) == \
        {"skipped": 0, "ok": 4, "failed": 0, "still_failed": 0}
    df, _ = collect(folder)
    cols = ["hits_lines", "misses_lines", "kv_hit_rate"]
    b = df[df.backend == "builtin"].sort_values("reserve_ways")[cols].reset_index(drop=True)
    g = df[df.backend == "gem5"].sort_values("reserve_ways")[cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(b, g)
    # a gem5 run that fails (here: times out) is recorded as failed; the others are unaffected
    counts = execute(loads_spec(GEM5_SWEEP.replace('model = "replay"', 'model = "replay"\ntimeout = 0.01')),
                     tmp_path / "fail", jobs=2, progress=False, gem5_binary=gem5_binary)
    assert counts == {"skipped": 0, "ok": 2, "failed": 2, "still_failed": 0}
    df, _ = collect(tmp_path / "fail")
    assert set(df[df._status == "failed"].backend) == {"gem5"}
    assert df[df._status == "failed"]._error.str.contains("timed out").all()


@pytest.mark.gem5
def test_gem5_sweep_closed_loop_times_decode_steps(gem5_binary, tmp_path, monkeypatch):
    # the default gem5 model of a sweep: closed-loop decode steps on the [timing] platform, giving
    # the built-in model's step-time keys, said to come from gem5
    from harness.study.collect import collect
    from harness.study.spec import loads_spec
    from harness.study.sweep import execute

    monkeypatch.setenv("DSA_LLC_CACHE", str(tmp_path / "cache"))
    spec = loads_spec(GEM5_SWEEP.replace('model = "replay"', 'steps = 2').replace('"token-lru"', '"streak"')
                      .replace("steps = 2\n\n[stream]", "steps = 3\n\n[stream]"))
    assert all(r["gem5"] == {"model": "closed-loop", "steps": 2} for r in spec.runs if r["backend"] == "gem5")
    counts = execute(spec, tmp_path / "s", jobs=1, progress=False, gem5_binary=gem5_binary)
    assert counts["ok"] == 4 and counts["failed"] == 0
    df, _ = collect(tmp_path / "s")
    gem5 = df[df.backend == "gem5"]
    assert (gem5.step_time_cycles > 0).all() and (gem5.measured_steps == 1).all()
    assert gem5.step_time_model.str.startswith("gem5 closed-loop").all()
    builtin = df[df.backend == "builtin"]
    assert builtin.step_time_model.str.startswith("built-in").all()
