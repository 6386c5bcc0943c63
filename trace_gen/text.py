"""Real long text that every fresh machine has: Python's own standard library.

- ``python-source``: the source code of a fixed list of standard-library modules, concatenated
  (a code-assistant workload).
- ``python-docs``: the English prose of the Python reference manual that ships inside the
  standard library (``pydoc_data/topics.py``), topic by topic in sorted order.
- any other value is a path to a UTF-8 text file.

What was used (name, files, Python version, SHA-256 of the text) goes into the log metadata.
Both built-in texts depend on the Python version that runs the harness; the metadata records it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from pathlib import Path

from harness.core.errors import UserError

TEXTS = ("python-source", "python-docs")
_SOURCE_MODULES = ("argparse.py", "dataclasses.py", "functools.py", "inspect.py", "typing.py",
                   "pathlib.py", "subprocess.py", "tarfile.py", "zipfile.py", "email/message.py",
                   "http/client.py", "json/decoder.py", "logging/__init__.py", "unittest/case.py",
                   "asyncio/base_events.py", "collections/__init__.py", "difflib.py", "textwrap.py")


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
    """The text and its provenance."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if name == "python-source":
        files = [stdlib / m for m in _SOURCE_MODULES if (stdlib / m).exists()]
        text = "\n\n".join(f.read_text(encoding="utf-8") for f in files)
        info = {"files": [str(f.relative_to(stdlib)) for f in files]}
    elif name == "python-docs":
        from pydoc_data.topics import topics

        text = "\n\n".join(topics[k] for k in sorted(topics))
        info = {"files": ["pydoc_data/topics.py"]}
    else:
        check_text(name)
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read text file {name}: {e}") from None
        info = {"files": [str(path.resolve())]}
    meta = {"name": name, **info, "python": sys.version.split()[0], "chars": len(text),
            "sha256": hashlib.sha256(text.encode()).hexdigest()}
    return text, meta
