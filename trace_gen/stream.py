"""Memory access streams of DSA decode steps, from index logs, under a KV geometry and layout.

A decode step runs the geometry's layers in order; each layer is two phases, and the requests
of a batch issue each phase's accesses together, as one batched kernel would (request by
request inside the phase):

1. **index** phase: for each request, the write of the new token's indexer key, then the scan of
   all ``ctx_len`` indexer keys;
2. **gather** phase (it needs the index phase's top-k): for each request, the write of the new
   token's KV (``kv_write``, position ``ctx_len - 1``, which the selection may include), then every
   selected token's KV (``kv_bytes`` each); then, with ``weights``, the layer's share of the
   weights one device reads in the step (``Geometry.weight_bytes(batch)``, once per layer for the
   whole batch; see ``trace_gen.geometry.Weights``).

Indexer levers (``trace_gen.levers``, :class:`~trace_gen.levers.StreamLevers`): a layer that
borrows another layer's selection has no index phase (no key written, none scanned), and a step
that reuses its last scan has none either (its new key is written in the gather phase); the
gather reads the selection the lever gives. Without a lever the stream is as above.

Every access carries its phase id, ``(step * L + layer) * 2 + kind`` (kind 0 index, 1 gather),
and :meth:`StreamSource.phases` describes each phase (step, layer, kind, FLOPs of the compute that
follows it), which is what the step-time model and the gem5 closed-loop generator need.

Address map (byte addresses, regions packed from 0 and aligned to 4 KiB): the KV region, then
the indexer-key region, then the weights region. Each token's KV starts on a line boundary and
occupies ``geometry.token_stride`` bytes, so every kv line belongs to exactly one token.

- ``contiguous``: each (request, layer) owns an array of ``max_ctx`` token slots.
- ``paged``: pages of ``page_tokens`` tokens, as in vLLM (a request's block table maps logical
  page j to a physical page id shared by all layers; each layer has its own array of physical
  pages). Physical ids are given in allocation order (the prompts' pages request by request,
  then one page whenever a decoding request crosses a page boundary, requests interleaved), or
  shuffled with a seed (a long-running server's free list).

Token ids: ``request << 48 | layer << 32 | position`` (geometry layer). Streams are produced in
chunks by a numba kernel, as line accesses for the simulator or as requests for trace files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

import numba as nb
import numpy as np
import pandas as pd

from harness.core import numba_cache
from harness.core.accesstrace import LineAccesses, Requests
from harness.core.errors import UserError
from harness.core.sampling import SetSample
from harness.core.settings import MAX_REQUESTS, SETTINGS, default
from harness.core.traffic import (
    INDEX,
    KV,
    KV_WRITE,
    LINE_BYTES,
    LINE_SHIFT,
    TRAFFIC_CLASSES,
    WEIGHTS,
)
from harness.core.units import require_memory
from trace_gen.geometry import Geometry
from trace_gen.indexlog import IndexLog
from trace_gen.levers import StreamLevers

numba_cache.guard()  # a broken cache file of a kernel: compiled again, not a crash

LAYOUTS = ("contiguous", "paged")
PHASE_KINDS = ("index", "gather")
INDEX_PHASE, GATHER_PHASE = range(len(PHASE_KINDS))
PAGE_ORDERS = ("in-order", "shuffled")
REGION_ALIGN = 4096
EVERY_GROUP = np.ones(1, dtype=np.bool_)  # the set groups a stream without a sample keeps: all
CHUNK_LINES = 1 << 22


def step_bound(kv_bytes: int, index_bytes: int, max_ctx: int, page_tokens: int, max_row: int, batch: int,
               weight_bytes: int | None = None) -> int:
    """Most line accesses one (step, geometry layer) of a stream can produce: per request its
    key scan and its selected tokens' KV, and the layer's weights (None: one scan record)."""
    lines = lambda nbytes: nbytes // LINE_BYTES + 2  # noqa: E731  (any alignment)
    pages = -(-max_ctx // page_tokens)
    # the key scan reads one range per page: each may straddle one more line than its bytes fill
    per_request = lines(index_bytes) + lines(max_ctx * index_bytes) + 2 * pages + (max_row + 1) * lines(kv_bytes)
    return (1 if weight_bytes is None else lines(weight_bytes)) + batch * per_request


def stream_memory_bytes(kv_bytes: int, index_bytes: int, max_ctx: int, page_tokens: int, max_row: int,
                        batch: int, paged: bool) -> int:
    """The memory a stream's generation holds at its peak: its page table (with the temporaries
    that build it) and the buffers of its largest (step, layer), at least a chunk's."""
    table = batch * -(-max_ctx // page_tokens) * 8 * 3 if paged else batch * 8
    bound = step_bound(kv_bytes, index_bytes, max_ctx, page_tokens if paged else max_ctx, max_row, batch)
    return table + max(CHUNK_LINES, bound) * _Buffers.BYTES_PER_ACCESS


def planned_memory_bytes(decode: dict, stream: dict) -> int:
    """At least the memory the stream of a decode not yet made will need (a sweep checks its
    runs before anything runs): from the decode's requests, context and k and the stream's
    geometry, batch and layout. A ``native`` geometry is counted at one line of KV per token and
    no indexer key (its sizes come from the log), so the estimate never exceeds the real need."""
    from trace_gen.geometry import PRESETS

    g = PRESETS.get(stream.get("geometry"))
    kv_bytes, index_bytes = (g.kv_bytes, g.index_bytes) if g else (LINE_BYTES, 0)
    max_ctx = int(decode["prompt_tokens"]) + int(decode["steps"])
    max_row = int(decode["topk"]) + int(decode.get("index_reuse") or 1) - 1
    batch = int(stream.get("batch") or decode.get("requests") or 1)
    paged = stream.get("layout", "paged") == "paged"
    return stream_memory_bytes(kv_bytes, index_bytes, max_ctx, int(stream.get("page_tokens") or 1), max_row,
                               batch, paged)


def token_id(request, layer, position):
    return (np.int64(request) << 48) | (np.int64(layer) << 32) | np.int64(position)


def phase_id(step, layer, kind, layers):
    """The id every access of a phase carries: ``(step * layers + layer) * 2 + kind``."""
    return (np.int64(step) * layers + layer) * 2 + kind


def split_token_id(tok):
    tok = np.asarray(tok, dtype=np.int64)
    return tok >> 48, (tok >> 32) & 0xFFFF, tok & 0xFFFFFFFF


@dataclass(frozen=True, kw_only=True)
class Layout:
    """A stream's layout; its settings (``[stream]`` layout, page_tokens, page_order,
    layout_seed, weights) are declared in ``harness.core.settings``."""

    kind: str = default("stream", "layout")
    page_tokens: int = default("stream", "page_tokens")
    page_order: str = default("stream", "page_order")
    seed: int = default("stream", "layout_seed")
    weights: bool = default("stream", "weights")

    @classmethod
    def from_settings(cls, stream: dict) -> Layout:
        """The layout of a ``[stream]`` section's values (absent keys take their defaults)."""
        names = {"layout": "kind", "layout_seed": "seed", "page_tokens": "page_tokens",
                 "page_order": "page_order", "weights": "weights"}
        return cls(**{field: stream[key] for key, field in names.items() if key in stream})

    def validate(self) -> None:
        if self.kind not in LAYOUTS:
            raise UserError(f"unknown layout {self.kind!r}; known: {', '.join(LAYOUTS)}")
        if not isinstance(self.page_tokens, int) or isinstance(self.page_tokens, bool) or self.page_tokens < 1:
            raise UserError(f"page size must be a positive integer number of tokens, got {self.page_tokens!r}")
        if self.page_order not in PAGE_ORDERS:
            raise UserError(f"unknown page order {self.page_order!r}; known: {', '.join(PAGE_ORDERS)}")
        SETTINGS["stream"]["layout_seed"].check("layout seed", self.seed)
        SETTINGS["stream"]["weights"].check("weights", self.weights)

    def to_dict(self) -> dict:
        return asdict(self)


def _align(n: int) -> int:
    return -(-n // REGION_ALIGN) * REGION_ALIGN


class AddressMap:
    """Where every token's KV and indexer key live, for ``requests`` decoding side by side."""

    def __init__(self, geometry: Geometry, layout: Layout, first_ctx, last_ctx):
        """``first_ctx``/``last_ctx``: each request's ctx_len at its first and last decode step."""
        layout.validate()
        self.geometry, self.layout = geometry, layout
        self.requests = len(first_ctx)
        self.max_ctx = int(np.max(last_ctx))
        g = geometry
        if layout.kind == "contiguous":
            self.page_tokens = self.max_ctx  # one "page" per (request, layer)
            self.phys = np.arange(self.requests, dtype=np.int64)[:, None]
        else:
            self.page_tokens = layout.page_tokens
            self.phys = self._page_table(np.asarray(first_ctx, dtype=np.int64),
                                         np.asarray(last_ctx, dtype=np.int64))
        self.total_pages = int(self.phys.max()) + 1
        slots = self.total_pages * self.page_tokens
        self.kv_base = 0
        self.kv_bytes_region = _align(g.layers * slots * g.token_stride)
        self.index_base = self.kv_base + self.kv_bytes_region
        self.index_bytes_region = _align(g.layers * slots * g.index_bytes)
        self.weights_base = self.index_base + self.index_bytes_region
        self.weight_bytes = g.weight_bytes(self.requests) if layout.weights else 0  # per layer
        self.size = self.weights_base + _align(g.layers * self.weight_bytes)
        if self.size >= 1 << 63:
            raise UserError(f"the address space of this stream ({self.size:,} B: {g.layers} layers x "
                            f"{slots:,} token slots x {g.token_stride} B) exceeds 2**63 bytes")

    def _page_table(self, first_ctx: np.ndarray, last_ctx: np.ndarray) -> np.ndarray:
        """Physical page of each (request, logical page): the prompts' pages request by
        request, then the decode's pages in the order decoding reaches them (by position, then
        request), as a server allocates them; pages no step reaches are 0 (never addressed)."""
        p = self.page_tokens
        pages = -(-self.max_ctx // p)
        require_memory(self.requests * pages * 8 * 3, f"the page table of {self.requests} requests x "
                       f"{pages:,} pages")
        phys = np.zeros((self.requests, pages), dtype=np.int64)
        prompt_pages = -(-(first_ctx - 1) // p)  # pages of positions 0 .. first_ctx - 2
        last_page = (last_ctx - 1) // p          # page of the last decoded position
        req = np.repeat(np.arange(self.requests), prompt_pages)
        page = np.arange(len(req)) - np.repeat(np.cumsum(prompt_pages) - prompt_pages, prompt_pages)
        phys[req, page] = np.arange(len(req))
        # decode: request r first touches its page j at position max(j * p, first_ctx - 1)
        count = np.maximum(last_page - prompt_pages + 1, 0)
        req = np.repeat(np.arange(self.requests), count)
        page = np.arange(len(req)) - np.repeat(np.cumsum(count) - count, count) + np.repeat(prompt_pages, count)
        reached = np.maximum(page * p, first_ctx[req] - 1)
        order = np.lexsort((req, reached))
        phys[req[order], page[order]] = int(prompt_pages.sum()) + np.arange(len(req))
        if self.layout.page_order == "shuffled":
            perm = np.random.default_rng(self.layout.seed).permutation(int(phys.max()) + 1)
            phys = perm[phys]
        return phys

    def kv_addr(self, request, layer, position):
        """Byte address of a token's KV (numpy-broadcasting)."""
        position = np.asarray(position, dtype=np.int64)
        slot = self.phys[request, position // self.page_tokens] * self.page_tokens + position % self.page_tokens
        return self.kv_base + (np.int64(layer) * self.total_pages * self.page_tokens + slot) * self.geometry.token_stride

    def index_addr(self, request, layer, position):
        position = np.asarray(position, dtype=np.int64)
        slot = self.phys[request, position // self.page_tokens] * self.page_tokens + position % self.page_tokens
        return self.index_base + (np.int64(layer) * self.total_pages * self.page_tokens + slot) * self.geometry.index_bytes

    def describe(self) -> dict:
        """What a gem5 config needs: the KV range, token stride, tokens per layer (layer l's
        tokens are [l * tokens_per_layer, (l + 1) * tokens_per_layer) of the KV range) and the
        memory size."""
        return {"kv_base": self.kv_base, "kv_end": self.kv_base + self.kv_bytes_region,
                "token_stride": self.geometry.token_stride,
                "tokens_per_layer": self.total_pages * self.page_tokens, "memory_bytes": self.size,
                "index_base": self.index_base, "weights_base": self.weights_base}


class StreamSource:
    """The access stream of one index log under one geometry and layout, generated in chunks."""

    def __init__(self, log: IndexLog, geometry: Geometry, layout: Layout, batch: int | None = None,
                 index_share: int | None = None, index_reuse: int | None = None):
        """``batch``: the requests the stream decodes side by side (default: the log's). A batch
        larger than the log's reuses its requests' selections in turn (request v reads the
        selections of the log's request v mod R) at addresses of its own: each request has its
        own KV pages and token ids, as in a serving batch, and the LLC sees B distinct working
        sets; the selections repeat every R requests. ``index_share``, ``index_reuse``: the
        stream's indexer levers (None: the log's own; ``trace_gen.levers``)."""
        layout.validate()
        self.log, self.geometry, self.layout = log, geometry, layout
        shape = log.validate()
        if log.rows == 0:
            raise UserError(f"index log {log.folder} has no rows")
        self.batch = log.requests if batch is None else int(batch)
        if not 1 <= self.batch <= MAX_REQUESTS:
            raise UserError(f"batch must be between 1 and {MAX_REQUESTS}, got {self.batch}")
        self.source_request = np.arange(self.batch, dtype=np.int64) % log.requests
        self.amap = AddressMap(geometry, layout, np.asarray(shape.first_ctx)[self.source_request],
                               np.asarray(shape.last_ctx)[self.source_request])
        self.layer_map = geometry.layer_map(log.layers).astype(np.int64)
        self.lever_options = (index_share, index_reuse)
        self.levers = StreamLevers.make(log, self.layer_map, index_share, index_reuse)
        self.max_row = self.levers.max_row(log)  # from the data: the buffers must hold what the rows hold
        self._check_memory(self._bound_per_layer_step(weight_scans=True))

    def _check_memory(self, bound: int) -> None:
        require_memory(max(CHUNK_LINES, bound) * _Buffers.BYTES_PER_ACCESS,
                       f"one decode step of one layer of {self.log.folder} "
                       f"({bound:,} accesses at ctx_len {self.amap.max_ctx:,})")

    def without_weights(self) -> StreamSource:
        """The same stream without the weights' traffic (the attention part's)."""
        if not self.layout.weights:
            return self
        return StreamSource(self.log, self.geometry, replace(self.layout, weights=False), self.batch,
                            *self.lever_options)

    @classmethod
    def from_options(cls, index_log, options: dict) -> StreamSource:
        """From an index log folder and the stream options by name, as ``dsa-harness simulate``
        and a sweep's ``[stream]`` table give them (geometry, layout, page_tokens, page_order,
        layout_seed, weights, batch; the levers index_share, index_reuse and index_bytes, the
        indexer key's bytes in place of the geometry's)."""
        from trace_gen.geometry import get_geometry

        log = IndexLog(index_log)
        o = options
        geometry = get_geometry(o["geometry"], log.meta)
        if o.get("index_bytes") is not None:
            geometry = replace(geometry, index_bytes=o["index_bytes"])
        return cls(log, geometry, Layout.from_settings(o), o.get("batch"), o.get("index_share"), o.get("index_reuse"))

    def lever_summary(self) -> dict:
        """The stream's indexer levers as a result records them (``StreamLevers.describe`` and
        ``kept``) with the indexer key's bytes."""
        return {**self.levers.describe(), "index_bytes": self.geometry.index_bytes, **self.levers.kept(self.log)}

    def phases(self, steps: int | None = None) -> pd.DataFrame:
        """One row per phase of the stream (of its first ``steps`` decode steps, when given), in
        stream order: ``phase`` (the id its accesses carry), ``step``, ``layer`` (geometry layer),
        ``kind`` (0 index, 1 gather) and ``flops``, the compute that follows the phase for the
        whole batch (trace_gen.geometry), of which ``attention_flops`` are the indexer's and the
        sparse attention's (the rest: the layer's projections, MLP or experts); ``keys`` the
        indexer keys the index phase scans and ``selected`` the tokens the gather reads. An index
        phase that does not scan (indexer levers) has no keys, no FLOPs and no accesses."""
        rows = pd.concat([pd.DataFrame({"step": b.step, "log_layer": b.layer, "request": b.request,
                                        "ctx_len": b.ctx_len, "selected": np.diff(offsets)})
                          for b, offsets, _ in self.levers.rows(self.log)], ignore_index=True)
        uses = np.bincount(self.source_request, minlength=self.log.requests)[rows.request.to_numpy()]
        rows = rows.assign(ctx_len=rows.ctx_len * uses, selected=rows.selected * uses, n=uses)
        per = rows.groupby(["step", "log_layer"], sort=True).agg(ctx=("ctx_len", "sum"), sel=("selected", "sum"),
                                                                 n=("n", "sum"))
        g = self.geometry
        kept = per.index.get_level_values("step").unique()[:steps]
        layer = np.tile(np.arange(g.layers), len(kept))
        step = np.repeat(kept, g.layers)
        ctx = per.ctx.loc[list(zip(step, self.layer_map[layer]))].to_numpy()
        src = per.loc[list(zip(step, self.levers.gather_layer[layer]))]
        keys = ctx * self.levers.scans(layer, step)
        index = pd.DataFrame({"step": step, "layer": layer, "kind": INDEX_PHASE,
                              "flops": keys * g.index_flops_per_token, "attention_flops": keys * g.index_flops_per_token,
                              "selected": 0, "keys": keys})
        gather = pd.DataFrame({"step": step, "layer": layer, "kind": GATHER_PHASE,
                               "flops": src.sel.to_numpy() * g.attn_flops_per_token + src.n.to_numpy() * g.layer_flops,
                               "attention_flops": src.sel.to_numpy() * g.attn_flops_per_token,
                               "selected": src.sel.to_numpy(), "keys": 0})
        out = pd.concat([index, gather]).sort_values(["step", "layer", "kind"], kind="stable", ignore_index=True)
        out.insert(0, "phase", phase_id(out.step.to_numpy(), out.layer.to_numpy(), out.kind.to_numpy(), g.layers))
        return out

    def _bound_per_layer_step(self, weight_scans: bool = False) -> int:
        """Most line accesses one (step, geometry layer) can produce (a weight scan: one)."""
        a = self.amap
        return step_bound(self.geometry.kv_bytes, self.geometry.index_bytes, a.max_ctx, a.page_tokens, self.max_row,
                          self.batch, None if weight_scans else a.weight_bytes)

    def memory_bytes(self) -> int:
        """The memory generating this stream holds at its peak (see :func:`stream_memory_bytes`)."""
        a = self.amap
        return stream_memory_bytes(self.geometry.kv_bytes, self.geometry.index_bytes, a.max_ctx, a.page_tokens,
                                   self.max_row, self.batch, self.layout.kind == "paged")

    def line_counts(self, steps: int | None = None) -> pd.DataFrame:
        """The line accesses of every phase and traffic class of the first ``steps`` steps
        (``phase``, ``cls``, ``lines``; a weight scan counts as its lines), counted from the
        stream's requests without generating their lines: what a set-sampled simulation scales
        its counts to (harness.cache.simulate)."""
        last = int(self.phases(steps).phase.max()) if self.log.rows else 0
        counts = np.zeros((last + 2, len(TRAFFIC_CLASSES)), dtype=np.int64)
        for _ in self.chunks(as_lines=True, chunk_lines=1, reuse=True, steps=steps, counts=counts):
            pass
        phase, cls = np.nonzero(counts)
        return pd.DataFrame({"phase": phase, "cls": cls, "lines": counts[phase, cls]})

    def chunks(self, as_lines: bool = True, chunk_lines: int = CHUNK_LINES, reuse: bool = False,
               steps: int | None = None, weight_scans: bool = False, sample: SetSample | None = None,
               counts: np.ndarray | None = None) -> Iterator:
        """Yield :class:`LineAccesses` (``as_lines``) or :class:`Requests` chunks (of the first
        ``steps`` decode steps only, when given). With ``weight_scans`` (line accesses only) each
        layer's weights are one record, a scan of ``scan_lines`` lines from its ``line``, which the
        built-in simulator applies at once (``harness.cache.simulate``). With ``sample`` (line
        accesses only) only the lines of the sampled sets are generated (``harness.core.sampling``;
        a weight scan stays whole: the simulator samples it).

        With ``reuse`` every chunk lives in the same buffers, valid only until the next chunk is
        requested: the fast path for consumers that process a chunk and move on (fresh pages
        cost a page fault each, which dominated generation time on a VM)."""
        scans = bool(weight_scans and as_lines)
        if sample is not None and not as_lines:
            raise ValueError("a sampled stream is made of line accesses")
        if counts is None:
            counts = np.zeros((1, 1), dtype=np.int64)
        else:  # a counting pass (line_counts): nothing is written, chunks are empty
            scans, chunk_lines = False, 1
        bound = self._bound_per_layer_step(scans) if counts.shape[0] == 1 else 0
        self._check_memory(bound)
        cap = max(chunk_lines, bound)
        shared = _Buffers(cap, as_lines) if reuse else None
        remaining = steps
        for block, offsets, positions in self.levers.rows(self.log):
            if remaining is not None and remaining <= 0:
                return
            step_starts = np.arange(0, len(block.step), self.log.layers * self.log.requests, dtype=np.int64)
            if remaining is not None:
                step_starts = step_starts[:remaining]
                remaining -= len(step_starts)
            pos = np.zeros(2, dtype=np.int64)  # resume point: step index in block, geometry layer
            while pos[0] < len(step_starts):
                out = shared or _Buffers(cap, as_lines)
                out.scans = scans
                n = _emit(block.request, block.step, block.ctx_len, offsets, positions,
                          step_starts, pos, self.levers.gather_layer, self.levers.indexer, self.levers.reuse,
                          self.log.requests, self.source_request,
                          self.amap.phys, self.amap.page_tokens, self.amap.total_pages,
                          self.geometry.token_stride, self.geometry.kv_bytes, self.geometry.index_bytes,
                          self.amap.weight_bytes, self.amap.kv_base, self.amap.index_base,
                          self.amap.weights_base, as_lines, scans, bound,
                          sample.group_shift if sample else 0, sample.group_mask if sample else EVERY_GROUP,
                          counts,
                          out.addr, out.size, out.cls, out.write, out.token, out.step, out.phase, out.request)
                yield out.take(n)


class _Buffers:
    BYTES_PER_ACCESS = 8 + 8 + 1 + 1 + 8 + 8 + 8 + 8  # addr, size, cls, write, token, step, phase, request

    def __init__(self, cap: int, as_lines: bool):
        self.as_lines = as_lines
        self.addr = np.zeros(cap, dtype=np.int64)
        self.size = np.zeros(1 if as_lines else cap, dtype=np.int64)
        self.cls = np.zeros(cap, dtype=np.uint8)
        self.write = np.zeros(cap, dtype=np.uint8)
        self.token = np.zeros(cap, dtype=np.int64)
        self.step = np.zeros(cap, dtype=np.int64)
        self.phase = np.zeros(cap, dtype=np.int64)
        self.request = np.zeros(cap, dtype=np.int64)

    scans = False

    def take(self, n: int):
        if self.as_lines:  # a weight scan's line count travels in its token slot (see _emit)
            return LineAccesses(self.addr[:n], self.write[:n], self.cls[:n], self.token[:n], self.step[:n],
                                self.phase[:n], self.request[:n], self.token[:n] if self.scans else None)
        return Requests(self.addr[:n], self.size[:n], self.write[:n], self.cls[:n], self.token[:n], self.step[:n],
                        self.phase[:n], self.request[:n])


@nb.njit(inline="always")
def _put(n, addr, nbytes, c, w, tok, step, ph, rq, as_lines, o):
    """Append one request (or its lines: those in sampled sets, harness.core.sampling) to the
    output buffers ``o`` (the arrays, then the sample's group shift and which groups it samples,
    ``EVERY_GROUP``: all; then ``counts``, which a counting pass fills instead: lines per phase id
    and class)."""
    o_addr, o_size, o_cls, o_w, o_tok, o_step, o_phase, o_req, group_shift, sampled, counts = o
    if nbytes <= 0:  # e.g. an indexer key of 0 bytes (a log without an indexer cache)
        return n
    if counts.shape[0] > 1:  # counting only
        counts[ph, c] += ((addr + nbytes - 1) >> LINE_SHIFT) - (addr >> LINE_SHIFT) + 1
        return n
    if as_lines:
        first = addr >> LINE_SHIFT
        last = (addr + nbytes - 1) >> LINE_SHIFT
        for line in range(first, last + 1):
            if not sampled[(line >> group_shift) % sampled.shape[0]]:
                continue
            o_addr[n] = line
            o_cls[n] = c
            o_w[n] = w
            o_tok[n] = tok
            o_step[n] = step
            o_phase[n] = ph
            o_req[n] = rq
            n += 1
    else:
        o_addr[n] = addr
        o_size[n] = nbytes
        o_cls[n] = c
        o_w[n] = w
        o_tok[n] = tok
        o_step[n] = step
        o_phase[n] = ph
        o_req[n] = rq
        n += 1
    return n


@nb.njit(nogil=True, cache=True)
def _emit(req, step, ctx_len, offsets, positions, step_starts, pos, layer_map, indexer, reuse, n_req, source,
          phys, page_tokens, total_pages, stride, kv_bytes, index_bytes, weight_bytes,
          kv_base, index_base, weights_base, as_lines, scans, bound, group_shift, sampled, counts,
          o_addr, o_size, o_cls, o_w, o_tok, o_step, o_phase, o_req):
    o = (o_addr, o_size, o_cls, o_w, o_tok, o_step, o_phase, o_req, group_shift, sampled, counts)
    n = 0
    cap = o_addr.shape[0]
    n_geo = layer_map.shape[0]
    layer_slots = total_pages * page_tokens
    while pos[0] < step_starts.shape[0]:
        s0 = step_starts[pos[0]]
        st = step[s0]
        while pos[1] < n_geo:
            if n + bound > cap:
                return n
            g = pos[1]
            row0 = s0 + layer_map[g] * n_req
            kv_layer = kv_base + g * layer_slots * stride
            ix_layer = index_base + g * layer_slots * index_bytes
            ph = (np.int64(st) * n_geo + g) * 2
            scan = indexer[g] == 1 and st % reuse == 0  # (layer_map: the log layer whose rows g gathers)
            for r in range(source.shape[0] if scan else 0):  # index phase: new key, then the scan of every key
                ctx = ctx_len[row0 + source[r]]
                new = ctx - 1
                slot = phys[r, new // page_tokens] * page_tokens + new % page_tokens
                n = _put(n, ix_layer + slot * index_bytes, index_bytes, INDEX, 1, -1, st, ph, r, as_lines, o)
                for j in range((ctx + page_tokens - 1) // page_tokens):
                    count = min(page_tokens, ctx - j * page_tokens)
                    n = _put(n, ix_layer + phys[r, j] * page_tokens * index_bytes, count * index_bytes,
                             INDEX, 0, -1, st, ph, r, as_lines, o)
            ph += 1
            for r in range(source.shape[0]):  # gather phase: the new token's KV is written, then the selection read
                row = row0 + source[r]
                tok_base = (np.int64(r) << 48) | (np.int64(g) << 32)
                new = ctx_len[row] - 1
                slot = phys[r, new // page_tokens] * page_tokens + new % page_tokens
                if indexer[g] == 1 and not scan:  # a step that reuses its last scan still writes its key
                    n = _put(n, ix_layer + slot * index_bytes, index_bytes, INDEX, 1, -1, st, ph, r, as_lines, o)
                n = _put(n, kv_layer + slot * stride, kv_bytes, KV_WRITE, 1, tok_base | new, st, ph, r, as_lines, o)
                for i in range(offsets[row], offsets[row + 1]):
                    p = np.int64(positions[i])
                    slot = phys[r, p // page_tokens] * page_tokens + p % page_tokens
                    n = _put(n, kv_layer + slot * stride, kv_bytes, KV, 0, tok_base | p, st, ph, r, as_lines, o)
            if weight_bytes > 0 and scans:  # one record: the first line, the line count as its token
                n = _put(n, weights_base + g * weight_bytes, 1, WEIGHTS, 0, weight_bytes >> LINE_SHIFT,
                         st, ph, 0, True, o[:8] + (0, EVERY_GROUP, o[10]))  # the simulator samples a scan
            elif weight_bytes > 0:
                n = _put(n, weights_base + g * weight_bytes, weight_bytes, WEIGHTS, 0, -1, st, ph, 0, as_lines, o)
            pos[1] += 1
        pos[1] = 0
        pos[0] += 1
    return n
