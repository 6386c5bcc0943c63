"""Memory requests in chunks, and the generic access-trace files the simulator reads.

A trace is ``.npy`` (a 1-D array of byte addresses, unsigned or non-negative integers) or a
Parquet/CSV table with column ``addr`` and optional ``size`` (bytes, default 1: the one line that
holds ``addr``), ``op`` (``R``/``W``, either case, default ``R``), ``cls`` (a traffic class name,
default ``other``), ``token`` (int64 token id, -1 for none), ``step`` (decode step, default 0),
``phase`` (the phase id of trace_gen.stream, default the step: one phase per step) and ``request``
(the request an access serves, for per-request counts, default 0).
Files are read in chunks, so a trace larger than memory is simulated piece by piece. A trace
must hold at least one request; every request ends below 2**63 bytes and spans at most 16 GiB.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harness.core.errors import UserError, first_line
from harness.core.traffic import LINE_SHIFT, OTHER, TRAFFIC_CLASSES

CHUNK_ROWS = 1 << 21
CHUNK_LINES = 1 << 22  # line accesses handed to the simulator at once
# One request may span at most 16 GiB (268 M lines, seconds of simulation): far above the largest
# transfer the streams produce (one layer's weights of Llama-3.1-70B, 1.7 GB).
MAX_REQUEST_BYTES = 1 << 34
MAX_ADDRESS = (1 << 63) - 1
COLUMNS = ("addr", "size", "op", "cls", "token", "step", "phase", "request")


@dataclass
class Requests:
    """A chunk of memory requests (parallel arrays)."""

    addr: np.ndarray   # int64 byte address
    size: np.ndarray   # int64 bytes
    write: np.ndarray  # uint8, 1 for a write
    cls: np.ndarray    # uint8 traffic-class code (harness.core.traffic)
    token: np.ndarray  # int64 token id, -1 for none
    step: np.ndarray   # int64 decode step
    phase: np.ndarray | None = None    # int64 phase id (trace_gen.stream); None: one phase per step
    request: np.ndarray | None = None  # int64 request served; None: all request 0

    def __post_init__(self):
        if self.phase is None:
            self.phase = self.step
        if self.request is None:
            self.request = np.zeros(len(self.step), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.addr)

    @classmethod
    def of(cls, addr, size=1, write=0, traffic=OTHER, token=-1, step=0) -> Requests:
        """Requests from arrays or scalars (scalars are broadcast)."""
        addr = np.asarray(addr, dtype=np.int64)
        n = len(addr)

        def full(v, dtype):
            a = np.asarray(v, dtype=dtype)
            return np.full(n, a, dtype=dtype) if a.ndim == 0 else a

        return cls(addr, full(size, np.int64), full(write, np.uint8), full(traffic, np.uint8),
                   full(token, np.int64), full(step, np.int64))

    def lines(self) -> LineAccesses:
        """One access per cache line each request touches."""
        return next(self.line_chunks(None), LineAccesses(*(np.zeros(0, np.int64),) * 5))

    def line_chunks(self, max_lines: int | None = CHUNK_LINES):
        """The line accesses of :meth:`lines` in pieces of at most ``max_lines`` (None: one
        piece), so that a request spanning many lines never needs them all in memory at once."""
        first = self.addr >> LINE_SHIFT
        count = ((self.addr + self.size - 1) >> LINE_SHIFT) - first + 1
        if len(count) == 0:
            return
        total = int(count.sum())
        if count.max() == 1 and (max_lines is None or total <= max_lines):
            yield LineAccesses(first, self.write, self.cls, self.token, self.step, self.phase, self.request)
            return
        starts = np.cumsum(count) - count  # index of each request's first line in the whole
        step = total if max_lines is None else max_lines
        for lo in range(0, total, step):
            hi = min(lo + step, total)
            i0 = int(np.searchsorted(starts, lo, side="right")) - 1
            i1 = int(np.searchsorted(starts, hi, side="left"))
            begin = np.maximum(lo - starts[i0:i1], 0)
            n = np.minimum(hi - starts[i0:i1], count[i0:i1]) - begin
            rep = np.repeat(np.arange(i0, i1), n)
            offset = np.arange(hi - lo) - np.repeat(np.cumsum(n) - n, n) + np.repeat(begin, n)
            yield LineAccesses(first[rep] + offset, self.write[rep], self.cls[rep],
                               self.token[rep], self.step[rep], self.phase[rep], self.request[rep])


@dataclass
class LineAccesses:
    """A chunk of line-granular accesses, the simulator's input."""

    line: np.ndarray   # int64 line address (byte address >> 6)
    write: np.ndarray
    cls: np.ndarray
    token: np.ndarray
    step: np.ndarray
    phase: np.ndarray | None = None    # as Requests.phase
    request: np.ndarray | None = None  # as Requests.request
    # A stream's weight scans in one record each (trace_gen.stream, ``weight_scans``): at a
    # ``weights`` access, the number of consecutive lines from ``line`` it reads (only there; None:
    # every access is one line). The built-in simulator applies a scan much larger than the LLC
    # at once (harness.cache.simulate).
    scan_lines: np.ndarray | None = None

    def __post_init__(self):
        if self.phase is None:
            self.phase = self.step
        if self.request is None:
            self.request = np.zeros(len(self.step), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.line)

    def part(self, start: int, stop: int) -> LineAccesses:
        """Accesses ``start`` to ``stop`` (views)."""
        cut = slice(start, stop)
        return LineAccesses(self.line[cut], self.write[cut], self.cls[cut], self.token[cut], self.step[cut],
                            self.phase[cut], self.request[cut],
                            None if self.scan_lines is None else self.scan_lines[cut])


def read_access_trace(path: str | Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[Requests]:
    """Yield the requests of a ``.npy``, ``.parquet`` or ``.csv`` access trace in chunks."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"access trace {path} does not exist")
    if not path.is_file():
        raise UserError(f"access trace {path} is not a file")
    suffixes = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() == ".npy":
        return _read_npy(path, chunk_rows)
    if path.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(path, chunk_rows)
    if path.suffix.lower() == ".csv" or suffixes in (".csv.gz", ".csv.bz2", ".csv.zst"):
        return _read_csv(path, chunk_rows)
    raise UserError(f"access trace {path}: unknown format (use .npy, .parquet or .csv)")


def _read_npy(path: Path, chunk_rows: int) -> Iterator[Requests]:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # numpy raises several types for a corrupt header
        raise UserError(f"cannot read access trace {path}: {first_line(e)}") from None
    if arr.ndim != 1:
        raise UserError(f"access trace {path}: expected a 1-D array of addresses, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise UserError(f"access trace {path}: addresses must be integers, got dtype {arr.dtype}")
    if len(arr) == 0:
        raise UserError(f"access trace {path} is empty: it holds no addresses")

    def chunks():
        for start in range(0, len(arr), chunk_rows):
            part = np.asarray(arr[start:start + chunk_rows])
            _check_addresses(path, part, start)
            yield Requests.of(part.astype(np.int64))

    return chunks()


def _read_parquet(path: Path, chunk_rows: int) -> Iterator[Requests]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except Exception as e:
        raise UserError(f"cannot read access trace {path}: {first_line(e)}") from None
    _check_columns(path, names)
    columns = [c for c in COLUMNS if c in names]
    batches = pf.iter_batches(batch_size=chunk_rows, columns=columns)
    return _convert_batches(path, batches)


def _read_csv(path: Path, chunk_rows: int) -> Iterator[Requests]:
    import pyarrow.csv as pcsv

    try:
        reader = pcsv.open_csv(
            pa.input_stream(str(path), compression="detect"),
            read_options=pcsv.ReadOptions(block_size=1 << 24),
            convert_options=pcsv.ConvertOptions(column_types={"op": pa.string(), "cls": pa.string()}),
        )
    except Exception as e:
        raise UserError(f"cannot read access trace {path}: {first_line(e)}") from None
    _check_columns(path, reader.schema.names)
    return _convert_batches(path, reader)


def _check_columns(path: Path, names: list[str]) -> None:
    if "addr" not in names:
        raise UserError(f"access trace {path} has no 'addr' column (columns: {', '.join(names) or 'none'})")


def _convert_batches(path: Path, batches) -> Iterator[Requests]:
    row = 0
    try:
        for batch in batches:
            if batch.num_rows:
                yield _convert(path, batch, row)
            row += batch.num_rows
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot read access trace {path} near row {row}: {first_line(e)}") from None
    if row == 0:
        raise UserError(f"access trace {path} is empty: it holds no requests")


def _int_column(path: Path, batch, name: str, row: int) -> np.ndarray:
    col = batch.column(name)
    if not pa.types.is_integer(col.type):
        raise UserError(f"access trace {path}: column '{name}' must hold integers, got {col.type}")
    if col.null_count:
        bad = row + int(pc.index(pc.is_null(col), True).as_py())
        raise UserError(f"access trace {path}: column '{name}' is empty at row {bad}")
    return col.to_numpy(zero_copy_only=False)


def _convert(path: Path, batch, row: int) -> Requests:
    names = batch.schema.names
    addr = _int_column(path, batch, "addr", row)
    _check_addresses(path, addr, row)
    out = Requests.of(addr.astype(np.int64))
    if "size" in names:
        size = _int_column(path, batch, "size", row)
        if len(size) and size.min() < 1:
            bad = row + int(np.argmax(size < 1))
            raise UserError(f"access trace {path}: size must be at least 1 byte (row {bad})")
        if len(size) and size.max() > MAX_REQUEST_BYTES:
            bad = row + int(np.argmax(size > MAX_REQUEST_BYTES))
            raise UserError(f"access trace {path}: size {int(size.max()):,} at row {bad} exceeds "
                            f"{MAX_REQUEST_BYTES:,} bytes (16 GiB) per request")
        out.size = size.astype(np.int64)
        over = out.addr > MAX_ADDRESS - out.size + 1
        if over.any():
            raise UserError(f"access trace {path}: the request at row {row + int(np.argmax(over))} "
                            "ends beyond 2**63 bytes")
    if "op" in names:
        op = pc.index_in(pc.utf8_upper(batch.column("op").cast(pa.string())),
                         value_set=pa.array(["R", "W"]))
        if op.null_count:
            bad = int(pc.index(pc.is_null(op), True).as_py())
            raise UserError(f"access trace {path}: op must be R or W, got "
                            f"{batch.column('op')[bad].as_py()!r} at row {row + bad}")
        out.write = op.to_numpy(zero_copy_only=False).astype(np.uint8)
    if "cls" in names:
        out.cls = _class_codes(path, batch.column("cls"), row)
    if "token" in names:
        tok = _int_column(path, batch, "token", row).astype(np.int64)
        if len(tok) and tok.min() < -1:
            raise UserError(f"access trace {path}: token ids must be >= 0, or -1 for none "
                            f"(row {row + int(np.argmax(tok < -1))})")
        out.token = tok
    if "step" in names:
        step = _int_column(path, batch, "step", row).astype(np.int64)
        if len(step) and step.min() < 0:
            raise UserError(f"access trace {path}: negative step at row {row + int(np.argmax(step < 0))}")
        out.step = out.phase = step  # without a phase column: one phase per decode step
    for name in ("phase", "request"):
        if name in names:
            values = _int_column(path, batch, name, row).astype(np.int64)
            if len(values) and values.min() < 0:
                raise UserError(f"access trace {path}: negative {name} at row {row + int(np.argmax(values < 0))}")
            setattr(out, name, values)
    return out


def _class_codes(path: Path, col, row: int) -> np.ndarray:
    names = col.cast(pa.string())
    codes = pc.index_in(names, value_set=pa.array(TRAFFIC_CLASSES))
    if codes.null_count:
        bad = int(pc.index(pc.is_null(codes), True).as_py())
        raise UserError(f"access trace {path}: unknown traffic class {names[bad].as_py()!r} at row "
                        f"{row + bad} (known: {', '.join(TRAFFIC_CLASSES)})")
    return codes.to_numpy(zero_copy_only=False).astype(np.uint8)


def _check_addresses(path: Path, addr: np.ndarray, row: int) -> None:
    if len(addr) == 0:
        return
    if np.issubdtype(addr.dtype, np.signedinteger) and addr.min() < 0:
        raise UserError(f"access trace {path}: negative address at row {row + int(np.argmax(addr < 0))}")
    if addr.dtype == np.uint64 and addr.max() >= 1 << 63:
        raise UserError(f"access trace {path}: address beyond 2**63 at row {row + int(np.argmax(addr >= 1 << 63))}")

