// dsa-llc gem5 extension: set-associative tags with whole-token eviction.
#ifndef __DSA_LLC_TOKEN_TAGS_HH__
#define __DSA_LLC_TOKEN_TAGS_HH__

#include "mem/cache/tags/base_set_assoc.hh"
#include "params/TokenTags.hh"

namespace gem5
{
namespace dsa_llc
{

class TokenTags : public BaseSetAssoc
{
  public:
    PARAMS(TokenTags);
    TokenTags(const Params &p);

    // The victim as BaseSetAssoc chooses it; when it is a KV line, every other resident line
    // of its token joins evict_blks, which BaseCache::handleEvictions evicts (and writes back).
    CacheBlk* findVictim(Addr addr, const bool is_secure, const std::size_t size,
                         std::vector<CacheBlk*>& evict_blks,
                         const uint64_t partition_id=0) override;

  private:
    const Addr kvStart;
    const Addr kvEnd;
    const Addr tokenStride;
};

} // namespace dsa_llc
} // namespace gem5

#endif // __DSA_LLC_TOKEN_TAGS_HH__
