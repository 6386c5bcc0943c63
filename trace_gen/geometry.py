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

Weights (:class:`Weights`): what one device reads of the model's weights in one decode step,
under the cited deployment of each preset: a dense model reads all its weights once per step,
shared by the batch; an MoE model (DeepSeek-V3.2, GLM-5) reads its dense parts (attention,
indexer, dense FFN layers, shared expert, router, LM head) and the routed experts that the
batch's tokens activate among those the device hosts under its expert-parallel layout. The
stream reads them as the ``weights`` class, per layer, after the layer's gather (the step's total
spread evenly over the geometry's layers).

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

from harness.core.errors import UserError
from harness.core.traffic import LINE_BYTES

DSA_INDEX_KEY_BYTES = 132  # 128 FP8 values + FP32 scale (DeepSeek-V3.2 indexer cache)
MAX_LAYERS = (1 << 16) - 1  # token ids hold the layer in 16 bits (trace_gen.stream.token_id)
MAX_TOKEN_BYTES = 1 << 30  # per token and layer: far beyond any model, small enough for int64 addresses


@dataclass(frozen=True)
class Weights:
    """The weights one device of a deployment reads in one decode step.

    ``dense_bytes``: every layer's dense part on this device (attention and indexer projections,
    dense FFN layers, shared experts, routers, norms), read once per step whatever the batch;
    ``head_bytes``: the LM head, once per step. An MoE model also reads, in each of its
    ``moe_layers``, the routed experts (``expert_bytes`` each) that the step's tokens activate
    among the ``experts_per_device`` this device hosts: the device's experts serve the tokens of
    all ``ep_devices`` devices of its expert-parallel group, each token picking
    ``experts_per_token`` of ``routed_experts``. ``deployment`` cites the layout."""

    dense_bytes: int
    head_bytes: int = 0
    moe_layers: int = 0
    routed_experts: int = 0
    experts_per_token: int = 0
    expert_bytes: int = 0
    experts_per_device: float = 0.0
    ep_devices: int = 1
    deployment: str = ""

    def experts_read(self, batch: int) -> float:
        """Expected distinct routed experts this device reads per MoE layer when each of the
        ``ep_devices`` devices decodes ``batch`` tokens, under uniform routing (each token picks
        ``experts_per_token`` of ``routed_experts`` at random): an expert is idle only if no token
        of the group picks it, with probability (1 - k/N)^(B x devices)."""
        if not self.moe_layers:
            return 0.0
        idle = (1 - self.experts_per_token / self.routed_experts) ** (batch * self.ep_devices)
        return self.experts_per_device * (1 - idle)

    def step_bytes(self, batch: int) -> int:
        """Bytes of weights this device reads in one decode step of ``batch`` requests."""
        routed = self.moe_layers * self.experts_read(batch) * self.expert_bytes
        return int(round(self.dense_bytes + self.head_bytes + routed))

    def resident_bytes(self) -> int:
        """Bytes of weights this device holds (what HBM must fit besides the KV cache)."""
        return int(round(self.dense_bytes + self.head_bytes
                         + self.moe_layers * self.experts_per_device * self.expert_bytes))


NO_WEIGHTS = Weights(0)


@dataclass(frozen=True)
class Geometry:
    name: str
    layers: int
    kv_bytes: int            # main KV entry, bytes per token per layer
    index_bytes: int         # indexer key, bytes per token per layer
    weights: Weights = NO_WEIGHTS  # what one device reads per step (see Weights)
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

    def weight_bytes(self, batch: int = 1) -> int:
        """Bytes of weights streamed per layer in a step of ``batch`` requests per device: the
        step's weights spread evenly over the layers, in whole lines."""
        return -(-self.weights.step_bytes(batch) // (self.layers * LINE_BYTES)) * LINE_BYTES

    def layer_map(self, log_layers: int) -> np.ndarray:
        """Log layer replayed by each geometry layer (see the module docstring)."""
        return (np.arange(self.layers) * log_layers) // self.layers

    def to_dict(self) -> dict:
        return asdict(self)


# DeepSeek-V3.2's lightning indexer: 64 heads of dimension 128 (DeepSeek-V3.2-Exp config.json
# index_n_heads, index_head_dim); scoring one cached token costs 2 * 64 * 128 FLOPs.
DSA_INDEX_FLOPS = 2 * 64 * 128


def _gqa(name, layers, heads, kv_heads, head_dim, layer_params, weights: Weights, source, tp: int = 1):
    """One device of a tensor-parallel (``tp``) deployment of a GQA model with DeepSeek's indexer
    put on it: KV in bf16 (2 * kv_heads / tp * head_dim * 2 B; the indexer key, one head, is
    replicated), attention 4 * heads / tp * head_dim FLOPs per selected token (QK and PV)."""
    return Geometry(name, layers, 2 * (kv_heads // tp) * head_dim * 2, DSA_INDEX_KEY_BYTES, weights, source,
                    DSA_INDEX_FLOPS, 4 * (heads // tp) * head_dim, 2 * layer_params / tp)


def _mla_attn_flops(heads: int, kv_lora_rank: int, rope_dim: int) -> int:
    """MLA decode with absorbed projections: per selected token and query head, scores over the
    latent and RoPE parts (2 * (r + d_rope)) and values over the latent (2 * r)."""
    return heads * 2 * (kv_lora_rank + rope_dim + kv_lora_rank)


def _mla_params(hidden, heads, q_lora, kv_lora, nope, rope, v_head) -> int:
    """MLA projections of one layer: q down and up, kv down (latent + RoPE key) and up, output."""
    return (hidden * q_lora + q_lora * heads * (nope + rope) + hidden * (kv_lora + rope)
            + kv_lora * heads * (nope + v_head) + heads * v_head * hidden)


def _indexer_params(hidden, q_lora, index_heads, index_dim) -> int:
    """DSA lightning indexer of one layer: query up-projection from the q latent, key projection,
    per-head weights."""
    return q_lora * index_heads * index_dim + hidden * index_dim + hidden * index_heads


def _ffn_params(hidden, intermediate) -> int:
    """A SwiGLU FFN or expert: gate, up and down projections."""
    return 3 * hidden * intermediate


# DeepSeek-V3.2-Exp (inference/config_671B_v3.2.json): hidden 7168, 61 layers of which the first
# 3 dense (FFN 18432) and 58 MoE (256 routed experts of FFN 2048, 8 per token, 1 shared expert,
# router 256 x 7168), MLA 128 heads, q_lora 1536, kv_lora 512, qk_nope 128, qk_rope 64, v_head
# 128, indexer 64 heads x 128, vocab 129280. Linear weights in FP8 (1 B per parameter; the
# 128 x 128 block scales, 0.02 %, left out); the LM head in BF16 (inference/model.py builds it in
# the default dtype). One routed expert: 3 x 7168 x 2048 = 44.0 MB.
_DS_LAYER = _mla_params(7168, 128, 1536, 512, 128, 64, 128) + _indexer_params(7168, 1536, 64, 128)
_DS_WEIGHTS = Weights(
    dense_bytes=61 * _DS_LAYER + 3 * _ffn_params(7168, 18432) + 58 * (_ffn_params(7168, 2048) + 256 * 7168),
    head_bytes=2 * 129280 * 7168, moe_layers=58, routed_experts=256, experts_per_token=8,
    expert_bytes=_ffn_params(7168, 2048),
    # "Decoding Phase [Routed Expert EP144, MLA/Shared Expert DP144]: Each deployment unit spans
    # 18 nodes with 32 redundant routed experts, where each GPU manages 2 routed experts and 1
    # shared expert" (DeepSeek-V3/R1 Inference System Overview, deepseek-ai/open-infra-index,
    # Open-Source Week day 6, 2025). Attention and the dense layers are data-parallel: every GPU
    # holds them whole.
    experts_per_device=2, ep_devices=144,
    deployment="DeepSeek's decode deployment: EP144 over 18 nodes of 8 x H800, MLA, dense layers and "
               "shared expert data-parallel, 2 routed experts per GPU (open-infra-index, day 6)")
# GLM-5 (zai-org/GLM-5 config.json, transformers GlmMoeDsaConfig): hidden 6144, 78 layers of
# which 3 dense (FFN 12288) and 75 MoE (256 routed experts of FFN 2048, 8 per token, 1 shared,
# router 256 x 6144), MLA 64 heads, q_lora 2048, kv_lora 512, qk_nope 192, qk_rope 64, v_head
# 256, indexer 32 heads x 128, vocab 154880; FP8 weights, LM head in BF16 as DeepSeek's.
_GLM_LAYER = _mla_params(6144, 64, 2048, 512, 192, 64, 256) + _indexer_params(6144, 2048, 32, 128)
_GLM_WEIGHTS = Weights(
    dense_bytes=78 * _GLM_LAYER + 3 * _ffn_params(6144, 12288) + 75 * (_ffn_params(6144, 2048) + 256 * 6144),
    head_bytes=2 * 154880 * 6144, moe_layers=75, routed_experts=256, experts_per_token=8,
    expert_bytes=_ffn_params(6144, 2048),
    # SGLang, "DeepSeek V3.2/GLM-5 Usage" (docs.sglang.io): 8 x H200 with `--tp 8 --ep 8 --dp 8
    # --enable-dp-attention`: attention data-parallel (whole on every GPU), 256 / 8 = 32 routed
    # experts per GPU.
    experts_per_device=256 / 8, ep_devices=8,
    deployment="SGLang's documented 8 x H200 deployment: DP attention, EP8 (32 routed experts per GPU)")
# Llama-3.1-8B (config.json): 32 layers, hidden 4096, 32 heads, 8 KV heads, head_dim 128, FFN
# 14336, vocab 128256, untied LM head: 218.1 M parameters per layer, 8.03 B in all, BF16 as
# released, on one GPU (TP1): all weights once per step, 16.06 GB with the embeddings.
_LLAMA8_LAYER = 4096 * (4096 + 1024 + 1024 + 4096) + _ffn_params(4096, 14336)
# Llama-3.1-70B (config.json): 80 layers, hidden 8192, 64 heads, 8 KV heads, head_dim 128, FFN
# 28672, vocab 128256: 855.6 M parameters per layer. One GPU of NVIDIA NIM's "2 x H100 80G / fp8
# TP2" profile (NIM LLM benchmarking, performance page; listed for Llama-3.3-70B, the same
# architecture): half of every weight matrix in FP8, 4 of the 8 KV heads.
_LLAMA70_LAYER = 8192 * (8192 + 1024 + 1024 + 8192) + _ffn_params(8192, 28672)

PRESETS = {
    g.name: g for g in [
        # DeepSeek-V3.2-Exp: the FP8 sparse-MLA KV cache stores per token 512 FP8 latent values +
        # 4 FP32 scales + 64 BF16 RoPE values = 656 B, and the indexer key cache 128 FP8 values +
        # 1 FP32 scale = 132 B (DeepSeek's FlashMLA / vLLM DSA kernels, DeepSeek-V3.2 tech
        # report). Compute: 37 B activated parameters per token (DeepSeek-V3 report) / 61 layers
        # ~ 606 M per layer.
        Geometry("deepseek-v3.2", 61, 656, 132, _DS_WEIGHTS,
                 "DeepSeek-V3.2-Exp config + FlashMLA FP8 sparse cache format",
                 DSA_INDEX_FLOPS, _mla_attn_flops(128, 512, 64), 2 * 606_000_000),
        # GLM-5: MLA with kv_lora_rank 512 + qk_rope_head_dim 64 and a DSA indexer with
        # index_head_dim 128, i.e. the same per-token shapes as DeepSeek-V3.2; stored in the same
        # FP8 format that is 656 B and 132 B. Indexer 32 heads x 128; attention 64 heads.
        # Parameters one token activates in an MoE layer: 8 routed + 1 shared experts
        # 9*3*6144*2048 = 339.7 M, MLA projections 165.0 M, indexer 9.4 M, router 1.6 M: 515.8 M.
        Geometry("glm-5", 78, 656, 132, _GLM_WEIGHTS,
                 "transformers GlmMoeDsaConfig (zai-org/GLM-5), DeepSeek-V3.2 FP8 cache format",
                 2 * 32 * 128, _mla_attn_flops(64, 512, 64), 2 * 515_800_000),
        _gqa("llama-3.1-8b", 32, 32, 8, 128, _LLAMA8_LAYER,
             Weights(2 * 32 * _LLAMA8_LAYER, 2 * 128256 * 4096, deployment="one GPU (TP1), BF16 weights"),
             "meta-llama/Llama-3.1-8B config.json"),
        _gqa("llama-3.1-70b", 80, 64, 8, 128, _LLAMA70_LAYER,
             Weights(80 * _LLAMA70_LAYER // 2, 128256 * 8192 // 2,
                     deployment="one GPU of NVIDIA NIM's 2 x H100 FP8 TP2 profile"),
             "meta-llama/Llama-3.1-70B config.json", tp=2),
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
    head = dtype_bytes * int(backbone.get("vocab_size", 0)) * int(backbone.get("hidden_size", 0))
    weights = Weights(dtype_bytes * layers * layer_params, head, deployment="one device, the backbone's own dtype")
    return Geometry(f"native:{backbone.get('name', 'backbone')}", layers, kv, index_bytes, weights,
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
