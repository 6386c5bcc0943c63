"""The class knobs on the command line (--reserve, --hint, --set-aside, --what-if) and in a spec,
against the platforms' documented cache controls (harness.cache.platforms.CacheKnobs)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.cache.llc import LLCConfig
from harness.cache.platforms import get_platform
from harness.cli import cli
from harness.core.errors import UserError
from harness.study.spec import loads_spec
from trace_gen.synthetic import write_synthetic_log


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    return write_synthetic_log(tmp_path_factory.mktemp("knobs") / "log", steps=4, layers=2, topk=16, prompt=400)


def simulate(log_dir, *args):
    res = run("simulate", "--index-log", log_dir, "--geometry", "deepseek-v3.2", "--no-weights",
              "--llc-size", "1MiB", "--ways", "16", "--format", "json", *args)
    return res


def test_reserve_and_hint_reach_the_llc_config(log_dir):
    res = simulate(log_dir, "--platform", "xeon-8480", "--reserve", "kv=4:token-lru", "--reserve", "index=2",
                   "--reserve", "weights=1")
    assert res.exit_code == 0, res.output
    llc = json.loads(res.output)["config"]["llc"]
    assert (llc["reserve_ways"], llc["policy"], llc["reserve_index"], llc["reserve_weights"]) == (4, "token-lru", 2, 1)
    assert json.loads(res.output)["beyond_platform"] is None
    res = simulate(log_dir, "--platform", "h100-sxm", "--hint", "weights=streaming")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["config"]["llc"]["hint_weights"] == "streaming"
    # the shorthand and the class form give the same run
    a = simulate(log_dir, "--platform", "xeon-8480", "--reserve", "kv=4:token-lru")
    b = simulate(log_dir, "--platform", "xeon-8480", "--reserve-ways", "4", "--policy", "token-lru")
    ra, rb = json.loads(a.output), json.loads(b.output)
    assert (ra["hits"], ra["misses"], ra["config"]) == (rb["hits"], rb["misses"], rb["config"])


def test_the_persisting_hint_changes_index_hits(log_dir):
    plain = json.loads(simulate(log_dir, "--platform", "h100-sxm").output)
    pinned = simulate(log_dir, "--platform", "h100-sxm", "--hint", "index=persisting:0.5", "--set-aside", "512KiB")
    assert pinned.exit_code == 0, pinned.output
    pinned = json.loads(pinned.output)
    assert pinned["by_class"]["index"]["hits"] != plain["by_class"]["index"]["hits"]
    assert pinned["accesses"] == plain["accesses"]


@pytest.mark.parametrize("platform, args, message", [
    ("h100-sxm", ["--reserve", "index=2"], "h100-sxm has no way reservation"),
    ("mi300x", ["--hint", "index=streaming"], "mi300x documents no streaming hint"),
    ("xeon-8480", ["--hint", "index=persisting:0.5", "--set-aside", "256KiB"], "no persisting hint"),
    ("h100-sxm", ["--llc-size", "64MiB", "--hint", "index=persisting:0.5", "--set-aside", "40MiB"],
     "a set-aside of 40 MiB beyond h100-sxm's 37.5 MiB"),
])
def test_beyond_the_platform_is_refused_in_one_line_unless_what_if(log_dir, platform, args, message):
    res = simulate(log_dir, "--platform", platform, *args)
    assert res.exit_code != 0 and message in res.output and res.output.count("\n") == 1, res.output
    assert "--what-if" in res.output
    res = simulate(log_dir, "--platform", platform, *args, "--what-if")
    assert res.exit_code == 0, res.output
    assert any(message in b for b in json.loads(res.output)["beyond_platform"])


@pytest.mark.parametrize("args, message", [
    (["--reserve", "cache=2"], "CLASS one of"),
    (["--reserve", "index"], "expected CLASS=WAYS"),
    (["--reserve", "index=2:token-lru"], "index ways run"),
    (["--hint", "kv"], "expected CLASS=KIND"),
    (["--reserve", "kv=2", "--reserve-ways", "2"], "say the same thing"),
])
def test_bad_knobs_get_one_line(log_dir, args, message):
    res = simulate(log_dir, "--platform", "xeon-8480", *args)
    assert res.exit_code != 0 and message in res.output, res.output


def test_beyond_lists_each_limit():
    xeon = get_platform("xeon-8480")
    cfg = LLCConfig.make("105MiB", 15, reserve_index=1, reserve_weights=1, reserve_ways=1)
    assert cfg.beyond(xeon) == []
    with pytest.raises(UserError, match="beyond h100-sxm's cache controls"):
        cfg.check_platform(get_platform("h100-sxm"))


def test_a_spec_refuses_what_the_platform_lacks():
    spec = """
[sweep]
name = "k"
[decode]
backbone = "tiny-llama"
[stream]
geometry = "deepseek-v3.2"
[llc]
size = "1MiB"
ways = 16
reserve_index = 2
[timing]
platform = "h100-sxm"
"""
    with pytest.raises(UserError, match="no way reservation"):
        loads_spec(spec)
    ok = spec.replace('platform = "h100-sxm"', 'platform = "xeon-8480"')
    assert loads_spec(ok).runs[0]["llc"]["reserve_index"] == 2
