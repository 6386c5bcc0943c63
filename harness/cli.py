"""``dsa-harness``: a thin click layer over the library.

Every failure the user can meet prints exactly one ``error:`` line on stderr (a spec with several
problems lists them on the lines below it) and exits non-zero, never with a traceback; bare
``dsa-harness`` prints the help. Outputs follow one rule (``harness.core.outputs``), checked
before any work starts."""

from __future__ import annotations

import json
import os
import re
import signal
import sys

import click
from click.core import ParameterSource

from harness import __version__
from harness.cache.timing import TIMING_MODELS
from harness.core.errors import UserError, first_line
from harness.core.interrupt import interruptible, signal_of
from harness.core.settings import BACKENDS, SETTINGS, check_values, help_text, option_name


class _Stopped(Exception):
    """A command stopped by a signal (``harness.core.interrupt``), past click's own handling."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _Group(click.Group):
    """A click group whose errors are one line on stderr and a non-zero exit, never a traceback.

    SIGINT, SIGTERM and SIGHUP stop a command through every ``finally`` on the way out (no
    temporary, no lock, no child process is left) and exit 128 + the signal with one line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        with interruptible():
            return self._main(args, prog_name, complete_var, standalone_mode, **extra)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:  # not click's "Aborted!" after a blank line
            raise _Stopped(signal_of(e)) from None

    def _main(self, args, prog_name, complete_var, standalone_mode, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # bare `dsa-harness`: the help, not an error
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except (_Stopped, click.exceptions.Abort) as e:
            cause = e if isinstance(e, _Stopped) else e.__cause__
            if not isinstance(cause, (_Stopped, KeyboardInterrupt)):
                _fail("aborted")
            signum = cause.signum if isinstance(cause, _Stopped) else signal_of(cause)
            _fail(f"interrupted by {signal.Signals(signum).name}: what was finished is kept and nothing "
                  "half-written is left; run the command again to go on", code=128 + signum)
        except click.ClickException as e:
            _fail(e.format_message(), code=e.exit_code)
        except UserError as e:
            _fail(str(e), e.details)
        except MemoryError:
            _fail("out of memory: the input needs more memory than this machine has available")
        except OSError as e:  # a full disk, an unwritable path, a closed pipe
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            _fail(f"{e.strerror or first_line(e)}{where}")
        except Exception as e:
            if os.environ.get("DSA_LLC_TRACEBACK"):
                raise
            _fail(f"internal error ({type(e).__name__}: {first_line(e)}); please report it "
                  "(DSA_LLC_TRACEBACK=1 shows the traceback)")
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


def _fail(message: str, details=(), code: int = 1):
    """The one ``error:`` line (and a spec's further problems below it), then exit."""
    click.echo(f"error: {' '.join(message.split())}", err=True)
    for detail in details:
        click.echo(f"  - {' '.join(detail.split())}", err=True)
    sys.exit(code or 1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="dsa-harness")
def cli():
    """Study harness for dynamic sparse attention (DSA) decoding and LLC reservation."""


def option_group(*options):
    """One decorator that applies click options in the order given (and so lists them in --help)."""
    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f
    return apply


class _SettingOption(click.Option):
    """The option of a setting (``harness.core.settings``); its help, which may list a registry,
    is filled in only when shown, so that no registry is imported before it is needed."""

    def __init__(self, *args, field=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.field = field

    def get_help_record(self, ctx):
        self.help = help_text(self.field)
        return super().get_help_record(ctx)


def param_name(section: str, key: str) -> str:
    """The Python name click gives a setting's option (``--llc-size``: ``llc_size``)."""
    return option_name(section, key).lstrip("-").replace("-", "_")


def setting_option(section: str, key: str, **overrides):
    """The click option of one setting: name, default, type, flag form and help from its
    declaration (``overrides`` for a command that means something more by it, e.g. a default
    that depends on other options)."""
    f = SETTINGS[section][key]
    name = option_name(section, key)
    kwargs = {"default": f.default, "show_default": f.default is not None, "field": f, "cls": _SettingOption}
    if f.kind == "bool":
        decl = name if f.flag else f"{name}/--no-{name[2:]}"
        kwargs.update({"is_flag": True, "show_default": False} if f.flag else {})
    else:
        decl = name
        kwargs["type"] = {"int": int, "float": float}.get(f.kind, str)
    kwargs.update(overrides)
    return click.option(decl, param_name(section, key), **kwargs)


def setting_options(section: str, *keys: str):
    """The options of a section's settings (``keys``: these, in this order; default: all that
    have an option)."""
    keys = keys or tuple(k for k, f in SETTINGS[section].items() if f.option is not False)
    return option_group(*(setting_option(section, key) for key in keys))


def section_values(kw: dict, section: str, *keys: str) -> dict:
    """A section's values from the options click parsed (``keys``: these only)."""
    keys = keys or tuple(k for k, f in SETTINGS[section].items() if f.option is not False)
    return {key: kw[param_name(section, key)] for key in keys}


check_options = check_values  # one checker for specs and options: harness.core.settings

TIMING_OVERRIDES = ("llc_hit_cycles", "dram_latency_cycles", "max_outstanding", "dram_bytes_per_cycle",
                    "issue_per_cycle", "warmup_steps", "overlap")

# Platform, LLC geometry, reservation and timing options shared by the simulating commands.
llc_options = option_group(
    setting_option("timing", "platform"),
    setting_options("llc"),
    click.option("--reserve", "reserve", multiple=True, metavar="CLASS=WAYS[:POLICY]",
                 help="Ways only CLASS (kv, index or weights) allocates in, laid out kv, index, weights from "
                      "way 0; the rest share the other ways. kv takes a reserved-way policy (--reserve-ways R "
                      "--policy P is kv=R:P), index and weights lru or bip. Repeatable."),
    click.option("--hint", "hint", multiple=True, metavar="CLASS=KIND",
                 help="Insertion hint of CLASS's fills: streaming (the next victim), bip, or persisting:RATIO "
                      "(with --set-aside). Repeatable."),
    click.option("--bounds/--no-bounds", default=True, show_default=True,
                 help="Also compute the fully associative LRU and MIN token bounds."),
    setting_option("timing", "model", type=click.Choice(TIMING_MODELS)),
    setting_options("timing", *TIMING_OVERRIDES),
)


def _llc_and_timing(kw: dict, extra: dict | None = None):
    """The LLC and timing configs of the options in ``kw``, checked together with the option
    sections in ``extra`` (returned checked as well)."""
    from harness.cache.llc import LLCConfig
    from harness.cache.platforms import get_platform
    from harness.cache.timing import TimingConfig

    values = section_values(kw, "llc") | _class_knobs(kw["reserve"], kw["hint"], kw)
    checked = check_options({"llc": values, "timing": section_values(kw, "timing"), **(extra or {})},
                            {("llc", k): f"--reserve {k.split('_')[-1]}" for k in ("reserve_index", "reserve_weights")}
                            | {("llc", k): f"--hint {k.split('_')[-1]}" for k in ("hint_kv", "hint_index", "hint_weights")})
    llc, t = checked["llc"], checked["timing"]
    platform = get_platform(t["platform"])
    size, ways = llc.pop("size"), llc.pop("ways")
    cfg = LLCConfig.make(platform.llc_size if size is None else size, platform.llc_ways if ways is None else ways,
                         **llc)
    cfg.check_platform(platform)
    timing = TimingConfig.make(t["platform"], t["model"], **{k: t[k] for k in TIMING_OVERRIDES})
    return cfg, timing, checked


def _class_knobs(reserve: tuple[str, ...], hint: tuple[str, ...], kw: dict) -> dict:
    """The [llc] settings of --reserve CLASS=WAYS[:POLICY] and --hint CLASS=KIND."""
    from harness.cache.partitions import CLASSES, LINE_POLICIES

    out: dict = {}
    for item in reserve:
        m = re.fullmatch(r"(\w+)=(\d+)(?::([\w-]+))?", item)
        if not m or m.group(1) not in CLASSES:
            raise click.BadParameter(f"expected CLASS=WAYS[:POLICY] with CLASS one of {', '.join(CLASSES)}, "
                                     f"got {item!r}", param_hint="--reserve")
        name, ways, policy = m.group(1), int(m.group(2)), m.group(3)
        if name == "kv":
            if kw["reserve_ways"] or click.get_current_context().get_parameter_source(
                    "policy") == ParameterSource.COMMANDLINE:
                raise click.UsageError("--reserve kv=... and --reserve-ways/--policy say the same thing: give one")
            out["reserve_ways"] = ways
            if policy:
                out["policy"] = policy
            continue
        out[f"reserve_{name}"] = ways
        if policy and policy not in LINE_POLICIES:
            raise click.BadParameter(f"{name} ways run {' or '.join(LINE_POLICIES)}, not {policy!r}",
                                     param_hint="--reserve")
        if policy == "bip":
            out[f"hint_{name}"] = "bip"
    for item in hint:
        name, sep, kind = item.partition("=")
        if not sep or name not in CLASSES:
            raise click.BadParameter(f"expected CLASS=KIND with CLASS one of {', '.join(CLASSES)}, got {item!r}",
                                     param_hint="--hint")
        out[f"hint_{name}"] = kind
    return out


# `simulate` runs the LLC models; the host tier (backend "tier" in a spec) is `dsa-harness tier`.
SIMULATE_BACKENDS = tuple(b for b in BACKENDS if b != "tier")

# How an index log becomes an access stream: KV geometry and layout.
stream_options = setting_options("stream")

overwrite_option = click.option("--overwrite", is_flag=True,
                                help="Replace an existing --out (only an earlier output of this command).")


def _stream_provenance(src) -> dict:
    return {"tool": f"dsa-llc {__version__}", "index_log": str(src.log.folder),
            "index_log_config_hash": src.log.meta.get("config_hash"),
            "backbone": src.log.meta["backbone"]["name"], "indexer": src.log.meta["indexer"],
            "geometry": src.geometry.to_dict(), "layout": src.layout.to_dict(),
            "batch": src.batch, "log_requests": src.log.requests, "levers": src.levers.describe(),
            "address_map": src.amap.describe()}


@cli.command()
@click.option("--access-trace", type=click.Path(dir_okay=False),
              help="Generic access trace: .npy addresses, or Parquet/CSV with an addr column.")
@click.option("--index-log", type=click.Path(), help="Index log folder (from `decode`).")
@stream_options
@llc_options
@setting_option("sweep", "backend", type=click.Choice(SIMULATE_BACKENDS))
@setting_option("gem5", "binary")
@click.option("--gem5-out", type=click.Path(file_okay=False), default=None,
              help="gem5: folder for traces, logs and stats (default: a new temporary folder).")
@setting_option("gem5", "timeout")
@setting_option("gem5", "model", default=None, show_default=False)
@click.option("--steps", type=int, default=None,
              help="Simulate the first N decode steps of the index log only (the first --warmup-steps "
                   "of them warm the LLC) [default: all].")
@setting_options("gem5", "tick_spacing_ps", "dram", "clock")
@click.option("--l1-size", default=None, help="gem5 replay: a private cache per generator (default: none).")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="table",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the JSON result here.")
@overwrite_option
def simulate(access_trace, index_log, backend, gem5, gem5_out, gem5_timeout, gem5_model, steps,
             tick_spacing_ps, dram, clock, l1_size, fmt, out, overwrite, **kw):
    """Simulate an access stream through the built-in LLC model or gem5.

    The stream is a generic access trace (--access-trace) or is generated on the fly from an
    index log under a KV geometry and layout (--index-log)."""
    from harness.cache.simulate import simulate as run
    from harness.cache.simulate import simulate_stream
    from harness.core.accesstrace import read_access_trace
    from harness.core.files import atomic_path
    from harness.core.outputs import check_output_file
    from harness.core.units import parse_size
    from trace_gen.stream import StreamSource

    if bool(access_trace) == bool(index_log):
        raise click.UsageError("give exactly one of --access-trace and --index-log")
    if gem5_model is not None:
        gem5_model = check_options({"gem5": {"model": gem5_model}})["gem5"]["model"]
    if steps is not None and access_trace:
        raise click.UsageError("--steps needs --index-log (an access trace is simulated whole)")
    if steps is not None and steps < 1:
        raise click.BadParameter(f"must be at least 1, got {steps}", param_hint="--steps")
    gem5_model = gem5_model or ("replay" if access_trace else "closed-loop")
    if backend == "gem5" and gem5_model == "closed-loop" and access_trace:
        raise click.UsageError("gem5's closed-loop model needs --index-log (an access trace has no phases); "
                               "use --gem5-model replay")
    if backend == "gem5" and gem5_model == "replay" and steps is not None:
        raise click.UsageError("--steps is for the built-in model and gem5's closed-loop model")
    given = {name for name in ("gem5", "gem5_out", "gem5_timeout", "gem5_model", "tick_spacing_ps", "dram", "clock",
                               "l1_size")
             if click.get_current_context().get_parameter_source(name) == ParameterSource.COMMANDLINE}
    gem5_only = [{"gem5": "--gem5"}.get(n, f"--{n.replace('_', '-')}") for n in ("gem5", "gem5_out", "gem5_timeout",
                                                                               "gem5_model") if n in given]
    replay_only = [f"--{name.replace('_', '-')}" for name in ("tick_spacing_ps", "dram", "clock", "l1_size")
                   if name in given]
    if replay_only and not (backend == "gem5" and gem5_model == "replay"):
        raise click.UsageError(f"{', '.join(replay_only)}: options of the gem5 replay (--backend gem5 "
                               "--gem5-model replay); the closed-loop model takes its memory and clock from --platform")
    gem5_binary = gem5
    cfg, timing, checked = _llc_and_timing(kw, {
        "stream": section_values(kw, "stream"),
        "gem5": {"timeout": gem5_timeout, "tick_spacing_ps": tick_spacing_ps, "clock": clock}})
    stream, gem5 = checked["stream"], checked["gem5"]
    if gem5_only and backend != "gem5":  # refused rather than ignored
        raise click.UsageError(f"{', '.join(gem5_only)}: options of the gem5 backend (--backend gem5), not "
                               f"{backend}'s")
    if l1_size is not None:
        parse_size(l1_size, "--l1-size")
    check = (lambda: check_output_file(out, overwrite)) if out else None  # noqa: E731
    if check:
        check()
    if backend == "gem5":
        from harness.gem5.binary import check_class_regions, check_extension, check_llc, find_gem5

        check_llc(cfg)
        check_class_regions(cfg, address_map=not access_trace)
        if gem5_model == "closed-loop":
            from harness.gem5.decode_step import check_step_config

            check_step_config(cfg, timing, steps)
        check_extension(find_gem5(gem5_binary))
        if gem5_out:
            _prepare_gem5_out(gem5_out, overwrite)
    address_map, phases, batch = None, None, 1
    if access_trace:
        chunks, source = read_access_trace(access_trace), {"access_trace": str(access_trace)}
    else:
        src = StreamSource.from_options(index_log, stream)
        chunks = src.chunks(as_lines=True, reuse=True, steps=steps)
        source = _stream_provenance(src)
        address_map, phases, batch = src.amap.describe(), src.phases(steps), src.batch
    if backend == "gem5" and gem5_model == "closed-loop":
        from harness.gem5.decode_step import simulate_step_gem5

        result = simulate_step_gem5(src, cfg, timing, gem5_binary, gem5_out, steps, gem5["timeout"],
                                    extra_config={"input": source})
    elif backend == "gem5":
        from harness.gem5.replay import simulate_gem5
        from trace_gen.writers import line_chunks_of

        result = simulate_gem5(line_chunks_of(chunks), cfg, address_map, gem5_binary, gem5_out, gem5["timeout"],
                               gem5["tick_spacing_ps"], dram, gem5["clock"], l1_size, extra_config={"input": source})
    elif index_log:
        result = simulate_stream(src, cfg, timing, steps, bounds=kw["bounds"], extra_config={"input": source})
    else:
        result = run(chunks, cfg, timing, bounds=kw["bounds"], extra_config={"input": source},
                     phases=phases, batch=batch)
    text = json.dumps(result, indent=1, allow_nan=False)
    if out:
        with atomic_path(out, check) as tmp:
            tmp.write_text(text + "\n")
    click.echo(text if fmt == "json" else format_result(result))


@cli.command()
@click.option("--index-log", type=click.Path(), required=True, help="Index log folder (from `decode`).")
@setting_options("stream", "geometry", "batch")
@setting_option("timing", "platform")
@setting_options("timing", "dram_bytes_per_cycle", "warmup_steps", "overlap")
@setting_options("tier")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="table", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the JSON result here.")
@overwrite_option
def tier(index_log, fmt, out, overwrite, **kw):
    """Time decode with the KV in host memory and hot buffers in HBM (the host tier).

    Each request's hot buffer of each layer (or, with --pooled, one per layer for the batch) runs
    the --hot-policy over the log's selections; misses cross the platform's host link before the
    layer's attention. Prints the hot-buffer hit rate (per step too), the link bytes and step time
    per step, the full-HBM device's step time at the same batch, and how many requests each holds
    in --hbm with the throughput at that batch (harness/cache/tier.py defines the model)."""
    from harness.cache.tier import TierConfig, tier_platform
    from harness.cache.timing import TimingConfig
    from harness.core.files import atomic_path
    from harness.core.outputs import check_output_file
    from harness.study.tierrun import tier_of_log

    overrides = ("dram_bytes_per_cycle", "warmup_steps", "overlap")
    checked = check_options({"stream": section_values(kw, "stream", "geometry", "batch"),
                             "timing": section_values(kw, "timing", "platform", *overrides),
                             "tier": section_values(kw, "tier")})
    timing = TimingConfig.make(checked["timing"]["platform"], **{k: checked["timing"][k] for k in overrides})
    cfg = TierConfig(**checked["tier"])
    tier_platform(timing.platform, cfg.hbm)
    check = (lambda: check_output_file(out, overwrite)) if out else None  # noqa: E731
    if check:
        check()
    result = tier_of_log(index_log, checked["stream"], timing, cfg)
    text = json.dumps(result, indent=1, allow_nan=False)
    if out:
        with atomic_path(out, check) as tmp:
            tmp.write_text(text + "\n")
    click.echo(text if fmt == "json" else format_tier(result))


def format_tier(r: dict) -> str:
    """A short human-readable summary of one host-tier result."""
    hot, cap, tp, link = r["hot_buffer"], r["capacity"], r["throughput"], r["link"]
    share = "one pool per layer" if hot["pooled"] else "per request and layer"
    gain = "-" if tp["gain"] is None else f"{tp['gain']:.2f}x"
    return "\n".join([
        f"hot buffers: {hot['tokens_per_layer']:,} tokens {share}, {hot['policy']}: hit rate {hot['hit_rate']:.4f} "
        f"({hot['hits']:,} of {hot['reads']:,} token reads, {r['measured_steps']} measured steps)",
        f"link {link['name']} ({link['bytes_per_s'] / 1e9:.1f} GB/s, {link['latency_s'] * 1e6:.1f} us): "
        f"{r['link_bytes_per_step'] / 1e6:,.2f} MB per step, {r['link_wait_share']:.1%} of the step time",
        f"batch {r['batch']}: step {r['step_time_s'] * 1e3:.3f} ms, {r['batch_tokens_per_s']:,.0f} tokens/s "
        f"(full HBM: {r['full_hbm']['step_time_s'] * 1e3:.3f} ms, {r['full_hbm']['batch_tokens_per_s']:,.0f} tokens/s)",
        f"capacity at {cap['context_tokens']:,} tokens in {cap['hbm_bytes'] / 1e9:.0f} GB HBM "
        f"({cap['weights_bytes'] / 1e9:.1f} GB weights): full HBM {tp['full_max_batch']} requests, "
        f"{tp['full_batch_tokens_per_s']:,.0f} tokens/s; host tier {tp['tier_max_batch']} requests, "
        f"{tp['tier_batch_tokens_per_s']:,.0f} tokens/s ({gain}); crossover batch {tp['crossover_batch']}",
    ])


def _prepare_gem5_out(folder: str, overwrite: bool) -> None:
    """--gem5-out: new or empty, or (with --overwrite) an earlier gem5 output folder, emptied for
    the new run; gem5 writes into it as it runs (its log stays there when it fails)."""
    import shutil

    from harness.core.outputs import check_output_folder, mark_folder

    path = check_output_folder(folder, "simulate", overwrite)
    if path.is_dir() and any(path.iterdir()):
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    mark_folder(path, "simulate", backend="gem5")


@cli.command()
@click.option("--index-log", type=click.Path(), required=True, help="Index log folder.")
@stream_options
@click.option("--format", "fmt", type=click.Choice(["gem5", "parquet"]), required=True,
              help="gem5: gzip'd packet trace for TrafficGen; parquet: the generic access trace.")
@click.option("--out", type=click.Path(dir_okay=False), required=True)
@setting_option("gem5", "tick_spacing_ps")
@overwrite_option
def stream(index_log, fmt, out, tick_spacing_ps, overwrite, **kw):
    """Write the access stream of an index log to a file."""
    from harness.core.outputs import check_output_file
    from trace_gen.stream import StreamSource
    from trace_gen.writers import write_gem5_trace, write_parquet_trace

    checked = check_options({"stream": section_values(kw, "stream"), "gem5": {"tick_spacing_ps": tick_spacing_ps}})
    options, spacing = checked["stream"], checked["gem5"]["tick_spacing_ps"]
    outputs = [out] if fmt == "parquet" else [out, f"{out}.json"]

    def check():
        for path in outputs:
            check_output_file(path, overwrite)

    check()
    src = StreamSource.from_options(index_log, options)
    prov = _stream_provenance(src)
    if fmt == "parquet":
        n = write_parquet_trace(out, src.chunks(as_lines=False, reuse=True), prov, check)
        click.echo(f"wrote {n:,} requests to {out}")
    else:
        n = write_gem5_trace(out, src.chunks(as_lines=True, reuse=True), prov, spacing, check)
        click.echo(f"wrote {n:,} packets to {out} (address map in {out}.json)")


def _indexer_options(pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs; values parse as int, then float, else stay strings."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--indexer-option")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        out[key] = value
    return out


# Which backbone, its indexer fit settings and torch's threads.
backbone_options = option_group(
    setting_option("decode", "backbone", required=True),
    click.option("--indexer-option", "indexer_option", multiple=True, metavar="KEY=VALUE",
                 help="dsa indexer fit settings, e.g. d_I=64 iterations=100 (see the README)."),
    click.option("--threads", type=int, default=None,
                 help="torch threads (default: torch's choice, all cores)."),
)


def _set_threads(threads):
    if threads is not None:
        if not 1 <= threads <= 1024:
            raise click.BadParameter(f"must be between 1 and 1024, got {threads}", param_hint="--threads")
        import torch

        torch.set_num_threads(threads)


@cli.command()
@backbone_options
@setting_options("decode", "indexer", "topk", "prompt_tokens", "steps", "requests", "text", "sink_tokens",
                 "local_window", "observe_only", "index_share", "index_layers", "index_reuse")
@click.option("--recall/--no-recall", default=True, show_default=True,
              help="Log each selection's share of the dense attention mass.")
@setting_option("decode", "seed")
@click.option("--prefill-chunk", type=int, default=None,
              help="Prompt tokens per prefill pass (default: up to 2048, fewer when the batch "
                   "would make a chunk's attention mask exceed 256 MiB).")
@click.option("--refit", is_flag=True, help="Fit the dsa indexer again even if a fit is cached.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Index log folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace an index log in --out (nothing else).")
@click.option("--progress/--no-progress", default=True)
def decode(backbone, indexer_option, threads, indexer, topk, prompt_tokens, steps, requests, text,
           sink_tokens, local_window, observe_only, index_share, index_layers, index_reuse, recall, seed,
           prefill_chunk, refit, out, overwrite, progress):
    """Decode with sparse attention on a backbone and write the index log."""
    from trace_gen.decode import DecodeConfig
    from trace_gen.decode import decode as run
    from trace_gen.indexers.dsa import fit_settings

    values = check_options({"decode": dict(backbone=backbone, indexer=indexer, topk=topk, prompt_tokens=prompt_tokens,
                                           steps=steps, requests=requests, text=text, sink_tokens=sink_tokens,
                                           local_window=local_window, observe_only=observe_only,
                                           index_share=index_share, index_layers=index_layers,
                                           index_reuse=index_reuse, seed=seed)})["decode"]
    cfg = DecodeConfig(**values, recall=recall)
    cfg.validate()
    options = _indexer_options(indexer_option)
    if options and indexer != "dsa":
        raise click.UsageError(f"--indexer-option sets the dsa indexer's fit; indexer {indexer} takes none")
    fit_settings(options)
    if refit:
        options["refit"] = True
    _set_threads(threads)
    path = run(cfg, out, overwrite=overwrite, progress=progress, indexer_options=options,
               prefill_chunk=prefill_chunk)
    from trace_gen.indexlog import IndexLog

    log = IndexLog(path)
    timing = log.meta.get("timing", {})
    click.echo(f"wrote {log.rows:,} selections to {path} "
               f"({timing.get('decode_tokens_per_s', 0):.1f} tokens/s)")


@cli.command()
@backbone_options
@click.option("--refit", is_flag=True, help="Fit again even if a fit is cached or shipped.")
@click.option("--ship", is_flag=True,
              help="Also copy the fit into the package's shipped fits (trace_gen/indexers/fits; for maintainers).")
def calibrate(backbone, indexer_option, threads, refit, ship):
    """Fit (or show the cached or shipped fit of) the dsa indexer for a backbone."""
    from trace_gen.backbones import check_backbone, load_backbone
    from trace_gen.indexers.dsa import fit_settings, load_or_fit, ship_fit

    check_backbone(backbone)
    settings = fit_settings(_indexer_options(indexer_option))
    _set_threads(threads)
    bb = load_backbone(backbone)
    _, fit = load_or_fit(bb, settings, refit=refit)
    click.echo(f"dsa indexer for {bb.name}: d_I={settings['d_I']}, H_I={bb.config.num_attention_heads}, "
               f"key {int(settings['d_I']) + 4} B/token/layer; mean KL {fit['mean_kl_final']:.4f} after "
               f"{settings['iterations']} iterations on {settings['calibration_windows']} x "
               f"{settings['calibration_tokens']} tokens of {settings['calibration_text']} "
               f"({fit['seconds']:.0f} s); cached at {fit['cache_file']}")
    if ship:
        click.echo(f"shipped as {ship_fit(bb, settings)}")


@cli.command()
@click.argument("logs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Report folder to write.")
@click.option("--geometry", default=None,
              help="Also give capacities in bytes under this KV geometry (native or a preset).")
@overwrite_option
def analyze(logs, out, geometry, overwrite):
    """Locality of one or more index logs: tables, plots and a Markdown summary."""
    from harness.analysis.locality import analyze as run

    if geometry is not None:
        check_options({"stream": {"geometry": geometry}})
    tables = run(list(logs), out, geometry, overwrite=overwrite)
    s = tables["summary"]
    for row in s.itertuples():
        click.echo(f"{row.log}: overlap {row.overlap_mean:.3f}, adjacent layers {row.layer_overlap_d1:.3f}, "
                   f"runs/selection {row.runs_mean:.1f}, LRU hit rate at k x L {row.lru_hit_rate_kxl_1:.3f}")
    click.echo(f"wrote {out}/summary.md")


# How a sweep runs: where, what to redo, which gem5.
sweep_options = option_group(
    click.option("--jobs", type=int, default=None, help="Local worker processes (default: the number of cores)."),
    click.option("--scheduler", default=None, help="A Dask scheduler address (tcp://host:8786) instead of local processes."),
    click.option("--rerun-failed", is_flag=True, help="Run again the runs that failed before."),
    click.option("--force", is_flag=True, help="Use a sweep folder made by a different spec."),
    click.option("--wait", is_flag=True, help="If another sweep runs in the folder, wait for it (else refuse)."),
    setting_option("gem5", "binary"),
)


def _check_jobs(jobs):
    if jobs is not None and jobs < 1:
        raise click.BadParameter(f"must be at least 1, got {jobs}", param_hint="--jobs")


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Sweep folder.")
@sweep_options
@click.option("--dry-run", is_flag=True, help="Validate the spec and list the runs, run nothing.")
def sweep(spec, out, jobs, scheduler, rerun_failed, force, wait, gem5, dry_run):
    """Run a TOML sweep spec; re-running skips the runs that are done. A spec with a [search]
    table then searches the LLC's class knobs at every scale point and runs the finalists."""
    from pathlib import Path

    from harness.study.runs import run_id
    from harness.study.search import execute_search, scale_points, search_settings
    from harness.study.spec import load_spec
    from harness.study.sweep import check_folder, execute, run_state

    _check_jobs(jobs)
    s = load_spec(spec)
    if s.uses_gem5 or gem5:  # a binary given is checked even when no run needs it
        from harness.gem5.binary import find_gem5

        find_gem5(gem5 or s.raw.get("gem5", {}).get("binary"))
    folder = Path(out)
    check_folder(folder)
    searched = search_settings(s)
    if dry_run:
        states = [run_state(folder, run_id(r)) for r in s.runs] if (folder / "runs").is_dir() else []
        done, failed = states.count("ok"), states.count("failed")
        click.echo(f"{len(s.runs)} runs over {len(s.decodes)} index logs; in {out}: {done} done, {failed} failed, "
                   f"{len(s.runs) - done - failed} to run"
                   + (f"; then a lever search over {len(scale_points(s))} scale points" if searched else ""))
        return
    counts = execute(s, out, jobs, scheduler, rerun_failed, force, gem5_binary=gem5, wait=wait)
    click.echo(f"{counts['ok']} runs done, {counts['failed']} failed, {counts['skipped']} skipped "
               f"(finished or failed before) in {out}")
    failed = counts["failed"] + counts["still_failed"]
    if searched:
        found = execute_search(s, out, jobs, scheduler, rerun_failed, wait, echo=click.echo)
        click.echo(f"lever search: {found['points']} scale points searched in {found['seconds']['screens']:.0f} s, "
                   f"{found['finalists']} finalists run in {found['seconds']['finalists']:.0f} s, "
                   f"{found['skipped']} finished before")
        if found["failed"]:
            raise UserError(f"the lever search failed at {found['failed']} scale points or finalists; "
                            f"each finalist's error is in {out}/runs/<id>/error.json")
    if failed:
        retry = " (--rerun-failed retries them)" if counts["still_failed"] else ""
        raise UserError(f"{failed} of {len(s.runs)} runs failed{retry}; each one's error is in "
                        f"{out}/runs/<id>/error.json")


@cli.command()
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Parquet file to write (default: SWEEP_DIR/results.parquet).")
@overwrite_option
def collect(sweep_dir, out, overwrite):
    """Collect a sweep's runs into one tidy Parquet table."""
    from pathlib import Path

    from harness.study.collect import collect as run

    out = out or str(Path(sweep_dir) / "results.parquet")
    df, corrupt = run(sweep_dir, out, overwrite=overwrite)
    for problem in corrupt:
        click.echo(f"corrupt run {problem}", err=True)
    n = df._status.value_counts() if len(df) else {}
    click.echo(f"collected {len(df)} runs ({n.get('ok', 0)} ok, {n.get('failed', 0)} failed, "
               f"{n.get('stale', 0)} stale, {n.get('corrupt', 0)} corrupt) into {out}")


@cli.command()
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Report folder.")
@click.option("--policies/--no-policies", default=True, help="Include the policy sweep on the index logs.")
@overwrite_option
def report(sweep_dir, out, policies, overwrite):
    """Write the study report (Markdown and HTML with plots) for a sweep folder."""
    from harness.study.report import build_report

    r = build_report(sweep_dir, out, policies=policies, overwrite=overwrite)
    for line in r["verdict"]:
        click.echo(line.replace("**", ""))
    click.echo(f"wrote {out}/report.md and {out}/report.html")


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), default="study", show_default=True,
              help="Folder for the sweep (OUT/sweep) and the report (OUT/report).")
@click.option("--jobs", type=int, default=None, help="Worker processes (default: the number of cores).")
def demo(out, jobs):
    """The main job: the whole study on embedded defaults, then its report in OUT/report
    (an earlier demo's report there is replaced)."""
    from pathlib import Path

    from harness.core.outputs import check_output_folder
    from harness.study.demo import DEMO_SPEC
    from harness.study.report import build_report
    from harness.study.spec import loads_spec
    from harness.study.sweep import check_folder, execute

    _check_jobs(jobs)
    spec = loads_spec(DEMO_SPEC, "demo spec")
    check_folder(Path(out) / "sweep")
    check_output_folder(Path(out) / "report", "report", overwrite=True)
    click.echo(f"demo: {len(spec.runs)} simulations over {len(spec.decodes)} decodes, into {out}/")
    counts = execute(spec, Path(out) / "sweep", jobs, force=True)
    r = build_report(Path(out) / "sweep", Path(out) / "report", overwrite=True)
    for line in r["verdict"]:
        click.echo(line.replace("**", ""))
    click.echo(f"{counts['ok']} runs done, {counts['failed']} failed; report: {out}/report/report.html")


@cli.command()
@click.argument("logs", nargs=-1, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), help="With LOGS: folder for the sweep's tables and plots.")
@click.option("--policy", "names", multiple=True, help="Only these policies (repeatable; default all).")
@click.option("--param", "params", multiple=True, metavar="POLICY.KEY=VALUE",
              help="A policy parameter, e.g. pin-recent.window=64.")
@overwrite_option
def policies(logs, out, names, params, overwrite):
    """List the reservation policies; with index LOGS, sweep them over capacities.

    Two families: the project's policies (dsa-llc) and libCacheSim's eviction algorithms
    (lcs:<algorithm>). The sweep runs every policy on the fully associative token cache at 1/8,
    1/4, 1/2, 1 and 2 times one decode step's footprint (k x layers x requests tokens), beside MIN.
    The listing gives, for the policies that also run in the LLC's reserved ways, their state in
    bits (a 32 MiB, 16-way LLC with 8 ways reserved, DeepSeek-V3.2 tokens; see the README)."""
    from harness.cache.policies import POLICIES, get_policy

    if not logs:
        if out or names or params:
            raise click.UsageError("--out, --policy and --param need index LOGS to sweep")
        click.echo(f"{'policy':<16} {'family':<12} {'state in the LLC reserved ways (- not run there)':<62} description")
        for name, cls in POLICIES.items():
            cost = cls.hardware_cost()
            click.echo(f"{name:<16} {cls.family:<12} {cost.summary() if cost else '-':<62} {cls.description}")
        return
    if not out:
        raise click.UsageError("give --out for a sweep over LOGS")
    import pandas as pd

    from harness.core.files import atomic_path
    from harness.core.outputs import check_output_folder, mark_folder
    from harness.study.policy_study import (
        policy_markdown,
        policy_plots,
        policy_sweep,
        streak_vs_zoo,
    )

    by_policy: dict = {}
    for item in params:
        key, sep, value = item.partition("=")
        name, dot, param = key.partition(".")
        if not sep or not dot:
            raise click.BadParameter(f"expected POLICY.KEY=VALUE, got {item!r}", param_hint="--param")
        by_policy.setdefault(name, {})[param] = int(value) if value.lstrip("-").isdigit() else value
    for name in list(names) + list(by_policy):
        get_policy(name, **by_policy.get(name, {}))  # unknown names and parameters fail here
    check = lambda: check_output_folder(out, "policies", overwrite)  # noqa: E731
    check()
    chosen = list(dict.fromkeys(names)) or None
    if chosen and "min" not in chosen:
        chosen.append("min")
    df = pd.concat([policy_sweep(p, chosen, params=by_policy) for p in logs], ignore_index=True)
    with atomic_path(out, check) as tmp:
        tmp.mkdir()
        mark_folder(tmp, "policies")
        df.to_parquet(tmp / "policies.parquet", index=False)
        df.to_csv(tmp / "policies.csv", index=False)
        plots = policy_plots(df, tmp)
        (tmp / "policies.md").write_text(policy_markdown(df, plots))
    for failure in df.failure[df.failure != ""]:
        click.echo(f"warning: {failure}", err=True)
    for log, g in df.groupby("log", sort=False):
        quarter = g[(g.capacity_kxl == 0.25) & ~g.offline & g.hit_rate.notna()].set_index("policy")
        if quarter.empty:  # only offline policies ran (MIN)
            at_quarter = g[g.capacity_kxl == 0.25].set_index("policy")
            if "min" in at_quarter.index:
                click.echo(f"{log}: at k x L / 4 MIN hits {at_quarter.hit_rate['min']:.3f} of the token reads")
            continue
        best = quarter.hit_rate.idxmax()
        line = f"{log}: at k x L / 4 the best policy is {best} ({quarter.hit_rate[best]:.3f}"
        if "share_of_min" in quarter and quarter.share_of_min[best] == quarter.share_of_min[best]:
            line += f", {quarter.share_of_min[best]:.0%} of MIN's hits"
        click.echo(line + ")")
    for line in streak_vs_zoo(df):
        click.echo(line)
    click.echo(f"wrote {out}/policies.md")


def format_result(r: dict) -> str:
    """A short human-readable summary of one simulation result."""
    llc = r["config"]["llc"]
    lines = [f"LLC {llc['size']} B, {llc['ways']} ways, {llc['reserve_ways']} reserved "
             f"({llc['policy']}{'' if llc['whole_token_eviction'] else ', no whole-token eviction'})",
             f"{'class':<10}{'accesses':>14}{'hits':>14}{'misses':>14}{'hit rate':>10}"]
    if r.get("beyond_platform"):
        lines.insert(1, f"what-if: beyond the platform's cache controls: {'; '.join(r['beyond_platform'])}")
    rows = [("all", r)] + list(r["by_class"].items())
    for name, c in rows:
        rate = "-" if c["hit_rate"] is None else f"{c['hit_rate']:.4f}"
        lines.append(f"{name:<10}{c['accesses']:>14,}{c['hits']:>14,}{c['misses']:>14,}{rate:>10}")
    if r.get("memory_reads") is not None:
        window = f", up to {r['mshr_window']:,} requests in flight" if r.get("mshr_window") else ""
        lines.append(f"memory reads {r['memory_reads']:,}: the misses less {r['mshr_merged']:,} that waited for "
                     f"a fill already in flight (MSHR merging{window})")
    t = r["kv_tokens"]
    if t:
        lines.append(f"kv tokens: {t['accesses']:,} read, {t['full_hits']:,} full hits, "
                     f"{t['partial_hits']:,} partial, {t['misses']:,} missed")
    b = r.get("bounds")
    if b:
        lines.append(f"bounds at {b['capacity_tokens']:,} tokens: fully associative LRU "
                     f"{b['fa_lru_hits']:,} hits, MIN {b['min_hits']:,} hits")
    if "gem5" in r:
        g = r["gem5"]
        lines.append(f"gem5: evictions {r['evictions']:,}, writebacks {r['writebacks']:,}, "
                     f"{g['sim_ticks']:,} ticks simulated in {g['host_seconds'] or 0:.1f} s "
                     f"({(g['line_accesses_per_host_second'] or 0) / 1e6:.2f} M accesses/s); "
                     f"output in {g['outdir']}")
        if "step_time_cycles" in r:
            lines.append(format_step_time(r))
        return "\n".join(lines)
    lines.append(f"evictions {r['evictions']:,}, token invalidations {r['token_invalidations']:,}, "
                 f"writebacks {r['writebacks']:,}, bypasses {r['bypasses']:,}")
    lines.append(format_step_time(r))
    v = r.get("levers")
    if v and v["origin"] != "none":
        recall = "" if v.get("recall_kept") is None else f", recall kept {v['recall_kept']:.3f} (measured)"
        origin = "the log's own" if v["origin"] == "log" else "on the stream"
        lines.append(f"indexer levers ({origin}): "
                     f"share {v['index_share']}, reuse {v['index_reuse']}, {v['index_bytes']} B keys: "
                     f"{v['scan_share']:.3f} of layer-steps scan; selection kept {v['selection_kept']:.3f}{recall}")
    return "\n".join(lines)


def format_step_time(r: dict) -> str:
    """One line: decode-step time, tokens/s and where the time goes, and which model said so."""
    t = r.get("timing") or {}
    if r.get("step_time_cycles") is None:
        return f"step time: none ({r.get('steps', 0)} steps)"
    share = r.get("memory_wait_share") or {}
    waits = ", ".join(f"{k} {v:.0%}" for k, v in share.items() if v is not None)
    return (f"decode step {r['step_time_cycles']:,.0f} cycles = {r['step_time_s'] * 1e6:,.1f} us "
            f"(mean of {r['measured_steps']} of {r['steps']} steps), {r['tokens_per_s']:,.1f} tokens/s per request, "
            f"{r['batch_tokens_per_s']:,.1f} for the batch; waiting on memory: {waits or '-'} "
            f"[{t.get('produced_by', '?')}, platform {t.get('platform', '?')}]")


def main():
    cli(prog_name="dsa-harness")


if __name__ == "__main__":
    main()
