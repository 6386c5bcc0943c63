"""Replay DSA decode steps closed-loop through a shared LLC with an optional KV reservation into
a multi-channel DRAM memory, and time them.

Runs inside gem5 (a NULL-ISA build with dsa-llc's extension):

    gem5.fast -d OUT gem5_configs/decode_step.py --phases steps.phases \\
        --llc-size 32MiB --llc-assoc 16 --reserve-ways 4 --policy streak \\
        --kv-start 0 --kv-end 1048576 --token-stride 704 --tokens-per-layer 4096 \\
        --max-outstanding 64 --mem-type DDR5_4400_4x8 --mem-channels 8 --mem-size 16GiB

One DsaStepGen replays the phase file (harness/gem5/phasefile.py): phases one after another,
each issuing its line requests (at most --issue-width per cycle, at most --max-outstanding in
flight) and, after its last response, waiting its compute delay. The generator talks to the
LLC's cpu side directly; the LLC (``components.ReservedLLC``: reserved ways [0, R) for KV lines
under --policy, the indexer keys' and weights' ways after them, LRU elsewhere, with each class's
--hint-CLASS insertion) sends its misses and writebacks over a coherent crossbar
(``components.build_system``; clocked fast enough to move twice the memory's peak bandwidth)
to --mem-channels controllers of one gem5 DRAM interface, interleaved every --mem-interleave
bytes. OUT gets gem5's stats.txt (statistics of the measured phases: they are reset when the
warm-up phases end) and the generator's phases.csv (every phase's start, last response and end).

--llc-hit-cycles H sets both the tag and the data latency to H cycles with tags and data read
in parallel (gem5's sequential_access=False): a hit answers after H cycles, a miss leaves for
memory after H cycles (the tag lookup), and its fill answers 1 cycle (response_latency) after
the data arrives.
"""

import argparse
import math
import os

import m5
from components import (
    DRAMS,
    RESERVED_POLICIES,
    DRAMMemory,
    ReservedLLC,
    add_class_arguments,
    build_system,
    class_knobs,
    fail,
)
from m5.objects import DsaStepGen, Root
from m5.util.convert import toFrequency

WARMUP_DONE = "dsa-llc: warm-up done"
ALL_DONE = "dsa-llc: all phases done"
LINE_BYTES = 64


class StepGenerator:
    """One DsaStepGen replaying a phase file."""

    def __init__(self, phase_file, max_outstanding, issue_width, progress_check):
        self.gen = DsaStepGen(phase_file=os.path.abspath(phase_file), max_outstanding=max_outstanding,
                              issue_width=issue_width, progress_check=progress_check,
                              warmup_exit_cause=WARMUP_DONE, done_exit_cause=ALL_DONE)
        self.generators = [self.gen]

    def attach(self, system):
        system.gen = self.gen


def parse_args():
    p = argparse.ArgumentParser(description="dsa-llc: closed-loop DSA decode steps through an LLC")
    p.add_argument("--phases", required=True, help="phase file (harness/gem5/phasefile.py)")
    p.add_argument("--llc-size", required=True)
    p.add_argument("--llc-assoc", type=int, required=True)
    p.add_argument("--reserve-ways", type=int, default=0)
    p.add_argument("--policy", choices=RESERVED_POLICIES, default="lru", help="of the reserved ways")
    p.add_argument("--whole-token-eviction", action="store_true")
    p.add_argument("--kv-start", type=int, default=0)
    p.add_argument("--kv-end", type=int, default=0)
    p.add_argument("--token-stride", type=int, default=64)
    p.add_argument("--tokens-per-layer", type=int, default=0, help="KV tokens per layer (streak)")
    p.add_argument("--llc-hit-cycles", type=int, default=20)
    p.add_argument("--llc-mshrs", type=int, default=None, help="default: max(32, --max-outstanding)")
    p.add_argument("--tgts-per-mshr", type=int, default=16)
    p.add_argument("--max-outstanding", type=int, default=32)
    p.add_argument("--issue-width", type=int, default=1)
    p.add_argument("--clock", default="2GHz", help="of the generator and the LLC")
    p.add_argument("--mem-type", choices=sorted(DRAMS), default="DDR5_4400_4x8")
    p.add_argument("--mem-channels", type=int, default=1)
    p.add_argument("--mem-interleave", type=int, default=256, help="bytes per channel before the next")
    p.add_argument("--mem-extra-latency-ns", type=float, default=0.0,
                   help="added to every controller's static frontend latency")
    p.add_argument("--mem-size", default="4GiB")
    p.add_argument("--progress-check", default="10ms",
                   help="fail when no response arrives for this long while requests are in flight")
    add_class_arguments(p)
    a = p.parse_args()
    if a.max_outstanding < 1 or a.issue_width < 1 or a.llc_hit_cycles < 1:
        p.error("--max-outstanding, --issue-width and --llc-hit-cycles must be at least 1")
    return a


def main():
    a = parse_args()
    mshrs = a.llc_mshrs or max(32, a.max_outstanding)
    processor = StepGenerator(a.phases, a.max_outstanding, a.issue_width, a.progress_check)
    caches = ReservedLLC(a.llc_size, a.llc_assoc, a.reserve_ways, a.policy, a.whole_token_eviction,
                         (a.kv_start, a.kv_end), a.token_stride, a.tokens_per_layer,
                         tag_latency=a.llc_hit_cycles, data_latency=a.llc_hit_cycles, response_latency=1,
                         mshrs=mshrs, tgts_per_mshr=a.tgts_per_mshr, write_buffers=max(64, mshrs),
                         **class_knobs(a))
    memory = DRAMMemory(a.mem_type, a.mem_size, a.mem_channels, a.mem_interleave, a.mem_extra_latency_ns)
    # the crossbar's busiest layer (fills into the LLC) moves one line per cycle
    membus_hz = max(toFrequency(a.clock), 2 * memory.peak_bandwidth() / LINE_BYTES)
    membus_clock = f"{math.ceil(membus_hz / 1e6)}MHz"
    system = build_system(processor, caches, memory, a.clock, membus_clock)
    root = Root(full_system=False, system=system)  # noqa: F841 (gem5 finds it)
    m5.instantiate()
    cause = m5.simulate().getCause()
    if cause == WARMUP_DONE:  # statistics cover the measured phases only
        m5.stats.reset()
        cause = m5.simulate().getCause()
    if cause != ALL_DONE:
        fail(f"simulation stopped early: {cause.strip()}")
    print(f"dsa-llc: all phases done @ tick {m5.curTick()}; memory peak {memory.peak_bandwidth() / 1e9:.2f} GB/s "
          f"({a.mem_channels} x {a.mem_type}), crossbar at {membus_clock}")


if __name__ == "__m5_main__" or __name__ == "__main__":
    main()
