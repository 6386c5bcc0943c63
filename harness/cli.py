"""``dsa-harness``: a thin click layer over the library. Errors the user can fix print one line."""

from __future__ import annotations

import json
import sys

import click

from harness import __version__
from harness.core.errors import UserError


class _Group(click.Group):
    """A click group whose errors are one line on stderr and a non-zero exit, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


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


# LLC geometry, reservation and timing options shared by the simulating commands.
llc_options = option_group(
    click.option("--llc-size", default="32MiB", show_default=True,
                 help="LLC capacity (KiB/MiB/GiB strings or bytes)."),
    click.option("--ways", type=int, default=16, show_default=True, help="Associativity."),
    click.option("--reserve-ways", type=int, default=0, show_default=True,
                 help="Ways reserved for kv/kv_write lines (0 = unpartitioned baseline)."),
    click.option("--policy", default="token-lru", show_default=True,
                 help="Replacement policy of the reserved ways (see `dsa-harness policies`)."),
    click.option("--whole-token-eviction/--no-whole-token-eviction", default=True,
                 show_default=True, help="token-lru: evicting a line evicts its whole token."),
    click.option("--bounds/--no-bounds", default=True, show_default=True,
                 help="Also compute the fully associative LRU and MIN token bounds."),
    click.option("--llc-hit-cycles", type=int, default=40, show_default=True),
    click.option("--dram-latency-cycles", type=int, default=200, show_default=True),
    click.option("--max-outstanding", type=int, default=32, show_default=True,
                 help="Outstanding-miss limit of the timing model."),
    click.option("--dram-bytes-per-cycle", type=float, default=64.0, show_default=True),
)


def _llc_and_timing(kw: dict):
    from harness.cache.llc import LLCConfig
    from harness.cache.timing import TimingConfig

    cfg = LLCConfig.make(kw["llc_size"], kw["ways"], kw["reserve_ways"], kw["policy"],
                         kw["whole_token_eviction"])
    timing = TimingConfig(kw["llc_hit_cycles"], kw["dram_latency_cycles"], kw["max_outstanding"],
                          kw["dram_bytes_per_cycle"])
    timing.validate()
    return cfg, timing


# How an index log becomes an access stream: KV geometry and layout.
stream_options = option_group(
    click.option("--geometry", default="native", show_default=True,
                 help="KV geometry: native (the log's backbone) or a preset "
                      "(deepseek-v3.2, glm-5, llama-3.1-8b, llama-3.1-70b)."),
    click.option("--layout", type=click.Choice(["contiguous", "paged"]), default="paged",
                 show_default=True),
    click.option("--page-tokens", type=int, default=64, show_default=True,
                 help="Tokens per page of the paged layout."),
    click.option("--page-order", type=click.Choice(["in-order", "shuffled"]), default="in-order",
                 show_default=True, help="Physical page allocation order."),
    click.option("--layout-seed", type=int, default=0, show_default=True,
                 help="Seed of the shuffled page order."),
    click.option("--weights/--no-weights", default=False, show_default=True,
                 help="Stream each layer's weights once per step (geometry's weight_bytes)."),
)


def _stream_provenance(src) -> dict:
    return {"tool": f"dsa-llc {__version__}", "index_log": str(src.log.folder),
            "index_log_config_hash": src.log.meta.get("config_hash"),
            "backbone": src.log.meta["backbone"]["name"], "indexer": src.log.meta["indexer"],
            "geometry": src.geometry.to_dict(), "layout": src.layout.to_dict(),
            "address_map": src.amap.describe()}


@cli.command()
@click.option("--access-trace", type=click.Path(dir_okay=False),
              help="Generic access trace: .npy addresses, or Parquet/CSV with an addr column.")
@click.option("--index-log", type=click.Path(), help="Index log folder (from `decode`).")
@stream_options
@llc_options
@click.option("--backend", type=click.Choice(["builtin", "gem5"]), default="builtin", show_default=True,
              help="builtin: the fast model; gem5: your gem5 binary with dsa-llc's extension.")
@click.option("--gem5", "gem5_binary", default=None, help="gem5 binary (default: $GEM5).")
@click.option("--gem5-out", type=click.Path(file_okay=False), default=None,
              help="gem5: folder for traces, logs and stats (default: a new temporary folder).")
@click.option("--gem5-timeout", type=float, default=3600, show_default=True, help="gem5: seconds.")
@click.option("--tick-spacing-ps", type=int, default=1_000_000, show_default=True,
              help="gem5: picoseconds between requests (1 us: no two overlap).")
@click.option("--dram", default="DDR4_2400_8x8", show_default=True, help="gem5: DRAM model.")
@click.option("--clock", default="2GHz", show_default=True, help="gem5: system clock.")
@click.option("--l1-size", default=None, help="gem5: a private cache per generator (default: none).")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="table",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the JSON result here.")
def simulate(access_trace, index_log, backend, gem5_binary, gem5_out, gem5_timeout, tick_spacing_ps,
             dram, clock, l1_size, fmt, out, **kw):
    """Simulate an access stream through the built-in LLC model or gem5.

    The stream is a generic access trace (--access-trace) or is generated on the fly from an
    index log under a KV geometry and layout (--index-log)."""
    from harness.cache.simulate import simulate as run
    from harness.core.accesstrace import read_access_trace
    from harness.core.units import write_text_atomic
    from trace_gen.stream import StreamSource

    if bool(access_trace) == bool(index_log):
        raise click.UsageError("give exactly one of --access-trace and --index-log")
    cfg, timing = _llc_and_timing(kw)
    address_map = None
    if access_trace:
        chunks, source = read_access_trace(access_trace), {"access_trace": str(access_trace)}
    else:
        src = StreamSource.from_options(index_log, kw)
        chunks, source = src.chunks(as_lines=True, reuse=True), _stream_provenance(src)
        address_map = src.amap.describe()
    if backend == "gem5":
        from harness.gem5.launcher import simulate_gem5
        from trace_gen.writers import line_chunks_of

        result = simulate_gem5(line_chunks_of(chunks), cfg, address_map, gem5_binary, gem5_out, gem5_timeout,
                               tick_spacing_ps, dram, clock, l1_size, extra_config={"input": source})
    else:
        result = run(chunks, cfg, timing, bounds=kw["bounds"], extra_config={"input": source})
    text = json.dumps(result, indent=1)
    if out:
        write_text_atomic(out, text + "\n")
    click.echo(text if fmt == "json" else format_result(result))


@cli.command()
@click.option("--index-log", type=click.Path(), required=True, help="Index log folder.")
@stream_options
@click.option("--format", "fmt", type=click.Choice(["gem5", "parquet"]), required=True,
              help="gem5: gzip'd packet trace for TrafficGen; parquet: the generic access trace.")
@click.option("--out", type=click.Path(dir_okay=False), required=True)
@click.option("--tick-spacing-ps", type=int, default=1_000_000, show_default=True,
              help="gem5: picoseconds between packets (1 us keeps requests from overlapping).")
def stream(index_log, fmt, out, tick_spacing_ps, **kw):
    """Write the access stream of an index log to a file."""
    from trace_gen.stream import StreamSource
    from trace_gen.writers import write_gem5_trace, write_parquet_trace

    src = StreamSource.from_options(index_log, kw)
    prov = _stream_provenance(src)
    if fmt == "parquet":
        n = write_parquet_trace(out, src.chunks(as_lines=False, reuse=True), prov)
        click.echo(f"wrote {n:,} requests to {out}")
    else:
        if tick_spacing_ps < 1:
            raise click.BadParameter("must be at least 1", param_hint="--tick-spacing-ps")
        n = write_gem5_trace(out, src.chunks(as_lines=True, reuse=True), prov, tick_spacing_ps)
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
    click.option("--backbone", required=True,
                 help="smollm2-135m, gemma3-270m, tiny-llama, tiny-gemma, tiny-dsa, or a folder, .gguf "
                      "file or hub id."),
    click.option("--indexer-option", "indexer_option", multiple=True, metavar="KEY=VALUE",
                 help="dsa indexer fit settings, e.g. d_I=64 iterations=100 (see the README)."),
    click.option("--threads", type=int, default=None,
                 help="torch threads (default: torch's choice, all cores)."),
)


def _set_threads(threads):
    if threads is not None:
        if threads < 1:
            raise click.BadParameter("must be at least 1", param_hint="--threads")
        import torch

        torch.set_num_threads(threads)


@cli.command()
@backbone_options
@click.option("--indexer", default="dsa", show_default=True, help="dsa, oracle or native.")
@click.option("--topk", type=int, default=256, show_default=True, help="Tokens selected per layer and step.")
@click.option("--prompt-tokens", type=int, default=2048, show_default=True)
@click.option("--steps", type=int, default=128, show_default=True, help="Decode steps (new tokens).")
@click.option("--requests", type=int, default=1, show_default=True,
              help="Concurrent requests, each with its own prompt (batched).")
@click.option("--text", default="python-source", show_default=True,
              help="python-source, python-docs, python-stdlib (one file per request), or a UTF-8 text file.")
@click.option("--sink-tokens", type=int, default=0, show_default=True,
              help="Always select the first N positions.")
@click.option("--local-window", type=int, default=0, show_default=True,
              help="Always select the last N positions.")
@click.option("--observe-only", is_flag=True, help="Keep dense attention; only log the selections.")
@click.option("--recall/--no-recall", default=True, show_default=True,
              help="Log each selection's share of the dense attention mass.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--prefill-chunk", type=int, default=None,
              help="Prompt tokens per prefill pass (default: up to 2048, fewer when the batch "
                   "would make a chunk's attention mask exceed 256 MiB).")
@click.option("--refit", is_flag=True, help="Fit the dsa indexer again even if a fit is cached.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Index log folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing log in --out.")
@click.option("--progress/--no-progress", default=True)
def decode(backbone, indexer_option, threads, indexer, topk, prompt_tokens, steps, requests, text,
           sink_tokens, local_window, observe_only, recall, seed, prefill_chunk, refit, out, overwrite,
           progress):
    """Decode with sparse attention on a backbone and write the index log."""
    from trace_gen.decode import DecodeConfig
    from trace_gen.decode import decode as run

    _set_threads(threads)
    cfg = DecodeConfig(backbone, indexer, topk, prompt_tokens, steps, requests, text, sink_tokens,
                       local_window, observe_only, recall, seed)
    options = _indexer_options(indexer_option)
    if refit:
        options["refit"] = True
    path = run(cfg, out, overwrite=overwrite, progress=progress, indexer_options=options,
               prefill_chunk=prefill_chunk)
    from trace_gen.indexlog import IndexLog

    log = IndexLog(path)
    timing = log.meta.get("timing", {})
    click.echo(f"wrote {log.rows:,} selections to {path} "
               f"({timing.get('decode_tokens_per_s', 0):.1f} tokens/s)")


@cli.command()
@backbone_options
@click.option("--refit", is_flag=True, help="Fit again even if a fit is cached.")
def calibrate(backbone, indexer_option, threads, refit):
    """Fit (or show the cached fit of) the dsa indexer for a backbone."""
    from trace_gen.backbones import load_backbone
    from trace_gen.indexers.dsa import fit_settings, load_or_fit

    _set_threads(threads)
    bb = load_backbone(backbone)
    settings = fit_settings(_indexer_options(indexer_option))
    _, fit = load_or_fit(bb, settings, refit=refit)
    click.echo(f"dsa indexer for {bb.name}: d_I={settings['d_I']}, H_I={bb.config.num_attention_heads}, "
               f"key {int(settings['d_I']) + 4} B/token/layer; mean KL {fit['mean_kl_final']:.4f} after "
               f"{settings['iterations']} iterations on {settings['calibration_windows']} x "
               f"{settings['calibration_tokens']} tokens of {settings['calibration_text']} "
               f"({fit['seconds']:.0f} s); cached at {fit['cache_file']}")


@cli.command()
@click.argument("logs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Report folder to write.")
@click.option("--geometry", default=None,
              help="Also give capacities in bytes under this KV geometry (native or a preset).")
def analyze(logs, out, geometry):
    """Locality of one or more index logs: tables, plots and a Markdown summary."""
    from harness.analysis.locality import analyze as run

    tables = run(list(logs), out, geometry)
    s = tables["summary"]
    for row in s.itertuples():
        click.echo(f"{row.log}: overlap {row.overlap_mean:.3f}, runs/selection {row.runs_mean:.1f}, "
                   f"LRU hit rate at k x L {row.lru_hit_rate_kxl_1:.3f}")
    click.echo(f"wrote {out}/summary.md")


# How a sweep runs: where, what to redo, which gem5.
sweep_options = option_group(
    click.option("--jobs", type=int, default=None, help="Local worker processes (default: the number of cores)."),
    click.option("--scheduler", default=None, help="A Dask scheduler address (tcp://host:8786) instead of local processes."),
    click.option("--rerun-failed", is_flag=True, help="Run again the runs that failed before."),
    click.option("--force", is_flag=True, help="Use a sweep folder made by a different spec."),
    click.option("--gem5", "gem5_binary", default=None, help="gem5 binary for gem5 runs (default: $GEM5)."),
)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Sweep folder.")
@sweep_options
@click.option("--dry-run", is_flag=True, help="Validate the spec and list the runs, run nothing.")
def sweep(spec, out, jobs, scheduler, rerun_failed, force, gem5_binary, dry_run):
    """Run a TOML sweep spec; re-running skips the runs that are done."""
    from harness.study.sweep import execute, load_spec, run_id, run_state

    s = load_spec(spec)
    if dry_run:
        from pathlib import Path

        done = sum(run_state(Path(out), run_id(r)) == "ok" for r in s.runs) if Path(out, "runs").is_dir() else 0
        click.echo(f"{len(s.runs)} runs over {len(s.decodes)} index logs; {done} already done in {out}")
        return
    counts = execute(s, out, jobs, scheduler, rerun_failed, force, gem5_binary=gem5_binary)
    click.echo(f"{counts['ok']} runs done, {counts['failed']} failed, {counts['skipped']} skipped (done before) in {out}")
    if counts["failed"]:
        raise SystemExit(1)


@cli.command()
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Parquet file to write (default: SWEEP_DIR/results.parquet).")
def collect(sweep_dir, out):
    """Collect a sweep's runs into one tidy Parquet table."""
    from pathlib import Path

    from harness.study.collect import collect as run

    out = out or str(Path(sweep_dir) / "results.parquet")
    df, bad = run(sweep_dir, out)
    for b in bad:
        click.echo(f"unreadable run {b}", err=True)
    n = df._status.value_counts() if len(df) else {}
    click.echo(f"collected {len(df)} runs ({n.get('ok', 0)} ok, {n.get('failed', 0)} failed, "
               f"{n.get('stale', 0)} stale, {len(bad)} unreadable) into {out}")


@cli.command()
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Report folder.")
@click.option("--policies/--no-policies", default=True, help="Include the policy sweep on the index logs.")
def report(sweep_dir, out, policies):
    """Write the study report (Markdown and HTML with plots) for a sweep folder."""
    from harness.study.report import build_report

    r = build_report(sweep_dir, out, policies=policies)
    from harness.study.report import verdict

    for line in verdict(r["headline"]):
        click.echo(line.replace("**", ""))
    click.echo(f"wrote {out}/report.md and {out}/report.html")


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), default="study", show_default=True,
              help="Folder for the sweep (OUT/sweep) and the report (OUT/report).")
@click.option("--jobs", type=int, default=None, help="Worker processes (default: the number of cores).")
def demo(out, jobs):
    """The main job: the whole study on embedded defaults, then its report in OUT/report."""
    from pathlib import Path

    from harness.study.demo import DEMO_SPEC
    from harness.study.report import build_report, verdict
    from harness.study.sweep import execute, loads_spec

    spec = loads_spec(DEMO_SPEC, "demo spec")
    click.echo(f"demo: {len(spec.runs)} simulations over {len(spec.decodes)} decodes, into {out}/")
    counts = execute(spec, Path(out) / "sweep", jobs, force=True)
    r = build_report(Path(out) / "sweep", Path(out) / "report")
    for line in verdict(r["headline"]):
        click.echo(line.replace("**", ""))
    click.echo(f"{counts['ok']} runs done, {counts['failed']} failed; report: {out}/report/report.html")


@cli.command()
@click.argument("logs", nargs=-1, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), help="With LOGS: folder for the sweep's tables and plots.")
@click.option("--policy", "names", multiple=True, help="Only these policies (repeatable; default all).")
@click.option("--param", "params", multiple=True, metavar="POLICY.KEY=VALUE",
              help="A policy parameter, e.g. pin-recent.window=64.")
def policies(logs, out, names, params):
    """List the reservation policies; with index LOGS, sweep them over capacities.

    The sweep runs every policy on the fully associative token cache at 1/8, 1/4, 1/2, 1 and 2
    times one decode step's footprint (k x layers x requests tokens), beside MIN."""
    from harness.cache.policies import POLICIES, get_policy

    if not logs:
        click.echo(f"{'policy':<12} {'LLC ways':<9} description")
        for name, cls in POLICIES.items():
            where = "yes" if name in _reserved_policies() else "-"
            click.echo(f"{name:<12} {where:<9} {cls.description}")
        return
    if not out:
        raise click.UsageError("give --out for a sweep over LOGS")
    import pandas as pd

    from harness.core.units import atomic_path
    from harness.study.policy_study import policy_markdown, policy_plots, policy_sweep

    by_policy: dict = {}
    for item in params:
        key, sep, value = item.partition("=")
        name, dot, param = key.partition(".")
        if not sep or not dot:
            raise click.BadParameter(f"expected POLICY.KEY=VALUE, got {item!r}", param_hint="--param")
        by_policy.setdefault(name, {})[param] = int(value) if value.lstrip("-").isdigit() else value
    for name in list(names) + list(by_policy):
        get_policy(name, **by_policy.get(name, {}))  # unknown names and parameters fail here
    chosen = list(names) or None
    if chosen and "min" not in chosen:
        chosen.append("min")
    df = pd.concat([policy_sweep(p, chosen, params=by_policy) for p in logs], ignore_index=True)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        df.to_parquet(tmp / "policies.parquet", index=False)
        df.to_csv(tmp / "policies.csv", index=False)
        plots = policy_plots(df, tmp)
        (tmp / "policies.md").write_text(policy_markdown(df, plots))
    for log, g in df.groupby("log", sort=False):
        quarter = g[g.capacity_kxl == 0.25].set_index("policy")
        best = quarter.drop(index=["min"], errors="ignore").hit_rate.idxmax()
        line = f"{log}: at k x L / 4 the best policy is {best} ({quarter.hit_rate[best]:.3f}"
        if "share_of_min" in quarter:
            line += f", {quarter.share_of_min[best]:.0%} of MIN's hits"
        click.echo(line + ")")
    click.echo(f"wrote {out}/policies.md")


def _reserved_policies():
    from harness.cache.llc import RESERVED_POLICIES

    return RESERVED_POLICIES


def format_result(r: dict) -> str:
    """A short human-readable summary of one simulation result."""
    llc = r["config"]["llc"]
    lines = [f"LLC {llc['size']} B, {llc['ways']} ways, {llc['reserve_ways']} reserved "
             f"({llc['policy']}{'' if llc['whole_token_eviction'] else ', no whole-token eviction'})",
             f"{'class':<10}{'accesses':>14}{'hits':>14}{'misses':>14}{'hit rate':>10}"]
    rows = [("all", r)] + list(r["by_class"].items())
    for name, c in rows:
        rate = "-" if c["hit_rate"] is None else f"{c['hit_rate']:.4f}"
        lines.append(f"{name:<10}{c['accesses']:>14,}{c['hits']:>14,}{c['misses']:>14,}{rate:>10}")
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
                     f"{g['sim_ticks']:,} ticks simulated in {g['host_seconds']:.1f} s "
                     f"({(g['line_accesses_per_host_second'] or 0) / 1e6:.2f} M accesses/s); "
                     f"output in {g['outdir']}")
        return "\n".join(lines)
    lines.append(f"evictions {r['evictions']:,}, token invalidations {r['token_invalidations']:,}, "
                 f"writebacks {r['writebacks']:,}, bypasses {r['bypasses']:,}")
    per_step = r["stall_cycles_per_step"]
    lines.append(f"stall cycles {r['stall_cycles']:,.0f} over {r['steps']} steps"
                 + (f" ({per_step:,.0f} per step)" if per_step is not None else ""))
    return "\n".join(lines)


def main():
    cli(prog_name="dsa-harness")


if __name__ == "__main__":
    main()
