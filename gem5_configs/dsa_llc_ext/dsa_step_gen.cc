// dsa-llc gem5 extension: a closed-loop generator that replays the phases of DSA decode steps.
#include "dsa_llc_ext/dsa_step_gen.hh"

#include <cstdio>
#include <cstring>

#include "base/logging.hh"
#include "base/output.hh"
#include "sim/byteswap.hh"
#include "sim/sim_exit.hh"

namespace gem5
{
namespace dsa_llc
{

namespace
{

constexpr char MAGIC[8] = {'D', 'S', 'A', 'P', 'H', 'A', 'S', '1'};
constexpr uint64_t FILE_HEADER_BYTES = 16;
constexpr unsigned LINE_BYTES = 64;
// request word: bits 0-55 byte address, 56-59 class code, 60-62 zero, 63 write
constexpr uint64_t ADDR_MASK = (uint64_t(1) << 56) - 1;
constexpr uint64_t RESERVED_BITS = uint64_t(7) << 60;
const char *const CLASS_NAMES[] = {"kv", "kv_write", "index", "weights", "other"};
const char *const KIND_NAMES[] = {"index", "gather"};

} // anonymous namespace

DsaStepGen::DsaStepGen(const Params &p)
    : ClockedObject(p), system(p.system), port(name() + ".port", *this),
      phaseFile(p.phase_file), maxOutstanding(p.max_outstanding), issueWidth(p.issue_width),
      progressCheck(p.progress_check), warmupCause(p.warmup_exit_cause),
      doneCause(p.done_exit_cause), lineData(LINE_BYTES, 0),
      phaseEvent([this]{ startPhase(); }, name() + ".phaseEvent"),
      // after an exit event of the same tick, so the statistics are reset first
      beginEvent([this]{ beginPhase(); }, name() + ".beginEvent", false,
                 Event::Sim_Exit_Pri + 1),
      issueEvent([this]{ issue(); }, name() + ".issueEvent"),
      progressEvent([this]{ checkProgress(); }, name() + ".progressEvent"),
      stats(this)
{
    fatal_if(maxOutstanding == 0, "%s: max_outstanding must be at least 1", name());
    fatal_if(issueWidth == 0, "%s: issue_width must be at least 1", name());
    static_assert(sizeof(CLASS_NAMES) / sizeof(CLASS_NAMES[0]) == NUM_CLASSES);
    for (unsigned c = 0; c < NUM_CLASSES; ++c)
        requestorIds[c] = system->getRequestorId(this, CLASS_NAMES[c]);
}

Port &
DsaStepGen::getPort(const std::string &if_name, PortID idx)
{
    if (if_name == "port")
        return port;
    return ClockedObject::getPort(if_name, idx);
}

void
DsaStepGen::init()
{
    ClockedObject::init();
    fatal_if(!port.isConnected(), "%s: port is not connected", name());
    fatal_if(system->cacheLineSize() != LINE_BYTES, "%s: phase files address %u-byte lines, "
             "the system's line is %u bytes", name(), LINE_BYTES, system->cacheLineSize());
    scanPhaseFile();
}

void
DsaStepGen::startup()
{
    schedule(phaseEvent, curTick());
    if (progressCheck > 0)
        schedule(progressEvent, curTick() + progressCheck);
}

void
DsaStepGen::scanPhaseFile()
{
    in.open(phaseFile, std::ios::binary);
    fatal_if(!in, "%s: cannot open phase file %s", name(), phaseFile);
    in.seekg(0, std::ios::end);
    const uint64_t size = in.tellg();
    in.seekg(0);
    char magic[sizeof(MAGIC)];
    uint64_t count = 0;
    in.read(magic, sizeof(magic));
    in.read(reinterpret_cast<char *>(&count), sizeof(count));
    fatal_if(size < FILE_HEADER_BYTES || std::memcmp(magic, MAGIC, sizeof(MAGIC)) != 0,
             "%s: %s is not a phase file (no DSAPHAS1 header)", name(), phaseFile);
    numPhases = letoh(count);
    fatal_if(numPhases == 0, "%s: phase file %s has no phases", name(), phaseFile);
    uint64_t pos = FILE_HEADER_BYTES;
    bool seen_measured = false;
    for (uint64_t i = 0; i < numPhases; ++i) {
        PhaseHeader h;
        fatal_if(size - pos < sizeof(h), "%s: phase file %s is truncated (phase %llu)",
                 name(), phaseFile, i);
        in.read(reinterpret_cast<char *>(&h), sizeof(h));
        const uint64_t n = letoh(h.requests);
        fatal_if(h.kind > 1 || h.measured > 1 || h.reserved != 0,
                 "%s: phase file %s: phase %llu has a bad header (kind %u, measured %u)",
                 name(), phaseFile, i, h.kind, h.measured);
        fatal_if(!h.measured && seen_measured, "%s: phase file %s: warm-up phase %llu follows a "
                 "measured phase (warm-up phases come first)", name(), phaseFile, i);
        seen_measured = seen_measured || h.measured;
        numWarmup += !h.measured;
        pos += sizeof(h);
        fatal_if(n > (size - pos) / sizeof(uint64_t), "%s: phase file %s is truncated "
                 "(phase %llu)", name(), phaseFile, i);
        pos += n * sizeof(uint64_t);
        in.seekg(pos);
    }
    fatal_if(pos != size, "%s: phase file %s has %llu bytes after its last phase", name(),
             phaseFile, size - pos);
    in.clear();
    in.seekg(FILE_HEADER_BYTES);
}

void
DsaStepGen::loadPhase()
{
    PhaseHeader h;
    in.read(reinterpret_cast<char *>(&h), sizeof(h));
    h.step = letoh(h.step);
    h.layer = letoh(h.layer);
    h.computeTicks = letoh(h.computeTicks);
    h.requests = letoh(h.requests);
    requests.resize(h.requests);
    in.read(reinterpret_cast<char *>(requests.data()), h.requests * sizeof(uint64_t));
    fatal_if(!in, "%s: cannot read phase %llu of %s", name(), phaseIndex, phaseFile);
    for (uint64_t &word : requests) {
        word = letoh(word);
        const Addr addr = word & ADDR_MASK;
        const unsigned cls = (word >> 56) & 0xf;
        fatal_if(cls >= NUM_CLASSES || (word & RESERVED_BITS) || addr % LINE_BYTES,
                 "%s: phase %llu has a bad request word %#llx (%s)", name(), phaseIndex, word,
                 phaseFile);
        fatal_if(!system->isMemAddr(addr), "%s: phase %llu addresses %#llx, outside the "
                 "memory (raise --mem-size) (%s)", name(), phaseIndex, addr, phaseFile);
    }
    current = PhaseRow();
    current.header = h;
    stepExtension = std::make_shared<StepExtension>(h.step);
}

void
DsaStepGen::startPhase()
{
    if (phaseIndex == numPhases) {
        finish();
        return;
    }
    loadPhase();
    if (current.header.measured && !measuring && numWarmup > 0) {
        // begin once the config has reset the statistics (beginEvent runs after the exit)
        exitSimLoop(warmupCause);
        schedule(beginEvent, curTick());
    } else {
        beginPhase();
    }
}

void
DsaStepGen::beginPhase()
{
    current.start = curTick();
    nextRequest = answered = 0;
    if (current.header.measured) {
        measuring = true;
        if (!haveMeasuredStep || current.header.step != lastMeasuredStep)
            ++stats.measuredSteps;
        haveMeasuredStep = true;
        lastMeasuredStep = current.header.step;
    }
    if (requests.empty())
        memDone();
    else
        schedule(issueEvent, clockEdge());
}

PacketPtr
DsaStepGen::makePacket(uint64_t word)
{
    auto req = std::make_shared<Request>(word & ADDR_MASK, LINE_BYTES, 0,
                                         requestorIds[(word >> 56) & 0xf]);
    req->setExtension(stepExtension);
    PacketPtr pkt = new Packet(req, (word >> 63) ? MemCmd::WriteReq : MemCmd::ReadReq);
    pkt->dataStatic(lineData.data());
    return pkt;
}

void
DsaStepGen::issue()
{
    if (curTick() != cycleTick) {
        cycleTick = curTick();
        issuedInCycle = 0;
    }
    while (issuedInCycle < issueWidth && nextRequest < requests.size() &&
           outstanding < maxOutstanding) {
        PacketPtr pkt = retryPkt != nullptr ? retryPkt : makePacket(requests[nextRequest]);
        retryPkt = nullptr;
        if (!port.sendTimingReq(pkt)) {
            retryPkt = pkt;  // resent when the port calls recvReqRetry
            return;
        }
        ++nextRequest;
        ++outstanding;
        ++issuedInCycle;
    }
    // out of issue slots this cycle: go on next cycle; out of credits: a response resumes
    if (nextRequest < requests.size() && outstanding < maxOutstanding)
        schedule(issueEvent, clockEdge(Cycles(1)));
}

void
DsaStepGen::recvReqRetry()
{
    panic_if(retryPkt == nullptr, "%s: retry without a refused request", name());
    if (!issueEvent.scheduled())
        schedule(issueEvent, clockEdge());
}

bool
DsaStepGen::recvTimingResp(PacketPtr pkt)
{
    panic_if(outstanding == 0, "%s: response without an outstanding request", name());
    delete pkt;
    --outstanding;
    ++answered;
    ++totalResponses;
    if (answered == requests.size())
        memDone();
    else if (nextRequest < requests.size() && retryPkt == nullptr && !issueEvent.scheduled())
        schedule(issueEvent, clockEdge());
    return true;
}

void
DsaStepGen::memDone()
{
    const PhaseHeader &h = current.header;
    current.memDone = curTick();
    current.end = curTick() + h.computeTicks;
    if (h.measured) {
        stats.measuredTicks += current.end - current.start;
        stats.phases[h.kind]++;
        stats.requests[h.kind] += h.requests;
        stats.memWaitTicks[h.kind] += current.memDone - current.start;
        stats.computeTicks[h.kind] += h.computeTicks;
    }
    table.push_back(current);
    ++phaseIndex;
    schedule(phaseEvent, current.end);
}

void
DsaStepGen::finish()
{
    writePhaseTable();
    if (progressEvent.scheduled())
        deschedule(progressEvent);
    exitSimLoop(doneCause);
}

void
DsaStepGen::checkProgress()
{
    fatal_if((outstanding > 0 || retryPkt != nullptr) && totalResponses == responsesAtCheck,
             "%s: no response for %llu ticks with %u requests outstanding (phase %llu)",
             name(), progressCheck, outstanding, phaseIndex);
    responsesAtCheck = totalResponses;
    schedule(progressEvent, curTick() + progressCheck);
}

void
DsaStepGen::writePhaseTable() const
{
    const std::string path = simout.resolve("phases.csv");
    const std::string tmp = path + ".tmp";
    std::FILE *f = std::fopen(tmp.c_str(), "w");
    fatal_if(f == nullptr, "%s: cannot write %s", name(), tmp);
    std::fprintf(f, "phase,step,layer,kind,measured,requests,start_tick,mem_done_tick,"
                 "end_tick\n");
    for (std::size_t i = 0; i < table.size(); ++i) {
        const PhaseRow &r = table[i];
        std::fprintf(f, "%zu,%u,%u,%s,%u,%llu,%llu,%llu,%llu\n", i, r.header.step,
                     unsigned(r.header.layer), KIND_NAMES[r.header.kind],
                     unsigned(r.header.measured), (unsigned long long)r.header.requests,
                     (unsigned long long)r.start, (unsigned long long)r.memDone,
                     (unsigned long long)r.end);
    }
    const bool ok = std::fflush(f) == 0 && !std::ferror(f);
    std::fclose(f);
    fatal_if(!ok || std::rename(tmp.c_str(), path.c_str()) != 0, "%s: cannot write %s",
             name(), path);
}

DsaStepGen::GenStats::GenStats(statistics::Group *parent)
    : statistics::Group(parent),
      ADD_STAT(measuredSteps, statistics::units::Count::get(),
               "decode steps in the measured phases"),
      ADD_STAT(measuredTicks, statistics::units::Tick::get(),
               "ticks from the first measured phase's start to the last phase's end"),
      ADD_STAT(phases, statistics::units::Count::get(), "measured phases per kind"),
      ADD_STAT(requests, statistics::units::Count::get(),
               "line requests of the measured phases per kind"),
      ADD_STAT(memWaitTicks, statistics::units::Tick::get(),
               "ticks from a measured phase's start to its last response, per kind"),
      ADD_STAT(computeTicks, statistics::units::Tick::get(),
               "compute delay of the measured phases, per kind"),
      ADD_STAT(ticksPerStep, statistics::units::Rate<
                   statistics::units::Tick, statistics::units::Count>::get(),
               "measured ticks per measured decode step", measuredTicks / measuredSteps)
{
    for (statistics::Vector *v : {&phases, &requests, &memWaitTicks, &computeTicks}) {
        v->init(NUM_KINDS);
        for (unsigned k = 0; k < NUM_KINDS; ++k)
            v->subname(k, KIND_NAMES[k]);
    }
}

} // namespace dsa_llc
} // namespace gem5
