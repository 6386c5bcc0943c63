"""dsa-llc harness: the study side of the project (see the README, "Architecture").

Layers, each importing only those below it: ``core`` (foundation), ``cache`` (the built-in LLC
model and policies), ``gem5`` and ``analysis``, ``study`` (sweeps, results, report), and the
``cli`` on top. ``trace_gen`` (decoding and streams) sits beside ``cache``, on ``core``."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dsa-llc")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
