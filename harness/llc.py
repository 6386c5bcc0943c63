"""The built-in last-level cache: set-associative, write-allocate, with a way-partitioned KV
reservation, exactly as DESIGN.md defines it.

Geometry: ``sets = size / (ways * 64)``, a line's set is ``line_address mod sets``. Ways
``[0, reserve_ways)`` form the KV partition: ``kv``/``kv_write`` lines allocate only there, every
other class only in ways ``[reserve_ways, ways)``; a lookup hits wherever the line is. With
``reserve_ways = 0`` all classes share one LRU cache (the baseline); with ``reserve_ways = ways``
non-KV lines have nowhere to go and bypass the cache (counted as misses and ``bypasses``).

A miss fills the lowest free way of its region. Otherwise the shared ways evict the least
recently used line; the reserved ways use ``policy``:

- ``lru``: the least recently used line.
- ``token-lru``: recency per token (a token's time is its latest access to any of its lines);
  the victim is the reserved line whose token is least recent, ties to the lowest way. With
  whole-token eviction (default) every other resident line of that token is invalidated too.

On a miss the victim is chosen from the state before the access, then the new line is filled
and its token's time set (as gem5 does: the policy sees the block when it is inserted).
A ``kv`` line without a token id (-1) counts as a token of its own.

Token accounting: a token read is a run of consecutive ``kv`` lines of one token; it is a full
hit when every line hits, a partial hit when some do, a miss when none do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numba as nb
import numpy as np

from harness import hashtab
from harness.classes import KV, KV_WRITE, LINE_BYTES
from harness.errors import UserError
from harness.units import format_size, parse_size

RESERVED_POLICIES = {
    "lru": "line LRU inside the reserved ways",
    "token-lru": "LRU by token recency inside the reserved ways, whole-token eviction optional",
}
_POLICY_CODE = {"lru": 0, "token-lru": 1}

# counters kept across chunks (indices into LLCState.counters)
C_NOW, C_EVICT, C_WB, C_TOKEN_INVAL, C_BYPASS = 0, 1, 2, 3, 4
C_TR_FULL, C_TR_PARTIAL, C_TR_MISS, C_TR_OPEN, C_TR_TOKEN, C_TR_LINES, C_TR_HITS = 5, 6, 7, 8, 9, 10, 11
N_COUNTERS = 12

# token-table fields
F_TIME, F_HEAD, F_COUNT = 0, 1, 2


@dataclass(frozen=True)
class LLCConfig:
    """LLC geometry and reservation. ``size`` in bytes (strings like ``"32MiB"`` accepted by
    :meth:`make`)."""

    size: int
    ways: int = 16
    reserve_ways: int = 0
    policy: str = "token-lru"
    whole_token_eviction: bool = True
    line: int = LINE_BYTES

    @classmethod
    def make(cls, size, ways=16, reserve_ways=0, policy="token-lru", whole_token_eviction=True):
        cfg = cls(parse_size(size, "LLC size"), int(ways), int(reserve_ways), str(policy),
                  bool(whole_token_eviction))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.line != LINE_BYTES:
            raise UserError(f"line size must be {LINE_BYTES} bytes, got {self.line}")
        if self.ways < 1:
            raise UserError(f"ways must be at least 1, got {self.ways}")
        if self.size % (self.ways * self.line):
            raise UserError(f"LLC size {format_size(self.size)} is not a multiple of "
                            f"ways * {self.line} B = {self.ways * self.line} B")
        if not 0 <= self.reserve_ways <= self.ways:
            raise UserError(f"reserve_ways must be between 0 and ways ({self.ways}), "
                            f"got {self.reserve_ways}")
        if self.policy not in RESERVED_POLICIES:
            raise UserError(f"unknown policy {self.policy!r}; known: {', '.join(RESERVED_POLICIES)}")

    @property
    def sets(self) -> int:
        return self.size // (self.ways * self.line)

    @property
    def reserved_bytes(self) -> int:
        return self.sets * self.reserve_ways * self.line

    def to_dict(self) -> dict:
        return asdict(self)


class LLCState:
    """Tag store and policy state, carried from one chunk of accesses to the next."""

    def __init__(self, cfg: LLCConfig):
        cfg.validate()
        self.cfg = cfg
        n = cfg.sets * cfg.ways
        self.tag = np.full(n, -1, dtype=np.int64)
        self.stamp = np.full(n, 0, dtype=np.int64)  # np.full touches the pages now, not mid-run
        self.dirty = np.full(n, 0, dtype=np.uint8)
        self.owner = np.full(n, -1, dtype=np.int64)  # token of a reserved line (token policies)
        self.next = np.full(n, -1, dtype=np.int64)   # the token's resident lines, linked
        self.prev = np.full(n, -1, dtype=np.int64)
        tracked = cfg.sets * cfg.reserve_ways if cfg.policy == "token-lru" else 0
        self.tkeys, self.tvals = hashtab.new_table(tracked, 3)
        self.counters = np.zeros(N_COUNTERS, dtype=np.int64)
        self.read_lengths = np.zeros(256, dtype=np.int64)  # token reads by line count (capped)

    def access(self, lines, cls, tokens, writes) -> tuple[np.ndarray, np.ndarray]:
        """Simulate one chunk of line accesses.

        Returns one uint8 per access, ``hit | writebacks << 1`` (writebacks the access caused,
        capped at 127), and the token ids of the token reads that started in this chunk."""
        n = len(lines)
        out = np.empty(n, dtype=np.uint8)
        reads = np.empty(n, dtype=np.int64)
        cfg = self.cfg
        nreads = _simulate(lines, cls, tokens, writes, out, reads,
                           self.tag, self.stamp, self.dirty, self.owner, self.next, self.prev,
                           self.tkeys, self.tvals, self.counters, self.read_lengths,
                           cfg.sets, cfg.ways, cfg.reserve_ways, _POLICY_CODE[cfg.policy],
                           cfg.whole_token_eviction)
        return out, reads[:nreads]

    def finish(self) -> None:
        """Close the token read still open at the end of the stream."""
        _finish(self.counters, self.read_lengths)

    def lines_per_token(self) -> int:
        """The most common number of lines in a token read (0 when there were none)."""
        return int(np.argmax(self.read_lengths)) if self.read_lengths.any() else 0

    def resident(self) -> np.ndarray:
        """Tags as a (sets, ways) array, -1 for an invalid way (for tests and inspection)."""
        return self.tag.reshape(self.cfg.sets, self.cfg.ways).copy()


@nb.njit(inline="always")
def _close_read(lines, hits, read_lengths, ctr):
    if hits == lines:
        ctr[C_TR_FULL] += 1
    elif hits > 0:
        ctr[C_TR_PARTIAL] += 1
    else:
        ctr[C_TR_MISS] += 1
    read_lengths[min(lines, read_lengths.shape[0] - 1)] += 1


@nb.njit(inline="always")
def _finish(ctr, read_lengths):
    if ctr[C_TR_OPEN]:
        _close_read(ctr[C_TR_LINES], ctr[C_TR_HITS], read_lengths, ctr)
        ctr[C_TR_OPEN] = 0


@nb.njit(inline="always")
def _unlink(slot, e, nxt, prv, tvals):
    p = prv[slot]
    q = nxt[slot]
    if p >= 0:
        nxt[p] = q
    else:
        tvals[e, F_HEAD] = q
    if q >= 0:
        prv[q] = p


@nb.njit(nogil=True, cache=True)
def _simulate(lines, cls, tokens, writes, out, reads,
              tag, stamp, dirty, owner, nxt, prv, tkeys, tvals, ctr, read_lengths,
              n_sets, n_ways, n_res, policy, whole):
    # Counters live in locals inside the loop (array elements would be reloaded on every use).
    now = ctr[C_NOW]
    evictions, writebacks, invalidations, bypasses = ctr[C_EVICT], ctr[C_WB], ctr[C_TOKEN_INVAL], ctr[C_BYPASS]
    read_open, read_tok, read_lines, read_hits = ctr[C_TR_OPEN], ctr[C_TR_TOKEN], ctr[C_TR_LINES], ctr[C_TR_HITS]
    nreads = 0
    pow2 = (n_sets & (n_sets - 1)) == 0
    set_mask = n_sets - 1
    token_policy = policy == 1 and n_res > 0
    for i in range(lines.shape[0]):
        line = lines[i]
        c = cls[i]
        is_kv = c <= KV_WRITE
        tok = tokens[i]
        if tok < 0:
            tok = -2 - line
        if pow2:
            base = (line & set_mask) * n_ways
        else:
            base = (line % n_sets) * n_ways
        if is_kv and n_res > 0:
            lo, hi = 0, n_res
        else:
            lo, hi = n_res, n_ways
        now += 1
        # one pass: the line's way, and the region's lowest free way and LRU way
        way = -1
        free = -1
        lru = -1
        lru_t = np.int64(0)
        for w in range(n_ways):
            t = tag[base + w]
            if t == line:
                way = w
                break
            if lo <= w < hi:
                if t < 0:
                    if free < 0:
                        free = w
                elif lru < 0 or stamp[base + w] < lru_t:
                    lru = w
                    lru_t = stamp[base + w]

        if c == KV:
            if not (read_open and read_tok == tok):
                if read_open:
                    _close_read(read_lines, read_hits, read_lengths, ctr)
                read_open, read_tok, read_lines, read_hits = 1, tok, 0, 0
                reads[nreads] = tok
                nreads += 1
            read_lines += 1
            if way >= 0:
                read_hits += 1
        elif read_open:
            _close_read(read_lines, read_hits, read_lengths, ctr)
            read_open = 0

        if way >= 0:
            out[i] = 1
            slot = base + way
            stamp[slot] = now
            if writes[i]:
                dirty[slot] = 1
            if token_policy and is_kv:
                e = hashtab.find(tkeys, tok)
                if e >= 0:
                    tvals[e, F_TIME] = now
            continue

        if lo == hi:
            bypasses += 1
            out[i] = 0
            continue
        wb_before = writebacks
        tracked = token_policy and lo == 0
        victim = free
        if victim < 0:
            if tracked:  # least recent token; ties go to the lowest way
                best = np.int64(0)
                for w in range(lo, hi):
                    t = tvals[hashtab.find(tkeys, owner[base + w]), F_TIME]
                    if victim < 0 or t < best:
                        best = t
                        victim = w
            else:
                victim = lru
            vslot = base + victim
            evictions += 1
            if tracked:
                e = hashtab.find(tkeys, owner[vslot])
                if whole:
                    other = tvals[e, F_HEAD]
                    while other >= 0:
                        if other != vslot:
                            if dirty[other]:
                                writebacks += 1
                                dirty[other] = 0
                            tag[other] = -1
                            invalidations += 1
                        other = nxt[other]
                    hashtab.delete(tkeys, tvals, e)
                else:
                    _unlink(vslot, e, nxt, prv, tvals)
                    tvals[e, F_COUNT] -= 1
                    if tvals[e, F_COUNT] == 0:
                        hashtab.delete(tkeys, tvals, e)
            if dirty[vslot]:
                writebacks += 1
        vslot = base + victim
        out[i] = min(writebacks - wb_before, 127) << 1
        tag[vslot] = line
        stamp[vslot] = now
        dirty[vslot] = writes[i]
        if tracked:
            e = hashtab.find(tkeys, tok)
            if e < 0:
                e = hashtab.insert(tkeys, tvals, tok)
                tvals[e, F_HEAD] = -1
            head = tvals[e, F_HEAD]
            nxt[vslot] = head
            prv[vslot] = -1
            if head >= 0:
                prv[head] = vslot
            tvals[e, F_HEAD] = vslot
            tvals[e, F_COUNT] += 1
            tvals[e, F_TIME] = now
            owner[vslot] = tok
    ctr[C_NOW] = now
    ctr[C_EVICT], ctr[C_WB], ctr[C_TOKEN_INVAL], ctr[C_BYPASS] = evictions, writebacks, invalidations, bypasses
    ctr[C_TR_OPEN], ctr[C_TR_TOKEN], ctr[C_TR_LINES], ctr[C_TR_HITS] = read_open, read_tok, read_lines, read_hits
    return nreads
