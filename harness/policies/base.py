"""What every reservation policy shares: the token-read stream it runs on, its interface, and
the numba helpers live in ``harness.heap`` and ``harness.dlist``.

A policy decides which whole tokens a reservation of ``capacity`` tokens keeps. Each module
implements it for the fully associative token cache (the study's capacity sweeps); ``lru`` and
``token-lru`` also run in the set-associative LLC's reserved ways (``harness.llc``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.errors import UserError


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
        parts = {k: [] for k in ("tid", "layer", "request", "pos", "step", "ctx")}
        width = int(log.table(["ctx_len"]).column("ctx_len").to_numpy().max())
        for b in log.blocks():
            n = np.diff(b.offsets)
            parts["layer"].append(np.repeat(b.layer, n))
            parts["request"].append(np.repeat(b.request, n))
            parts["step"].append(np.repeat(b.step, n))
            parts["ctx"].append(np.repeat(b.ctx_len, n))
            parts["pos"].append(b.positions.astype(np.int64))
        cat = {k: np.concatenate(v).astype(np.int32) if v else np.zeros(0, np.int32) for k, v in parts.items() if v}
        cat["tid"] = ((cat["request"].astype(np.int64) * log.layers + cat["layer"]) * width + cat["pos"]).astype(np.int32)
        return cls(cat["tid"], cat["layer"], cat["request"], cat["pos"], cat["step"], cat["ctx"],
                   log.layers, log.requests, int(log.meta["indexer"]["topk"]), width)


class Policy:
    """A reservation policy. Subclasses set ``name``, ``description`` (one line), ``defaults``
    (parameters) and implement :meth:`fa_hits`."""

    name = ""
    description = ""
    defaults: dict = {}
    set_associative = False  # also runs in the LLC's reserved ways

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
