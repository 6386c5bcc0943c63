"""What an LLC configuration's class knobs (``harness.cache.partitions``) are, in words; whether a
platform's documented cache controls offer them; and the hardware state they add to the LLC.

**Allowed** (:func:`allowed`): nothing beyond the platform's documented controls
(``LLCConfig.beyond``, ``harness.cache.platforms.CacheKnobs``) and no KV reservation the platform
cannot make: a KV reservation is a way mask only where the platform has way reservation (Intel
RDT's cache allocation) and only under line LRU, the replacement those ways already run; the token
policies in the reserved ways (``token-lru``, ``streak``, ...) are this project's proposal, which
no platform ships. (Under Intel's cache allocation a class of service is a thread's, not an
address range's: a class-aware reservation there assumes the decode issues each class's loads
from threads of its own class.)

**State** (:func:`state`): the bits the knobs add to an LLC that already keeps line LRU
(``log2(ways)`` bits of recency per line, which a way-partitioned LRU keeps as well):

- a way reservation (``--reserve index=..``, ``weights=..``, ``kv=..:lru``): no bit per line. The
  way mask applies when a line is filled; a lookup searches every way. Per class of service a
  ``ways``-bit capacity mask, and the class of the requester (Intel 64 and IA-32 Architectures
  Software Developer's Manual, vol. 3B, "Intel Resource Director Technology (Intel RDT)
  Allocation Features", Cache Allocation Technology: the IA32_L3_QOS_MASK_n registers and the
  class field of IA32_PQR_ASSOC, per logical processor; for a class by address range, as this
  model assumes, a base and a limit per class);
- a token policy in the KV ways: its own state (``Policy.hardware_cost``, at this LLC's sets and
  reserved ways): a record index per reserved line and a record per resident token;
- ``streaming`` (CUDA ``cudaAccessPropertyStreaming``, PTX ``L2::evict_first``): no bit per line;
  a fill is placed at the LRU position of its set's recency order;
- ``bip`` (Qureshi et al., ISCA 2007): no bit per line; a 5-bit fill counter per class (every
  32nd fill at the MRU position: ``harness.cache.policies.bip.BIMODAL_EVERY``);
- ``persisting:RATIO`` under a set-aside (CUDA's L2 persistence: ``cudaLimitPersistingL2CacheSize``
  and a stream's ``cudaAccessPolicyWindow`` of base, size, ``hitRatio`` and the hit and miss
  properties; CUDA Programming Guide, "L2 Cache Control"; the driver API's
  ``CUaccessPolicyWindow``: "hitRatio specifies percentage of lines assigned hitProp, rest are
  assigned missProp", a share of lines, as this model's address hash picks): one bit per line, the
  line's persisting flag, since only a persisting fill may evict a persisting line and a set may
  hold at most the set-aside's share of them (NVIDIA does not document how its L2 keeps this; one
  flag per line is the least state that tells the lines apart, an assumption), and per class the
  window's registers and a hash of the line address compared with the ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.cache.llc import LLCConfig
from harness.cache.partitions import PERSISTING, parse_hint
from harness.cache.policies import POLICIES
from harness.cache.policies.base import HardwareReference
from harness.cache.policies.bip import BIMODAL_EVERY
from harness.core.units import format_size

NAMES = {"kv": "the KV", "index": "the indexer keys", "weights": "the weights"}


def allowed(cfg: LLCConfig, platform) -> bool:
    """Does ``platform`` (a ``Platform``) document controls that make this configuration? (See
    the module docstring.)"""
    if cfg.beyond(platform):
        return False
    return not cfg.reserve_ways or (platform.knobs.way_reservation and cfg.policy == "lru")


def family(cfg: LLCConfig) -> str:
    """``unmanaged`` (no knob), ``kv-only`` (the KV reservation alone, the seed's proposal) or
    ``class-aware`` (any other knob)."""
    if cfg.class_aware:
        return "class-aware"
    return "kv-only" if cfg.reserve_ways else "unmanaged"


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def describe(cfg: LLCConfig) -> str:
    """The configuration's knobs in words, e.g. "stream the weights (evict-first); set aside
    37.5 MiB and mark the indexer keys persisting at hit ratio 0.12"."""
    parts = []
    if cfg.reserve_ways:
        parts.append(f"reserve {cfg.reserve_ways} of {cfg.ways} ways for the KV under {cfg.policy}")
    hints = cfg.hints
    if cfg.reserve_index:
        parts.append(f"reserve {cfg.reserve_index} ways for the indexer keys"
                     + (" (bimodal insertion)" if hints["index"] == "bip" else ""))
    if cfg.reserve_weights:
        parts.append(f"confine the weights to {cfg.reserve_weights} way{'s' if cfg.reserve_weights > 1 else ''}")
    persisting = []
    for name in ("weights", "index", "kv"):
        mode, ratio = parse_hint(hints[name])
        kind = hints[name].split(":")[0]
        if mode == PERSISTING:
            persisting.append(f"{NAMES[name]} persisting at hit ratio {ratio:g}")
        elif kind == "streaming":
            parts.append(f"stream {NAMES[name]} (evict-first)")
        elif kind == "bip" and not (name == "index" and cfg.reserve_index):
            parts.append(f"insert {NAMES[name]} bimodally (BIP)")
    if persisting:
        parts.append(f"set aside {_mib(cfg.set_aside)} and mark " + " and ".join(persisting))
    return "; ".join(parts) or "leave the LLC unmanaged"


@dataclass(frozen=True)
class KnobState:
    """Hardware state the knobs add: ``line_bits`` on every line of the LLC, ``reserved_line_bits``
    on each reserved KV line and ``token_bits`` per resident token record (a token policy),
    ``register_bits`` in registers (masks, windows, counters); ``text`` says what they are."""

    line_bits: int
    reserved_line_bits: int
    token_bits: int
    register_bits: int
    text: str
    kib: float  # the per-line and per-record state of this LLC, in KiB

    def per_line(self) -> str:
        """Bits per line in a few words (the report's column)."""
        parts = []
        if self.line_bits:
            parts.append(f"{self.line_bits} b/line")
        if self.reserved_line_bits:
            parts.append(f"{self.reserved_line_bits} b/reserved line + {self.token_bits} b/token")
        return " + ".join(parts) or "0 b/line"


def state(cfg: LLCConfig) -> KnobState:
    """The state ``cfg``'s knobs add to a line-LRU LLC (see the module docstring)."""
    texts, registers = [], 0
    masks = [name for name, ways in cfg.reserved.items() if ways]
    if masks:
        registers += (len(masks) + 1) * cfg.ways  # a mask per reserving class and one for the rest
        texts.append(f"way masks: {len(masks) + 1} x {cfg.ways} bits, none per line")
    reserved_line_bits = token_bits = 0
    records = 0
    if cfg.reserve_ways and cfg.policy != "lru":
        ref = HardwareReference(sets=cfg.sets, reserved_ways=cfg.reserve_ways)
        cost = POLICIES[cfg.policy].hardware_cost(ref)
        reserved_line_bits, token_bits = cost.line_bits, cost.token_bits
        records = ref.record_slots
        registers += cost.global_bits
        texts.append(f"{cfg.policy} in the KV ways: {cost.summary()}")
    modes = {name: parse_hint(h)[0] for name, h in cfg.hints.items()}
    line_bits = 0
    if any(m == PERSISTING for m in modes.values()):
        line_bits = 1
        windows = sum(m == PERSISTING for m in modes.values())
        registers += windows * (2 * 64 + 32)  # a window's base and size, and its ratio's threshold
        texts.append(f"persisting flag: 1 bit per line; {windows} access-policy window(s)")
    bips = sum(h == "bip" for h in cfg.hints.values())
    if bips:
        registers += bips * int(math.log2(BIMODAL_EVERY))
        texts.append(f"BIP: a {int(math.log2(BIMODAL_EVERY))}-bit fill counter per class, none per line")
    if any(h == "streaming" for h in cfg.hints.values()):
        texts.append("evict-first: fills at the LRU position, no state")
    lines = cfg.sets * cfg.ways
    kib = (lines * line_bits + cfg.sets * cfg.reserve_ways * reserved_line_bits + records * token_bits) / 8 / 1024
    return KnobState(line_bits, reserved_line_bits, token_bits, registers, "; ".join(texts) or "none", kib)


def set_aside_text(cfg: LLCConfig) -> str:
    return format_size(cfg.set_aside) if cfg.set_aside else "none"
