// dsa-llc gem5 extension: partition ids from addresses (KV, indexer-key and weights regions).
#ifndef __DSA_LLC_KV_PARTITION_MANAGER_HH__
#define __DSA_LLC_KV_PARTITION_MANAGER_HH__

#include "mem/cache/tags/partitioning_policies/partition_manager.hh"
#include "params/KvPartitionManager.hh"

namespace gem5
{
namespace dsa_llc
{

/**
 * A trace replay sets no partition id of its own: this manager gives a request the id of the
 * address region it falls in (KV, indexer keys, weights), 0 for anything else. A region's id
 * is 0 when its class has no ways of its own (it shares the rest).
 */
class KvPartitionManager : public partitioning_policy::PartitionManager
{
  public:
    PARAMS(KvPartitionManager);
    KvPartitionManager(const Params &p);

    uint64_t readPacketPartitionID(PacketPtr pkt) const override;

  private:
    struct Region
    {
        Addr start;
        Addr end;
        uint64_t id;
    };

    const Region regions[3];
};

} // namespace dsa_llc
} // namespace gem5

#endif // __DSA_LLC_KV_PARTITION_MANAGER_HH__
