"""The report's answer (harness.study.headline) on hand-made result tables: speed-ups, where the
saved misses come from, help/hurt counts with their threshold, and identical policies."""

import pandas as pd
import pytest

from harness.study.headline import attribution, comparisons, headline, identities, verdict


def run(reserve_ways, policy, step, index_misses, kv_misses, geometry="deepseek-v3.2", llc=1 << 24, hits=0):
    """One collected row (only the columns the headline reads; steps = 10)."""
    return {"_status": "ok", "backend": "builtin", "backbone": "bb", "indexer": "dsa", "topk": 128,
            "prompt_tokens": 2048, "decode_steps": 10, "requests": 1, "geometry": geometry, "llc_bytes": llc,
            "ways": 16, "reserve_ways": reserve_ways, "policy": policy, "whole_token_eviction": True,
            "timing_platform": "xeon-8480", "timing_clock_hz": 2e9, "steps": 10, "step_time_cycles": step,
            "batch_tokens_per_s": 2e9 / step, "index_misses_lines": index_misses, "kv_misses_lines": kv_misses,
            "kv_write_misses_lines": 0, "misses_lines": index_misses + kv_misses, "hits_lines": hits,
            "lines_per_token": 11, "kv_token_full_hit_rate": 0.1, "min_token_hit_rate": 0.5}


@pytest.fixture
def table():
    return pd.DataFrame([
        run(0, "lru", 1000.0, 50_000, 20_000),
        run(4, "token-lru", 800.0, 10_000, 22_000),   # 1.25x: saves 4,000 index misses/step, adds 200 KV
        run(8, "token-lru", 1250.0, 60_000, 5_000),   # 0.80x: hurts
        run(4, "streak", 995.0, 49_000, 20_000),      # 1.005x: neutral
        run(4, "lru", 800.0, 10_000, 22_000),         # identical to token-lru in 4 ways
        run(8, "lru", 1250.0, 60_000, 5_000),         # identical to token-lru in 8 ways
    ])


def test_comparisons_give_speedups_and_misses_saved_per_class_and_step(table):
    c = comparisons(table).set_index(["policy", "reserve_ways"])
    assert c.loc[("token-lru", 4)].speedup == pytest.approx(1.25)
    assert c.loc[("token-lru", 4)].saved_index == pytest.approx((50_000 - 10_000) / 10)
    assert c.loc[("token-lru", 4)].saved_kv == pytest.approx((20_000 - 22_000) / 10)
    assert c.loc[("token-lru", 8)].speedup == pytest.approx(0.8)


def test_headline_keeps_each_policys_best_reservation(table):
    h = headline(table).set_index("policy")
    assert h.loc["token-lru"].reserve_ways == 4 and h.loc["streak"].reserve_ways == 4
    assert len(h) == 3


def test_attribution_names_the_class_of_the_saved_misses(table):
    best = comparisons(table).sort_values("speedup").iloc[-1]
    text = attribution(best)
    assert "saves 4.0 k indexer-key misses" in text and "adds 0.2 k KV misses" in text
    assert text.endswith("the saved misses are indexer-key misses")


def test_verdict_gives_both_sides_and_the_threshold(table):
    (line,) = verdict(table)
    assert "1.25x" in line and "token-lru in 4 of 16 ways" in line
    # token-lru 4 and lru 4 help, token-lru 8 and lru 8 hurt, streak is neutral
    assert "2 help (>= 1.01x), 2 hurt (<= 0.99x) and 1 change less" in line
    assert "the worst is 0.80x" in line
    assert "of at most 0.50 (MIN, any policy)" in line


def test_identical_policies_are_explained(table):
    (text,) = identities(table)
    assert text.startswith("lru and token-lru give identical results in all 2 deepseek-v3.2 runs")
    # 11-line tokens do not divide 2^k sets: no reason is claimed
    assert "divides the number of sets" not in text
    llama = table.assign(geometry="llama-3.1-8b", lines_per_token=64)
    (text,) = identities(llama)
    assert "a token is 64 lines, 64 divides the number of sets" in text


def test_verdict_says_where_a_reservation_pays_and_which_traffic_misses(table):
    big = table.assign(llc_bytes=1 << 26, step_time_cycles=table.step_time_cycles.where(table.reserve_ways > 0, 900.0))
    (line,) = verdict(pd.concat([table, big], ignore_index=True))
    # at 16 MiB the best is 1.25x with 2 of 5 reserved runs helping; at 64 MiB (baseline 900) 1.12x
    assert "Best speed-up by LLC: 16MiB 1.25x (2/5 help), 64MiB 1.12x (2/5 help)" in line
    # the two baselines miss 2 x 50,000 indexer-key and 2 x 20,000 KV lines
    assert "Without a reservation, indexer-key reads make 71%, KV reads make 29% of the LLC misses." in line


def test_a_whole_step_gives_tokens_per_s_and_its_attention_part_beside_it(table):
    whole = table.assign(step_scope="whole", attention_time_cycles=table.step_time_cycles / 4, attention_share=0.25)
    whole.loc[whole.reserve_ways == 0, "attention_time_cycles"] = 500.0  # the baseline's attention part
    (line,) = verdict(whole)
    assert "1.25x the whole decode step (2,000,000 -> 2,500,000 tokens/s per device for its batch)" in line
    assert "its attention part, 25% of the step, 2.50x (attention-only speed-up)" in line


def test_an_attention_only_step_is_never_a_decode_speed(table):
    (line,) = verdict(table.assign(step_scope="attention"))
    assert "1.25x the attention-only step time (no weights: not a decode speed)" in line
    assert "tokens/s" not in line.split("Of ")[0]
