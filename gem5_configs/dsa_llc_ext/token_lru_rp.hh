// dsa-llc gem5 extension: LRU by token recency (DESIGN.md, "token-lru").
#ifndef __DSA_LLC_TOKEN_LRU_RP_HH__
#define __DSA_LLC_TOKEN_LRU_RP_HH__

#include <cstdint>
#include <unordered_map>

#include "mem/cache/replacement_policies/base.hh"
#include "params/TokenLRURP.hh"

namespace gem5
{
namespace dsa_llc
{

using replacement_policy::ReplacementData;

class TokenLRU : public replacement_policy::Base
{
  protected:
    struct TokenReplData : ReplacementData
    {
        uint64_t token = 0;
        bool valid = false;
    };

    struct TokenState
    {
        Tick lastTouch = 0;
        int resident = 0;  // valid blocks of the token in this cache
    };

    const Addr kvStart;
    const Addr kvEnd;
    const Addr tokenStride;
    // Recency is per token, shared by the token's lines in every set.
    mutable std::unordered_map<uint64_t, TokenState> tokens;

    uint64_t tokenOf(Addr addr) const;

  public:
    PARAMS(TokenLRURP);
    TokenLRU(const Params &p);

    void invalidate(const std::shared_ptr<ReplacementData>& replacement_data) override;
    void touch(const std::shared_ptr<ReplacementData>& replacement_data,
               const PacketPtr pkt) override;
    void touch(const std::shared_ptr<ReplacementData>& replacement_data) const override;
    void reset(const std::shared_ptr<ReplacementData>& replacement_data,
               const PacketPtr pkt) override;
    void reset(const std::shared_ptr<ReplacementData>& replacement_data) const override;
    ReplaceableEntry* getVictim(const ReplacementCandidates& candidates) const override;
    std::shared_ptr<ReplacementData> instantiateEntry() override;
};

} // namespace dsa_llc
} // namespace gem5

#endif // __DSA_LLC_TOKEN_LRU_RP_HH__
