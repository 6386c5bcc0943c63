"""Reservation policies, one module each, registered by name here.

``dsa-harness policies`` lists them. Every policy runs on the fully associative token cache
(``Policy.fa_hits``); those whose class has ``reserved_ways`` (``RESERVED_POLICIES``) also run in
the LLC's reserved ways (``harness.cache.llc``), through the hooks ``harness.cache.policies.ways``
defines. A policy's module holds all of it: its fully associative form, its reserved-way hooks,
its hardware cost and its docstring, which defines it. Two families: the project's own, and
libCacheSim's eviction algorithms (``lcs:<algorithm>``, ``harness.cache.policies.zoo``).

A new policy is its module and one entry in ``POLICIES`` below.
"""

from __future__ import annotations

from harness.cache.policies.admit import Admit
from harness.cache.policies.base import (
    HardwareCost,
    HardwareReference,
    Policy,
    PolicyFailed,
    TokenReads,
)
from harness.cache.policies.belady import Belady
from harness.cache.policies.bip import BIP
from harness.cache.policies.brrip import BRRIP
from harness.cache.policies.layer_quota import LayerQuota
from harness.cache.policies.lfu import LFU
from harness.cache.policies.line_lru import LineLRU
from harness.cache.policies.pin_recent import PinRecent
from harness.cache.policies.prev_step import PrevStep
from harness.cache.policies.rrip import SRRIP
from harness.cache.policies.streak import Streak
from harness.cache.policies.token_lru import TokenLRU
from harness.cache.policies.zoo import ZOO
from harness.core import numba_cache
from harness.core.errors import unknown_name
from harness.core.settings import POLICY_LISTING

numba_cache.guard()  # a broken cache file of a kernel: compiled again, not a crash

POLICIES: dict[str, type[Policy]] = {p.name: p for p in (
    LineLRU, TokenLRU, SRRIP, BRRIP, BIP, LFU, Admit, LayerQuota, PrevStep, PinRecent, Streak, Belady, *ZOO)}
# Those that also run in the LLC's reserved ways (lru: the kernel's own line LRU).
RESERVED_POLICIES: tuple[str, ...] = tuple(name for name, p in POLICIES.items() if p.reserved_ways is not None)


def get_policy(name: str, **params) -> Policy:
    if name not in POLICIES:
        raise unknown_name("policy", name, POLICIES, POLICY_LISTING)
    return POLICIES[name](**params)


__all__ = ["POLICIES", "RESERVED_POLICIES", "HardwareCost", "HardwareReference", "Policy", "PolicyFailed",
           "TokenReads", "get_policy"]
