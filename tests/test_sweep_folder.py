"""Every failure is one line and nothing is lost (issue 13, items 1-6 and the lists below them),
and the sweep's progress, naming and spec errors (issue 16)."""

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import GOOD_META, GOOD_ROWS, SPEC, one_error, run, write_raw_log

from harness.cache.timing import TimingConfig
from harness.core.errors import UserError
from harness.study.collect import collect
from harness.study.runs import decode_id, log_name, read_run, run_id, write_run
from harness.study.spec import loads_spec
from harness.study.sweep import SweepLock, execute
from trace_gen.synthetic import write_synthetic_log


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def without(d, *keys):
    return {k: v for k, v in d.items() if k not in keys}


BAD_LOGS = {
    "negative position": dict(rows=[(0, 0, 0, 10, [-1, 4, 7])] + GOOD_ROWS[1:]),
    "position == ctx_len": dict(rows=[(0, 0, 0, 10, [1, 4, 10])] + GOOD_ROWS[1:]),
    "missing row": dict(rows=GOOD_ROWS[:3], meta=GOOD_META),
    "row out of order": dict(rows=[GOOD_ROWS[1], GOOD_ROWS[0]] + GOOD_ROWS[2:]),
    "duplicate position": dict(rows=[(0, 0, 0, 10, [1, 4, 4])] + GOOD_ROWS[1:]),
    "unsorted positions": dict(rows=[(0, 0, 0, 10, [4, 1, 7])] + GOOD_ROWS[1:]),
    "more than topk": dict(rows=[(0, 0, 0, 10, [1, 2, 4, 7])] + GOOD_ROWS[1:]),
    "corrupt metadata.json": dict(meta_text='{"schema_version": 1, "requests'),
    "metadata without layers": dict(meta=without(GOOD_META, "layers")),
    "metadata of the wrong type": dict(meta={**GOOD_META, "steps": "2"}),
    "topk not an integer": dict(meta={**GOOD_META, "indexer": {"name": "hand", "topk": 2.5}}),
}
BAD_LOG_MESSAGES = {
    "negative position": "outside its context", "position == ctx_len": "outside its context",
    "missing row": "has 3 rows; its metadata promises", "row out of order": "every (step, layer, request) row",
    "duplicate position": "not sorted and unique", "unsorted positions": "not sorted and unique",
    "more than topk": "more than topk = 3", "corrupt metadata.json": "is not valid JSON",
    "metadata without layers": "layers is missing", "metadata of the wrong type": "steps must be an integer",
    "topk not an integer": "indexer.topk must be an integer",
}


# --- 1. --out replaces only what the command wrote -------------------------------------------

def test_1_folders_holding_other_files_are_never_replaced(tmp_path, log, sweep_copy):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for command in (["analyze", log], ["policies", log], ["report", sweep_copy], ["decode", "--no-progress",
                    "--backbone", "tiny-llama", "--indexer", "oracle", "--steps", "2", "--prompt-tokens", "16"]):
        for extra in ([], ["--overwrite"]):
            one_error(run(*command, "--out", mine, *extra), "did not write")
            assert tree(mine) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"


def test_1_own_outputs_are_replaced_only_with_overwrite(tmp_path, log):
    out = tmp_path / "loc"
    assert run("analyze", log, "--out", out).exit_code == 0
    before = (out / "summary.parquet").stat().st_mtime_ns
    one_error(run("analyze", log, "--out", out), "pass --overwrite")
    assert (out / "summary.parquet").stat().st_mtime_ns == before
    assert run("analyze", log, "--out", out, "--overwrite").exit_code == 0
    assert (out / "summary.parquet").stat().st_mtime_ns != before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("policies", log, "--out", empty, "--policy", "bip").exit_code == 0  # an empty folder is fine
    one_error(run("analyze", log, "--out", empty, "--overwrite"), "did not write")  # policies' is not analyze's


def test_1_files_are_replaced_only_with_overwrite(tmp_path, log, sweep_copy):
    target = tmp_path / "mine.json"
    for command in (["simulate", "--index-log", log, "--llc-size", "256KiB"],
                    ["stream", "--index-log", log, "--format", "parquet"],
                    ["stream", "--index-log", log, "--format", "gem5"],
                    ["collect", sweep_copy]):
        target.write_text("keep me")
        one_error(run(*command, "--out", target), "exists; pass --overwrite")
        assert target.read_text() == "keep me"
        assert run(*command, "--out", target, "--overwrite").exit_code == 0
        assert target.read_bytes() != b"keep me"
    (tmp_path / "mine.json.json").unlink()  # the gem5 trace's sidecar
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_output_locations_are_checked_before_any_work(tmp_path, log, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    one_error(run("simulate", "--index-log", log, "--out", a_file / "r.json"), "is a file, not a folder")
    one_error(run("analyze", log, "--out", a_file / "sub"), "is a file")
    one_error(run("simulate", "--index-log", log, "--out", tmp_path), "is a directory")
    one_error(run("analyze", log, "--out", a_file), "is a file")
    (tmp_path / "spec.toml").write_text(SPEC)
    one_error(run("sweep", tmp_path / "spec.toml", "--out", a_file), "is a file")
    # simulate checks its output before computing: the stream is never generated
    from trace_gen import stream

    monkeypatch.setattr(stream.StreamSource, "chunks", lambda *a, **k: pytest.fail("simulated anyway"))
    one_error(run("simulate", "--index-log", log, "--out", a_file / "r.json"), "is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_locations_are_one_line(tmp_path, log):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        one_error(run("simulate", "--index-log", log, "--out", ro / "r.json"), "is not writable")
        one_error(run("analyze", log, "--out", ro / "a"), "is not writable")
    finally:
        ro.chmod(0o755)


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, log, monkeypatch):
    import pathlib

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    one_error(run("simulate", "--index-log", log, "--llc-size", "256KiB", "--out", tmp_path / "r.json"),
              "No space left on device")
    monkeypatch.undo()
    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    one_error(run("stream", "--index-log", log, "--format", "parquet", "--out", tmp_path / "t.parquet"),
              "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


# --- 2. one sweep per folder -----------------------------------------------------------------

def test_2_a_second_sweep_refuses_in_one_line(tmp_path, sweep_copy):
    (tmp_path / "spec.toml").write_text(SPEC)
    with SweepLock(sweep_copy):
        res = run("sweep", tmp_path / "spec.toml", "--out", sweep_copy, "--jobs", "1")
        one_error(res, "another sweep (pid")
        assert "pass --wait" in res.output


def test_2_a_failure_never_replaces_a_finished_run(sweep_copy):
    folder = sorted((sweep_copy / "runs").iterdir())[0]
    result = (folder / "result.json").read_text()
    config = json.loads((folder / "config.json").read_text())
    assert not write_run(sweep_copy / "runs", folder.name, {"config.json": config, "error.json": {"error": "x"},
                                                            "provenance.json": {}})
    assert (folder / "result.json").read_text() == result and not (folder / "error.json").exists()
    (folder / "result.json").write_text("")  # a corrupt run may be replaced by a failure
    assert write_run(sweep_copy / "runs", folder.name, {"config.json": config, "error.json": {"error": "x"},
                                                        "provenance.json": {}})
    assert read_run(folder).status == "failed"
    assert not [p for p in (sweep_copy / "runs").iterdir() if p.name.startswith(".")]


def test_2_three_sweeps_at_once_each_run_done_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DSA_LLC_CACHE", str(tmp_path / "cache"))
    (tmp_path / "spec.toml").write_text(SPEC)
    folder = tmp_path / "s"
    cmd = [sys.executable, "-m", "harness.cli", "sweep", str(tmp_path / "spec.toml"), "--out", str(folder),
           "--jobs", "1", "--wait"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    done = sum(int(out.split(" runs done")[0].split()[-1]) for out, _ in outs)
    assert done == 3  # each run simulated by exactly one of the three
    df, corrupt = collect(folder)
    assert len(df) == 3 and (df._status == "ok").all() and not corrupt
    assert len(list((folder / "logs").iterdir())) == 1


# --- 3. a run is finished only if its result is valid ----------------------------------------

CORRUPTIONS = {
    "empty": ("", "result.json is not valid JSON"),
    "truncated": (None, "result.json is not valid JSON"),
    "empty object": ("{}", "result.accesses is not a count"),
    "a list": ("[1, 2]", "the result is not a JSON object"),
    "wrong types": (None, "result.by_class.kv.hits is not a count"),
    "NaN step time": (None, "result.step_time_cycles is not a finite cycle count"),
}


def test_3_invalid_results_are_corrupt_in_collect_and_redone_by_the_sweep(sweep_copy):
    victim = sorted((sweep_copy / "runs").iterdir())[1]
    good = json.loads((victim / "result.json").read_text())
    kv = {**good["by_class"]["kv"], "hits": "many"}
    texts = {"truncated": (victim / "result.json").read_text()[:200],
             "wrong types": json.dumps({**good, "by_class": {**good["by_class"], "kv": kv}}),
             "NaN step time": json.dumps({**good, "step_time_cycles": float("nan")})}
    for name, (text, reason) in CORRUPTIONS.items():
        (victim / "result.json").write_text(texts.get(name, text))
        out = sweep_copy / "results.parquet"
        res = run("collect", sweep_copy, "--out", out, "--overwrite")
        assert res.exit_code == 0 and f"corrupt run {victim.name}: {reason}" in res.output, (name, res.output)
        df = pd.read_parquet(out).set_index("_run_id")
        assert df.loc[victim.name, "_status"] == "corrupt" and reason in df.loc[victim.name, "_error"]
        reserved = json.loads((victim / "config.json").read_text())["llc"]["reserve_ways"]
        assert (df._status == "ok").sum() == 2 and df.loc[victim.name, "reserve_ways"] == reserved
        counts = execute(loads_spec(SPEC), sweep_copy, jobs=1, progress=False)  # no --rerun-failed needed
        assert counts["ok"] == 1 and counts["skipped"] == 2, name
        assert read_run(victim).status == "ok"


# --- 4. one index log validator for every reader ---------------------------------------------

@pytest.mark.parametrize("case", list(BAD_LOGS))
def test_4_every_reader_refuses_a_bad_log(tmp_path, case):
    bad = write_raw_log(tmp_path / "bad", **BAD_LOGS[case])
    message = BAD_LOG_MESSAGES[case]
    out = tmp_path / "out"
    for command in (["simulate", "--index-log", bad, "--llc-size", "64KiB", "--out", out / "r.json"],
                    ["stream", "--index-log", bad, "--format", "parquet", "--out", out / "t.parquet"],
                    ["analyze", bad, "--out", out / "a"],
                    ["policies", bad, "--out", out / "p"]):
        one_error(run(*command), message)
        assert not out.exists(), command
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_4_the_report_refuses_a_bad_log_of_its_sweep(tmp_path, sweep_copy):
    (log,) = (sweep_copy / "logs").iterdir()
    t = pq.read_table(log / "index_log.parquet")
    positions = t.column("positions").to_pylist()
    positions[5] = [-3] + positions[5][1:]
    pq.write_table(t.set_column(t.schema.get_field_index("positions"), "positions",
                                pa.array(positions, pa.list_(pa.int32()))), log / "index_log.parquet")
    one_error(run("report", sweep_copy, "--out", tmp_path / "r"), "outside its context")
    assert not (tmp_path / "r").exists()


def test_4_a_good_raw_log_passes(tmp_path):
    good = write_raw_log(tmp_path / "good")
    assert run("simulate", "--index-log", good, "--llc-size", "64KiB").exit_code == 0
    assert run("policies", good, "--out", tmp_path / "p").exit_code == 0


# --- 5. no signal death on any file content ---------------------------------------------------

def test_5_more_positions_than_topk_and_positions_beyond_ctx_are_errors_not_crashes(tmp_path):
    # these overran the numba kernels' buffers (rc 139); run in a child process to see a signal
    wide = write_raw_log(tmp_path / "wide", rows=[(0, 0, 0, 10, list(range(9)))] + GOOD_ROWS[1:])
    beyond = write_raw_log(tmp_path / "beyond", rows=GOOD_ROWS[:3] + [(0, 1, 1, 11, [0, 3, 4000])])
    for args in (["stream", "--index-log", wide, "--format", "parquet", "--out", tmp_path / "t.parquet"],
                 ["policies", beyond, "--out", tmp_path / "p"]):
        res = subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True)
        assert res.returncode == 1, (res.returncode, res.stderr)
        assert res.stderr.count("error:") == 1 and "Traceback" not in res.stderr


def test_5_stream_buffers_are_sized_from_the_data(tmp_path, log):
    from trace_gen.geometry import PRESETS
    from trace_gen.indexlog import IndexLog
    from trace_gen.stream import Layout, StreamSource

    src = StreamSource(IndexLog(log), PRESETS["deepseek-v3.2"], Layout())
    assert src.max_row == max(map(len, IndexLog(log).dataframe().positions))


# --- 6. values are type-checked: specs and options ---------------------------------------------

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
def test_6_spec_values_are_checked_every_problem_once(tmp_path, text, messages):
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
def test_6_option_values_are_checked(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "t.npy", np.arange(10, dtype=np.uint64))
    one_error(run(*args), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npy"]


# --- tracebacks that became one line -----------------------------------------------------------

def trace(tmp_path, name, frame):
    path = tmp_path / name
    frame.to_csv(path, index=False) if name.endswith(".csv") else frame.to_parquet(path)
    return path


def test_bad_traces_are_one_line(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros(0, np.uint64))
    (tmp_path / "header.csv").write_text("addr,size\n")
    cases = [(tmp_path / "empty.npy", "is empty"), (tmp_path / "header.csv", "is empty"),
             (trace(tmp_path, "end.parquet", pd.DataFrame({"addr": [(1 << 63) - 8], "size": [64]})),
              "ends beyond 2**63"),
             (trace(tmp_path, "huge.parquet", pd.DataFrame({"addr": [0], "size": [100 << 30]})), "exceeds"),
             (trace(tmp_path, "nulls.parquet", pd.DataFrame({"addr": [1, None]}, dtype="Int64")), "is empty at row 1")]
    for path, message in cases:
        one_error(run("simulate", "--access-trace", path, "--llc-size", "64KiB", "--out", tmp_path / "r.json"), message)
    assert not (tmp_path / "r.json").exists()


def test_a_request_spanning_many_lines_is_simulated_in_pieces(tmp_path):
    from harness.core.accesstrace import Requests

    r = Requests.of(np.array([100, 1 << 20]), size=np.array([64 * 1000, 130]))
    pieces = list(r.line_chunks(max_lines=300))
    assert [len(p) for p in pieces] == [300, 300, 300, 104]
    whole = np.concatenate([p.line for p in pieces])
    assert np.array_equal(whole, r.lines().line) and len(whole) == 1001 + 3


def test_policies_edge_cases(tmp_path):
    empty = write_raw_log(tmp_path / "empty", rows=[], meta={**GOOD_META, "steps": 0})
    one_error(run("policies", empty, "--out", tmp_path / "p"), "has no rows")
    good = write_raw_log(tmp_path / "good")
    res = run("policies", good, "--out", tmp_path / "q", "--policy", "min")
    assert res.exit_code == 0 and "MIN hits" in res.output, res.output
    one_error(run("policies", good, "--out", tmp_path / "r", "--param", "pin-recent.window=abc"), "window")


# --- processes and leftovers ------------------------------------------------------------------

def test_leftovers_of_killed_processes_are_cleaned_and_legacy_log_folders_reused(sweep_copy):
    spec = loads_spec(SPEC)
    (named,) = (sweep_copy / "logs").iterdir()
    decode = spec.runs[0]["decode"]
    assert named.name == log_name(decode) == f"tiny_llama-oracle-k8-{decode_id(decode)}"
    named.rename(sweep_copy / "logs" / decode_id(decode))  # as an older sweep named it
    for rid in [run_id(r) for r in spec.runs]:
        shutil.rmtree(sweep_copy / "runs" / rid)
    leftovers = [sweep_copy / "logs" / f".{named.name}.k2j3h4", sweep_copy / "runs" / ".abc.1234.tmp",
                 sweep_copy / "logs" / ".progress-123.json"]
    for p in leftovers[:2]:
        p.mkdir()
    leftovers[2].write_text("{}")
    assert execute(spec, sweep_copy, jobs=1, progress=False)["ok"] == 3
    assert [p.name for p in (sweep_copy / "logs").iterdir()] == [decode_id(decode)]  # reused, not decoded again
    assert not any(p.exists() for p in leftovers)


def test_an_unreadable_index_log_is_decoded_again(sweep_copy):
    (log,) = (sweep_copy / "logs").iterdir()
    data = (log / "index_log.parquet").read_bytes()
    (log / "index_log.parquet").write_bytes(data[: len(data) // 2])
    shutil.rmtree(sweep_copy / "runs")
    assert execute(loads_spec(SPEC), sweep_copy, jobs=1, progress=False)["ok"] == 3
    assert (log / "index_log.parquet").stat().st_size > len(data) // 2


def test_a_failed_decode_gives_its_cause_to_every_run_and_reruns_report_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DSA_LLC_CACHE", str(tmp_path / "cache"))
    spec = tmp_path / "spec.toml"
    short = tmp_path / "short.txt"  # a text too short for the prompt: only the decode finds out
    short.write_text("hello world\n")
    spec.write_text(SPEC.replace("steps = 3", f"steps = 3\ntext = {json.dumps(str(short))}"))
    folder = tmp_path / "s"
    one_error(run("sweep", spec, "--out", folder, "--jobs", "1"), "3 of 3 runs failed")
    for d in (folder / "runs").iterdir():
        assert "too short for 1 prompt(s) of 64 tokens" in json.loads((d / "error.json").read_text())["error"]
    res = run("sweep", spec, "--out", folder, "--jobs", "1")
    one_error(res, "3 of 3 runs failed (--rerun-failed retries them)")
    assert "0 runs done, 0 failed, 3 skipped" in res.output


def test_index_log_folders_get_normal_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    folder = write_synthetic_log(tmp_path / "log", steps=1, layers=1, topk=2, prompt=4)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((folder / "index_log.parquet").stat().st_mode) == 0o666 & ~umask


# --- issue 16: progress, naming, spec errors, bare command -------------------------------------

def test_bare_command_prints_the_help():
    res = subprocess.run([sys.executable, "-m", "harness.cli"], capture_output=True, text=True)
    assert res.returncode == 0 and "Usage: dsa-harness" in res.stdout and "error" not in res.stdout + res.stderr


def test_progress_weighs_work_and_names_the_decode_in_flight(tmp_path):
    from harness.study.progress import SweepProgress, decode_cost, sim_cost

    # the estimate needs no weights: a tiny-llama spec's run with smollm2's decode swapped in
    run = loads_spec(SPEC).runs[0]
    decode = dict(run["decode"], backbone="smollm2-135m", steps=24, prompt_tokens=2048)
    run = dict(run, decode=decode)
    spec = type("Parsed", (), {"runs": [run], "decodes": {decode_id(decode): decode}})
    # measured: a real backbone's decode costs far more than one simulation of its log
    assert decode_cost(decode) > 20 * sim_cost(spec.runs[0])
    (tmp_path / "logs").mkdir()
    bar = SweepProgress(tmp_path, spec.decodes, spec.runs, enabled=False)
    did = decode_id(decode)
    (tmp_path / "logs" / f".progress-{did}.json").write_text(
        json.dumps({"phase": "decode smollm2-135m", "done": 12, "total": 24}))
    bar.poll()
    assert "decode smollm2-135m step 12/24" in bar.bar.postfix
    assert bar.bar.n == pytest.approx(decode_cost(decode) / 2)
    bar.decode_done(did)
    bar.start_simulations()
    assert bar.bar.n / bar.bar.total > 0.9  # the decode was most of the work
    bar.close()


def test_decode_and_fit_report_progress_with_the_backbone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSA_LLC_CACHE", str(tmp_path / "cache"))
    from trace_gen.decode import DecodeConfig, decode

    heard = []
    decode(DecodeConfig("tiny-llama", "dsa", 8, 64, 3), tmp_path / "log", progress=False,
           indexer_options={"iterations": 1, "calibration_tokens": 128, "queries": 16},
           on_progress=lambda *p: heard.append(p))
    assert heard[0] == ("load tiny-llama", 0, 0) and ("fit tiny-llama", 0, 3) in heard
    assert heard[-1] == ("decode tiny-llama", 3, 3)
    from trace_gen.backbones import load_backbone
    from trace_gen.indexers.dsa import calibrate, fit_settings

    calibrate(load_backbone("tiny-llama"), fit_settings({"iterations": 1, "calibration_tokens": 128, "queries": 16}))
    assert "fitting the dsa indexer of tiny-llama: layer 3/3" in capsys.readouterr().err


def test_spec_digest_and_run_ids_are_unchanged_by_the_checks():
    # folders of earlier sweeps keep matching: the canonical config of a run did not change
    run0 = loads_spec(SPEC).runs[0]
    assert run0["decode"] == {"backbone": "tiny-llama", "indexer": "oracle", "topk": 8, "prompt_tokens": 64,
                              "steps": 3, "requests": 1, "text": "python-source", "sink_tokens": 0,
                              "local_window": 0, "observe_only": False, "seed": 0}
    assert run0["timing"] == TimingConfig.make().to_dict()  # the default platform's values
    assert run0["llc"] == {"size": 65536, "ways": 8, "reserve_ways": 0, "policy": "lru",
                           "whole_token_eviction": True, "line": 64}


@pytest.mark.slow  # two whole demo runs (a tiny spec), about 20 s
def test_demo_replaces_only_its_own_report(tmp_path, monkeypatch):
    monkeypatch.setenv("DSA_LLC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("harness.study.demo.DEMO_SPEC", SPEC.replace("[0, 2, 4]", "[0, 2]"))
    out = tmp_path / "study"
    (out / "report").mkdir(parents=True)
    (out / "report" / "notes.txt").write_text("keep me")
    one_error(run("demo", "--out", out, "--jobs", "1"), "did not write")
    assert tree(out) == ["report", "report/notes.txt"]  # refused before the sweep ran
    (out / "report" / "notes.txt").unlink()
    assert run("demo", "--out", out, "--jobs", "1").exit_code == 0
    first = (out / "report" / "report.md").stat().st_mtime_ns
    res = run("demo", "--out", out, "--jobs", "1")
    assert res.exit_code == 0 and "0 runs done" in res.output, res.output
    assert (out / "report" / "report.md").stat().st_mtime_ns != first


def test_a_one_job_sweep_polls_progress_while_a_task_runs():
    # --jobs 1 runs tasks in the sweep's own process: the progress bar must still hear of a
    # decode in flight (it sat silent through a 30-minute indexer fit)
    from harness.study.executors import LocalExecutor

    polls = []
    out = list(LocalExecutor(1).map(time.sleep, {"a": (1.2,)}, poll=lambda: polls.append(1)))
    assert [key for key, *_ in out] == ["a"] and len(polls) >= 2


def test_spec_decodes_longer_than_the_backbones_context_are_refused_unless_excluded():
    # the context limit is checked before anything runs (a serving-scale sweep lost 108 runs to
    # a 32,768-token prompt + 8 steps on a 32,768-token model), and a point an exclude table
    # removes is not a problem
    too_long = SPEC.replace("prompt_tokens = 64", "prompt_tokens = [64, 8190]")
    with pytest.raises(UserError, match="prompt of 8,190 tokens \\+ 3 steps exceeds tiny-llama's context of 8,192"):
        loads_spec(too_long)
    spec = loads_spec(too_long + '\n[[exclude]]\nbackbone = "tiny-llama"\nprompt_tokens = 8190\n')
    assert {r["decode"]["prompt_tokens"] for r in spec.runs} == {64}
