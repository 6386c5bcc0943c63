"""Regenerate the gem5 runs in this folder with a gem5 binary that has dsa-llc's extension:

    python tests/data/gem5_runs/make_cases.py /path/to/gem5.opt

One small DSA stream (a synthetic index log, 11-line tokens, a shuffled paged layout) through
a 128 KiB, 8-way LLC, four ways: no reservation (LRU), 4 reserved ways with line LRU, with
token-LRU, and with token-LRU plus whole-token eviction. Each case keeps gem5's stats.txt and
config.ini, the packet traces it replayed (one per traffic class), and case.json (command,
address map, and the built-in simulator's counts, which must equal gem5's); the four cases
replay the same packet traces (one per traffic class), kept once in traces/.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

from harness.gem5.replay import simulate_gem5
from harness.cache.llc import LLCConfig
from harness.cache.simulate import simulate
from trace_gen.synthetic import write_synthetic_log
from trace_gen.geometry import Geometry
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource

HERE = Path(__file__).parent
CASES = {
    "lru_r0": (0, "lru", False),
    "lru_r4": (4, "lru", False),
    "token_lru_r4": (4, "token-lru", False),
    "token_lru_whole_r4": (4, "token-lru", True),
}


def main(binary):
    with tempfile.TemporaryDirectory() as tmp:
        log = IndexLog(write_synthetic_log(f"{tmp}/log", steps=10, layers=2, topk=16, prompt=32, requests=2))
        src = StreamSource(log, Geometry("g", layers=3, kv_bytes=656, index_bytes=132), Layout(kind="paged", page_tokens=8, page_order="shuffled", seed=2))
        misses = {}
        for name, (reserve, policy, whole) in CASES.items():
            cfg = LLCConfig.make("128KiB", 8, reserve, policy, whole)
            out = Path(tmp) / name
            g = simulate_gem5(src.chunks(), cfg, src.amap.describe(), binary, outdir=out)
            b = simulate(src.chunks(), cfg, bounds=False)
            case = HERE / name
            shutil.rmtree(case, ignore_errors=True)
            case.mkdir()
            for f in ("m5out/stats.txt", "m5out/config.ini"):
                shutil.copy(out / f, case / Path(f).name)
            traces = sorted(p.name for p in out.glob("*.pb.gz"))
            (HERE / "traces").mkdir(exist_ok=True)
            for t in traces:
                shutil.copy(out / t, HERE / "traces" / t)
            cmd = [c.replace(str(out), "OUT").replace(str(Path(__file__).resolve().parents[3]) + "/", "")
                   for c in g["gem5"]["command"][1:]]
            json.dump({"llc": cfg.to_dict(), "address_map": src.amap.describe(), "traces": traces,
                       "gem5_args": cmd, "tick_spacing_ps": g["gem5"]["tick_spacing_ps"],
                       "gem5": {k: g[k] for k in ("hits", "misses", "evictions", "writebacks")}
                       | {"by_class": g["by_class"]}},
                      open(case / "case.json", "w"), indent=1)
            print(name, "gem5", g["hits"], g["misses"], "built-in", b["hits"], b["misses"])
            misses[name] = g["misses"]
    # the cases must exercise whole-token eviction: it changes gem5's miss count
    assert misses["token_lru_whole_r4"] != misses["token_lru_r4"], misses


if __name__ == "__main__":
    main(sys.argv[1])
