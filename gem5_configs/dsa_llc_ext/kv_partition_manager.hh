// dsa-llc gem5 extension: partition ids from addresses (KV region -> the KV partition).
#ifndef __DSA_LLC_KV_PARTITION_MANAGER_HH__
#define __DSA_LLC_KV_PARTITION_MANAGER_HH__

#include "mem/cache/tags/partitioning_policies/partition_manager.hh"
#include "params/KvPartitionManager.hh"

namespace gem5
{
namespace dsa_llc
{

class KvPartitionManager : public partitioning_policy::PartitionManager
{
  public:
    PARAMS(KvPartitionManager);
    KvPartitionManager(const Params &p);

    uint64_t readPacketPartitionID(PacketPtr pkt) const override;

  private:
    const Addr kvStart;
    const Addr kvEnd;
    const uint64_t kvPartitionId;
};

} // namespace dsa_llc
} // namespace gem5

#endif // __DSA_LLC_KV_PARTITION_MANAGER_HH__
