"""Synthetic DSA-like selections, for benchmarks and tests that must not load a model.

Shaped after what real backbones show (DESIGN.md, section 4): each layer keeps a share
``overlap`` of its previous selection, position 0 is always picked (an attention sink), and the
new picks favour recent tokens (half from the last ``recent`` positions, half uniform).
"""

from __future__ import annotations

import numpy as np


def dsa_selections(steps: int, layers: int, topk: int, prompt: int, overlap: float = 0.7,
                   recent: int = 256, seed: int = 0):
    """Yield ``(step, layer, ctx_len, positions)`` in decode order (sorted unique positions)."""
    rng = np.random.default_rng(seed)
    prev: list[np.ndarray | None] = [None] * layers
    for step in range(steps):
        ctx = prompt + step
        k = min(topk, ctx)
        for layer in range(layers):
            chosen = np.zeros(ctx, dtype=bool)
            chosen[0] = True
            if prev[layer] is not None:
                keep = prev[layer][rng.random(len(prev[layer])) < overlap]
                chosen[keep[: k - 1]] = True
            while chosen.sum() < k:
                need = k - int(chosen.sum())
                near = ctx - 1 - rng.integers(0, min(recent, ctx), need)
                far = rng.integers(0, ctx, need)
                chosen[np.where(rng.random(need) < 0.5, near, far)] = True
            pos = np.flatnonzero(chosen)
            if len(pos) > k:
                pos = np.sort(rng.choice(pos, k, replace=False))
            prev[layer] = pos
            yield step, layer, ctx, pos


def write_synthetic_log(folder, steps: int = 16, layers: int = 4, topk: int = 32, prompt: int = 256,
                        requests: int = 1, overlap: float = 0.7, seed: int = 0, overwrite: bool = False):
    """An index log of :func:`dsa_selections` (one independent stream per request), with
    metadata shaped like a real log (a small llama-like backbone config)."""
    from harness import __version__
    from harness.core.canon import config_hash
    from trace_gen.indexlog import IndexLogWriter

    params = dict(steps=steps, layers=layers, topk=topk, prompt=prompt, requests=requests,
                  overlap=overlap, seed=seed)
    meta = {
        "backbone": {"name": "synthetic", "source": "trace_gen.synthetic",
                     "config": {"name": "synthetic", "num_hidden_layers": layers,
                                "num_key_value_heads": 2, "head_dim": 64, "dtype_bytes": 2}},
        "indexer": {"name": "synthetic", "topk": topk, "key_bytes": 132, "options": {"overlap": overlap}},
        "text": {"name": "synthetic"}, "seed": seed, "package_version": __version__,
        "config_hash": config_hash(params), "requests": requests, "steps": steps, "layers": layers,
        "prompt_tokens": prompt,
    }
    gens = [dsa_selections(steps, layers, topk, prompt, overlap, seed=seed + r) for r in range(requests)]
    with IndexLogWriter(folder, meta, overwrite=overwrite) as w:
        for rows in zip(*gens):
            for r, (step, layer, ctx, pos) in enumerate(rows):
                w.add(r, step, layer, ctx, pos)
        return w.close()
