"""dsa-llc harness: the built-in LLC simulator, gem5 launcher, analysis, sweeps and reports."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dsa-llc")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# Bumped whenever a change to the built-in simulator alters its results: built-in sweep runs made
# under another value are "stale"; a sweep redoes them (keeping the index logs) and reports leave
# them out (gem5 runs are not affected).
# 2: srrip/brrip/bip in the LLC's reserved ways see one reference per token read, not per line.
RESULTS_VERSION = 2


def is_stale(config: dict, provenance: dict) -> bool:
    """Was this finished run made by a built-in simulator whose results have changed since?"""
    return config.get("backend", "builtin") == "builtin" and provenance.get("results_version") != RESULTS_VERSION
