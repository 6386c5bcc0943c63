// dsa-llc gem5 extension: set-associative tags whose reserved (KV) ways follow a token policy.
#include "dsa_llc_ext/token_policy_tags.hh"

#include "base/logging.hh"
#include "dsa_llc_ext/step_extension.hh"

namespace gem5
{
namespace dsa_llc
{

namespace
{

// Keys that combine a streak with an access time: streak * SEQ + time (SEQ of
// harness/cache/policies/ways.py).
constexpr int64_t SEQ = int64_t(1) << 40;

int64_t
streakKey(int64_t streak, int64_t time)
{
    return streak * SEQ + time;
}

// Class-aware insertion, as harness/cache/llc.py: an access's stamp is STAMP_BASE + its time, a
// next-victim fill's STAMP_BASE - (such fills so far); bip inserts every BIMODAL_EVERY-th fill
// as the most recent (harness/cache/policies/bip.py).
constexpr int64_t STAMP_BASE = int64_t(1) << 50;
constexpr int64_t BIMODAL_EVERY = 32;

// A 32-bit hash of a line address (harness/cache/llc.py, _mix32): which lines of a class a
// persisting hint marks.
uint64_t
mix32(uint64_t line)
{
    uint64_t x = (line ^ (line >> 32)) & 0xFFFFFFFFu;
    x = (((x >> 16) ^ x) * 0x45D9F3Bu) & 0xFFFFFFFFu;
    x = (((x >> 16) ^ x) * 0x45D9F3Bu) & 0xFFFFFFFFu;
    return (x >> 16) ^ x;
}

} // anonymous namespace

TokenPolicyTags::TokenPolicyTags(const Params &p)
    : BaseSetAssoc(p), policy(p.kv_policy), tracking(p.kv_policy != KvWayPolicy::lru),
      wholeTokenEviction(p.whole_token_eviction), kvStart(p.kv_start), kvEnd(p.kv_end),
      tokenStride(p.token_stride), tokensPerLayer(p.tokens_per_layer),
      indexStart(p.index_start), indexEnd(p.index_end), weightsStart(p.weights_start),
      weightsEnd(p.weights_end),
      hint{p.kv_hint, p.index_hint, p.weights_hint, LineHint::normal},
      persistThreshold{p.kv_persist_threshold, p.index_persist_threshold,
                       p.weights_persist_threshold, 0},
      persistCap(p.persist_cap), ways(p.assoc),
      classAware(p.kv_hint != LineHint::normal || p.index_hint != LineHint::normal ||
                 p.weights_hint != LineHint::normal),
      tokenStats(this)
{
    bool persistingHint = false;
    for (LineHint h : hint)
        persistingHint = persistingHint || h == LineHint::persisting;
    fatal_if(persistingHint != (persistCap > 0),
             "%s: a persisting hint needs persist_cap > 0, and persist_cap needs one", name());
    fatal_if(tracking && hint[KV_LINES] != LineHint::normal,
             "%s: KV lines in token-ranked ways take no insertion hint", name());
    if (!tracking)
        return;
    fatal_if(kvEnd <= kvStart, "%s: empty KV region", name());
    fatal_if(tokenStride == 0 || tokenStride % blkSize != 0,
             "%s: token_stride must be a positive multiple of the line size", name());
    fatal_if(!partitionManager,
             "%s: a token policy needs the KV partition (a partitioning_manager)", name());
    fatal_if(policy == KvWayPolicy::streak && tokensPerLayer == 0,
             "%s: streak needs tokens_per_layer", name());
}

void
TokenPolicyTags::tagsInit()
{
    BaseSetAssoc::tagsInit();
    blkRecord.assign(numBlocks, nullptr);
    if (classAware) {
        stamp.assign(numBlocks, 0);
        persisting.assign(persistCap > 0 ? numBlocks : 0, 0);
    }
}

TokenPolicyTags::LineClass
TokenPolicyTags::classOf(Addr addr) const
{
    if (addr >= kvStart && addr < kvEnd)
        return KV_LINES;
    if (addr >= indexStart && addr < indexEnd)
        return INDEX_LINES;
    if (addr >= weightsStart && addr < weightsEnd)
        return WEIGHT_LINES;
    return OTHER_LINES;
}

bool
TokenPolicyTags::persists(Addr addr, LineClass cls) const
{
    return hint[cls] == LineHint::persisting &&
        mix32(addr / blkSize) < persistThreshold[cls];
}

int64_t
TokenPolicyTags::stampOf(const CacheBlk *blk) const
{
    // a free way is below every line, the lowest way lowest
    return blk->isValid() ? stamp[indexOf(blk)] : -int64_t(ways - blk->getWay());
}

CacheBlk*
TokenPolicyTags::classVictim(const std::vector<ReplaceableEntry*> &entries,
                             bool persisting_fill) const
{
    // harness/cache/llc.py: the region's least recent way (_run), or with persisting lines
    // capped, _persisting_victim's choice; nullptr when there is no way the fill may take
    CacheBlk *other = nullptr, *kept = nullptr;
    int64_t other_t = 0, kept_t = 0;
    unsigned held = 0;
    for (ReplaceableEntry *entry : entries) {
        CacheBlk *blk = static_cast<CacheBlk*>(entry);
        const int64_t t = stampOf(blk);
        if (persistCap > 0 && blk->isValid() && persisting[indexOf(blk)]) {
            ++held;
            if (kept == nullptr || t < kept_t) {
                kept = blk;
                kept_t = t;
            }
        } else if (other == nullptr || t < other_t) {
            other = blk;
            other_t = t;
        }
    }
    return persisting_fill && held >= persistCap ? kept : other;
}

int64_t
TokenPolicyTags::stepOf(const PacketPtr pkt) const
{
    auto ext = pkt->req->getExtension<StepExtension>();
    fatal_if(!ext, "%s: streak needs the decode step of every request (send them with "
             "DsaStepGen)", name());
    return ext->step;
}

CacheBlk*
TokenPolicyTags::accessBlock(const PacketPtr pkt, Cycles &lat)
{
    ++now;
    const Addr addr = pkt->getAddr();
    const bool kv = tracking && isKv(addr);
    if (kv && pkt->isRead() && !pkt->isWrite()) {
        const uint64_t token = tokenOf(addr);
        if (!(readOpen && readToken == token)) {  // a token read starts
            readOpen = true;
            readToken = token;
            if (policy == KvWayPolicy::streak)
                streakRead(token, stepOf(pkt));
        }
    } else {
        readOpen = false;
    }

    CacheBlk *blk = BaseSetAssoc::accessBlock(pkt, lat);
    if (blk != nullptr) {
        if (classAware)
            stamp[indexOf(blk)] = STAMP_BASE + now;
        TokenRecord *rec = tracking ? blkRecord[indexOf(blk)] : nullptr;
        if (rec != nullptr) {
            rec->time = now;
            if (policy == KvWayPolicy::token_lru)
                rec->key = now;
        }
    } else if (pkt->isWrite() && (classAware || (kv && policy == KvWayPolicy::streak))) {
        pendingWrites.insert(pkt->getBlockAddr(blkSize));
    }
    return blk;
}

void
TokenPolicyTags::streakRead(uint64_t token, int64_t step)
{
    const uint64_t layer = token / tokensPerLayer;
    if (!groupOpen || step != groupStep || layer != groupLayer) {
        if (groupOpen)
            demote(groupStep, groupLayer);
        groupOpen = true;
        groupStep = step;
        groupLayer = layer;
    }
    TokenHistory &h = history[token];
    h.streak = h.lastStep == step - 1 ? h.streak + 1 : 1;
    h.lastStep = step;
    auto it = records.find(token);
    if (it != records.end()) {
        TokenRecord &rec = it->second;
        rec.streak = h.streak;
        rec.lastStep = step;
        rec.key = streakKey(h.streak, now);
    }
}

void
TokenPolicyTags::demote(int64_t step, uint64_t layer)
{
    auto head = layerHead.find(layer);
    if (head == layerHead.end())
        return;
    for (TokenRecord *rec = head->second; rec != nullptr; rec = rec->layerNext) {
        if (rec->lastStep < step && rec->streak > 0) {
            rec->streak = 0;
            rec->key = rec->time;
            ++tokenStats.demotions;
        }
    }
}

CacheBlk*
TokenPolicyTags::findVictim(Addr addr, const bool is_secure, const std::size_t size,
                            std::vector<CacheBlk*>& evict_blks, const uint64_t partition_id)
{
    if ((!tracking || !isKv(addr)) && !classAware)
        return BaseSetAssoc::findVictim(addr, is_secure, size, evict_blks, partition_id);

    if (!tracking || !isKv(addr)) {  // class-aware: line recency, hints, persisting cap
        std::vector<ReplaceableEntry*> entries = indexingPolicy->getPossibleEntries(addr);
        if (partitionManager)
            partitionManager->filterByPartition(entries, partition_id);
        fatal_if(entries.empty(), "%s: no way for address %#x", name(), addr);
        const bool write = pendingWrites.erase(addr & ~Addr(blkSize - 1)) > 0;
        CacheBlk *victim = classVictim(entries, persists(addr, classOf(addr)));
        if (victim == nullptr) {  // every way holds a persisting line it may not evict
            ++tokenStats.bypasses;
            if (write)
                ++tokenStats.bypassedWrites;
            return nullptr;
        }
        evict_blks.push_back(victim);
        return victim;
    }

    std::vector<ReplaceableEntry*> entries = indexingPolicy->getPossibleEntries(addr);
    partitionManager->filterByPartition(entries, partition_id);  // the reserved ways, in order
    fatal_if(entries.empty(), "%s: no reserved way for KV address %#x", name(), addr);

    const Addr blk_addr = addr & ~Addr(blkSize - 1);
    const bool write = pendingWrites.erase(blk_addr) > 0;
    CacheBlk *victim = nullptr;
    TokenRecord *victim_rec = nullptr;
    for (ReplaceableEntry *entry : entries) {
        CacheBlk *blk = static_cast<CacheBlk*>(entry);
        if (!blk->isValid()) {  // a free way: no eviction, no admission test
            evict_blks.push_back(blk);
            return blk;
        }
        TokenRecord *rec = blkRecord[indexOf(blk)];
        panic_if(rec == nullptr, "%s: a reserved way holds a line without a token", name());
        if (victim_rec == nullptr || rec->key < victim_rec->key) {
            victim = blk;
            victim_rec = rec;
        }
    }

    if (policy == KvWayPolicy::streak) {
        auto h = history.find(tokenOf(addr));
        const int64_t streak = h == history.end() ? 0 : h->second.streak;
        if (streak <= victim_rec->key / SEQ) {  // not admitted: the fill bypasses the ways
            ++tokenStats.bypasses;
            if (write)
                ++tokenStats.bypassedWrites;
            return nullptr;
        }
    }

    evict_blks.push_back(victim);
    if (wholeTokenEviction) {
        // BaseCache::handleEvictions evicts (and writes back) every listed block. It would
        // refuse a block with an outstanding MSHR, which only an upgrade of a non-writable
        // line has; fills from memory are always writable here.
        const Addr base = kvStart + victim_rec->token * tokenStride;
        for (Addr a = base; a < base + tokenStride; a += blkSize) {
            CacheBlk *blk = findBlock(a, victim->isSecure());
            if (blk != nullptr && blk != victim) {
                evict_blks.push_back(blk);
                ++tokenStats.tokenInvalidations;
            }
        }
    }
    return victim;
}

void
TokenPolicyTags::insertBlock(const PacketPtr pkt, CacheBlk *blk)
{
    BaseSetAssoc::insertBlock(pkt, blk);
    const Addr addr = pkt->getAddr();
    if (classAware) {  // harness/cache/llc.py, _run: the fill's stamp and persisting bit
        pendingWrites.erase(pkt->getBlockAddr(blkSize));
        const std::size_t i = indexOf(blk);
        const LineHint h = hint[classOf(addr)];
        const bool keep = persists(addr, classOf(addr));
        bool next_victim = h == LineHint::streaming || (h == LineHint::persisting && !keep);
        if (h == LineHint::bip) {
            next_victim = bipFills % BIMODAL_EVERY != BIMODAL_EVERY - 1;
            ++bipFills;
        }
        stamp[i] = next_victim ? STAMP_BASE - ++low : STAMP_BASE + now;
        if (persistCap > 0) {
            persisting[i] = keep;
            if (keep)
                ++tokenStats.persistingFills;
        }
    }
    if (!tracking || !isKv(addr))
        return;
    pendingWrites.erase(pkt->getBlockAddr(blkSize));
    const uint64_t token = tokenOf(addr);
    auto [it, fresh] = records.try_emplace(token);
    TokenRecord &rec = it->second;
    if (fresh) {
        rec.token = token;
        if (policy == KvWayPolicy::streak) {
            auto h = history.find(token);
            if (h != history.end()) {
                rec.streak = h->second.streak;
                rec.lastStep = h->second.lastStep;
            }
            rec.key = streakKey(rec.streak, now);
            TokenRecord *&head = layerHead[token / tokensPerLayer];
            rec.layerNext = head;
            if (head != nullptr)
                head->layerPrev = &rec;
            head = &rec;
        } else {
            rec.key = now;
        }
    } else if (policy == KvWayPolicy::token_lru) {
        rec.key = now;
    }
    rec.time = now;
    ++rec.resident;
    blkRecord[indexOf(blk)] = &rec;
}

void
TokenPolicyTags::invalidate(CacheBlk *blk)
{
    if (!persisting.empty())
        persisting[indexOf(blk)] = 0;
    if (tracking) {
        TokenRecord *&rec = blkRecord[indexOf(blk)];
        if (rec != nullptr) {
            if (--rec->resident == 0)
                release(rec);
            rec = nullptr;
        }
    }
    BaseSetAssoc::invalidate(blk);
}

void
TokenPolicyTags::release(TokenRecord *rec)
{
    if (policy == KvWayPolicy::streak) {
        if (rec->layerPrev != nullptr)
            rec->layerPrev->layerNext = rec->layerNext;
        else
            layerHead[rec->token / tokensPerLayer] = rec->layerNext;
        if (rec->layerNext != nullptr)
            rec->layerNext->layerPrev = rec->layerPrev;
    }
    records.erase(rec->token);
}

void
TokenPolicyTags::moveBlock(CacheBlk *src_blk, CacheBlk *dest_blk)
{
    panic_if(tracking || classAware, "%s: blocks move only in compressed caches, which token "
             "policies and class-aware insertion do not support", name());
    BaseSetAssoc::moveBlock(src_blk, dest_blk);
}

TokenPolicyTags::TokenStats::TokenStats(statistics::Group *parent)
    : statistics::Group(parent),
      ADD_STAT(bypasses, statistics::units::Count::get(),
               "misses not cached (streak: not stronger than the victim's token; persisting: "
               "no way the fill may take)"),
      ADD_STAT(persistingFills, statistics::units::Count::get(),
               "fills of persisting lines (a persisting hint's share of its class)"),
      ADD_STAT(bypassedWrites, statistics::units::Count::get(),
               "bypasses that carried a write (written back from the temporary block)"),
      ADD_STAT(tokenInvalidations, statistics::units::Count::get(),
               "lines evicted with their token's victim line (whole-token eviction)"),
      ADD_STAT(demotions, statistics::units::Count::get(),
               "cached tokens dropped to streak 0 when their layer-step did not read them")
{
}

} // namespace dsa_llc
} // namespace gem5
