"""Sweeps: spec validation, run ids, resume after a kill, the Dask executor, collect, report."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import tiny_spec

from harness.cache import RESULTS_VERSION
from harness.cli import cli
from harness.core.errors import UserError
from harness.study.collect import collect
from harness.study.report import build_report
from harness.study.runs import is_stale, run_id
from harness.study.spec import load_spec, parse_spec
from harness.study.sweep import execute

TINY = tiny_spec('["native", "deepseek-v3.2"]', '["64KiB", "128KiB"]', '["lru", "token-lru"]',
                 header='[sweep]\nname = "tiny"\n')


def write(tmp_path, text, name="spec.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


pytestmark = pytest.mark.usefixtures("private_cache")

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.name == "full_sweep.toml" else p
                                  for p in EXAMPLES], ids=[p.name for p in EXAMPLES])
def test_every_example_spec_is_valid(path):
    """Each spec of examples/ passes every check a sweep makes before it runs (full_sweep's 366k
    runs take a minute: slow)."""
    assert load_spec(path).runs


def test_good_spec_expands_and_dedupes_the_baseline(tmp_path):
    spec = load_spec(write(tmp_path, TINY))
    # 2 geometries x 2 sizes x (R=0 once + R in {2,4} x 2 policies) = 2 * 2 * 5
    assert len(spec.runs) == 20 and len(spec.decodes) == 1
    base = [r for r in spec.runs if r["llc"]["reserve_ways"] == 0]
    assert {r["llc"]["policy"] for r in base} == {"lru"} and len(base) == 4


def test_run_ids_are_stable_and_canonical(tmp_path):
    a = load_spec(write(tmp_path, TINY)).runs
    b = load_spec(write(tmp_path, TINY.replace('size = ["64KiB", "128KiB"]', 'size = ["128KiB", "65536"]'), "b.toml")).runs
    assert sorted(map(run_id, a)) == sorted(map(run_id, b))  # 64KiB == 65536 bytes; order does not matter
    out = subprocess.run([sys.executable, "-c", "from harness.study.spec import load_spec; from harness.study.runs import run_id; import sys; "
                          "print(sorted(run_id(r) for r in load_spec(sys.argv[1]).runs)[0])",
                          str(tmp_path / "spec.toml")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == sorted(map(run_id, a))[0]  # the same in another process


@pytest.mark.parametrize("text, messages", [
    ("[sweep]\nname = 'x'\n[decode]\nbackbone = 'tiny-llama'\n[llc]\nwayz = 4\n[bogus]\nx = 1\n",
     ["unknown key llc.wayz", "unknown section [bogus]"]),
    ("[decode]\nbackbone = 'tiny-llama'\n[llc]\nways = 8\nreserve_ways = [2, 9, 10]\n",
     ["reserve_ways must be between 0 and ways (8), got 9", "got 10"]),
    ("[decode]\nbackbone = 'tiny-llama'\n[stream]\ngeometry = 'gpt-9'\n", ["unknown stream.geometry 'gpt-9'"]),
    ("[decode]\nbackbone = 'tiny-llama'\n[llc]\npolicy = 'mru'\nreserve_ways = 2\n", ["unknown llc.policy 'mru'"]),
    ("[decode]\nbackbone = 'tiny-llama'\n[llc]\nsize = '1000'\n", ["not a multiple"]),
    ("[llc]\nways = 8\n", ["decode.backbone is required"]),
    ("[decode]\nbackbone = 'tiny-llama'\n[llc]\nways = [8\n", ["does not parse"]),
])
def test_bad_specs_report_every_problem_once(tmp_path, text, messages):
    res = CliRunner().invoke(cli, ["sweep", str(write(tmp_path, text)), "--out", str(tmp_path / "s"), "--dry-run"])
    assert res.exit_code != 0 and res.output.count("error:") == 1, res.output
    for message in messages:
        assert res.output.count(message) == 1, res.output
    assert res.output.count("\n") == max(1, 1 + len(messages) if len(messages) > 1 else 1)
    assert "Traceback" not in res.output and not (tmp_path / "s").exists()


def test_parse_error_names_line_and_column(tmp_path):
    with pytest.raises(UserError, match=r"line 3, column"):
        load_spec(write(tmp_path, "[decode]\nbackbone = 'tiny-llama'\nsteps = = 3\n"))


def test_exclusions(tmp_path):
    text = TINY + "\n[[exclude]]\ngeometry = \"native\"\nsize = \"64KiB\"\n"
    spec = load_spec(write(tmp_path, text))
    assert len(spec.runs) == 15
    assert not [r for r in spec.runs if r["stream"]["geometry"] == "native" and r["llc"]["size"] == 65536]


def test_sweep_runs_collects_reports_and_resumes(tmp_path):
    spec = load_spec(write(tmp_path, TINY))
    folder = tmp_path / "sweep"
    counts = execute(spec, folder, jobs=2, progress=False)
    assert counts == {"skipped": 0, "ok": 20, "failed": 0, "still_failed": 0}
    df, bad = collect(folder, folder / "results.parquet")
    assert len(df) == 20 and not bad and (df._status == "ok").all()
    for col in ("_run_id", "_status", "backbone", "geometry", "llc_bytes", "reserve_ways", "policy",
                "kv_hit_rate", "step_time_cycles", "tokens_per_s", "misses_lines", "min_token_hit_rate"):
        assert col in df
    assert set(df.llc_bytes) == {65536, 131072}
    # MIN of the reserved capacity bounds every reserved run's full token hits
    bounded = df[df.min_token_hit_rate.notna()]
    assert len(bounded) and (bounded.kv_token_full_hits <= bounded.min_token_hit_rate * bounded.kv_token_reads + 1e-9).all()
    # again: nothing to do
    assert execute(spec, folder, jobs=2, progress=False) == {"skipped": 20, "ok": 0, "failed": 0, "still_failed": 0}
    # the report's tables are the collected table
    r = build_report(folder, tmp_path / "report")
    saved = pd.read_parquet(tmp_path / "report" / "results.parquet")
    pd.testing.assert_frame_equal(saved.sort_values("_run_id").reset_index(drop=True),
                                  df.sort_values("_run_id").reset_index(drop=True))
    h = r["headline"]
    for row in h.itertuples():
        base = df[(df.geometry == row.geometry) & (df.llc_bytes == row.llc_bytes) & (df.reserve_ways == 0)]
        assert row.baseline_step_time_cycles == base.step_time_cycles.iloc[0]
    md = (tmp_path / "report" / "report.md").read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    assert md.startswith("# Does reserving LLC ways") and "the best reservation is" in md
    assert "| best online libCacheSim |" in md  # the policy section shows libCacheSim's algorithms
    assert "data:image/png;base64," in html and "<table" in html


def test_a_different_spec_is_refused_unless_forced(tmp_path):
    folder = tmp_path / "sweep"
    execute(load_spec(write(tmp_path, TINY)), folder, jobs=1, progress=False)
    other = write(tmp_path, TINY.replace("steps = 3", "steps = 2"), "other.toml")
    res = CliRunner().invoke(cli, ["sweep", str(other), "--out", str(folder), "--jobs", "1"])
    assert res.exit_code != 0 and "different spec" in res.output and "--force" in res.output
    assert CliRunner().invoke(cli, ["sweep", str(other), "--out", str(folder), "--jobs", "1", "--force"]).exit_code == 0


def test_collect_reports_a_corrupt_run_and_keeps_the_rest(tmp_path):
    folder = tmp_path / "sweep"
    execute(load_spec(write(tmp_path, TINY)), folder, jobs=1, progress=False)
    victim = sorted((folder / "runs").iterdir())[3]
    (victim / "result.json").write_text("{ not json")
    res = CliRunner().invoke(cli, ["collect", str(folder)])
    assert res.exit_code == 0 and f"corrupt run {victim.name}: result.json is not valid JSON" in res.output
    assert "19 ok, 0 failed, 0 stale, 1 corrupt" in res.output
    df = pd.read_parquet(folder / "results.parquet").set_index("_run_id")
    assert len(df) == 20 and df.loc[victim.name, "_status"] == "corrupt"
    assert df.loc[victim.name, "reserve_ways"] == json.loads((victim / "config.json").read_text())["llc"]["reserve_ways"]


def test_runs_of_an_older_simulator_are_stale_and_redone(tmp_path):
    spec = load_spec(write(tmp_path, TINY))
    folder = tmp_path / "sweep"
    execute(spec, folder, jobs=1, progress=False)
    old = folder / "runs" / run_id(spec.runs[5])
    prov = json.loads((old / "provenance.json").read_text())
    prov["results_version"] = RESULTS_VERSION - 1
    (old / "provenance.json").write_text(json.dumps(prov))
    res = CliRunner().invoke(cli, ["collect", str(folder)])
    assert res.exit_code == 0 and "19 ok, 0 failed, 1 stale" in res.output
    df = pd.read_parquet(folder / "results.parquet")
    assert df.set_index("_run_id").loc[old.name, "_status"] == "stale"
    assert execute(spec, folder, jobs=1, progress=False) == {"skipped": 19, "ok": 1, "failed": 0, "still_failed": 0}
    df, _ = collect(folder)
    assert (df._status == "ok").all() and (df._results_version == RESULTS_VERSION).all()
    # gem5 runs do not depend on the built-in simulator: never stale on its account
    assert not is_stale({"backend": "gem5"}, {"results_version": RESULTS_VERSION - 1})
    assert is_stale({"backend": "builtin"}, {})


def test_failed_runs_are_recorded_and_rerun_on_request(tmp_path):
    text = TINY.replace('geometry = ["native", "deepseek-v3.2"]', 'geometry = "native"')
    spec = parse_spec(__import__("tomllib").loads(text))
    folder = tmp_path / "sweep"
    spec.runs[0]["stream"]["page_tokens"] = 0  # a run that fails inside (invalid layout)
    counts = execute(spec, folder, jobs=2, progress=False)
    assert counts["failed"] == 1 and counts["ok"] == len(spec.runs) - 1
    err = json.loads((folder / "runs" / run_id(spec.runs[0]) / "error.json").read_text())
    assert "page size" in err["error"]
    again = execute(spec, folder, jobs=1, progress=False)
    assert again["skipped"] == len(spec.runs) and again["still_failed"] == 1
    assert execute(spec, folder, jobs=1, rerun_failed=True, progress=False)["failed"] == 1


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(stat))
    return out


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie nobody reaped)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads worker processes from /proc")
def test_killed_sweep_loses_only_runs_in_flight_and_resumes(tmp_path):
    text = TINY.replace('reserve_ways = [0, 2, 4]', 'reserve_ways = [0, 1, 2, 3, 4, 5, 6, 7]')
    spec_path = write(tmp_path, text)
    spec = load_spec(spec_path)
    folder = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "harness.cli", "sweep", str(spec_path), "--out", str(folder), "--jobs", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    done = []
    while time.time() < deadline:
        done = [p for p in (folder / "runs").glob("*/result.json")] if (folder / "runs").exists() else []
        if len(done) >= 4:
            break
        time.sleep(0.05)
    workers = children(proc.pid)
    assert workers, "the sweep has no worker processes"
    os.kill(proc.pid, signal.SIGKILL)  # the sweep alone: its workers must notice and stop
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "worker processes outlived the sweep"
    assert 4 <= len(done) < len(spec.runs), "the sweep finished before it could be killed"
    # (a hidden folder is a run still being written when the sweep was killed: pathlib's glob sees it)
    before = {p.parent.name: json.loads((p.parent / "provenance.json").read_text())["started"]
              for p in (folder / "runs").glob("*/result.json") if not p.parent.name.startswith(".")}
    # nothing half-written counts as a run: every visible run folder is complete
    for d in (folder / "runs").iterdir():
        if not d.name.startswith("."):
            assert (d / "config.json").exists() and (d / "provenance.json").exists()
    counts = execute(spec, folder, jobs=2, progress=False)
    assert counts["skipped"] == len(before) and counts["ok"] == len(spec.runs) - len(before)
    after = {d.name: json.loads((d / "provenance.json").read_text())["started"]
             for d in (folder / "runs").iterdir() if not d.name.startswith(".")}
    assert len(after) == len(spec.runs)
    assert all(after[k] == v for k, v in before.items())  # nothing ran twice


def test_dask_local_cluster_gives_the_same_table(tmp_path):
    from dask.distributed import LocalCluster

    spec = load_spec(write(tmp_path, TINY))
    execute(spec, tmp_path / "local", jobs=2, progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        counts = execute(spec, tmp_path / "dask", scheduler=cluster.scheduler_address, progress=False)
    assert counts["ok"] == len(spec.runs)
    a, _ = collect(tmp_path / "local")
    b, _ = collect(tmp_path / "dask")
    results = [c for c in a.columns if not c.startswith("_")]
    pd.testing.assert_frame_equal(a.sort_values("_run_id")[results].reset_index(drop=True),
                                  b.sort_values("_run_id")[results].reset_index(drop=True))


def test_unreachable_scheduler_fails_fast(tmp_path):
    t = time.time()
    res = CliRunner().invoke(cli, ["sweep", str(write(tmp_path, TINY)), "--out", str(tmp_path / "s"),
                                   "--scheduler", "tcp://127.0.0.1:9"])
    assert res.exit_code != 0 and "cannot reach the Dask scheduler" in res.output
    assert res.output.count("\n") == 1 and time.time() - t < 30
