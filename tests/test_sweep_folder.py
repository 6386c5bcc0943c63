"""A sweep's folder: one sweep works in it at a time (three started at once share the runs), a
run is finished only when its result is valid, and a failure never replaces a finished run;
the leftovers of killed processes, an unreadable index log and a failed decode are recovered
from on the next sweep."""

import json
import shutil
import subprocess
import sys

import pandas as pd
from helpers import SPEC, one_error, run

from harness.study.collect import collect
from harness.study.runs import decode_id, log_name, read_run, run_id, write_run
from harness.study.spec import loads_spec
from harness.study.sweep import SweepLock, execute

# --- one sweep per folder ---------------------------------------------------------------------

def test_a_second_sweep_refuses_in_one_line(tmp_path, sweep_copy):
    (tmp_path / "spec.toml").write_text(SPEC)
    with SweepLock(sweep_copy):
        res = run("sweep", tmp_path / "spec.toml", "--out", sweep_copy, "--jobs", "1")
        one_error(res, "another sweep (pid")
        assert "pass --wait" in res.output


def test_a_failure_never_replaces_a_finished_run(sweep_copy):
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


def test_three_sweeps_at_once_each_run_done_once(tmp_path, monkeypatch):
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


# --- a run is finished only if its result is valid --------------------------------------------

CORRUPTIONS = {
    "empty": ("", "result.json is not valid JSON"),
    "truncated": (None, "result.json is not valid JSON"),
    "empty object": ("{}", "result.accesses is not a count"),
    "a list": ("[1, 2]", "the result is not a JSON object"),
    "wrong types": (None, "result.by_class.kv.hits is not a count"),
    "NaN step time": (None, "result.step_time_cycles is not a finite cycle count"),
}


def test_invalid_results_are_corrupt_in_collect_and_redone_by_the_sweep(sweep_copy):
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


# --- what killed processes and failed decodes leave behind ------------------------------------

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
