"""Long contexts on the real backbones (slow: they load the models; fits come from the user
cache)."""

import numpy as np
import pytest

from harness.core.errors import UserError
from trace_gen.decode import DecodeConfig, decode
from trace_gen.indexlog import IndexLog

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def user_cache(monkeypatch):
    # the converted models and fits of the user cache
    monkeypatch.delenv("DSA_LLC_CACHE", raising=False)


def layer_ratios(log):
    by_layer = log.dataframe().groupby("layer")[["recall", "recall_best"]].mean()
    return by_layer.recall / by_layer.recall_best


@pytest.mark.parametrize("backbone", ["smollm2-135m", "gemma3-270m"])
def test_chunked_prefill_keeps_tokens_and_selections(tmp_path, backbone):
    # 500-token chunks cross Gemma's 512-token sliding window at every chunk boundary
    cfg = DecodeConfig(backbone, "dsa", 128, 2048, 8, 1, "python-source")
    one = IndexLog(decode(cfg, tmp_path / "one", progress=False))
    chunked = IndexLog(decode(cfg, tmp_path / "chunked", progress=False, prefill_chunk=500))
    assert one.meta["prefill"]["chunks"] == 1 and chunked.meta["prefill"]["chunks"] == 5
    assert chunked.generated["token_ids"] == one.generated["token_ids"]
    a, b = one.dataframe(), chunked.dataframe()
    assert all(np.array_equal(x, y) for x, y in zip(a.positions, b.positions))


@pytest.mark.parametrize("backbone, limit", [("smollm2-135m", 8192), ("gemma3-270m", 32768)])
def test_context_limit_comes_from_the_config_and_is_checked_before_loading(tmp_path, monkeypatch,
                                                                            backbone, limit):
    from trace_gen import decode as decode_mod

    def no_weights(*a, **k):
        raise AssertionError("weights loaded")

    monkeypatch.setattr(decode_mod, "load_backbone", no_weights)
    with pytest.raises(UserError, match=f"exceeds {backbone}'s context of {limit:,} tokens"):
        decode(DecodeConfig(backbone, "dsa", 2048, limit - 8, 9), tmp_path / "log", progress=False)
    assert not (tmp_path / "log").exists()


def test_gemma_decodes_16k_tokens_with_k_2048(tmp_path):
    log = IndexLog(decode(DecodeConfig("gemma3-270m", "dsa", 2048, 16384, 16, 1, "python-source"),
                          tmp_path / "log", progress=False))
    df = log.dataframe()
    assert log.meta["prefill"] == {"chunk_tokens": 2048, "chunks": 8}
    assert len(df) == 16 * 18 and (df.ctx_len == 16385 + df.step).all()
    types = log.meta["backbone"]["config"]["layer_types"]
    full = df.layer.map(lambda layer: types[layer] == "full")
    assert (df[full].positions.map(len) == 2048).all()
    assert (df[~full].positions.map(min) >= df[~full].ctx_len - 512).all()  # the sliding window
    assert all((np.diff(p) > 0).all() and p[-1] < c for p, c in zip(df.positions, df.ctx_len))
    ratios = layer_ratios(log)
    assert ratios[[i for i, t in enumerate(types) if t == "full"]].mean() >= 0.85
