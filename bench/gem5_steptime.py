"""Cross-validation of the built-in decode-step time against gem5's closed-loop decode steps.

Every configuration runs twice on the same window of decode steps (``--steps``: the first is
the warm-up, left out of both means): in gem5 (gem5_configs/decode_step.py via
harness.gem5.decode_step) and in the built-in model (harness.cache.simulate with the closed-loop
timing model). The grid: the index logs given (both backbones, B = 1 and B = 4), two KV
geometries, two LLC sizes, the unpartitioned LLC and 4 reserved ways under lru, token-lru and
streak, and two in-flight limits, on one platform whose memory gem5 builds (its bandwidth set to
the gem5 memory's, so both models see the same machine).

Then:
1. the table: configuration, gem5 and built-in step time (cycles), error, gem5 host seconds;
2. speed-ups of every reserved configuration over its unpartitioned baseline in both models;
3. calibration: ``latency_factor`` (harness.cache.calibration; ``bw_efficiency`` stays 1.0,
   see harness.gem5.validation.fit) fitted on the even-numbered configurations (least squares on the log
   error), the error reported on the odd-numbered ones (held out), and written to
   harness/cache/calibration.json with ``--write-calibration``;
4. sampling: one small configuration unsampled (every step of its log) against its window;
5. with ``--long-log``: the gem5 host time of one configuration of that log (DeepSeek-V3.2
   geometry; e.g. 32k context, k = 2048).

Runs are kept in ``--out`` (one folder each, reused when present). The committed validation:
logs in tests/data/gem5_steptime/logs, ``--out tests/data/gem5_steptime/<platform>``, which
tests/test_gem5_steptime.py re-checks without gem5:

    D=tests/data/gem5_steptime
    python bench/gem5_steptime.py --gem5 $GEM5 --logs smollm2=$D/logs/smollm2 gemma3=$D/logs/gemma3 \
        smollm2-b4=$D/logs/smollm2-b4 gemma3-b4=$D/logs/gemma3-b4 --out $D/xeon-8480 --write-calibration \
        --sampling-log smollm2 --long-log LONG_LOG
    python bench/gem5_steptime.py --gem5 $GEM5 --platform h100-sxm --logs smollm2=$D/logs/smollm2 \
        gemma3-b4=$D/logs/gemma3-b4 --out $D/h100-sxm --write-calibration

    python bench/gem5_steptime.py --gem5 /path/to/gem5.fast --logs smollm2=LOG gemma3=LOG ... \
        [--platform xeon-8480] [--steps 3] [--out DIR] [--write-calibration]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from harness.cache.calibration import CALIBRATION_FILE
from harness.core.files import write_text_atomic
from harness.gem5.binary import find_gem5
from harness.gem5.decode_step import simulate_step_gem5
from harness.gem5.validation import (
    config_id,
    errors,
    fit,
    grid,
    llc_for,
    model_time,
    source,
    speedups,
    timing_for,
)


def run_gem5(binary, logs, c, platform, steps, folder: Path) -> dict:
    """gem5's result for a configuration, from ``folder/result.json`` when an earlier run left it."""
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    work = folder / "work"
    shutil.rmtree(work, ignore_errors=True)
    r = simulate_step_gem5(source(logs, c), llc_for(c), timing_for(c, platform), binary, work, steps)
    keep = {k: r[k] for k in ("step_time_cycles", "step_time_cycles_per_step", "memory_cycles_per_step",
                              "compute_cycles_per_step", "phase_cycles", "accesses", "hits", "misses",
                              "by_class", "evictions", "writebacks", "measured_steps", "steps")}
    keep["gem5"] = {k: r["gem5"][k] for k in ("host_seconds", "wall_seconds", "sim_ticks", "requests", "options")}
    shutil.copy(work / "m5out" / "phases.csv", folder / "phases.csv")
    keep_stats(work / "m5out" / "stats.txt", folder / "stats.txt")
    shutil.rmtree(work)
    write_text_atomic(done, json.dumps({"config": c, **keep}, indent=1) + "\n")
    return json.loads(done.read_text())


def keep_stats(src: Path, dst: Path) -> None:
    """gem5's stats.txt without the memory controllers' and memory bus's own statistics (97 %
    of its 700 KB; the LLC, generator and simulation totals stay)."""
    lines = src.read_text().splitlines(keepends=True)
    dst.write_text("".join(x for x in lines if not x.startswith(("system.memory", "system.membus"))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gem5", default=None)
    ap.add_argument("--logs", nargs="+", required=True, help="name=index-log-folder ...")
    ap.add_argument("--platform", default="xeon-8480")
    ap.add_argument("--steps", type=int, default=3, help="decode steps per run, the first a warm-up")
    ap.add_argument("--out", default="gem5-steptime")
    ap.add_argument("--write-calibration", action="store_true")
    ap.add_argument("--long-log", default=None, help="an index log for the host-time point (e.g. 32k, k=2048)")
    ap.add_argument("--sampling-log", default=None, help="log name of the unsampled-vs-window check")
    args = ap.parse_args()
    binary = find_gem5(args.gem5)
    logs = dict(s.split("=", 1) for s in args.logs)
    out = Path(args.out)
    configs = grid(logs)
    print(f"{len(configs)} configurations on {args.platform}, {args.steps} steps each (1 warm-up)")
    gem5 = [run_gem5(binary, logs, c, args.platform, args.steps, out / "runs" / config_id(c)) for c in configs]
    g_times = [r["step_time_cycles"] for r in gem5]
    raw = [model_time(logs, c, args.platform, args.steps, None) for c in configs]
    train = list(range(0, len(configs), 2))
    test = list(range(1, len(configs), 2))
    cal = fit(logs, configs, g_times, args.platform, args.steps, train)
    fitted = [model_time(logs, c, args.platform, args.steps, cal) for c in configs]

    print(f"\n{'configuration':58s} {'gem5':>12s} {'built-in':>12s} {'error':>7s} {'calib.':>7s} {'host s':>7s}")
    e_raw, e_fit = errors(g_times, raw), errors(g_times, fitted)
    for i, c in enumerate(configs):
        print(f"{config_id(c):58s} {g_times[i]:12,.0f} {raw[i]:12,.0f} {e_raw[i]:+7.1%} {e_fit[i]:+7.1%} "
              f"{gem5[i]['gem5']['host_seconds']:7.1f}{'  (fit)' if i in train else ''}")
    summary = {}
    for label, e in (("uncalibrated, all", e_raw), ("calibrated, held out", e_fit[test])):
        a = np.abs(e)
        print(f"{label}: median |error| {np.median(a):.1%}, max {a.max():.1%} ({len(a)} configurations)")
    s_g, s_raw, s_fit = speedups(configs, g_times), speedups(configs, raw), speedups(configs, fitted)
    d_raw = np.array([s_raw[i] / s_g[i] - 1 for i in s_g])
    d_fit = np.array([s_fit[i] / s_g[i] - 1 for i in s_g])
    straddle = [i for i in s_g if (s_fit[i] - 1) * (s_g[i] - 1) < 0]
    side = len(straddle)
    for i in straddle:
        print(f"  on opposite sides of 1.0: {config_id(configs[i])}: gem5 {s_g[i]:.5f}, built-in {s_fit[i]:.5f}")
    print(f"speed-ups over the unpartitioned LLC ({len(s_g)} reserved configurations): gem5 "
          f"{min(s_g.values()):.3f}..{max(s_g.values()):.3f}; built-in |difference| median "
          f"{np.median(np.abs(d_raw)):.1%}, max {np.abs(d_raw).max():.1%} (calibrated: median "
          f"{np.median(np.abs(d_fit)):.1%}, max {np.abs(d_fit).max():.1%}); on the other side of 1.0: {side}")
    print(f"calibration (fitted on {len(train)}): {cal}")
    summary = {"configurations": len(test), "median_abs_error": float(np.median(np.abs(e_fit[test]))),
               "max_abs_error": float(np.abs(e_fit[test]).max()),
               "speedup_median_abs_difference": float(np.median(np.abs(d_fit))),
               "speedup_max_abs_difference": float(np.abs(d_fit).max()), "speedups_other_side": int(side),
               "speedups_other_side_max_distance_from_1": float(max((max(abs(s_g[i] - 1), abs(s_fit[i] - 1))
                                                                 for i in straddle), default=0.0)),
               "uncalibrated_median_abs_error": float(np.median(np.abs(e_raw))),
               "uncalibrated_max_abs_error": float(np.abs(e_raw).max()),
               "fitted_on": len(train), "in_flight": sorted({c["max_outstanding"] for c in configs}),
               "measured_by": "bench/gem5_steptime.py (held-out: odd-numbered configurations)",
               "steps": args.steps, "gem5_host_seconds": float(sum(r["gem5"]["host_seconds"] for r in gem5))}
    write_text_atomic(out / "summary.json", json.dumps({"platform": args.platform, "calibration": cal,
                                                         "validation": summary, "configs": configs,
                                                         "builtin_uncalibrated": raw, "builtin_calibrated": fitted,
                                                         "gem5": g_times}, indent=1) + "\n")
    if args.write_calibration:
        entries = json.loads(CALIBRATION_FILE.read_text()) if CALIBRATION_FILE.exists() else {}
        entries[args.platform] = {"parameters": cal, "validation": summary}
        write_text_atomic(CALIBRATION_FILE, json.dumps(entries, indent=1) + "\n")
        print(f"wrote {CALIBRATION_FILE}")
    if args.sampling_log:
        sampling(binary, logs, args, out)
    if args.long_log:
        long_point(binary, args, out)


def sampling(binary, logs, args, out: Path) -> None:
    """A window of ``--steps`` steps against every step of the log, in gem5."""
    c = {"log": args.sampling_log, "geometry": "deepseek-v3.2", "size": "8MiB", "policy": "token-lru",
         "reserve_ways": 4, "max_outstanding": 64}
    src = source(logs, c)
    full = run_gem5(binary, logs, c, args.platform, None, out / "sampling" / "all-steps")
    window = run_gem5(binary, logs, c, args.platform, args.steps, out / "sampling" / f"{args.steps}-steps")
    err = window["step_time_cycles"] / full["step_time_cycles"] - 1
    print(f"sampling ({config_id(c)}): {src.log.steps} steps {full['step_time_cycles']:,.0f} cycles/step "
          f"({full['gem5']['host_seconds']:.0f} s host), first {args.steps} {window['step_time_cycles']:,.0f} "
          f"({window['gem5']['host_seconds']:.0f} s host): error {err:+.2%}")


def long_point(binary, args, out: Path) -> None:
    c = {"log": "long", "geometry": "deepseek-v3.2", "size": "32MiB", "policy": "token-lru",
         "reserve_ways": 4, "max_outstanding": 256}
    t0 = time.perf_counter()
    r = run_gem5(binary, {"long": args.long_log}, c, args.platform, 2, out / "long")
    print(f"long context ({args.long_log}, DeepSeek-V3.2, 1 warm-up + 1 measured step): "
          f"{r['gem5']['requests']:,} line requests, {r['gem5']['host_seconds']:.0f} s host "
          f"({time.perf_counter() - t0:.0f} s now), {r['step_time_cycles']:,.0f} cycles/step")


if __name__ == "__main__":
    main()
