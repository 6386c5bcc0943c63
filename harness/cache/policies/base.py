"""What every reservation policy shares: the token-read stream it runs on and its interface
(the kernels' linked lists live in ``harness.cache.dlist``).

A policy decides which whole tokens a reservation of ``capacity`` tokens keeps. Each module
implements it for the fully associative token cache (the study's capacity sweeps); those whose
class has ``reserved_ways`` (``harness.cache.policies.RESERVED_POLICIES``) also run in the
set-associative LLC's reserved ways (``harness.cache.policies.ways``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from harness.cache.policies.ways import ReservedWays
from harness.cache.tokencache import NEVER, _next_use_backward
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

    @cached_property
    def next_use(self) -> np.ndarray:
        """For each read, the index of the next read of the same token, or ``NEVER`` (int64)."""
        nxt = np.empty(len(self.tid), dtype=np.int64)
        _next_use_backward(self.tid, 0, np.full(self.id_space, NEVER, dtype=np.int64), nxt)
        return nxt

    @property
    def steps(self) -> int:
        """Decode steps the reads span (steps 0 .. steps - 1)."""
        return int(self.step.max()) + 1 if len(self.tid) else 0

    def take(self, index, request: np.ndarray | int = 0, requests: int = 1) -> TokenReads:
        """The reads at ``index`` (in order) as the reads of one layer of ``requests`` requests,
        read ``i`` by request ``request[i]`` (one request: 0), renumbered to dense ids
        ``request * width + position``: e.g. one layer of one request, a cache of its own."""
        pos = self.pos[index]
        request = np.broadcast_to(np.asarray(request, dtype=np.int32), pos.shape)
        return TokenReads((request.astype(np.int64) * self.width + pos).astype(np.int32),
                          np.zeros(len(pos), np.int32), np.ascontiguousarray(request), pos, self.step[index],
                          self.ctx[index], 1, requests, self.topk, self.width)

    def prefix(self, n: int) -> TokenReads:
        """The first ``n`` reads."""
        return TokenReads(self.tid[:n], self.layer[:n], self.request[:n], self.pos[:n], self.step[:n],
                          self.ctx[:n], self.layers, self.requests, self.topk, self.width)

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


@dataclass(frozen=True)
class HardwareReference:
    """The LLC reservation and decode at which the policies' hardware costs are evaluated: the
    bench's 32 MiB, 16-way LLC with 8 ways reserved (64 B lines: 32768 sets), DeepSeek-V3.2's
    token ids, decodes of up to 4095 steps."""

    sets: int = 32 * 2**20 // (16 * 64)
    reserved_ways: int = 8
    max_steps: int = 4095
    # A token tag names (layer, position): DeepSeek-V3.2 has 61 layers (config.json,
    # num_hidden_layers) and a 128K-token context (DeepSeek-V3.2-Exp model card): 6 + 17 bits.
    token_id_bits: int = math.ceil(math.log2(61 * 128 * 1024))

    @property
    def records(self) -> int:
        """Token records: at most one per reserved line (T = sets x reserved ways), as the LLC
        kernel allocates them."""
        return self.sets * self.reserved_ways

    @property
    def record_slots(self) -> int:
        """Slots of the record table: the kernel's hash tables keep load <= 1/2 in a power of two."""
        return table_slots(self.records)

    def bits(self, n: int) -> int:
        """Bits to tell ``n`` values apart."""
        return max(1, math.ceil(math.log2(n)))

    @property
    def rank_bits(self) -> int:
        """A token's recency rank among up to T resident tokens: exact LRU order of T tokens needs
        log2(T!) / T > log2(T) - 1.45 bits each; ceil(log2 T) is counted."""
        return self.bits(self.records)

    @property
    def step_bits(self) -> int:
        """A decode step number or a count of steps (0 .. max_steps)."""
        return self.bits(self.max_steps + 1)


REFERENCE = HardwareReference()


def table_slots(entries: int) -> int:
    """Slots of a table holding ``entries`` at load <= 1/2, a power of two (as
    ``harness.cache.hashtab.new_table`` sizes every table of the LLC kernel)."""
    return 1 << max(4, int(2 * max(1, entries) - 1).bit_length())


@dataclass(frozen=True)
class HardwareCost:
    """Bits of replacement state a policy adds to the LLC's reserved ways.

    ``line_bits`` per reserved line; ``token_bits`` per slot of the table of resident token
    records (``record_slots`` slots: two per record the reservation can hold); ``history_bits``
    per slot of a history table of every token read so far (a power of two of slots at load
    <= 1/2: 2 to 4 slots per token read, growing with the tokens read); ``global_bits`` once.

    Every token policy shares the record bookkeeping: a record holds the token's tag
    (``token_id_bits``) and a reserved line holds the index of its token's record
    (ceil(log2 record_slots) bits). Whole-token eviction finds a token's other lines from its
    tag (a token's lines are consecutive addresses), so no per-line links are counted; the
    simulator links them only to be fast."""

    line_bits: int
    token_bits: int = 0
    history_bits: int = 0
    global_bits: int = 0
    reference: HardwareReference = REFERENCE

    @classmethod
    def token_policy(cls, state_bits: int, ref: HardwareReference, history_bits: int = 0,
                     global_bits: int = 0) -> HardwareCost:
        """A token policy: the record bookkeeping plus ``state_bits`` of policy state per record."""
        return cls(ref.bits(ref.record_slots), ref.token_id_bits + state_bits, history_bits, global_bits, ref)

    def kib(self) -> float:
        """KiB of state of the resident part (lines, records, globals) at the reference; the
        history grows with the tokens read and is not included."""
        ref = self.reference
        records = ref.record_slots if self.token_bits else 0
        return (ref.records * self.line_bits + records * self.token_bits + self.global_bits) / 8 / 1024

    def summary(self) -> str:
        """One line: bits per reserved line, per token record, per history entry, and the KiB
        of the resident part at the reference (tables counted with their empty slots)."""
        text = f"{self.line_bits} b/line"
        if self.token_bits:
            text += f" + {self.token_bits} b/token"
        if self.history_bits:
            text += f" + history {self.history_bits} b/token read"
        return text + f" ({self.kib():,.0f} KiB)"


class PolicyFailed(UserError):
    """A policy could not run at this capacity: a failure of the code behind it, not of the input
    (the capacity study records it and goes on)."""


class Policy:
    """A reservation policy. Subclasses set ``name``, ``description`` (one line), ``defaults``
    (parameters) and implement :meth:`fa_hits`; those that also run in the LLC's reserved ways
    give the hooks of that form as ``reserved_ways`` and state their :meth:`hardware_cost`.
    ``family`` tells the project's policies from libCacheSim's
    (``harness.cache.policies.zoo``); ``offline`` marks a bound that reads the future;
    ``default_sweep`` is False for a policy the capacity study leaves out unless named."""

    name = ""
    description = ""
    defaults: dict = {}
    family = "dsa-llc"
    offline = False
    default_sweep = True
    reserved_ways: ReservedWays | None = None  # None: the token cache only

    @classmethod
    def hardware_cost(cls, ref: HardwareReference = REFERENCE) -> HardwareCost | None:
        """State this policy needs in the LLC's reserved ways (None: not run there)."""
        return None

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

    def fa_hit_mask(self, reads: TokenReads, capacity: int) -> np.ndarray | None:
        """1 at each read that hits (uint8), for a policy whose kernel records it; None otherwise."""
        return None

    def run(self, reads: TokenReads, capacity: int) -> int:
        self.check(reads, capacity)
        return int(self.fa_hits(reads, capacity)) if len(reads) else 0

    def step_hits(self, reads: TokenReads, capacity: int) -> np.ndarray:
        """Hits of the fully associative cache of ``capacity`` tokens in each decode step (index:
        step), in one run over all the reads; they sum to :meth:`run`'s hits. From the policy's hit
        mask where its kernel records one; otherwise from replays of every step's prefix of the
        reads (hits of the first s steps minus those of the first s - 1), which is exact for a
        policy that reads only the past (a read's outcome cannot depend on later reads) but costs
        a run per step."""
        self.check(reads, capacity)
        if not len(reads):
            return np.zeros(0, dtype=np.int64)
        mask = self.fa_hit_mask(reads, capacity)
        if mask is not None:
            return np.bincount(reads.step, weights=mask, minlength=reads.steps).astype(np.int64)
        ends = np.searchsorted(reads.step, np.arange(1, reads.steps + 1), side="left")
        return np.diff([0, *(self.run(reads.prefix(int(n)), capacity) for n in ends)]).astype(np.int64)


def check_int(policy: str, name: str, value, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise UserError(f"policy {policy}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)
