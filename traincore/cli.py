"""Command-line errors the same way in every script: one line, `<script>: <what> (<how to fix>)`,
exit status 2, before anything long is printed. No traceback for bad input; a traceback still
shows for a bug (an exception no check foresaw)."""
import os
import sys

BAD_INPUT = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
             PermissionError, UnicodeDecodeError)


def message(e: BaseException) -> str:
    """An exception's text without KeyError's quotes."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


class UsageExit(SystemExit):
    """Exit status 2; str() is the line the user saw (what callers in the same process match)."""

    def __init__(self, line: str):
        super().__init__(2)
        self.line = line

    def __str__(self):
        return self.line


def usage_error(prog: str, msg: str) -> "NoReturn":  # noqa: F821
    line = f"{os.path.basename(prog)}: {msg}"
    print(line, file=sys.stderr)
    raise UsageExit(line)


def run(prog: str, main, *args, **kwargs):
    """main(*args, **kwargs), with bad input reported by usage_error."""
    try:
        return main(*args, **kwargs)
    except BAD_INPUT as e:
        usage_error(prog, message(e))
