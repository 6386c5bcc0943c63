// dsa-llc gem5 extension: set-associative tags with whole-token eviction.
#include "dsa_llc_ext/token_tags.hh"

#include "base/logging.hh"

namespace gem5
{
namespace dsa_llc
{

TokenTags::TokenTags(const Params &p)
    : BaseSetAssoc(p), kvStart(p.kv_start), kvEnd(p.kv_end), tokenStride(p.token_stride)
{
    fatal_if(tokenStride == 0 || tokenStride % blkSize != 0,
             "TokenTags: token_stride must be a positive multiple of the line size");
}

CacheBlk*
TokenTags::findVictim(Addr addr, const bool is_secure, const std::size_t size,
                      std::vector<CacheBlk*>& evict_blks, const uint64_t partition_id)
{
    CacheBlk* victim = BaseSetAssoc::findVictim(addr, is_secure, size, evict_blks,
                                                partition_id);
    if (victim == nullptr || !victim->isValid())
        return victim;
    const Addr victim_addr = regenerateBlkAddr(victim);
    if (victim_addr < kvStart || victim_addr >= kvEnd)
        return victim;
    const Addr base = kvStart + (victim_addr - kvStart) / tokenStride * tokenStride;
    for (Addr a = base; a < base + tokenStride; a += blkSize) {
        if (a == victim_addr)
            continue;
        CacheBlk* blk = findBlock(a, victim->isSecure());
        if (blk != nullptr)
            evict_blks.push_back(blk);
    }
    return victim;
}

} // namespace dsa_llc
} // namespace gem5
