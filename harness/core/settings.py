"""Every setting a sweep spec or a command-line option gives, declared once.

:data:`SETTINGS` holds, by section (``[sweep]``, ``[decode]``, ``[stream]``, ``[llc]``,
``[timing]``, ``[tier]``, ``[search]``, ``[gem5]``), one :class:`~harness.core.fields.Field` per setting: its default,
type, range, help text, its command-line option (``--<key>`` unless named otherwise, ``None``
for a spec-only key) and its column in the collected results. Everything else is derived from
this table:

- the sweep spec's schema (``harness.study.spec``): keys, defaults, types, ranges, which keys a
  grid may vary;
- the click options of ``dsa-harness`` (``harness.cli``): name, default, help, flag form;
- the checks of option values and of ``sweep --dry-run`` (both call :meth:`Field.check`);
- the parameter columns of ``collect`` (``harness.study.collect``);
- the defaults of the configs that run them (``trace_gen.decode.DecodeConfig``,
  ``trace_gen.stream.Layout``, ``harness.cache.llc.LLCConfig``), via :func:`default`.

Registries (backbones, geometries, policies, platforms...) are named by module and attribute
and looked up only when a value is checked or a help text is shown, so that importing this
table imports none of them.
"""

from __future__ import annotations

import importlib
import re

from harness.core.errors import UserError
from harness.core.fields import Field

# Limits that keep every derived quantity inside its integer type: token ids pack the request
# into bits 48-62 (trace_gen.stream.token_id), positions are int32.
MAX_INT32 = (1 << 31) - 1
MAX_REQUESTS = (1 << 15) - 1
BACKENDS = ("builtin", "gem5", "tier")


POLICY_LISTING = "`dsa-harness policies`"  # where an unknown policy name points


def registry(module: str, name: str, extra: tuple = ()):
    """The names of a registry (``module.name``), looked up when called (no import before)."""
    def names():
        return (*extra, *getattr(importlib.import_module(module), name))
    return names


def checker(module: str, name: str):
    """A value check that lives in a module imported only when a value is checked."""
    def check(value):
        return getattr(importlib.import_module(module), name)(value)
    return check


def _check_clock(value: str) -> None:
    if not re.fullmatch(r"\d+(\.\d+)?\s*[kMG]?Hz", value):
        raise UserError(f"clock {value!r} is not a frequency such as 2GHz")


def _platforms():
    return registry("harness.cache.platforms", "PLATFORMS")()


SETTINGS: dict[str, dict[str, Field]] = {
    "sweep": {
        "name": Field("demo", "str", help="The sweep's name.", option=False, column=False),
        "backend": Field("builtin", "str", choices=lambda: BACKENDS,
                         help="builtin: the fast model; gem5: your gem5 binary with dsa-llc's extension; tier: "
                              "the host-tier model of [tier] (KV in host memory, hot buffers in HBM)."),
    },
    "decode": {
        "backbone": Field(None, "str", check_value=checker("trace_gen.backbones", "check_backbone"),
                          help="smollm2-135m, gemma3-270m, tiny-llama, tiny-gemma, tiny-dsa, or a folder, "
                               ".gguf file or hub id."),
        "indexer": Field("dsa", "str", choices=registry("trace_gen.indexers", "INDEXERS"),
                         help="The indexer that selects the tokens ({choices})."),
        "topk": Field(256, "int", 1, MAX_INT32, help="Tokens selected per layer and step."),
        "prompt_tokens": Field(2048, "int", 1, MAX_INT32, help="Prompt tokens per request."),
        # 32 in a spec and 128 on the command line until both came from here: the spec's won
        # (a sweep's run ids hash the canonical config, so existing sweeps keep theirs)
        "steps": Field(32, "int", 1, MAX_INT32, help="Decode steps (new tokens).", column="decode_steps"),
        "requests": Field(1, "int", 1, MAX_REQUESTS,
                          help="Concurrent requests, each with its own prompt (batched)."),
        "text": Field("python-source", "str", check_value=checker("trace_gen.text", "check_text"),
                      help="python-source, python-docs, python-stdlib (one file per request), or a UTF-8 "
                           "text file."),
        "sink_tokens": Field(0, "int", 0, MAX_INT32, help="Always select the first N positions."),
        "local_window": Field(0, "int", 0, MAX_INT32, help="Always select the last N positions."),
        "observe_only": Field(False, "bool", help="Keep dense attention; only log the selections.", flag=True),
        # indexer levers (trace_gen.levers): 1, 1 and none reproduce a decode without them exactly
        "index_share": Field(1, "int", 1, 1 << 16,
                             help="Run the indexer on every N-th layer of each kind (IndexCache); the layers "
                                  "between attend with the selection of the anchor before them."),
        "index_layers": Field(None, "str", nullable=True, check_value=checker("trace_gen.levers", "parse_layers"),
                              help="The anchor layers that run the indexer, e.g. 0,6,12 (instead of "
                                   "--index-share; the first layer of each kind always is one)."),
        "index_reuse": Field(1, "int", 1, MAX_INT32,
                             help="Scan the indexer keys every S-th step (GVR); the steps between reuse the "
                                  "last selection, widened by the tokens decoded since."),
        "seed": Field(0, "int", 0, help="Seed of the prompts' draw."),
    },
    "stream": {
        "geometry": Field("native", "str", choices=registry("trace_gen.geometry", "PRESETS", ("native",)),
                          help="KV geometry: {choices} (native: the log's backbone's own)."),
        "layout": Field("paged", "str", choices=registry("trace_gen.stream", "LAYOUTS"),
                        help="KV layout ({choices})."),
        "page_tokens": Field(64, "int", 1, MAX_INT32, help="Tokens per page of the paged layout."),
        "page_order": Field("in-order", "str", choices=registry("trace_gen.stream", "PAGE_ORDERS"),
                            help="Physical page allocation order ({choices})."),
        "layout_seed": Field(0, "int", 0, help="Seed of the shuffled page order."),
        # the whole step by default (the weights' traffic, which dominates a decode step at small
        # batches); --no-weights leaves the attention part alone (results say step_scope)
        "weights": Field(True, "bool", help="Stream the weights one device reads per step (the geometry's "
                                            "cited deployment): the whole step; --no-weights: the step "
                                            "without the weights' traffic."),
        "batch": Field(None, "int", 1, MAX_REQUESTS, nullable=True,
                       help="Requests decoded side by side [default: the log's]; a larger batch reuses the "
                            "log's selections in turn, each request at its own addresses."),
        # indexer levers of the stream (trace_gen.levers, StreamLevers), applied to any log without
        # a new decode; a spec's [decode] keys of the same names decode with them instead
        "index_share": Field(None, "int", 1, 1 << 16, nullable=True, column="stream_index_share",
                             help="Stream IndexCache's share: every N-th layer of each kind runs the indexer; the "
                                  "others write and scan no indexer keys and gather their anchor's selection "
                                  "[default: the log's own lever, none in a log decoded without one]."),
        "index_reuse": Field(None, "int", 1, MAX_INT32, nullable=True, column="stream_index_reuse",
                             help="Stream a scan of the indexer keys every S-th step only; the steps between write "
                                  "their key and gather the last scan's selection widened by the tokens decoded "
                                  "since [default: the log's own lever]."),
        "index_bytes": Field(None, "int", 0, 1 << 30, nullable=True,
                             help="Bytes of an indexer key per token and layer, e.g. 68 for FP4 keys (64 B of "
                                  "values + a 4 B scale) [default: the geometry's]."),
    },
    "llc": {  # size and ways: the platform's LLC unless given
        "size": Field(None, "size", nullable=True, option="--llc-size", column="llc_bytes",
                      help="LLC capacity (KiB/MiB/GiB strings or bytes) [default: the platform's]."),
        "ways": Field(None, "int", 1, 1 << 16, nullable=True, help="Associativity [default: the platform's]."),
        "reserve_ways": Field(0, "int", 0, 1 << 16,
                              help="Ways reserved for kv/kv_write lines (0 = unpartitioned baseline)."),
        "policy": Field("token-lru", "str", choices=registry("harness.cache.llc", "RESERVED_POLICIES"),
                        listing=POLICY_LISTING,
                        help="Replacement policy of the reserved ways ({choices}; see `dsa-harness policies`)."),
        "whole_token_eviction": Field(True, "bool", help="token-lru: evicting a line evicts its whole token."),
        # class-aware knobs (harness.cache.partitions); --reserve CLASS=WAYS[:POLICY] and
        # --hint CLASS=KIND on the command line set them
        "reserve_index": Field(0, "int", 0, 1 << 16, option=False,
                               help="Ways reserved for the indexer keys (--reserve index=WAYS)."),
        "reserve_weights": Field(0, "int", 0, 1 << 16, option=False,
                                 help="Ways reserved for the weights (--reserve weights=WAYS)."),
        "hint_kv": Field("normal", "str", check_value=checker("harness.cache.partitions", "check_hint"),
                         option=False, help="Insertion hint of the KV lines (--hint kv=KIND)."),
        "hint_index": Field("normal", "str", check_value=checker("harness.cache.partitions", "check_hint"),
                            option=False, help="Insertion hint of the indexer keys (--hint index=KIND)."),
        "hint_weights": Field("normal", "str", check_value=checker("harness.cache.partitions", "check_hint"),
                              option=False, help="Insertion hint of the weights (--hint weights=KIND)."),
        "set_aside": Field(None, "size", nullable=True,
                           help="The LLC set aside for persisting lines (--hint CLASS=persisting:RATIO) [default: "
                                "none]."),
        "what_if": Field(False, "bool", help="Allow knobs beyond the platform's documented limits (the result "
                                            "says so)."),
        # 1 in N set groups (harness.core.sampling). Automatic: 1 in 8 when the run's KV and
        # indexer traffic passes 100 M line accesses (about 10 s of full simulation), where the
        # sampled error stays within 1 % (tests/data/set_sampling/errors.csv); 1: never
        "sample_sets": Field(None, "int", 1, 1 << 20, nullable=True,
                             help="Simulate 1 in N groups of sets and scale the counts (a power of two; 1: every "
                                  "set) [default: 1 in 8 above 100 M line accesses]."),
    },
    "timing": {  # a platform and its values (harness.cache.platforms), each overridable
        "platform": Field("h100-sxm", "str", choices=_platforms,
                          help="Decode engine whose LLC, memory and compute the run models ({choices}); "
                               "the options below override its values."),
        "model": Field("closed-loop", "str", choices=registry("harness.cache.timing", "TIMING_MODELS"),
                       option="--timing-model",
                       help="closed-loop: per-phase decode-step time; open-loop: the older per-step stall formula."),
        "llc_hit_cycles": Field(None, "int", 1, nullable=True, help="LLC hit latency [default: the platform's]."),
        "dram_latency_cycles": Field(None, "int", 1, nullable=True,
                                     help="Unloaded LLC-miss latency [default: the platform's]."),
        "max_outstanding": Field(None, "int", 1, nullable=True,
                                 help="Requests the engine keeps in flight [default: the platform's]."),
        "dram_bytes_per_cycle": Field(None, "float", 0, lo_open=True, nullable=True,
                                      help="Peak memory bandwidth [default: the platform's]."),
        "issue_per_cycle": Field(None, "float", 0, lo_open=True, nullable=True,
                                 help="Line requests issued per cycle [default: the platform's]."),
        "warmup_steps": Field(None, "int", 0, MAX_INT32, nullable=True,
                              help="First decode steps left out of the step-time means [default: 1]."),
        "overlap": Field(None, "float", 0, 1, nullable=True,
                         help="Share of the shorter of a phase's memory and compute time hidden under the "
                              "longer: 1 the roofline (the larger of the two), 0 their sum [default: the "
                              "platform's, 1]."),
    },
    "tier": {  # the host tier (harness.cache.tier), the runs of backend "tier"
        "hot_tokens_per_k": Field(2.0, "float", 0, 1e6, lo_open=True,
                                  help="Host tier: hot-buffer KV tokens per layer and request, as a multiple of "
                                       "topk (2: 2k tokens)."),
        "hot_policy": Field("token-lru", "str", choices=registry("harness.cache.policies", "POLICIES"),
                            listing=POLICY_LISTING,
                            help="Host tier: token policy of the hot buffers ({choices}; min: Belady's bound)."),
        "pooled": Field(False, "bool", flag=True, column="tier_pooled",
                        help="Host tier: one hot buffer per layer shared by the batch (batch x hot tokens) "
                             "instead of one per request."),
        "hbm": Field(None, "size", nullable=True, column="hbm_bytes",
                     help="Host tier: HBM capacity of the device (KiB/MiB/GiB/GB strings or bytes) "
                          "[default: the platform's]."),
    },
    "search": {  # the lever search of a sweep spec (harness.study.search): its [search] table turns it on
        "finalists": Field(3, "int", 1, 100, option=False, column=False,
                           help="Per scale point, the best screened settings of each family (KV-only; class-aware "
                                "the platform allows; class-aware beyond it) simulated in full."),
        "screen_sample_sets": Field(64, "int", 1, 1 << 20, option=False, column=False,
                                    help="Screening simulates 1 in N groups of sets (the largest power of two up to "
                                         "N that the LLC allows)."),
        "screen_steps": Field(3, "int", 2, MAX_INT32, option=False, column=False,
                              help="Decode steps each screened setting simulates (the first ones warm the LLC, as "
                                   "[timing] warmup_steps says)."),
        "what_if": Field(True, "bool", option=False, column=False,
                         help="Also search settings beyond the platform's documented cache controls (reported "
                              "apart from those it allows)."),
    },
    "gem5": {
        "binary": Field(None, "str", nullable=True, option="--gem5", column=False,
                        help="gem5 binary (default: $GEM5)."),
        "model": Field("closed-loop", "str", choices=lambda: ("closed-loop", "replay"), option="--gem5-model",
                       column=False,
                       help="gem5: closed-loop decode steps on the platform's memory (counts and step time; "
                            "the default for an index log) or the open-loop trace replay (counts only; the "
                            "default for an access trace)."),
        "steps": Field(None, "int", 2, MAX_INT32, nullable=True, option=False, column=False,
                       help="gem5 closed-loop: simulate the first N decode steps."),
        "timeout": Field(3600.0, "float", 0, 1e7, lo_open=True, option="--gem5-timeout", column=False,
                         help="gem5: seconds."),  # up to ~4 months
        # ticks of 2**63 / 10**9 packets fit int64
        "tick_spacing_ps": Field(1_000_000, "int", 1, 10**9, column=False,
                                 help="gem5 replay and gem5 traces: picoseconds between requests "
                                      "(1 us: no two overlap)."),
        "dram": Field("DDR4_2400_8x8", "str", column=False, help="gem5 replay: DRAM model."),
        "clock": Field("2GHz", "str", check_value=_check_clock, column=False, help="gem5 replay: system clock."),
    },
}


def default(section: str, key: str):
    """A setting's default (for the configs that run it)."""
    return SETTINGS[section][key].default


def option_name(section: str, key: str) -> str:
    """A setting's command-line option (``--<key>`` unless declared otherwise)."""
    f = SETTINGS[section][key]
    if f.option is False:
        raise KeyError(f"{section}.{key} has no command-line option")
    return f.option or "--" + key.replace("_", "-")


def column_name(section: str, key: str) -> str | None:
    """A setting's column in the collected results (None: not a column). Timing values are
    ``timing_<key>``: their columns come from the resolved timing config (see collect)."""
    f = SETTINGS[section][key]
    if f.column is False or section == "timing":
        return None
    return f.column or key


def help_text(f: Field) -> str:
    """A setting's help with its registry's names filled in (``{choices}``), looked up now."""
    if "{choices}" in f.help and f.choices is not None:
        return f.help.format(choices=", ".join(f.choices()))
    return f.help


def check_values(sections: dict[str, dict], names=None) -> dict[str, dict]:
    """Values by section (``{"llc": {"ways": 8}}``), each checked by its setting and named by
    its option in messages (``names``: ``(section, key) -> name`` to name it otherwise); every
    problem in one UserError."""
    from harness.core.errors import problems_error

    out, problems = {}, []
    for section, values in sections.items():
        out[section] = {}
        for key, value in values.items():
            f = SETTINGS[section][key]
            name = (names or {}).get((section, key)) or (
                f"{section}.{key}" if f.option is False else option_name(section, key))
            try:
                out[section][key] = f.check(name, value)
            except UserError as e:
                problems.append(str(e))
    if problems:
        raise problems_error("", problems)
    return out
