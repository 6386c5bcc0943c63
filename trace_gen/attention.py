"""The attention function the harness installs into a backbone (transformers' AttentionInterface).

Prefill (while the active session is ``prefilling``) runs dense attention and lets the session
see every layer's queries and keys (``trace_gen.prefill``). Each decode step asks the active
session's indexer for scores over the visible cache, takes the top k (sink and local-window
tokens forced in), attends over the selection only (or densely, observe-only), and records the
absolute positions and their share of the dense attention mass.

The mask function is registered under the same name as transformers' eager mask: without a mask
registration the function would get ``attention_mask=None`` and a sliding-window model (Gemma 3)
would silently lose its window in prefill (DESIGN.md, section 4).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ATTN_NAME = "dsa_llc"
_active = None  # the session attention calls report to (one decode or capture at a time)


def register(model) -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTN_NAME, attention)
    AttentionMaskInterface.register(ATTN_NAME, eager_mask)
    model.set_attn_implementation(ATTN_NAME)


class active:
    """``with active(session): model(...)`` routes attention calls to ``session``."""

    def __init__(self, session):
        self.session = session

    def __enter__(self):
        global _active
        self.previous, _active = _active, self.session
        return self.session

    def __exit__(self, *exc):
        global _active
        _active = self.previous


def logits_of(query, key, mask, scaling, softcap=None):
    """Attention logits [B, H, Q, T] with GQA, softcapping and the additive mask applied.
    Query heads are grouped by key head, so the keys are never copied per query head."""
    b, h, q, d = query.shape
    kh = key.shape[1]
    grouped = query.reshape(b, kh, (h // kh) * q, d)
    logits = torch.matmul(grouped, key.transpose(-1, -2)).reshape(b, h, q, key.shape[2]) * scaling
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    if mask is not None:
        logits = logits + mask[..., : key.shape[2]]
    return logits


def dense(query, key, value, mask, scaling, softcap=None):
    """Dense attention output in transformers' layout [B, Q, H, Dv]."""
    if softcap:
        probs = torch.softmax(logits_of(query, key, mask, scaling, softcap), dim=-1)
        return weighted_values(probs, value)
    m = None if mask is None else mask[..., : key.shape[2]]
    b, h, q, d = query.shape
    kh = key.shape[1]
    if q == 1 and h != kh:
        # one query token: group the query heads of each key head instead of repeating keys
        out = F.scaled_dot_product_attention(query.reshape(b, kh, h // kh, d), key, value, attn_mask=m,
                                             scale=scaling)
        return out.reshape(b, 1, h, value.shape[3])
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=m, scale=scaling, enable_gqa=h != kh)
    return out.transpose(1, 2).contiguous()


def weighted_values(probs, value):
    """probs [B, H, Q, T] @ value [B, KH, T, Dv] by key-head groups -> [B, Q, H, Dv]."""
    b, h, q, t = probs.shape
    kh = value.shape[1]
    out = torch.matmul(probs.reshape(b, kh, (h // kh) * q, t), value).reshape(b, h, q, value.shape[3])
    return out.transpose(1, 2).contiguous()


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    scaling = scaling if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
    softcap = kwargs.get("softcap")
    session = _active
    if session is None or session.prefilling:
        if session is not None:
            session.prefill(module.layer_idx, query, key, attention_mask, scaling)
        return dense(query, key, value, attention_mask, scaling, softcap), None
    return session.decode(module.layer_idx, query, key, value, attention_mask, scaling, softcap, kwargs), None
