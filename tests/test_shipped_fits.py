"""The dsa indexer fits that ship with the package (trace_gen/indexers/fits): each one's file
matches its manifest, they are the fits the demo and every example spec ask for, a decode finds a
shipped fit without fitting, and a damaged one is fitted anew rather than used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.core.files import sha256_file
from harness.study.demo import DEMO_SPEC
from harness.study.spec import load_spec, loads_spec
from trace_gen.indexers import dsa

# The context limit of each shipped backbone (its config's max_position_embeddings), which the
# long-context fit settings depend on; checked against the real backbone in the slow test.
LIMITS = {"smollm2-135m": 8192, "gemma3-270m": 32768}
# (full_sweep.toml's 366k runs take a minute to expand; its decodes need the same fits)
EXAMPLES = sorted(p for p in (Path(__file__).resolve().parent.parent / "examples").glob("*.toml")
                  if p.name != "full_sweep.toml")


def needed_fits() -> set[tuple[str, str]]:
    """(backbone, canonical settings) of every dsa fit the demo and the example specs decode with
    (the scale specs' long contexts need each backbone's long-context fit)."""
    specs = [loads_spec(DEMO_SPEC, "demo")] + [load_spec(p) for p in EXAMPLES]
    out = set()
    for spec in specs:
        for d in spec.decodes.values():
            if d["indexer"] == "dsa":
                ctx = d["prompt_tokens"] + d["steps"]
                settings = dsa.fit_settings(d.get("indexer_options") or {}, ctx, LIMITS[d["backbone"]])
                out.add((d["backbone"], json.dumps(settings, sort_keys=True)))
    return out


def test_every_shipped_fit_matches_its_manifest():
    fits = dsa.shipped_manifest()
    assert fits, "no shipped fits"
    for key, entry in fits.items():
        path = dsa.SHIPPED / f"{key}.pt"
        assert sha256_file(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
        record = json.loads((dsa.SHIPPED / f"{key}.json").read_text())
        assert record["settings"] == entry["settings"] and record["algorithm"] == dsa.FIT_VERSION == entry["algorithm"]
        # the name is the one a decode computes from the backbone's source and the settings
        backbone = type("Identity", (), {"name": entry["backbone"], "source": entry["source"]})
        assert dsa.fit_key(backbone, entry["settings"]) == key


def test_the_demo_and_the_examples_need_only_shipped_fits():
    shipped = {(e["backbone"], json.dumps(e["settings"], sort_keys=True)) for e in dsa.shipped_manifest().values()}
    missing = needed_fits() - shipped
    assert not missing, f"fits the specs need but the package lacks: {missing}"


def test_a_shipped_fit_is_found_and_a_damaged_one_is_not_used(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    import torch

    key, entry = next(iter(dsa.shipped_manifest().items()))
    state = torch.load(dsa.SHIPPED / f"{key}.pt", weights_only=True)
    # what a loaded fit is checked against: the backbone's layers and attention heads
    backbone = SimpleNamespace(name=entry["backbone"], source=entry["source"], layers=len(state),
                               config=SimpleNamespace(num_attention_heads=state[0]["b"].shape[0]))
    monkeypatch.setenv("DSA_LLC_CACHE", str(tmp_path / "cache"))  # an empty user cache
    layers, fit = dsa.load_or_fit(backbone, entry["settings"])
    assert fit["cache_file"] == str(dsa.SHIPPED / f"{key}.pt") and len(layers) == len(fit["layers"])
    # a copy of the package's fits with one byte changed: not used
    copy = tmp_path / "fits"
    shutil.copytree(dsa.SHIPPED, copy)
    data = bytearray((copy / f"{key}.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / f"{key}.pt").write_bytes(bytes(data))
    monkeypatch.setattr(dsa, "SHIPPED", copy)
    assert dsa.shipped_fit(key) is None
    assert "is damaged" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LIMITS))
def test_a_real_backbone_decodes_with_its_shipped_fit(name, tmp_path, monkeypatch):
    from trace_gen.backbones import load_backbone

    monkeypatch.setenv("DSA_LLC_CACHE", str(tmp_path / "cache"))
    bb = load_backbone(name)
    assert bb.config.max_position_embeddings == LIMITS[name]
    monkeypatch.setattr(dsa, "calibrate", lambda *a, **k: pytest.fail("fitted instead of using the shipped fit"))
    for ctx in (2048 + 24,):
        settings = dsa.fit_settings({}, ctx, LIMITS[name])
        _, fit = dsa.load_or_fit(bb, settings)
        assert fit["cache_file"].startswith(str(dsa.SHIPPED))
