"""MSHR merging at high parallelism: the built-in model's memory reads and step time against gem5's
closed-loop decode steps, before merging (every miss reads memory) and after (misses within the
in-flight window of their line's fill merge: harness.cache.llc), at the in-flight limits given.

Every configuration runs on the same window of decode steps (``--steps``, the first a warm-up)
in gem5 (gem5_configs/decode_step.py) and in the built-in model, on one platform whose memory
gem5 builds (its bandwidth set to the gem5 memory's: harness.gem5.validation.timing_for), with
the platform's calibrated ``latency_factor``. The grid: the index logs given, DeepSeek-V3.2 and
Llama-3.1-8B geometry, one LLC size without a reservation, each in-flight limit. gem5's memory
reads are its LLC misses less its MSHR hits (``overallMshrHits``), over the measured steps.

Runs are kept in ``--out`` (one folder each, reused when present) with ``summary.json``, which
tests/test_gem5_mshr.py re-checks without gem5. The committed runs:

    D=tests/data/gem5_steptime/logs
    python bench/gem5_mshr.py --gem5 $GEM5 --platform h100-sxm --logs smollm2=$D/smollm2 \\
        gemma3-b4=$D/gemma3-b4 --in-flight 256 1024 --out tests/data/gem5_mshr/h100-sxm
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from gem5_steptime import run_gem5

from harness.cache.calibration import load as load_calibration
from harness.core.files import write_text_atomic
from harness.gem5.binary import find_gem5
from harness.gem5.decode_step import step_results
from harness.gem5.stats import parse_stats
from harness.gem5.validation import (
    GEOMETRIES,
    config_id,
    measured_memory_reads,
    model_counts,
    model_time,
)

STEPS = 3


def gem5_counts(folder: Path) -> dict:
    """gem5's measured LLC counts of a kept run: misses, MSHR hits (merged) and memory reads."""
    r = step_results(parse_stats(folder / "stats.txt"))
    return {"misses": r["misses"], "mshr_merged": r["mshr_merged"], "memory_reads": r["memory_reads"]}


def builtin(logs, c, platform, steps, cal) -> dict:
    """The built-in model before merging (window 1) and after (the timing's window)."""
    out = {}
    for label, window in (("before", 1), ("after", None)):
        counts, _ = model_counts(logs, c, platform, steps, window)
        out[label] = {"memory_reads": measured_memory_reads(counts),
                      "mshr_merged": int(counts[counts.step >= counts.step.min() + 1].merged.sum()),
                      "step_time_cycles": model_time(logs, c, platform, steps, cal, window)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gem5", default=None)
    ap.add_argument("--logs", nargs="+", required=True, help="name=index-log-folder ...")
    ap.add_argument("--platform", default="h100-sxm")
    ap.add_argument("--in-flight", nargs="+", type=int, default=[256, 1024])
    ap.add_argument("--size", default="16MiB")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--out", default="gem5-mshr")
    args = ap.parse_args()
    binary = find_gem5(args.gem5)
    logs = dict(s.split("=", 1) for s in args.logs)
    out = Path(args.out)
    cal = load_calibration()[args.platform]["parameters"]
    configs = [{"log": log, "geometry": g, "size": args.size, "policy": "none", "reserve_ways": 0,
                "max_outstanding": n} for n in args.in_flight for log in logs for g in GEOMETRIES]
    print(f"{len(configs)} configurations on {args.platform}, {args.steps} steps each (1 warm-up), "
          f"calibration {cal}")
    rows = []
    for c in configs:
        folder = out / "runs" / config_id(c)
        t0 = time.perf_counter()
        g = run_gem5(binary, logs, c, args.platform, args.steps, folder)
        rows.append({"config": c, "gem5": {**gem5_counts(folder), "step_time_cycles": g["step_time_cycles"],
                                           "host_seconds": g["gem5"]["host_seconds"]},
                     "builtin": builtin(logs, c, args.platform, args.steps, cal)})
        r = rows[-1]
        e = {k: {m: r["builtin"][k][m] / r["gem5"][m] - 1 for m in ("memory_reads", "step_time_cycles")}
             for k in ("before", "after")}
        print(f"{config_id(c):48s} gem5 reads {r['gem5']['memory_reads']:>9,} (merged {r['gem5']['mshr_merged']:,}) "
              f"built-in {r['builtin']['after']['memory_reads']:>9,} (merged {r['builtin']['after']['mshr_merged']:,}); "
              f"reads {e['before']['memory_reads']:+.2%} -> {e['after']['memory_reads']:+.2%}, "
              f"time {e['before']['step_time_cycles']:+.2%} -> {e['after']['step_time_cycles']:+.2%} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    table = {}
    for n in args.in_flight:
        sel = [r for r in rows if r["config"]["max_outstanding"] == n]
        table[n] = {}
        for k in ("before", "after"):
            for m in ("memory_reads", "step_time_cycles"):
                e = np.abs([r["builtin"][k][m] / r["gem5"][m] - 1 for r in sel])
                table[n][f"{k}_{m}"] = {"median_abs_error": float(np.median(e)), "max_abs_error": float(e.max())}
        print(f"{n} in flight ({len(sel)} configurations), built-in against gem5:")
        for k, v in table[n].items():
            print(f"  {k}: median |error| {v['median_abs_error']:.2%}, max {v['max_abs_error']:.2%}")
    write_text_atomic(out / "summary.json", json.dumps(
        {"platform": args.platform, "calibration": cal, "steps": args.steps, "size": args.size,
         "measured_by": "bench/gem5_mshr.py", "rows": rows, "errors": {str(k): v for k, v in table.items()}},
        indent=1) + "\n")
    print(f"wrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()
