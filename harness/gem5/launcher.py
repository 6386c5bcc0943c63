"""The gem5 backend: find the user's gem5, check dsa-llc's extension is in it, write the stream as
packet traces, run ``gem5_configs/replay_llc.py`` and parse ``stats.txt`` into the same result
keys as the built-in simulator.

The stream is split into one packet trace per traffic class, each keeping the global tick of
every request, and each replayed by its own TrafficGen: gem5's per-requestor LLC statistics then
give hits and misses per class. Requests are ``tick_spacing`` ps apart; at the default 1 us no
two overlap, which is where gem5's counts equal the built-in model's exactly.
"""

from __future__ import annotations

import ast
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from harness import __version__
from harness.cache.llc import LLCConfig
from harness.core.accesstrace import LineAccesses
from harness.core.errors import UserError
from harness.core.traffic import TRAFFIC_CLASSES

EXTENSION_OBJECTS = ("KvPartitionManager", "TokenPolicyTags", "DsaStepGen")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "gem5_configs"
CONFIG_SCRIPT = CONFIG_DIR / "replay_llc.py"
EXTENSION_DIR = CONFIG_DIR / "dsa_llc_ext"


def declared_policies() -> tuple[str, ...]:
    """The reserved-way policies dsa-llc's gem5 extension declares, by the harness's names: the
    values of its KvWayPolicy enum (DsaLlc.py, beside the C++ of TokenPolicyTags), read from the
    file (it runs inside gem5 and cannot be imported here)."""
    tree = ast.parse((EXTENSION_DIR / "DsaLlc.py").read_text(encoding="utf-8"))
    enum = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KvWayPolicy")
    vals = next(n.value for n in enum.body if isinstance(n, ast.Assign) and n.targets[0].id == "vals")
    return tuple(v.replace("_", "-") for v in ast.literal_eval(vals))


# The one list of gem5's reserved-way policies; the config files that run inside gem5 spell it
# again (components.py, replay_llc.py) and tests/test_gem5.py checks them against it.
GEM5_POLICIES = declared_policies()
# The trace replay (replay_llc.py) sends no decode steps, which streak reads.
REPLAY_POLICIES = tuple(p for p in GEM5_POLICIES if p != "streak")

BEGIN = "---------- Begin Simulation Statistics ----------"
END = "---------- End Simulation Statistics"  # gem5 pads the rest of this line
_checked: dict[tuple, list[str]] = {}


def find_gem5(path: str | None = None) -> str:
    """The gem5 binary from ``path`` or ``$GEM5``."""
    path = path or os.environ.get("GEM5")
    if not path:
        raise UserError("no gem5 binary: pass --gem5 PATH or set GEM5=PATH (gem5 is not on PyPI; "
                        "build your own, see the README)")
    resolved = shutil.which(path) or path
    if not os.path.isfile(resolved) or not os.access(resolved, os.X_OK):
        raise UserError(f"gem5 binary {path} does not exist or is not executable")
    return os.path.abspath(resolved)


def check_extension(binary: str, timeout: float = 120) -> None:
    """Fail with a clear message unless the binary has dsa-llc's SimObjects compiled in."""
    key = (binary, os.path.getmtime(binary))
    if key not in _checked:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp, "check.py")
            script.write_text("import m5.objects as o\n"
                              f"print('DSA_LLC_MISSING=' + ','.join(n for n in {EXTENSION_OBJECTS!r} "
                              "if not hasattr(o, n)))\n")
            try:
                res = subprocess.run([binary, "-d", tmp, str(script)], capture_output=True, text=True,
                                     timeout=timeout)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise UserError(f"cannot run gem5 binary {binary}: {e}") from None
            found = re.search(r"DSA_LLC_MISSING=(\S*)", res.stdout)
            if not found:
                last = (res.stderr.strip().splitlines() or ["no output"])[-1]
                raise UserError(f"{binary} does not run gem5 config scripts ({last})")
            _checked[key] = [n for n in found.group(1).split(",") if n]
    missing = _checked[key]
    if missing:
        raise UserError(f"{binary} lacks dsa-llc's gem5 extension ({', '.join(missing)} missing): rebuild "
                        f"it with scons EXTRAS={EXTENSION_DIR} (see the README)")


def write_class_traces(folder: Path, chunks: Iterable[LineAccesses], spacing: int
                       ) -> tuple[list[tuple[str, Path, int]], int]:
    """One packet trace per traffic class present; every packet keeps its global tick.
    Returns (class, path, packets) in class-code order, and the highest byte address."""
    from trace_gen.gem5trace import encode_packets, open_packet_trace

    files, counts = {}, {}
    first, top = 0, 0
    try:
        for chunk in chunks:
            if len(chunk) == 0:
                continue
            ticks = (np.arange(len(chunk), dtype=np.int64) + first) * spacing
            first += len(chunk)
            top = max(top, int(chunk.line.max()) << 6)
            for code in np.unique(chunk.cls):
                mask = chunk.cls == code
                if code not in files:
                    files[code] = open_packet_trace(folder / f"{TRAFFIC_CLASSES[code]}.pb.gz")
                    counts[code] = 0
                files[code].write(encode_packets(chunk.line[mask], chunk.write[mask], ticks[mask]))
                counts[code] += int(mask.sum())
    finally:
        for f in files.values():
            f.close()
    return [(TRAFFIC_CLASSES[c], folder / f"{TRAFFIC_CLASSES[c]}.pb.gz", counts[c]) for c in sorted(files)], top


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
    out.update({"accesses": int(accesses), "hits": int(hits), "misses": int(misses),
                "hit_rate": hits / accesses if accesses else None})
    by_class = {}
    for name, requestor in requestors.items():
        h = stat_value(last, f"{llc}.overallHits", requestor)
        m = stat_value(last, f"{llc}.overallMisses", requestor)
        by_class[name] = {"accesses": int(h + m), "hits": int(h), "misses": int(m),
                          "hit_rate": h / (h + m) if h + m else None}
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
    return out


def _requestor(last: pd.DataFrame, stat: str, index: int) -> str:
    """The per-requestor subname of generator ``index`` (gem5 names it after the SimObject)."""
    subs = [s for s in last[last.stat == stat].subname.unique() if s not in ("total", "")]
    for candidate in (f"gens{index}", f"system.gens{index}", f"gens{index:02d}"):
        if candidate in subs:
            return candidate
    matches = [s for s in subs if s.endswith(f"gens{index}")]
    return matches[0] if matches else f"gens{index}"


# gem5 starts a fatal/panic message with the source location and, from fatal_if/panic_if, the
# condition: "src/x.cc:12: fatal: fatal condition !ok occurred: the message"
_GEM5_PREFIX = re.compile(r"^\S+:\d+: (fatal|panic): (?:\1 condition .*? occurred: )?")


def _failure_line(log: Path) -> str:
    """The line of a gem5 log that says why it stopped (fatal/panic/error), else its last line."""
    lines = log.read_text(errors="replace").strip().splitlines() or ["no output"]
    for line in lines:
        if re.search(r"\b(fatal|panic|error|Error)\b|segmentation fault", line):
            return _GEM5_PREFIX.sub(r"\1: ", line.strip())[:240]
    return lines[-1].strip()[:240]


def memory_size(nbytes: int) -> str:
    """gem5 memory size covering ``nbytes``: a power of two of at least 1 GiB."""
    gib = max(1, 1 << max(0, math.ceil(math.log2(max(1, nbytes) / 2**30))))
    return f"{gib}GiB"


def run_gem5(cmd: list[str], outdir: Path, timeout: float) -> float:
    """Run a gem5 command with its output in ``outdir/gem5.stdout`` and ``gem5.stderr``; the wall
    seconds it took. A timeout or a failure is a one-line UserError naming the log."""
    stdout, stderr = outdir / "gem5.stdout", outdir / "gem5.stderr"
    t0 = time.perf_counter()
    try:
        with open(stdout, "w") as out, open(stderr, "w") as err:
            proc = subprocess.run(cmd, stdout=out, stderr=err, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"gem5 timed out after {timeout:g} s; its log: {stderr}") from None
    if proc.returncode != 0:
        raise UserError(f"gem5 failed (exit {proc.returncode}): {_failure_line(stderr)}; its log: {stderr}")
    return time.perf_counter() - t0


def check_llc(cfg: LLCConfig) -> None:
    """The LLC shapes gem5 can model (one-line UserError otherwise)."""
    cfg.validate()
    if cfg.reserve_ways >= cfg.ways:
        raise UserError("the gem5 backend needs at least one shared way (reserve_ways < ways)")
    if cfg.sets & (cfg.sets - 1):
        raise UserError(f"gem5 needs a power-of-two number of sets; {cfg.size} B / {cfg.ways} ways / 64 B "
                        f"gives {cfg.sets}")


def simulate_gem5(chunks: Iterable[LineAccesses], cfg: LLCConfig, address_map: dict | None,
                  binary: str | None = None, outdir: str | Path | None = None, timeout: float = 3600,
                  tick_spacing: int = 1_000_000, dram: str = "DDR4_2400_8x8", clock: str = "2GHz",
                  l1_size: str | None = None, extra_config: dict | None = None) -> dict:
    """Run one stream through gem5 and return the result dict (see ``results_from_stats``)."""
    binary = find_gem5(binary)
    check_extension(binary)
    check_llc(cfg)
    policy = cfg.policy if cfg.reserve_ways else "lru"  # without a reservation every way is LRU
    if policy not in REPLAY_POLICIES:
        raise UserError(f"gem5's trace replay runs {' and '.join(REPLAY_POLICIES)} in the reserved ways, not "
                        f"{policy!r} (streak needs each request's decode step: the closed-loop config has it)")
    if cfg.reserve_ways and not address_map:
        raise UserError("a reservation in gem5 needs the KV address range: simulate from --index-log "
                        "(an access trace has no address map)")
    if tick_spacing < 1:
        raise UserError(f"tick spacing must be at least 1 ps, got {tick_spacing}")
    outdir = Path(outdir) if outdir else Path(tempfile.mkdtemp(prefix="dsa-llc-gem5-"))
    outdir.mkdir(parents=True, exist_ok=True)
    traces, top = write_class_traces(outdir, chunks, tick_spacing)
    if not traces:
        raise UserError("the stream is empty: nothing to simulate")
    amap = address_map or {"kv_base": 0, "kv_end": 0, "token_stride": 64, "memory_bytes": 0}
    cmd = [binary, "-d", str(outdir / "m5out"), str(CONFIG_SCRIPT)]
    for _, path, _ in traces:
        cmd += ["--trace", str(path)]
    cmd += ["--llc-size", f"{cfg.size}B", "--llc-assoc", str(cfg.ways), "--reserve-ways", str(cfg.reserve_ways),
            "--policy", policy, "--kv-start", str(amap["kv_base"]), "--kv-end", str(max(amap["kv_end"], amap["kv_base"] + 1)),
            "--token-stride", str(amap["token_stride"]), "--dram", dram, "--clock", clock,
            "--mem-size", memory_size(max(amap["memory_bytes"], top + 64))]
    if policy == "token-lru" and cfg.whole_token_eviction:
        cmd.append("--whole-token-eviction")
    if l1_size:
        cmd += ["--l1-size", l1_size]
    wall = run_gem5(cmd, outdir, timeout)
    stats = parse_stats(outdir / "m5out" / "stats.txt")
    result = results_from_stats(stats, [c for c, _, _ in traces])
    packets = sum(n for _, _, n in traces)
    if result["accesses"] != packets:
        result["gem5"]["note"] = (f"LLC saw {result['accesses']:,} accesses for {packets:,} packets "
                                  "(MSHR merges or suppressed packets)")
    result["gem5"].update({"wall_seconds": wall, "packets": packets, "command": cmd,
                           "outdir": str(outdir), "tick_spacing_ps": tick_spacing})
    result["config"] = {"llc": cfg.to_dict(), "backend": "gem5", "gem5_binary": binary, "dram": dram,
                        "clock": clock, "l1_size": l1_size, "tick_spacing_ps": tick_spacing,
                        **(extra_config or {})}
    result["version"] = __version__
    return result
