"""Writing access streams to files: the generic Parquet access trace and gem5 packet traces.

Both are written to a temporary name and renamed when complete; both record what made them
(the Parquet file in its schema metadata, the gem5 trace in a ``.json`` file beside it)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.core.accesstrace import LineAccesses, Requests
from harness.core.files import atomic_path
from harness.core.traffic import TRAFFIC_CLASSES
from trace_gen import gem5trace

_OPS = pa.array(["R", "W"])
_CLASSES = pa.array(TRAFFIC_CLASSES)


def requests_table(r: Requests) -> pa.Table:
    return pa.table({
        "addr": pa.array(r.addr, pa.int64()),
        "size": pa.array(r.size, pa.int64()),
        "op": pa.DictionaryArray.from_arrays(pa.array(r.write.astype(np.int8)), _OPS),
        "cls": pa.DictionaryArray.from_arrays(pa.array(r.cls.astype(np.int8)), _CLASSES),
        "token": pa.array(r.token, pa.int64()),
        "step": pa.array(r.step, pa.int64()),
        "phase": pa.array(r.phase, pa.int64()),
        "request": pa.array(r.request, pa.int64()),
    })


def write_parquet_trace(path: str | Path, chunks: Iterable[Requests], provenance: dict,
                        check: Callable[[], object] | None = None) -> int:
    """Write request chunks as a generic access trace; returns the number of requests.
    ``check``: the output rule, checked again before an existing file is replaced."""
    n = 0
    with atomic_path(path, check) as tmp:
        writer = None
        try:
            for chunk in chunks:
                table = requests_table(chunk)
                if writer is None:
                    schema = table.schema.with_metadata({b"dsa_llc.provenance": json.dumps(provenance).encode()})
                    writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                writer.write_table(table.cast(writer.schema))
                n += len(chunk)
            if writer is None:  # an empty stream still gives a valid, empty trace
                table = requests_table(Requests.of(np.zeros(0, np.int64)))
                pq.write_table(table.replace_schema_metadata(
                    {b"dsa_llc.provenance": json.dumps(provenance).encode()}), tmp)
        finally:
            if writer is not None:
                writer.close()
    return n


def write_gem5_trace(path: str | Path, chunks: Iterable[LineAccesses], provenance: dict,
                     tick_spacing: int = 1_000_000, check: Callable[[], object] | None = None) -> int:
    """Write line accesses as a gzip'd gem5 packet trace plus ``<path>.json`` (provenance and
    the address map a gem5 config needs); returns the number of packets. ``check``: the output
    rule, checked again before an existing file is replaced."""
    path = Path(path)
    with atomic_path(path, check) as tmp:
        n = gem5trace.write_packet_trace(tmp, chunks, tick_spacing)
        side = {**provenance, "packets": n, "tick_spacing_ps": tick_spacing}
        with atomic_path(path.with_name(path.name + ".json"), check) as tmp_json:
            tmp_json.write_text(json.dumps(side, indent=1) + "\n")
    return n


def line_chunks_of(chunks: Iterable[Requests | LineAccesses]) -> Iterable[LineAccesses]:
    for c in chunks:
        if isinstance(c, Requests):
            yield from c.line_chunks()
        else:
            yield c
