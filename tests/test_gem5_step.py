"""Closed-loop decode steps in gem5 (gem5_configs/decode_step.py: DsaStepGen, TokenPolicyTags).
Tests marked gem5 run the user's gem5 (--gem5 PATH or GEM5=PATH) and skip without it."""

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from harness.cache.llc import LLCConfig
from harness.cache.simulate import simulate
from harness.core.accesstrace import LineAccesses
from harness.core.errors import UserError
from harness.core.traffic import KV_WRITE, OTHER, TRAFFIC_CLASSES
from harness.gem5.decode_step import llc_options, run_step_replay, step_results
from harness.gem5.phasefile import (
    GATHER_PHASE,
    INDEX_PHASE,
    Phase,
    phases_from_stream,
    read_phase_file,
    read_phase_results,
    write_phase_file,
)
from harness.gem5.stats import parse_stats
from trace_gen.geometry import Geometry
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log

SERIAL = {"max_outstanding": 1, "issue_width": 1}  # no two requests overlap
RUNS = Path(__file__).parent / "data" / "gem5_step"
CASES = sorted(p.name for p in RUNS.iterdir() if (p / "case.json").exists())
PHASE_FILE = RUNS / "steps.phases"


def raw_stat(text: str, name: str) -> float:
    """A stat's value read straight from stats.txt's text (0 when gem5 left out a zero)."""
    found = re.search(rf"^{re.escape(name)}\s+(\S+)", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("name", CASES)
def test_committed_step_runs_parse_into_their_raw_values(name):
    folder = RUNS / name
    text = (folder / "stats.txt").read_text()
    r = step_results(parse_stats(folder / "stats.txt"))
    assert set(r["by_class"]) == {"kv", "kv_write", "index"}
    for cls in TRAFFIC_CLASSES:
        c = r["by_class"].get(cls, {"hits": 0, "misses": 0})
        assert (c["hits"], c["misses"]) == (raw_stat(text, f"system.llc.overallHits::gen.{cls}"),
                                            raw_stat(text, f"system.llc.overallMisses::gen.{cls}"))
    for key, stat in [("bypasses", "bypasses"), ("bypassed_writes", "bypassedWrites"),
                      ("token_invalidations", "tokenInvalidations"), ("demotions", "demotions")]:
        assert r[key] == raw_stat(text, f"system.llc.tags.{stat}") > 0
    assert r["writebacks"] == raw_stat(text, "system.llc.writebacks::total")
    s = r["step"]
    assert s["measured_ticks"] == raw_stat(text, "system.gen.measuredTicks")
    assert s["measured_steps"] == raw_stat(text, "system.gen.measuredSteps") == 4
    for kind in ("index", "gather"):
        assert s["mem_wait_ticks"][kind] == raw_stat(text, f"system.gen.memWaitTicks::{kind}")
        assert s["compute_ticks"][kind] == raw_stat(text, f"system.gen.computeTicks::{kind}")

    # the phase table, against the csv module, the phase file and the statistics
    with open(folder / "phases.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    t = read_phase_results(folder)
    for col in ("step", "layer", "requests", "start_tick", "mem_done_tick", "end_tick"):
        assert t[col].tolist() == [int(row[col]) for row in rows]
    phases = read_phase_file(PHASE_FILE)
    assert [(p.step, p.layer, p.measured, len(p.lines), p.compute_ticks) for p in phases] == \
        list(zip(t.step, t.layer, t.measured, t.requests, t.end_tick - t.mem_done_tick))
    assert t.kind.tolist() == [("index", "gather")[p.kind] for p in phases]
    m = t[t.measured]
    assert s["measured_ticks"] == m.end_tick.iloc[-1] - m.start_tick.iloc[0]
    assert s["mem_wait_ticks"]["gather"] == (m.mem_done_tick - m.start_tick)[m.kind == "gather"].sum()
    assert r["accesses"] == m.requests.sum()  # every measured request, once


def phase_stream(phases, amap: dict) -> LineAccesses:
    """The line sequence of a phase file as the built-in model's input: KV token ids carry their
    layer in bits 32-47, as the streams' do (layer = token // tokens_per_layer)."""
    line, cls, write = (np.concatenate([getattr(p, f) for p in phases]) for f in ("lines", "cls", "write"))
    step = np.concatenate([np.full(len(p.lines), p.step, np.int64) for p in phases])
    token = ((line << 6) - amap["kv_base"]) // amap["token_stride"]
    layer, slot = np.divmod(token, amap["tokens_per_layer"])
    return LineAccesses(line, write, cls, np.where(cls <= KV_WRITE, (layer << 32) | slot, -1), step)


def test_builtin_reproduces_the_committed_serial_run():
    """One request in flight: gem5's measured counts are the built-in model's over the whole
    stream minus its counts over the warm-up phases."""
    case = json.loads((RUNS / "serial" / "case.json").read_text())
    phases = read_phase_file(PHASE_FILE)
    stream = phase_stream(phases, case["address_map"])
    warm = sum(len(p.lines) for p in phases if not p.measured)
    cfg = LLCConfig(**case["llc"])
    full = simulate([stream], cfg, bounds=False)
    prefix = simulate([LineAccesses(*(getattr(stream, f)[:warm] for f in ("line", "write", "cls", "token", "step")))],
                      cfg, bounds=False)
    g = step_results(parse_stats(RUNS / "serial" / "stats.txt"))
    for key in ("hits", "misses", "evictions", "bypasses", "token_invalidations"):
        assert g[key] == full[key] - prefix[key], key
    assert g["writebacks"] - g["bypassed_writes"] == full["writebacks"] - prefix["writebacks"]
    for cls, c in g["by_class"].items():
        assert c["hits"] == full["by_class"][cls]["hits"] - prefix["by_class"][cls]["hits"], cls


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two small DSA streams with asymmetric (11-line) and 16-line tokens."""
    tmp = tmp_path_factory.mktemp("stepstreams")
    a = IndexLog(write_synthetic_log(tmp / "a", steps=10, layers=2, topk=16, prompt=32, requests=2))
    b = IndexLog(write_synthetic_log(tmp / "b", steps=10, layers=3, topk=24, prompt=160, requests=1, seed=4))
    return {"deepseek-like": StreamSource(a, Geometry("g", 3, 656, 132), Layout(kind="paged", page_tokens=8, page_order="shuffled", seed=2)),
            "gqa-like": StreamSource(b, Geometry("h", 2, 1024, 68), Layout(kind="contiguous"))}


def merged(chunks) -> LineAccesses:
    chunks = [c for c in chunks if len(c)]
    return LineAccesses(*(np.concatenate([getattr(c, f) for c in chunks])
                          for f in ("line", "write", "cls", "token", "step")))


def counts(r: dict) -> dict:
    return {k: r[k] for k in ("hits", "misses", "evictions", "bypasses", "token_invalidations")} | \
        {"by_class": r["by_class"]}


@pytest.mark.gem5
@pytest.mark.parametrize("size, ways, reserve, policy, whole", [
    ("128KiB", 8, 0, "lru", False), ("128KiB", 8, 4, "lru", False),
    ("128KiB", 8, 4, "token-lru", False), ("128KiB", 8, 4, "token-lru", True),
    ("128KiB", 8, 4, "streak", True), ("128KiB", 8, 4, "streak", False),
    ("64KiB", 16, 12, "streak", True),
])
@pytest.mark.parametrize("stream", ["deepseek-like", "gqa-like"])
def test_serial_closed_loop_equals_builtin(gem5_binary, sources, stream, size, ways, reserve, policy, whole,
                                          tmp_path):
    src = sources[stream]
    cfg = LLCConfig.make(size, ways, reserve, policy, whole)
    write_phase_file(tmp_path / "p", phases_from_stream(src.chunks()))
    g = run_step_replay(gem5_binary, tmp_path / "p", llc_options(cfg, src.amap.describe()) | SERIAL,
                        tmp_path / "out").results
    b = simulate(src.chunks(), cfg, bounds=False)
    assert counts(g) == counts(b)
    # a refused write goes to memory from gem5's temporary block; the built-in counts no writeback
    assert g["writebacks"] - g["bypassed_writes"] == b["writebacks"]
    # the streams exercise what the policy does
    assert b["evictions"] > 0 and b["writebacks"] > 0
    if reserve and policy != "lru" and whole:
        assert b["token_invalidations"] > 0
    if policy == "streak":
        assert b["bypasses"] > 0 and g["bypassed_writes"] > 0 and g["demotions"] > 0


@pytest.mark.gem5
def test_warmup_statistics_cover_the_measured_phases(gem5_binary, sources, tmp_path):
    src = sources["deepseek-like"]
    cfg = LLCConfig.make("128KiB", 8, 4, "streak", True)
    phases = phases_from_stream(src.chunks(), warmup_steps=4)
    write_phase_file(tmp_path / "p", phases)
    run = run_step_replay(gem5_binary, tmp_path / "p", llc_options(cfg, src.amap.describe()) | SERIAL,
                          tmp_path / "out")
    stream = merged(src.chunks())
    warm = sum(len(p.lines) for p in phases if not p.measured)
    full = simulate([stream], cfg, bounds=False)
    prefix = simulate([LineAccesses(*(getattr(stream, f)[:warm] for f in ("line", "write", "cls", "token", "step")))],
                      cfg, bounds=False)
    g = run.results
    assert (g["hits"], g["misses"]) == (full["hits"] - prefix["hits"], full["misses"] - prefix["misses"])
    assert g["evictions"] == full["evictions"] - prefix["evictions"]
    assert g["bypasses"] == full["bypasses"] - prefix["bypasses"]
    assert g["step"]["measured_steps"] == len({p.step for p in phases if p.measured}) == 6
    measured = run.phases[run.phases.measured]
    assert len(measured) == sum(p.measured for p in phases) and not run.phases.measured.iloc[0]
    assert g["step"]["measured_ticks"] == measured.end_tick.iloc[-1] - measured.start_tick.iloc[0]


def miss_phase(n, stride_lines, kind=GATHER_PHASE, compute=0, measured=True, step=0, first=1 << 20):
    """A phase of n reads of "other" lines ``stride_lines`` apart from line ``first`` on."""
    lines = np.arange(n, dtype=np.int64) * stride_lines + first
    return Phase(step, 0, kind, measured, compute, lines, np.full(n, OTHER, np.uint8), np.zeros(n, np.uint8))


PLAIN_LLC = {"llc_size": "1MiB", "llc_assoc": 16, "mem_type": "DDR5_4400_4x8", "mem_size": "1GiB"}


@pytest.mark.gem5
def test_outstanding_limit_bounds_the_memory_time(gem5_binary, tmp_path):
    """n independent misses with m in flight take about ceil(n / m) unloaded miss latencies
    (lines 1 KiB apart, so requests in flight together fall in different DRAM banks)."""
    n = 64
    write_phase_file(tmp_path / "p", [miss_phase(n, 16)])

    def mem_time(m):
        run = run_step_replay(gem5_binary, tmp_path / "p", PLAIN_LLC | {"max_outstanding": m, "issue_width": 4},
                              tmp_path / f"m{m}")
        assert run.results["misses"] == n
        return int(run.phases.mem_done_tick.iloc[0] - run.phases.start_tick.iloc[0])

    latency = mem_time(1) / n
    for m in (2, 4, 8):
        assert mem_time(m) == pytest.approx(math.ceil(n / m) * latency, rel=0.25), m


@pytest.mark.gem5
def test_phases_run_in_order_with_their_compute_delays(gem5_binary, tmp_path):
    phases = [miss_phase(8, 1, INDEX_PHASE, 0, False, 0), miss_phase(0, 1, GATHER_PHASE, 7_000, False, 0)]
    phases += [miss_phase(n, 3, k, c, True, 1 + i // 2, first=(i + 1) << 12)  # no line read twice
               for i, (n, k, c) in enumerate([(16, INDEX_PHASE, 12_345), (0, GATHER_PHASE, 500),
                                              (5, INDEX_PHASE, 0), (32, GATHER_PHASE, 1_000_000)])]
    write_phase_file(tmp_path / "p", phases)
    run = run_step_replay(gem5_binary, tmp_path / "p", PLAIN_LLC | {"max_outstanding": 4, "issue_width": 2},
                          tmp_path / "out")
    t = run.phases
    assert t.requests.tolist() == [len(p.lines) for p in phases]
    assert (t.end_tick - t.mem_done_tick).tolist() == [p.compute_ticks for p in phases]
    assert (t.start_tick.iloc[1:].to_numpy() == t.end_tick.iloc[:-1].to_numpy()).all()
    assert ((t.mem_done_tick > t.start_tick) == (t.requests > 0)).all()
    s = run.results["step"]
    m = t[t.measured]
    assert s["measured_steps"] == 2 and s["measured_ticks"] == m.end_tick.iloc[-1] - m.start_tick.iloc[0]
    for kind in ("index", "gather"):
        k = m[m.kind == kind]
        assert s["compute_ticks"][kind] == (k.end_tick - k.mem_done_tick).sum()
        assert s["mem_wait_ticks"][kind] == (k.mem_done_tick - k.start_tick).sum()
        assert s["requests"][kind] == k.requests.sum() and s["phases"][kind] == len(k)
    assert run.results["misses"] == 16 + 5 + 32  # statistics of the measured phases only


@pytest.mark.gem5
def test_step_replay_failures_are_one_line_errors(gem5_binary, tmp_path):
    write_phase_file(tmp_path / "p", [miss_phase(4, 1)])
    (tmp_path / "bad").write_bytes((tmp_path / "p").read_bytes()[:-8])
    with pytest.raises(UserError, match=r"gem5 failed \(exit .*truncated.*its log") as e:
        run_step_replay(gem5_binary, tmp_path / "bad", PLAIN_LLC, tmp_path / "bad_out")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="outside the memory"):
        run_step_replay(gem5_binary, tmp_path / "p", PLAIN_LLC | {"mem_size": "64MiB"}, tmp_path / "small")
    with pytest.raises(UserError, match=r"exit 1\): error: memory channels .* powers of two"):
        run_step_replay(gem5_binary, tmp_path / "p", PLAIN_LLC | {"mem_channels": 3}, tmp_path / "three")
    with pytest.raises(UserError, match="timed out"):
        run_step_replay(gem5_binary, tmp_path / "p", PLAIN_LLC, tmp_path / "slow", timeout=0.05)
    with pytest.raises(UserError, match="does not exist"):
        run_step_replay(gem5_binary, tmp_path / "missing", PLAIN_LLC, tmp_path / "none")
