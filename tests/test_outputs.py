"""Output locations: --out replaces only what the same command wrote, and only with --overwrite;
locations are checked before any work; unwritable folders and a full disk are one-line errors
that leave nothing behind; the index logs written get the usual permissions."""

import errno
import os
import stat

import pyarrow.parquet as pq
import pytest
from helpers import SPEC, one_error, run

from trace_gen.synthetic import write_synthetic_log


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_folders_holding_other_files_are_never_replaced(tmp_path, log, sweep_copy):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for command in (["analyze", log], ["policies", log], ["report", sweep_copy], ["decode", "--no-progress",
                    "--backbone", "tiny-llama", "--indexer", "oracle", "--steps", "2", "--prompt-tokens", "16"]):
        for extra in ([], ["--overwrite"]):
            one_error(run(*command, "--out", mine, *extra), "did not write")
            assert tree(mine) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"


def test_own_outputs_are_replaced_only_with_overwrite(tmp_path, log):
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


def test_files_are_replaced_only_with_overwrite(tmp_path, log, sweep_copy):
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


def test_index_log_folders_get_normal_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    folder = write_synthetic_log(tmp_path / "log", steps=1, layers=1, topk=2, prompt=4)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((folder / "index_log.parquet").stat().st_mode) == 0o666 & ~umask


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
