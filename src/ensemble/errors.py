"""The one exception type for mistakes a user can fix.

The CLI prints an `EnsembleError` as a single line and exits with code 2; anything else is a
bug in this library and exits with code 1. Messages name the thing, the value, and what is
allowed or what to do, e.g. ``recipe members[1].lr: must be > 0; got -1``. `machine_problem`
turns the machine's own failures (a full disk, a read-only directory) into such lines too.
"""

import errno


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


def rows_phrase(count: int, what: str) -> str:
    """"N <what> row(s) has/have", the start of the messages that count rows.

    Example:
        >>> rows_phrase(1, "test"), rows_phrase(3, "--data")
        ('1 test row has', '3 --data rows have')
    """
    return f"{count} {what} row{'s' if count != 1 else ''} {'has' if count == 1 else 'have'}"


# The machine's problems, not the library's: the user can act on them (exit 2, not 1). What to do
# after each; with --resume, fit and predict keep what was finished.
_ROOM = "make room and rerun (with --resume, fit and predict keep what was finished)"
_DISK_ERRORS = {errno.ENOSPC: ("disk full", _ROOM), errno.EDQUOT: ("disk quota exceeded", _ROOM),
                errno.EFBIG: ("file too large for this file system or the shell's file-size limit (ulimit -f)", _ROOM),
                errno.EROFS: ("read-only file system", "choose an --out on a writable file system"),
                errno.EACCES: ("permission denied", "choose an --out you can write to, or fix its permissions"),
                errno.EPERM: ("permission denied", "choose an --out you can write to, or fix its permissions")}
# safetensors and torch's checkpoint writer report the same failures as their own exceptions
_DISK_MESSAGES = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
                  "File too large": errno.EFBIG, "Read-only file system": errno.EROFS}


# what to do about each, said where the caller words the rest (predict's partial output)
DISK_FIX = {errno.ENOSPC: "make room", errno.EDQUOT: "make room", errno.EFBIG: "raise the file-size limit",
            errno.EROFS: "choose an --out on a writable file system",
            errno.EACCES: "choose an --out you can write to, or fix its permissions",
            errno.EPERM: "choose an --out you can write to, or fix its permissions"}


def disk_problem(exc: BaseException) -> str | None:
    """What an OSError met while writing is, in words ("disk full"), when the user can act on it.

    Example:
        >>> disk_problem(OSError(errno.ENOSPC, "No space left on device")), disk_problem(OSError(errno.EIO, "I/O"))
        ('disk full', None)
    """
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
        return _DISK_ERRORS[exc.errno][0]
    return None


def machine_problem(exc: BaseException) -> str | None:
    """The one-line error for a full disk, a read-only or forbidden directory, or a file-size limit
    met while writing (`exc` from Python, safetensors or torch), else None.

    Example:
        >>> machine_problem(OSError(errno.ENOSPC, "No space left on device", "runs/x/ensemble.json"))
        "disk full while writing 'runs/x/ensemble.json'; nothing half-written was kept as a result: make room and rerun (with --resume, fit and predict keep what was finished)"
        >>> machine_problem(ValueError("bad")) is None
        True
    """
    code, where = None, ""
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
        code, where = exc.errno, f" '{exc.filename}'" if exc.filename else ""
    elif type(exc).__name__ in ("SafetensorError", "RuntimeError"):
        text = str(exc)
        code = next((c for message, c in _DISK_MESSAGES.items() if message in text), None)
        if code is None and "inline_container" in text and "unexpected pos" in text:
            return ("writing a checkpoint failed part-way (a full disk or a file-size limit?); nothing half-written "
                    f"was kept as a result: {_ROOM}")
    if code is None:
        return None
    what, fix = _DISK_ERRORS[code]
    return f"{what} while writing{where}; nothing half-written was kept as a result: {fix}"
