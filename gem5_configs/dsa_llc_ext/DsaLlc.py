# SimObject declarations of dsa-llc's gem5 extension (see README.md, "gem5 backend").
#
# A KV token is the byte range [kv_start + i * token_stride, kv_start + (i + 1) * token_stride)
# of the KV region [kv_start, kv_end): the layouts of dsa-llc's streams put each token's KV on
# its own line-aligned stride, so the token of a line follows from its address, and layer l's
# tokens are [l * tokens_per_layer, (l + 1) * tokens_per_layer).

from m5.objects.ClockedObject import ClockedObject
from m5.objects.PartitioningPolicies import PartitionManager
from m5.objects.Tags import BaseSetAssoc
from m5.params import Param, RequestPort, ScopedEnum
from m5.proxy import Parent


class KvPartitionManager(PartitionManager):
    """Tags requests with a partition id by address (a trace replay sets no partition id of its
    own): the KV region gets kv_partition_id, the indexer-key region index_partition_id, the
    weights region weights_partition_id, everything else 0 (the shared ways). A class without a
    reservation of its own has id 0."""

    type = "KvPartitionManager"
    cxx_header = "dsa_llc_ext/kv_partition_manager.hh"
    cxx_class = "gem5::dsa_llc::KvPartitionManager"

    kv_start = Param.Addr("first byte of the KV region")
    kv_end = Param.Addr("one past the last byte of the KV region")
    kv_partition_id = Param.UInt64(1, "partition id of KV requests (0: the shared ways)")
    index_start = Param.Addr(0, "first byte of the indexer-key region")
    index_end = Param.Addr(0, "one past the last byte of the indexer-key region")
    index_partition_id = Param.UInt64(0, "partition id of indexer-key requests (0: the shared ways)")
    weights_start = Param.Addr(0, "first byte of the weights region")
    weights_end = Param.Addr(0, "one past the last byte of the weights region")
    weights_partition_id = Param.UInt64(0, "partition id of weight requests (0: the shared ways)")


class KvWayPolicy(ScopedEnum):
    """Policy of the reserved ways (harness/cache/policies/; the harness lists them in
    GEM5_POLICIES, harness/gem5/binary.py): lru keeps the cache's replacement policy;
    token_lru and streak rank KV lines by token."""

    vals = ["lru", "token_lru", "streak"]


class LineHint(ScopedEnum):
    """Insertion hint of a traffic class's fills into line-LRU ways (harness/cache/partitions.py):
    normal (most recent), streaming (the set's next victim), bip (as streaming, every 32nd fill
    most recent) or persisting (an address-hashed share of the lines persists, capped per set;
    the rest stream)."""

    vals = ["normal", "streaming", "bip", "persisting"]


class TokenPolicyTags(BaseSetAssoc):
    """Set-associative tags whose reserved (KV) ways follow a token policy exactly as the
    built-in model does: token-LRU (victim: the least recently accessed token) or streak (a
    history of every token read; per-(step, layer) demotion; a miss not stronger than the
    victim is not cached), optionally with whole-token eviction (the victim token's other
    resident lines are evicted too). Time counts the cache's accesses. Shared ways keep the
    replacement policy. Streak needs each request's decode step (requests from DsaStepGen).

    With an insertion hint other than normal on any class, every fill outside the token-ranked
    ways is placed by the tags themselves, as the built-in model's kernel does: line recency
    stamps per block, hinted fills inserted as their set's next victim (streaming; bip but
    every 32nd; the non-persisting share of a persisting class), and persisting lines capped at
    persist_cap per set, evicted only by persisting fills (a fill with no way it may take is not
    cached)."""

    type = "TokenPolicyTags"
    cxx_header = "dsa_llc_ext/token_policy_tags.hh"
    cxx_class = "gem5::dsa_llc::TokenPolicyTags"

    kv_policy = Param.KvWayPolicy("lru", "policy of the reserved ways")
    whole_token_eviction = Param.Bool(False, "evict the victim token's other lines with it")
    kv_start = Param.Addr(0, "first byte of the KV region")
    kv_end = Param.Addr(0, "one past the last byte of the KV region")
    token_stride = Param.Addr(64, "bytes per KV token (a multiple of the line size)")
    tokens_per_layer = Param.UInt64(0, "tokens per layer in the KV region (streak)")
    # class-aware insertion (harness/cache/partitions.py): a line's class follows from its
    # address (KV region, indexer-key region, weights region, else other)
    index_start = Param.Addr(0, "first byte of the indexer-key region")
    index_end = Param.Addr(0, "one past the last byte of the indexer-key region")
    weights_start = Param.Addr(0, "first byte of the weights region")
    weights_end = Param.Addr(0, "one past the last byte of the weights region")
    kv_hint = Param.LineHint("normal", "insertion hint of KV fills (line-LRU ways only)")
    index_hint = Param.LineHint("normal", "insertion hint of indexer-key fills")
    weights_hint = Param.LineHint("normal", "insertion hint of weight fills")
    kv_persist_threshold = Param.UInt64(0, "persisting: a KV line persists when its 32-bit hash is below it")
    index_persist_threshold = Param.UInt64(0, "persisting: the same for indexer-key lines")
    weights_persist_threshold = Param.UInt64(0, "persisting: the same for weight lines")
    persist_cap = Param.Unsigned(0, "persisting lines a set may hold (the set-aside's ways; 0: none)")


class DsaStepGen(ClockedObject):
    """Closed-loop replay of a phase file (harness/gem5/phasefile.py): phases one after another,
    each issuing its line requests in order (at most issue_width per cycle, at most
    max_outstanding unanswered), then waiting its compute delay after its last response.
    One requestor id per traffic class; every request carries its decode step."""

    type = "DsaStepGen"
    cxx_header = "dsa_llc_ext/dsa_step_gen.hh"
    cxx_class = "gem5::dsa_llc::DsaStepGen"

    system = Param.System(Parent.any, "the system (requestor ids, memory ranges)")
    port = RequestPort("to the LLC's cpu side")
    phase_file = Param.String("the phase file to replay")
    max_outstanding = Param.Unsigned(1, "requests sent and not yet answered, at most")
    issue_width = Param.Unsigned(1, "requests sent per clock cycle, at most")
    progress_check = Param.Latency("10ms", "fatal when no response arrives for this long "
                                   "while requests are outstanding (0: never)")
    warmup_exit_cause = Param.String("dsa-llc: warm-up done",
                                     "exit cause when the first measured phase starts")
    done_exit_cause = Param.String("dsa-llc: all phases done", "exit cause at the end")
