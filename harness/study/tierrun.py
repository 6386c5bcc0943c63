"""One host-tier run on an index log: the log's token reads under a geometry, timed on a platform
(``harness.cache.tier``), for ``dsa-harness tier`` and the sweep's runs of backend ``tier``."""

from __future__ import annotations

from pathlib import Path

from harness.cache.policies import TokenReads
from harness.cache.tier import TierConfig, simulate_tier
from harness.cache.timing import TimingConfig
from trace_gen.geometry import get_geometry
from trace_gen.indexlog import IndexLog


def tier_of_log(log_dir: str | Path, stream: dict, timing: TimingConfig, tier: TierConfig,
                extra_config: dict | None = None) -> dict:
    """The host tier's result (``simulate_tier``) of the index log in ``log_dir``, under the
    stream settings' ``geometry`` (``native``: the log's backbone) and ``batch`` (None: the log's
    requests); the layout settings do not apply (the tier counts tokens, not addresses)."""
    log = IndexLog(log_dir)
    reads = TokenReads.from_log(log)
    geometry = get_geometry(stream["geometry"], log.meta)
    source = {"index_log": str(log.folder), "backbone": log.meta["backbone"]["name"],
              "indexer": log.meta["indexer"].get("name"), "topk": log.topk, "log_layers": log.layers,
              "log_requests": log.requests, "geometry": geometry.name}
    return simulate_tier(reads, geometry, timing, tier, stream.get("batch"),
                         extra_config={"input": source, **(extra_config or {})})
