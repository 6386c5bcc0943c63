// dsa-llc gem5 extension: a closed-loop generator that replays the phases of DSA decode steps.
#ifndef __DSA_LLC_DSA_STEP_GEN_HH__
#define __DSA_LLC_DSA_STEP_GEN_HH__

#include <array>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "base/statistics.hh"
#include "dsa_llc_ext/step_extension.hh"
#include "mem/port.hh"
#include "params/DsaStepGen.hh"
#include "sim/clocked_object.hh"
#include "sim/eventq.hh"
#include "sim/system.hh"

namespace gem5
{
namespace dsa_llc
{

/**
 * Replays a phase file (README.md, "Closed-loop decode steps", and harness/gem5/phasefile.py):
 * phases run strictly one after another. Within a phase the requests (64 B lines, ReadReq or
 * WriteReq) go out in file order, at most issue_width per clock cycle and at most
 * max_outstanding sent and not yet answered (a refused request waits for the port's retry).
 * When the phase's last response arrives (t_mem; a phase without requests has t_mem = its
 * start), the generator waits the phase's compute_ticks and starts the next phase at
 * t_mem + compute_ticks.
 *
 * Each traffic class has its own requestor id ("<name>.<class>"), so a cache's per-requestor
 * statistics count each class. Every request carries its phase's decode step (StepExtension).
 *
 * Warm-up phases come first; when the first measured phase starts (after at least one warm-up
 * phase) the generator calls exitSimLoop(warmup_exit_cause) and begins the phase right after
 * that exit, at the same tick, so the config can reset the statistics and continue. After the last phase it writes
 * phases.csv into the output directory and calls exitSimLoop(done_exit_cause).
 */
class DsaStepGen : public ClockedObject
{
  public:
    PARAMS(DsaStepGen);
    DsaStepGen(const Params &p);

    Port &getPort(const std::string &if_name, PortID idx=InvalidPortID) override;
    void init() override;
    void startup() override;

  private:
    class GenPort : public RequestPort
    {
      public:
        GenPort(const std::string &name, DsaStepGen &gen) : RequestPort(name), gen(gen) {}

      protected:
        bool recvTimingResp(PacketPtr pkt) override { return gen.recvTimingResp(pkt); }
        void recvReqRetry() override { gen.recvReqRetry(); }

      private:
        DsaStepGen &gen;
    };

    // One phase's 32-byte header in the phase file (little-endian, no padding).
    struct PhaseHeader
    {
        uint32_t step;
        uint16_t layer;
        uint8_t kind;       // 0 index, 1 gather
        uint8_t measured;   // 0 warm-up, 1 measured
        uint64_t computeTicks;
        uint64_t requests;
        uint64_t reserved;
    };
    static_assert(sizeof(PhaseHeader) == 32, "phase header must be 32 bytes");

    struct PhaseRow
    {
        PhaseHeader header;
        Tick start = 0;
        Tick memDone = 0;
        Tick end = 0;
    };

    static constexpr unsigned NUM_CLASSES = 5;  // harness.core.classes.TRAFFIC_CLASSES
    static constexpr unsigned NUM_KINDS = 2;

    void scanPhaseFile();
    void loadPhase();
    void startPhase();
    void beginPhase();
    void issue();
    void memDone();
    void finish();
    void checkProgress();
    PacketPtr makePacket(uint64_t word);
    void writePhaseTable() const;
    bool recvTimingResp(PacketPtr pkt);
    void recvReqRetry();

    System *system;
    GenPort port;
    const std::string phaseFile;
    const unsigned maxOutstanding;
    const unsigned issueWidth;
    const Tick progressCheck;
    const std::string warmupCause;
    const std::string doneCause;

    std::ifstream in;
    uint64_t numPhases = 0;
    uint64_t numWarmup = 0;
    uint64_t phaseIndex = 0;  // the current phase
    PhaseRow current;
    std::vector<uint64_t> requests;
    std::size_t nextRequest = 0;
    std::size_t answered = 0;
    unsigned outstanding = 0;
    PacketPtr retryPkt = nullptr;
    Tick cycleTick = MaxTick;  // the cycle issueInCycle counts
    unsigned issuedInCycle = 0;
    uint64_t totalResponses = 0;
    uint64_t responsesAtCheck = 0;
    bool measuring = false;
    bool haveMeasuredStep = false;
    uint32_t lastMeasuredStep = 0;
    std::array<RequestorID, NUM_CLASSES> requestorIds;
    std::shared_ptr<StepExtension> stepExtension;
    std::vector<uint8_t> lineData;  // the payload of every packet (contents do not matter)
    std::vector<PhaseRow> table;

    EventFunctionWrapper phaseEvent;
    EventFunctionWrapper beginEvent;
    EventFunctionWrapper issueEvent;
    EventFunctionWrapper progressEvent;

    struct GenStats : public statistics::Group
    {
        GenStats(statistics::Group *parent);

        statistics::Scalar measuredSteps;
        statistics::Scalar measuredTicks;
        statistics::Vector phases;
        statistics::Vector requests;
        statistics::Vector memWaitTicks;
        statistics::Vector computeTicks;
        statistics::Formula ticksPerStep;
    } stats;
};

} // namespace dsa_llc
} // namespace gem5

#endif // __DSA_LLC_DSA_STEP_GEN_HH__
