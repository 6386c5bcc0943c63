"""Indexer levers (trace_gen.levers): index share and index reuse change what the layers attend
to, the log keeps each layer's own selection beside the used one, and no lever changes nothing."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import write_log

from harness.cli import cli
from harness.core.errors import UserError
from harness.study.spec import loads_spec
from trace_gen.decode import DecodeConfig, DecodeSession, decode
from trace_gen.indexers import get_indexer
from trace_gen.indexlog import ARROW_SCHEMA, IndexLog, IndexLogWriter
from trace_gen.levers import LeverPlan, parse_layers

pytestmark = pytest.mark.usefixtures("private_cache")

FAST_FIT = {"iterations": 5, "calibration_tokens": 256, "queries": 64}
GEMMA_18 = (["sliding"] * 5 + ["full"]) * 3  # Gemma-3-270M's layers


def run_decode(tmp_path, name="log", **kw):
    cfg = DecodeConfig(**{"backbone": "tiny-gemma", "indexer": "oracle", "topk": 4, "prompt_tokens": 96,
                          "steps": 12, "requests": 2, **kw})
    opts = FAST_FIT if cfg.indexer == "dsa" else {}
    return IndexLog(decode(cfg, tmp_path / name, progress=False, indexer_options=opts))


LEVERS = {"none": {}, "share": {"index_share": 2}, "reuse": {"index_reuse": 3}}


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """tiny-gemma decodes (oracle, k = 4) without a lever, with share 2 and with reuse 3."""
    folder = tmp_path_factory.mktemp("levers")
    return {name: run_decode(folder, name, **lever) for name, lever in LEVERS.items()}


def rows(log):
    """(step, layer, request) -> row of the log."""
    return {(r.step, r.layer, r.request): r for r in log.dataframe().itertuples()}


# --- the plan -----------------------------------------------------------------------------------

def test_anchors_are_every_nth_layer_of_each_kind():
    assert LeverPlan.make(["full"] * 8, share=4).anchor_of == (0, 0, 0, 0, 4, 4, 4, 4)
    plan = LeverPlan.make(GEMMA_18, share=2)
    # sliding layers 0 1 2 3 4 6 7 ...: every 2nd is an anchor; full layers 5 11 17: 5 and 17
    assert sorted(set(plan.anchor_of)) == [0, 2, 4, 5, 7, 9, 12, 14, 16, 17]
    assert plan.anchor_of[6] == 4 and plan.anchor_of[11] == 5 and plan.anchor_of[3] == 2
    assert all(GEMMA_18[a] == GEMMA_18[layer] for layer, a in enumerate(plan.anchor_of))
    assert LeverPlan.make(GEMMA_18, share=4).anchor_of[11] == 5  # full layers: 5 only (and 17 shares it)


def test_explicit_anchor_layers_and_the_first_of_each_kind():
    plan = LeverPlan.make(GEMMA_18, index_layers="0,3,12")
    # full layer 5 has no anchor of its kind before it: it is its own, and 11 and 17 share it
    assert plan.anchor_of == (0, 0, 0, 3, 3, 5, 3, 3, 3, 3, 3, 5, 12, 12, 12, 12, 12, 5)
    assert plan.describe()["anchor_layers"] == [0, 3, 5, 12]
    with pytest.raises(UserError, match="index layers 30 do not exist: the backbone has 18 layers"):
        LeverPlan.make(GEMMA_18, index_layers="0,30")
    assert parse_layers(" 12,0, 6,6") == "0,6,12"
    with pytest.raises(UserError, match="layer numbers separated by commas"):
        parse_layers("0,six")


def test_which_steps_and_layers_scan():
    plan = LeverPlan.make(["full"] * 4, share=2, reuse=3)
    assert [(layer, step) for step in range(4) for layer in range(4) if plan.scans(layer, step)] == \
        [(0, 0), (2, 0), (0, 3), (2, 3)]
    assert plan.describe()["scan_share"] == pytest.approx(2 / 4 / 3)
    assert not LeverPlan.make(["full"] * 4).active and LeverPlan.make(["full"] * 4, reuse=2).active


# --- in the attention ----------------------------------------------------------------------------

def session_outputs(plan, steps=1, slots=40, seed=0):
    """Two layers' attention outputs and rows through an oracle session, k = 3, over random
    inputs (the same for every plan), ``steps`` steps with one new key each."""
    gen = torch.Generator().manual_seed(seed)
    session = DecodeSession(get_indexer("oracle")(None, 3, 64, 1, {}), 3, 0, 0, False, True, plan)
    keys = torch.randn(2, 1, 2, slots + steps, 4, generator=gen)
    out, rows = [], []
    for step in range(steps):
        session.begin_step(step, slots + step + 1)
        for layer in range(2):
            q, k = torch.randn(1, 2, 1, 4, generator=gen), keys[layer][:, :, : slots + step + 1]
            out.append(session.decode(layer, q, k, k, None, 0.5, None, {}))
        rows.append(list(session.rows))
    return out, rows


def test_a_shared_layer_attends_with_its_anchors_selection():
    plain, plain_rows = session_outputs(None)
    shared, shared_rows = session_outputs(LeverPlan.make(["full", "full"], share=2))
    (a0, a1), (b0, b1) = plain_rows[0], shared_rows[0]
    assert torch.equal(plain[0], shared[0]) and np.array_equal(a0.positions, b0.positions)  # the anchor
    assert np.array_equal(b1.positions[0], b0.positions[0])        # layer 1 attends with layer 0's
    assert np.array_equal(b1.own, a1.positions)                     # and logs its own beside it
    assert not np.array_equal(b1.positions[0], a1.positions[0]) and not torch.allclose(plain[1], shared[1])
    assert b1.own_recall == pytest.approx(a1.recall) and b1.recall[0] < a1.recall[0]


def test_reuse_attends_with_the_last_scan_widened_by_the_new_tokens():
    _, rows = session_outputs(LeverPlan.make(["full", "full"], reuse=3), steps=4)
    first = rows[0][0].positions[0]
    assert np.array_equal(rows[1][0].positions[0], np.r_[first, 41])
    assert np.array_equal(rows[2][0].positions[0], np.r_[first, 41, 42])
    assert len(rows[3][0].positions[0]) == 3  # step 3 scans again
    assert np.array_equal(rows[3][0].positions[0], rows[3][0].own[0])


# --- in a decode ---------------------------------------------------------------------------------

@pytest.mark.parametrize("lever", ["share", "reuse"])
def test_a_lever_changes_the_generated_tokens(logs, lever):
    assert logs[lever].generated["token_ids"] != logs["none"].generated["token_ids"]
    assert logs[lever].meta["indexer"]["levers"]["index_share"] == LEVERS[lever].get("index_share", 1)


def test_shared_layers_log_the_anchors_selection_and_their_own(logs):
    none, shared = rows(logs["none"]), rows(logs["share"])
    # tiny-gemma: sliding layers 0 and 1 (anchor 0), full layer 2 (its own anchor)
    for (step, layer, request), row in shared.items():
        if layer == 1:
            assert np.array_equal(row.positions, shared[step, 0, request].positions)
        else:
            assert np.array_equal(row.positions, row.own_positions) and row.recall == pytest.approx(row.own_recall)
    # before layer 1 attends with another selection, the decode is the lever-free one: step 0's
    # layers 0 and 1 select, on their own, what they select without the lever
    for layer in (0, 1):
        for request in (0, 1):
            assert np.array_equal(shared[0, layer, request].own_positions, none[0, layer, request].positions)
    assert any(not np.array_equal(r.positions, r.own_positions) for r in shared.values())


def test_reuse_widens_the_last_scan_with_the_tokens_decoded_since(logs):
    log, none = logs["reuse"], rows(logs["none"])
    by = rows(log)
    types = log.meta["backbone"]["config"]["layer_types"]
    assert log.max_positions == 4 + 2
    for (step, layer, request), row in by.items():
        scan = by[step - step % 3, layer, request]
        if step % 3 == 0:
            assert np.array_equal(row.positions, row.own_positions)
            continue
        expect = np.r_[scan.positions, np.arange(scan.ctx_len, row.ctx_len)]
        if types[layer] == "sliding":  # a window of 24: what slid out is dropped
            expect = expect[expect >= row.ctx_len - 24]
        assert np.array_equal(row.positions, expect)
        assert len(row.positions) >= 4
    # step 0 scans everywhere, so step 1's first layer sees what it sees without the lever
    assert np.array_equal(by[1, 0, 0].own_positions, none[1, 0, 0].positions)


def digest(log) -> str:
    df = log.dataframe()
    h = hashlib.sha256()
    for p in df.positions:
        h.update(np.asarray(p, np.int32).tobytes())
    h.update(df[["recall", "recall_best"]].to_numpy(np.float32).tobytes())
    h.update(np.asarray(log.generated["token_ids"], np.int64).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("kw, expect", [
    # digests of the logs the decode wrote before levers existed (same seed; tiny-gemma's dsa: 61b994cfbe9d14cd)
    (dict(backbone="tiny-llama", indexer="dsa"), "c87476fd9c646b96"),
    (dict(backbone="tiny-gemma", indexer="oracle", sink_tokens=2, local_window=3), "8c178b95a1201466"),
])
def test_no_lever_writes_the_log_it_wrote_before_levers(tmp_path, kw, expect):
    log = run_decode(tmp_path, topk=16, steps=6, **kw)
    assert digest(log) == expect
    assert log._pf.schema_arrow.remove_metadata() == ARROW_SCHEMA and "levers" not in log.meta["indexer"]


# --- the log ------------------------------------------------------------------------------------

def test_logs_without_lever_columns_read_as_before():
    log = IndexLog(Path(__file__).parent / "data/gem5_steptime/logs/gemma3")  # written before levers existed
    assert not log.has_own and log.max_positions == log.topk
    assert log.validate().max_row <= log.topk


def lever_log(folder, rows, reuse=1):
    """A hand-written lever log: 1 request, 1 layer, k = 2, rows (step, ctx, positions, own)."""
    meta = {"backbone": {"name": "hand"}, "indexer": {"name": "hand", "topk": 2,
                                                      "levers": {"index_share": 1, "index_reuse": reuse}},
            "requests": 1, "steps": len(rows), "layers": 1}
    with IndexLogWriter(folder, meta, own=True) as w:
        for step, ctx, pos, own in rows:
            w.add(0, step, 0, ctx, np.array(pos), 0.5, 0.6, np.array(own), 0.6)
        return IndexLog(w.close())


def test_a_lever_log_reads_and_is_checked(tmp_path):
    log = lever_log(tmp_path / "ok", [(0, 10, [1, 2], [1, 2]), (1, 11, [1, 2, 10], [3, 4])], reuse=2)
    assert log.has_own and log.max_positions == 3 and log.validate().max_row == 3
    assert list(log.dataframe().columns)[-2:] == ["own_positions", "own_recall"]
    with pytest.raises(UserError, match="a row selects 3 positions, more than topk = 2"):
        lever_log(tmp_path / "widened", [(0, 10, [1, 2], [1, 2]), (1, 11, [1, 2, 10], [3, 4])]).validate()
    with pytest.raises(UserError, match="3 own positions, more than topk = 2"):
        lever_log(tmp_path / "own", [(0, 10, [1, 2], [1, 2, 3])], reuse=2).validate()
    with pytest.raises(UserError, match="own positions are not sorted"):
        lever_log(tmp_path / "unsorted", [(0, 10, [1, 2], [2, 1])]).validate()
    bad = write_log(tmp_path / "bad", [(0, 0, 0, 10, [1])], requests=1, steps=1, layers=1, topk=2)
    meta = (bad / "metadata.json").read_text().replace('"topk": 2', '"topk": 2, "levers": {"index_reuse": 0}')
    (bad / "metadata.json").write_text(meta)
    with pytest.raises(UserError, match="indexer.levers.index_reuse must be at least 1"):
        IndexLog(bad)


# --- settings: specs and options ---------------------------------------------------------------

def test_a_spec_varies_the_levers():
    spec = loads_spec('[decode]\nbackbone = "tiny-llama"\nindex_share = [1, 2, 4]\nindex_reuse = [1, 2]\n')
    assert len(spec.decodes) == 6
    assert {(d["index_share"], d["index_reuse"], d["index_layers"]) for d in spec.decodes.values()} == {
        (s, r, None) for s in (1, 2, 4) for r in (1, 2)}
    spec = loads_spec('[decode]\nbackbone = "tiny-llama"\nindex_layers = "2, 0"\n')
    assert spec.runs[0]["decode"]["index_layers"] == "0,2"
    with pytest.raises(UserError, match="leave index share at 1"):
        loads_spec('[decode]\nbackbone = "tiny-llama"\nindex_layers = "0"\nindex_share = 2\n')


@pytest.mark.parametrize("args, message", [
    (["--index-share", "0"], "--index-share must be at least 1"),
    (["--index-reuse", "0"], "--index-reuse must be at least 1"),
    (["--index-layers", "0,a"], "index layers must be layer numbers"),
    (["--index-layers", "0,7"], "index layers 7 do not exist"),
    (["--index-layers", "0", "--index-share", "2"], "leave index share at 1"),
])
def test_bad_lever_options_are_one_line(tmp_path, args, message):
    res = CliRunner().invoke(cli, ["decode", "--no-progress", "--backbone", "tiny-llama", "--indexer", "oracle",
                                   "--prompt-tokens", "32", "--steps", "2", "--out", str(tmp_path / "log"), *args])
    assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "log").exists()


def test_the_cli_decodes_with_levers(tmp_path):
    res = CliRunner().invoke(cli, ["decode", "--no-progress", "--backbone", "tiny-llama", "--indexer", "oracle",
                                   "--topk", "4", "--prompt-tokens", "32", "--steps", "3", "--index-layers", "0,2",
                                   "--index-reuse", "2", "--out", str(tmp_path / "log")])
    assert res.exit_code == 0, res.output
    levers = IndexLog(tmp_path / "log").meta["indexer"]["levers"]
    assert levers["anchor_of"] == [0, 0, 2] and levers["index_reuse"] == 2 and levers["index_layers"] == "0,2"


# --- the text: same tokens and perplexity ---------------------------------------------------------

def test_fidelity_of_a_lever_against_dense_attention():
    from trace_gen.fidelity import lever_fidelity

    cfg = DecodeConfig("tiny-gemma", "oracle", 4096, 64, 6, 1, "python-source")
    dense, (whole, shared) = lever_fidelity(cfg, [{}, {"index_share": 2}], heldout="python-docs")
    # k beyond the context: sparse attention is dense attention, tokens and perplexity equal
    s = whole.summary(dense)
    assert s["same_token_rate"] == 1.0 and s["first_difference"] == 6 and s["forced_same_token_rate"] == 1.0
    assert s["ppl_ratio"] == pytest.approx(1.0)
    assert s["recall"] == pytest.approx(1.0) and s["scan_share"] == 1.0
    assert shared.plan["anchor_of"] == [0, 0, 2] and len(shared.rows) == 6 * 3 * 2
    assert dense.tokens.shape == (1, 6) and dense.nll.shape == (1, 6) and np.isfinite(dense.nll).all()
    cfg = DecodeConfig("tiny-gemma", "oracle", 4, 64, 6, 1, "python-source")
    dense, (shared,) = lever_fidelity(cfg, [{"index_share": 2}])
    s = shared.summary(dense)
    assert s["recall_vs_own"] < 1.0 and s["scan_share"] == pytest.approx(2 / 3)


# --- real backbones --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["smollm2-135m", "gemma3-270m"])
@pytest.mark.parametrize("lever", [["--index-share", "4"], ["--index-reuse", "2"]])
def test_real_backbone_decodes_with_a_lever(tmp_path, backbone, lever, monkeypatch):
    monkeypatch.delenv("DSA_LLC_CACHE")  # reuse the converted models and fits of the user cache
    out = tmp_path / "log"
    res = CliRunner().invoke(cli, ["decode", "--no-progress", "--backbone", backbone, "--topk", "64",
                                   "--prompt-tokens", "1024", "--steps", "4", "--threads", "1", "--out", str(out),
                                   *lever])
    assert res.exit_code == 0, res.output
    log = IndexLog(out)
    df = log.dataframe()
    assert log.has_own and df.own_recall.notna().all() and df.recall.notna().all()
    levers = log.meta["indexer"]["levers"]
    types = log.meta["backbone"]["config"]["layer_types"]
    for row in df.itertuples():
        anchor = levers["anchor_of"][row.layer]
        assert types[anchor] == types[row.layer]
        if anchor == row.layer and row.step % levers["index_reuse"] == 0:
            assert np.array_equal(row.positions, row.own_positions)
        elif anchor != row.layer:
            assert np.array_equal(row.positions, df.positions[(df.step == row.step) & (df.layer == anchor)].iloc[0])
        if types[row.layer] == "sliding":
            assert row.positions.min() >= row.ctx_len - 512
    # share 4: SmolLM2's layers 0, 4, ..., 28; Gemma's sliding layers 0, 4, 8, 13 and full layer 5
    anchors = {"smollm2-135m": 8, "gemma3-270m": 5} if "--index-share" in lever else {backbone: log.layers}
    assert len(levers["anchor_layers"]) == anchors[backbone]
