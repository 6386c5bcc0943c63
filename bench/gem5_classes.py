"""Class-aware LLC knobs at a serving-scale point, in gem5 and in the built-in model (issue 23's
gem5 check): one index log (e.g. 32k context, k = 2048, B = 1) on DeepSeek-V3.2 geometry, one
LLC, one platform.

1. search (built-in model, the platform's own timing): the unmanaged LLC, KV-only reservations
   and class-aware settings (index keys persisting at a ratio under a set-aside, optionally the
   weights streaming; ``--candidate`` adds more), over the first ``--steps`` decode steps (the
   first a warm-up), whole step and attention-only, ranked by whole-step time; the best
   class-aware setting is checked in gem5:
2. serial counts: gem5's closed loop with one request in flight over the same steps (attention
   only: gem5 does not run the weights), no warm-up: every count equals the built-in model's
   (every set simulated, no sampling);
3. step time: gem5's closed loop with ``--in-flight`` requests in flight against the calibrated
   built-in model on the same machine (gem5's memory bandwidth; harness.gem5.validation), for
   the best setting and the unmanaged LLC: the error of each and both speed-ups.

Every gem5 run is kept in ``--out`` (its result.json is reused when present); the summary goes
to ``--out/summary.json``:

    python bench/gem5_classes.py --gem5 $GEM5 --log LOG --llc-size 256MiB --ways 16 --out DIR
    python bench/gem5_classes.py --gem5 $GEM5 --log LOG --llc-size 50MiB --ways 25 --out DIR  # h100 L2
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from harness.cache.calibration import calibrated_values, validation_summary
from harness.cache.llc import LLCConfig
from harness.cache.platforms import get_platform
from harness.cache.simulate import simulate, simulate_stream
from harness.cache.timing import TimingConfig
from harness.core.files import write_text_atomic
from harness.core.units import format_size, parse_size
from harness.gem5.binary import find_gem5
from harness.gem5.decode_step import simulate_step_gem5
from harness.gem5.validation import timing_for
from trace_gen.stream import StreamSource

STREAM = {"geometry": "deepseek-v3.2", "layout": "paged", "page_tokens": 64}
COUNT_KEYS = ("accesses", "hits", "misses", "evictions", "bypasses", "token_invalidations", "by_class")


def candidates(size: int, ways: int, platform, index_bytes: int) -> list[dict]:
    """The unmanaged LLC, the weights streaming alone, KV-only reservations (a quarter and half
    of the ways under streak), and the index keys persisting under set-asides of 1/4, 1/2 and
    3/4 of the LLC and, on the platform's own LLC, the platform's largest (within its limit),
    each at half, once and twice the share of one step's indexer keys (``index_bytes``) the
    set-aside holds, with the weights streaming."""
    out: list[dict] = [{}, {"hint_weights": "streaming"}]
    out += [{"reserve_ways": r, "policy": "streak"} for r in (ways // 4, ways // 2)]
    way = size // ways
    own = size == platform.llc_size and platform.knobs.persisting_max
    cap = platform.knobs.persisting_max if own else size
    asides = {max(1, round(ways * f)) * way for f in (1 / 4, 1 / 2, 3 / 4)} | {cap // way * way}
    for aside in sorted(a for a in asides if way <= a <= min(cap, size - way)):
        share = aside / index_bytes
        for ratio in sorted({float(f"{min(1.0, f * share):.2g}") for f in (0.5, 1, 2)}):
            out.append({"hint_index": f"persisting:{ratio:g}", "set_aside": aside, "hint_weights": "streaming"})
    return out


def label(knobs: dict) -> str:
    if not knobs:
        return "unmanaged"
    parts = []
    if knobs.get("reserve_ways"):
        parts.append(f"--reserve kv={knobs['reserve_ways']}:{knobs['policy']}")
    for cls in ("kv", "index", "weights"):
        if knobs.get(f"hint_{cls}", "normal") != "normal":
            parts.append(f"--hint {cls}={knobs[f'hint_{cls}']}")
    if knobs.get("set_aside"):
        parts.append(f"--set-aside {format_size(knobs['set_aside'])}")
    return " ".join(parts)


def llc(args, knobs: dict, sample_sets: int = 1) -> LLCConfig:
    return LLCConfig.make(args.llc_size, args.ways, sample_sets=sample_sets, what_if=True, **knobs)


def search(args, src: StreamSource, platform) -> list[dict]:
    """Built-in step times of every candidate, whole step and attention-only, best first (1 in
    ``--search-sample`` set groups simulated: the ranking, not the gem5 check)."""
    timing = TimingConfig.make(args.platform)
    rows = []
    grid = candidates(parse_size(args.llc_size), args.ways, platform, src.amap.index_bytes_region)
    for knobs in grid + [json.loads(c) for c in args.candidate]:
        knobs = {k: parse_size(v) if k == "set_aside" and isinstance(v, str) else v for k, v in knobs.items()}
        cfg = llc(args, knobs, args.search_sample)
        t0 = time.perf_counter()
        whole = simulate_stream(src, cfg, timing, args.steps, bounds=False)
        attn = simulate_stream(src.without_weights(), cfg, timing, args.steps, bounds=False)
        steps = attn["steps"]
        rows.append({"setting": label(knobs), "knobs": knobs, "whole_step_cycles": whole["step_time_cycles"],
                     "attention_cycles": attn["step_time_cycles"],
                     "index_hits_per_step": attn["by_class"]["index"]["hits"] / steps,
                     "index_misses_per_step": attn["by_class"]["index"]["misses"] / steps,
                     "beyond_platform": cfg.beyond(platform), "seconds": time.perf_counter() - t0})
        print(f"  {rows[-1]['setting']:70s} whole {rows[-1]['whole_step_cycles']:14,.0f} attention "
              f"{rows[-1]['attention_cycles']:14,.0f} index hits/step {rows[-1]['index_hits_per_step']:12,.0f}",
              flush=True)
    base = rows[0]
    for r in rows:
        r["whole_speedup"] = base["whole_step_cycles"] / r["whole_step_cycles"]
        r["attention_speedup"] = base["attention_cycles"] / r["attention_cycles"]
    return sorted(rows, key=lambda r: r["whole_step_cycles"])


def gem5_run(binary, src, cfg, timing, steps, folder: Path, options: dict | None = None) -> dict:
    """A closed-loop gem5 run's result, from ``folder/result.json`` when an earlier run left it."""
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    work = folder / "work"
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    r = simulate_step_gem5(src, cfg, timing, binary, work, steps, timeout=6 * 3600, options=options)
    r["gem5"]["wall_seconds_total"] = time.perf_counter() - t0
    shutil.copy(work / "m5out" / "phases.csv", folder / "phases.csv")
    shutil.rmtree(work)
    write_text_atomic(done, json.dumps(r, indent=1) + "\n")
    return r


def builtin_run(folder: Path, run) -> dict:
    """The built-in model's result, from ``folder/builtin.json`` when an earlier run left it, with
    the seconds it took."""
    done = folder / "builtin.json"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        r = run()
        r["seconds"] = time.perf_counter() - t0
        write_text_atomic(done, json.dumps(r, indent=1) + "\n")
    return json.loads(done.read_text())


def serial_check(binary, args, src, cfg, out: Path) -> dict:
    """gem5 with one request in flight and no warm-up against the built-in model, attention only."""
    attn = src.without_weights()
    b = builtin_run(out, lambda: simulate(attn.chunks(as_lines=True, steps=args.steps), cfg, bounds=False))
    if binary is None:
        return {}
    timing = TimingConfig(**{**TimingConfig.make(args.platform).to_dict(), "warmup_steps": 0})
    g = gem5_run(binary, attn, cfg, timing, args.steps, out, {"max_outstanding": 1, "issue_width": 1})
    builtin_s = b["seconds"]
    diff = {k: (g[k], b[k]) for k in COUNT_KEYS if g[k] != b[k]}
    wb = (g["writebacks"] - g["bypassed_writes"], b["writebacks"])
    return {"exact": not diff and wb[0] == wb[1], "differences": diff, "writebacks_gem5_less_bypassed_vs_builtin": wb,
            "counts": {k: b[k] for k in COUNT_KEYS}, "persisting_fills_gem5": g.get("persisting_fills"),
            "gem5_host_seconds": g["gem5"]["host_seconds"], "gem5_wall_seconds": g["gem5"]["wall_seconds"],
            "gem5_requests": g["gem5"]["requests"], "builtin_seconds": builtin_s}


def step_check(binary, args, src, cfg, out: Path) -> dict:
    """gem5's closed-loop step time against the calibrated built-in model's, on gem5's machine."""
    attn = src.without_weights()
    c = {"max_outstanding": args.in_flight}
    cal = timing_for(c, args.platform, calibrated_values(args.platform))
    b = builtin_run(out, lambda: simulate(attn.chunks(as_lines=True, steps=args.steps), cfg, cal, bounds=False,
                                          phases=attn.phases(args.steps), batch=attn.batch))
    if binary is None:
        return {}
    g = gem5_run(binary, attn, cfg, timing_for(c, args.platform), args.steps, out)
    return {"gem5_cycles": g["step_time_cycles"], "builtin_cycles": b["step_time_cycles"],
            "error": b["step_time_cycles"] / g["step_time_cycles"] - 1,
            "gem5_host_seconds": g["gem5"]["host_seconds"], "gem5_wall_seconds": g["gem5"]["wall_seconds"],
            "gem5_requests": g["gem5"]["requests"], "hits_equal": g["hits"] == b["hits"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gem5", default=None)
    ap.add_argument("--log", required=True, help="index log folder")
    ap.add_argument("--llc-size", required=True)
    ap.add_argument("--ways", type=int, default=16)
    ap.add_argument("--platform", default="h100-sxm")
    ap.add_argument("--steps", type=int, default=3, help="decode steps simulated, the first a warm-up")
    ap.add_argument("--in-flight", type=int, default=256, help="gem5's requests in flight for the step time")
    ap.add_argument("--search-sample", type=int, default=8, help="the search simulates 1 in N set groups")
    ap.add_argument("--candidate", action="append", default=[], help="more LLCConfig knobs (JSON)")
    ap.add_argument("--best", default=None, help="the class-aware knobs to check (JSON; default: the search's best)")
    ap.add_argument("--search-only", action="store_true", help="stop after the built-in search")
    ap.add_argument("--builtin-only", action="store_true", help="the built-in model's side of the checks only")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    binary = None if args.search_only or args.builtin_only else find_gem5(args.gem5)
    platform = get_platform(args.platform)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = StreamSource.from_options(args.log, STREAM)
    print(f"{args.log}: {src.log.meta['prompt_tokens']}-token prompt, k = {src.log.meta['indexer']['topk']}, "
          f"B = {src.batch}, {args.llc_size} {args.ways}-way, {args.platform}, {args.steps} steps", flush=True)
    found = out / "search.json"
    if not found.exists():
        write_text_atomic(found, json.dumps(search(args, src, platform), indent=1) + "\n")
    rows = json.loads(found.read_text())
    if args.search_only:
        return
    aware = [r for r in rows if r["knobs"].get("set_aside") or r["knobs"].get("hint_index", "normal") != "normal"]
    kv_only = [r for r in rows if r["knobs"].get("reserve_ways") and r not in aware]
    best = json.loads(args.best) if args.best else aware[0]["knobs"]
    print(f"best class-aware setting: {label(best)}", flush=True)
    cfg = llc(args, best)
    summary = {"log": args.log, "llc_size": args.llc_size, "ways": args.ways, "platform": args.platform,
               "steps": args.steps, "best": {"setting": label(best), "knobs": best},
               "best_row": next((r for r in rows if r["knobs"] == best), None),
               "best_kv_only": kv_only[0] if kv_only else None,
               "unmanaged": next(r for r in rows if not r["knobs"]),
               "beyond_platform": cfg.beyond(platform)}
    summary["serial"] = serial_check(binary, args, src, cfg, out / "serial")
    if binary is None:
        for name, knobs in (("best", best), ("unmanaged", {})):
            step_check(binary, args, src, llc(args, knobs), out / f"q{args.in_flight}-{name}")
        return
    print(f"serial counts exact: {summary['serial']['exact']} ({summary['serial']['gem5_requests']:,} requests, "
          f"{summary['serial']['gem5_host_seconds']:.0f} s gem5 host)", flush=True)
    summary["step_time"] = {name: step_check(binary, args, src, llc(args, knobs), out / f"q{args.in_flight}-{name}")
                            for name, knobs in (("best", best), ("unmanaged", {}))}
    st = summary["step_time"]
    summary["speedup"] = {m: st["unmanaged"][f"{m}_cycles"] / st["best"][f"{m}_cycles"] for m in ("gem5", "builtin")}
    summary["validated"] = validation_summary(args.platform)
    for name, r in st.items():
        print(f"{name}: gem5 {r['gem5_cycles']:,.0f} cycles/step, built-in {r['builtin_cycles']:,.0f} "
              f"({r['error']:+.1%}), {r['gem5_host_seconds']:.0f} s gem5 host", flush=True)
    print(f"speed-up of the best setting over the unmanaged LLC: gem5 {summary['speedup']['gem5']:.3f}, "
          f"built-in {summary['speedup']['builtin']:.3f}")
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
