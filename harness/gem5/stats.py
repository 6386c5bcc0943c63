"""gem5's ``stats.txt``: the statistics of each dump as a table, and the built-in simulator's
result keys read off an LLC's statistics."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.core.errors import UserError

BEGIN = "---------- Begin Simulation Statistics ----------"
END = "---------- End Simulation Statistics"  # gem5 pads the rest of this line


def parse_stats(path: str | Path) -> pd.DataFrame:
    """All dumps of a gem5 ``stats.txt`` as a long table: dump, stat, subname, value."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"gem5 wrote no stats file ({path})")
    rows, dump, open_ = [], -1, False
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(BEGIN):
            dump, open_ = dump + 1, True
            continue
        if line.startswith(END):
            open_ = False
            continue
        if not open_ or not line.strip():
            continue
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        name, value = fields[0], fields[1]
        stat, _, sub = name.partition("::")
        try:
            v = float(value)
        except ValueError:
            v = math.nan
        rows.append((dump, stat, sub, v))
    if dump < 0:
        raise UserError(f"{path} holds no gem5 statistics")
    if open_:
        raise UserError(f"{path} is truncated (dump {dump} has no end marker)")
    return pd.DataFrame(rows, columns=["dump", "stat", "subname", "value"])


def stat_value(df: pd.DataFrame, stat: str, sub: str = "", default=0.0) -> float | None:
    """The last value of ``stat`` (``stat::sub`` for a vector entry); ``default`` when gem5 did
    not report it (or reported nan: results are JSON, which has no NaN)."""
    rows = df[(df.stat == stat) & (df.subname == sub)]
    value = float(rows.value.iloc[-1]) if len(rows) else default
    return value if value is None or math.isfinite(value) else default


def llc_results(last: pd.DataFrame, requestors: dict[str, str], llc: str = "system.llc") -> dict:
    """Result keys of the built-in simulator from one dump of gem5 stats: totals, and per
    traffic class from the per-requestor stats (``requestors``: class name -> subname)."""
    out: dict = {}
    hits, misses = stat_value(last, f"{llc}.overallHits", "total"), stat_value(last, f"{llc}.overallMisses", "total")
    accesses = stat_value(last, f"{llc}.overallAccesses", "total")
    # gem5 counts a miss to a line with an outstanding MSHR as a miss and an MSHR hit (it waits
    # for that fill): the built-in model's mshr_merged; memory reads are the misses less them
    merged = stat_value(last, f"{llc}.overallMshrHits", "total")
    out.update({"accesses": int(accesses), "hits": int(hits), "misses": int(misses),
                "hit_rate": hits / accesses if accesses else None,
                "mshr_merged": int(merged), "memory_reads": int(misses - merged)})
    by_class = {}
    for name, requestor in requestors.items():
        h = stat_value(last, f"{llc}.overallHits", requestor)
        m = stat_value(last, f"{llc}.overallMisses", requestor)
        g = stat_value(last, f"{llc}.overallMshrHits", requestor)
        by_class[name] = {"accesses": int(h + m), "hits": int(h), "misses": int(m),
                          "hit_rate": h / (h + m) if h + m else None,
                          "mshr_merged": int(g), "memory_reads": int(m - g)}
    out["by_class"] = by_class
    out["kv_tokens"] = None  # gem5 counts lines; token accounting is the built-in model's
    out["evictions"] = int(stat_value(last, f"{llc}.replacements"))
    out["writebacks"] = int(stat_value(last, f"{llc}.writebacks", "total"))
    host = stat_value(last, "hostSeconds", default=None)
    out["gem5"] = {
        "sim_ticks": int(stat_value(last, "simTicks")), "host_seconds": host,
        "line_accesses_per_host_second": accesses / host if host and host > 0 else None,
        "avg_miss_latency_ticks": stat_value(last, f"{llc}.demandAvgMissLatency", "total", None),
        "mshr_misses": int(stat_value(last, f"{llc}.overallMshrMisses", "total")),
        "mshr_hits": int(stat_value(last, f"{llc}.demandMshrHits", "total")),
        "blocked_cycles_no_mshrs": int(stat_value(last, f"{llc}.blockedCycles", "no_mshrs")),
    }
    return out


def tag_results(last: pd.DataFrame, llc: str = "system.llc") -> dict:
    """The counts of dsa-llc's tags (TokenPolicyTags) under the built-in simulator's keys where
    it has them: misses not cached (``bypasses``; a refused write still reaches memory, from
    gem5's temporary block: ``bypassed_writes``), lines evicted with their token
    (``token_invalidations``), streak's demotions, and fills of persisting lines."""
    tags = f"{llc}.tags"
    return {key: int(stat_value(last, f"{tags}.{stat}"))
            for key, stat in (("bypasses", "bypasses"), ("bypassed_writes", "bypassedWrites"),
                              ("token_invalidations", "tokenInvalidations"), ("demotions", "demotions"),
                              ("persisting_fills", "persistingFills"))}


def last_dump(stats: pd.DataFrame) -> pd.DataFrame:
    """The rows of the last statistics dump (a run's final figures)."""
    return stats[stats.dump == stats.dump.max()]


def results_from_stats(stats: pd.DataFrame, classes: list[str], llc: str = "system.llc") -> dict:
    """Result keys of the built-in simulator, from the last dump of a trace replay's stats
    (``classes``: the traffic class of each TrafficGen, in order)."""
    last = last_dump(stats)
    out = llc_results(last, {name: _requestor(last, f"{llc}.overallAccesses", i)
                             for i, name in enumerate(classes)}, llc)
    out["gem5"]["suppressed_packets"] = int(sum(stat_value(last, f"system.gens{i}.numSuppressed")
                                                for i in range(len(classes))))
    return out | tag_results(last, llc)


def _requestor(last: pd.DataFrame, stat: str, index: int) -> str:
    """The per-requestor subname of generator ``index`` (gem5 names it after the SimObject)."""
    subs = [s for s in last[last.stat == stat].subname.unique() if s not in ("total", "")]
    for candidate in (f"gens{index}", f"system.gens{index}", f"gens{index:02d}"):
        if candidate in subs:
            return candidate
    matches = [s for s in subs if s.endswith(f"gens{index}")]
    return matches[0] if matches else f"gens{index}"
