"""Typed settings: one checker for every value a spec or an option gives.

A :class:`Field` declares a setting's default, type and range next to each other (the sweep
spec's schema is a table of them; the command line checks its options against the same
fields). :meth:`Field.check` returns the normalised value or raises a one-line UserError:

- ``bool``: a real boolean (TOML ``true``/``false``), never a string or a number;
- ``int``: an integer (not a boolean) in ``[lo, hi]``;
- ``float``: an integer or a finite float (not NaN or infinite) in range (``lo`` exclusive when
  ``lo_open``);
- ``str``: a string, one of ``choices()`` (a registry, looked up when checked) when given;
- ``size``: bytes as an integer or a string such as ``"32MiB"`` (normalised to an int).

``check`` (optional) validates further (e.g. that a name is a known backbone or an existing
file) and may normalise; ``nullable`` admits ``None`` (TOML has no null: an absent key).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from harness.core.errors import UserError, unknown_name
from harness.core.units import parse_size

KINDS = ("bool", "int", "float", "str", "size")
INT_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class Field:
    default: object
    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: Callable[[], Iterable[str]] | None = None
    check_value: Callable[[object], object] | None = None
    nullable: bool = False
    help: str = ""
    # where a setting of harness.core.settings appears besides a spec: its command-line option
    # (None: --<key>; False: none), its column in collected results (None: <key>; False: none),
    # and for a bool whether the option is a bare flag (--x) rather than --x/--no-x
    option: str | bool | None = None
    column: str | bool | None = None
    flag: bool = False
    # the command that lists a registry's names (an unknown name points there, not listing them)
    listing: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}")

    def check(self, name: str, value):
        """The value, normalised, or a UserError naming ``name``."""
        if value is None:
            if self.nullable:
                return None
            raise UserError(f"{name} must be set")
        if self.kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise UserError(f"{name} must be true or false, got {value!r}")
            value = bool(value)
        elif self.kind == "int":
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise UserError(f"{name} must be an integer, got {value!r}")
            value = int(value)
            self._range(name, value, INT_MAX)
        elif self.kind == "float":
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise UserError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise UserError(f"{name} must be a finite number, got {value!r}")
            value = float(value)
            self._range(name, value, 1e300)
        elif self.kind == "str":
            if not isinstance(value, str):
                raise UserError(f"{name} must be a string, got {value!r}")
            if self.choices is not None:
                known = list(self.choices())
                if value not in known:
                    raise unknown_name(name.lstrip("-"), value, known, self.listing)
        else:
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{name} must be a size such as 32MiB, got {value!r}")
            value = parse_size(value, name)
        if self.check_value is not None:
            checked = self.check_value(value)
            value = value if checked is None else checked
        return value

    def _range(self, name: str, value, most) -> None:
        lo, hi = self.lo, self.hi if self.hi is not None else most
        if lo is not None and (value <= lo if self.lo_open else value < lo):
            bound = f"greater than {_number(lo)}" if self.lo_open else f"at least {_number(lo)}"
            raise UserError(f"{name} must be {bound}, got {value!r}")
        if value > hi:
            raise UserError(f"{name} must be at most {_number(hi)}, got {value!r}")


def _number(x) -> str:
    """A bound as people write it: 2,147,483,647 or 0.5."""
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e18 else f"{x:g}"


def check_fields(fields: dict[str, Field], values: dict, prefix: str = "") -> tuple[dict, list[str]]:
    """Check every value of ``values`` against ``fields`` (by key); returns the normalised
    values and the problems found (unknown keys included), every value checked."""
    out, problems = {}, []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in fields:
            problems.append(f"unknown key {name}")
            continue
        try:
            out[key] = fields[key].check(name, value)
        except UserError as e:
            problems.append(str(e))
    return out, problems
