"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A bad flag, config value, file or request: the message names the value and what is allowed."""
