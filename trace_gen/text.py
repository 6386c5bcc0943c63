"""Real long text that every fresh machine has: Python's own standard library.

- ``python-source``: the source code of a fixed list of standard-library modules, concatenated
  (a code-assistant workload).
- ``python-docs``: the English prose of the Python reference manual that ships inside the
  standard library (``pydoc_data/topics.py``), topic by topic in sorted order.
- ``python-stdlib``: the standard library's source files one by one (:func:`stdlib_files`), for
  batches of long prompts: each request reads its own file, so requests share no content
  (``trace_gen.prefill.prompts`` cuts the prompts).
- any other value is a path to a UTF-8 text file.

What was used (name, files, Python version, SHA-256 of the text) goes into the log metadata.
The built-in texts depend on the Python version that runs the harness; the metadata records it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from pathlib import Path

from harness.core.errors import UserError

TEXTS = ("python-source", "python-docs", "python-stdlib")
FILE_PER_REQUEST = "python-stdlib"
_SOURCE_MODULES = ("argparse.py", "dataclasses.py", "functools.py", "inspect.py", "typing.py",
                   "pathlib.py", "subprocess.py", "tarfile.py", "zipfile.py", "email/message.py",
                   "http/client.py", "json/decoder.py", "logging/__init__.py", "unittest/case.py",
                   "asyncio/base_events.py", "collections/__init__.py", "difflib.py", "textwrap.py")
# Folders left out of python-stdlib: tests, third-party packages, the manual (python-docs) and
# the codecs' generated character tables (data, not code anyone writes).
_STDLIB_SKIP = frozenset({"test", "tests", "idle_test", "site-packages", "pydoc_data", "encodings"})


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """The ``python-stdlib`` corpus: every ``.py`` file of the standard library outside the
    folders in ``_STDLIB_SKIP``, sorted by path relative to the library's root."""
    root = stdlib_root()
    names = sorted((f.relative_to(root) for f in root.rglob("*.py")), key=lambda n: n.as_posix())
    return [root / n for n in names if not _STDLIB_SKIP & set(n.parts[:-1])]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_text(name: str) -> None:
    """Is ``name`` a text :func:`load_text` can load (a built-in name or a readable file)?
    Checked without reading it, as a sweep checks its spec."""
    if name in TEXTS:
        return
    path = Path(name)
    if not path.is_file():
        raise UserError(f"text file {name} does not exist (built-in texts: {', '.join(TEXTS)})")
    if not os.access(path, os.R_OK):
        raise UserError(f"text file {name} is not readable")


def load_text(name: str) -> tuple[str, dict]:
    """One text (``python-source``, ``python-docs`` or a file) and its provenance."""
    stdlib = stdlib_root()
    if name == "python-source":
        files = [stdlib / m for m in _SOURCE_MODULES if (stdlib / m).exists()]
        text = "\n\n".join(f.read_text(encoding="utf-8") for f in files)
        info = {"files": [str(f.relative_to(stdlib)) for f in files]}
    elif name == "python-docs":
        from pydoc_data.topics import topics

        text = "\n\n".join(topics[k] for k in sorted(topics))
        info = {"files": ["pydoc_data/topics.py"]}
    elif name == FILE_PER_REQUEST:
        raise UserError(f"{name} is a set of files, not one text")  # read by prefill.prompts
    else:
        check_text(name)
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read text file {name}: {e}") from None
        info = {"files": [str(path.resolve())]}
    meta = {"name": name, **info, "python": python_version(), "chars": len(text),
            "sha256": sha256_text(text)}
    return text, meta


def python_version() -> str:
    return sys.version.split()[0]
