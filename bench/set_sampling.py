"""Set sampling against full simulation: the error grid, and the simulation speed at the
largest serving-scale point.

1. Error grid (``--grid``): serving-scale points (contexts of 4k, 16k and 32k tokens, k = 512
   and 2048, batches of 1 to 8) under DeepSeek-V3.2's geometry and a GQA geometry (the
   synthetic log's native one: 8 lines a token), each with the unpartitioned LLC and every
   reserved-way policy, simulated whole and 1 in 8 set groups (harness.core.sampling). Per
   configuration: the relative error of each class's misses and of the step time, and whether a
   reservation's speed-up stays on its side of 1.0. Writes ``tests/data/set_sampling/errors.csv``
   (with ``--out``) and prints the summary against the targets: median |error| <= 1 %, max
   <= 3 %; every speed-up more than 1 % from 1.0 on the same side.
2. Speed (``--speed``): the largest point of ``examples/serving_scale.toml`` (32k context,
   k = 2048, a batch of 8, DeepSeek-V3.2, 256 MiB), full and sampled: line accesses per second
   and wall time.

The logs are synthetic (trace_gen.synthetic, shaped like the real backbones' selections), so the
grid regenerates anywhere; the real logs' sampled runs are checked the same way by the study.

    python bench/set_sampling.py --grid [--out tests/data/set_sampling/errors.csv] [--speed]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from harness.cache.llc import LLCConfig
from harness.cache.policies import RESERVED_POLICIES
from harness.cache.simulate import simulate_stream
from harness.cache.timing import TimingConfig
from harness.core.files import atomic_path
from harness.core.units import parse_size
from trace_gen.geometry import PRESETS, get_geometry
from trace_gen.indexlog import IndexLog
from trace_gen.stream import Layout, StreamSource
from trace_gen.synthetic import write_synthetic_log

CLASSES = ("kv", "kv_write", "index", "weights")
EVERY = 8
# (context, k, log requests, batch, LLC): the serving-scale points of the grid
POINTS = [(4096, 512, 4, 8, "32MiB"), (16384, 2048, 2, 2, "128MiB"), (32768, 2048, 1, 1, "256MiB")]
STEPS = 4


def configurations() -> list[dict]:
    out = []
    for i, (ctx, k, requests, batch, size) in enumerate(POINTS):
        for geometry in ("deepseek-v3.2", "native"):
            base = {"context": ctx, "topk": k, "requests": requests, "batch": batch, "llc": size,
                    "geometry": geometry}
            out.append({**base, "policy": "lru", "reserve_ways": 0})
            for j, policy in enumerate(RESERVED_POLICIES):
                out.append({**base, "policy": policy, "reserve_ways": (4, 8)[(i + j) % 2]})
            if geometry == "deepseek-v3.2":  # the class-aware knobs (harness.cache.partitions)
                for knobs in CLASS_KNOBS:
                    out.append({**base, "policy": "lru", "reserve_ways": 0, "knobs": knobs})
    return out


# Class-aware settings of the grid, as LLCConfig keywords in "key=value;..." form; the set-aside
# is a quarter of the LLC (128 sets' worth of ways per set: 4 of 16)
CLASS_KNOBS = ("reserve_index=4", "hint_index=streaming", "reserve_index=4;hint_index=bip",
               "hint_index=persisting:0.5;set_aside=QUARTER", "reserve_ways=4;policy=token-lru;hint_index=streaming")
KEY = ["context", "topk", "requests", "batch", "llc", "geometry", "policy", "reserve_ways", "knobs"]


def knob_values(knobs: str, size: str) -> dict:
    """LLCConfig keywords of a grid row's knobs (a set-aside of QUARTER: a quarter of the LLC)."""
    out = {}
    for item in filter(None, (knobs or "").split(";")):
        key, value = item.split("=", 1)
        if value == "QUARTER":
            value = parse_size(size, "LLC size") // 4
        elif value.isdigit():
            value = int(value)
        out[key] = value
    return out


def run(c: dict, logs: dict, every: int | None) -> dict:
    log = logs[(c["context"], c["topk"], c["requests"])]
    geometry = PRESETS[c["geometry"]] if c["geometry"] in PRESETS else get_geometry("native", log.meta)
    src = StreamSource(log, geometry, Layout(kind="paged", page_tokens=64), batch=c["batch"])
    knobs = {"reserve_ways": c["reserve_ways"], "policy": c["policy"], **knob_values(c.get("knobs"), c["llc"])}
    cfg = LLCConfig.make(c["llc"], 16, sample_sets=every or 1, **knobs)
    t0 = time.perf_counter()
    r = simulate_stream(src, cfg, TimingConfig.make("h100-sxm"), bounds=False)
    r["host_seconds"] = time.perf_counter() - t0
    return r


def grid(tmp: Path, done: pd.DataFrame | None = None) -> pd.DataFrame:
    """The grid's rows (those of ``done``, a table from an earlier run, are kept, not rerun)."""
    logs = {(ctx, k, req): IndexLog(write_synthetic_log(tmp / f"log-{ctx}-{k}-{req}", steps=STEPS, layers=8,
                                                        topk=k, prompt=ctx, requests=req, seed=ctx))
            for ctx, k, req, _, _ in POINTS}
    if done is not None:
        done = done.assign(knobs=done["knobs"].fillna("") if "knobs" in done else "")
    rows = [] if done is None else done.drop(columns=["speedup_full", "speedup_sampled"]).to_dict("records")
    have = {tuple(r[k] for k in KEY) for r in rows}
    for c in configurations():
        if tuple(c.get(k, "") for k in KEY) in have:
            continue
        full, sampled = run(c, logs, None), run(c, logs, EVERY)
        row = {"knobs": "", **c}
        for name in CLASSES:
            f = full["by_class"].get(name, {}).get("misses", 0)
            s = sampled["by_class"].get(name, {}).get("misses", 0)
            row[f"{name}_misses_full"], row[f"{name}_misses_sampled"] = f, s
            row[f"{name}_misses_error"] = (s - f) / f if f else 0.0
        row["step_time_full"], row["step_time_sampled"] = full["step_time_cycles"], sampled["step_time_cycles"]
        row["step_time_error"] = sampled["step_time_cycles"] / full["step_time_cycles"] - 1
        row["host_s_full"], row["host_s_sampled"] = full["host_seconds"], sampled["host_seconds"]
        rows.append(row)
        print(f"{c['geometry']:>14} ctx {c['context']:>6} {c['policy']:>9} R{c['reserve_ways']} {row['knobs']}: step "
              f"{row['step_time_error']:+.3%}, kv {row['kv_misses_error']:+.3%}, index {row['index_misses_error']:+.3%}"
              f" ({row['host_s_full']:.1f} s full, {row['host_s_sampled']:.1f} s sampled)", flush=True)
    df = pd.DataFrame(rows)
    return with_speedups(df)


def with_speedups(df: pd.DataFrame) -> pd.DataFrame:
    """Each reserved run's speed-up against its point's unpartitioned run, full and sampled."""
    key = ["context", "topk", "requests", "batch", "llc", "geometry"]
    df = df.copy()
    df["knobs"] = df["knobs"].fillna("") if "knobs" in df else ""
    base = df[(df.reserve_ways == 0) & (df.knobs == "")].set_index(key)
    for kind in ("full", "sampled"):
        df[f"speedup_{kind}"] = [base.loc[tuple(r[k] for k in key), f"step_time_{kind}"] / r[f"step_time_{kind}"]
                                 for _, r in df.iterrows()]
    return df


def summary(df: pd.DataFrame) -> list[str]:
    """The error table against the targets, one line each."""
    lines = []
    errors = {name: df[f"{name}_misses_error"].abs() for name in CLASSES}
    errors["step time"] = df.step_time_error.abs()
    for name, e in errors.items():
        lines.append(f"{name}: median |error| {e.median():.3%}, max {e.max():.3%} over {len(e)} configurations "
                     f"({'meets' if e.median() <= 0.01 and e.max() <= 0.03 else 'MISSES'} median <= 1 %, max <= 3 %)")
    reserved = df[(df.reserve_ways > 0) | (df.knobs != "")]
    decided = reserved[(reserved.speedup_full - 1).abs() > 0.01]
    flipped = decided[np.sign(decided.speedup_full - 1) != np.sign(decided.speedup_sampled - 1)]
    lines.append(f"speed-ups more than 1 % from 1.0: {len(decided)}, on the other side when sampled: {len(flipped)}")
    return lines


def speed(tmp: Path) -> None:
    log = IndexLog(write_synthetic_log(tmp / "largest", steps=3, layers=8, topk=2048, prompt=32760, requests=8))
    src = StreamSource(log, PRESETS["deepseek-v3.2"], Layout(kind="paged", page_tokens=64))
    for every in (1, EVERY):
        cfg = LLCConfig.make("256MiB", 16, 0, "lru", sample_sets=every)
        t0 = time.perf_counter()
        r = simulate_stream(src, replace(cfg), TimingConfig.make("h100-sxm"), bounds=False)
        wall = time.perf_counter() - t0
        lines = r["accesses"] - r["by_class"].get("weights", {}).get("accesses", 0)
        print(f"largest point, {'full' if every == 1 else f'1 in {every} set groups'}: {lines / 1e6:,.0f} M KV and "
              f"indexer line accesses in {wall:.1f} s ({lines / wall / 1e6:,.1f} M/s of the whole stream)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", action="store_true", help="the error grid")
    ap.add_argument("--out", type=Path, help="write the grid's table here (CSV)")
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --out, run the others")
    ap.add_argument("--speed", action="store_true", help="full and sampled speed at the largest point")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.grid:
            done = pd.read_csv(args.out, keep_default_na=False, na_values=[""]) \
                if args.resume and args.out and args.out.exists() else None
            df = grid(Path(tmp), done)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(args.out) as tmp_out:
                    df.to_csv(tmp_out, index=False)
            for line in summary(df):
                print(line)
        if args.speed:
            speed(Path(tmp))


if __name__ == "__main__":
    main()
