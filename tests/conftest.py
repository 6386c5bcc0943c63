import os
import shutil

import pytest
from helpers import SPEC

from harness.study.spec import loads_spec
from harness.study.sweep import execute
from trace_gen.synthetic import write_synthetic_log


def pytest_addoption(parser):
    parser.addoption("--gem5", default=None,
                     help="gem5 binary for tests marked gem5: --gem5=PATH (or GEM5=PATH in the environment)")


@pytest.fixture
def private_cache(tmp_path_factory, monkeypatch):
    """Indexer fits of tiny models go to a per-session cache, not the user's."""
    monkeypatch.setenv("DSA_LLC_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def gem5_binary(request):
    """Path of a gem5 binary, or skip (with the reason) when none is given."""
    path = request.config.getoption("--gem5") or os.environ.get("GEM5")
    if not path:
        pytest.skip("no gem5 binary: pass --gem5=PATH or set GEM5=PATH")
    resolved = shutil.which(path) or (path if os.path.isfile(path) else None)
    if not resolved:
        pytest.skip(f"gem5 binary {path!r} not found")
    return resolved


@pytest.fixture(scope="session")
def done_sweep(tmp_path_factory):
    """A finished sweep of helpers.SPEC's three runs (tests change only copies: ``sweep_copy``)."""
    folder = tmp_path_factory.mktemp("sweep") / "s"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSA_LLC_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        counts = execute(loads_spec(SPEC), folder, jobs=1, progress=False)
    assert counts["ok"] == 3
    return folder


@pytest.fixture
def sweep_copy(done_sweep, tmp_path, monkeypatch):
    """A copy of the finished sweep, with an indexer cache of its own."""
    monkeypatch.setenv("DSA_LLC_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "s"
    shutil.copytree(done_sweep, folder)
    return folder


@pytest.fixture
def log(tmp_path):
    """A small synthetic index log: 2 requests, 3 steps, 2 layers, k = 8, 40-token prompts."""
    return write_synthetic_log(tmp_path / "log", steps=3, layers=2, topk=8, prompt=40, requests=2)
