"""Property-based fuzzing of every command with malformed inputs (hypothesis).

Each example builds one malformed input (an access trace, an index log, its metadata, a sweep
spec or an option value) and runs the commands that read it. Whatever the input, a command
must fail cleanly: exit status not 0, no traceback, no signal death, exactly one ``error:``
line, and nothing new in its output location. Plain ``pytest`` runs a short fuzz in-process
(a signal would end the test run itself); ``pytest -m slow`` runs a long one in child
processes, where a signal death shows as a negative exit status.
"""

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import cli

# --- malformed index logs ----------------------------------------------------------------------

META = {"schema_version": 1, "requests": 2, "steps": 2, "layers": 2,
        "backbone": {"name": "fuzz", "config": {"name": "fuzz", "num_hidden_layers": 2, "num_key_value_heads": 1,
                                                "head_dim": 16, "dtype_bytes": 2}},
        "indexer": {"name": "fuzz", "topk": 3, "key_bytes": 16}}


def good_rows():
    rows = []
    for step in range(2):
        for layer in range(2):
            for request in range(2):
                ctx = 8 + step + request
                rows.append([request, step, layer, ctx, sorted({(layer + 3 * i + step) % ctx for i in range(3)})])
    return rows


BAD_VALUES = [-1, 0, 2, 3, 1 << 31, (1 << 31) - 1, -(1 << 31), 1 << 40, None]
ROW_MUTATIONS = ("position", "append position", "repeat position", "reverse positions", "drop row",
                 "repeat row", "swap rows", "ctx_len", "step", "layer", "request", "null positions", "empty")
META_MUTATIONS = ("delete", "value", "nested delete", "nested value", "text", "version")
META_VALUES = ["2", 2.5, math.nan, math.inf, True, None, [], {}, -3, 0, 1 << 40, "fuzz"]
NESTED_VALUES = [v for v in META_VALUES if v != 0 and v != {}]  # key_bytes 0 and config {} are valid
FILE_MUTATIONS = ("truncate", "garbage", "drop column", "column type", "empty file", "no metadata file")


@st.composite
def bad_log(draw):
    """(rows, metadata, how to spoil the files): at least one thing is wrong."""
    rows, meta = good_rows(), json.loads(json.dumps(META))
    kind = draw(st.sampled_from(("rows", "meta", "file")))
    i = draw(st.integers(0, len(rows) - 1))
    value = draw(st.sampled_from(BAD_VALUES))
    spoil = None
    if kind == "rows":
        what = draw(st.sampled_from(ROW_MUTATIONS))
        r = rows[i]
        if what == "position":
            r[4] = sorted(r[4][:-1] + [value if value is not None else r[3]])
            if value is not None and 0 <= value < r[3]:
                r[4] = r[4] + [r[3]]  # still out of range
        elif what == "append position":
            r[4] = r[4] + [r[4][-1] + 1]  # one more than topk
        elif what == "repeat position":
            r[4] = r[4][:1] + r[4][:-1]
        elif what == "reverse positions":
            r[4] = r[4][::-1]
        elif what == "drop row":
            rows.pop(i)
        elif what == "repeat row":
            rows.insert(i, list(r))
        elif what == "swap rows":
            j = (i + 1) % len(rows)
            rows[i], rows[j] = rows[j], rows[i]
        elif what in ("ctx_len", "step", "layer", "request"):
            col = ("request", "step", "layer", "ctx_len").index(what)
            r[col] = value if value is not None and value != r[col] else -5
        elif what == "null positions":
            r[4] = None
        else:
            rows = []
    elif kind == "meta":
        what = draw(st.sampled_from(META_MUTATIONS))
        key = draw(st.sampled_from(("requests", "steps", "layers", "backbone", "indexer")))
        sub = draw(st.sampled_from(("name", "topk", "key_bytes", "config")))
        bad = draw(st.sampled_from(META_VALUES if what == "value" else NESTED_VALUES))
        if what == "delete":
            del meta[key]
        elif what == "value":
            meta[key] = bad if bad != meta[key] else "x"
        elif what == "nested delete":
            meta["indexer" if sub in ("topk", "key_bytes") else "backbone"].pop(sub, None)
            meta["indexer"].pop("topk", None)
        elif what == "nested value":
            meta["indexer" if sub != "config" else "backbone"][sub if sub != "name" else "topk"] = \
                bad if bad not in (2, 3) else "3"
        elif what == "text":
            spoil = "metadata text"
        else:
            meta["schema_version"] = draw(st.sampled_from([0, 2, "1", None, 1.0, True]))
    else:
        spoil = draw(st.sampled_from(FILE_MUTATIONS))
    return rows, meta, spoil


def write_log(folder: Path, rows, meta, spoil) -> Path:
    folder.mkdir()
    cols = list(zip(*rows)) if rows else [[]] * 5
    ints = {"request": pa.int32(), "step": pa.int32(), "layer": pa.int16(), "ctx_len": pa.int32()}
    arrays = {}
    for name, col in zip(ints, cols[:4]):
        big = any(v is not None and not -(1 << 15) <= v < (1 << 15) for v in col)
        arrays[name] = pa.array(col, pa.int64() if big else ints[name])
    positions = pa.array([None if p is None else list(p) for p in cols[4]], pa.list_(pa.int64()))
    table = pa.table({**arrays, "positions": positions})
    if spoil == "drop column":
        table = table.drop_columns(["ctx_len"])
    elif spoil == "column type":
        table = table.set_column(4, "positions", pa.array([str(p) for p in cols[4]]))
    text = json.dumps(meta)
    pq.write_table(table.replace_schema_metadata({b"dsa_llc.index_log": text.encode()}), folder / "index_log.parquet")
    data = (folder / "index_log.parquet").read_bytes()
    if spoil == "truncate":
        (folder / "index_log.parquet").write_bytes(data[: len(data) * 2 // 3])
    elif spoil == "garbage":
        (folder / "index_log.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 3)
    elif spoil == "empty file":
        (folder / "index_log.parquet").write_bytes(b"")
    if spoil == "metadata text":
        (folder / "metadata.json").write_text(text[: len(text) // 2])
    elif spoil != "no metadata file":
        (folder / "metadata.json").write_text(text)
    if spoil == "no metadata file":  # and no usable copy inside the Parquet file either
        pq.write_table(table.replace_schema_metadata({b"dsa_llc.index_log": b"[1, 2"}), folder / "index_log.parquet")
    return folder


def log_commands(log: Path, out: Path) -> list[list]:
    return [["simulate", "--index-log", log, "--llc-size", "64KiB", "--reserve-ways", "2", "--out", out / "r.json"],
            ["simulate", "--index-log", log, "--geometry", "deepseek-v3.2", "--llc-size", "64KiB"],
            ["stream", "--index-log", log, "--format", "parquet", "--out", out / "t.parquet"],
            ["stream", "--index-log", log, "--format", "gem5", "--out", out / "t.pb.gz"],
            ["analyze", log, "--out", out / "a"],
            ["policies", log, "--out", out / "p"]]


# --- malformed access traces ---------------------------------------------------------------------

@st.composite
def bad_trace(draw):
    fmt = draw(st.sampled_from(("npy", "csv", "parquet")))
    if fmt == "npy":
        arr = draw(st.sampled_from([np.zeros(0, np.uint64), np.array([1.5, 2.0]), np.array([[1, 2], [3, 4]]),
                                    np.array([5, -3]), np.array([1 << 63, 4], dtype=np.uint64),
                                    np.array([True, False]), np.array(["a", "b"])]))
        return fmt, arr
    n = draw(st.integers(1, 4))
    frame = {"addr": list(range(0, 64 * n, 64))}
    column = draw(st.sampled_from(("addr", "size", "op", "cls", "token", "step", "none")))
    bad = draw(st.sampled_from([-1, 0, 1 << 62, (1 << 63) - 1, 100 << 30, "x", 1.5, None]))
    if column == "none":
        frame = {"address": frame["addr"]} if draw(st.booleans()) else {"addr": []}
    else:
        defaults = {"addr": 0, "size": 64, "op": "R", "cls": "kv", "token": 1, "step": 0}
        values = list(frame.get(column, [defaults[column]] * n))
        if column == "addr" and isinstance(bad, int) and bad >= 0:
            bad = -1
        if column == "size" and bad == 1 << 62:
            values[0] = 64
            frame["addr"][-1] = (1 << 63) - 10  # the request ends beyond 2**63
            bad = 64
        elif column in ("op", "cls"):
            bad = draw(st.sampled_from(["X", "kvv", "", None, 3]))
        elif column in ("token", "step") and isinstance(bad, int) and bad >= -1:
            bad = -2
        values[-1] = bad
        frame[column] = values
    return fmt, pd.DataFrame(frame)


def write_trace(folder: Path, fmt, content) -> Path:
    path = folder / f"trace.{fmt}"
    if fmt == "npy":
        np.save(path, content)
    elif fmt == "csv":
        content.to_csv(path, index=False)
    else:
        try:
            content.to_parquet(path)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            content.astype(str).to_parquet(path)
    return path


# --- malformed specs and options -------------------------------------------------------------------

SPEC = {"decode": {"backbone": "tiny-llama", "indexer": "oracle", "topk": 8, "prompt_tokens": 64, "steps": 2},
        "stream": {"geometry": "deepseek-v3.2", "page_tokens": 16},
        "llc": {"size": "64KiB", "ways": 8, "reserve_ways": [0, 2], "policy": "token-lru"},
        "timing": {"dram_bytes_per_cycle": 64.0}, "gem5": {"timeout": 10.0}}
# invalid for every key of SPEC (0 and 1.5 are valid for some, large numbers for the float ones)
SPEC_VALUES = ["false", "no", math.nan, math.inf, -math.inf, -1, "", "smolm2-135m", "gpt-9", True, [],
               [1, "x"], {"a": 1}, "64KiBB"]


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    return str(v)


@st.composite
def bad_spec(draw):
    spec = json.loads(json.dumps(SPEC))
    how = draw(st.lists(st.sampled_from(("value", "unknown key", "unknown section", "not a table",
                                         "exclude", "list", "no backbone")), min_size=1, max_size=3))
    for h in how:
        section = draw(st.sampled_from(sorted(SPEC)))
        key = draw(st.sampled_from(sorted(spec.get(section, {"x": 0}) if isinstance(spec.get(section), dict)
                                          else ["x"])))
        if h == "value" and isinstance(spec.get(section), dict):
            spec[section][key] = draw(st.sampled_from(SPEC_VALUES))
        elif h == "unknown key" and isinstance(spec.get(section), dict):
            spec[section][key + "z"] = 1
        elif h == "unknown section":
            spec["bogus"] = {"x": 1}
        elif h == "not a table":
            spec[section] = 5
        elif h == "exclude":
            spec["exclude"] = [{key + "_": 1}]
        elif h == "list" and isinstance(spec.get(section), dict):
            spec[section][key] = [spec[section][key], draw(st.sampled_from(SPEC_VALUES))]
        elif h == "no backbone" and isinstance(spec.get("decode"), dict):
            spec["decode"].pop("backbone", None)
    lines = []
    for section, body in spec.items():
        if section == "exclude":
            for ex in body:
                lines += ["[[exclude]]"] + [f"{k} = {toml_value(v)}" for k, v in ex.items()]
        elif isinstance(body, dict):
            lines += [f"[{section}]"] + [f"{k} = {toml_value(v)}" for k, v in body.items()]
        else:
            lines.insert(0, f"{section} = {toml_value(body)}")
    return "\n".join(lines) + "\n"


OPTION_CASES = [
    ["--ways", "0"], ["--ways", "100000"], ["--reserve-ways", "-1"], ["--llc-size", "nan"], ["--llc-size", "-4KiB"],
    ["--llc-size", "1.5B"], ["--llc-size", "1PiB"], ["--llc-size", "1024TiB"], ["--policy", "min"],
    ["--llc-hit-cycles", "0"], ["--dram-latency-cycles", "-200"], ["--max-outstanding", "0"],
    ["--dram-bytes-per-cycle", "nan"], ["--dram-bytes-per-cycle", "inf"], ["--dram-bytes-per-cycle", "0"],
    ["--page-tokens", "0"], ["--page-tokens", "99999999999"], ["--layout-seed", "-1"], ["--geometry", "native2"],
    ["--gem5-timeout", "nan"], ["--gem5-timeout", "-1"], ["--tick-spacing-ps", "0"], ["--clock", "fast"],
    ["--l1-size", "lots"],
]


# --- the property -----------------------------------------------------------------------------------

def check_fails_cleanly(args: list, out: Path, subprocess_mode: bool) -> None:
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    args = [str(a) for a in args]
    if subprocess_mode:
        res = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                             timeout=600)
        code, output = res.returncode, res.stdout + res.stderr
        assert code > 0, (args, code, output)  # a negative status is a signal death
    else:
        res = CliRunner().invoke(cli, args)
        code, output = res.exit_code, res.output
        assert code not in (0, None), (args, output)
        assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception))
    assert "Traceback" not in output and "internal error" not in output, (args, output)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, (args, output)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before, args


def fuzz_logs(case, subprocess_mode):
    rows, meta, spoil = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        log = write_log(tmp / "log", rows, meta, spoil)
        out = tmp / "out"
        out.mkdir()
        for args in log_commands(log, out):
            check_fails_cleanly(args, out, subprocess_mode)


def fuzz_traces(case, options, subprocess_mode):
    fmt, content = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = write_trace(tmp, fmt, content)
        out = tmp / "out"
        out.mkdir()
        check_fails_cleanly(["simulate", "--access-trace", path, "--llc-size", "64KiB", "--out", out / "r.json"],
                            out, subprocess_mode)
        good = tmp / "good.npy"
        np.save(good, np.arange(0, 640, 64, dtype=np.uint64))
        check_fails_cleanly(["simulate", "--access-trace", good, *options, "--out", out / "r.json"],
                            out, subprocess_mode)


def fuzz_specs(text, subprocess_mode):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "spec.toml").write_text(text)
        out = tmp / "out"
        out.mkdir()
        for extra in (["--dry-run"], ["--jobs", "1"]):
            check_fails_cleanly(["sweep", tmp / "spec.toml", "--out", out / "sweep", *extra], out, subprocess_mode)


FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(bad_log())
def test_every_log_reader_fails_cleanly(case):
    fuzz_logs(case, subprocess_mode=False)


@FAST
@given(bad_trace(), st.sampled_from(OPTION_CASES))
def test_simulate_fails_cleanly_on_traces_and_options(case, options):
    fuzz_traces(case, options, subprocess_mode=False)


@FAST
@given(bad_spec())
def test_sweep_fails_cleanly_on_specs(text):
    fuzz_specs(text, subprocess_mode=False)


@pytest.mark.slow
@SLOW
@given(bad_log())
def test_every_log_reader_fails_cleanly_in_child_processes(case):
    fuzz_logs(case, subprocess_mode=True)


@pytest.mark.slow
@SLOW
@given(bad_trace(), st.sampled_from(OPTION_CASES))
def test_simulate_fails_cleanly_in_child_processes(case, options):
    fuzz_traces(case, options, subprocess_mode=True)


@pytest.mark.slow
@SLOW
@given(bad_spec())
def test_sweep_fails_cleanly_in_child_processes(text):
    fuzz_specs(text, subprocess_mode=True)
