"""KV geometries: bytes per token and layer of the KV entry and the indexer key, per model.

``native`` is derived from the backbone config recorded in an index log; the presets describe
real serving models. A GQA model in bf16 stores ``2 * kv_heads * head_dim * 2`` bytes per token
and layer. GQA models have no trained indexer; their presets assume DeepSeek-V3.2's lightning
indexer key format (128 FP8 values + one FP32 scale = 132 B) so the study can put DSA on them.

Layer mapping: a log from a backbone with ``L_log`` layers drives a geometry of ``L`` layers by
stretching: geometry layer ``g`` replays the selections of log layer ``floor(g * L_log / L)``.
Each geometry layer still has its own KV arrays (its own addresses and token ids), so one decode
step touches ``L`` layers' worth of distinct tokens, as the serving model would.
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

    @property
    def token_stride(self) -> int:
        """Bytes a token's KV occupies in a layout: ``kv_bytes`` rounded up to whole lines, so
        that every kv line belongs to exactly one token (DESIGN.md)."""
        return -(-self.kv_bytes // LINE_BYTES) * LINE_BYTES

    @property
    def lines_per_token(self) -> int:
        return self.token_stride // LINE_BYTES

    def layer_map(self, log_layers: int) -> np.ndarray:
        """Log layer replayed by each geometry layer (see the module docstring)."""
        return (np.arange(self.layers) * log_layers) // self.layers

    def to_dict(self) -> dict:
        return asdict(self)


def _gqa(name, layers, kv_heads, head_dim, weight_bytes, source):
    return Geometry(name, layers, 2 * kv_heads * head_dim * 2, DSA_INDEX_KEY_BYTES, weight_bytes, source)


PRESETS = {
    g.name: g for g in [
        # DeepSeek-V3.2-Exp: 61 layers (config.json num_hidden_layers); the FP8 sparse-MLA KV
        # cache stores per token 512 FP8 latent values + 4 FP32 scales + 64 BF16 RoPE values
        # = 656 B, and the indexer key cache 128 FP8 values + 1 FP32 scale = 132 B (DeepSeek's
        # FlashMLA / vLLM DSA kernels, DeepSeek-V3.2 tech report). Weights: 37 B activated
        # parameters per token in FP8 (DeepSeek-V3 report) / 61 layers ~ 606 MB per layer.
        Geometry("deepseek-v3.2", 61, 656, 132, 606_000_000,
                 "DeepSeek-V3.2-Exp config + FlashMLA FP8 sparse cache format"),
        # GLM-5 (zai-org/GLM-5, transformers GlmMoeDsaConfig defaults): 78 layers, MLA with
        # kv_lora_rank 512 + qk_rope_head_dim 64 and a DSA indexer with index_head_dim 128, i.e.
        # the same per-token shapes as DeepSeek-V3.2; stored in the same FP8 format that is
        # 656 B and 132 B. Activated weights are not modelled (weight_bytes 0).
        Geometry("glm-5", 78, 656, 132, 0,
                 "transformers GlmMoeDsaConfig (zai-org/GLM-5), DeepSeek-V3.2 FP8 cache format"),
        # Llama-3.1-8B (config.json): 32 layers, 8 KV heads, head_dim 128 -> 4096 B/token/layer
        # in bf16. Weights per layer: attention 4096*(4096+1024+1024+4096) + MLP 3*4096*14336
        # = 218.1 M parameters * 2 B.
        _gqa("llama-3.1-8b", 32, 8, 128, 436_207_616, "meta-llama/Llama-3.1-8B config.json"),
        # Llama-3.1-70B (config.json): 80 layers, 8 KV heads, head_dim 128 -> 4096 B/token/layer
        # in bf16. Weights per layer: attention 8192*(8192+1024+1024+8192) + MLP 3*8192*28672
        # = 855.6 M parameters * 2 B.
        _gqa("llama-3.1-70b", 80, 8, 128, 1_711_276_032, "meta-llama/Llama-3.1-70B config.json"),
    ]
}


def native_geometry(backbone: dict, index_bytes: int) -> Geometry:
    """The geometry of the backbone that produced a log, from its config as recorded there.

    ``backbone`` holds ``num_hidden_layers`` and either MLA dims (``kv_lora_rank``,
    ``qk_rope_head_dim``) or ``num_key_value_heads``/``head_dim``, plus ``dtype_bytes``."""
    try:
        layers = int(backbone["num_hidden_layers"])
        dtype_bytes = int(backbone.get("dtype_bytes", 2))
        if backbone.get("kv_lora_rank"):
            kv = (int(backbone["kv_lora_rank"]) + int(backbone["qk_rope_head_dim"])) * dtype_bytes
        else:
            kv = 2 * int(backbone["num_key_value_heads"]) * int(backbone["head_dim"]) * dtype_bytes
        index_bytes = int(index_bytes)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise UserError(f"the log's backbone config lacks what the native geometry needs ({e})") from None
    if not (1 <= layers <= MAX_LAYERS and 1 <= kv <= MAX_TOKEN_BYTES and 0 <= index_bytes <= MAX_TOKEN_BYTES):
        raise UserError(f"the log's backbone config gives an impossible native geometry: {layers} layers, "
                        f"{kv} B of KV and {index_bytes} B of indexer key per token (layers 1 .. "
                        f"{MAX_LAYERS}, bytes up to {MAX_TOKEN_BYTES:,})")
    return Geometry(f"native:{backbone.get('name', 'backbone')}", layers, kv, index_bytes, 0,
                    "the backbone's own config and dtype")


def get_geometry(name: str, log_meta: dict | None = None) -> Geometry:
    """A preset by name, or ``native`` for the log's own backbone."""
    if name == "native":
        if not log_meta:
            raise UserError("geometry 'native' needs an index log (it comes from the log's backbone)")
        return native_geometry(log_meta["backbone"].get("config") or {}, log_meta["indexer"].get("key_bytes", 0))
    if name not in PRESETS:
        raise UserError(f"unknown geometry {name!r}; known: native, {', '.join(PRESETS)}")
    return PRESETS[name]
