"""What an indexer lever does to the text a backbone produces, beside what it saves.

:func:`lever_fidelity` decodes one backbone under several lever settings (``index_share``,
``index_layers``, ``index_reuse``: ``trace_gen.levers``) and under dense attention, from one
dense prefill of a batch of two kinds of request:

- ``requests`` prompts of the decode's text, decoded greedily (free-running): the **same-token
  rate** is the share of decode steps at which a request's greedy token equals the dense
  decode's (once a token differs the continuations part, so the first step that differs is
  given too);
- ``requests`` windows of a held-out text (``heldout``, one the prompts do not come from), fed
  their own next tokens (teacher forcing): the **perplexity** of those tokens under the sparse
  attention with the lever, and its ratio to dense attention's; and the **teacher-forced
  same-token rate**, the share of steps whose greedy token equals dense attention's on the same
  inputs (no continuation parts, so every step counts on its own).

Each setting decodes ``steps`` steps from a copy of the prefilled cache (the indexer's key cache
is shared: a step writes its key before any layer reads it). The rows (every layer's used and
own selection per step and request, with their recall) come back as a table shaped like an
index log's, so the locality analysis can measure them (``harness.analysis.locality``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from trace_gen import attention as attn
from trace_gen.backbones import load_backbone
from trace_gen.decode import DecodeConfig, DecodeSession, decode_step
from trace_gen.indexers import get_indexer
from trace_gen.prefill import prefill, prefill_chunk_tokens, prompt_windows, prompts, tokenize
from trace_gen.text import load_text


@dataclass
class LeverRun:
    """One setting's decode: ``settings`` (the lever keys of its config; none for the dense
    reference), ``plan`` (``LeverPlan.describe``, None without levers), the free-running
    requests' greedy tokens [R, steps] (each step's output), the teacher-forced requests' NLL
    of the held-out tokens [R, steps] (nats) and their greedy tokens [R, steps], and ``rows``: one row per (step, layer, request),
    requests 0 .. R - 1 free-running, R .. 2R - 1 teacher-forced; ``layer_types`` the
    backbone's ('sliding' or 'full' per layer)."""

    settings: dict
    plan: dict | None
    tokens: np.ndarray
    nll: np.ndarray
    forced: np.ndarray
    rows: pd.DataFrame
    layer_types: list[str]

    def summary(self, dense: LeverRun) -> dict:
        """The setting's figures against the dense reference ``dense`` (see the module docstring)."""
        same = self.tokens == dense.tokens
        differs = ~same.all(axis=1)
        first = np.where(differs, np.argmin(same, axis=1), same.shape[1])
        r = self.rows
        own = r.own_recall if "own_recall" in r else r.recall
        ppl, dense_ppl = math.exp(self.nll.mean()), math.exp(dense.nll.mean())
        return {**self.settings, "scan_share": (self.plan or {}).get("scan_share", 1.0),
                "selected": float(r.positions.map(len).mean()),
                "recall": float(r.recall.mean()), "own_recall": float(own.mean()),
                "recall_vs_own": float(r.recall.mean() / own.mean()),
                "recall_best": float(r.recall_best.mean()),
                "same_token_rate": float(same.mean()), "first_difference": float(first.mean()),
                "forced_same_token_rate": float((self.forced == dense.forced).mean()),
                "ppl": ppl, "dense_ppl": dense_ppl, "ppl_ratio": ppl / dense_ppl}


def heldout_windows(backbone, text: str, prompt_tokens: int, steps: int, requests: int, seed: int) -> np.ndarray:
    """``requests`` disjoint windows [R, prompt_tokens + steps + 1] of ``text``: a prompt, the
    ``steps`` tokens fed one per step and the token the last step predicts."""
    body, _ = load_text(text)
    windows, _ = prompt_windows(tokenize(backbone, body), prompt_tokens + steps + 1, requests, seed)
    return windows


def lever_fidelity(cfg: DecodeConfig, levers: list[dict], heldout: str = "python-docs",
                   indexer_options: dict | None = None, on_progress=None) -> tuple[LeverRun, list[LeverRun]]:
    """Decode ``cfg``'s backbone, prompts and indexer under each lever setting of ``levers``
    (dicts of ``index_share``, ``index_layers``, ``index_reuse``, replacing ``cfg``'s) and under
    dense attention; returns the dense reference and one :class:`LeverRun` per setting.
    ``on_progress(label)``, when given, hears of each decode as it starts."""
    import torch
    from transformers import DynamicCache

    configs = [replace(cfg, **lever) for lever in levers]
    for c in (cfg, *configs):
        c.validate()
    backbone = load_backbone(cfg.backbone, seed=cfg.seed, topk=cfg.topk)
    ids, _ = prompts(backbone, cfg.text, cfg.prompt_tokens, cfg.requests, cfg.seed)
    held = heldout_windows(backbone, heldout, cfg.prompt_tokens, cfg.steps, cfg.requests, cfg.seed)
    batch = np.concatenate([ids, held[:, :cfg.prompt_tokens]])
    torch.manual_seed(cfg.seed)
    indexer = get_indexer(cfg.indexer)(backbone, cfg.topk, cfg.prompt_tokens + cfg.steps, len(batch),
                                       indexer_options or {})
    attn.register(backbone.model)
    cache = DynamicCache(config=backbone.config)
    first = prefill(backbone, batch, cache, DecodeSession(indexer, cfg.topk, 0, 0, True, False),
                    prefill_chunk_tokens(cfg.prompt_tokens, len(batch))).argmax(-1)

    def run(c: DecodeConfig, settings: dict, dense: bool) -> LeverRun:
        if on_progress is not None:
            on_progress(f"{backbone.name} {settings or 'dense'}")
        plan = c.lever_plan(backbone.layer_types())
        session = DecodeSession(indexer, c.topk, c.sink_tokens, c.local_window, dense, True,
                                None if dense else plan)
        own = session.levers is not None
        kv = copy.deepcopy(cache)
        fed = torch.cat([first[:cfg.requests], torch.from_numpy(held[:, cfg.prompt_tokens])])
        tokens = np.zeros((len(batch), cfg.steps), dtype=np.int64)  # greedy, free-running then forced
        nll = np.zeros((cfg.requests, cfg.steps))
        rows = []
        with attn.active(session):
            for step in range(cfg.steps):
                ctx_len = cfg.prompt_tokens + step + 1
                logits, layer_rows = decode_step(backbone, session, kv, fed, step, ctx_len)
                greedy = logits.argmax(-1)
                target = torch.from_numpy(held[:, cfg.prompt_tokens + step + 1])
                nll[:, step] = -torch.log_softmax(logits[cfg.requests:].double(), -1).gather(
                    1, target[:, None])[:, 0].numpy()
                tokens[:, step] = greedy.numpy()
                fed = torch.cat([greedy[:cfg.requests], target])
                for row in layer_rows:
                    for r in range(len(batch)):
                        rows.append({"request": r, "step": step, "layer": row.layer, "ctx_len": ctx_len,
                                     "positions": np.asarray(row.positions[r]), "recall": float(row.recall[r]),
                                     "recall_best": float(row.best[r]),
                                     **({"own_positions": row.own[r], "own_recall": float(row.own_recall[r])}
                                        if own else {})})
        return LeverRun(settings, plan.describe() if own else None, tokens[:cfg.requests], nll,
                        tokens[cfg.requests:], pd.DataFrame(rows), backbone.layer_types())

    dense = run(cfg, {}, True)
    keys = ("index_share", "index_layers", "index_reuse")
    return dense, [run(c, {k: getattr(c, k) for k in keys}, False) for c in configs]
