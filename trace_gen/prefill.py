"""Prompts and the prefill: what both decoding and indexer fitting start from.

``prompts`` cuts a batch of prompts from a text; ``prefill`` runs them through a backbone in
chunks into its KV cache, so no tensor of context x context is ever built (each chunk's
attention mask is chunk x context, and attention itself never materialises the scores);
``capture_prefill`` does the same and keeps every layer's post-RoPE keys and the queries an
indexer fit learns from. This module sits below ``trace_gen.decode`` and ``trace_gen.indexers``,
so an indexer never needs the decoder.
"""

from __future__ import annotations

import numpy as np

from harness.core.errors import UserError
from trace_gen import attention as attn
from trace_gen.text import (
    FILE_PER_REQUEST,
    load_text,
    python_version,
    sha256_text,
    stdlib_files,
    stdlib_root,
)

# A prefill chunk's additive attention mask is float32 [batch, 1, chunk, context]: chunks are cut
# so that it stays within this budget, and never exceed MAX_PREFILL_CHUNK tokens. A prompt that
# fits in one chunk is prefilled exactly as in one forward pass.
PREFILL_MASK_BUDGET = 256 << 20
MAX_PREFILL_CHUNK = 2048
MIN_PREFILL_CHUNK = 64


def prefill_chunk_tokens(prompt_tokens: int, batch: int, chunk: int | None = None) -> int:
    """Tokens per prefill chunk: ``chunk`` if given, else the largest multiple of 64 (at least
    64, at most ``MAX_PREFILL_CHUNK``) whose mask fits ``PREFILL_MASK_BUDGET``; never more than
    the prompt."""
    if chunk is None:
        fit = PREFILL_MASK_BUDGET // (4 * batch * prompt_tokens)
        chunk = min(MAX_PREFILL_CHUNK, max(MIN_PREFILL_CHUNK, fit // 64 * 64))
    elif chunk < 1:
        raise UserError(f"prefill chunk must be at least 1 token, got {chunk}")
    return min(chunk, prompt_tokens)


def prefill(backbone, ids: np.ndarray, cache, session, chunk: int, progress: bool = False):
    """Feed the prompts ``ids`` [B, N] through the backbone into ``cache``, ``chunk`` tokens at
    a time, reporting every layer's attention inputs to ``session`` (its ``prefill`` method sees
    a chunk's queries and the keys visible to them, the chunk's own keys last, with
    ``session.ctx_len`` = the tokens cached once the chunk is in). Returns the logits of the
    prompts' last position [B, V]."""
    import torch

    from harness.core.progress import progress_bar

    starts = range(0, ids.shape[1], chunk)
    session.prefilling = True
    try:
        with attn.active(session), torch.no_grad():
            for start in progress_bar(starts, desc=f"prefill {backbone.name}", unit="chunk", leave=False,
                                      disable=not progress or len(starts) == 1):
                end = min(start + chunk, ids.shape[1])
                session.ctx_len = end
                logits = backbone.model(input_ids=torch.from_numpy(ids[:, start:end]), cache=cache,
                                        use_cache=True, logits_to_keep=1).logits
    finally:
        session.prefilling = False
    return logits[:, -1]


class CaptureSession:
    """Keeps every layer's prefill keys, and the queries of chosen rows with the keys each of
    them sees under the model's own attention mask (for fitting an indexer).

    ``rows[layer]`` [B, M]: the positions whose queries to keep, per prompt (sorted)."""

    prefilling = True

    def __init__(self, rows: dict):
        self.rows = rows
        self.ctx_len = 0
        self.keys: dict[int, list] = {}
        # layer -> per prompt, per chunk: (queries [H, m, D], visible [m, seen], first key position)
        self.chunks: dict[int, list] = {}
        self.scaling: dict[int, float] = {}

    def prefill(self, layer, query, key, mask, scaling):
        import torch

        n, seen = query.shape[2], key.shape[2]
        start, first_key = self.ctx_len - n, self.ctx_len - seen
        # a copy: a view would keep the whole cached key tensor of this chunk alive
        self.keys.setdefault(layer, []).append(key[:, :, -n:].clone())
        kept = self.chunks.setdefault(layer, [[] for _ in range(query.shape[0])])
        for b, rows in enumerate(self.rows[layer]):
            inside = rows[(rows >= start) & (rows < self.ctx_len)] - start
            if mask is None:  # causal
                visible = first_key + torch.arange(seen)[None, :] <= (start + inside)[:, None]
            else:
                visible = mask[min(b, mask.shape[0] - 1), 0, inside, :seen] > -1e30
            kept[b].append((query[b, :, inside], visible, first_key))
        self.scaling[layer] = scaling

    def decode(self, *args):
        raise RuntimeError("a capture session only runs prefill")

    def layers(self) -> dict[int, tuple]:
        """layer -> (queries of the rows [B, H, M, D], the keys each row sees [B, M, N] (bool),
        every key [B, KH, N, D], scaling); once (the chunks are freed as they are joined)"""
        import torch

        out = {}
        for layer in list(self.chunks):
            per_prompt = self.chunks.pop(layer)
            keys = torch.cat(self.keys.pop(layer), dim=2)
            visible = torch.zeros(len(per_prompt), self.rows[layer].shape[1], keys.shape[2],
                                  dtype=torch.bool)
            queries = []
            for b, chunks in enumerate(per_prompt):
                row = 0
                for _, vis, first_key in chunks:
                    visible[b, row:row + len(vis), first_key:first_key + vis.shape[1]] = vis
                    row += len(vis)
                queries.append(torch.cat([q for q, _, _ in chunks], dim=1))
            out[layer] = (torch.stack(queries), visible, keys, self.scaling[layer])
        return out


def capture_prefill(backbone, ids: np.ndarray, rows: dict, chunk: int | None = None) -> dict:
    """Run the prompts ``ids`` [B, N] through the backbone once, in chunks, and return every
    layer's post-RoPE queries at ``rows[layer]`` [B, M] positions, the keys each of them sees,
    all keys and the scaling (see ``CaptureSession.layers``): what an indexer fit learns from."""
    from transformers import DynamicCache

    attn.register(backbone.model)
    session = CaptureSession(rows)
    chunk = prefill_chunk_tokens(ids.shape[1], ids.shape[0], chunk)
    prefill(backbone, ids, DynamicCache(config=backbone.config), session, chunk)
    return session.layers()


def prompts(backbone, text: str, prompt_tokens: int, requests: int,
            seed: int) -> tuple[np.ndarray, dict]:
    """The ``requests`` prompts [B, prompt_tokens] a decode or an indexer fit starts from, and
    their provenance for the log (the text's metadata plus ``prompt_tokens`` and ``offsets``,
    each prompt's first token in its text).

    ``python-stdlib``: each prompt is the first ``prompt_tokens`` tokens of its own standard-
    library file (``file_prompts``). Any other text: disjoint windows of the text's tokens
    (``prompt_windows``)."""
    if text == FILE_PER_REQUEST:
        return file_prompts(backbone, prompt_tokens, requests, seed)
    body, meta = load_text(text)
    ids, offsets = prompt_windows(tokenize(backbone, body), prompt_tokens, requests, seed)
    return ids, {**meta, "prompt_tokens": prompt_tokens, "offsets": offsets}


def file_prompts(backbone, prompt_tokens: int, requests: int, seed: int) -> tuple[np.ndarray, dict]:
    """``python-stdlib`` prompts: the standard-library files of at least ``prompt_tokens`` bytes
    are taken in an order shuffled with ``seed``; each file with at least ``prompt_tokens``
    tokens gives the next request its first ``prompt_tokens`` tokens, until ``requests`` have
    one. Requests read different files, so no two share content."""
    root = stdlib_root()
    candidates = [f for f in stdlib_files() if f.stat().st_size >= prompt_tokens]
    chosen, windows = [], []
    for i in np.random.default_rng(seed).permutation(len(candidates)):
        body = candidates[i].read_text(encoding="utf-8")
        ids = tokenize(backbone, body)
        if len(ids) >= prompt_tokens:
            chosen.append((candidates[i].relative_to(root).as_posix(), body))
            windows.append(ids[:prompt_tokens])
            if len(chosen) == requests:
                break
    if len(chosen) < requests:
        raise UserError(f"{FILE_PER_REQUEST} has {len(chosen)} files of at least {prompt_tokens:,} "
                        f"tokens: too few for {requests} requests")
    meta = {"name": FILE_PER_REQUEST, "files": [name for name, _ in chosen],
            "file_sha256": [sha256_text(body) for _, body in chosen], "python": python_version(),
            "chars": sum(len(body) for _, body in chosen),
            "sha256": sha256_text("\n\n".join(body for _, body in chosen)),
            "prompt_tokens": prompt_tokens, "offsets": [0] * requests}
    return np.asarray(windows, dtype=np.int64), meta


def prompt_windows(ids: list[int], prompt_tokens: int, requests: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """``requests`` disjoint windows of ``prompt_tokens`` tokens, chosen with ``seed``."""
    n = len(ids) // prompt_tokens
    if n < requests:
        raise UserError(f"the text has {len(ids):,} tokens: too short for {requests} prompt(s) of "
                        f"{prompt_tokens:,} tokens (the text {FILE_PER_REQUEST} holds more)")
    picks = np.sort(np.random.default_rng(seed).choice(n, requests, replace=False))
    arr = np.asarray(ids, dtype=np.int64)
    offsets = [int(p) * prompt_tokens for p in picks]
    return np.stack([arr[o:o + prompt_tokens] for o in offsets]), offsets


def tokenize(backbone, text: str) -> list[int]:
    return list(backbone.tokenizer.encode(text, add_special_tokens=False))
