# SimObject declarations of dsa-llc's gem5 extension (see README.md, "gem5 backend").
#
# A KV token is the byte range [kv_start + i * token_stride, kv_start + (i + 1) * token_stride)
# of the KV region [kv_start, kv_end): the layouts of dsa-llc's streams put each token's KV on
# its own line-aligned stride, so the token of a line follows from its address.

from m5.objects.PartitioningPolicies import PartitionManager
from m5.objects.ReplacementPolicies import BaseReplacementPolicy
from m5.objects.Tags import BaseSetAssoc
from m5.params import Param


class KvPartitionManager(PartitionManager):
    """Tags requests with a partition id by address: the KV region gets kv_partition_id,
    everything else 0 (a trace replay sets no partition id of its own)."""

    type = "KvPartitionManager"
    cxx_header = "dsa_llc_ext/kv_partition_manager.hh"
    cxx_class = "gem5::dsa_llc::KvPartitionManager"

    kv_start = Param.Addr("first byte of the KV region")
    kv_end = Param.Addr("one past the last byte of the KV region")
    kv_partition_id = Param.UInt64(1, "partition id of KV requests")


class TokenLRURP(BaseReplacementPolicy):
    """LRU by token recency: a token's time is its latest access to any of its lines; the
    victim is the candidate whose token is least recent (invalid candidates first, ties to the
    first candidate). Lines outside the KV region are tokens of their own (plain LRU)."""

    type = "TokenLRURP"
    cxx_header = "dsa_llc_ext/token_lru_rp.hh"
    cxx_class = "gem5::dsa_llc::TokenLRU"

    kv_start = Param.Addr("first byte of the KV region")
    kv_end = Param.Addr("one past the last byte of the KV region")
    token_stride = Param.Addr("bytes per KV token (a multiple of the line size)")


class TokenTags(BaseSetAssoc):
    """Set-associative tags with whole-token eviction: evicting a KV line also evicts every
    other resident line of its token (dirty ones are written back)."""

    type = "TokenTags"
    cxx_header = "dsa_llc_ext/token_tags.hh"
    cxx_class = "gem5::dsa_llc::TokenTags"

    kv_start = Param.Addr("first byte of the KV region")
    kv_end = Param.Addr("one past the last byte of the KV region")
    token_stride = Param.Addr("bytes per KV token (a multiple of the line size)")
