"""The index log: which cached positions every layer selected at every decode step.

A log is a folder:

- ``index_log.parquet``: one row per (step, layer, request), in that order, with columns
  ``request`` (int32), ``step`` (int32), ``layer`` (int16), ``ctx_len`` (int32, cached tokens
  visible to the step, the new token included), ``positions`` (list<int32>: sorted, unique,
  ``0 <= pos < ctx_len``, ``min(k, ctx_len)`` of them; a sliding-window layer selects among
  its window only), ``recall`` (float32, the share of the layer's dense attention mass, averaged
  over heads, that the selection carries) and ``recall_best`` (the share the best k tokens
  carry: the oracle's recall at the same step); both null when not measured.
  A decode with indexer levers (``trace_gen.levers``: share, reuse) adds ``own_positions``
  (list<int32>, what the layer's own indexer selected, sorted and unique, at most k) and
  ``own_recall`` (float32, that selection's share of the dense attention mass) beside the
  selection actually used (``positions``, which under reuse holds up to
  ``k + index_reuse - 1`` positions: the last scan's widened by the tokens decoded since).
  Logs without levers have neither column and read as before.
- ``metadata.json``: schema version, backbone (name, source, config), indexer (name, k, options,
  indexer key bytes, how it was fitted, and under ``levers`` the lever plan when there is one),
  text source, seed, package version, config hash, and
  the shape (requests, steps, layers). The same JSON is stored in the Parquet file's metadata.
- ``generated.json``: the text each request generated.

Writers build the folder under a temporary name and rename it when complete, so a crash never
leaves a half-written log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.core.errors import UserError, first_line, problems_error
from harness.core.fields import Field
from harness.core.files import make_parents, remove_empty, remove_path, replace_path, temp_name
from harness.core.outputs import check_output_folder
from harness.core.settings import MAX_INT32, MAX_REQUESTS

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
# A decode with indexer levers adds what each layer selected itself, and that selection's recall.
LEVER_SCHEMA = pa.schema([*ARROW_SCHEMA, ("own_positions", pa.list_(pa.int32())), ("own_recall", pa.float32())])


def is_index_log_folder(folder: Path) -> bool:
    """Does ``folder`` hold an index log and nothing else (what ``decode --overwrite`` may replace)?"""
    try:
        names = {p.name for p in Path(folder).iterdir()}
    except OSError:
        return False
    return {LOG_FILE, META_FILE} <= names and names <= {LOG_FILE, META_FILE, GENERATED_FILE}


class IndexLogWriter:
    """Write an index log folder atomically: rows go to a temporary folder renamed on close.

    ``folder`` must be new or empty, or (with ``overwrite``) hold an index log and nothing else
    (the output rule of ``harness.core.outputs``). ``own``: the log has the columns of a decode
    with levers (``own_positions``, ``own_recall``)."""

    def __init__(self, folder: str | Path, metadata: dict, overwrite: bool = False,
                 rows_per_group: int = 4096, own: bool = False):
        self.folder = Path(folder)
        self._overwrite = overwrite
        self._check_output()
        self._made = make_parents(self.folder)
        self._tmp = temp_name(self.folder)
        self._writer = None
        self.metadata = {"schema_version": SCHEMA_VERSION, **metadata}
        self._own = own
        schema = (LEVER_SCHEMA if own else ARROW_SCHEMA).with_metadata(
            {_META_KEY: json.dumps(self.metadata).encode()})
        try:  # a full disk fails here already (the writer writes the file's header): leave nothing
            self._tmp.mkdir()
            self._writer = pq.ParquetWriter(self._tmp / LOG_FILE, schema, compression="zstd")
        except BaseException:
            self.abort()
            raise
        self._rows: list[tuple] = []
        self._rows_per_group = rows_per_group

    def _check_output(self) -> None:
        check_output_folder(self.folder, "decode", self._overwrite, owned=is_index_log_folder)

    def add(self, request: int, step: int, layer: int, ctx_len: int, positions: np.ndarray,
            recall: float | None = None, recall_best: float | None = None,
            own_positions: np.ndarray | None = None, own_recall: float | None = None) -> None:
        """One row; ``own_positions`` and ``own_recall`` only in a log made with ``own``."""
        row = (request, step, layer, ctx_len, np.asarray(positions, dtype=np.int32), recall, recall_best)
        if self._own:
            row += (np.asarray(own_positions, dtype=np.int32), own_recall)
        self._rows.append(row)
        if len(self._rows) >= self._rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        rows = sorted(self._rows, key=lambda r: (r[1], r[2], r[0]))
        schema = self._writer.schema
        columns = {}
        for field, values in zip(schema, zip(*rows)):
            columns[field.name] = _positions_array(values) if pa.types.is_list(field.type) else \
                pa.array(values, field.type)
        self._writer.write_table(pa.table(columns, schema=schema))
        self._rows.clear()

    def close(self, generated: dict | None = None) -> Path:
        """Finish the log and move it into place; returns the folder. A failure (a full disk)
        drops the temporary folder: the output stays as it was."""
        try:
            self._flush()
            self._writer.close()
            (self._tmp / META_FILE).write_text(json.dumps(self.metadata, indent=1) + "\n")
            (self._tmp / GENERATED_FILE).write_text(json.dumps(generated or {}, indent=1) + "\n")
            if self.folder.exists():
                self._check_output()  # still ours to replace
            replace_path(self._tmp, self.folder)
        except BaseException:
            self.abort()
            raise
        return self.folder

    def abort(self) -> None:
        """Drop the temporary folder (and the folders made for the log); the output stays as it was."""
        try:
            if self._writer is not None:
                self._writer.close()
        except OSError:  # closing flushes, and a full disk fails again: the folder goes anyway
            pass
        finally:
            remove_path(self._tmp)
            remove_empty(self._made)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is not None:
            self.abort()


def _positions_array(rows) -> pa.ListArray:
    """A list<int32> column of one int32 array per row."""
    lengths = np.array([len(p) for p in rows], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = np.concatenate(rows) if len(offsets) > 1 and offsets[-1] else np.zeros(0, np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32()))


@dataclass
class StepBlock:
    """Rows of whole decode steps, as flat numpy arrays (positions in CSR form)."""

    request: np.ndarray
    step: np.ndarray
    layer: np.ndarray
    ctx_len: np.ndarray
    offsets: np.ndarray    # int64, len(rows) + 1
    positions: np.ndarray  # int32, concatenated selections
    own_offsets: np.ndarray | None = None    # a lever log's own selections (own_positions), likewise
    own_positions: np.ndarray | None = None


# Limits that keep every derived quantity inside its integer type (MAX_REQUESTS and MAX_INT32:
# harness.core.settings): token ids pack the layer into bits 32-47 (trace_gen.stream.token_id).
MAX_LAYERS = (1 << 16) - 1

_META_FIELDS = {
    "requests": Field(None, "int", 1, MAX_REQUESTS),
    "steps": Field(None, "int", 0, MAX_INT32),
    "layers": Field(None, "int", 1, MAX_LAYERS),
}
_BACKBONE_FIELDS = {"name": Field(None, "str")}
_INDEXER_FIELDS = {"name": Field(None, "str"), "topk": Field(None, "int", 1, MAX_INT32),
                   "key_bytes": Field(0, "int", 0, MAX_INT32)}
_LEVER_FIELDS = {"index_share": Field(1, "int", 1, MAX_LAYERS), "index_reuse": Field(1, "int", 1, MAX_INT32)}
_ROW_COLUMNS = ("request", "step", "layer", "ctx_len")


def max_positions(meta: dict) -> int:
    """The most positions a row of a log with this (checked) metadata may hold: k, or under
    reuse (``indexer.levers.index_reuse`` S) the last scan's k widened by up to S - 1 tokens
    decoded since."""
    indexer = meta["indexer"]
    return int(indexer["topk"]) + int(indexer.get("levers", {}).get("index_reuse", 1)) - 1


def check_metadata(meta, where: str) -> dict:
    """The index log metadata, type-checked (every problem in one UserError)."""
    if not isinstance(meta, dict):
        raise UserError(f"{where}: the metadata is not a JSON object")
    version = meta.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise UserError(f"{where} has schema version {version!r}; this dsa-llc reads version {SCHEMA_VERSION}")
    problems = []

    def fields(section: dict, spec: dict, prefix: str, required=()):
        for key, field in spec.items():
            if key not in section:
                if key in required:
                    problems.append(f"{prefix}{key} is missing")
                continue
            try:
                field.check(f"{prefix}{key}", section[key])
            except UserError as e:
                problems.append(str(e))

    fields(meta, _META_FIELDS, "", required=_META_FIELDS)
    for name, spec, required in (("backbone", _BACKBONE_FIELDS, ("name",)),
                                 ("indexer", _INDEXER_FIELDS, ("name", "topk"))):
        section = meta.get(name)
        if not isinstance(section, dict):
            problems.append(f"{name} is missing or not an object")
            continue
        fields(section, spec, f"{name}.", required)
    levers = meta["indexer"].get("levers", {}) if isinstance(meta.get("indexer"), dict) else {}
    if not isinstance(levers, dict):
        problems.append("indexer.levers is not an object")
    else:
        fields(levers, _LEVER_FIELDS, "indexer.levers.")
    config = meta.get("backbone", {}).get("config", {}) if isinstance(meta.get("backbone"), dict) else {}
    if not isinstance(config, dict):
        problems.append("backbone.config is not an object")
    elif "layer_types" in config and not (isinstance(config["layer_types"], list)
                                          and all(isinstance(t, str) for t in config["layer_types"])):
        problems.append("backbone.config.layer_types is not a list of strings")
    if problems:
        raise problems_error(f"{where}: invalid metadata", problems)
    return meta


class IndexLog:
    """A log folder opened for reading, checked before any number comes out of it.

    Opening checks the metadata (parsed and type-checked), the Parquet schema and the row
    count. The rows are checked as they are read (:meth:`blocks`; :meth:`validate` reads them
    all once and is called by :meth:`table`): every (step, layer, request) row present, in that
    order, for steps ``0 .. steps - 1``; no nulls; ``1 <= ctx_len < 2**31``, the same for every
    layer of a step and request and never decreasing from step to step; positions sorted,
    unique, ``0 <= p < ctx_len`` and at most ``topk`` of them per row (``max_positions``: more
    under reuse); a lever log's ``own_positions`` likewise, at most ``topk``. Any violation is a
    one-line UserError, so no reader computes on a log that breaks its format."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.exists():
            raise UserError(f"index log {self.folder} does not exist")
        path = self.folder / LOG_FILE if self.folder.is_dir() else self.folder
        if not path.is_file():
            raise UserError(f"{self.folder} is not an index log (no {LOG_FILE})")
        try:
            self._pf = pq.ParquetFile(path)
            raw = (self._pf.schema_arrow.metadata or {}).get(_META_KEY)
        except Exception as e:
            raise UserError(f"index log {path} is corrupt or truncated: {first_line(e)}") from None
        self.path = path
        # metadata.json is the complete record (the writer adds timings after the Parquet
        # header was written); the copy in the Parquet file serves a file moved on its own
        side = self.folder / META_FILE if self.folder.is_dir() else None
        if side is not None and side.exists():
            self.meta = _read_json(side, "index log metadata")
            where = str(side)
        elif raw is not None:
            try:
                self.meta = json.loads(raw)
            except ValueError:
                raise UserError(f"index log {path}: its embedded metadata is not valid JSON") from None
            where = f"index log {path}"
        else:
            raise UserError(f"index log {path} has no dsa-llc metadata")
        check_metadata(self.meta, where)
        self.has_own = "own_positions" in self._pf.schema_arrow.names  # a decode with levers
        self._check_schema()
        self.requests = int(self.meta["requests"])
        self.layers = int(self.meta["layers"])
        self.steps = int(self.meta["steps"])
        self.topk = int(self.meta["indexer"]["topk"])
        self.max_positions = max_positions(self.meta)
        self.rows = self._pf.metadata.num_rows
        expect = self.steps * self.layers * self.requests
        if self.rows != expect:
            raise UserError(f"index log {path} has {self.rows:,} rows; its metadata promises "
                            f"{self.steps} steps x {self.layers} layers x {self.requests} requests "
                            f"= {expect:,}")
        self._shape: LogShape | None = None

    def _check_schema(self) -> None:
        schema = self._pf.schema_arrow
        problems = []
        for name in (*_ROW_COLUMNS, "positions", *self._own_columns):
            if name not in schema.names:
                problems.append(f"no column {name!r}")
                continue
            t = schema.field(name).type
            if name.endswith("positions"):
                ok = (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type)
            else:
                ok = pa.types.is_integer(t)
            if not ok:
                problems.append(f"column {name!r} has type {t}")
        if problems:
            raise problems_error(f"index log {self.path}", problems)

    @property
    def _own_columns(self) -> list[str]:
        """The optional positions column the rows' checks read too."""
        return ["own_positions"] if self.has_own else []

    @property
    def generated(self) -> dict:
        p = self.folder / GENERATED_FILE
        return _read_json(p, "generated text") if p.exists() else {}

    def validate(self) -> LogShape:
        """Read every row once and check it (see the class docstring); returns the log's shape.
        Remembered: later calls cost nothing."""
        if self._shape is None:
            for _ in self.blocks():
                pass
        return self._shape

    @property
    def shape(self) -> LogShape:
        return self.validate()

    def table(self, columns: list[str] | None = None) -> pa.Table:
        """The rows as an Arrow table (after :meth:`validate`)."""
        self.validate()
        try:
            return self._pf.read(columns=columns)
        except Exception as e:
            raise UserError(f"index log {self.path} is corrupt or truncated: {first_line(e)}") from None

    def dataframe(self):
        return self.table().to_pandas()

    def blocks(self, rows_per_block: int = 1 << 14):
        """Yield :class:`StepBlock` s covering whole steps, in decode order, each checked."""
        per_step = self.layers * self.requests
        rows_per_block = max(per_step, rows_per_block // per_step * per_step)
        checker = _RowChecker(self)
        pending: list[pa.RecordBatch] = []
        have = 0
        try:
            columns = [*_ROW_COLUMNS, "positions", *self._own_columns]
            for batch in self._pf.iter_batches(batch_size=rows_per_block, columns=columns):
                pending.append(batch)
                have += batch.num_rows
                while have >= rows_per_block:
                    table = pa.Table.from_batches(pending)
                    yield checker.block(table.slice(0, rows_per_block))
                    rest = table.slice(rows_per_block)
                    pending, have = rest.to_batches(), rest.num_rows
            if have:
                yield checker.block(pa.Table.from_batches(pending))
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"index log {self.path} is corrupt or truncated: {first_line(e)}") from None
        shape = checker.finish()
        if self._shape is None:
            self._shape = shape


@dataclass(frozen=True)
class LogShape:
    """What a full pass over a log's rows measured (buffers are sized from it, not from the
    metadata): each request's ctx_len at its first and last step, the largest ctx_len and the
    most positions in one row, and the positions in all rows."""

    first_ctx: np.ndarray  # int64 [requests]
    last_ctx: np.ndarray   # int64 [requests]
    max_ctx: int
    max_row: int
    selections: int        # positions in all rows


class _RowChecker:
    """The row checks of :class:`IndexLog`, block by block, carrying what crosses blocks."""

    def __init__(self, log: IndexLog):
        self.log = log
        self.where = f"index log {log.path}"
        self.next_step = 0
        self.first_ctx = np.zeros(log.requests, dtype=np.int64)
        self.last_ctx = np.zeros(log.requests, dtype=np.int64)
        self.max_row = 0
        self.selections = 0

    def fail(self, what: str):
        raise UserError(f"{self.where}: {what}")

    def block(self, table: pa.Table) -> StepBlock:
        log = self.log
        per_step = log.layers * log.requests
        n = table.num_rows
        for name in table.column_names:
            if table.column(name).null_count:
                self.fail(f"column {name!r} has empty values")
        cols = {c: table.column(c).to_numpy().astype(np.int64) for c in _ROW_COLUMNS}
        steps_here = n // per_step
        if n % per_step:
            self.fail("the rows do not make up whole steps")
        expect_layer = np.tile(np.repeat(np.arange(log.layers), log.requests), steps_here)
        expect_req = np.tile(np.arange(log.requests), steps_here * log.layers)
        expect_step = np.repeat(np.arange(self.next_step, self.next_step + steps_here), per_step)
        for name, expect in (("step", expect_step), ("layer", expect_layer), ("request", expect_req)):
            if not np.array_equal(cols[name], expect):
                row = int(np.argmax(cols[name] != expect))
                self.fail(f"row {self.next_step * per_step + row:,} is not (step {expect_step[row]}, "
                          f"layer {expect_layer[row]}, request {expect_req[row]}): every (step, layer, "
                          "request) row must be present, in that order")
        ctx = cols["ctx_len"]
        if n and (ctx.min() < 1 or ctx.max() > MAX_INT32):
            self.fail(f"ctx_len {int(ctx[(ctx < 1) | (ctx > MAX_INT32)][0])} is out of range (1 .. 2**31 - 1)")
        grid = ctx.reshape(steps_here, log.layers, log.requests)
        if (grid != grid[:, :1, :]).any():
            self.fail("ctx_len differs between the layers of one step")
        by_step = grid[:, 0, :]
        prev = np.concatenate([self.last_ctx[None, :] if self.next_step else by_step[:1], by_step[:-1]])
        if (by_step < prev).any():
            self.fail("ctx_len decreases from one step to the next")
        offsets, values = self.positions(table, "positions", cols, log.max_positions)
        own = self.positions(table, "own_positions", cols, log.topk) if log.has_own else (None, None)
        counts = np.diff(offsets)
        if steps_here:
            if self.next_step == 0:
                self.first_ctx = by_step[0].copy()
            self.last_ctx = by_step[-1].copy()
        self.next_step += steps_here
        self.max_row = max(self.max_row, int(counts.max()) if len(counts) else 0)
        self.selections += len(values)
        return StepBlock(cols["request"], cols["step"], cols["layer"], ctx, offsets,
                         values.astype(np.int32), own[0], None if own[1] is None else own[1].astype(np.int32))

    def positions(self, table: pa.Table, name: str, cols: dict, most: int) -> tuple[np.ndarray, np.ndarray]:
        """A list column of positions, checked (sorted, unique, ``0 <= p < ctx_len``, at most
        ``most`` per row), as CSR offsets (from 0) and values (int64)."""
        pos = table.column(name).combine_chunks()
        if pos.values.null_count and pc.list_flatten(pos).null_count:
            self.fail(f"column {name!r} has empty values")
        offsets = pos.offsets.to_numpy().astype(np.int64)
        values = pos.values.to_numpy(zero_copy_only=False)
        values = values[offsets[0]:offsets[-1]].astype(np.int64)
        offsets = offsets - offsets[0]
        counts = np.diff(offsets)
        what = "topk" if most == self.log.topk else "topk + index_reuse - 1"
        if len(counts) and counts.max() > most:
            row = int(np.argmax(counts > most))
            self.fail(f"a row selects {int(counts[row])} {name.replace('_', ' ')}, more than {what} = {most} "
                      f"(step {int(cols['step'][row])}, layer {int(cols['layer'][row])})")
        if len(values):
            if values.min() < 0 or (values >= np.repeat(cols["ctx_len"], counts)).any():
                self.fail(f"a selected position lies outside its context (0 <= position < ctx_len; {name})")
            rising = values[1:] > values[:-1]
            starts = offsets[(offsets > 0) & (offsets < len(values))]
            rising[starts - 1] = True  # the first position of a row follows another row's last
            if not rising.all():
                self.fail(f"a row's {name.replace('_', ' ')} are not sorted and unique")
        return offsets, values

    def finish(self) -> LogShape:
        if self.next_step != self.log.steps:
            self.fail(f"it holds {self.next_step} steps; its metadata promises {self.log.steps}")
        return LogShape(self.first_ctx, self.last_ctx,
                        int(self.last_ctx.max()) if self.next_step else 0, self.max_row, self.selections)


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text") from None
    except ValueError as e:
        raise UserError(f"{what} {path} is not valid JSON: {first_line(e)}") from None
