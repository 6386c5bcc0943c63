"""Parts of dsa-llc's gem5 systems, shared by the config scripts of this folder (they run inside
gem5, which puts this folder on the import path): a shared LLC with the KV way reservation and
its token policies, a multi-channel DRAM memory, and the system that ties them together.

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


def fail(message):
    """Stop the config with a one-line error and exit status 1 (gem5 aborts on a SystemExit
    that carries a message instead of a status)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


class ReservedLLC:
    """Optional private caches per generator, then a shared LLC whose ways [0, R) hold only KV
    lines (addresses in the KV region) and [R, W) only the rest, with the reserved ways' policy
    (TokenPolicyTags) and LRU elsewhere. Without a reservation every way is LRU, as in the
    built-in model. No prefetcher (gem5's Cache has none by default): this is a replacement
    study."""

    def __init__(self, size, assoc, reserve_ways=0, policy="lru", whole_token_eviction=False,
                 kv_region=(0, 0), token_stride=64, tokens_per_layer=0, tag_latency=10,
                 data_latency=10, response_latency=1, mshrs=32, tgts_per_mshr=16, write_buffers=64,
                 l1_size=None, l1_assoc=8):
        from m5.objects import TokenPolicyTags

        if reserve_ways >= assoc:
            fail("the gem5 backend needs at least one shared way (reserve_ways < assoc)")
        if policy not in RESERVED_POLICIES:
            fail(f"unknown reserved-way policy {policy!r}")
        if reserve_ways == 0:
            policy, whole_token_eviction = "lru", False
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
            tokens_per_layer=tokens_per_layer)
        if reserve_ways > 0:
            from m5.objects import KvPartitionManager

            self.llc.partitioning_manager = KvPartitionManager(
                kv_start=kv_region[0], kv_end=kv_region[1], kv_partition_id=1,
                partitioning_policies=[WayPartitioningPolicy(allocations=[
                    WayPolicyAllocation(partition_id=1, ways=list(range(reserve_ways))),
                    WayPolicyAllocation(partition_id=0, ways=list(range(reserve_ways, assoc))),
                ])])
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

