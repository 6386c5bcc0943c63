"""The user's gem5: find the binary, check that dsa-llc's extension is built into it, say which
LLCs it can model, and run it with its output in a folder, a failure reported in one line from
gem5's own log.

The extension (``gem5_configs/dsa_llc_ext``) declares the reserved-way policies gem5 runs: its
KvWayPolicy enum is the one list of them (``GEM5_POLICIES``).
"""

from __future__ import annotations

import ast
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from harness.cache.llc import LLCConfig
from harness.cache.partitions import CODES, HINT_KINDS, PERSISTING, parse_hint
from harness.core.errors import BackendFailed, UserError
from harness.core.interrupt import run_child

EXTENSION_OBJECTS = ("KvPartitionManager", "TokenPolicyTags", "DsaStepGen")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "gem5_configs"
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
                res = run_child([binary, "-d", tmp, str(script)], capture_output=True, text=True,
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


# gem5 starts a fatal/panic message with the source location and, from fatal_if/panic_if, the
# condition: "src/x.cc:12: fatal: fatal condition !ok occurred: the message"
_GEM5_PREFIX = re.compile(r"^\S+:\d+: (fatal|panic): (?:\1 condition .*? occurred: )?")


def _failure_line(lines: list[str]) -> str:
    """The line of a gem5 log that says why it stopped (fatal/panic/error), else its last line."""
    lines = lines or ["no output"]
    for line in lines:
        if re.search(r"\b(fatal|panic|error|Error)\b|segmentation fault", line):
            return _GEM5_PREFIX.sub(r"\1: ", line.strip())[:240]
    return lines[-1].strip()[:240]


TAIL_LINES = 20  # the last lines of gem5's output a failure keeps (a sweep's error.json)


def _log_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return []


def run_gem5(cmd: list[str], outdir: Path, timeout: float) -> float:
    """Run a gem5 command with its output in ``outdir/gem5.stdout`` and ``gem5.stderr``; the wall
    seconds it took. A timeout, a nonzero exit or a death by a signal is a one-line
    :class:`BackendFailed` naming the cause and the log, carrying gem5's last lines (a sweep
    keeps them in the run's error.json, since its gem5 folder is temporary). gem5 runs as a
    child that does not outlive the harness (``harness.core.interrupt.run_child``)."""
    stdout, stderr = outdir / "gem5.stdout", outdir / "gem5.stderr"
    t0 = time.perf_counter()
    try:
        with open(stdout, "w") as out, open(stderr, "w") as err:
            proc = run_child(cmd, stdout=out, stderr=err, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BackendFailed(f"gem5 timed out after {timeout:g} s; its log: {stderr}",
                            _tail(stdout, stderr)) from None
    if proc.returncode != 0:
        err_lines = _log_lines(stderr)
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else \
                f"signal {-proc.returncode}"
            how = f"was killed by {name}"
        else:
            how = f"failed (exit {proc.returncode})"
        cause = _failure_line(err_lines or _log_lines(stdout))
        raise BackendFailed(f"gem5 {how}: {cause}; its log: {stderr}", _tail(stdout, stderr),
                            transient=proc.returncode < 0)
    return time.perf_counter() - t0


def _tail(stdout: Path, stderr: Path) -> list[str]:
    """gem5's last lines: its stderr's, else its stdout's."""
    return (_log_lines(stderr) or _log_lines(stdout))[-TAIL_LINES:]


def memory_size(nbytes: int) -> str:
    """gem5 memory size covering ``nbytes``: a power of two of at least 1 GiB."""
    gib = max(1, 1 << max(0, math.ceil(math.log2(max(1, nbytes) / 2**30))))
    return f"{gib}GiB"


def check_llc(cfg: LLCConfig) -> None:
    """The LLC shapes gem5 can model (one-line UserError otherwise)."""
    cfg.validate()
    taken = sum(cfg.reserved.values())
    if taken >= cfg.ways:
        raise UserError(f"the gem5 backend needs at least one shared way (the reservations take {taken} of "
                        f"{cfg.ways} ways)")
    if cfg.sets & (cfg.sets - 1):
        raise UserError(f"gem5 needs a power-of-two number of sets; {cfg.size} B / {cfg.ways} ways / 64 B "
                        f"gives {cfg.sets}")


def check_class_regions(cfg: LLCConfig, address_map: bool) -> None:
    """gem5 tells a line's class by its address: class knobs need a stream's address map (a
    one-line UserError without one, before gem5 starts)."""
    if cfg.class_aware and not address_map:
        raise UserError("class knobs in gem5 need the address regions of the traffic classes: simulate "
                        "from --index-log (an access trace has no address map)")


def class_options(cfg: LLCConfig, address_map: dict | None) -> dict:
    """The class-aware options of the gem5 configs (``components.add_class_arguments``) for
    ``cfg``: the indexer keys' and weights' reservations, each class's hint with the persisting
    threshold the built-in kernel uses (``ClassMap``: a line persists when its 32-bit hash is
    below it), the persisting lines per set, and the classes' address regions from the stream's
    address map (gem5 tells a line's class by its address). Empty without class knobs; a
    one-line UserError when they need an address map that is missing."""
    check_class_regions(cfg, bool(address_map and "index_base" in address_map))
    if not cfg.class_aware:
        return {}
    cm = cfg.class_map
    opts = {"reserve_index": cfg.reserve_index, "reserve_weights": cfg.reserve_weights}
    for name, (mode, _) in ((name, parse_hint(hint)) for name, hint in cfg.hints.items()):
        code = CODES[name][0]
        opts[f"hint_{name}"] = HINT_KINDS[mode]
        opts[f"persist_threshold_{name}"] = int(cm.persist_threshold[code]) if mode == PERSISTING else 0
    a = address_map  # a stream without weights has an empty weights region: give a reservation one byte
    return opts | {"persist_cap": cm.persist_cap, "index_start": a["index_base"], "index_end": a["weights_base"],
                   "weights_start": a["weights_base"], "weights_end": max(a["memory_bytes"], a["weights_base"] + 1)}


def option_flags(options: dict) -> list[str]:
    """Config options as command-line flags: ``llc_size`` -> ``--llc-size VALUE``; True adds a
    bare flag, False and None leave the option out."""
    out = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        out += [flag] if value is True else [flag, str(value)]
    return out
