"""Errors that reach the user as one line: ``error: <message>`` and exit code 2."""


class InputError(ValueError):
    """Bad user input. The message names the file or field, what is wrong, and the fix."""
