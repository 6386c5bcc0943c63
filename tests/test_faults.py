"""Faults in the middle of work: a full disk, a refused sweep, an interrupted command, a crashed
gem5, a killed Dask worker, a broken cache file, too little memory. Each leaves nothing behind
(no temporary, no lock, no child process), says what happened in one line, and a rerun resumes.

The README's fault table (*Faults: what the harness promises*) names, per fault, the test here
that runs it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import SPEC, one_error, run, tiny_spec

from harness.core.locks import FileLock
from harness.study.collect import collect
from harness.study.runs import read_run, run_id
from harness.study.spec import loads_spec
from harness.study.sweep import execute

pytestmark = pytest.mark.usefixtures("private_cache")

DECODE = ["decode", "--backbone", "tiny-llama", "--indexer", "oracle", "--topk", "8", "--prompt-tokens", "64",
          "--steps", "3", "--no-progress"]


def listing(folder: Path) -> list[str]:
    """Every path under ``folder``, hidden ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --- the README's fault table ---------------------------------------------------------------------

def test_every_fault_of_the_readme_table_has_a_test_that_exists():
    """Each row of the README's table of faults names at least one test, and each exists."""
    import ast
    import re

    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    table = text.split("### Faults in the middle of work", 1)[1].split("\n\n###", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| fault")]
    assert len(rows) >= 10
    defined: dict[str, set] = {}
    for row in rows:
        tests = re.findall(r"`((?:tests/\w+\.py::)?test_\w+)`", row.split(" | ")[-1])
        assert tests, row
        for test in tests:
            path, _, name = test.rpartition("::")
            path = path or "tests/test_faults.py"
            if path not in defined:
                tree = ast.parse((root / path).read_text())
                defined[path] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            assert name in defined[path], f"{test} (in {row[:60]}...) is not a test of {path}"


# --- a full disk -------------------------------------------------------------------------------

def _unshare_works() -> bool:
    if not shutil.which("unshare") or not sys.platform.startswith("linux"):
        return False
    res = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                          "mount -t tmpfs -o size=64k tmpfs /mnt && echo ok"], capture_output=True, text=True)
    return res.stdout.strip() == "ok"


def on_a_full_disk(tmp_path: Path, *args) -> tuple[int, str, list[str]]:
    """Run ``dsa-harness ARGS`` with ``FULL`` in its arguments standing for a folder on a real
    file system that is full (a 64 KiB tmpfs filled up, mounted in a user and mount namespace of
    its own: no root needed) and holding an empty folder ``empty``; returns the exit status, the
    output and what the folder holds afterwards (the filler file left out)."""
    full = tmp_path / "full"
    full.mkdir()
    cmd = " ".join(f"'{a}'" for a in [sys.executable, "-m", "harness.cli",
                                      *(str(a).replace("FULL", str(full)) for a in args)])
    script = (f"mount -t tmpfs -o size=64k tmpfs '{full}' && mkdir '{full}/empty' && "
              f"(dd if=/dev/zero of='{full}/filler' bs=4k 2>/dev/null; true) && "
              f"{cmd} > '{tmp_path}/out.txt' 2>&1; echo $? > '{tmp_path}/rc.txt'; "
              f"cd '{full}' && find . -mindepth 1 ! -name filler > '{tmp_path}/left.txt'")
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], check=True,
                   timeout=600, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    left = (tmp_path / "left.txt").read_text().split()
    return int((tmp_path / "rc.txt").read_text()), (tmp_path / "out.txt").read_text(), left


def _one_line(code: int, output: str, message: str) -> None:
    assert code not in (0, None), output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], output
    assert "Traceback" not in output and "internal error" not in output, output


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_works(), reason="needs unshare(1) with user namespaces to mount a tiny tmpfs")
def test_a_real_full_disk_leaves_no_temporary_and_no_lock(tmp_path):
    """A really full file system (ENOSPC from the kernel): decode, a sweep and simulate --out fail
    in one line and leave the folder as it was (before the fix, decode left `.log.<id>.tmp`)."""
    (tmp_path / "spec.toml").write_text(SPEC)
    for args in ([*DECODE, "--out", "FULL/log"], [*DECODE, "--out", "FULL/empty"],
                 ["sweep", tmp_path / "spec.toml", "--out", "FULL/s", "--jobs", "1"],
                 ["sweep", tmp_path / "spec.toml", "--out", "FULL/empty", "--jobs", "1"]):
        code, output, left = on_a_full_disk(tmp_path, *args)
        _one_line(code, output, "No space left on device")
        assert left == ["./empty"], (args, left)
        shutil.rmtree(tmp_path / "full")


def test_a_full_disk_mid_decode_leaves_no_hidden_folder(tmp_path):
    """ENOSPC from the Parquet writer, when it opens the log (a disk full from the start: its
    header) and in the middle of the rows: nothing is left, the parents made for the log neither."""
    real_init = pq.ParquetWriter.__init__

    def full_at_open(self, where, *args, **kwargs):
        Path(where).touch()  # the file exists, its header does not fit
        no_space()

    for patch in (("__init__", full_at_open), ("write_table", no_space)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(pq.ParquetWriter, *patch)
            one_error(run(*DECODE, "--out", tmp_path / "new" / "log"), "No space left on device")
        assert listing(tmp_path) == [], (patch[0], listing(tmp_path))
    assert pq.ParquetWriter.__init__ is real_init
    assert run(*DECODE, "--out", tmp_path / "log").exit_code == 0  # the same decode works otherwise


# --- a sweep refused or failing before it runs ------------------------------------------------------

def test_a_sweep_refused_before_it_runs_leaves_no_lock(tmp_path, sweep_copy, monkeypatch):
    """A folder of another spec, an unreachable scheduler, a full disk: one line each, and the
    folder exactly as it was (a new one not made); another spec's folder is not even locked."""
    other = tmp_path / "other.toml"
    other.write_text(SPEC.replace("steps = 3", "steps = 2"))
    (tmp_path / "spec.toml").write_text(SPEC)
    before = listing(sweep_copy)
    assert ".lock" not in before  # the finished sweep removed its lock

    import harness.study.sweep as sweep_mod

    locked = []
    real_lock = sweep_mod.SweepLock.__enter__
    monkeypatch.setattr(sweep_mod.SweepLock, "__enter__", lambda self: locked.append(self) or real_lock(self))
    one_error(run("sweep", other, "--out", sweep_copy, "--jobs", "1"), "different spec")
    assert not locked and listing(sweep_copy) == before

    for out in (sweep_copy, tmp_path / "new"):
        one_error(run("sweep", tmp_path / "spec.toml", "--out", out, "--scheduler", "tcp://127.0.0.1:9"),
                  "cannot reach the Dask scheduler")
    assert not locked and listing(sweep_copy) == before and not (tmp_path / "new").exists()

    import pathlib

    monkeypatch.setattr(pathlib.Path, "write_text", no_space)  # sweep.json cannot be written
    one_error(run("sweep", tmp_path / "spec.toml", "--out", tmp_path / "new", "--jobs", "1"),
              "No space left on device")
    assert len(locked) == 1 and not (tmp_path / "new").exists()
    monkeypatch.setattr(os, "pwrite", no_space)  # nor the lock's holder
    one_error(run("sweep", tmp_path / "spec.toml", "--out", tmp_path / "new", "--jobs", "1"),
              "No space left on device")
    assert not (tmp_path / "new").exists()


def test_a_lock_file_exists_only_while_held(tmp_path):
    path = tmp_path / ".lock"
    with FileLock(path):
        assert path.read_text().startswith(f"pid {os.getpid()}")
    assert not path.exists()
    path.write_text("pid 1 on a machine that crashed")  # left by a SIGKILL: holds no lock
    with FileLock(path, wait=False):
        assert path.read_text().startswith(f"pid {os.getpid()}")
    assert not path.exists()


# --- interruption: SIGINT, SIGTERM, SIGHUP at several moments ------------------------------------

# 8 runs (8 reservations) over one decode of 24 steps
LONG_SPEC = tiny_spec('"deepseek-v3.2"', '"64KiB"', '"token-lru"').replace(
    "reserve_ways = [0, 2, 4]", "reserve_ways = [0, 1, 2, 3, 4, 5, 6, 7]").replace("steps = 3", "steps = 24")


def processes_in_group(pgid: int) -> list[int]:
    """Live processes (not zombies) of a process group, from /proc."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(pid))
    return out


class Command:
    """``dsa-harness ARGS`` in a child process in a process group of its own (a terminal's
    Ctrl-C reaches the whole group), with a private temporary folder (``TMPDIR``)."""

    def __init__(self, tmp_path: Path, *args):
        self.tmp = tmp_path / "tmpdir"
        self.tmp.mkdir(exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, env={**os.environ, "TMPDIR": str(self.tmp)})

    def wait_for(self, what: str, condition, timeout: float = 600) -> None:
        deadline = time.time() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"the command ended before {what}: {self.proc.stderr.read()[-2000:]}")
            if time.time() > deadline:
                self.proc.kill()
                pytest.fail(f"no {what} within {timeout} s")
            time.sleep(0.02)

    def stop(self, sig: int, group: bool) -> str:
        """Send ``sig`` (to the whole group: a terminal's Ctrl-C) and check how the command ends:
        exit 128 + sig, one ``error:`` line, no process of its group left, no temporary in TMPDIR."""
        (os.killpg if group else os.kill)(self.proc.pid, sig)
        _, err = self.proc.communicate(timeout=300)
        lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
        assert self.proc.returncode == 128 + sig, err[-3000:]
        assert [line for line in lines if line.startswith("error:")] == lines[-1:], err[-3000:]
        assert lines[-1].startswith(f"error: interrupted by {signal.Signals(sig).name}"), lines[-1]
        assert "Traceback" not in err and "Warning" not in err, err[-3000:]
        deadline = time.time() + 60
        while processes_in_group(self.proc.pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not processes_in_group(self.proc.pid), "processes outlived the command"
        # (torch makes its compile cache, torchinductor_<user>, in TMPDIR when imported: not a temporary)
        assert [p for p in listing(self.tmp) if not p.startswith("torchinductor_")] == []
        return err


def finished_runs(folder: Path) -> dict[str, float]:
    """The finished runs of a sweep folder: id -> when it started (provenance)."""
    runs = folder / "runs"
    return {p.parent.name: json.loads((p.parent / "provenance.json").read_text())["started"]
            for p in runs.glob("*/result.json") if not p.parent.name.startswith(".")} if runs.is_dir() else {}


def hidden(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob(".*")]


def interrupt_sweep(tmp_path, moment: str, sig: int, group: bool, jobs: int) -> None:
    """Interrupt a sweep during its decode or during its simulations; it leaves no temporary and
    no lock, every run folder it leaves is finished, and a rerun does the rest, each finished
    run kept as it was."""
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(LONG_SPEC)
    spec = loads_spec(LONG_SPEC)
    folder = tmp_path / "s"
    cmd = Command(tmp_path, "sweep", spec_path, "--out", folder, "--jobs", jobs)
    if moment == "decode":
        cmd.wait_for("a decode in flight", lambda: list((folder / "logs").glob(".progress-*")))
    else:
        cmd.wait_for("a finished run", lambda: finished_runs(folder))
    cmd.stop(sig, group)
    assert hidden(folder) == [], hidden(folder)
    done = finished_runs(folder)
    assert len(done) < len(spec.runs), "the sweep finished before it could be interrupted"
    for d in (folder / "runs").iterdir() if (folder / "runs").is_dir() else ():
        assert read_run(d).status == "ok", d  # nothing half-written, nothing recorded as failed
    counts = execute(spec, folder, jobs=2, progress=False)
    assert counts == {"ok": len(spec.runs) - len(done), "failed": 0, "skipped": len(done), "still_failed": 0}
    after = finished_runs(folder)
    assert len(after) == len(spec.runs) and all(after[k] == v for k, v in done.items())
    assert hidden(folder) == []


def test_sigterm_during_the_simulations_keeps_finished_runs_and_resumes(tmp_path):
    interrupt_sweep(tmp_path, "simulation", signal.SIGTERM, group=False, jobs=2)


@pytest.mark.slow
@pytest.mark.parametrize("moment, sig, group, jobs", [
    ("decode", signal.SIGINT, True, 2),       # Ctrl-C in a terminal: the workers get it too
    ("simulation", signal.SIGINT, True, 1),   # the runs in the sweep's own process
    ("decode", signal.SIGTERM, False, 1),
    ("simulation", signal.SIGHUP, False, 2),  # the terminal closed
])
def test_interrupted_sweeps_leave_nothing_and_resume(tmp_path, moment, sig, group, jobs):
    interrupt_sweep(tmp_path, moment, sig, group, jobs)


def test_sigint_during_the_report_leaves_no_report(tmp_path, sweep_copy):
    cmd = Command(tmp_path, "report", sweep_copy, "--out", tmp_path / "report")
    cmd.wait_for("the report being written", lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".report.")])
    cmd.stop(signal.SIGINT, group=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "tmpdir"]
    assert ".lock" not in listing(sweep_copy) and hidden(sweep_copy) == []


def test_sigterm_during_a_decode_leaves_no_log(tmp_path):
    args = [a if a != "3" else "400" for a in DECODE]  # 400 steps: long enough to catch
    cmd = Command(tmp_path, *args, "--out", tmp_path / "out" / "log")
    cmd.wait_for("the log being written", lambda: (tmp_path / "out").is_dir() and list((tmp_path / "out").iterdir()))
    cmd.stop(signal.SIGTERM, group=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmpdir"]  # the folder made for it went too


GEM5_SPEC = """
[sweep]
backend = ["builtin", "gem5"]

[decode]
backbone = "tiny-llama"
indexer = "oracle"
topk = 8
prompt_tokens = 48
steps = 3

[stream]
page_tokens = 16

[llc]
size = "64KiB"
ways = 8
reserve_ways = [0, 4]
policy = "token-lru"
"""


def gem5_processes(binary: str) -> list[int]:
    """Live processes running ``binary`` (from /proc)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cmdline and cmdline[0].decode(errors="replace") == binary and state != "Z":
            out.append(int(pid))
    return out


@pytest.mark.gem5
def test_sigint_during_a_gem5_run_stops_gem5_and_resumes(tmp_path, gem5_binary):
    """Ctrl-C while gem5 simulates: gem5 (in a session of its own, out of the terminal's reach)
    is stopped by the harness, the run is not recorded as failed, and a rerun does it."""
    (tmp_path / "spec.toml").write_text(GEM5_SPEC)
    folder = tmp_path / "s"
    cmd = Command(tmp_path, "sweep", tmp_path / "spec.toml", "--out", folder, "--jobs", "2", "--gem5", gem5_binary)
    cmd.wait_for("a gem5 run", lambda: gem5_processes(gem5_binary))
    cmd.stop(signal.SIGINT, group=True)
    deadline = time.time() + 30
    while gem5_processes(gem5_binary) and time.time() < deadline:
        time.sleep(0.1)
    assert not gem5_processes(gem5_binary), "gem5 outlived the sweep"
    assert hidden(folder) == [] and all(read_run(d).status == "ok" for d in (folder / "runs").iterdir())
    spec = loads_spec(GEM5_SPEC)
    done = finished_runs(folder)
    counts = execute(spec, folder, jobs=2, progress=False, gem5_binary=gem5_binary)
    assert counts["ok"] == len(spec.runs) - len(done) and counts["failed"] == 0


# --- crashed backends -----------------------------------------------------------------------------

# A stand-in for gem5, for the failure path only: what is under test is how the harness handles a
# gem5 that dies (its run failed with gem5's last lines as the cause, the sweep going on, a rerun
# redoing it), not gem5. It passes the extension check, writes a few lines of log, then dies as
# FAKE_GEM5 says: "kill" (SIGKILL, as the kernel's OOM killer does) or "exit" (a fatal error).
# Each run appends a line to FAKE_GEM5_CALLS.
FAKE_GEM5 = """#!/bin/sh
case "$*" in *check.py*) echo "DSA_LLC_MISSING="; exit 0;; esac
echo run >> "$FAKE_GEM5_CALLS"
echo "gem5 Simulator System.  https://www.gem5.org"
echo "info: Entering event queue @ 0.  Starting simulation..." >&2
echo "warn: the last thing gem5 said before it died" >&2
if [ "$FAKE_GEM5" = kill ]; then kill -KILL $$; fi
echo "src/mem/cache/base.cc:42: fatal: fatal condition !blk occurred: the fake gem5 failed" >&2
exit 3
"""


def test_a_gem5_that_dies_fails_its_run_with_gem5s_last_lines_and_the_sweep_goes_on(tmp_path, monkeypatch):
    fake = tmp_path / "gem5.opt"
    fake.write_text(FAKE_GEM5)
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    monkeypatch.setenv("FAKE_GEM5_CALLS", str(calls))
    (tmp_path / "spec.toml").write_text(GEM5_SPEC)
    spec = loads_spec(GEM5_SPEC)
    gem5_runs = [r for r in spec.runs if r["backend"] == "gem5"]
    folder = tmp_path / "s"

    def sweep(*extra):
        return run("sweep", tmp_path / "spec.toml", "--out", folder, "--jobs", "1", "--gem5", fake, *extra)

    def errors():
        return [json.loads((folder / "runs" / run_id(r) / "error.json").read_text()) for r in gem5_runs]

    # killed (SIGKILL): failed with its cause, the builtin runs done; any rerun tries again
    monkeypatch.setenv("FAKE_GEM5", "kill")
    res = sweep()
    one_error(res, f"{len(gem5_runs)} of {len(spec.runs)} runs failed")
    assert f"{len(spec.runs) - len(gem5_runs)} runs done, {len(gem5_runs)} failed" in res.output
    for e in errors():
        assert e["error"].startswith("gem5 was killed by SIGKILL: warn: the last thing gem5 said"), e
        assert e["log_tail"][-1] == "warn: the last thing gem5 said before it died" and e["transient"] is True
    assert len(calls.read_text().split()) == len(gem5_runs)
    res = sweep()  # a plain rerun redoes the killed runs (and only them)
    assert f"0 runs done, {len(gem5_runs)} failed, {len(spec.runs) - len(gem5_runs)} skipped" in res.output
    assert len(calls.read_text().split()) == 2 * len(gem5_runs)

    # a nonzero exit: failed with gem5's fatal line; redone on request (--rerun-failed)
    monkeypatch.setenv("FAKE_GEM5", "exit")
    shutil.rmtree(folder)
    one_error(sweep(), f"{len(gem5_runs)} of {len(spec.runs)} runs failed")
    for e in errors():
        assert e["error"].startswith("gem5 failed (exit 3): fatal: the fake gem5 failed"), e
        assert e["log_tail"][-1].endswith("the fake gem5 failed") and e["transient"] is False
    n = len(calls.read_text().split())
    one_error(sweep(), "--rerun-failed retries them")
    assert len(calls.read_text().split()) == n  # not retried by itself: the same input fails the same way
    one_error(sweep("--rerun-failed"), f"{len(gem5_runs)} of {len(spec.runs)} runs failed")
    assert len(calls.read_text().split()) == n + len(gem5_runs)
    df, _ = collect(folder)
    assert (df[df.backend == "builtin"]._status == "ok").all() and hidden(folder) == []


@pytest.mark.slow
def test_a_local_worker_killed_mid_task_loses_no_run(tmp_path):
    """A worker process of --jobs 2 killed (SIGKILL, as the OOM killer does) while it runs a task:
    its pool breaks, the tasks in it go to a new pool, the sweep completes with each run done
    once, and nothing but the one error line's absence shows it."""
    (tmp_path / "spec.toml").write_text(LONG_SPEC)
    spec = loads_spec(LONG_SPEC)
    folder = tmp_path / "s"
    cmd = Command(tmp_path, "sweep", tmp_path / "spec.toml", "--out", folder, "--jobs", "2")
    cmd.wait_for("a finished run", lambda: finished_runs(folder))
    workers = [pid for pid in processes_in_group(cmd.proc.pid)
               if b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read()]
    assert workers, "no worker processes"
    os.kill(workers[0], signal.SIGKILL)
    _, err = cmd.proc.communicate(timeout=900)
    assert cmd.proc.returncode == 0 and "error" not in err and "Warning" not in err, err[-2000:]
    df, corrupt = collect(folder)
    assert len(df) == len(spec.runs) and (df._status == "ok").all() and not corrupt
    left_by_the_killed_worker(folder)


def left_by_the_killed_worker(folder: Path) -> None:
    """A worker killed outright can leave the temporary of the run it was writing (for a few
    milliseconds of each run); the next sweep deletes it. Nothing else is left."""
    assert all(h.startswith(("runs/.", "logs/.")) and h.endswith(".tmp") for h in hidden(folder)), hidden(folder)
    if hidden(folder):
        execute(loads_spec(LONG_SPEC), folder, jobs=1, progress=False)
        assert hidden(folder) == []


@pytest.mark.slow
def test_a_dask_worker_killed_mid_task_loses_no_run(tmp_path):
    """A Dask worker killed (SIGKILL) while it holds tasks: the scheduler gives them to another
    worker (its nanny starts a new one), the sweep completes, each run done once."""
    import threading

    from dask.distributed import LocalCluster

    spec = loads_spec(LONG_SPEC)
    folder = tmp_path / "s"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        outcome = {}
        sweep = threading.Thread(target=lambda: outcome.update(
            counts=execute(spec, folder, scheduler=cluster.scheduler_address, progress=False)))
        sweep.start()
        killed = None
        deadline = time.time() + 600
        while killed is None and time.time() < deadline and sweep.is_alive():
            busy = [w for w in cluster.scheduler.workers.values() if w.processing]
            if finished_runs(folder) and busy:
                killed = busy[0].pid
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        sweep.join(timeout=600)
    assert killed, "no worker was busy while the sweep ran"
    assert outcome["counts"] == {"ok": len(spec.runs), "failed": 0, "skipped": 0, "still_failed": 0}
    df, corrupt = collect(folder)
    assert len(df) == len(spec.runs) and (df._status == "ok").all() and not corrupt
    assert sorted(df._run_id) == sorted(run_id(r) for r in spec.runs)
    left_by_the_killed_worker(folder)


# --- broken caches ------------------------------------------------------------------------------------

FIT = ["--indexer", "dsa", "--indexer-option", "iterations=5", "--indexer-option", "calibration_tokens=256",
       "--indexer-option", "calibration_windows=1", "--indexer-option", "queries=64",
       "--indexer-option", "min_query_pos=16"]


def test_a_broken_indexer_fit_is_fitted_again_never_used(tmp_path, monkeypatch):
    """A truncated fit, one of other settings or fit algorithm (its metadata), another fit's
    weights under its name, and one holding NaNs: each is named in one warning line and fitted again, and the
    decode's selections are those of a good fit."""
    import torch

    monkeypatch.setenv("DSA_LLC_CACHE", str(tmp_path / "cache"))
    decode = [a for a in DECODE if a not in ("--indexer", "oracle")] + FIT

    def positions(out):
        res = run(*decode, "--out", out)
        assert res.exit_code == 0, res.output
        return pq.read_table(out / "index_log.parquet").column("positions").to_pylist(), res.output

    good, _ = positions(tmp_path / "a")
    [fit] = (tmp_path / "cache" / "indexers").glob("*.pt")
    meta = fit.with_suffix(".json")
    intact = fit.read_bytes(), meta.read_text()
    other = run(*decode, "--indexer-option", "d_I=16", "--out", tmp_path / "other")
    assert other.exit_code == 0, other.output
    [foreign] = [p for p in (tmp_path / "cache" / "indexers").glob("*.pt") if p != fit]
    nan = torch.load(fit, weights_only=True)
    nan[0]["a"][0, 0] = float("nan")

    def truncate():
        fit.write_bytes(intact[0][: len(intact[0]) // 2])

    def other_settings():
        m = json.loads(intact[1])
        m["settings"]["iterations"] = 6
        meta.write_text(json.dumps(m))

    def other_algorithm():
        m = json.loads(intact[1])
        m["algorithm"] = 1
        meta.write_text(json.dumps(m))

    breaks = {"truncated": truncate, "other settings": other_settings, "another fit algorithm": other_algorithm,
              "another fit's weights": lambda: shutil.copy(foreign, fit), "NaN": lambda: torch.save(nan, fit)}
    for i, (name, spoil) in enumerate(breaks.items()):
        spoil()
        got, output = positions(tmp_path / f"b{i}")
        warnings = [line for line in output.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and f"the cached dsa indexer fit {fit} is unusable" in warnings[0], (name, output)
        assert got == good, name
        assert positions(tmp_path / f"c{i}")[1].count("warning") == 0  # fitted again, cached again


NUMBA_SCRIPT = """
import sys
from harness.core import numba_cache
numba_cache.guard()
sys.path.insert(0, sys.argv[1])
import kernel, numpy as np
print(kernel.total(np.arange(1000, dtype=np.int64)))
"""


def test_a_broken_numba_cache_file_is_compiled_again(tmp_path):
    """numba's cache of a kernel truncated (index or data file) or replaced by garbage: one
    warning line names it, the kernel is compiled again (and cached again) and gives its number."""
    (tmp_path / "kernel.py").write_text("import numba\n\n\n@numba.njit(cache=True)\ndef total(x):\n"
                                        "    s = 0\n    for v in x:\n        s += v\n    return s\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "nbcache")}

    def total():
        res = subprocess.run([sys.executable, "-c", NUMBA_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                             env=env, timeout=300)
        assert res.returncode == 0 and res.stdout.strip() == "499500", res.stdout + res.stderr
        return res.stderr

    assert total() == ""
    [index] = (tmp_path / "nbcache").rglob("*.nbi")
    [data] = (tmp_path / "nbcache").rglob("*.nbc")
    for path, damage in [(index, lambda b: b[: len(b) // 2]), (data, lambda b: b[: len(b) // 3]),
                         (data, lambda b: b"garbage")]:
        path.write_bytes(damage(path.read_bytes()))
        warning = total().strip()
        assert warning.count("\n") == 0 and warning.startswith(f"warning: numba's cache file {index}"), warning
        assert "kernel.total again" in warning
        assert total() == ""  # cached again


@pytest.mark.slow
def test_the_simulators_kernels_survive_a_broken_numba_cache(tmp_path, log):
    """The simulator's own kernels with every numba cache file truncated: the same result."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "nbcache")}
    cmd = [sys.executable, "-m", "harness.cli", "simulate", "--index-log", str(log), "--llc-size", "64KiB",
           "--ways", "8", "--reserve-ways", "2", "--format", "json"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode == 0, first.stderr
    files = list((tmp_path / "nbcache").rglob("*.nb[ic]"))
    assert files
    for path in files:
        path.write_bytes(path.read_bytes()[:100])
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == json.loads(first.stdout)
    assert again.stderr.count("warning: numba's cache file") == len(list((tmp_path / "nbcache").rglob("*.nbi")))


def test_a_broken_calibration_file_is_refused_in_one_line(tmp_path, log, monkeypatch):
    """calibration.json truncated, of another version (a parameter this one does not fit), or with
    a value out of range: refused in one line naming it, never applied."""
    from harness.cache import calibration

    good = calibration.CALIBRATION_FILE.read_text()
    data = json.loads(good)
    foreign = json.loads(good)
    foreign["h100-sxm"]["parameters"]["latency_scale"] = 1.2
    out_of_range = json.loads(good)
    out_of_range["h100-sxm"]["parameters"]["latency_factor"] = 0.5
    path = tmp_path / "calibration.json"
    monkeypatch.setattr(calibration, "CALIBRATION_FILE", path)
    args = ["simulate", "--index-log", log, "--llc-size", "64KiB", "--ways", "8", "--format", "json"]
    try:
        for text, why in [(good[: len(good) // 2], "cannot be read"), ("[1, 2]", "not a JSON object"),
                          (json.dumps(foreign), "latency_scale is not a parameter this version fits"),
                          (json.dumps(out_of_range), "latency_factor = 0.5 is outside its range")]:
            path.write_text(text)
            calibration.load.cache_clear()
            one_error(run(*args), f"the calibration file {path} is unusable: ")
            one_error(run(*args), why)
        path.write_text(json.dumps(data))
        calibration.load.cache_clear()
        res = run(*args)
        assert res.exit_code == 0 and json.loads(res.output)["config"]["timing"]["latency_factor"] == \
            data["h100-sxm"]["parameters"]["latency_factor"]
    finally:
        calibration.load.cache_clear()


# --- too little memory ------------------------------------------------------------------------------

def little_memory(monkeypatch, nbytes: int) -> None:
    """The machine has ``nbytes`` of memory available (what /proc/meminfo would say)."""
    import harness.core.units as units
    import trace_gen.decode as decode_mod

    monkeypatch.setattr(units, "available_memory", lambda: nbytes)
    monkeypatch.setattr(decode_mod, "available_memory", lambda: nbytes)


def test_work_that_would_not_fit_in_memory_is_refused_up_front(tmp_path, log, monkeypatch):
    """With 600 MiB available: a sweep's decode whose caches need more, a run whose LLC state
    (136 MiB) and stream buffers (200 MiB) fit alone but not together (over half the memory), and
    simulate of the same: each refused in one line before anything runs or is written; a batch
    whose buffers alone are too large, likewise."""
    little_memory(monkeypatch, 600 << 20)
    big_decode = tiny_spec('"deepseek-v3.2"', '"64KiB"', '"token-lru"').replace("prompt_tokens = 64",
                                                                              "prompt_tokens = 8000\nrequests = 64")
    big_run = tiny_spec('"deepseek-v3.2"', '"512MiB"', '"lru"').replace("reserve_ways = [0, 2, 4]",
                                                                        "reserve_ways = 0")
    for text, message in [(big_decode, "for the KV cache, indexer keys and prefill mask"),
                          (big_run, "the run of tiny-llama (k = 8, 67 tokens, batch 1, an LLC of 512MiB")]:
        (tmp_path / "spec.toml").write_text(text)
        for extra in (["--dry-run"], ["--jobs", "1"]):
            one_error(run("sweep", tmp_path / "spec.toml", "--out", tmp_path / "s", *extra), message)
        assert not (tmp_path / "s").exists()
    one_error(run("sweep", tmp_path / "spec.toml", "--out", tmp_path / "s", "--dry-run"), "would need 0.3 GiB of memory; 0.6 GiB are available")
    for args, message in [(["--llc-size", "512MiB", "--ways", "8"], "simulating"),
                          (["--llc-size", "64KiB", "--ways", "8", "--batch", "32767", "--page-tokens", "1"],
                           "one decode step of one layer of")]:
        one_error(run("simulate", "--index-log", log, *args, "--out", tmp_path / "r.json"), message)
    assert not (tmp_path / "r.json").exists()
    little_memory(monkeypatch, 8 << 30)
    assert run("simulate", "--index-log", log, "--llc-size", "512MiB", "--ways", "8").exit_code == 0


def test_a_sweep_runs_only_as_many_tasks_at_once_as_fit(monkeypatch):
    from harness.study.spec import run_memory_bytes
    from harness.study.sweep import jobs_that_fit

    spec = loads_spec(tiny_spec('"deepseek-v3.2"', '"512MiB"', '"lru"').replace("reserve_ways = [0, 2, 4]",
                                                                              "reserve_ways = [0, 2, 4, 6]"))
    need = max(run_memory_bytes(r) for r in spec.runs)
    for available, fit in [(2 * need + 1, 1), (4 * need + 1, 2), (100 * need, 4)]:
        little_memory(monkeypatch, available)
        assert jobs_that_fit(spec.runs, spec.decodes.values(), 4) == fit, available


# --- collect beside collect, and during a sweep ------------------------------------------------------

def test_two_collects_at_once_each_write_a_whole_table(tmp_path, sweep_copy):
    cmd = [sys.executable, "-m", "harness.cli", "collect", str(sweep_copy), "--overwrite"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    df = pq.read_table(sweep_copy / "results.parquet").to_pandas()
    assert len(df) == 3 and (df._status == "ok").all() and hidden(sweep_copy) == []


@pytest.mark.slow
def test_collect_during_a_sweep_sees_only_finished_runs(tmp_path):
    (tmp_path / "spec.toml").write_text(LONG_SPEC)
    spec = loads_spec(LONG_SPEC)
    folder = tmp_path / "s"
    cmd = Command(tmp_path, "sweep", tmp_path / "spec.toml", "--out", folder, "--jobs", "2")
    cmd.wait_for("a finished run", lambda: finished_runs(folder))
    res = run("collect", folder, "--out", tmp_path / "during.parquet")
    _, err = cmd.proc.communicate(timeout=900)
    assert cmd.proc.returncode == 0, err[-2000:]
    assert res.exit_code == 0 and "corrupt run" not in res.output, res.output
    during = pq.read_table(tmp_path / "during.parquet").to_pandas()
    assert 1 <= len(during) <= len(spec.runs) and (during._status == "ok").all()
    df, corrupt = collect(folder)
    assert len(df) == len(spec.runs) and not corrupt and set(during._run_id) <= set(df._run_id)
