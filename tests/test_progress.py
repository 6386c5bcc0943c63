"""Sweep progress: the bar weighs each task by its expected work (a real backbone's decode far
more than a simulation of its log), hears of the decodes and indexer fits in flight, and is
polled even when a one-job sweep runs its tasks in its own process. Written to a file or a CI
log, progress is whole lines, a few of them, never a bar state twice a second
(harness.core.progress)."""

import io
import json
import subprocess
import sys
import time

import pytest
from helpers import SPEC, tiny_spec

from harness.core.progress import LogLines, progress_bar
from harness.study.progress import SweepProgress
from harness.study.runs import decode_id, run_id
from harness.study.spec import loads_spec


def test_progress_weighs_work_and_names_the_decode_in_flight(tmp_path):
    from harness.study.progress import decode_cost, sim_cost

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
    err = capsys.readouterr().err.splitlines()  # not a terminal: whole lines, the last state last
    assert err[-1].startswith("fitting the dsa indexer of tiny-llama: 100%") and "3/3" in err[-1]


def test_a_one_job_sweep_polls_progress_while_a_task_runs():
    # --jobs 1 runs tasks in the sweep's own process: the progress bar must still hear of a
    # decode in flight (it sat silent through a 30-minute indexer fit)
    from harness.study.executors import LocalExecutor

    polls = []
    out = list(LocalExecutor(1).map(time.sleep, {"a": (1.2,)}, poll=lambda: polls.append(1)))
    assert [key for key, *_ in out] == ["a"] and len(polls) >= 2


def test_a_bar_in_a_log_writes_whole_lines_at_most_every_30_s():
    out = io.StringIO()
    bar = progress_bar(range(10_000), desc="work", file=out)
    for _ in bar:
        pass
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert 1 <= len(lines) <= 3  # the first state, maybe one more, the last
    assert "10000/10000" in lines[-1]


def test_log_lines_drop_redraw_control_codes():
    out = io.StringIO()
    LogLines(out).write("\r\x1b[Aabc 50%\r")
    assert out.getvalue() == "abc 50%\n"


def test_a_sweep_polled_many_times_writes_a_line_per_finished_decode_not_per_poll(tmp_path, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    spec = loads_spec(tiny_spec('"deepseek-v3.2"', '"64KiB"', '"token-lru"'))
    (tmp_path / "logs").mkdir()
    bar = SweepProgress(tmp_path, spec.decodes, spec.runs)
    for _ in range(200):  # 100 s of polls at 2 a second
        bar.poll()
    for did in list(spec.decodes):
        bar.decode_done(did)
    bar.start_simulations()
    for r in spec.runs:
        bar.run_done(run_id(r))
    bar.close()
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue()
    assert len(lines) <= 2 + len(spec.decodes) + 2, lines


def test_a_sweep_run_into_a_file_logs_few_lines(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(tiny_spec('"deepseek-v3.2"', '"64KiB"', '["token-lru", "streak"]'))
    log = tmp_path / "err.log"
    with log.open("w") as f:
        res = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(spec), "--out",
                              str(tmp_path / "sw"), "--jobs", "1"], stderr=f, stdout=subprocess.PIPE, text=True)
    assert res.returncode == 0, log.read_text()
    text = log.read_text()
    assert "\r" not in text
    assert len(text.splitlines()) <= 8, text
    assert "100%" in text.splitlines()[-1]
