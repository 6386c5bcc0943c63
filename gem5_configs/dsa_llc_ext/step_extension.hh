// dsa-llc gem5 extension: the decode step a request belongs to, carried on the Request.
#ifndef __DSA_LLC_STEP_EXTENSION_HH__
#define __DSA_LLC_STEP_EXTENSION_HH__

#include <cstdint>
#include <memory>

#include "base/extensible.hh"
#include "mem/request.hh"

namespace gem5
{
namespace dsa_llc
{

// DsaStepGen attaches one (immutable, shared) extension per phase to every request it sends;
// cache-side policy code (TokenPolicyTags' streak) reads the step from the packet's request.
class StepExtension : public Extension<Request, StepExtension>
{
  public:
    explicit StepExtension(uint32_t step) : step(step) {}

    std::unique_ptr<ExtensionBase>
    clone() const override
    {
        return std::make_unique<StepExtension>(*this);
    }

    const uint32_t step;
};

} // namespace dsa_llc
} // namespace gem5

#endif // __DSA_LLC_STEP_EXTENSION_HH__
