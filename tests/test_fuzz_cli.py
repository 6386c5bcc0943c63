"""Property-based fuzzing of every command with malformed inputs (hypothesis).

Each example builds one malformed input (an access trace, an index log, its metadata, a sweep
spec or an option value) and runs the commands that read it. Every option of every command has
its malformed values here (``BAD_OPTIONS``), each fed to that command on an otherwise valid
invocation; ``test_every_option_of_every_command_is_fuzzed`` fails when a command gains an option
(or an argument) that has none. Whatever the input, a command
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


# --- every option of every command ---------------------------------------------------------------------
#
# A command's base invocation is valid (LOG: a good index log; SPEC: a good sweep spec; SWEEP: a
# finished sweep; OUT/...: new paths in the output folder; FILE: an existing file); each unit
# below, appended to it, makes it invalid, so the command must fail cleanly before any work. A
# flag is fuzzed with a value it does not take (--overwrite=1). An option that only one mode of a
# command reads comes with that mode (--gem5-out with --backend gem5): given alone it is refused.
# Positional arguments are named <name>.

MISSING = "OUT/missing"
NOT_A_FOLDER = "FILE/x"
BASES = {
    "simulate": ["simulate", "--index-log", "LOG", "--llc-size", "64KiB", "--ways", "8", "--out", "OUT/r.json"],
    "tier": ["tier", "--index-log", "LOG", "--out", "OUT/t.json"],
    "stream": ["stream", "--index-log", "LOG", "--format", "parquet", "--out", "OUT/s.parquet"],
    "decode": ["decode", "--backbone", "tiny-llama", "--indexer", "oracle", "--topk", "8", "--prompt-tokens", "48",
               "--steps", "2", "--no-progress", "--out", "OUT/log"],
    "calibrate": ["calibrate", "--backbone", "tiny-llama", "--indexer-option", "iterations=1"],
    "analyze": ["analyze", "LOG", "--out", "OUT/a"],
    "policies": ["policies", "LOG", "--out", "OUT/p"],
    "sweep": ["sweep", "SPEC", "--out", "OUT/s"],
    "collect": ["collect", "SWEEP", "--out", "OUT/r.parquet"],
    "report": ["report", "SWEEP", "--out", "OUT/report"],
    "demo": ["demo", "--out", "OUT/demo"],
}


def flag(name):
    return [[f"{name}=1"], [f"{name}=no"]]


def values(name, *bad):
    return [[name, v] for v in bad]


# bad units by option, the same for every command that has the option (a command's own below)
BAD_OPTIONS = {
    "--access-trace": values("--access-trace", MISSING),
    "--index-log": values("--index-log", MISSING, "FILE"),
    "--geometry": values("--geometry", "native2", "", "deepseek"),
    "--layout": values("--layout", "pagedd"),
    "--page-tokens": values("--page-tokens", "0", "-5", "x", "99999999999"),
    "--page-order": values("--page-order", "random"),
    "--layout-seed": values("--layout-seed", "-1", "1.5"),
    "--weights": flag("--weights") + flag("--no-weights"),
    "--batch": values("--batch", "0", "32768", "x"),
    "--platform": values("--platform", "h100", ""),
    "--llc-size": values("--llc-size", "nan", "-4KiB", "1.5B", "1PiB", "big"),
    "--ways": values("--ways", "0", "100000", "x"),
    "--reserve-ways": values("--reserve-ways", "-1", "9"),
    "--policy": values("--policy", "min", "tokn-lru", "lcs:lru"),
    "--whole-token-eviction": flag("--whole-token-eviction") + flag("--no-whole-token-eviction"),
    "--set-aside": values("--set-aside", "-1MiB", "huge", "1PiB"),
    "--what-if": flag("--what-if") + flag("--no-what-if"),
    "--sample-sets": values("--sample-sets", "0", "3", "x"),
    "--reserve": values("--reserve", "kv", "foo=2", "index=x", "index=99", "weights=2:streak"),
    "--hint": values("--hint", "kv", "foo=bip", "index=bogus", "kv=persisting:2"),
    "--bounds": flag("--bounds") + flag("--no-bounds"),
    "--timing-model": values("--timing-model", "closed"),
    "--llc-hit-cycles": values("--llc-hit-cycles", "0", "-1", "x"),
    "--dram-latency-cycles": values("--dram-latency-cycles", "0", "-200"),
    "--max-outstanding": values("--max-outstanding", "0"),
    "--dram-bytes-per-cycle": values("--dram-bytes-per-cycle", "nan", "inf", "0"),
    "--issue-per-cycle": values("--issue-per-cycle", "0", "-1", "nan"),
    "--warmup-steps": values("--warmup-steps", "-1", "x"),
    "--overlap": values("--overlap", "2", "-0.5", "nan"),
    "--backend": values("--backend", "gem6", "tier"),
    "--gem5": [["--backend", "gem5", "--gem5", MISSING], ["--gem5", "FILE"]],
    "--gem5-out": [["--backend", "gem5", "--gem5-out", NOT_A_FOLDER], ["--gem5-out", "OUT/g"]],
    "--gem5-timeout": values("--gem5-timeout", "nan", "-1", "0") + [["--gem5-timeout", "10"]],
    "--gem5-model": values("--gem5-model", "fast") + [["--gem5-model", "replay"]],
    "--steps": values("--steps", "0", "-1", "x"),
    "--tick-spacing-ps": values("--tick-spacing-ps", "0", "1000"),
    "--dram": values("--dram", "DDR9", "DDR4_2400_8x8"),
    "--clock": values("--clock", "fast", "2GHz"),
    "--l1-size": values("--l1-size", "lots", "32KiB"),
    "--format": values("--format", "xml"),
    "--out": values("--out", NOT_A_FOLDER, "FILE/x/y"),
    "--overwrite": flag("--overwrite"),
    "--hot-tokens-per-k": values("--hot-tokens-per-k", "0", "-1", "nan"),
    "--hot-policy": values("--hot-policy", "lcs:lur", "mru"),
    "--pooled": flag("--pooled"),
    "--hbm": values("--hbm", "-1GiB", "lots", "0"),
    "--backbone": values("--backbone", "nope", "smolm2-135m"),
    "--indexer-option": values("--indexer-option", "x", "d_I=-1", "bogus=1"),
    "--threads": values("--threads", "0", "2000", "x"),
    "--indexer": values("--indexer", "dsa2"),
    "--topk": values("--topk", "0", "-1"),
    "--prompt-tokens": values("--prompt-tokens", "0", "9000"),
    "--requests": values("--requests", "0", "40000"),
    "--text": values("--text", MISSING),
    "--sink-tokens": values("--sink-tokens", "-1"),
    "--local-window": values("--local-window", "-1"),
    "--observe-only": flag("--observe-only"),
    "--index-share": values("--index-share", "0", "x"),
    "--index-layers": values("--index-layers", "x", "0,99", "3,1"),
    "--index-reuse": values("--index-reuse", "0"),
    "--index-bytes": values("--index-bytes", "-1", "x", str(1 << 31)),
    "--recall": flag("--recall") + flag("--no-recall"),
    "--seed": values("--seed", "-1", "x"),
    "--prefill-chunk": values("--prefill-chunk", "0"),
    "--refit": flag("--refit"),
    "--ship": flag("--ship"),
    "--progress": flag("--progress") + flag("--no-progress"),
    "--jobs": values("--jobs", "0", "x"),
    "--scheduler": values("--scheduler", "not-an-address"),
    "--rerun-failed": flag("--rerun-failed"),
    "--force": flag("--force"),
    "--wait": flag("--wait"),
    "--dry-run": flag("--dry-run"),
    "--policies": flag("--policies") + flag("--no-policies"),
    "--param": values("--param", "x", "pin-recent.window=-2", "nope.window=2", "pin-recent.bogus=1"),
}
# a command's own units where the shared ones do not apply
BAD_OPTIONS_OF = {
    "stream": {"--format": values("--format", "xml", "json"), "--tick-spacing-ps": values("--tick-spacing-ps", "0")},
    "decode": {"--steps": values("--steps", "-1", "x"),
               "--indexer-option": values("--indexer-option", "d_I=64")},  # the oracle indexer takes none
    "analyze": {"<logs>": [["ARG", MISSING]], "--out": values("--out", NOT_A_FOLDER)},
    "policies": {"<logs>": [["ARG", MISSING]], "--out": values("--out", NOT_A_FOLDER),
                 "--policy": values("--policy", "zzz", "tokn-lru")},
    "sweep": {"<spec>": [["ARG", MISSING], ["ARG", "FILE"]], "--gem5": values("--gem5", MISSING)},
    "collect": {"<sweep_dir>": [["ARG", MISSING], ["ARG", "LOG"]]},
    "report": {"<sweep_dir>": [["ARG", MISSING], ["ARG", "LOG"]]},
    "demo": {"--out": values("--out", NOT_A_FOLDER)},
    "tier": {"--index-log": values("--index-log", MISSING)},
}


def command_options(command) -> list[str]:
    """A command's options (the first name of each; a positional argument as <name>)."""
    import click

    return [p.opts[0] if isinstance(p, click.Option) else f"<{p.name}>" for p in command.params
            if p.name != "help"]


def bad_units(name: str) -> list[tuple[str, list[str]]]:
    """Every (option, bad unit) of a command."""
    return [(option, unit) for option in command_options(cli.commands[name])
            for unit in BAD_OPTIONS_OF.get(name, {}).get(option, BAD_OPTIONS.get(option, []))]


ALL_UNITS = [(name, option, unit) for name in BASES for option, unit in bad_units(name)]


def invocation(name: str, units: list[list[str]], places: dict) -> list[str]:
    """The base invocation of ``name`` with ``units`` added (a unit ["ARG", x] replaces the
    positional argument), its placeholders filled in from ``places``."""
    args = list(BASES[name])
    for unit in units:
        if unit[0] == "ARG":
            args[1] = unit[1]
        else:
            args += unit

    def fill(a):
        for key in ("OUT", "FILE", "LOG", "SPEC", "SWEEP"):
            if a == key or a.startswith(key + "/"):
                return str(places[key]) + a[len(key):]
        return a
    return [fill(a) for a in args]


def option_places(tmp: Path, sweep: Path) -> dict:
    """The paths of a fuzz example's base invocations (the output folder empty)."""
    from trace_gen.synthetic import write_synthetic_log

    (tmp / "out").mkdir()
    (tmp / "file").write_text("a file, not a folder")
    (tmp / "spec.toml").write_text(SPEC_TOML)
    return {"OUT": tmp / "out", "FILE": tmp / "file", "SPEC": tmp / "spec.toml", "SWEEP": sweep,
            "LOG": write_synthetic_log(tmp / "log", steps=3, layers=2, topk=8, prompt=40, requests=2)}


SPEC_TOML = """[decode]\nbackbone = "tiny-llama"\nindexer = "oracle"\ntopk = 8\nprompt_tokens = 48\nsteps = 2\n
[llc]\nsize = "64KiB"\nways = 8\nreserve_ways = [0, 2]\n"""


def fuzz_options(name: str, units: list[list[str]], sweep: Path, subprocess_mode: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        places = option_places(Path(tmp), sweep)
        check_fails_cleanly(invocation(name, units, places), places["OUT"], subprocess_mode)


def test_every_option_of_every_command_is_fuzzed():
    """Fails when a command gains an option (or argument) without malformed values here, or a
    command without a base invocation."""
    assert sorted(BASES) == sorted(cli.commands), "a command without a base invocation in BASES"
    missing = [f"{name} {option}" for name in BASES for option in command_options(cli.commands[name])
               if not BAD_OPTIONS_OF.get(name, {}).get(option, BAD_OPTIONS.get(option))]
    assert not missing, f"options with no malformed values in BAD_OPTIONS: {', '.join(missing)}"


@pytest.mark.parametrize("name, option, unit", ALL_UNITS, ids=[f"{n} {' '.join(u)}" for n, _, u in ALL_UNITS])
def test_each_malformed_option_fails_cleanly(name, option, unit, done_sweep):
    fuzz_options(name, [unit], done_sweep, subprocess_mode=False)


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


@FAST
@given(st.sampled_from(sorted(BASES)).flatmap(
    lambda name: st.tuples(st.just(name), st.lists(st.sampled_from([u for _, u in bad_units(name)]), min_size=1,
                                                   max_size=3))))
def test_commands_fail_cleanly_on_malformed_options(done_sweep, case):
    name, units = case
    fuzz_options(name, units, done_sweep, subprocess_mode=False)


@pytest.mark.slow
@SLOW
@given(st.sampled_from(sorted(BASES)).flatmap(
    lambda name: st.tuples(st.just(name), st.lists(st.sampled_from([u for _, u in bad_units(name)]), min_size=1,
                                                   max_size=3))))
def test_commands_fail_cleanly_on_malformed_options_in_child_processes(done_sweep, case):
    name, units = case
    fuzz_options(name, units, done_sweep, subprocess_mode=True)


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
