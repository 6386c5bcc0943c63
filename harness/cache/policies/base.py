"""What every reservation policy shares: the token-read stream it runs on and its interface
(the kernels' linked lists live in ``harness.cache.dlist``).

A policy decides which whole tokens a reservation of ``capacity`` tokens keeps. Each module
implements it for the fully associative token cache (the study's capacity sweeps); those in
``harness.cache.llc.RESERVED_POLICIES`` also run in the set-associative LLC's reserved ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.core.errors import UserError
from harness.core.units import require_memory


def dense_token_ids(block, layers: int, width: int) -> np.ndarray:
    """Dense token ids ((request * layers + layer) * width + position) of a block's selections,
    in decode order (no hashing needed: the log's structure numbers tokens directly)."""
    counts = np.diff(block.offsets)
    base = (block.request * layers + block.layer) * width
    return np.repeat(base, counts) + block.positions.astype(np.int64)


def dense_id_space(log) -> tuple[int, int]:
    """The width (largest ctx_len) and the size of the dense token id space of a validated
    index log with rows; a one-line UserError when the ids would not fit the int32 the token
    caches number them with."""
    shape = log.validate()
    if log.rows == 0:
        raise UserError(f"index log {log.folder} has no rows")
    id_space = log.requests * log.layers * shape.max_ctx
    if id_space >= 1 << 31:
        raise UserError(f"index log {log.folder}: {log.requests} requests x {log.layers} layers x "
                        f"ctx_len {shape.max_ctx:,} give {id_space:,} token ids, more than the 2**31 "
                        "the token caches can number")
    return shape.max_ctx, id_space


@dataclass
class TokenReads:
    """Token reads of a decode in order (all layers interleaved as the model runs them).

    ``tid`` is a dense token id ``(request * layers + layer) * width + position``; ``layer``,
    ``request``, ``pos``, ``step`` and ``ctx`` (the row's ctx_len) describe each read."""

    tid: np.ndarray      # int32
    layer: np.ndarray    # int32
    request: np.ndarray  # int32
    pos: np.ndarray      # int32
    step: np.ndarray     # int32
    ctx: np.ndarray      # int32
    layers: int
    requests: int
    topk: int
    width: int

    def __len__(self) -> int:
        return len(self.tid)

    @property
    def id_space(self) -> int:
        return self.requests * self.layers * self.width

    @property
    def footprint(self) -> int:
        """One decode step's selections: k x layers x requests tokens."""
        return self.topk * self.layers * self.requests

    @classmethod
    def from_log(cls, log) -> TokenReads:
        """The token reads of a validated index log (``trace_gen.indexlog.IndexLog``)."""
        width, id_space = dense_id_space(log)
        selections = log.shape.selections
        require_memory(selections * 48 + id_space * 40, f"the {selections:,} token reads of {log.folder}")
        parts = {k: [] for k in ("tid", "layer", "request", "pos", "step", "ctx")}
        for b in log.blocks():
            n = np.diff(b.offsets)
            parts["layer"].append(np.repeat(b.layer, n))
            parts["request"].append(np.repeat(b.request, n))
            parts["step"].append(np.repeat(b.step, n))
            parts["ctx"].append(np.repeat(b.ctx_len, n))
            parts["pos"].append(b.positions)
            parts["tid"].append(dense_token_ids(b, log.layers, width))
        cat = {k: np.concatenate(v).astype(np.int32) for k, v in parts.items()}
        return cls(cat["tid"], cat["layer"], cat["request"], cat["pos"], cat["step"], cat["ctx"],
                   log.layers, log.requests, log.topk, width)


class Policy:
    """A reservation policy. Subclasses set ``name``, ``description`` (one line), ``defaults``
    (parameters) and implement :meth:`fa_hits`."""

    name = ""
    description = ""
    defaults: dict = {}

    def __init__(self, **params):
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise UserError(f"policy {self.name}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(self.defaults) or 'none'}")
        self.params = {**self.defaults, **params}

    def check(self, reads: TokenReads, capacity: int) -> None:
        """Reject parameters out of range for this stream and capacity (one-line UserError)."""
        if capacity < 1:
            raise UserError(f"policy {self.name}: capacity must be at least 1 token, got {capacity}")

    def fa_hits(self, reads: TokenReads, capacity: int) -> int:
        """Hits of a fully associative cache of ``capacity`` whole tokens under this policy."""
        raise NotImplementedError

    def run(self, reads: TokenReads, capacity: int) -> int:
        self.check(reads, capacity)
        return int(self.fa_hits(reads, capacity)) if len(reads) else 0


def check_int(policy: str, name: str, value, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise UserError(f"policy {policy}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)
