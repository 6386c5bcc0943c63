"""Prompts and the chunked prefill: chunks must not change what the model computes."""

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from harness.core.errors import UserError
from trace_gen.backbones import kv_cache_bytes, load_backbone
from trace_gen.prefill import (
    MAX_PREFILL_CHUNK,
    PREFILL_MASK_BUDGET,
    CaptureSession,
    capture_prefill,
    prefill,
    prefill_chunk_tokens,
    prompts,
)
from trace_gen.text import stdlib_files, stdlib_root


@pytest.mark.parametrize("prompt, batch, expect", [
    (2048, 1, 2048),    # today's prompts: one pass, as before chunking existed
    (2048, 2, 2048),
    (96, 1, 96),
    (32768, 1, 2048),   # capped
    (8192, 32, 256),    # the mask budget decides
    (32768, 32, 64),    # never below 64
])
def test_prefill_chunk_sizes(prompt, batch, expect):
    chunk = prefill_chunk_tokens(prompt, batch)
    assert chunk == expect
    assert chunk == prompt or chunk == 64 or 4 * batch * prompt * chunk <= PREFILL_MASK_BUDGET
    assert chunk <= MAX_PREFILL_CHUNK
    assert prefill_chunk_tokens(prompt, batch, 100) == min(100, prompt)
    with pytest.raises(UserError, match="at least 1 token"):
        prefill_chunk_tokens(prompt, batch, 0)


@pytest.mark.parametrize("backbone", ["tiny-llama", "tiny-gemma"])
def test_chunked_prefill_equals_one_pass(backbone):
    # the logits of the last prompt position and every cached key and value match one forward
    # pass (tiny-gemma: the sliding window (24) is shorter than the prompt and than a chunk)
    bb = load_backbone(backbone)
    ids, _ = prompts(bb, "python-source", 90, 2, 0)

    class Quiet:
        prefilling = False

        def prefill(self, *args):
            pass

    caches, logits = {}, {}
    for chunk in (90, 17, 30):
        caches[chunk] = DynamicCache(config=bb.config)
        logits[chunk] = prefill(bb, ids, caches[chunk], Quiet(), chunk)
    for chunk in (17, 30):
        assert torch.allclose(logits[chunk], logits[90], atol=1e-5)
        for one, chunked in zip(caches[90].layers, caches[chunk].layers):
            assert one.keys.shape == chunked.keys.shape
            assert torch.allclose(one.keys, chunked.keys, atol=1e-5)
            assert torch.allclose(one.values, chunked.values, atol=1e-5)
    if backbone == "tiny-gemma":  # sliding layers keep the window only (23 cached keys)
        assert [layer.keys.shape[2] for layer in caches[17].layers] == [23, 23, 90]


def test_capture_in_chunks_keeps_the_models_own_masks():
    bb = load_backbone("tiny-gemma")
    ids, _ = prompts(bb, "python-source", 80, 2, 0)
    rows = {layer: torch.tensor([[3, 40, 79], [0, 24, 60]]) for layer in range(bb.layers)}
    one, chunked = capture_prefill(bb, ids, rows), capture_prefill(bb, ids, rows, chunk=13)
    positions = torch.arange(80)
    for layer, window in enumerate([24, 24, None]):
        query, visible, key, scaling = chunked[layer]
        assert query.shape == (2, 4, 3, 16) and key.shape == (2, 1, 80, 16)
        assert visible.shape == (2, 3, 80) and torch.equal(visible, one[layer][1])
        assert torch.allclose(query, one[layer][0], atol=1e-5)
        assert torch.allclose(key, one[layer][2], atol=1e-5)
        # causal, and the sliding layers' window: position r sees r - 23 .. r
        expect = positions[None, None, :] <= rows[layer][:, :, None]
        if window:
            expect &= positions[None, None, :] > rows[layer][:, :, None] - window
        assert torch.equal(visible, expect)


def test_capture_session_refuses_decode():
    with pytest.raises(RuntimeError):
        CaptureSession({}).decode()


def test_python_stdlib_gives_each_request_its_own_file():
    bb = load_backbone("tiny-llama")  # bytes as tokens
    ids, meta = prompts(bb, "python-stdlib", 4096, 6, seed=1)
    assert ids.shape == (6, 4096) and meta["name"] == "python-stdlib" and meta["offsets"] == [0] * 6
    assert len(set(meta["files"])) == 6 and len(meta["file_sha256"]) == 6
    assert len(meta["sha256"]) == 64
    for row, name in zip(ids, meta["files"]):
        body = (stdlib_root() / name).read_bytes()
        assert bytes(row.tolist()) == body[:4096]  # the window is the file's start
    again, same = prompts(bb, "python-stdlib", 4096, 6, seed=1)
    assert np.array_equal(ids, again) and same == meta
    assert prompts(bb, "python-stdlib", 4096, 6, seed=2)[1]["files"] != meta["files"]


def test_python_stdlib_is_large_enough_for_a_batch_of_long_prompts():
    files = stdlib_files()
    assert len(files) > 300 and not any("test" in f.relative_to(stdlib_root()).parts for f in files)
    bb = load_backbone("tiny-llama")
    with pytest.raises(UserError, match="too few for 5000 requests"):
        prompts(bb, "python-stdlib", 8192, 5000, 0)
    with pytest.raises(UserError, match="python-stdlib holds more"):
        prompts(bb, "python-source", 8192, 5000, 0)


def test_kv_cache_bytes_count_a_sliding_layer_to_its_window():
    bb = load_backbone("tiny-gemma")  # 2 sliding layers (window 24) + 1 full, 1 key head of 16
    per_token_layer = 2 * 1 * 16 * 4
    assert kv_cache_bytes(bb.config, 3, 1000) == 3 * per_token_layer * (24 + 24 + 1000)
    assert kv_cache_bytes(bb.config, 1, 10) == per_token_layer * 30


def test_long_decodes_fit_the_dsa_indexer_on_the_backbones_whole_context():
    from trace_gen.indexers.dsa import DEFAULTS, LONG_CONTEXT, fit_settings

    assert fit_settings({}) == fit_settings({}, LONG_CONTEXT, 32768) == DEFAULTS  # short: unchanged
    assert fit_settings({}, 2048 + 24, 32768) == DEFAULTS  # the demo's decodes
    long = {**DEFAULTS, "calibration_tokens": 32768, "window_keys": 1}
    assert fit_settings({}, LONG_CONTEXT + 1, 32768) == long
    assert fit_settings({}, 8200, 8192)["calibration_tokens"] == 8192
    assert fit_settings({"calibration_tokens": 4096}, 20000, 32768)["calibration_tokens"] == 4096
    with pytest.raises(UserError, match="window_keys must be at most 1"):
        fit_settings({"window_keys": 2})


def test_window_keys_fit_equals_the_fit_over_all_keys():
    # a sliding layer fitted on each query's window only learns what the fit over all keys learns
    from trace_gen.indexers.dsa import calibrate, fit_settings

    bb = load_backbone("tiny-gemma")
    base = {"iterations": 10, "calibration_tokens": 200, "queries": 64}
    full, fit_full = calibrate(bb, fit_settings(base), progress=False)
    windowed, fit_windowed = calibrate(bb, fit_settings({**base, "window_keys": 1}), progress=False)
    for a, b, ra, rb in zip(full, windowed, fit_full["layers"], fit_windowed["layers"]):
        for name in ("a", "b", "w"):
            assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-5)
        assert ra["kl_final"] == pytest.approx(rb["kl_final"], abs=1e-5)
