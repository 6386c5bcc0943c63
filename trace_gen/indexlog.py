"""The index log: which cached positions every layer selected at every decode step.

A log is a folder:

- ``index_log.parquet``: one row per (step, layer, request), in that order, with columns
  ``request`` (int32), ``step`` (int32), ``layer`` (int16), ``ctx_len`` (int32, cached tokens
  visible to the step, the new token included), ``positions`` (list<int32>: sorted, unique,
  ``0 <= pos < ctx_len``, ``min(k, ctx_len)`` of them; a sliding-window layer selects among
  its window only), ``recall`` (float32, the share of the layer's dense attention mass, averaged
  over heads, that the selection carries) and ``recall_best`` (the share the best k tokens
  carry: the oracle's recall at the same step); both null when not measured.
- ``metadata.json``: schema version, backbone (name, source, config), indexer (name, k, options,
  indexer key bytes, how it was fitted), text source, seed, package version, config hash, and
  the shape (requests, steps, layers). The same JSON is stored in the Parquet file's metadata.
- ``generated.json``: the text each request generated.

Writers build the folder under a temporary name and rename it when complete, so a crash never
leaves a half-written log.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.core.errors import UserError, first_line

SCHEMA_VERSION = 1
LOG_FILE = "index_log.parquet"
META_FILE = "metadata.json"
GENERATED_FILE = "generated.json"
_META_KEY = b"dsa_llc.index_log"

ARROW_SCHEMA = pa.schema([
    ("request", pa.int32()), ("step", pa.int32()), ("layer", pa.int16()),
    ("ctx_len", pa.int32()), ("positions", pa.list_(pa.int32())), ("recall", pa.float32()),
    ("recall_best", pa.float32()),
])


class IndexLogWriter:
    """Write an index log folder atomically: rows go to a temporary folder renamed on close."""

    def __init__(self, folder: str | Path, metadata: dict, overwrite: bool = False,
                 rows_per_group: int = 4096):
        self.folder = Path(folder)
        if self.folder.exists() and not overwrite and any(self.folder.iterdir()):
            raise UserError(f"{self.folder} already holds files; pass --overwrite to replace it")
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.", dir=self.folder.parent))
        self.metadata = {"schema_version": SCHEMA_VERSION, **metadata}
        schema = ARROW_SCHEMA.with_metadata({_META_KEY: json.dumps(self.metadata).encode()})
        self._writer = pq.ParquetWriter(self._tmp / LOG_FILE, schema, compression="zstd")
        self._rows: list[tuple] = []
        self._rows_per_group = rows_per_group

    def add(self, request: int, step: int, layer: int, ctx_len: int, positions: np.ndarray,
            recall: float | None = None, recall_best: float | None = None) -> None:
        self._rows.append((request, step, layer, ctx_len, np.asarray(positions, dtype=np.int32),
                           recall, recall_best))
        if len(self._rows) >= self._rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        rows = sorted(self._rows, key=lambda r: (r[1], r[2], r[0]))
        cols = list(zip(*rows))
        lengths = np.array([len(p) for p in cols[4]], dtype=np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        values = np.concatenate(cols[4]) if len(offsets) > 1 and offsets[-1] else np.zeros(0, np.int32)
        table = pa.table({
            "request": pa.array(cols[0], pa.int32()), "step": pa.array(cols[1], pa.int32()),
            "layer": pa.array(cols[2], pa.int16()), "ctx_len": pa.array(cols[3], pa.int32()),
            "positions": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32())),
            "recall": pa.array(cols[5], pa.float32()),
            "recall_best": pa.array(cols[6], pa.float32()),
        }, schema=self._writer.schema)
        self._writer.write_table(table)
        self._rows.clear()

    def close(self, generated: dict | None = None, extra_files: dict | None = None) -> Path:
        """Finish the log and move it into place; returns the folder."""
        self._flush()
        self._writer.close()
        (self._tmp / META_FILE).write_text(json.dumps(self.metadata, indent=1) + "\n")
        (self._tmp / GENERATED_FILE).write_text(json.dumps(generated or {}, indent=1) + "\n")
        for name, text in (extra_files or {}).items():
            (self._tmp / name).write_text(text)
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self._tmp.rename(self.folder)
        return self.folder

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is not None:
            self.abort()


@dataclass
class StepBlock:
    """Rows of whole decode steps, as flat numpy arrays (positions in CSR form)."""

    request: np.ndarray
    step: np.ndarray
    layer: np.ndarray
    ctx_len: np.ndarray
    offsets: np.ndarray    # int64, len(rows) + 1
    positions: np.ndarray  # int32, concatenated selections


class IndexLog:
    """A log folder opened for reading; checks the schema version and the file's integrity."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.exists():
            raise UserError(f"index log {self.folder} does not exist")
        path = self.folder / LOG_FILE if self.folder.is_dir() else self.folder
        if not path.exists():
            raise UserError(f"{self.folder} is not an index log (no {LOG_FILE})")
        try:
            self._pf = pq.ParquetFile(path)
            raw = (self._pf.schema_arrow.metadata or {}).get(_META_KEY)
        except Exception as e:
            raise UserError(f"index log {path} is corrupt or truncated: {first_line(e)}") from None
        if raw is None:
            raise UserError(f"index log {path} has no dsa-llc metadata")
        # metadata.json is the complete record (the writer adds timings after the Parquet
        # header was written); the copy in the Parquet file serves a file moved on its own
        side = self.folder / META_FILE if self.folder.is_dir() else None
        self.meta = json.loads(side.read_text()) if side and side.exists() else json.loads(raw)
        version = self.meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise UserError(f"index log {path} has schema version {version}; this dsa-llc reads "
                            f"version {SCHEMA_VERSION}")
        self.path = path
        self.requests = int(self.meta["requests"])
        self.layers = int(self.meta["layers"])
        self.steps = int(self.meta["steps"])
        self.rows = self._pf.metadata.num_rows

    @property
    def generated(self) -> dict:
        p = self.folder / GENERATED_FILE
        return json.loads(p.read_text()) if p.exists() else {}

    def table(self, columns: list[str] | None = None) -> pa.Table:
        try:
            return self._pf.read(columns=columns)
        except Exception as e:
            raise UserError(f"index log {self.path} is corrupt or truncated: {first_line(e)}") from None

    def dataframe(self):
        return self.table().to_pandas()

    def blocks(self, rows_per_block: int = 1 << 14):
        """Yield :class:`StepBlock` s covering whole steps, in decode order."""
        per_step = self.layers * self.requests
        rows_per_block = max(per_step, rows_per_block // per_step * per_step)
        pending: list[pa.RecordBatch] = []
        have = 0
        try:
            for batch in self._pf.iter_batches(batch_size=rows_per_block,
                                               columns=["request", "step", "layer", "ctx_len", "positions"]):
                pending.append(batch)
                have += batch.num_rows
                while have >= rows_per_block:
                    table = pa.Table.from_batches(pending)
                    yield _block(table.slice(0, rows_per_block))
                    rest = table.slice(rows_per_block)
                    pending, have = rest.to_batches(), rest.num_rows
            if have:
                yield _block(pa.Table.from_batches(pending))
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"index log {self.path} is corrupt or truncated: {first_line(e)}") from None


def _block(table: pa.Table) -> StepBlock:
    pos = table.column("positions").combine_chunks()
    offsets = pos.offsets.to_numpy().astype(np.int64)
    values = pos.values.to_numpy()
    values = values[offsets[0]:offsets[-1]] if len(offsets) else values
    offsets = offsets - (offsets[0] if len(offsets) else 0)
    return StepBlock(*(table.column(c).to_numpy().astype(np.int64) for c in ("request", "step", "layer", "ctx_len")),
                     offsets, values.astype(np.int32, copy=False))

