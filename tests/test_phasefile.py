"""Phase files (the closed-loop gem5 generator's input) and phase tables (its output)."""

import struct

import numpy as np
import pytest

from harness.core.errors import UserError
from harness.gem5.phasefile import (
    GATHER_PHASE,
    INDEX_PHASE,
    Phase,
    read_phase_file,
    read_phase_results,
    write_phase_file,
)


def phase(step=0, layer=0, kind=GATHER_PHASE, measured=True, compute=0, lines=(), cls=None, write=None):
    n = len(lines)
    return Phase(step, layer, kind, measured, compute, np.array(lines, dtype=np.int64),
                 np.array(cls if cls is not None else [0] * n, dtype=np.uint8),
                 np.array(write if write is not None else [0] * n, dtype=np.uint8))


def test_bytes_follow_the_format(tmp_path):
    """The layout written down independently: header, phase header, request words."""
    write_phase_file(tmp_path / "p", [phase(7, 3, INDEX_PHASE, False, 1234, [5, 1 << 49], [2, 1], [0, 1])])
    expect = b"DSAPHAS1" + struct.pack("<Q", 1)
    expect += struct.pack("<IHBBQQQ", 7, 3, 0, 0, 1234, 2, 0)
    expect += struct.pack("<QQ", (5 << 6) | (2 << 56), (1 << 55) | (1 << 56) | (1 << 63))
    assert (tmp_path / "p").read_bytes() == expect


def test_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    phases = [phase(s, s % 61, s % 2, s >= 2, int(rng.integers(0, 10**9)),
                    rng.integers(0, 1 << 50, 100 * s), rng.integers(0, 5, 100 * s), rng.integers(0, 2, 100 * s))
              for s in range(5)]  # phase 0 has no requests
    counts = write_phase_file(tmp_path / "p", phases)
    assert counts == {"phases": 5, "warmup_phases": 2, "requests": 1000}
    back = read_phase_file(tmp_path / "p")
    assert len(back) == 5
    for a, b in zip(phases, back):
        assert (a.step, a.layer, a.kind, a.measured, a.compute_ticks) == \
            (b.step, b.layer, b.kind, b.measured, b.compute_ticks)
        for f in ("lines", "cls", "write"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_kind_by_name_and_generator_input(tmp_path):
    write_phase_file(tmp_path / "p", (phase(kind=k, lines=[1]) for k in ("index", "gather")))
    assert [p.kind for p in read_phase_file(tmp_path / "p")] == [INDEX_PHASE, GATHER_PHASE]


@pytest.mark.parametrize("bad, match", [
    ([phase(measured=True), phase(measured=False)], "warm-up phase after a measured"),
    ([phase(lines=[1], cls=[5])], "class codes"),
    ([phase(lines=[-1])], "line numbers"),
    ([phase(lines=[1 << 50])], "line numbers"),
    ([phase(lines=[1], write=[2])], "write flags"),
    ([Phase(0, 0, 1, True, 0, np.zeros(2, np.int64), np.zeros(1, np.uint8), np.zeros(2, np.uint8))], "one length"),
    ([phase(kind="scan")], "kind"),
    ([phase(step=-1)], "step"),
    ([phase(layer=1 << 16)], "layer"),
    ([], "no phases"),
])
def test_bad_phases_are_refused_and_nothing_is_left(tmp_path, bad, match):
    with pytest.raises(UserError, match=match):
        write_phase_file(tmp_path / "p", bad)
    assert list(tmp_path.iterdir()) == []


def test_bad_files_are_one_line_errors(tmp_path):
    good = tmp_path / "good"
    write_phase_file(good, [phase(lines=[1, 2, 3])])
    data = good.read_bytes()
    for name, content, match in [("magic", b"DSAPHAS2" + data[8:], "not a phase file"),
                                 ("short", data[:-8], "truncated"),
                                 ("long", data + b"\0" * 8, "bytes after its last phase")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=match):
            read_phase_file(tmp_path / name)


TABLE = ("phase,step,layer,kind,measured,requests,start_tick,mem_done_tick,end_tick\n"
         "0,5,0,index,0,3,0,100,150\n1,5,0,gather,1,0,150,150,150\n")


def test_phase_results(tmp_path):
    (tmp_path / "phases.csv").write_text(TABLE)
    df = read_phase_results(tmp_path)
    assert df.kind.tolist() == ["index", "gather"] and df.measured.tolist() == [False, True]
    assert df.end_tick.tolist() == [150, 150]


@pytest.mark.parametrize("text", [
    "",
    TABLE.replace("end_tick", "stop"),
    TABLE.replace("index", "scan"),
    TABLE.replace(",150\n1", ",x\n1"),
    TABLE.replace("0,100,150", "0,100,50"),
    TABLE.splitlines()[0] + "\n",
])
def test_malformed_phase_results_are_one_line_errors(tmp_path, text):
    (tmp_path / "phases.csv").write_text(text)
    with pytest.raises(UserError, match="is not a phase table") as e:
        read_phase_results(tmp_path)
    assert "\n" not in str(e.value)


def test_missing_phase_results(tmp_path):
    with pytest.raises(UserError, match="wrote no phase table"):
        read_phase_results(tmp_path)


def test_phases_from_a_stream_keep_its_order():
    from harness.core.accesstrace import LineAccesses
    from harness.core.traffic import INDEX, KV, KV_WRITE
    from harness.gem5.phasefile import phases_from_stream

    # step 3: index scan, gather of layer 2 (tokens of layer 2, a KV write); step 4: index only
    cls = np.array([INDEX, INDEX, KV, KV, KV_WRITE, INDEX], dtype=np.uint8)
    token = np.array([-1, -1, (2 << 32) | 5, (2 << 32) | 6, (2 << 32) | 7, -1])
    step = np.array([3, 3, 3, 3, 3, 4])
    acc = LineAccesses(np.arange(6) + 100, (cls == KV_WRITE).astype(np.uint8), cls, token, step)
    phases = phases_from_stream([acc], warmup_steps=1, compute_ticks=9)
    assert [(p.step, p.layer, p.kind, p.measured, len(p.lines)) for p in phases] == \
        [(3, 2, INDEX_PHASE, False, 2), (3, 2, GATHER_PHASE, False, 3), (4, 0, INDEX_PHASE, True, 1)]
    assert np.concatenate([p.lines for p in phases]).tolist() == list(range(100, 106))
    assert phases[1].write.tolist() == [0, 0, 1] and all(p.compute_ticks == 9 for p in phases)
