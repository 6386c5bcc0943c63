// dsa-llc gem5 extension: partition ids from addresses (KV, indexer-key and weights regions).
#include "dsa_llc_ext/kv_partition_manager.hh"

#include "base/logging.hh"

namespace gem5
{
namespace dsa_llc
{

KvPartitionManager::KvPartitionManager(const Params &p)
    : partitioning_policy::PartitionManager(p),
      regions{{p.kv_start, p.kv_end, p.kv_partition_id},
              {p.index_start, p.index_end, p.index_partition_id},
              {p.weights_start, p.weights_end, p.weights_partition_id}}
{
    for (const Region &r : regions)
        fatal_if(r.id != 0 && r.end <= r.start,
                 "KvPartitionManager: partition %d has an empty address region", r.id);
}

uint64_t
KvPartitionManager::readPacketPartitionID(PacketPtr pkt) const
{
    const Addr a = pkt->getAddr();
    for (const Region &r : regions) {
        if (a >= r.start && a < r.end)
            return r.id;
    }
    return 0;
}

} // namespace dsa_llc
} // namespace gem5
