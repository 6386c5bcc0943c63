"""The built-in cache model: the set-associative LLC with its KV reservation (``llc``), the
reservation policies (``policies/``, one module each), the fully associative token caches and
bounds (``tokencache``), the timing model (``timing``) and the run driver (``simulate``), with
the numba data structures they share (``dlist``, ``heap``, ``hashtab``); and the host tier
(``tier``: KV in host memory, hot buffers in HBM), a device model beside the LLC's."""

# Bumped whenever a change to the built-in simulator alters its results: built-in sweep runs made
# under another value are "stale"; a sweep redoes them (keeping the index logs) and reports leave
# them out (gem5 runs are not affected; see harness.study.runs.is_stale).
# 2: srrip/brrip/bip in the LLC's reserved ways see one reference per token read, not per line.
# 3: streams batch each layer's index and gather phases (weights at the end of the gather phase);
#    results give the decode-step time of the closed-loop phase model.
# 4: the closed-loop model's latency_factor, and both it and bw_efficiency fitted to gem5 per
#    platform (harness/cache/calibration.json).
# 5: a phase's memory and compute overlap (the platform's `overlap`, 1: the roofline); weights are
#    what one device of the geometry's cited deployment reads per step (MoE: the routed experts
#    its batch activates).
# 6: MSHR merging: misses to a line whose fill is still in flight in its phase are counted
#    (mshr_merged) and read no memory; the step time's bandwidth and occupancy terms take memory
#    reads (misses - merged).
# 7: a set-sampled run's weight scans that are simulated line by line give the sampled sets' lines
#    only (before, every line: the weights' counts mixed sampled and whole sets).
RESULTS_VERSION = 7
