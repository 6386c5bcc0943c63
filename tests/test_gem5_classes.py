"""The class-aware LLC knobs in gem5 (harness.cache.partitions: ways reserved per class,
insertion hints, persisting lines under a set-aside), run by dsa-llc's extension
(KvPartitionManager: a partition per class by address; TokenPolicyTags: the hints'
insertions). Plain tests check what the launchers pass to gem5 and what they refuse; tests
marked gem5 run the user's gem5 (--gem5 PATH or GEM5=PATH) and require serial runs, open-loop
and closed-loop, to equal the built-in model's counts exactly."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from harness.cache.llc import LLCConfig
from harness.cache.partitions import CLASSES, HINT_KINDS, PERSISTING
from harness.cache.simulate import simulate
from harness.core.accesstrace import LineAccesses
from harness.core.errors import UserError
from harness.core.traffic import INDEX, KV, KV_WRITE
from harness.gem5.binary import (
    CONFIG_DIR,
    EXTENSION_DIR,
    check_class_regions,
    check_llc,
    class_options,
    option_flags,
)
from harness.gem5.decode_step import llc_options, run_step_replay, step_results
from harness.gem5.phasefile import phases_from_stream, read_phase_file, write_phase_file
from harness.gem5.replay import simulate_gem5
from harness.gem5.stats import parse_stats
from trace_gen.geometry import Geometry, Weights
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log

SIZE, WAYS = "32KiB", 8
WAY = 32 * 1024 // WAYS  # bytes of one way across the sets: a set-aside of n * WAY is n ways per set
KV_TOKEN_LRU = {"reserve_ways": 2, "policy": "token-lru", "whole_token_eviction": True}
KNOBS = {  # LLCConfig fields of each case
    "index-r2-lru+kv": KV_TOKEN_LRU | {"reserve_index": 2},
    "index-r2-bip+kv": KV_TOKEN_LRU | {"reserve_index": 2, "hint_index": "bip"},  # --reserve index=2:bip
    "weights-r2+kv": KV_TOKEN_LRU | {"reserve_weights": 2},
    "index-streaming": {"hint_index": "streaming"},
    "index-bip+weights-streaming": {"hint_index": "bip", "hint_weights": "streaming"},
    "index-persisting": {"hint_index": "persisting:0.5", "set_aside": 2 * WAY},
    "index-persisting+kv": KV_TOKEN_LRU | {"hint_index": "persisting:0.3", "set_aside": WAY},
    # a cap of 4 in 2 ways of the index keys' own: persisting fills find no way and bypass
    "index-r2-persisting-bypass": {"reserve_index": 2, "hint_index": "persisting:0.5", "set_aside": 4 * WAY},
    "kv-lru-persisting": {"reserve_ways": 3, "policy": "lru", "hint_kv": "persisting:0.4", "set_aside": WAY},
}
SERIAL = {"max_outstanding": 1, "issue_width": 1}  # no two requests overlap
DATA = Path(__file__).parent / "data"
RUNS = DATA / "gem5_classes"  # committed serial runs (make_cases.py there regenerates them)
CASES = sorted(p.name for p in RUNS.iterdir() if (p / "case.json").exists())


def amap() -> dict:
    return {"kv_base": 0, "kv_end": 4096, "token_stride": 704, "tokens_per_layer": 4, "memory_bytes": 12288,
            "index_base": 4096, "weights_base": 8192}


def test_the_configs_and_the_extension_know_the_harness_hints_and_classes():
    # the config files run inside gem5 and cannot import the harness: they spell the lists again
    def assigned(tree, name):
        return next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and isinstance(n.targets[0], ast.Name) and n.targets[0].id == name)

    components = ast.parse((CONFIG_DIR / "components.py").read_text())
    assert assigned(components, "HINTS") == HINT_KINDS and assigned(components, "CLASSES") == CLASSES
    decl = ast.parse((EXTENSION_DIR / "DsaLlc.py").read_text())
    enum = next(n for n in decl.body if isinstance(n, ast.ClassDef) and n.name == "LineHint")
    assert tuple(assigned(enum, "vals")) == HINT_KINDS


def test_class_options_carry_the_kernels_thresholds_cap_and_regions():
    cfg = LLCConfig.make(SIZE, WAYS, **KNOBS["index-persisting+kv"])
    opts = class_options(cfg, amap())
    cm = cfg.class_map
    assert opts["persist_threshold_index"] == cm.persist_threshold[INDEX] == round(0.3 * 2**32)
    assert opts["persist_cap"] == cm.persist_cap == 1 and opts["hint_index"] == "persisting"
    assert opts["hint_kv"] == "normal" and opts["persist_threshold_kv"] == 0 == cm.persist_threshold[KV]
    assert (opts["index_start"], opts["index_end"], opts["weights_start"]) == (4096, 8192, 8192)
    assert opts["weights_end"] == 12288
    # bip is a mode of its own (no threshold); a stream without weights still gets a weights region
    bip = class_options(LLCConfig.make(SIZE, WAYS, **KNOBS["index-r2-bip+kv"]), amap() | {"memory_bytes": 8192})
    assert bip["hint_index"] == "bip" and bip["reserve_index"] == 2 and bip["weights_end"] == 8193
    assert HINT_KINDS.index(opts["hint_index"]) == PERSISTING
    # everything reaches decode_step.py's command line; nothing without class knobs
    flags = option_flags(llc_options(cfg, amap()))
    assert flags[flags.index("--hint-index") + 1] == "persisting" and "--persist-cap" in flags
    assert class_options(LLCConfig.make(SIZE, WAYS, 2, "token-lru"), amap()) == {}
    assert option_flags({"a_b": 1, "c": True, "d": False, "e": None}) == ["--a-b", "1", "--c"]


@pytest.mark.parametrize("fields, message", [
    ({"reserve_ways": 4, "reserve_index": 2, "reserve_weights": 2}, "at least one shared way .* take 8 of 8"),
    ({"reserve_index": 8}, "at least one shared way"),
])
def test_what_gem5_cannot_model_is_refused_in_one_line(fields, message):
    with pytest.raises(UserError, match=message) as e:
        check_llc(LLCConfig.make(SIZE, WAYS, **fields))
    assert "\n" not in str(e.value)


def test_class_knobs_need_an_address_map():
    cfg = LLCConfig.make(SIZE, WAYS, hint_index="streaming")
    with pytest.raises(UserError, match="class knobs in gem5 need the address regions"):
        check_class_regions(cfg, address_map=False)
    with pytest.raises(UserError, match="class knobs in gem5 need the address regions"):
        class_options(cfg, None)
    check_class_regions(LLCConfig.make(SIZE, WAYS, 2, "token-lru"), address_map=False)  # KV only: as before


def test_the_simulate_command_refuses_class_knobs_on_an_access_trace_before_gem5(tmp_path):
    import numpy as np
    from click.testing import CliRunner

    from harness.cli import cli

    np.save(tmp_path / "t.npy", np.arange(100, dtype=np.int64) * 64)
    res = CliRunner().invoke(cli, ["simulate", "--access-trace", str(tmp_path / "t.npy"), "--backend", "gem5",
                                   "--gem5-model", "replay", "--llc-size", SIZE, "--ways", str(WAYS),
                                   "--hint", "index=streaming", "--gem5", "/nonexistent/gem5"])
    assert res.exit_code != 0 and "class knobs in gem5 need the address regions" in res.output


def phase_stream(phases, amap: dict) -> LineAccesses:
    """The line sequence of a phase file as the built-in model's input (KV token ids carry their
    layer in bits 32-47, as the streams' do)."""
    line, cls, write = (np.concatenate([getattr(p, f) for p in phases]) for f in ("lines", "cls", "write"))
    step = np.concatenate([np.full(len(p.lines), p.step, np.int64) for p in phases])
    token = ((line << 6) - amap["kv_base"]) // amap["token_stride"]
    layer, slot = np.divmod(token, amap["tokens_per_layer"])
    return LineAccesses(line, write, cls, np.where(cls <= KV_WRITE, (layer << 32) | slot, -1), step)


@pytest.mark.parametrize("name", CASES)
def test_builtin_reproduces_the_committed_class_aware_runs(name):
    """Committed serial gem5 runs (tests/data/gem5_classes) under class knobs: the options the
    launcher passes today are the ones gem5 ran with, and gem5's measured counts are the
    built-in model's over the whole phase file minus its counts over the warm-up phases."""
    case = json.loads((RUNS / name / "case.json").read_text())
    cfg = LLCConfig(**case["llc"])
    assert llc_options(cfg, case["address_map"]) | SERIAL | {"mem_type": case["options"]["mem_type"]} == \
        case["options"]
    phases = read_phase_file(DATA / "gem5_step" / "steps.phases")
    stream = phase_stream(phases, case["address_map"])
    warm = sum(len(p.lines) for p in phases if not p.measured)
    full = simulate([stream], cfg, bounds=False)
    prefix = simulate([LineAccesses(*(getattr(stream, f)[:warm] for f in ("line", "write", "cls", "token", "step")))],
                      cfg, bounds=False)
    g = step_results(parse_stats(RUNS / name / "stats.txt"))
    for key in ("hits", "misses", "evictions", "bypasses", "token_invalidations"):
        assert g[key] == full[key] - prefix[key], key
    assert g["writebacks"] - g["bypassed_writes"] == full["writebacks"] - prefix["writebacks"]
    for cls, c in g["by_class"].items():
        assert c["hits"] == full["by_class"][cls]["hits"] - prefix["by_class"][cls]["hits"], cls
        assert c["misses"] == full["by_class"][cls]["misses"] - prefix["by_class"][cls]["misses"], cls
    # the runs exercise the knobs: the persisting case bypasses, and the counts differ from the
    # same LLC without class knobs
    plain = simulate([stream], LLCConfig.make(cfg.size, cfg.ways, cfg.reserve_ways, cfg.policy), bounds=False)
    assert full["by_class"]["index"] != plain["by_class"]["index"]
    if cfg.set_aside:
        assert g["bypasses"] > 0 and g["persisting_fills"] > 0


# --- with a real gem5 ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two small DSA streams with weights: asymmetric 11-line tokens in a shuffled paged layout,
    and 16-line tokens in a contiguous one."""
    tmp = tmp_path_factory.mktemp("classstreams")
    a = IndexLog(write_synthetic_log(tmp / "a", steps=10, layers=2, topk=16, prompt=32, requests=2))
    b = IndexLog(write_synthetic_log(tmp / "b", steps=10, layers=3, topk=24, prompt=160, requests=1, seed=4))
    return {"deepseek-like": StreamSource(a, Geometry("g", 3, 656, 132, weights=Weights(3 * 8 * 1024)),
                                          Layout(kind="paged", page_tokens=8, page_order="shuffled", seed=2)),
            "gqa-like": StreamSource(b, Geometry("h", 2, 1024, 68, weights=Weights(2 * 4 * 1024)),
                                     Layout(kind="contiguous"))}


def counts(r: dict) -> dict:
    return {k: r[k] for k in ("hits", "misses", "evictions", "bypasses", "token_invalidations")} | \
        {"by_class": r["by_class"]}


def check_exercised(name: str, cfg: LLCConfig, b: dict, g: dict, baseline: dict) -> None:
    """The stream exercises what the knob does: it changes the built-in counts, and gem5's own
    statistics show the mechanism at work."""
    assert b["evictions"] > 0 and b["by_class"]["weights"]["accesses"] > 0
    assert counts(b) != counts(baseline), f"{name} changes nothing on this stream"
    if cfg.set_aside:
        assert g["persisting_fills"] > 0
    if name == "index-r2-persisting-bypass":
        assert b["bypasses"] > 0 and g["bypassed_writes"] > 0
    if cfg.reserve_ways and cfg.policy == "token-lru":
        assert b["token_invalidations"] > 0


@pytest.mark.gem5
@pytest.mark.parametrize("name", list(KNOBS))
@pytest.mark.parametrize("stream", ["deepseek-like", "gqa-like"])
def test_serial_closed_loop_with_class_knobs_equals_builtin(gem5_binary, sources, stream, name, tmp_path):
    src = sources[stream]
    cfg = LLCConfig.make(SIZE, WAYS, **KNOBS[name])
    write_phase_file(tmp_path / "p", phases_from_stream(src.chunks()))
    g = run_step_replay(gem5_binary, tmp_path / "p", llc_options(cfg, src.amap.describe()) | SERIAL,
                        tmp_path / "out").results
    b = simulate(src.chunks(), cfg, bounds=False)
    assert counts(g) == counts(b)
    # a refused write goes to memory from gem5's temporary block; the built-in counts no writeback
    assert g["writebacks"] - g["bypassed_writes"] == b["writebacks"]
    check_exercised(name, cfg, b, g, simulate(src.chunks(), LLCConfig.make(SIZE, WAYS), bounds=False))


@pytest.mark.gem5
@pytest.mark.parametrize("name", list(KNOBS))
def test_open_loop_replay_with_class_knobs_equals_builtin(gem5_binary, sources, name, tmp_path):
    src = sources["gqa-like"]
    cfg = LLCConfig.make(SIZE, WAYS, **KNOBS[name])
    g = simulate_gem5(src.chunks(), cfg, src.amap.describe(), gem5_binary, outdir=tmp_path)
    b = simulate(src.chunks(), cfg, bounds=False)
    assert counts(g) == counts(b)
    assert g["writebacks"] - g["bypassed_writes"] == b["writebacks"]
    assert g["config"]["llc"]["hint_index"] == cfg.hint_index
