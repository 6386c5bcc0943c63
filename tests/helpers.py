"""Small builders shared by the tests."""

import numpy as np

from harness.cache.llc import LLCConfig, LLCState
from harness.core.accesstrace import LineAccesses
from harness.core.classes import CLASS_CODE


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
