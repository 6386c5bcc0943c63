"""The sweep's progress bar: work measured in estimated seconds, not in tasks.

A decode and a simulation cost very different amounts (a real backbone's decode takes minutes,
a simulation seconds), so every task is weighted by an estimate of its run time from the cost
model below, whose constants were measured with ``bench/sweep_costs.py`` (2-core VM, one torch
thread per worker). The bar advances by each finished task's weight, and by the share of steps
done of every decode in flight (decodes report ``logs/.progress-<id>.json``); the time left is
the work left divided by the rate of work done so far, so an estimate that is off by a constant
factor still gives the right time. The bar names the decodes in flight and their step.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from harness.core.progress import LOG_EVERY_S, is_terminal, progress_bar
from harness.study.runs import log_dir, progress_file, run_id

# Decode cost, measured by `python bench/sweep_costs.py` (2-core VM, one torch thread): model
# load (s), prefill (s per prompt token) and one decode step (s per step and request, 2048-token
# context), per backbone.
DECODE_COST = {
    "smollm2-135m": (6.9, 0.0098, 0.19),
    "gemma3-270m": (7.9, 0.009, 0.24),
    "tiny-llama": (0.014, 0.00011, 0.0071),
    "tiny-dsa": (0.031, 0.00034, 0.008),
}
UNKNOWN_DECODE = DECODE_COST["gemma3-270m"]  # a model given by path: assume the larger real one
# Simulation cost, measured likewise: the fixed part of a run (opening and checking its log) and
# seconds per line access of its stream (built-in simulator with its bounds; 8 M lines in 0.8 s).
SIM_FIXED_S = 0.047
SIM_S_PER_LINE = 9.2e-8
# Before a decode has run its backbone's native geometry is unknown: an estimate until then.
NATIVE_GUESS = (32, 1024, 68)  # layers, KV bytes, indexer key bytes per token and layer
LINE = 64


def decode_cost(decode: dict) -> float:
    """Estimated seconds of one decode (``[decode]`` config of a sweep run)."""
    load, prefill, step = DECODE_COST.get(decode["backbone"], UNKNOWN_DECODE)
    r = decode["requests"]
    return load + decode["prompt_tokens"] * r * prefill + decode["steps"] * r * step


def stream_lines(run: dict, geometry: tuple[int, int, int]) -> float:
    """Line accesses the simulation walks one by one (per step, layer and request: the indexer
    key written and all ctx_len keys scanned, k tokens read, the new token written). The weight
    scans are left out: they apply at once (``LLCState.scan``), for a cost that does not grow
    with their size."""
    d, s = run["decode"], run["stream"]
    layers, kv_bytes, index_bytes = geometry
    ctx = d["prompt_tokens"] + (d["steps"] + 1) / 2
    per_request = (math.ceil(kv_bytes / LINE) * (min(d["topk"], ctx) + 1)
                   + ctx * index_bytes / LINE + 1)
    return d["steps"] * layers * (s.get("batch") or d["requests"]) * per_request


def run_geometry(run: dict, folder: Path | None = None) -> tuple[int, int, int]:
    """(layers, KV bytes, indexer key bytes) of a run's stream: a preset's, or the native one
    of its index log once the log exists."""
    from trace_gen.geometry import PRESETS, get_geometry

    name = run["stream"]["geometry"]
    if name in PRESETS:
        g = PRESETS[name]
        return g.layers, g.kv_bytes, g.index_bytes
    if folder is not None:
        try:
            meta = json.loads((log_dir(folder, run["decode"]) / "metadata.json").read_text())
            g = get_geometry(name, meta)
            return g.layers, g.kv_bytes, g.index_bytes
        except Exception:  # an estimate only: an unreadable log fails its runs, not the bar
            pass
    return NATIVE_GUESS


def sim_cost(run: dict, folder: Path | None = None) -> float:
    """Estimated seconds of one simulation (its sampled sets only, when it samples)."""
    from harness.cache.llc import AUTO_SAMPLE_ABOVE, AUTO_SAMPLE_EVERY

    lines = stream_lines(run, run_geometry(run, folder))
    every = run.get("llc", {}).get("sample_sets")
    if every is None:
        every = AUTO_SAMPLE_EVERY if lines > AUTO_SAMPLE_ABOVE else 1
    return SIM_FIXED_S + lines / every * SIM_S_PER_LINE


class SweepProgress:
    """A bar over the estimated seconds of a sweep's decodes and simulations: live on a terminal;
    in a file or a CI log (``harness.core.progress``) a line when a decode finishes, otherwise at
    most one every 30 s, and the last state."""

    def __init__(self, folder: Path, decodes: dict, runs: list[dict], enabled: bool = True):
        self.folder = folder
        self.decodes = {did: decode_cost(d) for did, d in decodes.items()}
        self.names = {did: d["backbone"] for did, d in decodes.items()}
        self.runs = {run_id(r): r for r in runs}
        self.run_costs = {rid: sim_cost(r) for rid, r in self.runs.items()}
        self.done_cost, self.partial = 0.0, {}
        self.tasks, self.finished = len(decodes) + len(runs), 0
        self.live = is_terminal(sys.stderr)
        self.bar = progress_bar(total=self._total(), desc="sweep", disable=not enabled, smoothing=0,
                                bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]{postfix}")
        self.last_line = -math.inf
        self._postfix("", show=True)

    def _total(self) -> float:
        return max(sum(self.decodes.values()) + sum(self.run_costs.values()), 1e-9)

    def _postfix(self, doing: str, show: bool = False) -> None:
        """Update the bar; in a log, write its line only when ``show`` or 30 s after the last."""
        self.bar.set_postfix_str(f"{self.finished}/{self.tasks} tasks" + (f", {doing}" if doing else ""),
                                 refresh=False)
        self.bar.n = min(self.done_cost + sum(self.partial.values()), self.bar.total)
        now = time.monotonic()
        if self.live or show or now - self.last_line >= LOG_EVERY_S:
            self.last_line = now
            self.bar.refresh()

    def poll(self) -> None:
        """Read the progress files of the decodes in flight."""
        doing = []
        for did in list(self.partial) + [d for d in self.decodes if d not in self.partial]:
            path = progress_file(self.folder, did)
            try:
                p = json.loads(path.read_text())
                phase, done, total = str(p["phase"]), int(p["done"]), int(p["total"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if phase.startswith("decode") and total > 0:
                self.partial[did] = self.decodes.get(did, 0) * done / total
                doing.append(f"{phase} step {done}/{total}")
            elif phase.startswith("fit") and total > 0:
                doing.append(f"{phase} layer {done + 1}/{total}")
            else:
                doing.append(phase)
        self._postfix(", ".join(doing[:2]))

    def decode_done(self, did: str) -> None:
        self.partial.pop(did, None)
        self.done_cost += self.decodes.pop(did, 0)
        self.finished += 1
        self._postfix("", show=True)

    def start_simulations(self) -> None:
        """The index logs exist now: estimate the simulations from their real geometries."""
        self.run_costs = {rid: sim_cost(self.runs[rid], self.folder) for rid in self.run_costs}
        self.bar.total = self.done_cost + sum(self.decodes.values()) + sum(self.run_costs.values())
        self._postfix("simulating", show=True)

    def run_done(self, rid: str) -> None:
        self.done_cost += self.run_costs.pop(rid, 0)
        self.finished += 1
        self._postfix("simulating" if self.run_costs else "")

    def write(self, message: str) -> None:
        self.bar.write(message)

    def close(self) -> None:
        self._postfix("")  # the bar's last state, which closing it writes
        self.bar.close()
