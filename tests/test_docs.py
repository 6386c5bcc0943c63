"""The documents a user has are the repository's: every document and project path they name
resolves inside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for pattern in ("*.md", "harness/**/*.py", "trace_gen/**/*.py", "gem5_configs/**/*", "bench/*.py",
                             "tests/*.py", "examples/*", "Makefile", "pyproject.toml")
           for p in ROOT.glob(pattern) if p.is_file() and p.suffix not in (".pyc",)]
PROJECT_DIRS = ("harness/", "trace_gen/", "gem5_configs/", "bench/", "tests/", "examples/")


def test_every_named_document_is_in_the_repository():
    missing = set()
    for path in SOURCES:
        for name in re.findall(r"\b([A-Z][A-Z0-9_-]+\.md)\b", path.read_text(errors="replace")):
            if not (ROOT / name).is_file():
                missing.add(f"{path.relative_to(ROOT)}: {name}")
    assert not missing


def test_every_project_path_in_the_readme_and_design_exists():
    missing = set()
    for doc in ("README.md", "DESIGN.md"):
        for name in re.findall(r"`([A-Za-z0-9_./-]+)`", (ROOT / doc).read_text()):
            name = name.rstrip("/.")
            if name.startswith(PROJECT_DIRS) and "<" not in name and "*" not in name:
                if not (ROOT / name).exists():
                    missing.add(f"{doc}: {name}")
    assert not missing
