"""dsa-llc harness: the built-in LLC simulator, gem5 launcher, analysis, sweeps and reports."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dsa-llc")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
