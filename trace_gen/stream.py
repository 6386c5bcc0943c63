"""Memory access streams of DSA decode steps, from index logs, under a KV geometry and layout.

Per decode step, per geometry layer: ``weights`` (optional, ``weight_bytes`` streamed once per
layer for the whole batch), then for each concurrent request in turn: ``index`` (write of the new
token's indexer key, then the scan of all ``ctx_len`` indexer keys), ``kv`` (every selected
token, ``kv_bytes`` each), ``kv_write`` (the new token's KV, position ``ctx_len - 1``).

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
from dataclasses import asdict, dataclass

import numba as nb
import numpy as np

from harness.core.accesstrace import LineAccesses, Requests
from harness.core.classes import INDEX, KV, KV_WRITE, LINE_BYTES, LINE_SHIFT, WEIGHTS
from harness.core.errors import UserError
from trace_gen.geometry import Geometry
from trace_gen.indexlog import IndexLog, StepBlock

LAYOUTS = ("contiguous", "paged")
PAGE_ORDERS = ("in-order", "shuffled")
REGION_ALIGN = 4096
CHUNK_LINES = 1 << 22


def token_id(request, layer, position):
    return (np.int64(request) << 48) | (np.int64(layer) << 32) | np.int64(position)


def split_token_id(tok):
    tok = np.asarray(tok, dtype=np.int64)
    return tok >> 48, (tok >> 32) & 0xFFFF, tok & 0xFFFFFFFF


@dataclass(frozen=True)
class Layout:
    kind: str = "paged"
    page_tokens: int = 64
    page_order: str = "in-order"
    seed: int = 0
    weights: bool = False

    def validate(self) -> None:
        if self.kind not in LAYOUTS:
            raise UserError(f"unknown layout {self.kind!r}; known: {', '.join(LAYOUTS)}")
        if not isinstance(self.page_tokens, int) or isinstance(self.page_tokens, bool) or self.page_tokens < 1:
            raise UserError(f"page size must be a positive integer number of tokens, got {self.page_tokens!r}")
        if self.page_order not in PAGE_ORDERS:
            raise UserError(f"unknown page order {self.page_order!r}; known: {', '.join(PAGE_ORDERS)}")

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
        self.weight_bytes = g.weight_bytes if layout.weights else 0
        self.size = self.weights_base + _align(g.layers * self.weight_bytes)

    def _page_table(self, first_ctx: np.ndarray, last_ctx: np.ndarray) -> np.ndarray:
        p = self.page_tokens
        pages = -(-self.max_ctx // p)
        phys = np.full((self.requests, pages), -1, dtype=np.int64)
        nxt = 0
        for r in range(self.requests):  # prefill: the prompt's pages, request by request
            for j in range(-(-(int(first_ctx[r]) - 1) // p)):
                phys[r, j] = nxt
                nxt += 1
        for pos in range(int(first_ctx.min()) - 1, self.max_ctx):  # decode, interleaved
            for r in range(self.requests):
                if first_ctx[r] - 1 <= pos < last_ctx[r] and phys[r, pos // p] < 0:
                    phys[r, pos // p] = nxt
                    nxt += 1
        phys[phys < 0] = 0  # pages past a request's last step are never addressed
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

    def __init__(self, log: IndexLog, geometry: Geometry, layout: Layout):
        layout.validate()
        self.log, self.geometry, self.layout = log, geometry, layout
        ctx = log.table(["request", "step", "ctx_len"]).to_pandas()
        if ctx.empty:
            raise UserError(f"index log {log.folder} has no rows")
        per_request = ctx.groupby("request").ctx_len
        if len(per_request) != log.requests:
            raise UserError(f"index log {log.folder}: some requests have no rows")
        self.amap = AddressMap(geometry, layout, per_request.min().sort_index().to_numpy(),
                               per_request.max().sort_index().to_numpy())
        self.layer_map = geometry.layer_map(log.layers).astype(np.int64)
        self.max_k = int(log.meta["indexer"]["topk"])

    @classmethod
    def from_options(cls, index_log, options: dict) -> StreamSource:
        """From an index log folder and the stream options by name, as ``dsa-harness simulate``
        and a sweep's ``[stream]`` table give them (geometry, layout, page_tokens, page_order,
        layout_seed, weights)."""
        from trace_gen.geometry import get_geometry

        log = IndexLog(index_log)
        o = options
        return cls(log, get_geometry(o["geometry"], log.meta),
                   Layout(o["layout"], o["page_tokens"], o["page_order"], o["layout_seed"], o["weights"]))

    def _bound_per_layer_step(self) -> int:
        """Most line accesses one (step, geometry layer) can produce."""
        g, a = self.geometry, self.amap
        lines = lambda nbytes: nbytes // LINE_BYTES + 2  # noqa: E731
        pages = -(-a.max_ctx // a.page_tokens)
        per_request = (lines(g.index_bytes) + lines(a.max_ctx * g.index_bytes) + pages
                       + (self.max_k + 1) * lines(g.kv_bytes))
        return lines(a.weight_bytes) + self.log.requests * per_request

    def chunks(self, as_lines: bool = True, chunk_lines: int = CHUNK_LINES, reuse: bool = False) -> Iterator:
        """Yield :class:`LineAccesses` (``as_lines``) or :class:`Requests` chunks.

        With ``reuse`` every chunk lives in the same buffers, valid only until the next chunk is
        requested: the fast path for consumers that process a chunk and move on (fresh pages
        cost a page fault each, which dominated generation time on a VM)."""
        bound = self._bound_per_layer_step()
        cap = max(chunk_lines, bound)
        shared = _Buffers(cap, as_lines) if reuse else None
        for block in self.log.blocks():
            self._check_block(block)
            step_starts = np.arange(0, len(block.step), self.log.layers * self.log.requests, dtype=np.int64)
            pos = np.zeros(2, dtype=np.int64)  # resume point: step index in block, geometry layer
            while pos[0] < len(step_starts):
                out = shared or _Buffers(cap, as_lines)
                n = _emit(block.request, block.step, block.ctx_len, block.offsets, block.positions,
                          step_starts, pos, self.layer_map, self.log.requests,
                          self.amap.phys, self.amap.page_tokens, self.amap.total_pages,
                          self.geometry.token_stride, self.geometry.kv_bytes, self.geometry.index_bytes,
                          self.amap.weight_bytes, self.amap.kv_base, self.amap.index_base,
                          self.amap.weights_base, as_lines, bound,
                          out.addr, out.size, out.cls, out.write, out.token, out.step)
                yield out.take(n)

    def _check_block(self, b: StepBlock) -> None:
        per_step = self.log.layers * self.log.requests
        n = len(b.step)
        expect_layer = np.tile(np.repeat(np.arange(self.log.layers), self.log.requests), n // per_step)
        expect_req = np.tile(np.arange(self.log.requests), n // self.log.requests)
        if (n % per_step or not np.array_equal(b.layer, expect_layer)
                or not np.array_equal(b.request, expect_req)
                or (b.step.reshape(-1, per_step) != b.step[::per_step, None]).any()):
            raise UserError(f"index log {self.log.folder}: rows are not complete (step, layer, request) "
                            "groups in order; was it written by dsa-harness decode?")
        if len(b.positions) and (b.positions.min() < 0 or
                                 (b.positions >= np.repeat(b.ctx_len, np.diff(b.offsets))).any()):
            raise UserError(f"index log {self.log.folder}: a selected position lies outside its context")


class _Buffers:
    def __init__(self, cap: int, as_lines: bool):
        self.as_lines = as_lines
        self.addr = np.zeros(cap, dtype=np.int64)
        self.size = np.zeros(1 if as_lines else cap, dtype=np.int64)
        self.cls = np.zeros(cap, dtype=np.uint8)
        self.write = np.zeros(cap, dtype=np.uint8)
        self.token = np.zeros(cap, dtype=np.int64)
        self.step = np.zeros(cap, dtype=np.int64)

    def take(self, n: int):
        if self.as_lines:
            return LineAccesses(self.addr[:n], self.write[:n], self.cls[:n], self.token[:n], self.step[:n])
        return Requests(self.addr[:n], self.size[:n], self.write[:n], self.cls[:n], self.token[:n], self.step[:n])


@nb.njit(inline="always")
def _put(n, addr, nbytes, c, w, tok, step, as_lines, o_addr, o_size, o_cls, o_w, o_tok, o_step):
    if as_lines:
        first = addr >> LINE_SHIFT
        last = (addr + nbytes - 1) >> LINE_SHIFT
        for line in range(first, last + 1):
            o_addr[n] = line
            o_cls[n] = c
            o_w[n] = w
            o_tok[n] = tok
            o_step[n] = step
            n += 1
    else:
        o_addr[n] = addr
        o_size[n] = nbytes
        o_cls[n] = c
        o_w[n] = w
        o_tok[n] = tok
        o_step[n] = step
        n += 1
    return n


@nb.njit(nogil=True, cache=True)
def _emit(req, step, ctx_len, offsets, positions, step_starts, pos, layer_map, n_req,
          phys, page_tokens, total_pages, stride, kv_bytes, index_bytes, weight_bytes,
          kv_base, index_base, weights_base, as_lines, bound,
          o_addr, o_size, o_cls, o_w, o_tok, o_step):
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
            lg = layer_map[g]
            if weight_bytes > 0:
                n = _put(n, weights_base + g * weight_bytes, weight_bytes, WEIGHTS, 0, -1, st, as_lines,
                         o_addr, o_size, o_cls, o_w, o_tok, o_step)
            for r in range(n_req):
                row = s0 + lg * n_req + r
                ctx = ctx_len[row]
                new = ctx - 1
                kv_layer = kv_base + g * layer_slots * stride
                ix_layer = index_base + g * layer_slots * index_bytes
                slot = phys[r, new // page_tokens] * page_tokens + new % page_tokens
                n = _put(n, ix_layer + slot * index_bytes, index_bytes, INDEX, 1, -1, st, as_lines,
                         o_addr, o_size, o_cls, o_w, o_tok, o_step)
                for j in range((ctx + page_tokens - 1) // page_tokens):
                    count = min(page_tokens, ctx - j * page_tokens)
                    n = _put(n, ix_layer + phys[r, j] * page_tokens * index_bytes, count * index_bytes,
                             INDEX, 0, -1, st, as_lines, o_addr, o_size, o_cls, o_w, o_tok, o_step)
                tok_base = (np.int64(r) << 48) | (np.int64(g) << 32)
                for i in range(offsets[row], offsets[row + 1]):
                    p = np.int64(positions[i])
                    slot = phys[r, p // page_tokens] * page_tokens + p % page_tokens
                    n = _put(n, kv_layer + slot * stride, kv_bytes, KV, 0, tok_base | p, st, as_lines,
                             o_addr, o_size, o_cls, o_w, o_tok, o_step)
                slot = phys[r, new // page_tokens] * page_tokens + new % page_tokens
                n = _put(n, kv_layer + slot * stride, kv_bytes, KV_WRITE, 1, tok_base | new, st, as_lines,
                         o_addr, o_size, o_cls, o_w, o_tok, o_step)
            pos[1] += 1
        pos[1] = 0
        pos[0] += 1
    return n
