"""DSA decoding on tiny random backbones (fast) and on the real ones (slow)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from harness.cli import cli
from harness.core.errors import UserError
from trace_gen.decode import DecodeConfig, DecodeSession, decode
from trace_gen.indexers import get_indexer
from trace_gen.indexlog import IndexLog

pytestmark = pytest.mark.usefixtures("private_cache")


FAST_FIT = {"iterations": 5, "calibration_tokens": 256, "queries": 64}


def run_decode(tmp_path, name="log", prefill_chunk=None, **kw):
    cfg = DecodeConfig(**{"backbone": "tiny-llama", "indexer": "dsa", "topk": 16, "prompt_tokens": 96,
                          "steps": 6, "requests": 2, **kw})
    opts = FAST_FIT if cfg.indexer == "dsa" else {}
    return IndexLog(decode(cfg, tmp_path / name, progress=False, indexer_options=opts,
                           prefill_chunk=prefill_chunk))


@pytest.mark.parametrize("backbone, indexer", [("tiny-llama", "dsa"), ("tiny-llama", "oracle"),
                                               ("tiny-gemma", "dsa"), ("tiny-dsa", "native"),
                                               ("tiny-dsa", "dsa")])
def test_positions_valid_sorted_and_of_length_min_k_ctx(tmp_path, backbone, indexer):
    log = run_decode(tmp_path, backbone=backbone, indexer=indexer)
    df = log.dataframe()
    assert len(df) == log.steps * log.layers * log.requests == 6 * log.layers * 2
    assert list(df.columns) == ["request", "step", "layer", "ctx_len", "positions", "recall", "recall_best"]
    assert (df.recall <= df.recall_best + 1e-6).all()
    for row in df.itertuples():
        pos = np.asarray(row.positions)
        assert len(pos) == min(16, row.ctx_len)
        assert (np.diff(pos) > 0).all() and pos.min() >= 0 and pos.max() < row.ctx_len
    assert (df.ctx_len == 96 + 1 + df.step).all()
    # rows are in decode order: step, then layer, then request
    assert df[["step", "layer", "request"]].apply(tuple, axis=1).is_monotonic_increasing
    assert df.recall.between(0, 1.0001).all()
    if backbone == "tiny-gemma":  # sliding layers select within their window of 24
        types = log.meta["backbone"]["config"]["layer_types"]
        sliding = df[df.layer.map(lambda layer: types[layer] == "sliding")]
        assert len(sliding) and (sliding.positions.map(min) >= sliding.ctx_len - 24).all()


@pytest.mark.parametrize("backbone, indexer", [("tiny-llama", "dsa"), ("tiny-gemma", "dsa"),
                                               ("tiny-gemma", "oracle"), ("tiny-dsa", "native")])
def test_chunked_prefill_gives_the_same_tokens_and_selections(tmp_path, backbone, indexer):
    # chunks of 19 tokens (the last one a single token) against one pass over the 96-token prompt
    one = run_decode(tmp_path, "one", backbone=backbone, indexer=indexer, steps=8)
    chunked = run_decode(tmp_path, "chunked", prefill_chunk=19, backbone=backbone, indexer=indexer, steps=8)
    assert one.meta["prefill"] == {"chunk_tokens": 96, "chunks": 1}
    assert chunked.meta["prefill"] == {"chunk_tokens": 19, "chunks": 6}
    assert chunked.generated["token_ids"] == one.generated["token_ids"]
    a, b = one.dataframe(), chunked.dataframe()
    assert all(np.array_equal(x, y) for x, y in zip(a.positions, b.positions))
    assert np.allclose(a.recall, b.recall, atol=1e-5)


def test_metadata_records_what_made_the_log(tmp_path):
    log = run_decode(tmp_path)
    m = log.meta
    assert m["schema_version"] == 1 and m["backbone"]["name"] == "tiny-llama"
    assert m["backbone"]["config"]["num_hidden_layers"] == 3
    assert m["indexer"]["name"] == "dsa" and m["indexer"]["topk"] == 16
    assert m["indexer"]["key_bytes"] == 64 + 4 and m["indexer"]["fit"]["settings"]["iterations"] == 5
    assert m["text"]["name"] == "python-source" and len(m["text"]["sha256"]) == 64
    assert len(m["text"]["offsets"]) == 2 and m["seed"] == 0 and m["config_hash"]
    assert m["package_version"] and m["timing"]["decode_tokens_per_s"] > 0
    assert m["memory"]["kv_cache_bytes"] == 2 * (2 * 2 * 16 * 4) * 3 * (96 + 6)  # B, K+V, layers, ctx
    assert m["memory"]["indexer_cache_bytes"] == 2 * 64 * 4 * 3 * (96 + 6)
    assert len(log.generated["text"]) == 2 and len(log.generated["token_ids"][0]) == 6
    assert json.loads((log.folder / "metadata.json").read_text())["config_hash"] == m["config_hash"]


def test_k_at_least_ctx_reproduces_dense_decode(tmp_path):
    sparse = run_decode(tmp_path, "sparse", topk=4096, steps=8)
    dense = run_decode(tmp_path, "dense", topk=4096, steps=8, observe_only=True)
    assert sparse.generated["token_ids"] == dense.generated["token_ids"]
    assert np.allclose(sparse.dataframe().recall, 1.0, atol=1e-5)


def test_sparse_decode_changes_the_output_when_k_is_small(tmp_path):
    # the selection is applied: a tiny k on a random model changes the generated tokens
    sparse = run_decode(tmp_path, "sparse", topk=2, steps=12, indexer="oracle")
    dense = run_decode(tmp_path, "dense", topk=2, steps=12, indexer="oracle", observe_only=True)
    assert sparse.generated["token_ids"] != dense.generated["token_ids"]


def test_same_seed_same_log(tmp_path):
    a, b = run_decode(tmp_path, "a", seed=3), run_decode(tmp_path, "b", seed=3)
    c = run_decode(tmp_path, "c", seed=4)
    da, db, dc = a.dataframe(), b.dataframe(), c.dataframe()
    assert all(np.array_equal(x, y) for x, y in zip(da.positions, db.positions))
    assert a.generated == b.generated
    assert a.meta["text"]["offsets"] != c.meta["text"]["offsets"] or not all(
        np.array_equal(x, y) for x, y in zip(da.positions, dc.positions))


def test_oracle_picks_the_true_top_k_of_the_dense_scores():
    torch.manual_seed(0)
    b, h, kh, t, d = 2, 4, 2, 50, 8
    query, key, value = torch.randn(b, h, 1, d), torch.randn(b, kh, t, d), torch.randn(b, kh, t, d)
    session = DecodeSession(get_indexer("oracle")(None, 5, 64, b, {}), 5, 0, 0, False, True)
    session.ctx_len = t
    session.decode(0, query, key, value, None, d ** -0.5, None, {})
    _, positions, recall, best, _, _ = session.rows[0]
    rep = torch.repeat_interleave(key, h // kh, dim=1)
    probs = torch.softmax(query @ rep.transpose(-1, -2) * d ** -0.5, dim=-1).mean(1)[:, 0]
    expect = torch.topk(probs, 5).indices.sort().values.numpy()
    assert np.array_equal(positions, expect)
    assert np.allclose(recall, torch.topk(probs, 5).values.sum(1).numpy(), atol=1e-6)
    assert np.allclose(best, recall, atol=1e-6)


def oracle_positions(seed, slots, ctx_len, k, sinks=0, window=0):
    """Positions the oracle selects for one query over ``slots`` cached keys of a ``ctx_len`` context."""
    torch.manual_seed(seed)
    query, key, value = torch.randn(1, 2, 1, 4), torch.randn(1, 2, slots, 4), torch.randn(1, 2, slots, 4)
    session = DecodeSession(get_indexer("oracle")(None, k, 64, 1, {}), k, sinks, window, False, True)
    session.ctx_len = ctx_len
    session.decode(0, query, key, value, None, 0.5, None, {})
    return session.rows[0].positions[0]


def test_sinks_and_local_window_are_forced_in():
    pos = oracle_positions(1, slots=40, ctx_len=40, k=6, sinks=2, window=3)
    assert {0, 1, 37, 38, 39} <= set(pos.tolist()) and len(pos) == 6


def test_sliding_layers_log_absolute_positions():
    # a sliding layer sees only its last 10 slots of a 40-token context: positions are 30..39
    pos = oracle_positions(2, slots=10, ctx_len=40, k=4)
    assert pos.min() >= 30 and pos.max() <= 39 and len(pos) == 4


def test_native_indexer_uses_the_models_own_selection(tmp_path):
    native = run_decode(tmp_path, "n", backbone="tiny-dsa", indexer="native", topk=8)
    oracle = run_decode(tmp_path, "o", backbone="tiny-dsa", indexer="oracle", topk=8)
    assert native.meta["indexer"]["key_bytes"] == 32 + 4
    # the model's indexer is random: it must not reproduce the oracle's choice
    assert not all(np.array_equal(a, b) for a, b in zip(native.dataframe().positions, oracle.dataframe().positions))
    assert native.dataframe().recall.mean() < oracle.dataframe().recall.mean()
    with pytest.raises(UserError, match="no indexer of its own"):
        run_decode(tmp_path, "x", backbone="tiny-llama", indexer="native")


def cli_decode(*args):
    return CliRunner().invoke(cli, ["decode", "--no-progress", *[str(a) for a in args]])


@pytest.mark.parametrize("args, message", [
    (["--backbone", "gpt-7"], "unknown backbone 'gpt-7'"),
    (["--backbone", "tiny-llama", "--indexer", "magic"], "unknown indexer 'magic'"),
    (["--backbone", "tiny-llama", "--topk", "0"], "topk must be at least 1"),
    (["--backbone", "tiny-llama", "--prompt-tokens", "9000"], "exceeds tiny-llama's context"),
    (["--backbone", "tiny-llama", "--prefill-chunk", "0"], "prefill chunk must be at least 1 token"),
    (["--backbone", "tiny-llama", "--text", "python-stdlib", "--prompt-tokens", "8000", "--requests", "900"],
     "too few for 900 requests"),
    (["--backbone", "tiny-llama", "--text", "/no/such/file.txt"], "text file /no/such/file.txt does not exist"),
    (["--backbone", "tiny-llama", "--indexer-option", "d_J=3"], "unknown dsa indexer option"),
])
def test_bad_input_is_one_line_and_leaves_no_log(tmp_path, args, message):
    out = tmp_path / "log"
    res = cli_decode("--out", out, "--steps", "2", "--prompt-tokens", "32", *args)  # later options win
    assert res.exit_code != 0 and message in res.output, res.output
    assert "Traceback" not in res.output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".log")]


def test_too_long_a_decode_is_refused_before_the_weights_load(tmp_path, monkeypatch):
    from trace_gen import decode as decode_mod

    def no_weights(*a, **k):
        raise AssertionError("weights loaded")

    monkeypatch.setattr(decode_mod, "load_backbone", no_weights)
    with pytest.raises(UserError, match="8,100 tokens \\+ 100 steps exceeds tiny-llama's context of 8,192"):
        run_decode(tmp_path, prompt_tokens=8100, steps=100)
    monkeypatch.setattr(decode_mod, "available_memory", lambda: 1 << 20)
    with pytest.raises(UserError, match="need 0.4 GiB for the KV cache.* 0.0 GiB of memory is available"):
        run_decode(tmp_path, prompt_tokens=4096, requests=32)
    assert not (tmp_path / "log").exists()


def test_existing_log_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "log"
    base = ["--backbone", "tiny-llama", "--indexer", "oracle", "--topk", "4", "--prompt-tokens", "16",
            "--steps", "2", "--out", out]
    assert cli_decode(*base).exit_code == 0
    res = cli_decode(*base)
    assert res.exit_code != 0 and "holds an earlier `dsa-harness decode` output" in res.output
    assert cli_decode(*base, "--overwrite").exit_code == 0


def test_a_failing_decode_leaves_nothing_behind(tmp_path, monkeypatch):
    from trace_gen import decode as decode_mod

    def boom(*a, **k):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(decode_mod.DecodeSession, "decode", boom)
    with pytest.raises(RuntimeError):
        run_decode(tmp_path, "broken", indexer="oracle")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["smollm2-135m", "gemma3-270m"])
def test_real_backbone_dsa_recall_close_to_oracle(tmp_path, backbone, monkeypatch):
    monkeypatch.delenv("DSA_LLC_CACHE")  # reuse the converted models and fits of the user cache
    logs = {}
    for indexer in ("oracle", "dsa"):
        logs[indexer] = IndexLog(decode(DecodeConfig(backbone, indexer, 64, 1024, 4, 1, "python-source"),
                                        tmp_path / indexer, progress=False))
    o, d = logs["oracle"].dataframe(), logs["dsa"].dataframe()
    assert d.recall.mean() >= 0.85 * o.recall.mean()
    if backbone == "gemma3-270m":
        types = logs["dsa"].meta["backbone"]["config"]["layer_types"]
        sliding = d[d.layer.map(lambda layer: types[layer] == "sliding")]
        assert (sliding.positions.map(min) >= sliding.ctx_len - 512).all()


def test_observe_only_decode_equals_the_models_own_attention(tmp_path):
    # the harness's attention function must not change what the model computes: greedy tokens
    # of an observe-only decode equal those of transformers' own SDPA attention
    from trace_gen.backbones import load_backbone
    from trace_gen.decode import greedy_dense
    from trace_gen.prefill import prompts

    log = run_decode(tmp_path, indexer="oracle", observe_only=True, steps=10, requests=1)
    bb = load_backbone("tiny-llama")
    ids, _ = prompts(bb, "python-source", 96, 1, 0)
    tokens, _ = greedy_dense(bb, ids, 10)
    assert log.generated["token_ids"][0] == tokens[0].tolist()
