"""The one exception type for mistakes a user can fix.

The CLI prints an `EnsembleError` as a single line and exits with code 2; anything else is a
bug in this library and exits with code 1. Messages name the thing, the value, and what is
allowed or what to do, e.g. ``recipe members[1].lr: must be > 0; got -1``.
"""


class EnsembleError(Exception):
    """A problem with the user's input (recipe, data file, member directory, CLI flag). Not a
    ValueError on purpose: the library's own ``except ValueError`` around file parsing must never
    swallow one.

    Example:
        >>> raise EnsembleError("data.train: file not found: 'x.csv'")
        Traceback (most recent call last):
        ...
        ensemble.errors.EnsembleError: data.train: file not found: 'x.csv'
    """


def one_of(options) -> str:
    """The allowed values as a set literal, for messages of the form "must be one of {...}".

    Example:
        >>> one_of(["soft", "hard"])
        "{'soft', 'hard'}"
    """
    return "{" + ", ".join(f"'{o}'" for o in options) + "}"
