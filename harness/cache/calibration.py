"""What gem5 runs taught the built-in timing model, per platform: parameters fitted to gem5
(applied to the platform presets) and the model's measured error against gem5.

Both are written by ``bench/gem5_steptime.py`` into ``calibration.json`` beside this module and
committed with the gem5 runs they come from (tests/data/gem5_steptime/); a platform without an
entry is not calibrated (its presets stand as cited) and not validated.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
CALIBRATED = ("bw_efficiency", "latency_factor")  # the platform values a calibration may set


@cache
def load() -> dict:
    """The calibration file's entries by platform name ({} when there is none)."""
    if not CALIBRATION_FILE.exists():
        return {}
    return json.loads(CALIBRATION_FILE.read_text())


def calibrated_values(platform: str) -> dict:
    """The fitted values of a platform (a subset of CALIBRATED)."""
    return {k: v for k, v in load().get(platform, {}).get("parameters", {}).items() if k in CALIBRATED}


def validation_summary(platform: str) -> dict | None:
    """``configurations``, ``median_abs_error``, ``max_abs_error`` (relative step-time error of the
    built-in model against gem5, on configurations not used for fitting) and how they were
    measured, or None when the platform was not validated."""
    return load().get(platform, {}).get("validation")
