"""Replay dsa-llc packet traces through a shared LLC with an optional KV reservation into DRAM.

Runs inside gem5 (a NULL-ISA build with classic caches is enough):

    gem5.opt -d OUT gem5_configs/replay_llc.py --trace kv.pb.gz --trace other.pb.gz \\
        --llc-size 32MiB --llc-assoc 16 --reserve-ways 4 --policy token-lru \\
        --kv-start 0 --kv-end 1048576 --token-stride 704 --mem-size 4GiB

The system is composed from the parts of ``components.py``: a processor (``TraceReplayer``
here: one TrafficGen per trace, TRACE mode), a cache hierarchy (``ReservedLLC``: optional
private caches per generator, then one shared LLC whose ways [0, R) hold only KV lines and
[R, W) only the rest) and a memory (``DRAMMemory``). The reservation uses gem5's
WayPartitioningPolicy; dsa-llc's extension supplies the partition ids (KvPartitionManager, by
address) and the reserved ways' token-LRU with optional whole-token eviction
(TokenPolicyTags).
"""

import argparse
import os

import m5
from components import (
    DRAMS,
    DRAMMemory,
    ReservedLLC,
    add_class_arguments,
    build_system,
    class_knobs,
    fail,
)
from m5.objects import Root, TrafficGen

DRAIN = 10**8  # ticks (100 us) of idling after a trace ends
EXIT_REPEAT = 10**15  # ticks (1000 s)


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
    add_class_arguments(p)
    return p.parse_args()


def main():
    a = parse_args()
    processor = TraceReplayer(a.trace, m5.options.outdir, a.progress_check)
    caches = ReservedLLC(a.llc_size, a.llc_assoc, a.reserve_ways, a.policy, a.whole_token_eviction,
                         (a.kv_start, a.kv_end), a.token_stride, tag_latency=a.tag_latency,
                         data_latency=a.data_latency, response_latency=a.response_latency,
                         mshrs=a.mshrs, tgts_per_mshr=a.tgts_per_mshr, write_buffers=a.write_buffers,
                         l1_size=a.l1_size, **class_knobs(a))
    system = build_system(processor, caches, DRAMMemory(a.dram, a.mem_size), a.clock)
    root = Root(full_system=False, system=system)  # noqa: F841 (gem5 finds it)
    m5.instantiate()
    # each generator that finishes ends m5.simulate(): run until every one has
    pending = {g.path() for g in processor.generators}
    while pending:
        cause = m5.simulate().getCause()
        done = [p for p in pending if cause.startswith(p + " ")]
        if "encountered the exit state" not in cause or not done:
            fail(f"simulation stopped early: {cause.strip()}")
        pending.difference_update(done)
    print(f"dsa-llc: all {len(processor.generators)} generators finished @ tick {m5.curTick()}")


if __name__ == "__m5_main__" or __name__ == "__main__":
    main()
