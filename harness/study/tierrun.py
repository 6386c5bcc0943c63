"""One host-tier run on an index log: the log's token reads under a geometry, timed on a platform
(``harness.cache.tier``), for ``dsa-harness tier`` and the sweep's runs of backend ``tier``.

A sweep runs many tier configurations on one log, and a hot buffer's hits depend on neither the
geometry nor the platform: a worker keeps the last logs' token reads and their hot-buffer hits
(keyed by the log's folder and the modification time of its files), so that each is computed once.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from harness.cache.policies import TokenReads
from harness.cache.tier import HotBufferHits, TierConfig, hot_buffer_hits, simulate_tier
from harness.cache.timing import TimingConfig
from trace_gen.geometry import get_geometry
from trace_gen.indexlog import IndexLog


def _stamp(folder: Path) -> tuple:
    return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()))


@lru_cache(maxsize=2)
def _reads(folder: Path, stamp: tuple) -> tuple[IndexLog, TokenReads]:
    log = IndexLog(folder)
    return log, TokenReads.from_log(log)


@lru_cache(maxsize=64)
def _hits(folder: Path, stamp: tuple, hot: int, policy: str, pooled: bool, batch: int) -> HotBufferHits:
    return hot_buffer_hits(_reads(folder, stamp)[1], hot, policy, pooled, batch)


def tier_of_log(log_dir: str | Path, stream: dict, timing: TimingConfig, tier: TierConfig,
                extra_config: dict | None = None) -> dict:
    """The host tier's result (``simulate_tier``) of the index log in ``log_dir``, under the
    stream settings' ``geometry`` (``native``: the log's backbone), ``index_bytes`` (None: the
    geometry's) and ``batch`` (None: the log's requests); the layout settings do not apply (the
    tier counts tokens, not addresses), nor do the stream levers ``index_share`` and
    ``index_reuse`` (the tier reads the selections as logged, and every layer's index phase scans)."""
    folder = Path(log_dir).resolve()
    stamp = _stamp(folder)
    log, reads = _reads(folder, stamp)
    geometry = get_geometry(stream["geometry"], log.meta)
    if stream.get("index_bytes") is not None:
        geometry = replace(geometry, index_bytes=stream["index_bytes"])
    batch = stream.get("batch") or reads.requests
    buffers = _hits(folder, stamp, tier.hot_tokens(reads.topk), tier.hot_policy, tier.pooled, batch)
    source = {"index_log": str(log.folder), "backbone": log.meta["backbone"]["name"],
              "indexer": log.meta["indexer"].get("name"), "topk": log.topk, "log_layers": log.layers,
              "log_requests": log.requests, "geometry": geometry.name}
    return simulate_tier(reads, geometry, timing, tier, batch, extra_config={"input": source, **(extra_config or {})},
                         buffers=buffers)
