"""``oracle``: the layer's exact dense attention, averaged over heads; its top k carries the
most attention mass any k tokens can (the upper bound for a real indexer's recall)."""

from __future__ import annotations

from trace_gen.indexers.base import Indexer, LayerInputs


class OracleIndexer(Indexer):
    name = "oracle"
    description = "exact dense attention scores of the layer, averaged over heads"
    needs_dense = True

    def scores(self, x: LayerInputs):
        return x.probs

    def describe(self) -> dict:
        # an oracle has no key of its own; it reads every key (the index scan is the KV itself)
        return {"key_bytes": 0}
