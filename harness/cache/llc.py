"""The built-in last-level cache: set-associative, write-allocate, with a way-partitioned KV
reservation, exactly as DESIGN.md defines it.

Geometry: ``sets = size / (ways * 64)``, a line's set is ``line_address mod sets``. Ways
``[0, reserve_ways)`` form the KV partition: ``kv``/``kv_write`` lines allocate only there, every
other class only in ways ``[reserve_ways, ways)``; a lookup hits wherever the line is. With
``reserve_ways = 0`` all classes share one LRU cache (the baseline); with ``reserve_ways = ways``
non-KV lines have nowhere to go and bypass the cache (counted as misses and ``bypasses``).

A miss fills the lowest free way of its region. Otherwise the shared ways evict the least
recently used line; the reserved ways use ``policy``, one of
``harness.cache.policies.RESERVED_POLICIES``, each defined whole in its own module:

- ``lru``: the least recently used line, this module's own replacement.
- a token policy (``token-lru``, ``srrip``, ``streak``, ...): each resident token has one record
  whose key ranks it, kept by the hooks the policy's class gives (``reserved_ways``, the
  interface of ``harness.cache.policies.ways``); the victim is the reserved line whose token has
  the smallest key, ties to the lowest way. With whole-token eviction (default) every other
  resident line of that token is invalidated too. A policy may refuse a miss (``streak``,
  ``admit``): the line is not cached (a miss, counted in ``bypasses``). The policies see one
  reference per token read, on its first line (token-lru: every line access). A one-set cache of
  one-line tokens is exactly the fully associative policy, and with m-line tokens and
  whole-token eviction it hits m lines per token hit of the fully associative policy
  (tests/test_policies.py).

This module holds the set-associative machinery only; it compiles one kernel per policy with
that policy's hooks inlined (``_kernel``).

On a miss the victim is chosen from the state before the access, then the new line is filled
and its token's time set (as gem5 does: the policy sees the block when it is inserted).
A ``kv`` line without a token id (-1) counts as a token of its own.

Token accounting: a token read is a run of consecutive ``kv`` lines of one token; it is a full
hit when every line hits, a partial hit when some do, a miss when none do.

MSHR merging (``LLCState``'s ``mshr_window``, W accesses; ``harness.cache.timing`` derives W from
the platform: the line requests issued while one fill is outstanding). A phase's accesses are
issued together, up to W of them in flight; a miss whose line had its last *primary* miss (one
that went to memory) fewer than W accesses earlier in the same phase finds that fill still
outstanding and waits for it, as a second miss to a line with an outstanding MSHR becomes one
more target of that MSHR in gem5 (``BaseCache::handleTimingReqMiss``; gem5 counts it a miss and
an MSHR hit). It is counted a miss and ``mshr_merged``, and costs no memory read (memory reads
= misses - merged); it does not restart the window, which the primary's fill sets. Merging
changes only this accounting: the tags, the policies and every hit and miss are the same at
every window (the fill is modelled at the miss, as before; the merged miss fills the line again,
as the fill the access waits for would). A second access that *hits* because the model filled
the line at its miss is a hit here where gem5 counts it a miss and an MSHR hit: the memory reads
agree, the hit counts differ by such accesses. Phases end at a barrier (every fill returns), so
nothing merges across phases; with W = 1 (one request in flight) nothing merges at all.
Implementation, at no cost to a stream where nothing merges: a miss can only merge when its
line left the cache (or never entered it) while its fill was in flight, since otherwise the
access would hit. So each line records the sequence number of its primary miss when it is
filled, and only a line evicted, invalidated or bypassed fewer than W accesses after its primary
miss, in the same phase, enters a small hash table (line -> primary); a miss looks there only
while the table's newest entry is that young. The table drops its expired entries whenever it
half fills (and grows when the live ones need it). A weight scan applied at once
(:meth:`LLCState.scan`) enters the young lines it evicts as the kernel would (its own lines are
not read again: the premise of applying it at once).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numba as nb
import numpy as np

from harness.cache import dlist, hashtab
from harness.cache.partitions import BIP, NORMAL, PERSISTING, STREAMING, ClassMap, parse_hint
from harness.cache.platforms import DEFAULT_PLATFORM, PLATFORMS
from harness.cache.policies import POLICIES, RESERVED_POLICIES
from harness.cache.policies.bip import BIMODAL_EVERY
from harness.cache.policies.line_lru import LineLRU
from harness.cache.policies.ways import (
    F_COUNT,
    F_HEAD,
    F_KEY,
    F_TIME,
    F_TOKEN,
    N_FIELDS,
    N_GLOBALS,
    N_LAYERS,
    ReservedWays,
)
from harness.core import numba_cache
from harness.core.errors import UserError, unknown_name
from harness.core.sampling import SetSample
from harness.core.settings import POLICY_LISTING, default
from harness.core.traffic import KV, KV_WRITE, LINE_BYTES, TRAFFIC_CLASSES, WEIGHTS
from harness.core.units import format_size, parse_size, require_memory

numba_cache.guard()  # a broken cache file of a kernel: compiled again, not a crash

# counters kept across chunks (indices into LLCState.counters)
C_NOW, C_EVICT, C_WB, C_TOKEN_INVAL, C_BYPASS = 0, 1, 2, 3, 4
C_TR_FULL, C_TR_PARTIAL, C_TR_MISS, C_TR_OPEN, C_TR_TOKEN, C_TR_LINES, C_TR_HITS = 5, 6, 7, 8, 9, 10, 11
C_NFREE, C_HISTORY = 12, 13  # free token records; entries in the policy's history table
C_WRITE_TOK = 14  # token of the kv_write run in progress (-1: none)
C_KV_SEEN = 15  # kv line accesses so far
C_SETS = 16  # sets simulated (a set sample's, or all): what a policy's windows scale with
C_LOW, C_BIP = 17, 18  # fills inserted as the next victim so far; fills under the bip hint so far
# MSHR merging (LLCState's mshr_window): the window in accesses, the phase in progress and the
# sequence number (C_NOW) of its first access, the entries of the table of lines that left the
# cache while their fill was in flight, and the newest primary miss among them
C_WINDOW, C_PHASE, C_PHASE_START, C_MCOUNT, C_MNEWEST = 19, 20, 21, 22, 23
C_TOKEN_LINES = 24  # the most lines any token has had resident: what one eviction may invalidate
N_COUNTERS = 25
# A line's stamp is its latest access + STAMP_BASE; a fill inserted as the next victim of its set
# (a streaming hint) gets STAMP_BASE - (such fills so far), below every access's; a free way's is
# negative. The LRU way has the smallest stamp.
STAMP_BASE = 1 << 50

N_CLASSES = len(TRAFFIC_CLASSES)

DEFAULT_WAYS = PLATFORMS[DEFAULT_PLATFORM].llc_ways
# Automatic set sampling (LLCConfig.sample_for): 1 in 8 set groups when a run's KV and indexer
# traffic passes 100 M line accesses, about 10 s of full simulation here; there the sampled
# counts and step times stay within 1 % (median) of full simulation (tests/data/set_sampling/).
AUTO_SAMPLE_EVERY = 8
AUTO_SAMPLE_ABOVE = 100_000_000
DEAD_LINE = -2  # the tag of a line a weight scan left: occupied, never hit again (LLCState.scan)


@dataclass(frozen=True)
class LLCConfig:
    """LLC geometry and reservation. ``size`` in bytes (strings like ``"32MiB"`` accepted by
    :meth:`make`). Defaults from the settings' declarations (``harness.core.settings``); the
    ways default to the default platform's, as the ``[llc]`` setting does."""

    size: int
    ways: int = DEFAULT_WAYS
    reserve_ways: int = default("llc", "reserve_ways")
    policy: str = default("llc", "policy")
    whole_token_eviction: bool = default("llc", "whole_token_eviction")
    line: int = LINE_BYTES
    sample_sets: int | None = default("llc", "sample_sets")  # 1 in N set groups; None: automatic
    # class-aware knobs (harness.cache.partitions): ways reserved for the indexer keys and the
    # weights (laid out after the KV ways), each class's insertion hint, the persisting set-aside
    reserve_index: int = default("llc", "reserve_index")
    reserve_weights: int = default("llc", "reserve_weights")
    hint_kv: str = default("llc", "hint_kv")
    hint_index: str = default("llc", "hint_index")
    hint_weights: str = default("llc", "hint_weights")
    set_aside: int | None = default("llc", "set_aside")
    what_if: bool = default("llc", "what_if")

    @property
    def reserved(self) -> dict[str, int]:
        """Ways reserved per class (kv, index, weights)."""
        return {"kv": self.reserve_ways, "index": self.reserve_index, "weights": self.reserve_weights}

    @property
    def hints(self) -> dict[str, str]:
        return {"kv": self.hint_kv, "index": self.hint_index, "weights": self.hint_weights}

    @property
    def set_aside_ways(self) -> int:
        """Ways per set the persisting lines may take: the set-aside's share of the LLC."""
        return (self.set_aside or 0) * self.ways // self.size

    @property
    def class_map(self) -> ClassMap:
        return ClassMap.of(self.ways, self.reserved, self.hints, self.set_aside_ways)

    @property
    def class_aware(self) -> bool:
        """Does it use any knob beyond the KV reservation?"""
        return bool(self.reserve_index or self.reserve_weights or self.set_aside
                    or any(h != "normal" for h in self.hints.values()))

    def sample_for(self, line_accesses: int) -> SetSample | None:
        """The set sample of a run whose KV and indexer traffic makes ``line_accesses``: the one
        asked for, or automatically 1 in ``AUTO_SAMPLE_EVERY`` above ``AUTO_SAMPLE_ABOVE``
        accesses (when the sets allow it); None: every set."""
        every = self.sample_sets
        if every is None:
            every = AUTO_SAMPLE_EVERY if line_accesses > AUTO_SAMPLE_ABOVE else 1
            try:
                return SetSample.for_sets(self.sets, every) if every > 1 else None
            except UserError:  # sets that cannot be sampled: simulated whole
                return None
        return SetSample.for_sets(self.sets, every) if every > 1 else None

    @classmethod
    def make(cls, size, *args, **kwargs):
        """A checked config; ``size`` may be a string such as ``"32MiB"``, the rest as the fields."""
        cfg = cls(parse_size(size, "LLC size"), *args, **kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name, kind, what in (("ways", int, "an integer"), ("reserve_ways", int, "an integer"),
                                 ("policy", str, "a string"), ("whole_token_eviction", bool, "true or false")):
            value = getattr(self, name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise UserError(f"LLC {name} must be {what}, got {value!r}")
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
        if self.sample_sets is not None:
            SetSample.for_sets(self.sets, self.sample_sets)
        self._validate_classes()
        if self.policy not in RESERVED_POLICIES:
            if self.policy in POLICIES:
                raise UserError(f"policy {self.policy!r} runs on the fully associative token cache only "
                                f"(`dsa-harness policies`); the reserved ways take: {', '.join(RESERVED_POLICIES)}")
            raise unknown_name("policy", self.policy, RESERVED_POLICIES, POLICY_LISTING)

    def _validate_classes(self) -> None:
        """The class-aware knobs: reservations within the ways, hints that apply, a set-aside that
        gives persisting lines at least a way."""
        for name, ways in self.reserved.items():
            if isinstance(ways, bool) or not isinstance(ways, int) or ways < 0:
                raise UserError(f"ways reserved for {name} must be a whole number >= 0, got {ways!r}")
        if sum(self.reserved.values()) > self.ways:
            raise UserError(f"the reservations take {sum(self.reserved.values())} ways of {self.ways}")
        modes = {name: parse_hint(hint, f"hint {name}")[0] for name, hint in self.hints.items()}
        if modes["kv"] != NORMAL and self.reserve_ways and self.policy != "lru":
            raise UserError(f"the KV lines' ways run {self.policy}, which decides their insertions: "
                            "a KV hint needs them in line-LRU ways (no KV reservation, or policy lru)")
        if modes["weights"] in (BIP, PERSISTING):
            raise UserError("weights take the hints normal or streaming: their scans are applied at once, "
                            "which bip or persisting would not allow")
        persisting = any(m == PERSISTING for m in modes.values())
        if persisting and not self.set_aside_ways:
            raise UserError("a persisting hint needs --set-aside of at least one way per set "
                            f"({format_size(self.size // self.ways)})")
        if self.set_aside and not persisting:
            raise UserError("--set-aside is for persisting lines: give a class the hint persisting:RATIO")
        if self.set_aside and self.set_aside > self.size:
            raise UserError(f"the set-aside ({format_size(self.set_aside)}) is larger than the LLC")

    def beyond(self, platform) -> list[str]:
        """What this configuration's class knobs ask of ``platform`` (a ``Platform``) that its
        documented cache controls (``platform.knobs``) do not offer; empty when nothing. The KV
        reservation is not among them: it is the mechanism this project studies, a proposal that
        no platform ships, and its results are read as such."""
        knobs, out = platform.knobs, []
        reserved = [name for name, ways in self.reserved.items() if ways and name != "kv"]
        if reserved and not knobs.way_reservation:
            out.append(f"{platform.name} has no way reservation ({knobs.source})")
        elif reserved:
            classes = len(reserved) + 1 + bool(self.reserve_ways)
            if classes > knobs.classes_of_service:
                out.append(f"{classes} classes of service, of {knobs.classes_of_service}")
            small = [n for n in reserved if self.reserved[n] < knobs.min_ways]
            if small:
                out.append(f"{', '.join(small)} below {knobs.min_ways} ways")
        for kind in sorted({hint.split(":")[0] for hint in self.hints.values()} - {"normal"}):
            if kind not in knobs.hints:
                out.append(f"{platform.name} documents no {kind} hint ({knobs.source})")
        if self.set_aside and self.set_aside > knobs.persisting_max:
            out.append(f"a set-aside of {self.set_aside / 2**20:g} MiB beyond {platform.name}'s "
                       f"{f'{knobs.persisting_max / 2**20:g} MiB' if knobs.persisting_max else 'none'}")
        return out

    def check_platform(self, platform) -> None:
        """Refuse, in one line, what the platform does not offer, unless ``what_if`` allows it."""
        beyond = self.beyond(platform)
        if beyond and not self.what_if:
            raise UserError(f"beyond {platform.name}'s cache controls: {'; '.join(beyond)} "
                            "(--what-if, or [llc] what_if = true, allows it and the result says so)")

    @property
    def sets(self) -> int:
        return self.size // (self.ways * self.line)

    def memory_bytes(self) -> int:
        """Memory the simulator's state of this LLC takes: per line a tag, a stamp and a dirty
        bit; per reserved line of a token policy a token record and its list links."""
        tracked = self.sets * self.reserve_ways if POLICIES[self.policy].reserved_ways.tokens else 0
        return self.sets * self.ways * 17 + tracked * (8 * N_FIELDS + 8 * 6)

    @property
    def reserved_ways(self) -> ReservedWays:
        """The hooks of the reserved ways' policy (line LRU without a reservation)."""
        return POLICIES[self.policy].reserved_ways if self.reserve_ways else LineLRU.reserved_ways

    @property
    def reserved_bytes(self) -> int:
        return self.sets * self.reserve_ways * self.line

    def to_dict(self) -> dict:
        return asdict(self)


class LLCState:
    """Tag store and policy state, carried from one chunk of accesses to the next."""

    def __init__(self, cfg: LLCConfig, requests: int = 1, sample: SetSample | None = None,
                 mshr_window: int = 1):
        """``sample``: only the sampled sets' lines will come (harness.core.sampling).
        ``mshr_window``: accesses in flight within a phase, W (module docstring, MSHR merging;
        1: none merge). A sample sees only its sets' accesses, so its window is W times the
        sampled share of the sets (a line's accesses are as many simulated accesses apart as
        the sampled sets' share of the stream between them)."""
        if isinstance(mshr_window, bool) or not isinstance(mshr_window, (int, np.integer)) or mshr_window < 1:
            raise ValueError(f"mshr_window must be a whole number >= 1, got {mshr_window!r}")
        cfg.validate()
        self.cfg = cfg
        self.sample = sample
        if sample is not None:
            if sample.sets != cfg.sets:
                raise ValueError(f"a sample of {sample.sets} sets for an LLC of {cfg.sets}")
            self.sampled_sets = sample.sampled_sets
        n = cfg.sets * cfg.ways
        hooks = self.hooks = cfg.reserved_ways
        # token records: at most one per reserved line of the simulated sets (a sample's, or all)
        tracked = (len(sample.sampled_sets) if sample is not None else cfg.sets) * cfg.reserve_ways if hooks.tokens else 0
        # (with merging, each line also keeps its primary miss: 8 B)
        require_memory(cfg.memory_bytes() + (8 * n if mshr_window > 1 else 0), f"an LLC of {format_size(cfg.size)}")
        self.tag = np.full(n, -1, dtype=np.int64)
        # An invalid way's stamp is -(ways - way): below every real stamp and lowest for way 0,
        # so the LRU scan picks the lowest free way first without a separate pass.
        self.stamp = np.tile(-(cfg.ways - np.arange(cfg.ways, dtype=np.int64)), cfg.sets)
        self.dirty = np.full(n, 0, dtype=np.uint8)  # np.full touches the pages now, not mid-run
        self.classes = cfg.class_map
        self.persisting = np.zeros(n if self.classes.persist_cap else 1, dtype=np.uint8)
        self.counters = np.zeros(N_COUNTERS, dtype=np.int64)
        # Token policies: a reserved line's token record, and the token's resident lines linked.
        # Records sit at stable indices (a free list recycles them); a hash table maps token
        # ids to records for fills, while victim scans read records through `owner` directly.
        self.owner = np.full(n if tracked else 1, -1, dtype=np.int64)
        self.next = np.full(n if tracked else 1, -1, dtype=np.int64)
        self.prev = np.full(n if tracked else 1, -1, dtype=np.int64)
        self.records = np.zeros((max(tracked, 1), N_FIELDS), dtype=np.int64)
        self.free = np.arange(max(tracked, 1), dtype=np.int64)[::-1].copy()  # a stack of free records
        self.tkeys, self.tvals = hashtab.new_table(tracked, 1)
        self.counters[C_NFREE] = len(self.free)
        self.counters[C_SETS] = len(self.sampled_sets) if sample is not None else cfg.sets
        self.counters[C_WRITE_TOK] = -1
        window = int(mshr_window)
        if sample is not None and window > 1:
            window = max(1, round(window * len(self.sampled_sets) / cfg.sets))
        self.mshr_window = window
        self.counters[C_WINDOW] = window
        self.counters[C_PHASE] = np.iinfo(np.int64).min  # no phase yet
        # line -> its primary miss, for lines that left the cache with their fill in flight; and
        # each way's line's primary miss (the sequence number C_NOW had then)
        self.mkeys, self.mvals = hashtab.new_table(32, 1)
        self.fill_seq = np.zeros(n if window > 1 else 1, dtype=np.int64)
        self.policy_state = np.zeros(N_GLOBALS, dtype=np.int64)  # the policy's globals
        self.policy_state[:len(hooks.initial_g)] = hooks.initial_g
        # the policy's history of every token read so far, and its lists per layer
        self.hkeys, self.hvals = hashtab.new_table(1 << 12 if hooks.history else 1, 2)
        self.layer_ends = np.full(N_LAYERS if hooks.layer_lists else 1, -1, dtype=np.int64)  # list heads
        self.read_lengths = np.zeros(256, dtype=np.int64)  # token reads by line count (capped)
        # [request, accesses|hits|merged, class]
        self.by_request = np.zeros((max(requests, 1), 3, N_CLASSES), dtype=np.int64)
        self._out = self._reads = self._runs = np.zeros(0)
        self._rows = self._simulated = None  # the simulated sets (an array, a mask), for weight scans

    @property
    def by_class(self) -> np.ndarray:
        """Accesses, hits and MSHR-merged misses per traffic class, [3, classes]."""
        return self.by_request.sum(axis=0)

    def access(self, lines, cls, tokens, writes, steps=None, phases=None,
               requests=None) -> tuple[np.ndarray, np.ndarray, PhaseRuns]:
        """Simulate one chunk of line accesses (``steps``: decode step of each access, which
        streak reads; ``phases``: phase id of each access, default the step; ``requests``: the
        request each access serves, for per-request counts, default 0).

        Returns the hit flag of every access (uint8), the token ids of the token references (kv
        reads and kv_write runs) that started in this chunk, in order (for the fully associative
        token caches), and the chunk's per-phase counts as runs of
        consecutive accesses of one phase. The arrays are views into buffers this state reuses:
        they are valid until the next call (fresh pages cost a page fault each, which on a VM
        took as long as the simulation itself)."""
        n = len(lines)
        if steps is None:
            steps = np.zeros(n, dtype=np.int64)
        if phases is None:
            phases = steps
        if requests is None:
            requests = np.zeros(n, dtype=np.int64)
        elif n:
            self._room_for(int(requests.max()))
        if len(self._out) < n:
            self._out = np.zeros(n, dtype=np.uint8)
            self._reads = np.zeros(n, dtype=np.int64)
            self._runs = np.zeros((n + 1, 6), dtype=np.int64)
        out, reads, runs = self._out[:n], self._reads[:n], self._runs[:n + 1]
        cfg = self.cfg
        if self.hooks.history:  # room in the history for every token read this chunk may add
            kv = cls == KV
            tok = np.where(tokens < 0, -2 - lines, tokens)  # as the kernel sees them: -1 is a token per line
            starts = int(np.count_nonzero(kv[1:] & ~(kv[:-1] & (tok[1:] == tok[:-1])))) + 1
            need = int(self.counters[C_HISTORY]) + starts
            if 2 * need > len(self.hkeys):
                self.hkeys, self.hvals = hashtab.grow(self.hkeys, self.hvals, need)
        tables = self.records, self.policy_state, self.tkeys, self.tvals, self.hkeys, self.hvals, self.layer_ends
        done = nreads = nruns = 0
        while True:
            # the kernel stops early, before an access, when the MSHR table has too little room
            # for what that access may record: grow it and go on from there
            r, u, stop = _KERNELS[self.hooks.name](
                lines[done:], cls[done:], tokens[done:], writes[done:],
                (steps[done:], phases[done:], requests[done:]), out[done:], reads[nreads:], runs[nruns:],
                self.tag, self.stamp, self.dirty, self.owner, self.next, self.prev, tables, self.free,
                self.counters, self.read_lengths, self.by_request, cfg.sets, cfg.ways, cfg.reserve_ways,
                cfg.whole_token_eviction, (*self.classes.kernel_arrays(), self.persisting),
                (self.mkeys, self.mvals, self.fill_seq))
            nreads, nruns, done = nreads + r, nruns + u, done + stop
            if done == n:
                break
            self.mkeys, self.mvals = hashtab.grow(self.mkeys, self.mvals, 2 * len(self.mkeys))
            if len(runs) - nruns < n - done + 1:  # each stop may split a phase's run in two
                grown = np.zeros((nruns + n - done + 1, 6), dtype=np.int64)
                grown[:nruns] = runs[:nruns]
                self._runs = runs = grown
        return out, reads[:nreads], PhaseRuns(*runs[:nruns].T.copy())

    def _room_for(self, request: int) -> None:
        """Grow the per-request counts to hold ``request`` (more requests than announced)."""
        if request >= len(self.by_request):
            grown = np.zeros((request + 1, 3, N_CLASSES), dtype=np.int64)
            grown[:len(self.by_request)] = self.by_request
            self.by_request = grown

    def finish(self) -> None:
        """Close the token read still open at the end of the stream."""
        _finish(self.counters, self.read_lengths)

    def scan(self, first: int, count: int, step: int, phase: int,
             request: int) -> tuple[PhaseRuns | None, np.ndarray | None]:
        """A weights scan of ``count`` consecutive lines from line ``first``, applied at once to
        every set where that is exact; the sets where it is not are left to the caller, to
        simulate the scan's lines there one by one (sets are independent: a set's outcome depends
        only on the lines that map to it). Returns the per-phase counts of the part applied
        (None: none) and the sets left (a bool per set; None: none).

        At once, when every set receives enough of the scan's lines in the ways weights allocate
        in: ``ways + 1`` of them (or 2 under the streaming hint; else every set is left);
        ``harness.cache.simulate`` says why the outcome is then exact, and a set is left when one
        of the scan's lines is still in it (it would hit). The weights' ways, bar any persisting
        lines there (which weights may not evict), end holding dead lines: all of them, or under
        the streaming hint the one the scan's first line took in each set (each later line of the
        set evicts the one before it); a set is left when a way the weights may take there is
        free under the streaming hint (the first lines would stay instead), or when there is none
        (the lines would not be cached). The sets' ways are checked and updated in one pass each
        (``_scan_check``, ``_scan_apply``)."""
        cfg = self.cfg
        lo, hi = (int(x) for x in self.classes.region[WEIGHTS])
        streaming = self.classes.mode[WEIGHTS] == STREAMING
        if self._rows is None:
            self._rows = self.sampled_sets if self.sample is not None else np.arange(cfg.sets, dtype=np.int64)
            self._simulated = np.zeros(cfg.sets, dtype=bool)
            self._simulated[self._rows] = True
        rows = self._rows
        if hi > lo and count // cfg.sets < (2 if streaming else hi - lo + 1):
            return None, self._simulated  # too few lines per set: every line, one by one
        capped = bool(self.classes.persist_cap)
        slow = np.zeros(len(rows), dtype=np.bool_)
        if hi > lo and _scan_check(rows, cfg.ways, lo, hi, first, first + count, self.tag, self.stamp,
                                   self.persisting, capped, bool(streaming), slow) == len(rows):
            return None, self._simulated
        n = self.sample.sampled_lines(first, count) if self.sample is not None else count
        left = None
        if slow.any():  # the lines of the scan that map to the sets left
            sets = rows[slow]
            n -= int((count // cfg.sets) * len(sets) + np.count_nonzero((sets - first) % cfg.sets < count % cfg.sets))
            left = np.zeros(cfg.sets, dtype=bool)
            left[sets] = True
        self.finish()  # a non-kv access ends the token read in progress and the kv_write run
        ctr = self.counters
        ctr[C_WRITE_TOK] = -1
        if ctr[C_PHASE] != phase:  # a scan that opens a phase (none merge: each line is read once)
            ctr[C_PHASE], ctr[C_PHASE_START] = phase, ctr[C_NOW] + 1
        self._room_for(request)
        self.by_request[request, 0, WEIGHTS] += n
        writebacks = 0
        if hi == lo:  # nowhere to go: every line bypasses
            ctr[C_BYPASS] += n
        else:  # the dead lines are older than any later access, younger than any before
            record = self.mshr_window > 1  # the ways taken and the lines they held, for merging
            size = len(rows) * (hi - lo) if record else 0
            slots, old = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64)
            free, writebacks, taken = _scan_apply(rows, slow, cfg.ways, lo, hi, self.tag, self.stamp, self.dirty,
                                                  self.persisting, capped, bool(streaming),
                                                  ctr[C_NOW] + n + STAMP_BASE, ctr[C_LOW], record, slots, old)
            ctr[C_EVICT] += n - free
            ctr[C_WB] += writebacks
            if self.mshr_window > 1:  # the lines it evicted whose fills may still be in flight after it
                slots, old = slots[:taken], old[:taken]
                fills = self.fill_seq[slots]
                young = (old >= 0) & (fills >= ctr[C_PHASE_START]) \
                    & (ctr[C_NOW] + n + 1 - fills < self.mshr_window)
                self._mshr_note(old[young], fills[young])
            if streaming:
                ctr[C_LOW] += taken
        ctr[C_NOW] += n
        one = lambda v: np.array([v], dtype=np.int64)  # noqa: E731
        return PhaseRuns(one(phase), one(n), one(0), one(writebacks), one(step), one(0), weights=True), left

    def _mshr_note(self, lines: np.ndarray, primaries: np.ndarray) -> None:
        """Enter lines that left the cache with their fills (``primaries``) in flight into the
        MSHR table (as the kernel does line by line), with room made first."""
        if not len(lines):
            return
        ctr, k = self.counters, len(lines)
        if 4 * (ctr[C_MCOUNT] + k) > 3 * len(self.mkeys):
            ctr[C_MCOUNT] = _mshr_purge(self.mkeys, self.mvals, ctr[C_NOW] + 1, ctr[C_PHASE_START], self.mshr_window)
            if 4 * (ctr[C_MCOUNT] + k) > len(self.mkeys):
                self.mkeys, self.mvals = hashtab.grow(self.mkeys, self.mvals, 2 * int(ctr[C_MCOUNT] + k))
        ctr[C_MCOUNT] = _mshr_record_all(self.mkeys, self.mvals, ctr[C_MCOUNT], lines, primaries)
        ctr[C_MNEWEST] = max(ctr[C_MNEWEST], int(primaries.max()))

    def lines_per_token(self) -> int:
        """The most common number of lines in a token read (0 when there were none)."""
        return int(np.argmax(self.read_lengths)) if self.read_lengths.any() else 0

    def resident(self) -> np.ndarray:
        """Tags as a (sets, ways) array, -1 for an invalid way (for tests and inspection)."""
        return self.tag.reshape(self.cfg.sets, self.cfg.ways).copy()


@nb.njit(inline="always")
def _takes(slot, stamp, persisting, capped):
    """May a weight line take the way ``slot``? Not when it holds a persisting line (capped)."""
    return not (capped and persisting[slot] and stamp[slot] >= 0)


@nb.njit(nogil=True, cache=True)
def _scan_check(rows, n_ways, lo, hi, first, end, tag, stamp, persisting, capped, streaming, slow):
    """Mark in ``slow`` the sets ``rows`` where a weight scan of the lines ``[first, end)`` into
    ways ``[lo, hi)`` cannot apply at once (LLCState.scan): one of its lines is there, no way may
    take it, or under ``streaming`` a way it may take is free. Returns how many."""
    n = 0
    for i in range(rows.shape[0]):
        base = rows[i] * n_ways
        any_way = False
        for w in range(lo, hi):
            t = tag[base + w]
            if t >= first and t < end:
                slow[i] = True
                break
            if _takes(base + w, stamp, persisting, capped):
                any_way = True
                if streaming and stamp[base + w] < 0:
                    slow[i] = True
                    break
        if not any_way:
            slow[i] = True
        if slow[i]:
            n += 1
    return n


@nb.njit(nogil=True, cache=True)
def _scan_apply(rows, slow, n_ways, lo, hi, tag, stamp, dirty, persisting, capped, streaming, dead_stamp, low,
                record, slots, old):
    """Apply a weight scan at once to ways ``[lo, hi)`` of the sets ``rows`` not marked
    ``slow``: every way the weights may take gets a dead line (stamp ``dead_stamp``), or under
    ``streaming`` only each set's least recent such way, as the next victim. With ``record``,
    the i-th way taken and the tag it held go to ``slots[i]`` and ``old[i]`` (MSHR merging
    needs the lines evicted while their fills may be in flight). Returns (ways that were free,
    dirty lines written back, ways taken)."""
    free, writebacks, taken = 0, 0, 0
    for i in range(rows.shape[0]):
        if slow[i]:
            continue
        base = rows[i] * n_ways
        if streaming:  # the set's least recent way the weights may take (ties: the lowest)
            best, best_t = -1, np.int64(0)
            for w in range(lo, hi):
                if _takes(base + w, stamp, persisting, capped) and (best < 0 or stamp[base + w] < best_t):
                    best, best_t = w, stamp[base + w]
            slot = base + best
            free += stamp[slot] < 0
            writebacks += dirty[slot] == 1
            if record:
                slots[taken], old[taken] = slot, tag[slot]
            tag[slot], dirty[slot], stamp[slot] = DEAD_LINE, 0, STAMP_BASE - low - 1 - taken
            taken += 1
            continue
        for w in range(lo, hi):
            slot = base + w
            if _takes(slot, stamp, persisting, capped):
                free += stamp[slot] < 0
                writebacks += dirty[slot] == 1
                if record:
                    slots[taken], old[taken] = slot, tag[slot]
                tag[slot], dirty[slot], stamp[slot] = DEAD_LINE, 0, dead_stamp
                taken += 1
    return free, writebacks, taken


@dataclass
class PhaseRuns:
    """Per-phase counts of a chunk, one row per run of consecutive accesses of one phase."""

    phase: np.ndarray
    accesses: np.ndarray
    hits: np.ndarray
    writebacks: np.ndarray
    step: np.ndarray  # the decode step of the run's first access
    merged: np.ndarray  # misses that waited for a fill in flight (MSHR merging: the module docstring)
    weights: bool = False  # runs of a weight scan only (harness.cache.simulate)


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
def _release(rec, records, free, nfree, tkeys, tvals, layer_ends, hooks):
    """Drop a token record: out of the hash table (and the policy's own structures), back on
    the free stack."""
    hashtab.delete(tkeys, tvals, hashtab.find(tkeys, records[rec, F_TOKEN]))
    hooks.release(rec, records, layer_ends)
    free[nfree] = rec
    return nfree + 1


@nb.njit(inline="always")
def _mix32(line):
    """A 32-bit hash of a line address (harness.core.sampling.mix, folded to 32 bits first):
    which lines of a class a persisting hint marks."""
    x = (line ^ (line >> 32)) & 0xFFFFFFFF
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


@nb.njit(inline="always")
def _persisting_victim(base, lo, hi, stamp, persisting, persists, cap):
    """The way a fill replaces when persisting lines are capped: a persisting fill evicts the
    least recent persisting line once the set holds ``cap`` of them, else the least recent other
    line (a free way first); any other fill, the least recent non-persisting line. (-1, 0): no
    way it may take."""
    held = 0
    other, other_t, kept, kept_t = -1, np.int64(0), -1, np.int64(0)
    for w in range(lo, hi):
        t = stamp[base + w]
        if persisting[base + w] and t >= 0:
            held += 1
            if kept < 0 or t < kept_t:
                kept, kept_t = w, t
        elif other < 0 or t < other_t:
            other, other_t = w, t
    if persists and held >= cap:
        return kept, kept_t
    return other, other_t


@nb.njit(cache=True)
def _mshr_purge(keys, vals, now, phase_start, window):
    """Drop the MSHR table's expired entries (a primary before the phase or ``window`` or more
    accesses before access ``now``), in place; returns the live entries."""
    live = 0
    for i in range(keys.shape[0]):
        if keys[i] != hashtab.EMPTY and vals[i, 0] >= phase_start and now - vals[i, 0] < window:
            live += 1
    k = np.empty(live, dtype=np.int64)
    v = np.empty(live, dtype=np.int64)
    j = 0
    for i in range(keys.shape[0]):
        if keys[i] != hashtab.EMPTY and vals[i, 0] >= phase_start and now - vals[i, 0] < window:
            k[j], v[j] = keys[i], vals[i, 0]
            j += 1
        keys[i] = hashtab.EMPTY
    for j in range(live):
        vals[hashtab.insert(keys, vals, k[j]), 0] = v[j]
    return live


@nb.njit(cache=True)
def _mshr_record_all(keys, vals, count, lines, primaries):
    """_mshr_record for many lines (the table has room); returns the entries."""
    for j in range(lines.shape[0]):
        e = hashtab.find(keys, lines[j])
        if e < 0:
            e = hashtab.insert(keys, vals, lines[j])
            count += 1
        vals[e, 0] = primaries[j]
    return count


@nb.njit(inline="always")
def _mshr_record(keys, vals, count, newest, line, seq):
    """Note that ``line``, whose primary miss was access ``seq``, left the cache (or never
    entered it) while that fill is in flight. Returns the table, its entries and the newest
    primary in it."""
    e = hashtab.find(keys, line)
    if e < 0:  # room for it: the kernel's loop made sure
        e = hashtab.insert(keys, vals, line)
        count += 1
    vals[e, 0] = seq
    return count, max(newest, seq)


@nb.njit(inline="always")
def _run(lines, cls, tokens, writes, labels, out, reads, runs, tag, stamp, dirty, owner, nxt, prv, tables, free, ctr,
         read_lengths, by_request, n_sets, n_ways, n_res, whole, classes, mshr, token_records, hooks):
    # token_records: the policy keeps token records (a compile-time constant, as are its hooks).
    # (steps, phases, requests) and the policy's tables travel as tuples: CPython passes calls of
    # more than 30 arguments as *args, which numba cannot inline
    steps, phases, requests = labels
    records, g, tkeys, tvals, hkeys, hvals, layer_ends = tables
    # each class's ways and insertion (harness.cache.partitions.ClassMap), and the persisting lines
    region, mode, persist_threshold, persist_cap_a, persisting = classes
    persist_cap = persist_cap_a[0]
    # MSHR merging (module docstring): lines that left the cache with their fill in flight, and
    # each way's line's primary miss
    mkeys, mvals, fill_seq = mshr
    window = ctr[C_WINDOW]
    merging = window > 1
    cur_phase, phase_start, mcount, mnewest = ctr[C_PHASE], ctr[C_PHASE_START], ctr[C_MCOUNT], ctr[C_MNEWEST]
    token_lines = ctr[C_TOKEN_LINES]
    stop = lines.shape[0]
    low, bip_fills = ctr[C_LOW], ctr[C_BIP]
    # Counters live in locals inside the loop (array elements would be reloaded on every use).
    now = ctr[C_NOW]
    evictions, writebacks, invalidations, bypasses = ctr[C_EVICT], ctr[C_WB], ctr[C_TOKEN_INVAL], ctr[C_BYPASS]
    read_open, read_tok, read_lines, read_hits = ctr[C_TR_OPEN], ctr[C_TR_TOKEN], ctr[C_TR_LINES], ctr[C_TR_HITS]
    nfree = ctr[C_NFREE]
    write_tok = ctr[C_WRITE_TOK]
    kv_seen = ctr[C_KV_SEEN]
    history = ctr[C_HISTORY]
    nreads = 0
    nruns = 0
    run_phase = phases[0] if phases.shape[0] else 0
    run_start, run_hits, run_wb, run_merged = 0, 0, writebacks, 0
    pow2 = (n_sets & (n_sets - 1)) == 0
    reserved_lines = ctr[C_SETS] * n_res  # the simulated sets' reserved lines (admit's window)
    set_mask = n_sets - 1
    for i in range(lines.shape[0]):
        # room in the MSHR table for what this access may record: its own line, or the victim
        # and the victim token's other lines (at most token_lines); else purge, else stop
        # (a purge leaves it at most a quarter full, so purges cost O(1) per record)
        if merging and 4 * (mcount + token_lines + 2) > 3 * mkeys.shape[0]:
            mcount = _mshr_purge(mkeys, mvals, now + 1, phase_start if phases[i] == cur_phase else now + 1, window)
            if 4 * (mcount + token_lines + 2) > mkeys.shape[0]:
                stop = i
                break
        line = lines[i]
        c = cls[i]
        if phases[i] != run_phase:
            runs[nruns, 0], runs[nruns, 1] = run_phase, i - run_start
            runs[nruns, 2], runs[nruns, 3], runs[nruns, 4] = run_hits, writebacks - run_wb, steps[run_start]
            runs[nruns, 5] = run_merged
            nruns += 1
            run_phase, run_start, run_hits, run_wb, run_merged = phases[i], i, 0, writebacks, 0
        is_kv = c <= KV_WRITE
        if pow2:
            base = (line & set_mask) * n_ways
        else:
            base = (line % n_sets) * n_ways
        lo, hi = region[c, 0], region[c, 1]
        now += 1
        if phases[i] != cur_phase:  # a new phase: the previous one's fills have all returned
            cur_phase, phase_start = phases[i], now
        # The region's ways first: look for the line and track the region's LRU way (free ways
        # have negative stamps, lowest way lowest); then the other ways for the line only.
        way = -1
        lru = lo
        lru_t = stamp[base + lo] if lo < hi else np.int64(0)
        for w in range(lo, hi):
            if tag[base + w] == line:
                way = w
                break
            t = stamp[base + w]
            if t < lru_t:
                lru_t = t
                lru = w
        if way < 0:
            for w in range(0, lo):
                if tag[base + w] == line:
                    way = w
                    break
        if way < 0:
            for w in range(hi, n_ways):
                if tag[base + w] == line:
                    way = w
                    break
        hit = way >= 0
        rq = requests[i]
        by_request[rq, 0, c] += 1
        if c == KV:
            kv_seen += 1

        tok = np.int64(-1)
        if is_kv:
            tok = tokens[i]
            if tok < 0:
                tok = -2 - line
        if c == KV:
            if not (read_open and read_tok == tok):
                if read_open:
                    _close_read(read_lines, read_hits, read_lengths, ctr)
                read_open, read_tok, read_lines, read_hits = 1, tok, 0, 0
                reads[nreads] = tok
                nreads += 1
            read_lines += 1
            if hit:
                read_hits += 1
            if read_lines == 1:
                history += hooks.on_read(tok, steps[i], records, g, tkeys, tvals, hkeys, hvals, layer_ends, now,
                                          kv_seen, reserved_lines)
        elif read_open:
            _close_read(read_lines, read_hits, read_lengths, ctr)
            read_open = 0
        if c == KV_WRITE:  # a write references its token too: it can bring it into a token cache
            if tok != write_tok:
                reads[nreads] = tok
                nreads += 1
                write_tok = tok
        else:
            write_tok = -1

        if hit:
            out[i] = 1
            by_request[rq, 1, c] += 1
            run_hits += 1
            slot = base + way
            stamp[slot] = now + STAMP_BASE
            if writes[i]:
                dirty[slot] = 1
            if token_records and is_kv:
                rec = -1
                if way < n_res:  # the line's own record
                    rec = owner[slot]
                else:  # a kv line in a shared way: refresh its token if it has reserved lines
                    e = hashtab.find(tkeys, tok)
                    if e >= 0:
                        rec = tvals[e, 0]
                if rec >= 0:
                    records[rec, F_TIME] = now
                    hooks.touch(rec, records, g, now, c == KV and read_lines == 1)
            continue

        out[i] = 0
        prim = now  # the primary miss whose fill serves this access: this one, unless it merges
        if merging and mnewest >= phase_start and now - mnewest < window:  # the table may hold it
            e = hashtab.find(mkeys, line)
            if e >= 0 and mvals[e, 0] >= phase_start and now - mvals[e, 0] < window:
                prim = mvals[e, 0]  # merged: one more target of that fill's MSHR, no memory read
                by_request[rq, 2, c] += 1
                run_merged += 1
        if lo == hi:
            bypasses += 1
            if merging and prim == now:  # never cached: its fill stays in flight for the window
                mcount, mnewest = _mshr_record(mkeys, mvals, mcount, mnewest, line, now)
            continue
        tracked = token_records and is_kv and n_res > 0
        m = mode[c]
        persists = m == PERSISTING and _mix32(line) < persist_threshold[c]
        if persist_cap > 0:  # only a persisting line evicts one, and persisting lines take at most the cap
            lru, lru_t = _persisting_victim(base, lo, hi, stamp, persisting, persists, persist_cap)
            if lru < 0:
                bypasses += 1  # every way holds a persisting line this fill may not evict
                if merging and prim == now:
                    mcount, mnewest = _mshr_record(mkeys, mvals, mcount, mnewest, line, now)
                continue
        victim = lru
        if lru_t >= 0:  # no free way: evict
            if tracked:  # the smallest token key (token-lru: the least recent); ties: lowest way
                best = records[owner[base + lo], F_KEY]
                victim = lo
                for w in range(lo + 1, hi):
                    t = records[owner[base + w], F_KEY]
                    if t < best:
                        best = t
                        victim = w
                hooks.before_eviction(best, g)
                if hooks.refuse(tok, owner[base + victim], best, records, hkeys, hvals, kv_seen, reserved_lines):
                    bypasses += 1  # not admitted
                    if merging and prim == now:
                        mcount, mnewest = _mshr_record(mkeys, mvals, mcount, mnewest, line, now)
                    continue
            vslot = base + victim
            evictions += 1
            # (its stamp, already read, bounds its fill: a line last accessed before the window filled before it)
            if merging and tag[vslot] >= 0 and (stamp[vslot] < STAMP_BASE or (
                    stamp[vslot] >= STAMP_BASE + phase_start and now + STAMP_BASE - stamp[vslot] < window)) \
                    and fill_seq[vslot] >= phase_start and now - fill_seq[vslot] < window:
                mcount, mnewest = _mshr_record(mkeys, mvals, mcount, mnewest, tag[vslot],
                                                             fill_seq[vslot])
            if tracked:
                rec = owner[vslot]
                if whole:
                    other = records[rec, F_HEAD]
                    while other >= 0:
                        if other != vslot:
                            if merging and (stamp[other] < STAMP_BASE or (
                                    stamp[other] >= STAMP_BASE + phase_start
                                    and now + STAMP_BASE - stamp[other] < window)) \
                                    and fill_seq[other] >= phase_start and now - fill_seq[other] < window:
                                mcount, mnewest = _mshr_record(
                                    mkeys, mvals, mcount, mnewest, tag[other], fill_seq[other])
                            if dirty[other]:
                                writebacks += 1
                                dirty[other] = 0
                            tag[other] = -1
                            stamp[other] = -(n_ways - other % n_ways)
                            invalidations += 1
                        other = nxt[other]
                    nfree = _release(rec, records, free, nfree, tkeys, tvals, layer_ends, hooks)
                else:
                    records[rec, F_HEAD], _ = dlist.unlink(vslot, prv, nxt, records[rec, F_HEAD], -1)
                    records[rec, F_COUNT] -= 1
                    if records[rec, F_COUNT] == 0:
                        nfree = _release(rec, records, free, nfree, tkeys, tvals, layer_ends, hooks)
            if dirty[vslot]:
                writebacks += 1
        vslot = base + victim
        tag[vslot] = line
        if merging:
            fill_seq[vslot] = prim
        next_victim = m == STREAMING or (m == PERSISTING and not persists)
        if m == BIP:
            next_victim = bip_fills % BIMODAL_EVERY != BIMODAL_EVERY - 1
            bip_fills += 1
        if next_victim:
            low += 1
            stamp[vslot] = STAMP_BASE - low
        else:
            stamp[vslot] = now + STAMP_BASE
        if persist_cap > 0:
            persisting[vslot] = persists
        dirty[vslot] = writes[i]
        if tracked:
            e = hashtab.find(tkeys, tok)
            if e < 0:
                nfree -= 1
                rec = free[nfree]
                e = hashtab.insert(tkeys, tvals, tok)
                tvals[e, 0] = rec
                records[rec, F_HEAD] = -1
                records[rec, F_COUNT] = 0
                records[rec, F_TOKEN] = tok
                hooks.insert(rec, tok, records, g, hkeys, hvals, layer_ends, now)
            else:
                hooks.touch(tvals[e, 0], records, g, now, c == KV and read_lines == 1)
            rec = tvals[e, 0]
            head = records[rec, F_HEAD]  # push the line on its token's list (dlist.push_head cost 15%)
            nxt[vslot] = head
            prv[vslot] = -1
            if head >= 0:
                prv[head] = vslot
            records[rec, F_HEAD] = vslot
            records[rec, F_COUNT] += 1
            token_lines = max(token_lines, records[rec, F_COUNT])
            records[rec, F_TIME] = now
            owner[vslot] = rec
    if stop:
        runs[nruns, 0], runs[nruns, 1] = run_phase, stop - run_start
        runs[nruns, 2], runs[nruns, 3], runs[nruns, 4] = run_hits, writebacks - run_wb, steps[run_start]
        runs[nruns, 5] = run_merged
        nruns += 1
    ctr[C_NOW] = now
    ctr[C_PHASE], ctr[C_PHASE_START], ctr[C_MCOUNT], ctr[C_MNEWEST] = cur_phase, phase_start, mcount, mnewest
    ctr[C_TOKEN_LINES] = token_lines
    ctr[C_EVICT], ctr[C_WB], ctr[C_TOKEN_INVAL], ctr[C_BYPASS] = evictions, writebacks, invalidations, bypasses
    ctr[C_TR_OPEN], ctr[C_TR_TOKEN], ctr[C_TR_LINES], ctr[C_TR_HITS] = read_open, read_tok, read_lines, read_hits
    ctr[C_NFREE] = nfree
    ctr[C_WRITE_TOK] = write_tok
    ctr[C_KV_SEEN] = kv_seen
    ctr[C_HISTORY] = history
    ctr[C_LOW], ctr[C_BIP] = low, bip_fills
    return nreads, nruns, stop


# One compiled kernel per policy: the policy's hooks (a ReservedWays, a module object) are a
# closure constant of its kernel, so numba inlines them and the kernel holds only its own policy's
# code (with every policy's code in one kernel, token-lru ran 1.6x slower). Each kernel is
# compiled on first use and cached on disk: the cache tells the kernels apart by their closure,
# which pickles as the policy's name and the hash of its hooks' source (see ReservedWays), where
# a closure over the hook functions themselves would pickle a random id of each and never hit.
def _kernel(hooks: ReservedWays):
    token_records = hooks.tokens

    @nb.njit(nogil=True, cache=True)
    def simulate(lines, cls, tokens, writes, labels, out, reads, runs, tag, stamp, dirty, owner, nxt, prv,
                 tables, free, ctr, read_lengths, by_request, n_sets, n_ways, n_res, whole, classes, mshr):
        return _run(lines, cls, tokens, writes, labels, out, reads, runs, tag, stamp, dirty, owner, nxt, prv,
                    tables, free, ctr, read_lengths, by_request, n_sets, n_ways, n_res, whole, classes, mshr,
                    token_records, hooks)
    return simulate


_KERNELS = {name: _kernel(POLICIES[name].reserved_ways) for name in RESERVED_POLICIES}
