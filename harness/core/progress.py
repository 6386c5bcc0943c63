"""Progress a person can read: a live bar on a terminal, a line now and then in a log.

On a terminal, :func:`progress_bar` is a plain tqdm bar redrawn in place. Written to a file or
a CI log, the same bar prints one whole line at most every :data:`LOG_EVERY_S` seconds (and the
last state when it closes), never the carriage-return redraws that would put a bar state into
the log twice a second.
"""

from __future__ import annotations

import re
import sys

LOG_EVERY_S = 30.0
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\r\x08]")


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LogLines:
    """A file-like target for tqdm that turns each redraw into one line (control codes dropped)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = _CONTROL.sub("", text).strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(*args, file=None, **kwargs):
    """A tqdm bar on ``file`` (default stderr): live on a terminal, else a line every 30 s."""
    from tqdm import tqdm

    stream = file or sys.stderr
    if not is_terminal(stream) and not kwargs.get("disable"):
        kwargs.update(file=LogLines(stream), mininterval=LOG_EVERY_S, ascii=True, ncols=120,
                      dynamic_ncols=False)
    else:
        kwargs["file"] = stream
    return tqdm(*args, **kwargs)
