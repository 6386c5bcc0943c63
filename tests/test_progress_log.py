"""Progress written to a file or a CI log: whole lines, a few of them, never a bar state twice a
second (harness.core.progress)."""

from __future__ import annotations

import io
import subprocess
import sys

from helpers import tiny_spec

from harness.core.progress import LogLines, progress_bar
from harness.study.progress import SweepProgress
from harness.study.runs import run_id
from harness.study.spec import loads_spec


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
