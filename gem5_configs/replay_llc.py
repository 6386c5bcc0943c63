"""Replay dsa-llc packet traces through a shared LLC with an optional KV reservation into DRAM.

Runs inside gem5 (a NULL-ISA build with classic caches is enough):

    gem5.opt -d OUT gem5_configs/replay_llc.py --trace kv.pb.gz --trace other.pb.gz \\
        --llc-size 32MiB --llc-assoc 16 --reserve-ways 4 --policy token-lru \\
        --kv-start 0 --kv-end 1048576 --token-stride 704 --mem-size 4GiB

The system is composed from parts, in the manner of gem5's standard library: a processor
(``TraceReplayer``: one TrafficGen per trace, TRACE mode), a cache hierarchy (``ReservedLLC``:
optional private caches per generator, then one shared LLC whose ways [0, R) hold only KV lines
and [R, W) only the rest) and a memory (``DRAMMemory``). The reservation uses gem5's
WayPartitioningPolicy; dsa-llc's extension supplies the partition ids (KvPartitionManager, by
address), the token-LRU policy (TokenLRURP) and whole-token eviction (TokenTags). Stride
prefetchers stay off: this is a replacement study.
"""

import argparse
import os

import m5
from m5.objects import (
    LRURP,
    AddrRange,
    BaseSetAssoc,
    Cache,
    DDR4_2400_8x8,
    DDR5_4400_4x8,
    HBM_2000_4H_1x64,
    LPDDR5_5500_1x16_BG_BL32,
    MemCtrl,
    Root,
    SrcClockDomain,
    System,
    SystemXBar,
    TrafficGen,
    VoltageDomain,
    WayPartitioningPolicy,
    WayPolicyAllocation,
)

DRAIN = 10**8  # ticks (100 us) of idling after a trace ends
EXIT_REPEAT = 10**15  # ticks (1000 s)
DRAMS = {"DDR4_2400_8x8": DDR4_2400_8x8, "DDR5_4400_4x8": DDR5_4400_4x8,
         "HBM_2000_4H_1x64": HBM_2000_4H_1x64, "LPDDR5_5500_1x16_BG_BL32": LPDDR5_5500_1x16_BG_BL32}


class TraceReplayer:
    """One TrafficGen per packet trace; each replays its trace once, then exits."""

    def __init__(self, traces, outdir, progress_check="10s"):
        self.generators = []
        for i, trace in enumerate(traces):
            cfg = os.path.join(outdir, f"tgen{i}.cfg")
            with open(cfg, "w") as f:
                # Idle a while after the trace so the last responses (and the fills, evictions
                # and writebacks they cause) land before the generator exits. The EXIT state
                # re-enters itself after its duration and exits again: make that far beyond any
                # replay (a zero duration would loop without bound).
                f.write(f"STATE 0 0 TRACE {os.path.abspath(trace)} 0\nSTATE 1 {DRAIN} IDLE\n"
                        f"STATE 2 {EXIT_REPEAT} EXIT\nINIT 0\nTRANSITION 0 1 1\nTRANSITION 1 2 1\n"
                        "TRANSITION 2 2 1\n")
            self.generators.append(TrafficGen(config_file=cfg, progress_check=progress_check))

    def attach(self, system):
        system.gens = self.generators


class ReservedLLC:
    """Optional private caches per generator, then a shared LLC with a KV way reservation."""

    def __init__(self, size, assoc, replacement_policy, reserve_ways=0, kv_region=None,
                 token_stride=None, whole_token_eviction=False, tag_latency=10, data_latency=10,
                 response_latency=1, mshrs=32, tgts_per_mshr=16, write_buffers=64, l1_size=None,
                 l1_assoc=8):
        if reserve_ways >= assoc:
            raise SystemExit("error: the gem5 backend needs at least one shared way (reserve_ways < assoc)")
        if whole_token_eviction:
            # one allocation may write back every dirty line of a token at once
            write_buffers = max(write_buffers, 2 * token_stride // 64)
        self.llc = Cache(size=size, assoc=assoc, tag_latency=tag_latency, data_latency=data_latency,
                         response_latency=response_latency, mshrs=mshrs, tgts_per_mshr=tgts_per_mshr,
                         write_buffers=write_buffers, replacement_policy=replacement_policy)
        if whole_token_eviction:
            from m5.objects import TokenTags

            self.llc.tags = TokenTags(kv_start=kv_region[0], kv_end=kv_region[1], token_stride=token_stride)
        else:
            self.llc.tags = BaseSetAssoc()
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
        system.llc = self.llc
        system.llc_xbar = SystemXBar()
        if self.l1_size:
            system.l1s = [Cache(size=self.l1_size, assoc=self.l1_assoc, tag_latency=2, data_latency=2,
                                response_latency=1, mshrs=16, tgts_per_mshr=8, replacement_policy=LRURP())
                          for _ in generators]
            for gen, l1 in zip(generators, system.l1s):
                gen.port = l1.cpu_side
                l1.mem_side = system.llc_xbar.cpu_side_ports
        else:
            for gen in generators:
                gen.port = system.llc_xbar.cpu_side_ports
        system.llc.cpu_side = system.llc_xbar.mem_side_ports
        system.llc.mem_side = membus.cpu_side_ports


class DRAMMemory:
    def __init__(self, dram, size):
        self.range = AddrRange(size)
        self.ctrl = MemCtrl(dram=DRAMS[dram](range=self.range))

    def attach(self, system, membus):
        system.mem_ranges = [self.range]
        system.mem_ctrl = self.ctrl
        self.ctrl.port = membus.mem_side_ports


def build_system(processor, caches, memory, clock):
    system = System(mem_mode="timing")
    system.clk_domain = SrcClockDomain(clock=clock, voltage_domain=VoltageDomain())
    system.membus = SystemXBar()
    system.system_port = system.membus.cpu_side_ports
    processor.attach(system)
    caches.attach(system, processor.generators, system.membus)
    memory.attach(system, system.membus)
    return system


def parse_args():
    p = argparse.ArgumentParser(description="dsa-llc: replay packet traces through an LLC")
    p.add_argument("--trace", action="append", required=True, help="packet trace (repeat for more generators)")
    p.add_argument("--llc-size", required=True)
    p.add_argument("--llc-assoc", type=int, required=True)
    p.add_argument("--reserve-ways", type=int, default=0)
    p.add_argument("--policy", choices=["lru", "token-lru"], default="lru")
    p.add_argument("--whole-token-eviction", action="store_true")
    p.add_argument("--kv-start", type=int, default=0)
    p.add_argument("--kv-end", type=int, default=0)
    p.add_argument("--token-stride", type=int, default=64)
    p.add_argument("--tag-latency", type=int, default=10)
    p.add_argument("--data-latency", type=int, default=10)
    p.add_argument("--response-latency", type=int, default=1)
    p.add_argument("--mshrs", type=int, default=32)
    p.add_argument("--tgts-per-mshr", type=int, default=16)
    p.add_argument("--write-buffers", type=int, default=64)
    p.add_argument("--l1-size", default=None, help="private cache per generator (default: none)")
    p.add_argument("--mem-size", default="4GiB")
    p.add_argument("--dram", choices=sorted(DRAMS), default="DDR4_2400_8x8")
    p.add_argument("--clock", default="2GHz")
    p.add_argument("--progress-check", default="10s")
    return p.parse_args()


def main():
    a = parse_args()
    kv_region = (a.kv_start, a.kv_end)
    if a.policy == "token-lru":
        from m5.objects import TokenLRURP

        policy = TokenLRURP(kv_start=a.kv_start, kv_end=a.kv_end, token_stride=a.token_stride)
    else:
        policy = LRURP()
    processor = TraceReplayer(a.trace, m5.options.outdir, a.progress_check)
    caches = ReservedLLC(a.llc_size, a.llc_assoc, policy, a.reserve_ways, kv_region, a.token_stride,
                         a.whole_token_eviction, a.tag_latency, a.data_latency, a.response_latency,
                         a.mshrs, a.tgts_per_mshr, a.write_buffers, a.l1_size)
    system = build_system(processor, caches, DRAMMemory(a.dram, a.mem_size), a.clock)
    root = Root(full_system=False, system=system)  # noqa: F841 (gem5 finds it)
    m5.instantiate()
    # each generator that finishes ends m5.simulate(): run until every one has
    pending = {g.path() for g in processor.generators}
    while pending:
        cause = m5.simulate().getCause()
        done = [p for p in pending if cause.startswith(p + " ")]
        if "encountered the exit state" not in cause or not done:
            raise SystemExit(f"error: simulation stopped early: {cause.strip()}")
        pending.difference_update(done)
    print(f"dsa-llc: all {len(processor.generators)} generators finished @ tick {m5.curTick()}")


if __name__ == "__m5_main__" or __name__ == "__main__":
    main()
