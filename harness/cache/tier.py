"""The host tier: a device that keeps the KV cache in host memory and a hot buffer of it in HBM
(the design of HiSparse: LMSYS blog, 2026-04-10; vLLM PR #53781), its decode-step time, and how many requests it holds.

**What lives where.** Every request's full KV cache is in host memory; its indexer keys stay in
HBM (the indexer scans all of them every step). Each request has, in every layer, a hot buffer
of ``hot_tokens`` KV entries in HBM (``pooled``: each layer one buffer of batch x ``hot_tokens``
entries that the batch shares), managed by a token policy of ``harness.cache.policies``
(``token-lru`` is HiSparse's GPU-side LRU; ``streak``, MIN as the bound, or any other). A selected
token found in the buffer is a hit; a miss is copied from host memory over the host link into
HBM (into the buffer, replacing the policy's victim, or into a staging slot of k tokens when the
policy refuses it) before the layer's attention reads it. The new token's KV is written in HBM
and backed up to host memory in the link's other direction (HiSparse's eager backup).

**Hits.** One (request, layer) hot buffer is exactly a fully associative cache of ``hot_tokens``
whole tokens fed that request's selections of that layer in decode order, so its hits per step
are ``Policy.step_hits`` on that stream; pooled, the stream of all the batch's requests of the
layer (request by request within a step, as the stream phases issue them) into ``batch x
hot_tokens`` tokens. A log with fewer layers than the geometry is stretched (DESIGN.md, section 5):
a geometry layer's buffer sees the selections of the log layer it replays, so it has that log
layer's hits; a batch larger than the log's reuses the log's requests in turn (each at its own
tokens), so a request's buffer has the hits of the log request it replays.

**Step time** of one device, per step s and geometry layer, with B requests of context c_s, R
the batch's selected tokens of the layer, M their misses (B x k reads, M = R - hits):

    index phase  = phase_time(HBM: B (c_s + 1) index_bytes,                    compute: B c_s index FLOPs)
    link         = link latency + M kv_bytes / link bandwidth                  (0 when M = 0)
    gather phase = phase_time(HBM: weights / L + R kv_bytes + (B + M) kv_bytes, compute: R attention FLOPs + B layer FLOPs)
    layer        = index phase + link + gather phase

where an HBM phase takes bytes / (bandwidth x bw_efficiency) + the unloaded memory latency (the
bandwidth term of ``harness.cache.timing``'s closed-loop model, which is the one that binds at
these sizes: tens of MB per phase, far past the requests in flight the latency terms count) and
``phase_time`` overlaps it with the phase's compute by the platform's ``overlap`` (1: the
roofline). The HBM bytes of the gather count the selected tokens read, the new token's KV
written and, with the tier, each miss written into the buffer. The LLC is not modelled (every
byte comes from HBM). **Overlap assumed:** a layer's misses are known only when its index phase
has chosen the top-k, and its attention needs them, so the layer waits for its whole transfer:
no overlap of link transfers with HBM traffic or compute (no prefetch across layers; a real
engine that prefetched would be faster, so this is the tier's pessimistic side). A step is the
sum of its layers, and at least the time the link's other direction takes to back up the
step's B x L new KV entries. Without the tier (``full HBM``) the same formula runs without link
and without miss writes. Means leave out the first ``warmup_steps`` (the buffers start empty).

**Capacity** at context c (the log's longest) on HBM of ``hbm`` bytes less the resident weights
(``Weights.resident_bytes``): a request needs L c (kv_bytes + index_bytes) without the tier and
L c index_bytes + L hot_tokens kv_bytes + k kv_bytes (one layer's staging) with it; the tier
also needs L c kv_bytes of host memory per request (``host_bytes``). The throughput of each at
the largest batch it holds, and the **crossover**: the smallest batch at which the tier's
throughput passes the full-HBM device's at its own largest batch.

``geometry`` is duck-typed (``trace_gen.geometry.Geometry``: layers, kv_bytes, index_bytes, the
FLOPs per token and layer, weights with ``step_bytes(batch)`` and ``resident_bytes()``), since this
layer does not import trace_gen.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from harness.cache.platforms import Platform, get_platform
from harness.cache.policies import TokenReads, get_policy
from harness.cache.timing import TimingConfig, phase_time
from harness.core.errors import UserError
from harness.core.settings import default

PRODUCED_BY = "built-in host-tier model (harness.cache.tier)"


@dataclass(frozen=True)
class TierConfig:
    """A host tier (the ``[tier]`` settings of ``harness.core.settings``): hot-buffer tokens per
    layer and request as a multiple of k (``hot_tokens_per_k``), the buffers' policy
    (``hot_policy``), one pool per layer shared by the batch (``pooled``) or one buffer per
    request, and the HBM capacity (``hbm``; None: the platform's)."""

    hot_tokens_per_k: float = default("tier", "hot_tokens_per_k")
    hot_policy: str = default("tier", "hot_policy")
    pooled: bool = default("tier", "pooled")
    hbm: int | None = default("tier", "hbm")

    def hot_tokens(self, topk: int) -> int:
        """Hot-buffer tokens per layer and request at selections of ``topk`` tokens."""
        return max(1, math.ceil(self.hot_tokens_per_k * topk))

    def to_dict(self) -> dict:
        return asdict(self)


def tier_platform(name: str, hbm: int | None = None) -> Platform:
    """The platform's preset with its host tier values (``hbm`` replaces its HBM capacity); a
    one-line error for a platform without a host link."""
    p = get_platform(name)
    if p.link_bytes_per_s is None or p.link_latency_s is None or p.hbm_bytes is None:
        raise UserError(f"platform {name} has no host tier (no HBM capacity and host link in "
                        "harness/cache/platforms.py)")
    return p.with_overrides(hbm_bytes=hbm)


# --- the hot buffers' hits ------------------------------------------------------------------

@dataclass
class HotBufferHits:
    """Hits and reads of the hot buffers, by log request (pooled: the whole pooled batch as one),
    step and log layer: arrays of shape (requests, steps, layers)."""

    hits: np.ndarray
    reads: np.ndarray
    pooled_batch: int | None = None  # pooled: the batch whose pool was simulated

    def per_batch(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Hits and reads by (step, log layer) summed over a batch of ``batch`` requests: request
        b replays log request b mod R (per-request buffers: exact at any batch). A pool's hit
        rate depends on its batch: at another batch the pool's rate per read is kept (an
        approximation the result names)."""
        if self.pooled_batch is not None:
            scale = batch / self.pooled_batch
            return self.hits[0] * scale, self.reads[0] * scale
        count = np.bincount(np.arange(batch) % len(self.hits), minlength=len(self.hits)).astype(np.float64)
        return np.tensordot(count, self.hits, 1), np.tensordot(count, self.reads, 1)


def hot_buffer_hits(reads: TokenReads, hot_tokens: int, policy: str, pooled: bool = False,
                    batch: int | None = None) -> HotBufferHits:
    """Hits per step of every hot buffer (see the module docstring) on the log's token reads."""
    p = get_policy(policy)
    steps, layers, requests = reads.steps, reads.layers, reads.requests
    shape = (requests, steps, layers)
    hits, counts = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    if not pooled:
        order = np.lexsort((reads.layer, reads.request))  # stable: decode order inside each group
        group = reads.request[order].astype(np.int64) * layers + reads.layer[order]
        bounds = np.flatnonzero(np.diff(group)) + 1
        for idx in np.split(order, bounds):
            r, layer = int(reads.request[idx[0]]), int(reads.layer[idx[0]])
            sub = reads.take(idx)
            hits[r, :, layer] = _pad(p.step_hits(sub, hot_tokens), steps)
            counts[r, :, layer] = np.bincount(sub.step, minlength=steps)
        return HotBufferHits(hits, counts)
    batch = batch or requests
    pool_hits, pool_reads = np.zeros((1, steps, layers), np.int64), np.zeros((1, steps, layers), np.int64)
    for layer in range(layers):
        sub = _pooled_reads(reads, layer, batch)
        pool_hits[0, :, layer] = _pad(p.step_hits(sub, batch * hot_tokens), steps)
        pool_reads[0, :, layer] = np.bincount(sub.step, minlength=steps)
    return HotBufferHits(pool_hits, pool_reads, batch)


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    return np.pad(a, (0, n - len(a)))


def _pooled_reads(reads: TokenReads, layer: int, batch: int) -> TokenReads:
    """One layer's reads of a batch of ``batch`` requests, request b replaying log request b mod R
    at tokens of its own (ids b x width + position), in stream order: step by step, request by
    request."""
    idx = np.flatnonzero(reads.layer == layer)
    key = reads.step[idx].astype(np.int64) * reads.requests + reads.request[idx]
    starts = np.searchsorted(key, np.arange(reads.steps * reads.requests + 1))
    parts, owners = [], []
    for s in range(reads.steps):
        for b in range(batch):
            k = s * reads.requests + b % reads.requests
            parts.append(idx[starts[k]:starts[k + 1]])
            owners.append(np.full(starts[k + 1] - starts[k], b, np.int64))
    sel, owner = np.concatenate(parts), np.concatenate(owners)
    return reads.take(sel, owner, batch)


# --- step time ------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepTimes:
    """Seconds of each decode step (and the link's share of them) at one batch."""

    step_s: np.ndarray
    link_s: np.ndarray

    def mean(self, warm: int) -> float:
        return float(self.step_s[warm:].mean())


def step_times(geometry, t: TimingConfig, platform: Platform | None, ctx: np.ndarray, reads: np.ndarray,
               misses: np.ndarray | None, batch: int) -> StepTimes:
    """Step times (module docstring) from the batch's selected tokens ``reads`` and hot-buffer
    ``misses`` by (step, geometry layer), each step's context ``ctx``; ``misses`` None: the
    full-HBM device (no host tier)."""
    layers = geometry.layers
    c = np.asarray(ctx, np.float64)[:, None]
    kv, ib = geometry.kv_bytes, geometry.index_bytes
    bw = t.dram_bytes_per_cycle * t.bw_efficiency

    def memory(nbytes):
        return np.where(nbytes > 0, nbytes / bw + t.dram_latency_cycles, 0.0)

    index = phase_time(memory(batch * (c + 1) * ib),
                       batch * c * geometry.index_flops_per_token / t.flops_per_cycle, t.overlap)
    written = batch * kv + (0 if misses is None else misses * kv)
    gather_bytes = geometry.weights.step_bytes(batch) / layers + reads * kv + written
    gather = phase_time(memory(gather_bytes),
                        (reads * geometry.attn_flops_per_token + batch * geometry.layer_flops) / t.flops_per_cycle,
                        t.overlap)
    step = (index + gather).sum(axis=1) / t.clock_hz
    if misses is None:
        return StepTimes(step, np.zeros_like(step))
    link = np.where(misses > 0, platform.link_latency_s + misses * kv / platform.link_bytes_per_s, 0.0).sum(axis=1)
    backup = batch * layers * kv / platform.link_bytes_per_s  # the new tokens' KV, host-bound
    return StepTimes(np.maximum(step + link, backup), link)


# --- capacity -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Capacity:
    """Bytes one request needs with and without the tier, and the largest batches that fit."""

    hbm_bytes: int
    weights_bytes: int
    context_tokens: int
    full_request_bytes: int
    tier_request_bytes: int
    host_request_bytes: int
    host_bytes: int | None

    @property
    def kv_budget_bytes(self) -> int:
        return max(0, self.hbm_bytes - self.weights_bytes)

    @property
    def full_max_batch(self) -> int:
        return self.kv_budget_bytes // self.full_request_bytes

    @property
    def tier_max_batch(self) -> int:
        fit = self.kv_budget_bytes // self.tier_request_bytes
        return fit if self.host_bytes is None else min(fit, self.host_bytes // self.host_request_bytes)

    def to_dict(self) -> dict:
        return {**asdict(self), "kv_budget_bytes": self.kv_budget_bytes, "full_max_batch": self.full_max_batch,
                "tier_max_batch": self.tier_max_batch}


def capacity(geometry, platform: Platform, context: int, topk: int, hot_tokens: int) -> Capacity:
    """HBM and host bytes per request at ``context`` tokens (see the module docstring)."""
    layers = geometry.layers
    return Capacity(
        hbm_bytes=int(platform.hbm_bytes), weights_bytes=geometry.weights.resident_bytes(), context_tokens=context,
        full_request_bytes=layers * context * (geometry.kv_bytes + geometry.index_bytes),
        tier_request_bytes=layers * (context * geometry.index_bytes + hot_tokens * geometry.kv_bytes)
        + topk * geometry.kv_bytes,
        host_request_bytes=layers * context * geometry.kv_bytes, host_bytes=platform.host_bytes)


# --- one configuration ----------------------------------------------------------------------

def simulate_tier(reads: TokenReads, geometry, t: TimingConfig, cfg: TierConfig, batch: int | None = None,
                  extra_config: dict | None = None, buffers: HotBufferHits | None = None) -> dict:
    """The host tier of one index log (its token reads) under a geometry, platform and tier
    config, at ``batch`` requests (default: the log's): hot-buffer hit rates, link bytes and step
    time per step, the full-HBM step time at the same batch, capacity with and without the tier
    and the throughput of each at its largest batch, with the crossover batch. ``buffers``: the
    hot buffers' hits if known (``hot_buffer_hits`` of these reads and config)."""
    platform = tier_platform(t.platform, cfg.hbm)
    if len(reads) == 0:
        raise UserError("the index log has no selections")
    batch = batch or reads.requests
    hot = cfg.hot_tokens(reads.topk)
    buffers = buffers or hot_buffer_hits(reads, hot, cfg.hot_policy, cfg.pooled, batch)
    layer_map = geometry.layer_map(reads.layers)
    ctx = np.bincount(reads.step, weights=reads.ctx, minlength=reads.steps) \
        / np.bincount(reads.step, minlength=reads.steps)  # each step's mean over its reads
    warm = min(int(t.warmup_steps), reads.steps - 1)

    def at(b: int) -> tuple[StepTimes, StepTimes, np.ndarray, np.ndarray]:
        hits, n = buffers.per_batch(b)
        hits, n = hits[:, layer_map], n[:, layer_map]
        return (step_times(geometry, t, platform, ctx, n, n - hits, b),
                step_times(geometry, t, platform, ctx, n, None, b), hits, n)

    tier, full, hits, n = at(batch)
    misses = n - hits
    measured = slice(warm, None)
    per_step_rate = hits.sum(axis=1) / np.maximum(n.sum(axis=1), 1)
    raw_hits, raw_reads = buffers.hits.sum(axis=0), buffers.reads.sum(axis=0)  # (steps, log layers)
    link_bytes = misses.sum(axis=1) * geometry.kv_bytes
    cap = capacity(geometry, platform, int(reads.ctx.max()), reads.topk, hot)
    throughput = _throughput(cap, lambda b: tuple(x.mean(warm) for x in at(b)[:2]))
    step_s = tier.mean(warm)
    return {
        "steps": int(reads.steps), "measured_steps": int(reads.steps - warm), "batch": int(batch),
        "hot_buffer": {
            "policy": cfg.hot_policy, "pooled": cfg.pooled, "tokens_per_layer": hot,
            "pool_tokens_per_layer": hot * batch if cfg.pooled else hot,
            "reads": int(n[measured].sum()), "hits": int(round(hits[measured].sum())),
            "hit_rate": float(hits[measured].sum() / n[measured].sum()),
            "hit_rate_per_step": [float(x) for x in per_step_rate],
            "hit_rate_per_log_layer": [float(x) for x in raw_hits[measured].sum(axis=0)
                                       / np.maximum(raw_reads[measured].sum(axis=0), 1)],
            # a pool's hit rate is measured at this batch only: the throughput curve keeps it at others
            "curve_hit_rate_from_this_batch": cfg.pooled,
        },
        "link": {"name": platform.link, "bytes_per_s": platform.link_bytes_per_s,
                 "latency_s": platform.link_latency_s},
        "link_bytes_per_step": float(link_bytes[measured].mean()),
        "link_bytes_per_step_all": [float(x) for x in link_bytes],
        "link_wait_share": float(tier.link_s[measured].sum() / tier.step_s[measured].sum()),
        "step_time_s": step_s, "step_time_s_per_step": [float(x) for x in tier.step_s],
        "tokens_per_s": 1 / step_s, "batch_tokens_per_s": batch / step_s,
        "full_hbm": {"step_time_s": full.mean(warm), "batch_tokens_per_s": batch / full.mean(warm)},
        "capacity": cap.to_dict(), "throughput": throughput,
        "timing": {"model": "host-tier", "platform": t.platform, "produced_by": PRODUCED_BY},
        "config": {"tier": cfg.to_dict(), "timing": t.to_dict(), "geometry": geometry.name, **(extra_config or {})},
    }


def _throughput(cap: Capacity, seconds) -> dict:
    """Batch tokens/s of the full-HBM device at its largest batch and of the tier at its own
    (``seconds(b)``: the tier's and the full device's mean step time at batch b); the gain, the
    crossover and a log-spaced curve of both for the report. Throughput b / T(b) grows with the
    batch (T(b) is a constant, the weights, plus terms that grow at most linearly in b), so the
    crossover is found by bisection."""
    full_max, tier_max = cap.full_max_batch, cap.tier_max_batch
    memo: dict[int, tuple[float, float]] = {}

    def rates(b: int) -> tuple[float, float]:  # tier, full batch tokens/s at batch b
        if b not in memo:
            tier_s, full_s = seconds(b)
            memo[b] = (b / tier_s, b / full_s)
        return memo[b]

    full_best = rates(full_max)[1] if full_max else 0.0
    tier_best = rates(tier_max)[0] if tier_max else 0.0
    crossover = None
    if tier_max and tier_best > full_best:
        lo, hi = 1, tier_max  # the smallest b with rates(b)[0] > full_best lies in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if rates(mid)[0] > full_best else (mid + 1, hi)
        crossover = lo
    top = max(tier_max, full_max, 1)
    marks = sorted({1, full_max, tier_max, *(2**i for i in range(top.bit_length()))} - {0})
    curve = [{"batch": b, "full_batch_tokens_per_s": rates(b)[1] if b <= full_max else None,
              "tier_batch_tokens_per_s": rates(b)[0] if b <= tier_max else None} for b in marks]
    return {"full_max_batch": full_max, "tier_max_batch": tier_max,
            "full_batch_tokens_per_s": full_best, "tier_batch_tokens_per_s": tier_best,
            "gain": tier_best / full_best if full_best else None, "crossover_batch": crossover, "curve": curve}
