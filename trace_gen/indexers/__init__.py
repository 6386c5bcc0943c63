"""Indexers pick, per layer and decode step, the cached tokens sparse attention reads.

One module per indexer, registered by name here. An indexer scores every visible cached token
of a layer; :func:`trace_gen.decode` takes the top k of those scores (after forcing sink and
local-window tokens in) as the layer's selection, shared by all heads as in DSA.
"""

from __future__ import annotations

from harness.core.errors import UserError
from trace_gen.indexers.base import Indexer, LayerInputs
from trace_gen.indexers.dsa import DsaIndexer
from trace_gen.indexers.native import NativeIndexer
from trace_gen.indexers.oracle import OracleIndexer

INDEXERS: dict[str, type[Indexer]] = {cls.name: cls for cls in (DsaIndexer, OracleIndexer, NativeIndexer)}


def get_indexer(name: str) -> type[Indexer]:
    if name not in INDEXERS:
        raise UserError(f"unknown indexer {name!r}; known: {', '.join(INDEXERS)}")
    return INDEXERS[name]


__all__ = ["INDEXERS", "Indexer", "LayerInputs", "get_indexer"]
