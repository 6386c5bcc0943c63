"""Parts of dsa-llc's gem5 systems, shared by the config scripts of this folder (they run inside
gem5, which puts this folder on the import path): a shared LLC with way reservations per
traffic class (KV with its token policies, indexer keys, weights) and insertion hints, a
multi-channel DRAM memory, and the system that ties them together.

A requestor side (TrafficGens, DsaStepGen) has ``generators`` and ``attach(system)``.
"""

import sys

import m5.objects
from m5.objects import (
    LRURP,
    AddrRange,
    Cache,
    DRAMInterface,
    MemCtrl,
    SrcClockDomain,
    System,
    SystemXBar,
    VoltageDomain,
    WayPartitioningPolicy,
    WayPolicyAllocation,
)
from m5.params import NULL

# Every DRAM interface this gem5 offers (v24.0: DDR3/4/5, LPDDR2/3/5, GDDR5, HBM, HMC, WideIO)
DRAMS = {name: cls for name, cls in vars(m5.objects).items()
         if isinstance(cls, type) and issubclass(cls, DRAMInterface) and cls is not DRAMInterface}
RESERVED_POLICIES = ("lru", "token-lru", "streak")
# Insertion hints of a class's fills (harness/cache/partitions.py HINT_KINDS; DsaLlc.py LineHint)
HINTS = ("normal", "streaming", "bip", "persisting")
CLASSES = ("kv", "index", "weights")  # what a reservation or a hint names, in way order


def fail(message):
    """Stop the config with a one-line error and exit status 1 (gem5 aborts on a SystemExit
    that carries a message instead of a status)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def add_class_arguments(p):
    """The class-aware knobs' options (harness/cache/partitions.py), the same in every config:
    ways reserved for the indexer keys and the weights (after the KV ways), each class's hint
    with its persisting threshold (a line persists when its 32-bit hash is below it), the
    persisting lines a set may hold, and the address regions of the classes."""
    p.add_argument("--reserve-index", type=int, default=0, help="ways reserved for indexer keys")
    p.add_argument("--reserve-weights", type=int, default=0, help="ways reserved for weights")
    for name in CLASSES:
        p.add_argument(f"--hint-{name}", choices=HINTS, default="normal", help=f"insertion hint of {name} fills")
        p.add_argument(f"--persist-threshold-{name}", type=int, default=0,
                       help=f"persisting: a {name} line persists when its hash is below this (of 2**32)")
    p.add_argument("--persist-cap", type=int, default=0, help="persisting lines per set, at most")
    for name in ("index", "weights"):
        p.add_argument(f"--{name}-start", type=int, default=0, help=f"first byte of the {name} region")
        p.add_argument(f"--{name}-end", type=int, default=0, help=f"one past the {name} region")


def class_knobs(a):
    """ReservedLLC's class-aware keyword arguments from add_class_arguments' options."""
    return {"reserve_index": a.reserve_index, "reserve_weights": a.reserve_weights,
            "hints": {name: getattr(a, f"hint_{name}") for name in CLASSES},
            "persist_thresholds": {name: getattr(a, f"persist_threshold_{name}") for name in CLASSES},
            "persist_cap": a.persist_cap, "index_region": (a.index_start, a.index_end),
            "weights_region": (a.weights_start, a.weights_end)}


class ReservedLLC:
    """Optional private caches per generator, then a shared LLC whose ways are reserved per
    traffic class, laid out from way 0: [0, R) for KV lines (addresses in the KV region) under
    the reserved ways' policy (TokenPolicyTags), then the indexer keys' ways, then the weights',
    and the rest shared by every class without ways of its own (LRU). Without a reservation
    every way is LRU, as in the built-in model. A class's insertion hint (``hints``) makes the
    tags place its fills as the built-in model does (next victim, bimodal, persisting under
    ``persist_cap``). No prefetcher (gem5's Cache has none by default): this is a replacement
    study."""

    def __init__(self, size, assoc, reserve_ways=0, policy="lru", whole_token_eviction=False,
                 kv_region=(0, 0), token_stride=64, tokens_per_layer=0, tag_latency=10,
                 data_latency=10, response_latency=1, mshrs=32, tgts_per_mshr=16, write_buffers=64,
                 l1_size=None, l1_assoc=8, reserve_index=0, reserve_weights=0, hints=None,
                 persist_thresholds=None, persist_cap=0, index_region=(0, 0), weights_region=(0, 0)):
        from m5.objects import TokenPolicyTags

        reserved = {"kv": reserve_ways, "index": reserve_index, "weights": reserve_weights}
        regions = {"kv": kv_region, "index": index_region, "weights": weights_region}
        hints = {name: "normal" for name in CLASSES} | (hints or {})
        thresholds = {name: 0 for name in CLASSES} | (persist_thresholds or {})
        if min(reserved.values()) < 0 or sum(reserved.values()) >= assoc:
            fail("the gem5 backend needs at least one shared way (reservations of "
                 f"{sum(reserved.values())} of {assoc} ways)")
        for name, ways in reserved.items():
            if ways and regions[name][1] <= regions[name][0]:
                fail(f"a {name} reservation needs the {name} address region")
        if policy not in RESERVED_POLICIES:
            fail(f"unknown reserved-way policy {policy!r}")
        if any(h not in HINTS for h in hints.values()):
            fail(f"hints are {', '.join(HINTS)}, got {hints}")
        if ("persisting" in hints.values()) != (persist_cap > 0):
            fail("a persisting hint needs --persist-cap > 0, and --persist-cap a persisting hint")
        if reserve_ways == 0:
            policy, whole_token_eviction = "lru", False
        if policy != "lru" and hints["kv"] != "normal":
            fail(f"KV lines in {policy} ways take no insertion hint")
        if whole_token_eviction:
            # one allocation may write back every dirty line of a token at once
            write_buffers = max(write_buffers, 2 * token_stride // 64)
        self.in_flight = mshrs + write_buffers  # most requests the LLC can have below it
        self.llc = Cache(size=size, assoc=assoc, tag_latency=tag_latency, data_latency=data_latency,
                         response_latency=response_latency, mshrs=mshrs, tgts_per_mshr=tgts_per_mshr,
                         write_buffers=write_buffers, replacement_policy=LRURP())
        self.llc.tags = TokenPolicyTags(
            kv_policy=policy.replace("-", "_"), whole_token_eviction=whole_token_eviction,
            kv_start=kv_region[0], kv_end=kv_region[1], token_stride=token_stride,
            tokens_per_layer=tokens_per_layer, index_start=index_region[0], index_end=index_region[1],
            weights_start=weights_region[0], weights_end=weights_region[1], persist_cap=persist_cap,
            **{f"{name}_hint": hints[name] for name in CLASSES},
            **{f"{name}_persist_threshold": thresholds[name] for name in CLASSES})
        if sum(reserved.values()):
            from m5.objects import KvPartitionManager

            # partition i + 1 for the i-th class with ways of its own, laid out from way 0;
            # partition 0 (every class without its own ways, and anything else) the rest
            allocations, ids, start = [], {}, 0
            for pid, name in enumerate(CLASSES, 1):
                ids[name] = pid if reserved[name] else 0
                if reserved[name]:
                    ways = list(range(start, start + reserved[name]))
                    allocations.append(WayPolicyAllocation(partition_id=pid, ways=ways))
                    start += reserved[name]
            allocations.append(WayPolicyAllocation(partition_id=0, ways=list(range(start, assoc))))
            self.llc.partitioning_manager = KvPartitionManager(
                partitioning_policies=[WayPartitioningPolicy(allocations=allocations)],
                **{f"{name}_{end}": regions[name][i] for name in CLASSES for i, end in enumerate(("start", "end"))},
                **{f"{name}_partition_id": ids[name] for name in CLASSES})
        self.l1_size, self.l1_assoc = l1_size, l1_assoc

    def attach(self, system, generators, membus):
        """One generator without private caches talks to the LLC directly; several share a
        crossbar in front of it."""
        system.llc = self.llc
        if self.l1_size:
            system.l1s = [Cache(size=self.l1_size, assoc=self.l1_assoc, tag_latency=2, data_latency=2,
                                response_latency=1, mshrs=16, tgts_per_mshr=8, replacement_policy=LRURP())
                          for _ in generators]
            requestors = [l1.mem_side for l1 in system.l1s]
            for gen, l1 in zip(generators, system.l1s):
                gen.port = l1.cpu_side
        else:
            requestors = [gen.port for gen in generators]
        if len(requestors) == 1:
            system.llc.cpu_side = requestors[0]
        else:
            system.llc_xbar = SystemXBar()
            for port in requestors:
                system.llc_xbar.cpu_side_ports = port
            system.llc.cpu_side = system.llc_xbar.mem_side_ports
        system.llc.mem_side = membus.cpu_side_ports


class DRAMMemory:
    """``channels`` memory controllers of one DRAM interface class, address-interleaved every
    ``interleave`` bytes (gem5's stdlib ChanneledMemory), each with ``extra_latency_ns`` added
    to its static frontend latency (to match a platform's unloaded memory latency)."""

    def __init__(self, dram, size, channels=1, interleave=64, extra_latency_ns=0.0):
        from gem5.components.memory.memory import ChanneledMemory

        if dram not in DRAMS:
            fail(f"unknown memory type {dram!r}; this gem5 offers: {', '.join(sorted(DRAMS))}")
        if channels < 1 or channels & (channels - 1) or interleave < 64 or interleave & (interleave - 1):
            fail("memory channels and interleave bytes must be powers of two "
                             f"(interleave at least 64), got {channels} and {interleave}")
        if extra_latency_ns < 0:
            fail(f"extra memory latency must be >= 0 ns, got {extra_latency_ns}")
        self.dram = DRAMS[dram]
        self.channels = channels
        self.memory = ChanneledMemory(self.dram, channels, interleave, size=size)
        self.range = AddrRange(size)
        self.memory.set_memory_range([self.range])
        base_ns = MemCtrl.static_frontend_latency.value * 1e9  # the class default (seconds)
        for ctrl in self.memory.get_memory_controllers():
            ctrl.static_frontend_latency = f"{base_ns + extra_latency_ns}ns"

    def peak_bandwidth(self):
        """Bytes per second of all channels at the interface's burst rate."""
        d = self.dram
        burst_bytes = d.burst_length.value * d.device_bus_width.value * d.devices_per_rank.value // 8
        return self.channels * burst_bytes / d.tBURST.value

    def attach(self, system, membus):
        system.mem_ranges = [self.range]
        system.memory = self.memory
        for _, port in self.memory.get_mem_ports():
            membus.mem_side_ports = port


def build_system(processor, caches, memory, clock, membus_clock=None):
    """The system: requestors, caches, and a coherent crossbar (the point of coherency, which
    answers the LLC's invalidations for whole-line writes itself) to the memory.
    ``membus_clock`` sets the crossbar's clock (default: ``clock``)."""
    system = System(mem_mode="timing")
    system.clk_domain = SrcClockDomain(clock=clock, voltage_domain=VoltageDomain())
    # one line per cycle per layer; no snoop filter: the LLC is the only cache on it (the filter
    # cost ~10 % of host time, for nothing to filter)
    system.membus = SystemXBar(width=64, snoop_filter=NULL,
                               max_routing_table_size=max(512, 2 * caches.in_flight))  # a sanity bound
    if membus_clock:
        system.membus.clk_domain = SrcClockDomain(clock=membus_clock,
                                                  voltage_domain=system.clk_domain.voltage_domain)
    system.system_port = system.membus.cpu_side_ports
    processor.attach(system)
    caches.attach(system, processor.generators, system.membus)
    memory.attach(system, system.membus)
    return system

