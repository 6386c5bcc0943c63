"""The indexer interface."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerInputs:
    """What an attention layer sees at one decode step (batch B, one query token).

    ``query`` [B, H, 1, D] and ``key`` [B, KH, T, D] are post-RoPE; ``T`` visible cache slots
    hold absolute positions ``start .. start + T - 1`` (``start > 0`` only for sliding-window
    layers). ``probs`` [B, T] is the layer's dense attention, averaged over heads, when the
    indexer asked for it (``needs_dense``) or recall is measured. ``extra`` holds the attention
    call's keyword arguments (e.g. a DSA backbone's own top-k ``indices``)."""

    layer: int
    query: torch.Tensor
    key: torch.Tensor
    start: int
    probs: torch.Tensor | None
    extra: dict


class Indexer:
    name = ""
    description = ""
    needs_dense = False  # scores come from the dense attention itself

    def __init__(self, backbone, topk: int, max_ctx: int, batch: int, options: dict, on_progress=None):
        """``on_progress(phase, done, total)``, when given, hears of long preparation (a fit)."""
        self.backbone, self.topk, self.max_ctx, self.batch, self.options = backbone, topk, max_ctx, batch, options
        self.on_progress = on_progress

    @classmethod
    def cache_bytes(cls, config, batch: int, tokens: int, options: dict) -> int:
        """Bytes of the key cache the indexer keeps for ``batch`` requests of ``tokens`` tokens
        on a backbone of this transformers ``config``. Default: none."""
        return 0

    def prefill(self, layer: int, query: torch.Tensor, key: torch.Tensor, start: int) -> None:
        """See one prefill chunk: its queries [B, H, N, D] and its own keys [B, KH, N, D], of
        absolute positions ``start .. start + N - 1`` (e.g. to fill an indexer key cache).
        Default: nothing."""

    def scores(self, x: LayerInputs) -> torch.Tensor:
        """Scores [B, T] of the visible slots; higher is picked first."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Metadata for the index log: at least ``key_bytes`` (indexer key bytes per token)."""
        return {"key_bytes": 0}
