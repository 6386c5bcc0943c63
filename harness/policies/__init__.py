"""Reservation policies, one module each, registered by name here.

``dsa-harness policies`` lists them. Every policy runs on the fully associative token cache
(``Policy.fa_hits``); those in ``harness.llc.RESERVED_POLICIES`` also run in the LLC's reserved ways.
"""

from __future__ import annotations

from harness.errors import UserError
from harness.policies.admit import Admit
from harness.policies.base import Policy, TokenReads
from harness.policies.belady import Belady
from harness.policies.bip import BIP
from harness.policies.brrip import BRRIP
from harness.policies.layer_quota import LayerQuota
from harness.policies.lfu import LFU
from harness.policies.line_lru import LineLRU
from harness.policies.pin_recent import PinRecent
from harness.policies.prev_step import PrevStep
from harness.policies.rrip import SRRIP
from harness.policies.streak import Streak
from harness.policies.token_lru import TokenLRU

POLICIES: dict[str, type[Policy]] = {p.name: p for p in (
    LineLRU, TokenLRU, SRRIP, BRRIP, BIP, LFU, Admit, LayerQuota, PrevStep, PinRecent, Streak, Belady)}


def get_policy(name: str, **params) -> Policy:
    if name not in POLICIES:
        raise UserError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    return POLICIES[name](**params)


__all__ = ["POLICIES", "Policy", "TokenReads", "get_policy"]
