"""Small builders shared by the tests."""

import json

import numpy as np
from hypothesis import strategies as st

from harness.cache.llc import LLCConfig, LLCState
from harness.cache.policies import TokenReads
from harness.core.accesstrace import LineAccesses
from harness.core.traffic import CLASS_CODE


def line_accesses(seq):
    """LineAccesses from [(line, class name, token), ...] or [(line, cls, token, write)]."""
    line = np.array([s[0] for s in seq], dtype=np.int64)
    cls = np.array([CLASS_CODE[s[1]] for s in seq], dtype=np.uint8)
    tok = np.array([s[2] for s in seq], dtype=np.int64)
    wr = np.array([s[3] if len(s) > 3 else 0 for s in seq], dtype=np.uint8)
    return LineAccesses(line, wr, cls, tok, np.zeros(len(seq), dtype=np.int64))


def hit_string(cfg: LLCConfig, seq) -> tuple[str, LLCState]:
    """'H'/'M' per access of ``seq`` through a fresh cache, and the final state."""
    state = LLCState(cfg)
    acc = line_accesses(seq)
    out, _, _ = state.access(acc.line, acc.cls, acc.token, acc.write)
    state.finish()
    return "".join("H" if o & 1 else "M" for o in out), state


def write_log(folder, rows, requests, steps, layers, topk, **meta):
    """An index log from hand-written rows [(request, step, layer, ctx_len, positions), ...]."""
    from trace_gen.indexlog import IndexLogWriter

    m = {"backbone": {"name": "hand", "config": {"name": "hand", "num_hidden_layers": layers,
                                                 "num_key_value_heads": 1, "head_dim": 16,
                                                 "dtype_bytes": 2}},
         "indexer": {"name": "hand", "topk": topk, "key_bytes": 16}, "text": {"name": "hand"},
         "seed": 0, "requests": requests, "steps": steps, "layers": layers, **meta}
    with IndexLogWriter(folder, m) as w:
        for r, s, layer, ctx, pos in rows:
            w.add(r, s, layer, ctx, np.array(pos))
        return w.close()


def reads(tokens, layers=None, steps=None, pos=None, ctx=None, topk=1, n_layers=None):
    """TokenReads of hand-written tokens (dense ids); layers/steps default to 0."""
    n = len(tokens)
    z = np.zeros(n, np.int32)
    arr = lambda v: z.copy() if v is None else np.asarray(v, np.int32)  # noqa: E731
    lay = arr(layers)
    return TokenReads(np.asarray(tokens, np.int32), lay, z.copy(), arr(pos if pos is not None else tokens),
                      arr(steps), arr(ctx) if ctx is not None else z + 1000, n_layers or int(lay.max()) + 1,
                      1, topk, 1000)


@st.composite
def streams(draw):
    """Random reads: 3 layers, steps of 4 reads per layer, tokens of a layer from a pool."""
    steps = draw(st.integers(1, 12))
    tokens, layers, step_of = [], [], []
    for s in range(steps):
        for layer in range(3):
            picks = draw(st.lists(st.integers(0, 7), min_size=1, max_size=4, unique=True))
            for p in sorted(picks):
                tokens.append(layer * 8 + p)
                layers.append(layer)
                step_of.append(s)
    return reads(tokens, layers, step_of, pos=[t % 8 for t in tokens], ctx=[20 + s for s in step_of], topk=4,
                 n_layers=3)


def tiny_spec(geometry: str, size: str, policy: str, header: str = "", extra: str = "") -> str:
    """A sweep spec over tiny-llama (oracle indexer, k = 8, 64-token prompt, 3 steps, pages of 16
    tokens) and 8-way LLCs with 0, 2 and 4 reserved ways; ``geometry``, ``size`` and ``policy``
    are TOML values as text, ``header`` and ``extra`` whole tables before and after."""
    return f"""{header}
[decode]
backbone = "tiny-llama"
indexer = "oracle"
topk = 8
prompt_tokens = 64
steps = 3

[stream]
geometry = {geometry}
page_tokens = 16

[llc]
size = {size}
ways = 8
reserve_ways = [0, 2, 4]
policy = {policy}
{extra}"""


SPEC = tiny_spec('"deepseek-v3.2"', '"64KiB"', '"token-lru"')  # three runs (0, 2 and 4 reserved ways), one decode


def run(*args):
    """``dsa-harness ARGS`` through click's CliRunner (paths and numbers given as they are)."""
    from click.testing import CliRunner

    from harness.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error(res, message=""):
    """The command failed with exactly one `error:` line (holding ``message``), no traceback."""
    assert res.exit_code not in (0, None), res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = res.output.splitlines()
    assert sum(line.startswith("error:") for line in lines) == 1, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    assert message in res.output, res.output


# --- a raw index log writer: rows exactly as given, metadata as given ----------------------

GOOD_META = {"schema_version": 1, "requests": 1, "steps": 2, "layers": 2,
             "backbone": {"name": "hand", "config": {"name": "hand", "num_hidden_layers": 2,
                                                     "num_key_value_heads": 1, "head_dim": 16, "dtype_bytes": 2}},
             "indexer": {"name": "hand", "topk": 3, "key_bytes": 16}}
GOOD_ROWS = [(0, 0, 0, 10, [1, 4, 7]), (0, 0, 1, 10, [0, 2, 9]),
             (0, 1, 0, 11, [1, 4, 10]), (0, 1, 1, 11, [0, 3, 5])]


def write_raw_log(folder, rows=GOOD_ROWS, meta=GOOD_META, meta_text=None):
    """An index log written without the writer's checks: ``rows`` [(request, step, layer, ctx_len,
    positions), ...] and ``meta`` exactly as given (``meta_text`` replaces metadata.json's text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    cols = list(zip(*rows)) if rows else [[]] * 5
    table = pa.table({"request": pa.array(cols[0], pa.int32()), "step": pa.array(cols[1], pa.int32()),
                      "layer": pa.array(cols[2], pa.int16()), "ctx_len": pa.array(cols[3], pa.int32()),
                      "positions": pa.array([list(p) for p in cols[4]], pa.list_(pa.int32())),
                      "recall": pa.array([None] * len(rows), pa.float32()),
                      "recall_best": pa.array([None] * len(rows), pa.float32())})
    text = meta_text if meta_text is not None else json.dumps(meta)
    pq.write_table(table.replace_schema_metadata({b"dsa_llc.index_log": json.dumps(meta).encode()}),
                   folder / "index_log.parquet")
    (folder / "metadata.json").write_text(text)
    return folder
