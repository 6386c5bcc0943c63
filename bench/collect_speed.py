"""`dsa-harness collect` over many run folders: copies of one real run under 10,000 ids.

    python bench/collect_speed.py [--runs 10000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from harness.core.canon import config_hash
from harness.study.collect import collect
from harness.study.spec import parse_spec
from harness.study.sweep import execute

SPEC = {"decode": {"backbone": "tiny-llama", "indexer": "oracle", "topk": 8, "prompt_tokens": 64, "steps": 3},
        "llc": {"size": "64KiB", "ways": 8, "reserve_ways": 4}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "sweep"
        execute(parse_spec(SPEC), folder, jobs=1, progress=False)
        (src,) = [p for p in (folder / "runs").iterdir()]
        for i in range(a.runs - 1):  # each copy a distinct config, its folder named by its hash
            cfg = json.loads((src / "config.json").read_text())
            cfg["stream"]["layout_seed"] = i + 1
            dst = folder / "runs" / config_hash(cfg)
            shutil.copytree(src, dst)
            (dst / "config.json").write_text(json.dumps(cfg))
        t = time.perf_counter()
        df, bad = collect(folder, folder / "results.parquet")
        dt = time.perf_counter() - t
        print(f"collect: {len(df):,} run folders in {dt:.1f} s ({len(bad)} corrupt)")


if __name__ == "__main__":
    main()
