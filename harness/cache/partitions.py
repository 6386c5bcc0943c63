"""Class-aware LLC knobs: way reservations per traffic class and insertion hints.

These model the cache controls the platforms offer (``harness.cache.platforms`` says which one
offers which):

- **Reservations** (``--reserve CLASS=WAYS[:POLICY]``; Intel RDT's cache allocation, a way mask
  per class of service): ``kv`` (``kv`` and ``kv_write`` lines), ``index`` or ``weights`` lines
  allocate only in their own ways, laid out from way 0 in that order; every other class shares
  the rest. A lookup hits wherever the line is. The KV ways run a token policy
  (``harness.cache.policies``); an index or weights reservation is line LRU (``lru``) or line
  BIP (``bip``, the same as the ``bip`` hint).
- **Hints** (``--hint CLASS=KIND``), for the fills of a class into ways that run line LRU:
  - ``streaming``: a fill is inserted as the next victim of its set (CUDA's
    ``cudaAccessPropertyStreaming``, PTX ``evict_first``);
  - ``bip``: bimodal insertion (Qureshi et al., ISCA 2007): as ``streaming`` but every 32nd fill
    is inserted as the most recent line, so that part of a scan larger than the cache stays;
  - ``persisting:RATIO`` with ``--set-aside SIZE`` (CUDA's L2 persistence: an
    ``accessPolicyWindow`` whose ``hitRatio`` share of lines is ``cudaAccessPropertyPersisting``):
    a fixed, address-hashed share RATIO of the class's lines is persisting. Per set persisting
    lines may take at most the set-aside's share of the ways, and only a persisting line evicts
    a persisting line (a fill with no other victim is not cached). The class's other lines are
    streaming.

Weights read as scans take ``normal`` or ``streaming`` only (``harness.cache.simulate`` applies
those scans at once; under ``bip`` or ``persisting`` every weight line would have to be
simulated).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from harness.core.errors import UserError
from harness.core.traffic import INDEX, KV, KV_WRITE, OTHER, TRAFFIC_CLASSES, WEIGHTS

CLASSES = ("kv", "index", "weights")      # what a reservation or a hint names
CODES = {"kv": (KV, KV_WRITE), "index": (INDEX,), "weights": (WEIGHTS,)}
LINE_POLICIES = ("lru", "bip")            # of an index or weights reservation
NORMAL, STREAMING, BIP, PERSISTING = range(4)  # insertion modes (the kernel's)
HINT_KINDS = ("normal", "streaming", "bip", "persisting")
PERSIST_SCALE = 1 << 32                   # a line is persisting when its 32-bit hash < ratio * 2**32


def parse_hint(text: str, what: str = "hint") -> tuple[int, float]:
    """A hint's mode and persisting ratio: ``normal``, ``streaming``, ``bip`` or
    ``persisting:RATIO`` (0 < RATIO <= 1)."""
    m = re.fullmatch(r"(normal|streaming|bip|persisting)(?::(\d*\.?\d+))?", str(text))
    if not m or (m.group(1) == "persisting") != (m.group(2) is not None):
        raise UserError(f"{what} {text!r} is not normal, streaming, bip or persisting:RATIO (e.g. persisting:0.6)")
    ratio = float(m.group(2)) if m.group(2) else 0.0
    if m.group(1) == "persisting" and not 0 < ratio <= 1:
        raise UserError(f"{what} {text!r}: the persisting ratio must be in (0, 1]")
    return HINT_KINDS.index(m.group(1)), ratio


def check_hint(text: str) -> None:
    """A hint's check for its setting (a one-line UserError)."""
    parse_hint(text)


@dataclass(frozen=True)
class ClassMap:
    """What the LLC kernel reads per traffic class (by class code): the ways a class allocates
    in (``region``, [lo, hi)), its insertion mode and persisting threshold, and the persisting
    lines a set may hold (``persist_cap``, 0: none)."""

    region: np.ndarray         # (classes, 2) int64
    mode: np.ndarray           # (classes,) int64
    persist_threshold: np.ndarray  # (classes,) int64: a line persists when hash(line) < it
    persist_cap: int

    @classmethod
    def of(cls, ways: int, reserve: dict[str, int], hints: dict[str, str], set_aside_ways: int) -> ClassMap:
        """From the ways each class reserves (laid out from way 0: kv, index, weights) and the
        hint of each class."""
        region = np.zeros((len(TRAFFIC_CLASSES), 2), dtype=np.int64)
        start = 0
        for name in CLASSES:
            for code in CODES[name]:
                region[code] = (start, start + reserve.get(name, 0))
            start += reserve.get(name, 0)
        for name in CLASSES:
            if not reserve.get(name, 0):
                for code in CODES[name]:
                    region[code] = (start, ways)
        region[OTHER] = (start, ways)
        mode = np.zeros(len(TRAFFIC_CLASSES), dtype=np.int64)
        threshold = np.zeros(len(TRAFFIC_CLASSES), dtype=np.int64)
        for name, hint in hints.items():
            m, ratio = parse_hint(hint)
            for code in CODES[name]:
                mode[code], threshold[code] = m, int(round(ratio * PERSIST_SCALE))
        return cls(region, mode, threshold, set_aside_ways if (mode == PERSISTING).any() else 0)

    def kernel_arrays(self) -> tuple:
        return self.region, self.mode, self.persist_threshold, np.array([self.persist_cap], dtype=np.int64)
