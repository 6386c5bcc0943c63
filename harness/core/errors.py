"""The one exception type for bad input: the CLI prints its message on one line and exits 1."""

from __future__ import annotations


class UserError(Exception):
    """Input the user can fix (a missing file, an invalid option, a malformed trace).

    ``details``: further distinct problems of the same input (a spec with several mistakes); the
    CLI prints the message on its ``error:`` line and each detail on a line of its own below."""

    def __init__(self, message: str, details: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.details = list(details)


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
