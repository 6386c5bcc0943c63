"""KV geometries: bytes per token and layer of the KV entry and the indexer key, per model, and
the compute of one decode step (FLOPs), which the step-time model turns into cycles.

``native`` is derived from the backbone config recorded in an index log; the presets describe
real serving models. A GQA model in bf16 stores ``2 * kv_heads * head_dim * 2`` bytes per token
and layer. GQA models have no trained indexer; their presets assume DeepSeek-V3.2's lightning
indexer key format (128 FP8 values + one FP32 scale = 132 B) so the study can put DSA on them.

Layer mapping: a log from a backbone with ``L_log`` layers drives a geometry of ``L`` layers by
stretching: geometry layer ``g`` replays the selections of log layer ``floor(g * L_log / L)``.
Each geometry layer still has its own KV arrays (its own addresses and token ids), so one decode
step touches ``L`` layers' worth of distinct tokens, as the serving model would.

Compute per layer and request of one decode step (what the step-time model charges between the
memory phases; multiply-adds count as 2 FLOPs):

- index phase: ``index_flops_per_token`` for every cached token (the indexer's
  ``2 * H_I * d_I`` scoring FLOPs; top-k selection is not counted);
- gather phase: ``attn_flops_per_token`` for every selected token (scores and values of all query
  heads over the token's KV) plus ``layer_flops``, the rest of the layer: ``2 *`` the parameters
  one token activates in that layer (projections, MLP or routed + shared experts, router,
  indexer projections).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from harness.core.classes import LINE_BYTES
from harness.core.errors import UserError

DSA_INDEX_KEY_BYTES = 132  # 128 FP8 values + FP32 scale (DeepSeek-V3.2 indexer cache)
MAX_LAYERS = (1 << 16) - 1  # token ids hold the layer in 16 bits (trace_gen.stream.token_id)
MAX_TOKEN_BYTES = 1 << 30  # per token and layer: far beyond any model, small enough for int64 addresses


@dataclass(frozen=True)
class Geometry:
    name: str
    layers: int
    kv_bytes: int            # main KV entry, bytes per token per layer
    index_bytes: int         # indexer key, bytes per token per layer
    weight_bytes: int = 0    # bytes streamed per layer per step for the `weights` class (0: none)
    source: str = ""
    index_flops_per_token: float = 0.0  # indexer scoring, per cached token, layer and request
    attn_flops_per_token: float = 0.0   # sparse attention, per selected token, layer and request
    layer_flops: float = 0.0            # the rest of the layer, per layer and request

    @property
    def token_stride(self) -> int:
        """Bytes a token's KV occupies in a layout: ``kv_bytes`` rounded up to whole lines, so
        that every kv line belongs to exactly one token (DESIGN.md, section 5)."""
        return -(-self.kv_bytes // LINE_BYTES) * LINE_BYTES

    @property
    def lines_per_token(self) -> int:
        return self.token_stride // LINE_BYTES

    def layer_map(self, log_layers: int) -> np.ndarray:
        """Log layer replayed by each geometry layer (see the module docstring)."""
        return (np.arange(self.layers) * log_layers) // self.layers

    def to_dict(self) -> dict:
        return asdict(self)


# DeepSeek-V3.2's lightning indexer: 64 heads of dimension 128 (DeepSeek-V3.2-Exp config.json
# index_n_heads, index_head_dim); scoring one cached token costs 2 * 64 * 128 FLOPs.
DSA_INDEX_FLOPS = 2 * 64 * 128


def _gqa(name, layers, heads, kv_heads, head_dim, layer_params, source):
    """A GQA model in bf16 with DeepSeek's indexer put on it: KV 2 * kv_heads * head_dim * 2 B,
    attention 4 * heads * head_dim FLOPs per selected token (QK and PV), weights 2 B/parameter."""
    return Geometry(name, layers, 2 * kv_heads * head_dim * 2, DSA_INDEX_KEY_BYTES, 2 * layer_params, source,
                    DSA_INDEX_FLOPS, 4 * heads * head_dim, 2 * layer_params)


def _mla_attn_flops(heads: int, kv_lora_rank: int, rope_dim: int) -> int:
    """MLA decode with absorbed projections: per selected token and query head, scores over the
    latent and RoPE parts (2 * (r + d_rope)) and values over the latent (2 * r)."""
    return heads * 2 * (kv_lora_rank + rope_dim + kv_lora_rank)


PRESETS = {
    g.name: g for g in [
        # DeepSeek-V3.2-Exp: 61 layers (config.json num_hidden_layers); the FP8 sparse-MLA KV
        # cache stores per token 512 FP8 latent values + 4 FP32 scales + 64 BF16 RoPE values
        # = 656 B, and the indexer key cache 128 FP8 values + 1 FP32 scale = 132 B (DeepSeek's
        # FlashMLA / vLLM DSA kernels, DeepSeek-V3.2 tech report). Weights: 37 B activated
        # parameters per token in FP8 (DeepSeek-V3 report) / 61 layers ~ 606 M per layer.
        # Attention: 128 heads, kv_lora_rank 512, qk_rope_head_dim 64 (config.json).
        Geometry("deepseek-v3.2", 61, 656, 132, 606_000_000,
                 "DeepSeek-V3.2-Exp config + FlashMLA FP8 sparse cache format",
                 DSA_INDEX_FLOPS, _mla_attn_flops(128, 512, 64), 2 * 606_000_000),
        # GLM-5 (zai-org/GLM-5, transformers GlmMoeDsaConfig defaults): 78 layers, MLA with
        # kv_lora_rank 512 + qk_rope_head_dim 64 and a DSA indexer with index_head_dim 128, i.e.
        # the same per-token shapes as DeepSeek-V3.2; stored in the same FP8 format that is
        # 656 B and 132 B. Indexer 32 heads x 128; attention 64 heads. Parameters one token
        # activates in an MoE layer, from the same config: 8 routed + 1 shared experts
        # 9*3*6144*2048 = 339.7 M, MLA projections 6144*2048 + 2048*64*256 + 6144*576 +
        # 512*64*448 + 64*256*6144 = 165.1 M, indexer 2048*32*128 + 6144*(128+32) = 9.4 M,
        # router 6144*256 = 1.6 M: 515.8 M. Weights are not streamed (weight_bytes 0).
        Geometry("glm-5", 78, 656, 132, 0,
                 "transformers GlmMoeDsaConfig (zai-org/GLM-5), DeepSeek-V3.2 FP8 cache format",
                 2 * 32 * 128, _mla_attn_flops(64, 512, 64), 2 * 515_800_000),
        # Llama-3.1-8B (config.json): 32 layers, 32 heads, 8 KV heads, head_dim 128 -> 4096
        # B/token/layer in bf16. Parameters per layer: attention 4096*(4096+1024+1024+4096) + MLP
        # 3*4096*14336 = 218.1 M (weights 2 B each).
        _gqa("llama-3.1-8b", 32, 32, 8, 128, 218_103_808, "meta-llama/Llama-3.1-8B config.json"),
        # Llama-3.1-70B (config.json): 80 layers, 64 heads, 8 KV heads, head_dim 128 -> 4096
        # B/token/layer in bf16. Parameters per layer: attention 8192*(8192+1024+1024+8192) + MLP
        # 3*8192*28672 = 855.6 M.
        _gqa("llama-3.1-70b", 80, 64, 8, 128, 855_638_016, "meta-llama/Llama-3.1-70B config.json"),
    ]
}


def native_geometry(backbone: dict, indexer: dict) -> Geometry:
    """The geometry of the backbone that produced a log, from its config and indexer as recorded
    there.

    ``backbone`` holds ``num_hidden_layers`` and either MLA dims (``kv_lora_rank``,
    ``qk_rope_head_dim``) or ``num_key_value_heads``/``head_dim``, plus ``dtype_bytes``; the
    compute uses ``num_attention_heads``, ``hidden_size`` and ``intermediate_size`` when recorded
    (logs written before ``intermediate_size`` was recorded count attention projections only), and
    the indexer's ``H_I``/``d_I`` (an indexer without them, e.g. ``oracle``, costs nothing)."""
    try:
        layers = int(backbone["num_hidden_layers"])
        dtype_bytes = int(backbone.get("dtype_bytes", 2))
        heads = int(backbone.get("num_attention_heads", 0))
        if backbone.get("kv_lora_rank"):
            rank, rope = int(backbone["kv_lora_rank"]), int(backbone["qk_rope_head_dim"])
            kv = (rank + rope) * dtype_bytes
            attn = _mla_attn_flops(heads, rank, rope)
            layer_params = 0
        else:
            kv_heads, head_dim = int(backbone["num_key_value_heads"]), int(backbone["head_dim"])
            kv = 2 * kv_heads * head_dim * dtype_bytes
            attn = 4 * heads * head_dim
            hidden = int(backbone.get("hidden_size", 0))
            layer_params = (hidden * (2 * heads * head_dim + 2 * kv_heads * head_dim)
                            + 3 * hidden * int(backbone.get("intermediate_size", 0)))
        index_flops = 2 * int(indexer.get("H_I", 0)) * int(indexer.get("d_I", 0))
        index_bytes = int(indexer.get("key_bytes", 0))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise UserError(f"the log's backbone config lacks what the native geometry needs ({e})") from None
    if not (1 <= layers <= MAX_LAYERS and 1 <= kv <= MAX_TOKEN_BYTES and 0 <= index_bytes <= MAX_TOKEN_BYTES):
        raise UserError(f"the log's backbone config gives an impossible native geometry: {layers} layers, "
                        f"{kv} B of KV and {index_bytes} B of indexer key per token (layers 1 .. "
                        f"{MAX_LAYERS}, bytes up to {MAX_TOKEN_BYTES:,})")
    return Geometry(f"native:{backbone.get('name', 'backbone')}", layers, kv, index_bytes, dtype_bytes * layer_params,
                    "the backbone's own config and dtype", index_flops, attn, 2 * layer_params)


def get_geometry(name: str, log_meta: dict | None = None) -> Geometry:
    """A preset by name, or ``native`` for the log's own backbone."""
    if name == "native":
        if not log_meta:
            raise UserError("geometry 'native' needs an index log (it comes from the log's backbone)")
        return native_geometry(log_meta["backbone"].get("config") or {}, log_meta["indexer"])
    if name not in PRESETS:
        raise UserError(f"unknown geometry {name!r}; known: native, {', '.join(PRESETS)}")
    return PRESETS[name]
