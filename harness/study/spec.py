"""Sweep specs: a TOML grid of decode x stream x LLC x timing x tier x backend points.

A spec has sections ``[sweep]``, ``[decode]``, ``[stream]``, ``[llc]``, ``[timing]``, ``[tier]``,
``[gem5]`` and any number of ``[[exclude]]`` tables (a run of backend ``tier`` has a ``tier``
section and no ``llc``; the other backends' runs have no ``tier``). Every key of
decode/stream/llc/timing/tier (and
``sweep.backend``) takes one value or a list (the grid's axes); an exclude table drops the
points that match all its keys, each named plainly or, when two sections have a key of that
name (``index_share`` in ``[decode]`` and ``[stream]``), as ``section.key``. :data:`SCHEMA` is every key's declaration (default, type, range:
``harness.core.settings``, the same the command-line options come from). The spec is validated
before anything runs: every value on its own (so an unknown key or a wrong type hides nothing
else), then each section's combinations (e.g. ``reserve_ways`` against ``ways``), and every
distinct problem is reported once, all together. :func:`parse_spec` expands it into canonical
run configs, each named by its hash (``harness.study.runs.run_id``).
"""

from __future__ import annotations

import functools
import itertools
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.core.canon import config_hash
from harness.core.errors import UserError, problems_error
from harness.core.settings import SETTINGS
from harness.core.units import format_size, require_memory
from harness.study.runs import decode_id, run_id

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["SCHEMA", "Spec", "load_spec", "loads_spec", "parse_spec"]

MAX_GRID_POINTS = 5_000_000  # checked in seconds; examples/full_sweep.toml has 215,040

# Every key of a spec: default, type and range, by section (declared once, with the options').
SCHEMA = SETTINGS
GRID_SECTIONS = ("decode", "stream", "llc", "timing", "tier")
# Sections checked together: a group's canonical configs may depend on each other's values.
GROUPS = (("decode",), ("stream",), ("llc", "timing"), ("tier",))
AXES = {(s, k) for s in GRID_SECTIONS for k in SCHEMA[s]} | {("sweep", "backend")}
# The sections of a run's config, by backend: a tier run has no LLC, the others no tier (so that
# adding the tier kept every other run's id).
RUN_SECTIONS = {"tier": ("decode", "stream", "timing", "tier")}
DEFAULT_RUN_SECTIONS = ("decode", "stream", "llc", "timing")
# exclude tables name grid keys without their section, but for the names of several sections' keys
AMBIGUOUS = {k for _, k in AXES if sum(k == other for _, other in AXES) > 1}
FLAT = {k: (s, k) for s, k in AXES if k not in AMBIGUOUS}


@dataclass
class Spec:
    raw: dict
    runs: list[dict] = field(default_factory=list)     # canonical run configs
    decodes: dict = field(default_factory=dict)        # decode id -> decode config

    @property
    def digest(self) -> str:
        return config_hash(self.raw, 16)

    @property
    def uses_gem5(self) -> bool:
        return any(r["backend"] == "gem5" for r in self.runs)


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep spec {path} does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"sweep spec {path} is not UTF-8 text") from None
    return loads_spec(text, str(path))


def loads_spec(text: str, where: str = "spec") -> Spec:
    """A spec from TOML text (``where`` names it in messages)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"sweep spec {where} does not parse: {e}") from None
    return parse_spec(raw, where)


def parse_spec(raw: dict, where: str = "spec") -> Spec:
    """Validate a spec and expand it into canonical run configs; every distinct problem is
    reported once, all together (see the module docstring)."""
    problems: list[str] = []
    axes = _axes(raw, problems)
    excludes = _excludes(raw.get("exclude", []) if isinstance(raw, dict) else [], problems)
    points = math.prod(len(axes[(s, k)]) for s, k in AXES)
    if points > MAX_GRID_POINTS:
        problems.append(f"the grid has {points:,} points before exclusions; at most {MAX_GRID_POINTS:,}")
        raise problems_error(f"sweep spec {where}", problems)
    groups = [_group_points(group, axes, problems, excludes) for group in GROUPS]
    spec = Spec(raw)
    if all(groups) and axes[("sweep", "backend")]:
        gem5 = {k: (axes[("gem5", k)] or [None])[0] for k in SCHEMA["gem5"]}  # None: invalid, reported
        seen = set()
        for parts in itertools.product(*groups, axes[("sweep", "backend")]):
            *points, backend = parts
            flat = {("sweep", "backend"): backend}
            for given, _ in points:
                flat.update(given)
            if any(all(flat.get(k) == v for k, v in ex.items()) for ex in excludes):
                continue
            canonical = {section: dict(c) for _, group in points for section, c in group.items()}
            run = {section: canonical[section] for section in RUN_SECTIONS.get(backend, DEFAULT_RUN_SECTIONS)} \
                | {"backend": backend}
            if backend == "tier":
                try:
                    from harness.cache.tier import tier_platform

                    tier_platform(run["timing"]["platform"], run["tier"]["hbm"])
                except UserError as e:
                    problems.append(str(e))
                    continue
            if backend == "gem5":
                try:
                    from harness.cache.llc import LLCConfig
                    from harness.gem5.binary import check_llc

                    cfg = LLCConfig(**run["llc"])
                    check_llc(cfg)
                    if gem5["model"] == "closed-loop":
                        from harness.cache.timing import TimingConfig
                        from harness.gem5.decode_step import check_step_config

                        check_step_config(cfg, TimingConfig(**run["timing"]), gem5["steps"])
                except UserError as e:
                    problems.append(str(e))
                    continue
                keys = ("model", "steps") if gem5["model"] == "closed-loop" else ("model", "tick_spacing_ps", "dram", "clock")
                run["gem5"] = {k: gem5[k] for k in keys}
            rid = run_id(run)
            if rid in seen:  # e.g. the baseline repeated under several policies
                continue
            seen.add(rid)
            spec.runs.append(run)
            spec.decodes[decode_id(run["decode"])] = run["decode"]
        if not spec.runs and not problems:
            problems.append("the grid is empty after exclusions")
        if spec.runs and not problems:
            try:
                worst = max(spec.runs, key=run_memory_bytes)
                require_memory(run_memory_bytes(worst), describe_run(worst))
            except UserError as e:
                problems.append(str(e))
    if problems:
        raise problems_error(f"sweep spec {where}", problems)
    return spec


def run_memory_bytes(run: dict) -> int:
    """At least the memory a run will take: its LLC's state (the built-in model's; gem5 keeps
    its own) and its stream's page table and buffers (``trace_gen.stream.planned_memory_bytes``);
    a host-tier run, none counted here. Memoised on the sections it depends on (a grid repeats
    them across hundreds of thousands of runs)."""
    if run["backend"] == "tier":
        return 0
    llc = _llc_memory(_key(run["llc"])) if run["backend"] == "builtin" else 0
    return llc + _stream_memory(_key(run["decode"]), _key(run["stream"]))


def _key(section: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in section.items()))


@functools.lru_cache(maxsize=4096)
def _llc_memory(llc: tuple) -> int:
    from harness.cache.llc import LLCConfig

    return LLCConfig(**dict(llc)).memory_bytes()


@functools.lru_cache(maxsize=4096)
def _stream_memory(decode: tuple, stream: tuple) -> int:
    from trace_gen.stream import planned_memory_bytes

    return planned_memory_bytes(dict(decode), dict(stream))


def describe_run(run: dict) -> str:
    """A run in a few words, for a message."""
    d = run["decode"]
    llc = f", an LLC of {format_size(run['llc']['size'])}" if "llc" in run else ""
    batch = run["stream"].get("batch") or d.get("requests", 1)
    return (f"the run of {d['backbone']} (k = {d['topk']}, {d['prompt_tokens'] + d['steps']:,} tokens, batch "
            f"{batch}{llc}, geometry {run['stream'].get('geometry')})")


def _axes(raw, problems: list[str]) -> dict:
    """Each key's checked values (defaults for absent keys, a key without a default is required;
    invalid values are reported and left out)."""
    given: dict = {}
    if not isinstance(raw, dict):
        problems.append("the spec is not a table")
        raw = {}
    for section, body in raw.items():
        if section == "exclude":
            continue
        if section not in SCHEMA:
            problems.append(f"unknown section [{section}]")
        elif not isinstance(body, dict):
            problems.append(f"[{section}] must be a table")
        else:
            for key, value in body.items():
                name = f"{section}.{key}"
                if key not in SCHEMA[section]:
                    problems.append(f"unknown key {name}")
                elif isinstance(value, list) and (section, key) not in AXES:
                    problems.append(f"{name} takes one value, not a list")
                elif isinstance(value, list) and not value:
                    problems.append(f"{name} is an empty list")
                else:
                    given[(section, key)] = value if isinstance(value, list) else [value]
    axes = {}
    for section, fields in SCHEMA.items():
        for key, f in fields.items():
            values = []
            if (section, key) not in given and f.default is None and not f.nullable:
                problems.append(f"{section}.{key} is required")
            for value in given.get((section, key), [] if f.default is None and not f.nullable else [f.default]):
                try:
                    checked = f.check(f"{section}.{key}", value)
                except UserError as e:
                    problems.append(str(e))
                    continue
                if checked not in values:
                    values.append(checked)
            axes[(section, key)] = values
    return axes


def _excludes(excludes, problems: list[str]) -> list[dict]:
    if not isinstance(excludes, list) or not all(isinstance(x, dict) for x in excludes):
        problems.append("[[exclude]] must be an array of tables")
        return []
    out = []
    for ex in excludes:
        named = []  # (name, section, key, value)
        for key, value in ex.items():
            if isinstance(value, dict) and key in GRID_SECTIONS:  # section.key = value (a table of its keys)
                named += [(f"{key}.{k}", key, k, v) for k, v in value.items()]
            elif key in AMBIGUOUS:
                sections = sorted(s for s, k in AXES if k == key)
                problems.append(f"[[exclude]] key {key} is a key of {' and '.join(f'[{s}]' for s in sections)}: "
                                f"name its section, e.g. {sections[0]}.{key}")
            else:
                named.append((key, *FLAT.get(key, (None, key)), value))
        checked = {}
        for name, section, key, value in named:
            if (section, key) not in AXES:
                problems.append(f"unknown key {name} in [[exclude]]")
                continue
            try:
                checked[(section, key)] = SCHEMA[section][key].check(f"[[exclude]] {name}", value)
            except UserError as e:
                problems.append(str(e))
        out.append(checked)
    return out


def _group_points(group: tuple[str, ...], axes: dict, problems: list[str],
                  excludes: list[dict] = ()) -> list[tuple[dict, dict]]:
    """Each combination of a group's values that forms a valid configuration, as (the values
    given, by (section, key); the canonical config of each section of the group); the invalid ones reported,
    except those an exclude table naming only this group's keys leaves out."""
    keys = [(s, k) for s in group for k in SCHEMA[s]]
    own = [ex for ex in excludes if ex and set(ex) <= set(keys)]
    out = []
    for values in itertools.product(*(axes[key] for key in keys)):
        given = {s: {} for s in group}
        for (s, k), v in zip(keys, values):
            given[s][k] = v
        flat = dict(zip(keys, values))
        if any(all(flat.get(k) == v for k, v in ex.items()) for ex in own):
            continue
        try:
            canonical = {s: _canonical(s, given) for s in group}
        except UserError as e:
            problems.append(str(e))
            continue
        out.append((flat, canonical))
    return out


def canonical_llc(values: dict, platform: str) -> dict:
    """An ``[llc]`` section's canonical config on ``platform`` (its LLC unless size and ways are
    given), checked against the platform's cache controls: equal LLCs get equal configs (the
    policy and whole-token flag of a run without a token reservation are normalised)."""
    from harness.cache.llc import LLCConfig
    from harness.cache.platforms import get_platform

    p = get_platform(platform)
    size = p.llc_size if values.get("size") is None else values["size"]
    ways = p.llc_ways if values.get("ways") is None else values["ways"]
    llc = LLCConfig.make(size, ways, **{k: x for k, x in values.items() if k not in ("size", "ways")})
    llc.check_platform(p)
    require_memory(llc.memory_bytes(), f"an LLC of {size}")
    if llc.reserve_ways == 0 or llc.policy == "lru":  # the policy and whole-token flag do not apply
        llc = replace(llc, policy="lru" if llc.reserve_ways == 0 else llc.policy, whole_token_eviction=True)
    return llc.to_dict()


def _canonical(section: str, given: dict) -> dict:
    """A section's canonical config (equal runs get equal configs), validated as a whole, from
    the values of its group (``given``: section -> key -> value)."""
    v = given[section]
    try:
        if section == "decode":
            from trace_gen.decode import DecodeConfig, check_context

            cfg = DecodeConfig(**v)
            cfg.validate()
            check_context(cfg)
            return dict(v)
        if section == "stream":
            from trace_gen.stream import Layout

            Layout.from_settings(v).validate()
            return dict(v)
        if section == "llc":
            return canonical_llc(v, given["timing"]["platform"])
        if section == "tier":
            from harness.cache.tier import TierConfig

            return TierConfig(**v).to_dict()
        from harness.cache.timing import TimingConfig

        timing = TimingConfig.make(v["platform"], v["model"],
                                   **{k: x for k, x in v.items() if k not in ("platform", "model")})
        return timing.to_dict()
    except UserError as e:
        raise UserError(f"{section}: {e}") from None


