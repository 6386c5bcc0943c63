// dsa-llc gem5 extension: LRU by token recency (DESIGN.md, "token-lru").
#include "dsa_llc_ext/token_lru_rp.hh"

#include <cassert>

#include "base/logging.hh"
#include "sim/cur_tick.hh"

namespace gem5
{
namespace dsa_llc
{

TokenLRU::TokenLRU(const Params &p)
    : replacement_policy::Base(p), kvStart(p.kv_start), kvEnd(p.kv_end),
      tokenStride(p.token_stride)
{
    fatal_if(tokenStride == 0, "TokenLRURP: token_stride must be positive");
}

uint64_t
TokenLRU::tokenOf(Addr addr) const
{
    if (addr >= kvStart && addr < kvEnd)
        return (addr - kvStart) / tokenStride;
    // a line outside the KV region is a token of its own
    return (uint64_t(1) << 63) | (addr >> 6);
}

void
TokenLRU::invalidate(const std::shared_ptr<ReplacementData>& replacement_data)
{
    auto data = std::static_pointer_cast<TokenReplData>(replacement_data);
    if (!data->valid)
        return;
    data->valid = false;
    auto it = tokens.find(data->token);
    assert(it != tokens.end());
    if (--it->second.resident == 0)
        tokens.erase(it);
}

void
TokenLRU::touch(const std::shared_ptr<ReplacementData>& replacement_data,
                const PacketPtr pkt)
{
    auto data = std::static_pointer_cast<TokenReplData>(replacement_data);
    tokens[data->token].lastTouch = curTick();
}

void
TokenLRU::touch(const std::shared_ptr<ReplacementData>& replacement_data) const
{
    auto data = std::static_pointer_cast<TokenReplData>(replacement_data);
    tokens[data->token].lastTouch = curTick();
}

void
TokenLRU::reset(const std::shared_ptr<ReplacementData>& replacement_data,
                const PacketPtr pkt)
{
    auto data = std::static_pointer_cast<TokenReplData>(replacement_data);
    panic_if(data->valid, "TokenLRURP: reset of a block that was not invalidated");
    data->token = tokenOf(pkt->getAddr());
    data->valid = true;
    TokenState &t = tokens[data->token];
    t.lastTouch = curTick();
    t.resident++;
}

void
TokenLRU::reset(const std::shared_ptr<ReplacementData>& replacement_data) const
{
    panic("TokenLRURP needs the packet to know a block's token");
}

ReplaceableEntry*
TokenLRU::getVictim(const ReplacementCandidates& candidates) const
{
    assert(candidates.size() > 0);
    ReplaceableEntry* victim = nullptr;
    Tick oldest = MaxTick;
    for (const auto& candidate : candidates) {
        auto data = std::static_pointer_cast<TokenReplData>(candidate->replacementData);
        if (!data->valid)
            return candidate;  // invalid ways first, in way order
        const Tick t = tokens.at(data->token).lastTouch;
        if (victim == nullptr || t < oldest) {
            victim = candidate;
            oldest = t;
        }
    }
    return victim;
}

std::shared_ptr<ReplacementData>
TokenLRU::instantiateEntry()
{
    return std::shared_ptr<ReplacementData>(new TokenReplData());
}

} // namespace dsa_llc
} // namespace gem5
