import os
import shutil

import pytest


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
