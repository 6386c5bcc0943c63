"""The output-path rule every command follows, checked before any work starts.

- A **file** (``simulate --out``, ``stream --out``, ``collect --out``) is written only where
  nothing exists yet, or over an existing file when ``--overwrite`` is given.
- A **folder** (``decode``, ``analyze``, ``policies``, ``report``) is written where nothing
  exists yet or into an empty folder; an existing folder is replaced only when it was written
  by the same command (recognised by its marker: ``dsa-harness.json``, or an index log's own
  files) and ``--overwrite`` is given. A folder holding anything else is never replaced.
- The location must be usable: no part of the path is a file, and the nearest existing folder
  is writable. Everything is written under a temporary name and renamed into place when
  complete (``harness.core.files.atomic_path``), so a failure leaves the old output as it was.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from harness.core.errors import UserError

MARKER = "dsa-harness.json"

# What each folder-writing command leaves in its folder, to recognise folders it wrote before
# it left a marker: a file it always writes and the suffixes of everything it writes.
_LEGACY = {
    "analyze": ("summary.md", (".md", ".png", ".parquet", ".csv")),
    "policies": ("policies.md", (".md", ".png", ".parquet", ".csv")),
    "report": ("report.md", (".md", ".html", ".png", ".parquet", ".csv")),
}


def check_location(path: str | os.PathLike) -> Path:
    """``path`` can be created: no ancestor is a file and the nearest existing one is a writable
    folder (one-line UserError otherwise)."""
    path = Path(path)
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: {parent} is not writable")
    return path


def check_output_file(path: str | os.PathLike, overwrite: bool) -> Path:
    """Where a command may write the file ``path`` (see the module docstring)."""
    path = check_location(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file name")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise UserError(f"{path} exists; pass --overwrite to replace it")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise UserError(f"cannot replace {path}: {path.parent} is not writable")
    return path


def written_by(folder: Path, command: str) -> bool:
    """Was ``folder`` written by ``command`` (its marker, or the files it always writes)?"""
    try:
        if (folder / MARKER).is_file():
            return json.loads((folder / MARKER).read_text()).get("command") == command
        signature, suffixes = _LEGACY[command]
        entries = list(folder.iterdir())
    except (OSError, ValueError, AttributeError, KeyError):
        return False
    return (folder / signature).is_file() and all(
        e.is_file() and e.suffix in suffixes for e in entries)


def check_output_folder(path: str | os.PathLike, command: str, overwrite: bool,
                        owned: Callable[[Path], bool] | None = None) -> Path:
    """Where ``command`` may write the folder ``path`` (see the module docstring). ``owned``
    recognises the command's own folders (default: :func:`written_by` ``command``)."""
    path = check_location(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder")
    if path.is_dir():
        try:
            empty = not any(path.iterdir())
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror}") from None
        if not empty:
            if not (owned or (lambda p: written_by(p, command)))(path):
                raise UserError(f"{path} holds files that `dsa-harness {command}` did not write; "
                                "choose another folder (nothing was changed)")
            if not overwrite:
                raise UserError(f"{path} holds an earlier `dsa-harness {command}` output; "
                                "pass --overwrite to replace it")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise UserError(f"cannot replace {path}: {path.parent} is not writable")
    return path


def mark_folder(folder: Path, command: str, **info) -> None:
    """Leave the marker that says ``command`` wrote ``folder`` (and may replace it)."""
    from harness import __version__

    record = {"command": command, "tool": f"dsa-llc {__version__}", "written": time.time(), **info}
    (folder / MARKER).write_text(json.dumps(record, indent=1) + "\n")
