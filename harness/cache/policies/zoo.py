"""``lcs:<algorithm>``: the eviction algorithms of libCacheSim (PyPI ``libcachesim``), the
field's standard cache simulator, on the same fully associative token cache as the project's
policies.

Each token read is one request for one object: the token's dense id (``TokenReads.tid``), size 1,
so the cache size is a count of tokens; the requests come in the stream's read order. A stream is
written once as an oracleGeneral binary trace, one little-endian record per read::

    uint32 clock_time   the read's index (a token stream has no wall-clock time)
    uint64 obj_id       the dense token id
    uint32 obj_size     1
    int64  next_access  the index of the next read of the same token; INT64_MAX: never again

and every (algorithm, capacity) replays that file with libCacheSim's own ``TraceReader`` and
``process_trace``: no Python call per read. "Never again" is INT64_MAX because libCacheSim's
oracleGeneral reader maps INT64_MAX (and -1) to its MAX_REUSE_DISTANCE and its Belady refuses a
-1 that reaches it (libCacheSim: traceReader/customizedReader/oracle/oracleGeneralBin.h,
cache/eviction/Belady.c). Caches are built with TTLs off (``default_ttl=0``) so that no object
expires on a long stream.

Every replay runs in a forked child process, in a fresh thread there:

- libCacheSim's algorithms draw from one pseudo-random generator per thread (a thread-local LCG
  seeded 0: utils/mymath.c), so a fresh thread makes the randomised ones (LHD, LeCaR, Cacheus,
  Random, FlashProb, ...) give the same hits whatever ran before them;
- a failure inside the library becomes a ``PolicyFailed`` naming the algorithm and the
  library's last message, not the death of ``dsa-harness`` (in libcachesim 0.3.5, S3FIFO,
  WTinyLFU and FlashProb abort on caches of a few objects, too small to split; LFUDA dies of
  SIGSEGV on some small caches);
  so does a replay that runs past its time allowance (``SECONDS_PER_READ``), which is stopped;
- the library's own log lines (GLCache prints one per cache) stay out of the command's output.

``lcs:belady`` is libCacheSim's Belady: MIN *without* bypass (a missed object is always
inserted, evicting the cached object read furthest in the future). It is offline like the
project's ``min`` (MIN with bypass), which bounds it: see tests/test_zoo.py.
"""

from __future__ import annotations

import faulthandler
import os
import re
import select
import signal
import struct
import tempfile
import threading
import weakref

import numpy as np

from harness.cache.policies.base import Policy, PolicyFailed, TokenReads
from harness.core.errors import UserError

# Algorithm (policy name after "lcs:") -> (libcachesim class, one-line description): every public
# eviction class of libcachesim 0.3.5 that works with unit-size objects. Left out:
# - Size: evicts the largest object; every token has size 1, so only its tie-break would decide;
# - BeladySize: Belady for objects of different sizes, by sampling; with unit sizes it only
#   approximates lcs:belady (241,523 against 243,739 hits on the 1M-read bench stream) at a
#   tenth of its speed;
# - PluginCache: hooks for a cache written in Python, not an algorithm.
ALGORITHMS: dict[str, tuple[str, str]] = {
    "lru": ("LRU", "least recently used"),
    "fifo": ("FIFO", "first in, first out"),
    "clock": ("Clock", "FIFO with a reference bit (second chance)"),
    "sieve": ("Sieve", "SIEVE: FIFO whose hand skips visited objects without moving them"),
    "arc": ("ARC", "ARC: recency and frequency lists with ghosts, adaptive split"),
    "lirs": ("LIRS", "LIRS: keeps the objects with low inter-reference recency"),
    "twoq": ("TwoQ", "2Q: FIFO probation queue, ghost queue, main LRU"),
    "slru": ("SLRU", "segmented LRU: probation and protected segments"),
    "s3fifo": ("S3FIFO", "S3-FIFO: small FIFO, main FIFO and ghost FIFO"),
    "clock2qplus": ("Clock2QPlus", "Clock-2Q+: FIFO probation in front of a Clock, ghost queue"),
    "clockpro": ("ClockPro", "CLOCK-Pro: clock approximation of LIRS with hot, cold and test pages"),
    "wtinylfu": ("WTinyLFU", "W-TinyLFU: window LRU, count-min-sketch admission into SLRU"),
    "lfu": ("LFU", "least frequently used (no aging)"),
    "lfuda": ("LFUDA", "LFU with dynamic aging, libCacheSim's rules: a hit adds the age (see lfu)"),
    "gdsf": ("GDSF", "greedy-dual size frequency (unit sizes: frequency plus aging)"),
    "mq": ("MQ", "multi-queue: LRU queues by frequency, demotion on expiry, ghost queue"),
    "lruk": ("LRUK", "LRU-2: evicts the largest backward 2-distance"),
    "lecar": ("LeCaR", "LeCaR: LRU and LFU experts weighted by regret (randomised)"),
    "cacheus": ("Cacheus", "Cacheus: LeCaR with scan-resistant experts and adaptive rate"),
    "hyperbolic": ("Hyperbolic", "hyperbolic caching: sampled eviction of the fewest hits per time cached"),
    "lhd": ("LHD", "least hit density (sampled)"),
    "random": ("Random", "evicts a random object"),
    "lruprob": ("LRUProb", "LRU that promotes a hit object with probability 1/2"),
    "flashprob": ("FlashProb", "LRU RAM tier (5%) and FIFO flash tier with probabilistic admission"),
    "threelcache": ("ThreeLCache", "3L-Cache: learned eviction"),
    "glcache": ("GLCache", "GL-Cache: learned eviction of groups of objects"),
    "lrb": ("LRB", "learning relaxed Belady (slow: 0.01 M reads/s; not in the default sweep)"),
    "belady": ("Belady", "libCacheSim's Belady: MIN without bypass (uses the future; a bound)"),
}
SLOW = {"lrb"}           # left out of the default sweep: a minute and a half per 1M-read replay
# A replay that takes longer than REPLAY_BASE_SECONDS + SECONDS_PER_READ x reads is stopped and
# reported as failed: libcachesim 0.3.5's LFUDA looks up every key between two used ones, and
# with hits adding the age to a key, keys double, so a few hundred reads can take it hours. The
# allowance is 20x the slowest algorithm's time per read (Hyperbolic, 2.5 us; LRB 90 us).
REPLAY_BASE_SECONDS = 10.0
SECONDS_PER_READ = {"lrb": 2e-3}
DEFAULT_SECONDS_PER_READ = 50e-6
OFFLINE = {"belady"}     # reads the future, like the project's min

PREFIX = "lcs:"
_RECORD = np.dtype([("clock_time", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"), ("next_access", "<i8")])
_traces: dict[int, OracleTrace] = {}  # id(TokenReads) -> its trace, dropped with the stream


class ZooPolicy(Policy):
    """One libCacheSim algorithm (``algorithm`` names its class) on the fully associative token
    cache; the classes below are made from ``ALGORITHMS``."""

    family = "libCacheSim"
    algorithm = ""

    def fa_hits(self, reads, capacity):
        suffix = self.name[len(PREFIX):]
        budget = REPLAY_BASE_SECONDS + len(reads) * SECONDS_PER_READ.get(suffix, DEFAULT_SECONDS_PER_READ)
        return trace_of(reads).hits(self.name, self.algorithm, capacity, budget)


def trace_of(reads: TokenReads) -> OracleTrace:
    """The oracleGeneral trace of ``reads``, written on first use and removed when ``reads`` is
    garbage (or at exit)."""
    key = id(reads)
    if key not in _traces:
        _traces[key] = OracleTrace(reads)
        weakref.finalize(reads, _traces.pop, key, None)
    return _traces[key]


class OracleTrace:
    """A token stream as an oracleGeneral binary trace in a temporary file (deleted with this
    object)."""

    def __init__(self, reads: TokenReads):
        n = len(reads)
        if n >= 1 << 32:
            raise UserError(f"libCacheSim's trace format numbers reads in 32 bits; this stream has {n:,}")
        records = np.empty(n, dtype=_RECORD)
        records["clock_time"] = np.arange(n, dtype=np.uint32)
        records["obj_id"] = reads.tid
        records["obj_size"] = 1
        records["next_access"] = reads.next_use  # NEVER is INT64_MAX
        fd, self.path = tempfile.mkstemp(prefix="lcs-trace-", suffix=".oracleGeneral.bin")
        with os.fdopen(fd, "wb") as f:
            records.tofile(f)
        self.reads = n
        self._remove = weakref.finalize(self, os.unlink, self.path)

    def hits(self, policy: str, algorithm: str, capacity: int, budget: float) -> int:
        """Hits of libCacheSim's ``algorithm`` with room for ``capacity`` tokens, replayed in a
        forked child (see the module docstring); a crash there, or a replay still running after
        ``budget`` seconds, is a PolicyFailed."""
        import libcachesim  # noqa: F401  (loaded once here, not in every child)

        result, wr = os.pipe()
        errors = tempfile.TemporaryFile()
        pid = os.fork()
        if pid == 0:  # the child: report the miss count on the pipe, never return
            code = 1
            try:
                faulthandler.disable()  # a crash here is reported by the parent, not dumped
                os.close(result)
                os.dup2(errors.fileno(), 1)
                os.dup2(errors.fileno(), 2)
                misses = []
                worker = threading.Thread(target=lambda: misses.append(self._replay(algorithm, capacity)))
                worker.start()
                worker.join()
                if misses:
                    os.write(wr, struct.pack("<q", misses[0]))
                    code = 0
            finally:
                os._exit(code)
        os.close(wr)
        with os.fdopen(result, "rb") as f:
            finished = select.select([f], [], [], budget)[0]
            if not finished:
                os.kill(pid, signal.SIGKILL)
            data = f.read() if finished else b""
        _, status = os.waitpid(pid, 0)
        errors.seek(0)
        log = errors.read().decode(errors="replace")
        errors.close()
        if len(data) != 8:
            why = (f"still running after {budget:,.0f} s: stopped" if not finished
                   else f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit {os.WEXITSTATUS(status)}")
            raise PolicyFailed(f"policy {policy}: libCacheSim's {algorithm} failed at capacity {capacity:,} "
                               f"({why}){_last_message(log)}")
        return self.reads - struct.unpack("<q", data)[0]

    def _replay(self, algorithm: str, capacity: int) -> int:
        import libcachesim

        cache = getattr(libcachesim, algorithm)(cache_size=capacity, default_ttl=0,
                                                hashpower=hash_power(capacity))
        reader = libcachesim.TraceReader(trace=self.path, trace_type=libcachesim.TraceType.ORACLE_GENERAL_TRACE)
        miss_ratio, _ = cache.process_trace(reader)
        return int(round(miss_ratio * self.reads))


def _last_message(log: str) -> str:
    """': <the library's last log message>' without colours and its date/file/thread prefix."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", x).strip() for x in log.splitlines()]
    lines = [x for x in lines if x]
    return ": " + re.sub(r"^\[\w+\].*?\(tid=\d+\):\s*", "", lines[-1]) if lines else ""


def hash_power(capacity: int) -> int:
    """log2 of the buckets libCacheSim's object table starts with: room for twice the capacity
    (it grows by itself); its default, 2^24 buckets (128 MiB), costs more than a replay."""
    return min(24, max(10, (2 * capacity).bit_length()))


def _zoo_class(suffix: str, algorithm: str, description: str) -> type[ZooPolicy]:
    return type(f"Lcs{algorithm}", (ZooPolicy,), {
        "name": PREFIX + suffix, "algorithm": algorithm, "description": description,
        "offline": suffix in OFFLINE, "default_sweep": suffix not in SLOW,
        "__doc__": f"libCacheSim's {algorithm} on the token cache: {description}."})


ZOO: tuple[type[ZooPolicy], ...] = tuple(_zoo_class(s, a, d) for s, (a, d) in ALGORITHMS.items())
