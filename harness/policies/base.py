"""What every reservation policy shares: the token-read stream it runs on, its interface, and
numba helpers (a lazily invalidated min-heap and per-layer LRU lists).

A policy decides which whole tokens a reservation of ``capacity`` tokens keeps. Each module
implements it for the fully associative token cache (the study's capacity sweeps); ``lru`` and
``token-lru`` also run in the set-associative LLC's reserved ways (``harness.llc``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
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


# --- a min-heap of (key, id) with lazy deletion: an entry is live iff cur[id] == key ---------

@nb.njit(inline="always")
def heap_push(hk, hi, n, key, ident):
    i = n
    while i > 0:
        p = (i - 1) >> 1
        if hk[p] <= key:
            break
        hk[i], hi[i] = hk[p], hi[p]
        i = p
    hk[i], hi[i] = key, ident
    return n + 1


@nb.njit(inline="always")
def _sift_down(hk, hi, i, n):
    k, t = hk[i], hi[i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and hk[c + 1] < hk[c]:
            c += 1
        if hk[c] >= k:
            break
        hk[i], hi[i] = hk[c], hi[c]
        i = c
    hk[i], hi[i] = k, t


@nb.njit(inline="always")
def heap_top(hk, hi, n, cur):
    """Drop stale entries; returns the new length (the live minimum is then at index 0)."""
    while n > 0 and hk[0] != cur[hi[0]]:
        n -= 1
        hk[0], hi[0] = hk[n], hi[n]
        _sift_down(hk, hi, 0, n)
    return n


@nb.njit(inline="always")
def heap_pop(hk, hi, n):
    n -= 1
    hk[0], hi[0] = hk[n], hi[n]
    _sift_down(hk, hi, 0, n)
    return n


@nb.njit(inline="always")
def heap_compact(hk, hi, n, cur):
    """Keep live entries only, re-heapified (when the arrays fill up with stale ones)."""
    m = 0
    for j in range(n):
        if hk[j] == cur[hi[j]]:
            hk[m], hi[m] = hk[j], hi[j]
            m += 1
    for j in range(m // 2 - 1, -1, -1):
        _sift_down(hk, hi, j, m)
    return m


NONE = np.iinfo(np.int64).min  # cur[id] of a token that is not cached
