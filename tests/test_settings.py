"""Each setting is declared once (harness.core.settings): the spec schema, the command-line
options, the result columns and the configs' defaults all come from that declaration."""

from __future__ import annotations

import click
import pytest

from harness.cli import cli, param_name
from harness.core.settings import SETTINGS, column_name, default, option_name
from harness.study.collect import PARAMETERS
from harness.study.spec import SCHEMA, loads_spec
from trace_gen.decode import DecodeConfig
from trace_gen.stream import Layout


def _options(command: str) -> dict[str, click.Option]:
    return {o.name: o for o in cli.commands[command].params if isinstance(o, click.Option)}


# which command carries which section's options
COMMANDS = {"decode": ["decode"], "stream": ["simulate", "stream"], "llc": ["simulate"], "timing": ["simulate"],
            "sweep": ["simulate"], "gem5": ["simulate"], "tier": ["tier"], "search": []}


@pytest.mark.parametrize("section", list(SETTINGS))
def test_every_option_takes_its_default_type_and_help_from_the_declaration(section):
    for command in COMMANDS[section]:
        options = _options(command)
        for key, f in SETTINGS[section].items():
            if f.option is False or (section == "sweep" and key == "name"):
                continue
            if command == "stream" and section != "stream":
                continue
            o = options[param_name(section, key)]
            assert option_name(section, key) in o.opts
            if not (section == "gem5" and key == "model"):  # its default depends on the input
                assert o.default == f.default, (command, section, key)
            if f.kind == "bool" and not f.flag:
                assert o.secondary_opts == [f"--no-{option_name(section, key)[2:]}"]
            ctx = click.Context(cli.commands[command])
            assert o.get_help_record(ctx)[1].startswith(f.help.split("{")[0].strip()[:20])


def test_the_spec_schema_is_the_declaration():
    assert SCHEMA is SETTINGS
    spec = loads_spec('[decode]\nbackbone = "tiny-llama"\n')
    run = spec.runs[0]
    for key in set(run["decode"]) - {"backbone"}:
        assert run["decode"][key] == default("decode", key)


def test_decode_steps_default_is_the_same_in_a_spec_and_on_the_command_line():
    assert _options("decode")["steps"].default == loads_spec('[decode]\nbackbone = "tiny-llama"\n').runs[0][
        "decode"]["steps"] == DecodeConfig("tiny-llama").steps == 32


def test_config_defaults_come_from_the_declaration():
    layout = Layout()
    assert (layout.kind, layout.page_tokens, layout.page_order, layout.seed, layout.weights) == tuple(
        default("stream", k) for k in ("layout", "page_tokens", "page_order", "layout_seed", "weights"))
    assert Layout.from_settings({"layout": "contiguous", "layout_seed": 3}) == Layout(kind="contiguous", seed=3)
    with pytest.raises(TypeError):
        Layout("paged", 8)  # keyword only: a layout is never built from positions


def test_result_columns_are_the_declared_ones():
    declared = [column_name(s, k) for s in ("decode", "stream", "llc", "tier", "sweep") for k in SETTINGS[s]
                if column_name(s, k)]
    assert list(PARAMETERS) == declared
    assert "decode_steps" in PARAMETERS and "llc_bytes" in PARAMETERS and "backend" in PARAMETERS
    assert "hot_policy" in PARAMETERS and "hbm_bytes" in PARAMETERS


def test_help_lists_a_registry_only_when_shown():
    from trace_gen.geometry import PRESETS

    o = _options("simulate")["geometry"]
    text = o.get_help_record(click.Context(cli.commands["simulate"]))[1]
    assert all(name in text for name in PRESETS)
