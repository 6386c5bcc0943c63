"""Regenerate the closed-loop gem5 runs in this folder with a gem5 binary that has dsa-llc's
extension:

    python tests/data/gem5_step/make_cases.py /path/to/gem5.fast

One small DSA stream (a synthetic index log, 11-line tokens, a shuffled paged layout) as
unbatched phases (``phases_from_stream``: 2 warm-up steps, 3000 ps of compute per phase), kept
in ``steps.phases``, through a 128 KiB, 8-way LLC with 4 reserved ways under streak with
whole-token eviction, into one DDR5 channel: once with one request in flight (``serial``, where
gem5's counts equal the built-in model's) and once with 16 in flight, 4 issued per cycle
(``overlap``). Each case keeps gem5's stats.txt, phases.csv and config.ini, and case.json
(options and the stream's address map).
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

from harness.cache.llc import LLCConfig
from harness.gem5.phasefile import phases_from_stream, write_phase_file
from harness.gem5.decode_step import llc_options, run_step_replay
from trace_gen.geometry import Geometry
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log

HERE = Path(__file__).parent
LLC = LLCConfig.make("128KiB", 8, 4, "streak", True)
CASES = {"serial": {"max_outstanding": 1, "issue_width": 1},
         "overlap": {"max_outstanding": 16, "issue_width": 4}}


def main(binary):
    with tempfile.TemporaryDirectory() as tmp:
        log = IndexLog(write_synthetic_log(f"{tmp}/log", steps=6, layers=2, topk=16, prompt=32, requests=2))
        src = StreamSource(log, Geometry("g", layers=3, kv_bytes=656, index_bytes=132),
                           Layout(kind="paged", page_tokens=8, page_order="shuffled", seed=2))
        write_phase_file(HERE / "steps.phases", phases_from_stream(src.chunks(), warmup_steps=2,
                                                                   compute_ticks=3000))
        for name, timing in CASES.items():
            options = llc_options(LLC, src.amap.describe()) | timing | {"mem_type": "DDR5_4400_4x8"}
            run = run_step_replay(binary, HERE / "steps.phases", options, Path(tmp) / name)
            case = HERE / name
            shutil.rmtree(case, ignore_errors=True)
            case.mkdir()
            for f in ("stats.txt", "phases.csv", "config.ini"):
                shutil.copy(run.outdir / "m5out" / f, case / f)
            json.dump({"options": options, "llc": LLC.to_dict(), "address_map": src.amap.describe()},
                      open(case / "case.json", "w"), indent=1)
            r = run.results
            print(name, {k: r[k] for k in ("hits", "misses", "bypasses", "demotions")}, r["step"])


if __name__ == "__main__":
    main(sys.argv[1])
