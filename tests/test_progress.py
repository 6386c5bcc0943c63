"""Sweep progress: the bar weighs each task by its expected work (a real backbone's decode far
more than a simulation of its log), hears of the decodes and indexer fits in flight, and is
polled even when a one-job sweep runs its tasks in its own process."""

import json
import time

import pytest
from helpers import SPEC

from harness.study.runs import decode_id
from harness.study.spec import loads_spec


def test_progress_weighs_work_and_names_the_decode_in_flight(tmp_path):
    from harness.study.progress import SweepProgress, decode_cost, sim_cost

    # the estimate needs no weights: a tiny-llama spec's run with smollm2's decode swapped in
    run = loads_spec(SPEC).runs[0]
    decode = dict(run["decode"], backbone="smollm2-135m", steps=24, prompt_tokens=2048)
    run = dict(run, decode=decode)
    spec = type("Parsed", (), {"runs": [run], "decodes": {decode_id(decode): decode}})
    # measured: a real backbone's decode costs far more than one simulation of its log
    assert decode_cost(decode) > 20 * sim_cost(spec.runs[0])
    (tmp_path / "logs").mkdir()
    bar = SweepProgress(tmp_path, spec.decodes, spec.runs, enabled=False)
    did = decode_id(decode)
    (tmp_path / "logs" / f".progress-{did}.json").write_text(
        json.dumps({"phase": "decode smollm2-135m", "done": 12, "total": 24}))
    bar.poll()
    assert "decode smollm2-135m step 12/24" in bar.bar.postfix
    assert bar.bar.n == pytest.approx(decode_cost(decode) / 2)
    bar.decode_done(did)
    bar.start_simulations()
    assert bar.bar.n / bar.bar.total > 0.9  # the decode was most of the work
    bar.close()


def test_decode_and_fit_report_progress_with_the_backbone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSA_LLC_CACHE", str(tmp_path / "cache"))
    from trace_gen.decode import DecodeConfig, decode

    heard = []
    decode(DecodeConfig("tiny-llama", "dsa", 8, 64, 3), tmp_path / "log", progress=False,
           indexer_options={"iterations": 1, "calibration_tokens": 128, "queries": 16},
           on_progress=lambda *p: heard.append(p))
    assert heard[0] == ("load tiny-llama", 0, 0) and ("fit tiny-llama", 0, 3) in heard
    assert heard[-1] == ("decode tiny-llama", 3, 3)
    from trace_gen.backbones import load_backbone
    from trace_gen.indexers.dsa import calibrate, fit_settings

    calibrate(load_backbone("tiny-llama"), fit_settings({"iterations": 1, "calibration_tokens": 128, "queries": 16}))
    assert "fitting the dsa indexer of tiny-llama: layer 3/3" in capsys.readouterr().err


def test_a_one_job_sweep_polls_progress_while_a_task_runs():
    # --jobs 1 runs tasks in the sweep's own process: the progress bar must still hear of a
    # decode in flight (it sat silent through a 30-minute indexer fit)
    from harness.study.executors import LocalExecutor

    polls = []
    out = list(LocalExecutor(1).map(time.sleep, {"a": (1.2,)}, poll=lambda: polls.append(1)))
    assert [key for key, *_ in out] == ["a"] and len(polls) >= 2
