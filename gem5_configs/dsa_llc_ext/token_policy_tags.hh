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
#include "enums/LineHint.hh"
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
 *
 * Class-aware insertion (harness/cache/partitions.py), on when any class has a hint other than
 * normal: a line's class follows from its address (KV, indexer keys, weights, other), and every
 * fill outside the token-ranked ways is placed here, bit for bit as the built-in kernel
 * (harness/cache/llc.py, _run) places it. Each block has a recency stamp: an access's is
 * STAMP_BASE + now; a fill inserted as its set's next victim gets STAMP_BASE - (such fills so
 * far), below every access's and the newest lowest; a free way's is -(ways - way). The victim
 * is the candidate way (the class's partition) with the smallest stamp, ties to the lowest way.
 * Under a persisting hint a line persists when a 32-bit hash of its line address is below its
 * class's threshold; a set holds at most persist_cap persisting lines, a persisting fill at the
 * cap evicts the least recent persisting line, any other fill the least recent non-persisting
 * line, and a fill with no way it may take is not cached (a bypass).
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

    // traffic classes as the partitions see them (kv and kv_write share the KV region)
    enum LineClass { KV_LINES, INDEX_LINES, WEIGHT_LINES, OTHER_LINES, N_LINE_CLASSES };

    bool isKv(Addr addr) const { return addr >= kvStart && addr < kvEnd; }
    LineClass classOf(Addr addr) const;
    bool persists(Addr addr, LineClass cls) const;
    int64_t stampOf(const CacheBlk *blk) const;
    CacheBlk* classVictim(const std::vector<ReplaceableEntry*> &entries,
                          bool persisting_fill) const;
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

    const Addr indexStart;
    const Addr indexEnd;
    const Addr weightsStart;
    const Addr weightsEnd;
    LineHint hint[N_LINE_CLASSES];
    uint64_t persistThreshold[N_LINE_CLASSES];
    const unsigned persistCap;
    const unsigned ways;
    const bool classAware;  // a hint other than normal: the tags place non-token fills
    std::vector<int64_t> stamp;       // by block index (class-aware)
    std::vector<uint8_t> persisting;  // by block index (class-aware, persist_cap > 0)
    int64_t low = 0;                  // fills inserted as the next victim so far
    int64_t bipFills = 0;             // fills under the bip hint so far

    int64_t now = 0;
    std::vector<TokenRecord*> blkRecord;  // by block index; nullptr when untracked
    std::unordered_map<uint64_t, TokenRecord> records;  // node-based: stable addresses
    std::unordered_map<uint64_t, TokenRecord*> layerHead;
    std::unordered_map<uint64_t, TokenHistory> history;
    // lines whose miss carried a write (streak's KV lines; every line when class-aware): a
    // refused fill of one is written back from the temporary block
    std::unordered_set<Addr> pendingWrites;
    bool readOpen = false;
    uint64_t readToken = 0;
    bool groupOpen = false;
    int64_t groupStep = 0;
    uint64_t groupLayer = 0;

    struct TokenStats : public statistics::Group
    {
        TokenStats(statistics::Group *parent);

        statistics::Scalar bypasses;
        statistics::Scalar persistingFills;
        statistics::Scalar bypassedWrites;
        statistics::Scalar tokenInvalidations;
        statistics::Scalar demotions;
    } tokenStats;
};

} // namespace dsa_llc
} // namespace gem5

#endif // __DSA_LLC_TOKEN_POLICY_TAGS_HH__
