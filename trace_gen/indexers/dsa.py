"""``dsa``: a DeepSeek-style lightning indexer fitted to a backbone that has none.

Score of cached token s for the current query (DeepSeek-V3.2's form):

    score(s) = sum_j w_j * ReLU(q'_j . k'_s),   q'_j = B_j q~,   k'_s = A k~_s

with ``k~_s`` token s's post-RoPE key heads concatenated, one indexer head per attention head
(``H_I = H``; head j projects the post-RoPE query head j: ``q'_j = B_j q_j``), dimension
``d_I``, and one indexer key ``k'_s`` per token shared by all indexer heads (the per-token
indexer key cache). A fixed random projection
carries no signal on wide heads (DESIGN.md, section 4), so A, B_j and w_j are fitted per layer by
distillation, as DeepSeek trained its indexer: minimise KL(p || softmax(score)) where p is the
layer's dense attention averaged over heads, on queries from a calibration text's prefill
(A starts from the keys' principal directions, B_j from the block of A of head j's key head).
Fits are cached per backbone and fit settings in the user cache folder. The fits the demo and
the scale specs need ship with the package (``trace_gen/indexers/fits``: each fit's state and
record under its cache name, and ``MANIFEST.json`` with their settings and SHA-256), made with
``dsa-harness calibrate --ship``: a decode uses a shipped fit whose name (backbone source,
settings, algorithm version) matches, and fits anything else (or on ``--refit``) as before.

Cost: the indexer key is stored as ``d_I`` FP8 values plus an FP32 scale (``d_I + 4`` bytes per
token and layer), as DeepSeek-V3.2 stores it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

from harness.core.canon import config_hash
from harness.core.errors import UserError, first_line, problems_error
from harness.core.fields import Field, check_fields
from harness.core.files import atomic_path, sha256_file, write_text_atomic
from harness.core.locks import FileLock
from harness.core.progress import progress_bar
from trace_gen.indexers.base import Indexer, LayerInputs


def _check_text(name):
    from trace_gen.text import check_text

    check_text(name)


FIT_FIELDS = {
    "d_I": Field(64, "int", 1, 1 << 16), "calibration_text": Field("python-docs", "str", check_value=_check_text),
    "calibration_tokens": Field(2048, "int", 1, 1 << 24), "calibration_windows": Field(2, "int", 1, 1 << 16),
    "queries": Field(512, "int", 1, 1 << 24), "iterations": Field(100, "int", 0, 1 << 24),
    "lr": Field(1e-3, "float", 0, lo_open=True), "min_query_pos": Field(64, "int", 0, 1 << 24),
    "seed": Field(0, "int", 0),
}
DEFAULTS = {key: field.default for key, field in FIT_FIELDS.items()}


# Settings a fit has only when they are set (absent from DEFAULTS, so that the fits made before
# they existed keep their cache key). window_keys=1: a sliding-window layer is fitted on each
# query's own window of keys, the same loss as over all keys (the others carry no attention) at a
# cost independent of calibration_tokens.
OPTIONAL_FIELDS = {"window_keys": Field(0, "int", 0, 1)}

# Fitted on 2,048-token windows, the indexer keeps 94 % of the oracle's attention mass on Gemma
# 3's full-attention layers at a 2k context (k = 256), but 76 % at 4k, 59 % at 8k and 42 % at 32k;
# fitted on 8k windows, 86 % at 8k but again 60 % at 16k (bench/decode_speed.py, README): the fit
# must see the distances the decode reaches. A decode longer than LONG_CONTEXT tokens (1.5 times
# the default windows, so the demo's 2,072 keep the default fit) therefore fits on windows of the
# backbone's whole context (at most LONG_CALIBRATION_TOKENS), unless the options say otherwise.
LONG_CONTEXT = 3072
LONG_CALIBRATION_TOKENS = 32768


def fit_settings(options: dict, context: int | None = None, limit: int | None = None) -> dict:
    """The fit settings of a decode of ``context`` tokens on a backbone whose context is
    ``limit``: ``DEFAULTS``, then the long-context settings when ``context`` exceeds
    ``LONG_CONTEXT``, then ``options``, every value type- and range-checked (one UserError
    listing every problem)."""
    fields = {**FIT_FIELDS, **OPTIONAL_FIELDS}
    checked, problems = check_fields(fields, options, "dsa indexer option ")
    problems = [f"{p.replace('unknown key ', 'unknown ')} (known: {', '.join(fields)})"
                if p.startswith("unknown key") else p for p in problems]
    if problems:
        raise problems_error("--indexer-option", problems)
    long = {}
    if context is not None and context > LONG_CONTEXT:
        windows = min(LONG_CALIBRATION_TOKENS, limit or LONG_CALIBRATION_TOKENS)
        long = {"calibration_tokens": windows, "window_keys": 1}
    return {**DEFAULTS, **long, **checked}


class LayerIndexer(torch.nn.Module):
    """A, B and w of one layer. Indexer head j projects query head j only (B is block
    diagonal): one indexer head per attention head, which generalises far better than a dense
    projection of all heads (measured on held-out queries of both real backbones)."""

    def __init__(self, heads: int, head_dim: int, k_dim: int, d_i: int):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(d_i, k_dim))
        self.b = torch.nn.Parameter(torch.zeros(heads, d_i, head_dim))
        self.w = torch.nn.Parameter(torch.full((heads,), 1.0 / heads))
        self.heads, self.head_dim, self.d_i = heads, head_dim, d_i

    def keys(self, k: torch.Tensor) -> torch.Tensor:
        """[..., KH*D] -> [..., d_I]"""
        return k @ self.a.T

    def queries(self, q: torch.Tensor) -> torch.Tensor:
        """[N, H*D] -> [N, H_I, d_I]"""
        return torch.einsum("nhD,hdD->nhd", q.view(q.shape[0], self.heads, self.head_dim), self.b)

    def scores(self, qi: torch.Tensor, ki: torch.Tensor) -> torch.Tensor:
        """[N, H_I, d_I] x [T, d_I] (keys shared by the N queries) or [N, T, d_I] -> [N, T]"""
        if ki.dim() == 2:
            s = torch.relu((qi.reshape(-1, self.d_i) @ ki.T).view(qi.shape[0], self.heads, -1))
        else:
            s = torch.relu(torch.einsum("nhd,ntd->nht", qi, ki))
        return torch.einsum("h,nht->nt", self.w, s)


def _flat_q(query: torch.Tensor) -> torch.Tensor:
    """[B, H, N, D] -> [B, N, H*D]"""
    b, h, n, d = query.shape
    return query.permute(0, 2, 1, 3).reshape(b, n, h * d)


def query_rows(n: int, windows: int, layers: int, queries: int, min_pos: int, gen) -> dict:
    """The prefill positions whose queries each layer's fit learns from: layer -> [windows, M],
    per window ``M = queries // windows`` distinct positions of ``min_pos .. n - 1`` drawn with
    ``gen`` (layer by layer, window by window), sorted."""
    per_window = max(1, queries // windows)
    picked = {}
    for layer in range(layers):
        rows = []
        for _ in range(windows):
            candidates = torch.arange(min(min_pos, n - 1), n)
            picks = torch.randperm(len(candidates), generator=gen)[:per_window]
            rows.append(candidates[picks].sort().values)
        picked[layer] = torch.stack(rows)
    return picked


# The fit's algorithm, hashed into a fit's cache key and recorded in the fit: a fit of the same
# settings by another version is another fit. 1 (unrecorded): Adam on autograd, every query
# scored against every key. 2: the same Adam steps on the hand-written blocked loss and gradient
# of fit_loss, 2-3 times faster (bench/fit_speed.py); rounding differs, and the final KLs are
# version 1's within 2 %.
FIT_VERSION = 2
# Queries per block of fit_loss: a block is scored against the keys its queries see (sorted
# queries: a causal block sees the keys up to its last query, not the whole window, and a
# sliding-window layer's block only those of its queries' windows), and its [H, block, keys]
# tensors are freed before the next block's.
FIT_BLOCK = 32


class _Window:
    """One calibration window of a layer's fit: its queries ``q`` [M, H*D], keys ``k`` [N, KH*D]
    and, per block of FIT_BLOCK queries, ``(rows, keys, p, hidden, mass)``: the block's rows, its
    keys (a slice of ``k``, or [m, t] positions per query when each query has its own window),
    the target attention ``p`` [m, t] on them, the keys a query does not see ``hidden`` [m, t]
    and each query's target mass on its block's keys ``mass`` [m] (1 but for rounding)."""

    def __init__(self, q, k, target, visible, window=None):
        self.q, self.k, self.blocks = q, k, []
        n = visible.shape[1]
        first = visible.int().argmax(-1)
        last = n - 1 - visible.flip(-1).int().argmax(-1)
        for r0 in range(0, visible.shape[0], FIT_BLOCK):
            rows = slice(r0, min(r0 + FIT_BLOCK, visible.shape[0]))
            if window:  # a query's own position is its last visible key
                keys = last[rows, None] - window + 1 + torch.arange(window)
                seen = visible[rows].gather(1, keys.clamp_min(0)) & (keys >= 0)
                keys = keys.clamp_min(0)
                p = target[rows].gather(1, keys).masked_fill(~seen, 0)
            else:
                keys = slice(int(first[rows].min()), int(last[rows].max()) + 1)
                seen, p = visible[rows, keys], target[rows, keys]
            self.blocks.append((rows, keys, p, ~seen, p.sum(-1)))

    def entropy(self) -> float:
        """The target's mean entropy over the queries (KL = cross-entropy - entropy)."""
        return -sum(float(torch.special.xlogy(p, p).sum()) for _, _, p, _, _ in self.blocks) / self.q.shape[0]


def fit_loss(a, b, w, windows: list[_Window], grad: bool = True) -> tuple[float, tuple | None]:
    """The fit's loss, the cross-entropy of softmax(score) to the target averaged over queries
    and windows, and its gradient in (a, b, w) (None without ``grad``), computed block by block
    by hand: d loss / d score = softmax(score) - p on a query's visible keys, and through the
    weighted ReLU d score / d z_h = w_h 1[z_h > 0] (z_h = q'_h . k'). No autograd graph is kept,
    and each block's [H, m, t] tensors are reused in place, which makes an evaluation a few
    times cheaper than autograd over [M, H, N] (tests/test_dsa_fit.py checks that both agree)."""
    heads, d_i, dim = b.shape
    neg = torch.finfo(torch.float32).min
    total, grads = 0.0, (torch.zeros_like(a), torch.zeros_like(b), torch.zeros_like(w)) if grad else None
    for win in windows:
        qh = win.q.view(win.q.shape[0], heads, dim).transpose(0, 1)  # [H, M, D]
        qi, ki = torch.bmm(qh, b.transpose(1, 2)), win.k @ a.T       # [H, M, d_I], [N, d_I]
        dqi, dki = torch.zeros_like(qi), torch.zeros_like(ki)        # dqi without the factor w_h
        scale = 1.0 / (win.q.shape[0] * len(windows))
        for rows, keys, p, hidden, mass in win.blocks:
            qb, kb = qi[:, rows], ki[keys]
            m = qb.shape[1]
            if kb.dim() == 2:  # keys shared by the block's queries
                r = (qb.reshape(-1, d_i) @ kb.T).view(heads, m, -1)
            else:  # [m, t, d_I]: each query's own keys
                r = torch.einsum("hmd,mtd->hmt", qb, kb).contiguous()
            r.clamp_min_(0)
            s = (w @ r.view(heads, -1)).view(m, -1).masked_fill_(hidden, neg)  # scores [m, t]
            top = s.max(-1, keepdim=True).values
            total += float(mass @ top[:, 0] - p.reshape(-1) @ s.reshape(-1)) * scale
            e = s.sub_(top).exp_()
            norm = e.sum(-1)
            total += float(mass @ norm.log()) * scale  # + mass * logsumexp(s)
            if not grad:
                continue
            g = e.mul_((mass / norm)[:, None]).sub_(p).mul_(scale)  # d loss / d score
            dz = r.sign_().mul_(g)                                   # d loss / d z_h, but for w_h
            qw = qb * w[:, None, None]
            if kb.dim() == 2:
                dqi[:, rows] += (dz.view(-1, dz.shape[2]) @ kb).view(heads, m, d_i)
                dki[keys] += dz.view(-1, dz.shape[2]).T @ qw.reshape(-1, d_i)
            else:
                dqi[:, rows] += torch.einsum("hmt,mtd->hmd", dz, kb)
                dki.index_add_(0, keys.reshape(-1), torch.einsum("hmt,hmd->mtd", dz, qw).reshape(-1, d_i))
        if grad:
            da, db, dw = grads
            dw += (qi * dqi).sum((1, 2))  # sum over (m, t) of g r_h = sum over m of q'_h . dqi_h
            da += dki.T @ win.k
            db += torch.bmm((dqi * w[:, None, None]).transpose(1, 2), qh)
    return total, grads


def fit_layer(query, visible, key, scaling, d_i, iterations, lr, window=None) -> tuple[LayerIndexer, dict]:
    """Fit one layer's indexer to its dense attention on a prefill of B windows: ``query``
    [B, H, M, D] the queries of M positions per window, ``visible`` [B, M, N] the keys each of
    them attends to (the model's own mask), ``key`` [B, KH, N, D] every key. With ``window``
    (a sliding-window layer), each query is fitted on the ``window`` keys ending at its own
    position only, which hold all of its attention. ``iterations`` Adam steps of ``lr`` on
    ``fit_loss`` from an SVD start.

    Faster optimisers were tried (L-BFGS; Adam with larger steps, relative to each tensor's
    scale; both on whitened keys and queries): in 60-80 steps they reach a lower KL, down to
    half this fit's. But the fit learns from two windows and overfits them (its KL on held-out
    windows is several times its KL), and their KL on held-out windows was up to twice this
    fit's, with no better decode recall: the steps stay version 1's, made cheaper."""
    from trace_gen.attention import logits_of

    batch, heads, _, dim = query.shape
    kheads = key.shape[1]
    with torch.no_grad():
        keys = _flat_q(key)                                          # [B, N, KH*D]
        windows = []
        for b in range(batch):
            logits = logits_of(query[b:b + 1], key[b:b + 1], None, scaling)
            target = torch.softmax(logits.masked_fill(~visible[b], float("-inf")), dim=-1).mean(dim=1)[0]
            windows.append(_Window(_flat_q(query[b:b + 1])[0], keys[b], target, visible[b], window))
        entropy = sum(win.entropy() for win in windows) / batch
        layer = LayerIndexer(heads, dim, kheads * dim, d_i)
        # start from the keys' principal directions, each query head seen through its key head's block
        _, _, v = torch.linalg.svd(keys.reshape(-1, kheads * dim), full_matrices=False)
        basis = v[:d_i]
        layer.a[: basis.shape[0]] = basis * scaling ** 0.5
        for h in range(heads):
            kv = h // (heads // kheads)
            layer.b[h, : basis.shape[0]] = basis[:, kv * dim:(kv + 1) * dim] * scaling ** 0.5
    params = [layer.a, layer.b, layer.w]
    first = fit_loss(*(p.detach() for p in params), windows, grad=False)[0]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(iterations):
        _, grads = fit_loss(*(p.detach() for p in params), windows)
        for p, grad in zip(params, grads):
            p.grad = grad
        opt.step()
    final = fit_loss(*(p.detach() for p in params), windows, grad=False)[0]
    return layer, {"kl_initial": first - entropy, "kl_final": final - entropy}


def calibrate(backbone, settings: dict, progress=True) -> tuple[list[LayerIndexer], dict]:
    """Fit every layer's indexer on the calibration text; returns the layers and a fit record.
    ``progress``: True shows a bar over the layers on stderr (``harness.core.progress``), a
    callable hears ``("fit <backbone>", i, n)`` instead, False keeps quiet."""
    from trace_gen.prefill import capture_prefill, prompts

    ids, text_meta = prompts(backbone, settings["calibration_text"], int(settings["calibration_tokens"]),
                             int(settings["calibration_windows"]), int(settings["seed"]))
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(settings["seed"]))
    rows = query_rows(ids.shape[1], ids.shape[0], backbone.layers, int(settings["queries"]),
                      int(settings["min_query_pos"]), gen)
    captured = capture_prefill(backbone, ids, rows)
    window = getattr(backbone.config, "sliding_window", None) if settings.get("window_keys") else None
    layers, record = [], []
    bar = progress_bar(total=backbone.layers, desc=f"fitting the dsa indexer of {backbone.name}", unit="layer",
                       disable=progress is not True)
    for i, kind in enumerate(backbone.layer_types()):
        query, visible, key, scaling = captured.pop(i)
        if callable(progress):
            progress(f"fit {backbone.name}", i, backbone.layers)
        layer, stats = fit_layer(query, visible, key, scaling, int(settings["d_I"]),
                                 int(settings["iterations"]), float(settings["lr"]),
                                 window if kind == "sliding" else None)
        layers.append(layer)
        record.append(stats)
        bar.update()
    bar.close()
    fit = {"settings": settings, "algorithm": FIT_VERSION, "text": text_meta, "layers": record,
           "seconds": time.perf_counter() - t0,
           "mean_kl_final": sum(r["kl_final"] for r in record) / len(record)}
    return layers, fit


def fit_key(backbone, settings: dict) -> str:
    """The cache name of a fit: the backbone, a hash of its source, the settings and FIT_VERSION."""
    return f"{backbone.name}-{config_hash({'backbone': backbone.source, 'fit': settings, 'algorithm': FIT_VERSION})}"


def load_or_fit(backbone, settings: dict, refit: bool = False, progress=True):
    """The fit for this backbone and settings: the user cache's, else the package's shipped one,
    else fitted now (and cached). A lock per fit lets one process fit while others needing the
    same fit wait and then load it."""
    from trace_gen.backbones import cache_dir

    folder = cache_dir("indexers")
    key = fit_key(backbone, settings)
    path, meta_path = folder / f"{key}.pt", folder / f"{key}.json"
    with FileLock(folder / f"{key}.lock"):
        if path.exists() and meta_path.exists() and not refit:
            try:
                return _load_fit(path, meta_path, backbone, settings)
            except Exception as e:  # a cache file that cannot be read, or is not this fit's: fitted again
                print(f"warning: the cached dsa indexer fit {path} is unusable ({first_line(e)}); fitting it again",
                      file=sys.stderr)
        shipped = None if refit else shipped_fit(key)
        if shipped is not None:
            try:
                return _load_fit(*shipped, backbone, settings)
            except Exception as e:  # a damaged install: fit (and cache) it instead
                print(f"warning: the shipped dsa indexer fit {shipped[0]} is unusable ({first_line(e)}); "
                      "fitting it again", file=sys.stderr)
        layers, fit = calibrate(backbone, settings, progress)
        with atomic_path(path) as tmp:
            torch.save([layer.state_dict() for layer in layers], tmp)
        write_text_atomic(meta_path, json.dumps(fit, indent=1))
    return layers, {**fit, "cache_file": str(path)}


SHIPPED = Path(__file__).with_name("fits")   # the package's fits (see the module docstring)


def shipped_manifest() -> dict:
    """The shipped fits by cache name (``MANIFEST.json``'s ``fits``); empty when none ship."""
    manifest = SHIPPED / "MANIFEST.json"
    return json.loads(manifest.read_text())["fits"] if manifest.exists() else {}


def shipped_fit(key: str) -> tuple[Path, Path] | None:
    """The shipped fit named ``key`` as (state, record) paths, its state's SHA-256 checked
    against the manifest; None when none ships or it does not match (the caller fits anew)."""
    entry = shipped_manifest().get(key)
    if entry is None:
        return None
    path = SHIPPED / f"{key}.pt"
    if not path.exists() or sha256_file(path) != entry["sha256"]:
        print(f"the shipped dsa indexer fit {path} is {'damaged' if path.exists() else 'missing'} (its "
              "MANIFEST.json hash does not match); fitting again", file=sys.stderr)
        return None
    return path, SHIPPED / f"{key}.json"


def ship_fit(backbone, settings: dict) -> Path:
    """Copy the user cache's fit for ``backbone`` and ``settings`` into the package's fits and
    record it in the manifest (its settings, algorithm, KL and SHA-256); for maintainers, in a
    source tree."""
    from trace_gen.backbones import cache_dir

    key = fit_key(backbone, settings)
    path, meta_path = cache_dir("indexers") / f"{key}.pt", cache_dir("indexers") / f"{key}.json"
    if not (path.exists() and meta_path.exists()):
        raise UserError(f"no cached fit {key} to ship: run calibrate without --ship first")
    SHIPPED.mkdir(exist_ok=True)
    fit = json.loads(meta_path.read_text())
    with atomic_path(SHIPPED / f"{key}.pt") as tmp:
        shutil.copyfile(path, tmp)
    write_text_atomic(SHIPPED / f"{key}.json", json.dumps(fit, indent=1))
    fits = shipped_manifest()
    fits[key] = {"backbone": backbone.name, "source": backbone.source, "settings": fit["settings"],
                 "algorithm": fit["algorithm"], "mean_kl_final": fit["mean_kl_final"],
                 "fit_seconds": round(fit["seconds"], 1), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    write_text_atomic(SHIPPED / "MANIFEST.json", json.dumps({"fits": dict(sorted(fits.items()))}, indent=1) + "\n")
    return SHIPPED / f"{key}.pt"


def _load_fit(path, meta_path, backbone, settings: dict) -> tuple[list[LayerIndexer], dict]:
    """A cached or shipped fit, checked to be this backbone's fit with these settings: a truncated
    file, one of another fit (other settings or fit algorithm, another backbone's shapes) or one
    holding NaNs raises, and the caller fits again; it never yields selections of another fit."""
    meta = json.loads(meta_path.read_text())
    if not isinstance(meta, dict) or meta.get("settings") != json.loads(json.dumps(settings)):
        raise ValueError(f"{meta_path.name} records other fit settings")
    if meta.get("algorithm") != FIT_VERSION:
        raise ValueError(f"it was made by fit algorithm {meta.get('algorithm')}, not {FIT_VERSION}")
    state = torch.load(path, weights_only=True)
    heads = int(backbone.config.num_attention_heads)
    if not isinstance(state, list) or len(state) != backbone.layers:
        raise ValueError(f"it holds {len(state) if isinstance(state, list) else 'no'} layers, not {backbone.layers}")
    layers = []
    for sd in state:
        h, d_i, head_dim = sd["b"].shape
        if (h, d_i) != (heads, int(settings["d_I"])):
            raise ValueError(f"its layers have {h} heads of d_I {d_i}, not {heads} of {settings['d_I']}")
        if not all(torch.isfinite(t).all() for t in sd.values()):
            raise ValueError("it holds values that are not finite")
        layer = LayerIndexer(h, head_dim, sd["a"].shape[1], d_i)
        layer.load_state_dict(sd)
        layers.append(layer)
    return layers, {**meta, "cache_file": str(path)}


class DsaIndexer(Indexer):
    name = "dsa"
    description = "DeepSeek-style lightning indexer, fitted to the backbone by distillation"

    def __init__(self, backbone, topk, max_ctx, batch, options, on_progress=None):
        super().__init__(backbone, topk, max_ctx, batch, options, on_progress)
        self.settings = fit_settings({k: v for k, v in options.items() if k != "refit"}, max_ctx,
                                     getattr(backbone.config, "max_position_embeddings", None))
        self.layers, self.fit = load_or_fit(backbone, self.settings, bool(options.get("refit")),
                                            on_progress or True)
        d_i = int(self.settings["d_I"])
        self.cache = torch.zeros(backbone.layers, batch, max_ctx, d_i)  # indexer keys, absolute positions

    @classmethod
    def cache_bytes(cls, config, batch, tokens, options):
        d_i = int(fit_settings({k: v for k, v in options.items() if k != "refit"})["d_I"])
        return 4 * d_i * int(config.num_hidden_layers) * batch * tokens  # fp32, like self.cache

    def prefill(self, layer, query, key, start):
        with torch.no_grad():
            self.cache[layer, :, start:start + key.shape[2]] = self.layers[layer].keys(_flat_q(key))

    def scores(self, x: LayerInputs):
        lay = self.layers[x.layer]
        end = x.start + x.key.shape[2]
        self.cache[x.layer, :, end - 1] = lay.keys(_flat_q(x.key[:, :, -1:]))[:, 0]
        qi = lay.queries(_flat_q(x.query)[:, 0])                      # [B, H_I, d_I]
        return lay.scores(qi, self.cache[x.layer, :, x.start:end])    # [B, T]

    def describe(self) -> dict:
        d_i = int(self.settings["d_I"])
        return {"key_bytes": d_i + 4, "d_I": d_i, "H_I": self.layers[0].heads,
                "key_format": "FP8 values + FP32 scale (as DeepSeek-V3.2 stores them)",
                "fit": {k: v for k, v in self.fit.items() if k != "layers"}}
