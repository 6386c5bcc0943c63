"""Values given to the harness: a sweep spec's values and the command-line options are
type-checked before anything runs, each problem reported once in one error; a spec's decodes
must fit the backbone's context; the checks leave the runs' identities unchanged; and the bare
command, given nothing, prints its help."""

import subprocess
import sys

import numpy as np
import pytest
from helpers import SPEC, one_error, run

from harness.cache.timing import TimingConfig
from harness.core.errors import UserError
from harness.study.spec import loads_spec

BASE = "[decode]\nbackbone = 'tiny-llama'\nindexer = 'oracle'\n"


@pytest.mark.parametrize("text, messages", [
    (BASE + "[llc]\nwhole_token_eviction = 'false'\nreserve_ways = 2\n",
     ["llc.whole_token_eviction must be true or false, got 'false'"]),
    (BASE + "[stream]\nweights = 'no'\n", ["stream.weights must be true or false, got 'no'"]),
    (BASE + "[timing]\ndram_bytes_per_cycle = nan\nllc_hit_cycles = inf\n",
     ["timing.dram_bytes_per_cycle must be a finite number, got nan", "timing.llc_hit_cycles must be an integer"]),
    ("decode = 5\n", ["[decode] must be a table", "decode.backbone is required"]),
    (BASE + "[llc]\nways = 'eight'\n", ["llc.ways must be an integer, got 'eight'"]),
    (BASE + "[gem5]\ntimeout = nan\n", ["gem5.timeout must be a finite number"]),
    ("[decode]\nbackbone = 'smolm2-135m'\n", ["unknown backbone 'smolm2-135m'"]),
    (BASE + "[llc]\nwayz = 4\nways = 'x'\nsize = 'big'\n[timing]\nmax_outstanding = -1\n",
     ["unknown key llc.wayz", "llc.ways must be an integer", "llc.size 'big' is not a size",
      "timing.max_outstanding must be at least 1"]),
    # one problem, many grid points: listed once
    (BASE + "[llc]\nways = 4\nreserve_ways = 6\npolicy = ['lru', 'token-lru', 'bip', 'streak']\n"
            "size = ['64KiB', '128KiB']\n", ["reserve_ways must be between 0 and ways (4), got 6"]),
    (BASE + "[stream]\ngeometry = ['native', 'gpt-9', 'llama']\n",
     ["unknown stream.geometry 'gpt-9'", "unknown stream.geometry 'llama'"]),
    (BASE + "[[exclude]]\nbackbon = 'x'\n", ["unknown key backbon in [[exclude]]"]),
    (BASE + "[llc]\nways = []\n", ["llc.ways is an empty list"]),
])
def test_spec_values_are_checked_every_problem_once(tmp_path, text, messages):
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    for extra in (["--dry-run"], []):
        res = run("sweep", spec, "--out", tmp_path / "s", *extra)
        one_error(res)
        for message in messages:
            assert res.output.count(message) == 1, res.output
        assert len(res.output.splitlines()) == (1 if len(messages) == 1 else 1 + len(messages)), res.output
        assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("args, message", [
    (["simulate", "--access-trace", "t.npy", "--dram-bytes-per-cycle", "nan"], "--dram-bytes-per-cycle must be a finite"),
    (["simulate", "--access-trace", "t.npy", "--dram-bytes-per-cycle", "-inf"], "--dram-bytes-per-cycle must be a finite"),
    (["simulate", "--access-trace", "t.npy", "--gem5-timeout", "nan"], "--gem5-timeout must be a finite"),
    (["simulate", "--access-trace", "t.npy", "--ways", "-1", "--max-outstanding", "0"], "2 problems"),
    (["simulate", "--access-trace", "t.npy", "--llc-size", "1e400TiB"], "is not a size"),
    (["simulate", "--access-trace", "t.npy", "--llc-size", "99999999999TiB"], "too large"),
    (["simulate", "--access-trace", "t.npy", "--layout-seed", "-1"], "layout-seed must be at least 0"),
    (["simulate", "--access-trace", "t.npy", "--dram", "DDR4_2400_8x8", "--l1-size", "32KiB"],
     "--dram, --l1-size: options of the gem5 replay"),  # not silently ignored by the built-in model
    (["simulate", "--access-trace", "t.npy", "--steps", "2"], "--steps needs --index-log"),
    (["sweep", "spec.toml", "--out", "s", "--jobs", "0"], "--jobs"),
    (["demo", "--jobs", "-2"], "--jobs"),
    (["calibrate", "--backbone", "tiny-llama", "--indexer-option", "iterations=abc"],
     "dsa indexer option iterations must be an integer, got 'abc'"),
    (["calibrate", "--backbone", "tiny-llama", "--indexer-option", "lr=nan"], "lr must be a finite number"),
    (["decode", "--backbone", "tiny-llama", "--indexer", "oracle", "--indexer-option", "d_I=8", "--out", "x"],
     "takes none"),
    (["decode", "--backbone", "smolm2", "--out", "x"], "unknown backbone 'smolm2'"),
    (["decode", "--backbone", "tiny-llama", "--seed", "-1", "--out", "x"], "--seed must be at least 0"),
    (["policies", "--policy", "bip"], "need index LOGS"),
])
def test_option_values_are_checked(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "t.npy", np.arange(10, dtype=np.uint64))
    one_error(run(*args), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npy"]


def test_spec_decodes_longer_than_the_backbones_context_are_refused_unless_excluded():
    # the context limit is checked before anything runs (a serving-scale sweep lost 108 runs to
    # a 32,768-token prompt + 8 steps on a 32,768-token model), and a point an exclude table
    # removes is not a problem
    too_long = SPEC.replace("prompt_tokens = 64", "prompt_tokens = [64, 8190]")
    with pytest.raises(UserError, match="prompt of 8,190 tokens \\+ 3 steps exceeds tiny-llama's context of 8,192"):
        loads_spec(too_long)
    spec = loads_spec(too_long + '\n[[exclude]]\nbackbone = "tiny-llama"\nprompt_tokens = 8190\n')
    assert {r["decode"]["prompt_tokens"] for r in spec.runs} == {64}


def test_spec_digest_and_run_ids_are_unchanged_by_the_checks():
    # folders of earlier sweeps keep matching: the canonical config of a run did not change
    # (but for the indexer levers' keys, added at their defaults: index_share, index_layers, index_reuse)
    run0 = loads_spec(SPEC).runs[0]
    assert run0["decode"] == {"backbone": "tiny-llama", "indexer": "oracle", "topk": 8, "prompt_tokens": 64,
                              "steps": 3, "requests": 1, "text": "python-source", "sink_tokens": 0,
                              "local_window": 0, "observe_only": False, "index_share": 1, "index_layers": None,
                              "index_reuse": 1, "seed": 0}
    assert run0["timing"] == TimingConfig.make().to_dict()  # the default platform's values
    assert run0["llc"] == {"size": 65536, "ways": 8, "reserve_ways": 0, "policy": "lru",
                           "whole_token_eviction": True, "line": 64, "sample_sets": None,
                                  "reserve_index": 0, "reserve_weights": 0, "hint_kv": "normal", "hint_index": "normal",
                                  "hint_weights": "normal", "set_aside": None, "what_if": False}


def test_bare_command_prints_the_help():
    res = subprocess.run([sys.executable, "-m", "harness.cli"], capture_output=True, text=True)
    assert res.returncode == 0 and "Usage: dsa-harness" in res.stdout and "error" not in res.stdout + res.stderr


def test_an_unknown_policy_names_the_closest_and_points_to_the_listing(tmp_path, log):
    for args, closest in [(["policies", log, "--policy", "tokn-lru", "--out", tmp_path / "p"], "token-lru"),
                          (["simulate", "--index-log", log, "--policy", "tokenlru", "--reserve-ways", "2"],
                           "token-lru"),
                          (["tier", "--index-log", log, "--hot-policy", "lcs:sieeve"], "lcs:sieve"),
                          (["policies", log, "--policy", "zzz", "--out", tmp_path / "p"], "")]:
        res = run(*args)
        one_error(res, "`dsa-harness policies` lists them")
        line = res.output.strip()
        assert len(line) < 120 and "lcs:lru" not in line.replace(closest, ""), line
        assert (f"did you mean {closest}" in line) == bool(closest), line
    assert not (tmp_path / "p").exists()
