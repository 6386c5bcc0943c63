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

from harness.core.errors import UserError, first_line

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
# The platform values a calibration may set, and the range of each: a miss's latency under load
# is at least its unloaded latency (latency_factor >= 1; the fits give 1.15 and 1.55); a share of
# the peak bandwidth is in (0, 1].
RANGES = {"bw_efficiency": (0.0, 1.0), "latency_factor": (1.0, 100.0)}
CALIBRATED = tuple(RANGES)


@cache
def load() -> dict:
    """The calibration file's entries by platform name ({} when there is none), checked: a file
    that is truncated, not this version's (a value of another name, a value out of range) is
    refused in one line naming it, never applied."""
    if not CALIBRATION_FILE.exists():
        return {}
    try:
        data = json.loads(CALIBRATION_FILE.read_text())
    except (OSError, ValueError) as e:
        raise _broken(f"it cannot be read ({first_line(e)})") from None
    if not isinstance(data, dict):
        raise _broken("it is not a JSON object of platforms")
    for platform, entry in data.items():
        parameters = entry.get("parameters", {}) if isinstance(entry, dict) else None
        if not isinstance(parameters, dict) or not isinstance(entry.get("validation", {}), dict):
            raise _broken(f"the entry of {platform!r} is not a set of parameters and a validation")
        for key, value in parameters.items():
            if key not in RANGES:
                raise _broken(f"{platform}.{key} is not a parameter this version fits ({', '.join(CALIBRATED)})")
            lo, hi = RANGES[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi \
                    or (key == "bw_efficiency" and value == 0):
                raise _broken(f"{platform}.{key} = {value!r} is outside its range [{lo:g}, {hi:g}]")
    return data


def _broken(why: str) -> UserError:
    return UserError(f"the calibration file {CALIBRATION_FILE} is unusable: {why}; restore it "
                     "(git checkout harness/cache/calibration.json) or make it again with bench/gem5_steptime.py")


def calibrated_values(platform: str) -> dict:
    """The fitted values of a platform (a subset of CALIBRATED)."""
    return {k: v for k, v in load().get(platform, {}).get("parameters", {}).items() if k in CALIBRATED}


def validation_summary(platform: str) -> dict | None:
    """``configurations``, ``median_abs_error``, ``max_abs_error`` (relative step-time error of the
    built-in model against gem5, on configurations not used for fitting) and how they were
    measured, or None when the platform was not validated."""
    return load().get(platform, {}).get("validation")
