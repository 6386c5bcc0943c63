"""Prompts and the captured prefill: what both decoding and indexer fitting start from.

``prompt_windows`` cuts disjoint prompt windows from a text's tokens; ``capture_prefill`` runs
them through a backbone once and keeps every layer's post-RoPE queries and keys (the input of
the ``dsa`` indexer's fit). It sits below ``trace_gen.decode`` and ``trace_gen.indexers``, so an
indexer never needs the decoder.
"""

from __future__ import annotations

import numpy as np

from harness.core.errors import UserError
from trace_gen import attention as attn


class CaptureSession:
    """Keeps every layer's prefill queries and keys (for fitting an indexer)."""

    def __init__(self):
        self.layers: dict[int, tuple] = {}

    def prefill(self, layer, query, key, mask, scaling):
        self.layers[layer] = (query, key, mask, scaling)

    def decode(self, *args):
        raise RuntimeError("a capture session only runs prefill")


def capture_prefill(backbone, ids: np.ndarray) -> dict[int, tuple]:
    """Run the prompts ``ids`` [B, N] through the backbone once (no cache) and return every
    layer's post-RoPE queries, keys, mask and scaling: what an indexer fit learns from."""
    import torch

    attn.register(backbone.model)
    session = CaptureSession()
    with attn.active(session), torch.no_grad():
        backbone.model(input_ids=torch.from_numpy(ids), use_cache=False, logits_to_keep=1)
    return session.layers


def prompt_windows(ids: list[int], prompt_tokens: int, requests: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """``requests`` disjoint windows of ``prompt_tokens`` tokens, chosen with ``seed``."""
    n = len(ids) // prompt_tokens
    if n < requests:
        raise UserError(f"the text has {len(ids):,} tokens: too short for {requests} prompt(s) of "
                        f"{prompt_tokens:,} tokens")
    picks = np.sort(np.random.default_rng(seed).choice(n, requests, replace=False))
    arr = np.asarray(ids, dtype=np.int64)
    offsets = [int(p) * prompt_tokens for p in picks]
    return np.stack([arr[o:o + prompt_tokens] for o in offsets]), offsets


def tokenize(backbone, text: str) -> list[int]:
    return list(backbone.tokenizer.encode(text, add_special_tokens=False))
