"""Regenerate the class-aware closed-loop gem5 runs in this folder with a gem5 binary that has
dsa-llc's extension:

    python tests/data/gem5_classes/make_cases.py /path/to/gem5.fast

The phases of tests/data/gem5_step/steps.phases (a small DSA stream: 11-line tokens, a shuffled
paged layout, 2 warm-up steps) through a 32 KiB, 8-way LLC with one request in flight, where
gem5's counts equal the built-in model's, under two class-aware settings:

- ``persisting``: --reserve kv=2:token-lru (whole-token eviction) --reserve index=2
  --hint index=persisting:0.5 --set-aside 16KiB (4 ways per set: more than the index keys' own
  2, so persisting fills that find every index way persisting bypass);
- ``bip``: --reserve index=2:bip --hint kv=streaming.

Each case keeps gem5's stats.txt without the memory's and the memory bus's own statistics,
phases.csv and config.ini, and case.json (the LLC, the options the launcher passed, the
stream's address map).
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

from harness.cache.llc import LLCConfig
from harness.gem5.decode_step import llc_options, run_step_replay

HERE = Path(__file__).parent
PHASES = HERE.parent / "gem5_step" / "steps.phases"
SERIAL = {"max_outstanding": 1, "issue_width": 1, "mem_type": "DDR5_4400_4x8"}
CASES = {
    "persisting": LLCConfig.make("32KiB", 8, 2, "token-lru", True, reserve_index=2, hint_index="persisting:0.5",
                                 set_aside=16 * 1024),
    "bip": LLCConfig.make("32KiB", 8, reserve_index=2, hint_index="bip", hint_kv="streaming"),
}


def main(binary):
    amap = json.loads((HERE.parent / "gem5_step" / "serial" / "case.json").read_text())["address_map"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in CASES.items():
            options = llc_options(cfg, amap) | SERIAL
            run = run_step_replay(binary, PHASES, options, Path(tmp) / name)
            case = HERE / name
            shutil.rmtree(case, ignore_errors=True)
            case.mkdir()
            for f in ("phases.csv", "config.ini"):
                shutil.copy(run.outdir / "m5out" / f, case / f)
            lines = (run.outdir / "m5out" / "stats.txt").read_text().splitlines(keepends=True)
            (case / "stats.txt").write_text("".join(x for x in lines if not x.startswith(("system.memory",
                                                                                         "system.membus"))))
            json.dump({"options": options, "llc": cfg.to_dict(), "address_map": amap},
                      open(case / "case.json", "w"), indent=1)
            r = run.results
            print(name, {k: r[k] for k in ("hits", "misses", "evictions", "bypasses", "persisting_fills")})


if __name__ == "__main__":
    main(sys.argv[1])
