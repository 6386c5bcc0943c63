"""Index log checks: one validator serves every command that reads a log (simulate, stream,
analyze, policies, report), so a bad log is the same one-line error everywhere and nothing is
written; no file content ends a command with a signal."""

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import GOOD_META, GOOD_ROWS, one_error, run, write_raw_log


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


# --- one index log validator for every reader ---------------------------------------------------

@pytest.mark.parametrize("case", list(BAD_LOGS))
def test_every_reader_refuses_a_bad_log(tmp_path, case):
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


def test_the_report_refuses_a_bad_log_of_its_sweep(tmp_path, sweep_copy):
    (log,) = (sweep_copy / "logs").iterdir()
    t = pq.read_table(log / "index_log.parquet")
    positions = t.column("positions").to_pylist()
    positions[5] = [-3] + positions[5][1:]
    pq.write_table(t.set_column(t.schema.get_field_index("positions"), "positions",
                                pa.array(positions, pa.list_(pa.int32()))), log / "index_log.parquet")
    one_error(run("report", sweep_copy, "--out", tmp_path / "r"), "outside its context")
    assert not (tmp_path / "r").exists()


def test_a_good_raw_log_passes(tmp_path):
    good = write_raw_log(tmp_path / "good")
    assert run("simulate", "--index-log", good, "--llc-size", "64KiB").exit_code == 0
    assert run("policies", good, "--out", tmp_path / "p").exit_code == 0


# --- no signal death on any file content --------------------------------------------------------

def test_more_positions_than_topk_and_positions_beyond_ctx_are_errors_not_crashes(tmp_path):
    # these overran the numba kernels' buffers (rc 139); run in a child process to see a signal
    wide = write_raw_log(tmp_path / "wide", rows=[(0, 0, 0, 10, list(range(9)))] + GOOD_ROWS[1:])
    beyond = write_raw_log(tmp_path / "beyond", rows=GOOD_ROWS[:3] + [(0, 1, 1, 11, [0, 3, 4000])])
    for args in (["stream", "--index-log", wide, "--format", "parquet", "--out", tmp_path / "t.parquet"],
                 ["policies", beyond, "--out", tmp_path / "p"]):
        res = subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True)
        assert res.returncode == 1, (res.returncode, res.stderr)
        assert res.stderr.count("error:") == 1 and "Traceback" not in res.stderr


def test_stream_buffers_are_sized_from_the_data(tmp_path, log):
    from trace_gen.geometry import PRESETS
    from trace_gen.indexlog import IndexLog
    from trace_gen.stream import Layout, StreamSource

    src = StreamSource(IndexLog(log), PRESETS["deepseek-v3.2"], Layout())
    assert src.max_row == max(map(len, IndexLog(log).dataframe().positions))
