"""dsa-llc harness: the built-in LLC simulator, gem5 launcher, analysis, sweeps and reports."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dsa-llc")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# Bumped whenever a change to the simulator alters its results: sweep runs made under another
# value are "stale"; a sweep redoes them (keeping the index logs) and reports leave them out.
# 2: srrip/brrip/bip in the LLC's reserved ways see one reference per token read, not per line.
RESULTS_VERSION = 2
