"""Canonical JSON and the short hashes that name runs and logs."""

from __future__ import annotations

import hashlib
import json


def canonical_json(obj) -> str:
    """Sorted keys, no whitespace, ASCII: equal configs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def config_hash(obj, length: int = 12) -> str:
    """Hex digest prefix of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
