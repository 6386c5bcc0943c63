"""DSA decoding on a backbone, logging every layer's selection at every step (the index log).

``decode(DecodeConfig(...), out)``: loads the backbone and text, prefills ``requests``
independent prompts (``trace_gen.prefill.prompts``, batched, in chunks), then decodes ``steps``
tokens greedily. At each step every layer's indexer picks ``min(topk, visible)`` cached positions
(sink and local-window positions forced in), attention runs over those only (or densely with
``observe_only``), and the positions plus their share of the dense attention mass (recall) go
to the log. Sliding-window layers select among their window only.

With indexer levers (``index_share``, ``index_layers``, ``index_reuse``: ``trace_gen.levers``)
a layer may attend with a selection it did not make (its anchor layer's, or its last scan's
widened by the tokens decoded since); the log then holds that selection in ``positions`` and
the layer's own beside it (``own_positions``, ``own_recall``).
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from harness import __version__
from harness.core.canon import config_hash
from harness.core.errors import UserError
from harness.core.outputs import check_output_folder
from harness.core.progress import progress_bar
from harness.core.settings import default
from harness.core.units import available_memory
from trace_gen import attention as attn
from trace_gen.backbones import (
    backbone_config,
    check_backbone,
    context_limit,
    kv_cache_bytes,
    layer_types,
    load_backbone,
)
from trace_gen.indexers import get_indexer
from trace_gen.indexlog import MAX_INT32, MAX_REQUESTS, IndexLogWriter, is_index_log_folder
from trace_gen.levers import LeverPlan, LeverState, parse_layers
from trace_gen.prefill import prefill, prefill_chunk_tokens, prompts
from trace_gen.text import check_text


@dataclass(frozen=True)
class DecodeConfig:
    """A decode's settings; defaults from their one declaration (``harness.core.settings``)."""

    backbone: str
    indexer: str = default("decode", "indexer")
    topk: int = default("decode", "topk")
    prompt_tokens: int = default("decode", "prompt_tokens")
    steps: int = default("decode", "steps")
    requests: int = default("decode", "requests")
    text: str = default("decode", "text")
    sink_tokens: int = default("decode", "sink_tokens")
    local_window: int = default("decode", "local_window")
    observe_only: bool = default("decode", "observe_only")
    recall: bool = True  # a command-line option only (decode --no-recall)
    seed: int = default("decode", "seed")
    index_share: int = default("decode", "index_share")
    index_layers: str | None = default("decode", "index_layers")
    index_reuse: int = default("decode", "index_reuse")

    def validate(self) -> None:
        for name in ("topk", "prompt_tokens", "steps", "requests", "index_share", "index_reuse"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        for name in ("sink_tokens", "local_window", "seed"):
            if getattr(self, name) < 0:
                raise UserError(f"{name.replace('_', ' ')} must not be negative, got {getattr(self, name)}")
        if self.requests > MAX_REQUESTS:
            raise UserError(f"requests must be at most {MAX_REQUESTS}, got {self.requests}")
        if self.prompt_tokens + self.steps > MAX_INT32:
            raise UserError(f"prompt tokens + steps must stay below 2**31, got {self.prompt_tokens + self.steps:,}")
        if self.index_layers is not None:
            parse_layers(self.index_layers)
            if self.index_share != 1:
                raise UserError("index layers name the anchor layers themselves; leave index share at 1 "
                                f"(got {self.index_share})")

    def lever_plan(self, types: list[str]) -> LeverPlan:
        """The levers of this decode on layers of these ``types`` (``trace_gen.levers``)."""
        return LeverPlan.make(types, self.index_share, self.index_reuse, self.index_layers)


class Row(NamedTuple):
    """One layer's selection at one decode step, per request of the batch: the positions it
    attended to (``[B, k]`` array, or a list of B arrays when sizes differ, under levers), their
    share of the dense attention mass and the best k tokens' share ([B] each, None when not
    measured), and under levers the layer's own selection [B, k] and its share."""

    layer: int
    positions: np.ndarray | list
    recall: np.ndarray | None
    best: np.ndarray | None
    own: np.ndarray | None = None
    own_recall: np.ndarray | None = None


class DecodeSession:
    """Receives each layer's attention call (see trace_gen.attention): prefill chunks go to the
    indexer, decode steps select and attend. With ``levers`` (a ``LeverPlan`` that is active),
    a layer attends with the selection the plan gives it and its own is kept beside."""

    prefilling = False  # set by trace_gen.prefill.prefill while it runs

    def __init__(self, indexer, topk: int, sink_tokens: int, local_window: int, observe_only: bool,
                 recall: bool, levers: LeverPlan | None = None):
        self.indexer, self.topk = indexer, topk
        self.sink_tokens, self.local_window = sink_tokens, local_window
        self.observe_only, self.recall = observe_only, recall
        self.levers = LeverState(levers) if levers is not None and levers.active else None
        self.ctx_len = 0
        self.rows: list[Row] = []  # the layers' rows of the current step

    def begin_step(self, step: int, ctx_len: int) -> None:
        """A decode step starts: ``ctx_len`` tokens are cached once its token is in."""
        self.ctx_len = ctx_len
        self.rows.clear()
        if self.levers is not None:
            self.levers.begin_step(step)

    def prefill(self, layer, query, key, mask, scaling):
        n = query.shape[2]  # the chunk's own keys come last, after the cached ones
        self.indexer.prefill(layer, query, key[:, :, -n:], self.ctx_len - n)

    def decode(self, layer, query, key, value, mask, scaling, softcap, extra):
        import torch

        from trace_gen.indexers import LayerInputs

        batch = query.shape[0]
        visible = key.shape[2]
        start = self.ctx_len - visible  # > 0 only for sliding-window layers
        logits = probs = None
        need_dense = self.recall or self.indexer.needs_dense
        if need_dense:
            logits = attn.logits_of(query, key, mask, scaling, softcap)  # [B, H, 1, T]
            probs = torch.softmax(logits, dim=-1).mean(dim=1)[:, 0, :]    # [B, T]
        scores = self.indexer.scores(LayerInputs(layer, query, key, start, probs, extra)).float()
        if mask is not None:
            scores = scores.masked_fill(mask[:, 0, -1, :visible] < -1e30, float("-inf"))
        forced = torch.zeros(visible, dtype=torch.bool)
        if self.sink_tokens:
            forced[: max(0, self.sink_tokens - start)] = True
        if self.local_window:
            forced[-self.local_window:] = True
        scores = scores.masked_fill(forced, float("inf"))
        k = min(self.topk, visible)
        sel = torch.topk(scores, k, dim=-1).indices.sort(dim=-1).values  # [B, k] visible slots
        recall = best = None
        if probs is not None:
            recall = probs.gather(1, sel).sum(dim=1).numpy()
            best = torch.topk(probs, k, dim=-1).values.sum(dim=1).numpy()
        own = (sel + start).to(torch.int32).numpy()
        keep = None
        if self.levers is None:
            self.rows.append(Row(layer, own, recall, best))
        else:  # attend with the selection the levers give; the layer's own goes beside it
            keep = self.levers.used(layer, sel, start, visible, self.ctx_len)  # [B, T] bool
            used = [(torch.nonzero(row)[:, 0] + start).to(torch.int32).numpy() for row in keep]
            used_recall = None if probs is None else (probs * keep).sum(dim=1).numpy()
            self.rows.append(Row(layer, used, used_recall, best, own, recall))
        if self.observe_only:
            return attn.dense(query, key, value, mask, scaling, softcap)
        if logits is not None or keep is not None:  # attend over the selection by masking the dense logits
            if keep is None:
                keep = torch.zeros(batch, visible, dtype=torch.bool).scatter_(1, sel, True)
            if logits is None:
                logits = attn.logits_of(query, key, mask, scaling, softcap)
            p = torch.softmax(logits.masked_fill(~keep[:, None, None, :], float("-inf")), dim=-1)
            return attn.weighted_values(p, value)
        idx = sel[:, None, :, None]  # gather the selected keys and values, attend over them
        k_sel = key.gather(2, idx.expand(batch, key.shape[1], k, key.shape[3]))
        v_sel = value.gather(2, idx.expand(batch, value.shape[1], k, value.shape[3]))
        m_sel = None if mask is None else mask[..., :visible].gather(3, sel[:, None, None, :])
        return attn.dense(query, k_sel, v_sel, m_sel, scaling, softcap)


def decode_step(backbone, session: DecodeSession, cache, tokens, step: int, ctx_len: int):
    """Feed one token per request (``tokens`` [B]) at decode ``step``, ``ctx_len`` tokens cached
    once it is in; returns the next-token logits [B, V] and the layers' rows (:class:`Row`)."""
    session.begin_step(step, ctx_len)
    logits = backbone.model(input_ids=tokens[:, None], cache=cache, use_cache=True).logits[:, -1]
    rows, session.rows = session.rows, []
    return logits, rows


def decode(cfg: DecodeConfig, out: str | Path, overwrite: bool = False, progress: bool = True,
           indexer_options: dict | None = None, on_progress=None, prefill_chunk: int | None = None) -> Path:
    """Run one DSA decode and write its index log to ``out``; returns the folder.

    ``out`` follows the output rule (``harness.core.outputs``): new or empty, or an index log
    replaced with ``overwrite``. ``progress`` shows a progress bar on stderr;
    ``on_progress(phase, done, total)``, when given, hears of the loading (``"load <backbone>"``,
    0, 0), the indexer fit (``"fit <backbone>"``, layers) and the decode (``"decode <backbone>"``,
    steps).

    The prompts are prefilled ``prefill_chunk`` tokens at a time (default: the size
    ``trace_gen.prefill.prefill_chunk_tokens`` picks; a prompt that fits in one chunk is
    prefilled in one forward pass). A decode that exceeds the backbone's context, or whose
    caches would not fit in the memory available, is refused before its weights load when
    the backbone's config can be read without them."""
    import torch
    from transformers import DynamicCache

    cfg.validate()
    out = Path(out)
    check_output_folder(out, "decode", overwrite, owned=is_index_log_folder)
    indexer_cls = get_indexer(cfg.indexer)
    check_backbone(cfg.backbone)
    check_text(cfg.text)
    options = indexer_options or {}
    chunk = prefill_chunk_tokens(cfg.prompt_tokens, cfg.requests, prefill_chunk)
    config = backbone_config(cfg.backbone)
    if config is not None:
        check_fits(config, cfg, indexer_cls, options, chunk)
        cfg.lever_plan(layer_types(config))  # index layers the backbone has
    if on_progress is not None:
        on_progress(f"load {cfg.backbone}", 0, 0)
    backbone = load_backbone(cfg.backbone, seed=cfg.seed, topk=cfg.topk)
    memory = check_fits(backbone.config, cfg, indexer_cls, options, chunk)
    ids, text_meta = prompts(backbone, cfg.text, cfg.prompt_tokens, cfg.requests, cfg.seed)
    torch.manual_seed(cfg.seed)
    indexer = indexer_cls(backbone, cfg.topk, cfg.prompt_tokens + cfg.steps, cfg.requests, options,
                          on_progress)
    attn.register(backbone.model)
    plan = cfg.lever_plan(backbone.layer_types())
    session = DecodeSession(indexer, cfg.topk, cfg.sink_tokens, cfg.local_window, cfg.observe_only, cfg.recall,
                            plan)
    meta = {
        "backbone": backbone.describe(),
        "indexer": {"name": cfg.indexer, "topk": cfg.topk, "sink_tokens": cfg.sink_tokens,
                    "local_window": cfg.local_window, "observe_only": cfg.observe_only,
                    **indexer.describe(), **({"levers": plan.describe()} if plan.active else {})},
        "text": text_meta,
        "seed": cfg.seed, "package_version": __version__, "decode_config": asdict(cfg),
        "config_hash": config_hash(asdict(cfg)), "requests": cfg.requests, "steps": cfg.steps,
        "layers": backbone.layers, "prompt_tokens": cfg.prompt_tokens,
        "prefill": {"chunk_tokens": chunk, "chunks": -(-cfg.prompt_tokens // chunk)},
        "memory": memory,
        "torch": torch.__version__, "transformers": _transformers_version(),
        "host": platform.node(), "torch_threads": torch.get_num_threads(),
    }
    generated = np.zeros((cfg.requests, cfg.steps), dtype=np.int64)
    with IndexLogWriter(out, meta, overwrite=overwrite, own=plan.active) as writer, attn.active(session):
        cache = DynamicCache(config=backbone.config)
        t0 = time.perf_counter()
        nxt = prefill(backbone, ids, cache, session, chunk, progress).argmax(-1)
        t1 = time.perf_counter()
        for step in progress_bar(range(cfg.steps), desc=f"decode {backbone.name}", disable=not progress,
                                 unit="step", leave=False):
            ctx_len = cfg.prompt_tokens + step + 1
            logits, rows = decode_step(backbone, session, cache, nxt, step, ctx_len)
            generated[:, step] = nxt.numpy()
            nxt = logits.argmax(-1)
            for row in rows:
                for r in range(cfg.requests):
                    writer.add(r, step, row.layer, ctx_len, row.positions[r], _at(row.recall, r), _at(row.best, r),
                               None if row.own is None else row.own[r], _at(row.own_recall, r))
            if on_progress is not None:
                on_progress(f"decode {backbone.name}", step + 1, cfg.steps)
        t2 = time.perf_counter()
        writer.metadata["timing"] = {"prefill_s": t1 - t0, "decode_s": t2 - t1,
                                     "decode_tokens_per_s": cfg.steps * cfg.requests / (t2 - t1)}
        texts = {str(r): backbone.tokenizer.decode(generated[r].tolist()) for r in range(cfg.requests)}
        return writer.close(generated={"text": texts, "token_ids": generated.tolist()})


def _at(values: np.ndarray | None, r: int) -> float | None:
    """Request r's value of a per-request measurement (None when not measured)."""
    return None if values is None else float(values[r])


def check_fits(config, cfg: DecodeConfig, indexer_cls, options: dict, chunk: int) -> dict:
    """Refuse a decode longer than the backbone's context, or whose KV cache, indexer key cache
    and largest prefill mask (``chunk`` tokens) exceed the memory available now; returns those
    sizes (bytes)."""
    _check_limit(cfg, context_limit(config))
    max_ctx = cfg.prompt_tokens + cfg.steps
    name = cfg.backbone
    memory = {"kv_cache_bytes": kv_cache_bytes(config, cfg.requests, max_ctx),
              "indexer_cache_bytes": indexer_cls.cache_bytes(config, cfg.requests, max_ctx, options),
              "prefill_mask_bytes": 4 * cfg.requests * cfg.prompt_tokens * chunk}
    need, free = sum(memory.values()), available_memory()
    if free is not None and need > free:
        raise UserError(f"{cfg.requests} request(s) of {max_ctx:,} tokens on {name} need "
                        f"{need / 2**30:.1f} GiB for the KV cache, indexer keys and prefill mask; "
                        f"{free / 2**30:.1f} GiB of memory is available")
    return memory


def _check_limit(cfg: DecodeConfig, limit: int | None) -> None:
    if limit and cfg.prompt_tokens + cfg.steps > limit:
        raise UserError(f"prompt of {cfg.prompt_tokens:,} tokens + {cfg.steps} steps exceeds "
                        f"{cfg.backbone}'s context of {limit:,} tokens")


def check_context(cfg: DecodeConfig) -> int | None:
    """Refuse a decode longer than the backbone's context, naming index layers it does not
    have, or whose caches would not fit in the memory available, when the backbone's config can
    be read without its weights (sweep specs check this before anything runs); returns the
    bytes its caches take (None when the config cannot be read)."""
    config = backbone_config(cfg.backbone)
    if config is None:
        return None
    _check_limit(cfg, context_limit(config))
    cfg.lever_plan(layer_types(config))
    memory = check_fits(config, cfg, get_indexer(cfg.indexer), {},
                        prefill_chunk_tokens(cfg.prompt_tokens, cfg.requests, None))
    return sum(memory.values())


def greedy_dense(backbone, ids: np.ndarray, steps: int) -> tuple[np.ndarray, float]:
    """Greedy decode with the model's own SDPA attention and no harness in the way: the reference
    an observe-only decode must reproduce, and the dense speed a sparse decode is measured against.
    Returns the tokens fed at each step [B, steps] (as ``decode`` logs them) and the seconds the
    ``steps`` decode forwards took. Leaves the model on SDPA attention."""
    import torch
    from transformers import DynamicCache

    backbone.model.set_attn_implementation("sdpa")
    cache = DynamicCache(config=backbone.config)
    nxt = backbone.model(input_ids=torch.from_numpy(ids), cache=cache, logits_to_keep=1).logits[:, -1].argmax(-1)
    fed = np.zeros((ids.shape[0], steps), dtype=np.int64)
    t0 = time.perf_counter()
    for step in range(steps):
        fed[:, step] = nxt.numpy()
        nxt = backbone.model(input_ids=nxt[:, None], cache=cache).logits[:, -1].argmax(-1)
    return fed, time.perf_counter() - t0


def _transformers_version() -> str:
    import transformers

    return transformers.__version__
