// dsa-llc gem5 extension: set-associative tags whose reserved (KV) ways follow a token policy,
// exactly as the built-in model (harness/cache/llc.py, harness/cache/policies/) defines it.
#ifndef __DSA_LLC_TOKEN_POLICY_TAGS_HH__
#define __DSA_LLC_TOKEN_POLICY_TAGS_HH__

#include <cstdint>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/statistics.hh"
#include "enums/KvWayPolicy.hh"
#include "mem/cache/tags/base_set_assoc.hh"
#include "params/TokenPolicyTags.hh"

namespace gem5
{
namespace dsa_llc
{

/**
 * BaseSetAssoc whose KV lines (addresses in [kv_start, kv_end), which the partition manager
 * confines to the reserved ways) are ranked per token, a token being a token_stride-byte
 * slice of the KV region. Shared ways, and the reserved ways under KvWayPolicy::lru, keep the
 * configured replacement policy.
 *
 * Time is an access counter, one tick per access the cache sees (hit or miss), as the
 * built-in model's ``now``. A token record exists while the token has resident lines; it holds
 * the time of the token's latest access (fill or hit of one of its lines) and a victim key:
 *  - token_lru: key = that time;
 *  - streak: key = streak * 2^40 + time. The streak history covers every token read (a run of
 *    consecutive reads of one token's lines; the first line counts): (last read step, streak),
 *    streak + 1 when read in the step after its last read, else 1. When the token reads move on
 *    to another (step, layer), the cached tokens of the finished layer that step did not read
 *    drop to streak 0 (key = their latest access time). A miss whose token's streak is not
 *    above the victim's is not cached (a bypass: the fill uses the cache's temporary block).
 * The victim is a free reserved way if any (lowest first), else the reserved line whose token
 * has the smallest key (ties: lowest way). With whole-token eviction every other resident line
 * of the victim's token is evicted with it (dirty ones are written back).
 */
class TokenPolicyTags : public BaseSetAssoc
{
  public:
    PARAMS(TokenPolicyTags);
    TokenPolicyTags(const Params &p);

    void tagsInit() override;
    CacheBlk* accessBlock(const PacketPtr pkt, Cycles &lat) override;
    CacheBlk* findVictim(Addr addr, const bool is_secure, const std::size_t size,
                         std::vector<CacheBlk*>& evict_blks,
                         const uint64_t partition_id=0) override;
    void insertBlock(const PacketPtr pkt, CacheBlk *blk) override;
    void invalidate(CacheBlk *blk) override;
    void moveBlock(CacheBlk *src_blk, CacheBlk *dest_blk) override;

  private:
    struct TokenRecord
    {
        uint64_t token = 0;
        int64_t time = 0;       // latest access to one of its resident lines
        int64_t key = 0;        // victim key: the smallest goes first
        int64_t streak = 0;     // streak: as of its latest read (0 once demoted)
        int64_t lastStep = -1;  // streak: step of its latest read
        unsigned resident = 0;  // resident lines
        TokenRecord *layerPrev = nullptr;  // streak: the cached tokens of its layer
        TokenRecord *layerNext = nullptr;
    };

    struct TokenHistory
    {
        int64_t lastStep = -1;
        int64_t streak = 0;
    };

    bool isKv(Addr addr) const { return addr >= kvStart && addr < kvEnd; }
    uint64_t tokenOf(Addr addr) const { return (addr - kvStart) / tokenStride; }
    std::size_t indexOf(const CacheBlk *blk) const { return blk - blks.data(); }
    int64_t stepOf(const PacketPtr pkt) const;
    void streakRead(uint64_t token, int64_t step);
    void demote(int64_t step, uint64_t layer);
    void release(TokenRecord *rec);

    const KvWayPolicy policy;
    const bool tracking;  // a token policy in the reserved ways
    const bool wholeTokenEviction;
    const Addr kvStart;
    const Addr kvEnd;
    const Addr tokenStride;
    const uint64_t tokensPerLayer;

    int64_t now = 0;
    std::vector<TokenRecord*> blkRecord;  // by block index; nullptr when untracked
    std::unordered_map<uint64_t, TokenRecord> records;  // node-based: stable addresses
    std::unordered_map<uint64_t, TokenRecord*> layerHead;
    std::unordered_map<uint64_t, TokenHistory> history;
    std::unordered_set<Addr> pendingWrites;  // KV lines whose miss carried a write
    bool readOpen = false;
    uint64_t readToken = 0;
    bool groupOpen = false;
    int64_t groupStep = 0;
    uint64_t groupLayer = 0;

    struct TokenStats : public statistics::Group
    {
        TokenStats(statistics::Group *parent);

        statistics::Scalar bypasses;
        statistics::Scalar bypassedWrites;
        statistics::Scalar tokenInvalidations;
        statistics::Scalar demotions;
    } tokenStats;
};

} // namespace dsa_llc
} // namespace gem5

#endif // __DSA_LLC_TOKEN_POLICY_TAGS_HH__
