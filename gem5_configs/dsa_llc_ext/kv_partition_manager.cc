// dsa-llc gem5 extension: partition ids from addresses (KV region -> the KV partition).
#include "dsa_llc_ext/kv_partition_manager.hh"

namespace gem5
{
namespace dsa_llc
{

KvPartitionManager::KvPartitionManager(const Params &p)
    : partitioning_policy::PartitionManager(p),
      kvStart(p.kv_start), kvEnd(p.kv_end), kvPartitionId(p.kv_partition_id)
{
    fatal_if(kvEnd <= kvStart, "KvPartitionManager: empty KV region");
}

uint64_t
KvPartitionManager::readPacketPartitionID(PacketPtr pkt) const
{
    const Addr a = pkt->getAddr();
    return (a >= kvStart && a < kvEnd) ? kvPartitionId : 0;
}

} // namespace dsa_llc
} // namespace gem5
