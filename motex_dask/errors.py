"""Errors that reach the user as one line, ``error: <message>``, each kind with its own exit code.

Bad input is the user's to fix before running again (exit 2). The other kinds are conditions met
while running that the user must act on; finished chunks stay in the store, so the same command
resumes once they are dealt with. Anything else is a bug and ends in a traceback (exit 1).
"""


class MotexError(Exception):
    """A condition the user must act on. The message says what happened and what to do."""

    exit_code = 1


class InputError(MotexError, ValueError):
    """Bad user input. The message names the file or field, what is wrong, and the fix."""

    exit_code = 2


class OutOfSpaceError(MotexError):
    """The disk or quota is full (or a file size limit is reached) while writing outputs."""

    exit_code = 3


class ClusterError(MotexError):
    """Workers never start: the batch system cannot run the worker jobs, or they never connect."""

    exit_code = 4


class LostWorkError(MotexError):
    """A fit task was lost with its worker again and again (workers killed, e.g. out of memory)."""

    exit_code = 5


class LearnError(MotexError):
    """Learning could not train a model (every hyper-parameter trial failed)."""

    exit_code = 6


class Interrupted(MotexError):
    """Ctrl-C while a campaign was running (the message says what is saved and how to resume)."""

    exit_code = 130


#: Exit codes for the README: 0 done, then every kind above, 130 interrupted.
EXIT_CODES = {0: "finished",
              1: "an unexpected error: a bug (its traceback; please report it) or a system error (one line)",
              **{cls.exit_code: cls.__doc__.splitlines()[0] for cls in
                 (InputError, OutOfSpaceError, ClusterError, LostWorkError, LearnError)},
              130: "interrupted (Ctrl-C); while a campaign runs, its finished chunks are kept"}
