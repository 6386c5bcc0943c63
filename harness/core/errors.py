"""The one exception type for bad input: the CLI prints its message on one line and exits 1."""


class UserError(Exception):
    """Input the user can fix (a missing file, an invalid option, a malformed trace)."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (library errors can span many lines)."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
