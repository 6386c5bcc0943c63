"""Fully associative token caches over a stream of token reads: the bounds of the reservation.

- :func:`lru_hits`: a fully associative cache of ``capacity`` whole tokens under LRU. Its hit
  count equals the one-pass LRU miss-ratio curve at that capacity.
- :func:`min_hits`: Belady's MIN at token granularity, the offline optimum. A missed token whose
  next use lies further than every cached token's is not inserted (bypass), which makes this the
  optimum over all policies, including ones that may refuse to insert.

Streams are held by :class:`TokenStream`: token ids remapped to dense ints and spilled to a
temporary file, so memory grows with distinct tokens, not with the length of the run.
"""

from __future__ import annotations

import os
import tempfile

import numba as nb
import numpy as np

from harness.cache import dlist, hashtab, heap
from harness.core import numba_cache

numba_cache.guard()  # a broken cache file of a kernel: compiled again, not a crash

NEVER = np.iinfo(np.int64).max  # next use of a token that is never read again
_CHUNK = 1 << 22
# ``hit``, the kernels' optional output: 1 at each read that hits (an empty array: not recorded).
NO_MASK = np.zeros(0, dtype=np.uint8)


class TokenStream:
    """Append-only stream of token ids, stored as dense ids (0..distinct-1) in a temp file.

    With ``id_space=N`` the appended ids are already dense (0 <= id < N, e.g. computed from a
    token's request, layer and position) and are stored as they are; ``distinct`` is then N."""

    def __init__(self, tmpdir: str | None = None, id_space: int | None = None):
        self._file = tempfile.NamedTemporaryFile(prefix="tokens-", suffix=".i32", dir=tmpdir,
                                                 delete=False)
        self.path = self._file.name
        self._keys, self._vals = hashtab.new_table(1 << 12, 1)
        self.distinct = 0
        self.n = 0
        self._ids: np.ndarray | None = None
        self._next: np.ndarray | None = None
        self.id_space = id_space
        self._buf = np.zeros(0, dtype=np.int32)
        if id_space is not None:
            if id_space >= 1 << 31:
                raise ValueError("dense ids must fit in int32")
            self.distinct = int(id_space)

    def append(self, tokens: np.ndarray) -> None:
        if self.id_space is not None:
            ids = np.ascontiguousarray(tokens, dtype=np.int32)
            if len(ids) and (ids.min() < 0 or ids.max() >= self.id_space):
                raise ValueError("dense token id outside the declared id space")
            self._file.write(ids.tobytes())
            self.n += len(ids)
            return
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        if len(self._buf) < len(tokens):
            self._buf = np.zeros(len(tokens), dtype=np.int32)  # reused: fresh pages fault
        out = self._buf[:len(tokens)]
        state = np.array([0, self.distinct], dtype=np.int64)  # next token, distinct ids
        while True:
            _remap(self._keys, self._vals, state, tokens, out)
            if state[0] == len(tokens):
                break
            # the table reached half full: double it
            self._keys, self._vals = hashtab.grow(self._keys, self._vals, 2 * int(state[1]))
        self.distinct = int(state[1])
        self._file.write(out.tobytes())
        self.n += len(tokens)


    @property
    def ids(self) -> np.ndarray:
        """Dense ids of the whole stream (a read-only memory map)."""
        if self._ids is None:
            self._file.flush()
            self._ids = (np.memmap(self.path, dtype=np.int32, mode="r", shape=(self.n,))
                         if self.n else np.empty(0, dtype=np.int32))
        return self._ids

    @property
    def next_use(self) -> np.ndarray:
        """For each read, the index of the next read of the same token, or ``NEVER``."""
        if self._next is None:
            path = self.path + ".next"
            nxt = (np.memmap(path, dtype=np.int64, mode="w+", shape=(self.n,))
                   if self.n else np.empty(0, dtype=np.int64))
            last = np.full(self.distinct, NEVER, dtype=np.int64)
            ids = self.ids
            for stop in range(self.n, 0, -_CHUNK):
                start = max(0, stop - _CHUNK)
                _next_use_backward(np.asarray(ids[start:stop]), start, last, nxt[start:stop])
            self._next = nxt
        return self._next

    def close(self) -> None:
        self._file.close()
        self._ids = self._next = None
        for p in (self.path, self.path + ".next"):
            if os.path.exists(p):
                os.unlink(p)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @classmethod
    def of(cls, tokens: np.ndarray) -> TokenStream:
        s = cls()
        s.append(np.asarray(tokens))
        return s


@nb.njit(cache=True)
def _remap(keys, vals, state, tokens, out):
    """Dense ids for tokens[state[0]:]; stops early when the table reaches half full."""
    limit = keys.shape[0] // 2
    i, distinct = state[0], state[1]
    while i < tokens.shape[0]:
        t = tokens[i]
        e = hashtab.find(keys, t)
        if e < 0:
            if distinct >= limit:
                break
            e = hashtab.insert(keys, vals, t)
            vals[e, 0] = distinct
            distinct += 1
        out[i] = vals[e, 0]
        i += 1
    state[0], state[1] = i, distinct


@nb.njit(cache=True)
def _next_use_backward(ids, offset, last, out):
    for i in range(ids.shape[0] - 1, -1, -1):
        t = ids[i]
        out[i] = last[t]
        last[t] = offset + i


def lru_hits(stream: TokenStream, capacity: int) -> int:
    """Hits of a fully associative LRU cache of ``capacity`` tokens."""
    if capacity <= 0 or stream.n == 0:
        return 0
    prev = np.full(stream.distinct, -1, dtype=np.int64)
    nxt = np.full(stream.distinct, -1, dtype=np.int64)
    inside = np.zeros(stream.distinct, dtype=np.uint8)
    state = np.array([0, 0, -1, -1], dtype=np.int64)  # cached tokens, hits, head, tail
    ids = stream.ids
    for start in range(0, stream.n, _CHUNK):
        lru_chunk(np.asarray(ids[start:start + _CHUNK]), capacity, prev, nxt, inside, state, NO_MASK)
    return int(state[1])


@nb.njit(cache=True)
def lru_chunk(ids, capacity, prev, nxt, inside, state, hit):
    size, hits, head, tail = state[0], state[1], state[2], state[3]
    for i in range(ids.shape[0]):
        t = ids[i]
        if inside[t]:
            hits += 1
            if hit.shape[0]:
                hit[i] = 1
            head, tail = dlist.unlink(t, prev, nxt, head, tail)
        else:
            if size == capacity:
                victim, head, tail = dlist.pop_tail(prev, nxt, head, tail)
                inside[victim] = 0
            else:
                size += 1
            inside[t] = 1
        head, tail = dlist.push_head(t, prev, nxt, head, tail)
    state[0], state[1], state[2], state[3] = size, hits, head, tail


def min_hits(stream: TokenStream, capacity: int) -> int:
    """Hits of Belady's MIN (with bypass) on a fully associative cache of ``capacity`` tokens."""
    if capacity <= 0 or stream.n == 0:
        return 0
    state = np.zeros(3, dtype=np.int64)  # heap length, cached tokens, hits
    heap_key, heap_id, cur = min_state(stream.distinct, capacity)
    ids, nxt = stream.ids, stream.next_use
    for start in range(0, stream.n, _CHUNK):
        stop = min(stream.n, start + _CHUNK)
        min_chunk(np.asarray(ids[start:stop]), np.asarray(nxt[start:stop]), capacity,
                  heap_key, heap_id, cur, state, NO_MASK)
    return int(state[2])


def min_state(distinct: int, capacity: int):
    heap_cap = 4 * capacity + 64
    return (np.empty(heap_cap, dtype=np.int64), np.empty(heap_cap, dtype=np.int32),
            np.full(distinct, heap.NONE, dtype=np.int64))


@nb.njit(cache=True)
def min_chunk(ids, nxt, capacity, hkey, hid, cur, state, hit):
    # a min-heap on -(next use): its top is the cached token read furthest in the future
    n, size, hits = state[0], state[1], state[2]
    for i in range(ids.shape[0]):
        t = ids[i]
        key = -nxt[i]
        if cur[t] != heap.NONE:
            hits += 1
            if hit.shape[0]:
                hit[i] = 1
        else:
            if size == capacity:
                n = heap.heap_top(hkey, hid, n, cur)
                if key <= hkey[0]:
                    continue  # bypass: this token is needed later than everything cached
                cur[hid[0]] = heap.NONE
                n = heap.heap_pop(hkey, hid, n)
            else:
                size += 1
        cur[t] = key
        if n == hkey.shape[0]:
            n = heap.heap_compact(hkey, hid, n, cur)
        n = heap.heap_push(hkey, hid, n, key, t)
    state[0], state[1], state[2] = n, size, hits


class StackDistances:
    """LRU stack distances of a token stream, fed in chunks of dense ids, in O(N log D).

    The distance of a read is the number of distinct other tokens read since the same token's
    previous read (cold reads have none). A fully associative LRU cache of C tokens hits exactly
    the reads with distance < C, so the histogram gives the hit count at every capacity in one
    pass (the miss-ratio curve). A Fenwick tree over "time slots" holds one marker per token at
    its latest read; slots are renumbered (compacted) when they run out, so the tree stays
    twice the number of distinct tokens."""

    def __init__(self, distinct: int):
        self.distinct = distinct
        self.hist = np.zeros(distinct + 1, dtype=np.int64)  # hist[d]; hist[distinct] = cold reads
        self.slot_of = np.full(distinct, -1, dtype=np.int64)
        size = 1 << max(10, int(2 * max(1, distinct)).bit_length())
        self.tree = np.zeros(size + 1, dtype=np.int64)
        self.state = np.zeros(2, dtype=np.int64)  # next free slot, live markers

    def feed(self, ids: np.ndarray) -> None:
        _stack_chunk(np.ascontiguousarray(ids, dtype=np.int32), self.hist, self.slot_of, self.tree, self.state)

    def hits(self) -> np.ndarray:
        """hits[C] for C = 0..distinct: reads a fully associative LRU cache of C tokens hits."""
        return np.concatenate([[0], np.cumsum(self.hist[:-1])])

    def hits_at(self, capacities) -> np.ndarray:
        """Hits at any capacities (beyond the distinct-token count the curve is flat)."""
        return self.hits()[np.minimum(np.asarray(capacities), self.distinct)]

    @property
    def reads(self) -> int:
        return int(self.hist.sum())


@nb.njit(inline="always")
def _fen_add(tree, i, v):
    i += 1
    n = tree.shape[0]
    while i < n:
        tree[i] += v
        i += i & -i


@nb.njit(inline="always")
def _fen_prefix(tree, i):
    """Sum of slots 0..i."""
    i += 1
    s = 0
    while i > 0:
        s += tree[i]
        i -= i & -i
    return s


@nb.njit(cache=True)
def _stack_chunk(ids, hist, slot_of, tree, state):
    size = tree.shape[0] - 1
    nxt, live = state[0], state[1]
    cold = hist.shape[0] - 1
    for i in range(ids.shape[0]):
        t = ids[i]
        if nxt == size:  # renumber live markers 0..live-1 in slot order and rebuild the tree
            order = np.argsort(slot_of)
            tree[:] = 0
            j = 0
            for x in order:
                if slot_of[x] >= 0:
                    slot_of[x] = j
                    _fen_add(tree, j, 1)
                    j += 1
            nxt = j
        s = slot_of[t]
        if s >= 0:
            hist[live - _fen_prefix(tree, s)] += 1
            _fen_add(tree, s, -1)
            live -= 1
        else:
            hist[cold] += 1
        slot_of[t] = nxt
        _fen_add(tree, nxt, 1)
        nxt += 1
        live += 1
    state[0], state[1] = nxt, live
