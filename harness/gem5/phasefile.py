"""Phase files, the input of gem5's closed-loop decode-step generator (``DsaStepGen`` in
``gem5_configs/dsa_llc_ext``), and the phase table it writes back (``phases.csv``).

A phase is a batch of independent line requests followed by a compute delay; phases run one
after another (the generator starts phase p + 1 ``compute_ticks`` after phase p's last
response). Format, little-endian:

- file header: 8 bytes ``DSAPHAS1``, u64 number of phases;
- per phase, a 32-byte header: u32 step, u16 layer, u8 kind (0 index phase, 1 gather phase),
  u8 measured (0 warm-up, 1 measured), u64 compute_ticks, u64 n_requests, u64 reserved (0);
  then n_requests u64 request words: bits 0-55 the byte address of a 64 B line, bits 56-59 the
  traffic class code (``harness.core.traffic``), bits 60-62 zero, bit 63 set for a write.

Warm-up phases come first; gem5's statistics are reset when the first measured phase starts.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.accesstrace import LineAccesses
from harness.core.errors import UserError
from harness.core.files import atomic_path
from harness.core.traffic import INDEX, KV, KV_WRITE, LINE_SHIFT, TRAFFIC_CLASSES

MAGIC = b"DSAPHAS1"
PHASE_KINDS = ("index", "gather")
INDEX_PHASE, GATHER_PHASE = range(len(PHASE_KINDS))
HEADER = np.dtype([("step", "<u4"), ("layer", "<u2"), ("kind", "u1"), ("measured", "u1"),
                   ("compute_ticks", "<u8"), ("requests", "<u8"), ("reserved", "<u8")])
ADDRESS_BITS = 56
CLASS_SHIFT, WRITE_SHIFT = 56, 63
PHASE_COLUMNS = ["phase", "step", "layer", "kind", "measured", "requests", "start_tick",
                 "mem_done_tick", "end_tick"]
_COUNT = struct.Struct("<Q")


@dataclass
class Phase:
    """One phase: its decode step and layer, kind (``INDEX_PHASE``/``GATHER_PHASE``), whether it
    is measured, its compute delay (ticks, ps) and its requests as parallel arrays: line numbers
    (int64, byte address >> 6), class codes (uint8) and write flags (uint8)."""

    step: int
    layer: int
    kind: int
    measured: bool
    compute_ticks: int
    lines: np.ndarray
    cls: np.ndarray
    write: np.ndarray


def phases_from_stream(chunks: Iterable[LineAccesses], warmup_steps: int = 0,
                       compute_ticks: int = 0) -> list[Phase]:
    """The phases of a stream, unbatched and in stream order: a new phase wherever the step or
    the phase kind changes (an index phase for the index class, a gather phase for the others),
    so each request's index scan and gather of each layer is a phase of its own. The first
    ``warmup_steps`` steps are warm-up; every phase gets ``compute_ticks``. A phase's layer is
    that of its KV tokens (stream token ids carry the layer in bits 32-47); an index phase
    takes the layer of the phase after it."""
    chunks = [c for c in chunks if len(c)]
    if not chunks:
        return []
    line, cls, write, token, step = (np.concatenate([getattr(c, f) for c in chunks])
                                     for f in ("line", "cls", "write", "token", "step"))
    kind = np.where(cls == INDEX, INDEX_PHASE, GATHER_PHASE)
    starts = np.flatnonzero(np.r_[True, (step[1:] != step[:-1]) | (kind[1:] != kind[:-1])])
    ends = np.r_[starts[1:], len(line)]
    kv_layer = np.where((cls == KV) | (cls == KV_WRITE), (token >> 32) & 0xFFFF, -1)
    layers = np.maximum.reduceat(kv_layer, starts)
    for i in range(len(layers) - 2, -1, -1):
        if layers[i] < 0:
            layers[i] = layers[i + 1]
    first = int(step[0])
    return [Phase(int(step[a]), max(int(layer), 0), int(kind[a]), int(step[a]) >= first + warmup_steps,
                  compute_ticks, line[a:b], cls[a:b], write[a:b])
            for a, b, layer in zip(starts, ends, layers)]


def pack_requests(lines: np.ndarray, cls: np.ndarray, write: np.ndarray) -> np.ndarray:
    """Request words (little-endian u64) of parallel line/class/write arrays; UserError when a
    value does not fit the format."""
    lines, cls, write = np.asarray(lines), np.asarray(cls), np.asarray(write)
    if not (lines.ndim == cls.ndim == write.ndim == 1 and len(lines) == len(cls) == len(write)):
        raise UserError("a phase's lines, class codes and write flags must be 1-d arrays of one length")
    if len(lines) and (lines.min() < 0 or lines.max() >= 1 << (ADDRESS_BITS - LINE_SHIFT)):
        raise UserError(f"line numbers must lie in [0, 2^{ADDRESS_BITS - LINE_SHIFT})")
    if len(cls) and (cls.min() < 0 or cls.max() >= len(TRAFFIC_CLASSES)):
        raise UserError(f"class codes must lie in [0, {len(TRAFFIC_CLASSES)})")
    if len(write) and (write.min() < 0 or write.max() > 1):
        raise UserError("write flags must be 0 or 1")
    words = (lines.astype(np.uint64) << np.uint64(LINE_SHIFT)) | (cls.astype(np.uint64) << np.uint64(CLASS_SHIFT))
    words |= write.astype(np.uint64) << np.uint64(WRITE_SHIFT)
    return words.astype("<u8", copy=False)


def _header(p, index: int) -> np.ndarray:
    kind = PHASE_KINDS.index(p.kind) if isinstance(p.kind, str) and p.kind in PHASE_KINDS else p.kind
    fields = {"step": (p.step, 1 << 32), "layer": (p.layer, 1 << 16), "kind": (kind, len(PHASE_KINDS)),
              "compute_ticks": (p.compute_ticks, 1 << 64)}
    for name, (value, limit) in fields.items():
        if not isinstance(value, (int, np.integer)) or not 0 <= value < limit:
            raise UserError(f"phase {index}: {name} must be an integer in [0, {limit}), got {value!r}")
    h = np.zeros(1, dtype=HEADER)
    h["step"], h["layer"], h["kind"], h["compute_ticks"] = p.step, p.layer, kind, p.compute_ticks
    h["measured"] = bool(p.measured)
    h["requests"] = len(p.lines)
    return h


def write_phase_file(path: str | Path, phases: Iterable) -> dict:
    """Write ``phases`` (objects with the fields of :class:`Phase`; ``kind`` may also be
    ``"index"``/``"gather"``) to ``path`` atomically. Returns the number of phases, warm-up
    phases and requests written."""
    counts = {"phases": 0, "warmup_phases": 0, "requests": 0}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(MAGIC + _COUNT.pack(0))
        for i, p in enumerate(phases):
            words = pack_requests(p.lines, p.cls, p.write)
            header = _header(p, i)
            if not p.measured and counts["phases"] > counts["warmup_phases"]:
                raise UserError(f"phase {i} is a warm-up phase after a measured one (warm-up phases come first)")
            f.write(header.tobytes())
            f.write(words.tobytes())
            counts["phases"] += 1
            counts["warmup_phases"] += not p.measured
            counts["requests"] += len(words)
        if counts["phases"] == 0:
            raise UserError("no phases to write")
        f.seek(len(MAGIC))
        f.write(_COUNT.pack(counts["phases"]))
    return counts


def read_phase_file(path: str | Path) -> list[Phase]:
    """The phases of a phase file (UserError when it is not one)."""
    data = Path(path).read_bytes()
    if len(data) < len(MAGIC) + _COUNT.size or not data.startswith(MAGIC):
        raise UserError(f"{path} is not a phase file (no {MAGIC.decode()} header)")
    (count,), pos = _COUNT.unpack_from(data, len(MAGIC)), len(MAGIC) + _COUNT.size
    phases = []
    for i in range(count):
        if pos + HEADER.itemsize > len(data):
            raise UserError(f"{path} is truncated (phase {i})")
        h = np.frombuffer(data, dtype=HEADER, count=1, offset=pos)[0]
        pos += HEADER.itemsize
        n = int(h["requests"])
        if pos + 8 * n > len(data):
            raise UserError(f"{path} is truncated (phase {i})")
        words = np.frombuffer(data, dtype="<u8", count=n, offset=pos)
        pos += 8 * n
        phases.append(Phase(int(h["step"]), int(h["layer"]), int(h["kind"]), bool(h["measured"]),
                            int(h["compute_ticks"]),
                            ((words & np.uint64((1 << ADDRESS_BITS) - 1)) >> np.uint64(LINE_SHIFT)).astype(np.int64),
                            ((words >> np.uint64(CLASS_SHIFT)) & np.uint64(0xF)).astype(np.uint8),
                            (words >> np.uint64(WRITE_SHIFT)).astype(np.uint8)))
    if pos != len(data):
        raise UserError(f"{path} has {len(data) - pos} bytes after its last phase")
    return phases


def read_phase_results(folder: str | Path) -> pd.DataFrame:
    """The generator's phase table (``folder/phases.csv``): one row per phase with its step,
    layer, kind (``index``/``gather``), measured flag, request count and the ticks of its
    start, last response (``mem_done_tick``) and end (``mem_done_tick`` + compute)."""
    path = Path(folder) / "phases.csv"
    if not path.exists():
        raise UserError(f"gem5 wrote no phase table ({path})")
    try:
        df = pd.read_csv(path, dtype={"kind": str})
    except (ValueError, pd.errors.ParserError) as e:
        raise UserError(f"{path} is not a phase table ({str(e).splitlines()[0]})") from None
    if list(df.columns) != PHASE_COLUMNS or df.empty:
        raise UserError(f"{path} is not a phase table (columns {', '.join(map(str, df.columns))})")
    numeric = [c for c in PHASE_COLUMNS if c != "kind"]
    if (df[numeric].isna().any().any() or not all(pd.api.types.is_integer_dtype(df[c]) for c in numeric)
            or not df.kind.isin(PHASE_KINDS).all() or not df.measured.isin([0, 1]).all()):
        raise UserError(f"{path} is not a phase table (a value is missing or malformed)")
    if not ((df.start_tick <= df.mem_done_tick) & (df.mem_done_tick <= df.end_tick)).all():
        raise UserError(f"{path} is not a phase table (a phase ends before it starts)")
    df["measured"] = df.measured.astype(bool)
    return df
