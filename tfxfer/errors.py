"""Errors the CLI prints as one line, without a traceback: a user's (exit code 2) and failed work (1)."""


class UserError(Exception):
    """A bad flag, config value, file or request: the message names the value and what is allowed."""


class RunFailed(Exception):
    """Work that was started and failed (a worker process of a grid): the CLI prints it as one line
    and exits with code 1."""


def names_list(values, name: str) -> list:
    """`values` (a list or tuple of names or numbers) as a list. A string is refused: the library
    takes ['conv5', 'fc7'], and only the command line parses 'conv5,fc7'."""
    if isinstance(values, str):
        raise TypeError(f"{name} takes a list, e.g. {[v.strip() for v in values.split(',')]!r}, not the string "
                        f"{values!r}")
    return list(values)
