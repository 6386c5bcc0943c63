"""Weight scans applied at once (harness.cache.simulate, LLCState.scan) give exactly what the
same scans simulated line by line give, on a grid of configurations: every count, every
per-class and per-request count, the token accounting and the step time."""

from __future__ import annotations

import itertools

import pytest

from harness.cache.llc import LLCConfig
from harness.cache.simulate import simulate
from harness.cache.timing import TimingConfig
from harness.core.sampling import SetSample
from trace_gen.geometry import Geometry, Weights
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log

# 64 KiB, 16 ways: 64 sets. 80 KiB of weights per layer = 1,280 lines, 20 per set: a scan flushes
# every set's shared ways (at least ways + 1 = 17 lines per set) whatever the reservation.
LLC = "64KiB"
FLUSHING = Geometry("flushing", layers=3, kv_bytes=656, index_bytes=132, weights=Weights(3 * 80 * 1024))
# 8 KiB per layer: 2 lines per set, too few to flush: simulated line by line either way
SMALL = Geometry("small", layers=3, kv_bytes=656, index_bytes=132, weights=Weights(3 * 8 * 1024))

GRID = [  # (geometry, reserve ways, policy, whole-token eviction, batch)
    *itertools.product([FLUSHING], [0, 4, 8], ["token-lru", "streak", "bip", "admit", "lru"], [True], [1, 3]),
    (FLUSHING, 4, "token-lru", False, 2),
    (FLUSHING, 16, "token-lru", True, 2),  # every way reserved: the weights bypass
    (SMALL, 0, "lru", True, 2),
    (SMALL, 4, "streak", True, 2),
]


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    return IndexLog(write_synthetic_log(tmp_path_factory.mktemp("scans") / "log", steps=4, layers=2, topk=24,
                                        prompt=300, requests=2))


def _run(log, geometry, reserve, policy, whole, batch, scans, llc=LLC, every=1, **knobs):
    src = StreamSource(log, geometry, Layout(kind="paged", page_tokens=16, weights=True), batch=batch)
    cfg = LLCConfig.make(llc, 16, reserve, policy if reserve else "lru", whole, **knobs)
    timing = TimingConfig.make("h100-sxm", max_outstanding=64)
    sample = SetSample.for_sets(cfg.sets, every) if every > 1 else None
    return simulate(src.chunks(reuse=True, weight_scans=scans, sample=sample), cfg, timing, bounds=True,
                    phases=src.phases(), batch=batch, sample=sample)


@pytest.mark.parametrize("geometry, reserve, policy, whole, batch", GRID,
                         ids=[f"{g.name}-R{r}-{p}-{'whole' if w else 'lines'}-B{b}" for g, r, p, w, b in GRID])
def test_a_scan_applied_at_once_equals_its_lines_simulated(log, geometry, reserve, policy, whole, batch):
    lines = _run(log, geometry, reserve, policy, whole, batch, scans=False)
    at_once = _run(log, geometry, reserve, policy, whole, batch, scans=True)
    for key in ("accesses", "hits", "misses", "by_class", "by_request", "kv_tokens", "evictions", "writebacks",
                "token_invalidations", "bypasses", "bounds", "step_time_cycles_per_step", "phase_cycles"):
        assert at_once[key] == lines[key], key
    assert at_once["by_class"]["weights"]["accesses"] == 4 * 3 * geometry.weight_bytes(batch) // 64
    if geometry is FLUSHING and reserve < 16:
        assert at_once["by_class"]["weights"]["hits"] == 0


KNOBS = [  # class-aware knobs (harness.cache.partitions) under which scans still apply at once
    {"hint_weights": "streaming"},
    {"reserve_weights": 4},
    {"reserve_weights": 2, "hint_weights": "streaming"},
    {"reserve_index": 4, "hint_weights": "streaming"},
    {"hint_index": "persisting:0.5", "set_aside": 16 << 10},
    {"hint_index": "persisting:0.3", "set_aside": 24 << 10, "hint_weights": "streaming"},
    {"hint_index": "bip", "hint_kv": "streaming"},
    # the whole LLC set aside: sets whose ways all hold persisting index keys, which streaming
    # weights may not take (such a scan goes line by line, and its lines bypass there)
    {"hint_index": "persisting:1", "set_aside": 64 << 10, "hint_weights": "streaming"},
]


@pytest.mark.parametrize("knobs", KNOBS, ids=[",".join(f"{k}={v}" for k, v in kn.items()) for kn in KNOBS])
@pytest.mark.parametrize("reserve, policy", [(0, "lru"), (4, "streak")])
def test_scans_under_class_knobs_equal_their_lines(log, knobs, reserve, policy):
    if reserve and "hint_kv" in knobs:
        return  # a KV hint needs the KV lines in line-LRU ways
    lines = _run(log, FLUSHING, reserve, policy, True, 2, scans=False, **knobs)
    at_once = _run(log, FLUSHING, reserve, policy, True, 2, scans=True, **knobs)
    for key in ("by_class", "by_request", "kv_tokens", "evictions", "writebacks", "bypasses",
                "step_time_cycles_per_step"):
        assert at_once[key] == lines[key], key


# 1 MiB, 16 ways: 1,024 sets, 16 groups of 64, one in 2 sampled. 3 MiB of weights per layer: 48 lines
# a set, at once; indexer keys of 2 KiB, so that a set takes several misses between two scans (a
# dead line must then be older than each of them)
SAMPLED = Geometry("sampled", layers=3, kv_bytes=656, index_bytes=2048, weights=Weights(3 * 3 * 2**20))


@pytest.mark.parametrize("knobs", [{}, {"hint_weights": "streaming"}, {"reserve_weights": 2},
                                   {"hint_index": "persisting:0.5", "set_aside": 256 << 10, "hint_weights": "streaming"}],
                         ids=["plain", "streaming", "reserved", "persisting"])
@pytest.mark.parametrize("reserve, policy", [(0, "lru"), (4, "streak")])
def test_sampled_scans_equal_their_sampled_lines(log, knobs, reserve, policy):
    """Under a set sample the scans applied at once (in part or whole) equal the sampled sets'
    lines simulated one by one: the dead lines left are older than every later access."""
    lines = _run(log, SAMPLED, reserve, policy, True, 2, scans=False, llc="1MiB", every=2, **knobs)
    at_once = _run(log, SAMPLED, reserve, policy, True, 2, scans=True, llc="1MiB", every=2, **knobs)
    for key in ("by_class", "by_request", "kv_tokens", "evictions", "writebacks", "bypasses",
                "step_time_cycles_per_step"):
        assert at_once[key] == lines[key], key


def test_a_whole_step_names_its_scope_and_its_attention_part(log):
    whole = _run(log, FLUSHING, 4, "token-lru", True, 2, scans=True)
    assert whole["step_scope"] == "whole"
    assert 0 < whole["attention_time_cycles"] < whole["step_time_cycles"]
    assert whole["attention_share"] == pytest.approx(whole["attention_time_cycles"] / whole["step_time_cycles"])
    mixed = _run(log, FLUSHING, 4, "token-lru", True, 2, scans=False)
    assert mixed["step_scope"] == "whole" and mixed["attention_time_cycles"] is None
    src = StreamSource(log, FLUSHING, Layout(kind="paged", page_tokens=16, weights=False), batch=2)
    alone = simulate(src.chunks(reuse=True), LLCConfig.make(LLC, 16, 4, "token-lru"),
                     TimingConfig.make("h100-sxm", max_outstanding=64), phases=src.phases(), batch=2)
    assert alone["step_scope"] == "attention" and alone["attention_time_cycles"] <= alone["step_time_cycles"]
