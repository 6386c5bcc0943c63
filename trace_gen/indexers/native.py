"""``native``: the backbone's own trained indexer (DeepseekV32-type models), whose top-k
transformers passes to the attention function as ``indices``."""

from __future__ import annotations

import torch

from harness.core.errors import UserError
from trace_gen.indexers.base import Indexer, LayerInputs


class NativeIndexer(Indexer):
    name = "native"
    description = "the backbone's own trained DSA indexer (DeepseekV32-type models)"

    def __init__(self, backbone, topk, max_ctx, batch, options, on_progress=None):
        super().__init__(backbone, topk, max_ctx, batch, options, on_progress)
        cfg = backbone.config
        if not hasattr(cfg, "index_topk"):
            raise UserError(f"backbone {backbone.name} has no indexer of its own; use --indexer dsa or oracle")
        cfg.index_topk = topk
        for module in backbone.model.modules():
            if hasattr(module, "index_topk"):
                module.index_topk = topk
        self.head_dim = int(cfg.index_head_dim)

    def scores(self, x: LayerInputs):
        idx = x.extra.get("indices")
        if idx is None:
            raise UserError("the backbone did not pass its indexer's top-k to attention")
        idx = idx[:, -1, :].long() - x.start  # [B, k] absolute slot -> visible slot
        out = torch.full((x.key.shape[0], x.key.shape[2]), float("-inf"))
        ok = (idx >= 0) & (idx < x.key.shape[2])
        rank = torch.arange(idx.shape[1], 0, -1, dtype=out.dtype).expand_as(idx)  # keep the order
        out.scatter_(1, idx.clamp(0, x.key.shape[2] - 1), torch.where(ok, rank, float("-inf")))
        return out

    def describe(self) -> dict:
        cfg = self.backbone.config
        return {"key_bytes": self.head_dim + 4, "d_I": self.head_dim, "H_I": int(cfg.index_n_heads),
                "key_format": "FP8 values + FP32 scale (as DeepSeek-V3.2 stores them)"}
