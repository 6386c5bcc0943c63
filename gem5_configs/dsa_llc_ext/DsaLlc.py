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
    """Tags requests with a partition id by address: the KV region gets kv_partition_id,
    everything else 0 (a trace replay sets no partition id of its own)."""

    type = "KvPartitionManager"
    cxx_header = "dsa_llc_ext/kv_partition_manager.hh"
    cxx_class = "gem5::dsa_llc::KvPartitionManager"

    kv_start = Param.Addr("first byte of the KV region")
    kv_end = Param.Addr("one past the last byte of the KV region")
    kv_partition_id = Param.UInt64(1, "partition id of KV requests")


class KvWayPolicy(ScopedEnum):
    """Policy of the reserved ways (harness/cache/policies/; the harness lists them in
    GEM5_POLICIES, harness/gem5/binary.py): lru keeps the cache's replacement policy;
    token_lru and streak rank KV lines by token."""

    vals = ["lru", "token_lru", "streak"]


class TokenPolicyTags(BaseSetAssoc):
    """Set-associative tags whose reserved (KV) ways follow a token policy exactly as the
    built-in model does: token-LRU (victim: the least recently accessed token) or streak (a
    history of every token read; per-(step, layer) demotion; a miss not stronger than the
    victim is not cached), optionally with whole-token eviction (the victim token's other
    resident lines are evicted too). Time counts the cache's accesses. Shared ways keep the
    replacement policy. Streak needs each request's decode step (requests from DsaStepGen)."""

    type = "TokenPolicyTags"
    cxx_header = "dsa_llc_ext/token_policy_tags.hh"
    cxx_class = "gem5::dsa_llc::TokenPolicyTags"

    kv_policy = Param.KvWayPolicy("lru", "policy of the reserved ways")
    whole_token_eviction = Param.Bool(False, "evict the victim token's other lines with it")
    kv_start = Param.Addr(0, "first byte of the KV region")
    kv_end = Param.Addr(0, "one past the last byte of the KV region")
    token_stride = Param.Addr(64, "bytes per KV token (a multiple of the line size)")
    tokens_per_layer = Param.UInt64(0, "tokens per layer in the KV region (streak)")


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
