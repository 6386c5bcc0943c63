"""The one exception type for bad input: the CLI prints its message on one line and exits 1."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Input the user can fix (a missing file, an invalid option, a malformed trace).

    ``details``: further distinct problems of the same input (a spec with several mistakes); the
    CLI prints the message on its ``error:`` line and each detail on a line of its own below."""

    def __init__(self, message: str, details: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.details = list(details)


class BackendFailed(UserError):
    """A simulator process (gem5) that failed: ``log_tail``, the last lines of its output (the
    cause, kept with a sweep's failed run); ``transient``: it crashed or was killed by a signal
    rather than refusing its input, so a later sweep tries the run again."""

    def __init__(self, message: str, log_tail: list[str] | tuple[str, ...] = (), transient: bool = False):
        super().__init__(message)
        self.log_tail = list(log_tail)
        self.transient = transient


def unknown_name(what: str, value, known: Iterable[str], listing: str = "", most: int = 10) -> UserError:
    """A one-line UserError for a name not in ``known``. It names the closest known names
    (difflib) and, for a registry that a command lists (``listing``, e.g. "`dsa-harness
    policies`") or one longer than ``most``, points there instead of listing every name."""
    known = list(known)
    close = difflib.get_close_matches(str(value), known, n=3, cutoff=0.6)
    if not listing and len(known) <= most:
        return UserError(f"unknown {what} {value!r}; known: {', '.join(known)}")
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    where = f"{listing} lists them" if listing else f"{len(known)} are known: {', '.join(known[:most])}, ..."
    return UserError(f"unknown {what} {value!r}; {hint}{where}")


def problems_error(where: str, problems: list[str]) -> UserError:
    """One UserError for a list of distinct problems (order kept, duplicates dropped): the
    problem itself when there is one, else a count with every problem as a detail line.
    ``where`` (may be empty) names the input they belong to."""
    distinct = list(dict.fromkeys(problems))
    prefix = f"{where}: " if where else ""
    if len(distinct) == 1:
        return UserError(prefix + distinct[0])
    return UserError(f"{prefix}{len(distinct)} problems", distinct)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (library errors can span many lines)."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def error_line(e: BaseException) -> str:
    """An exception in one line: a UserError's own message, otherwise its type and message."""
    return first_line(e) if isinstance(e, UserError) else f"{type(e).__name__}: {first_line(e)}"
