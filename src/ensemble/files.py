"""Files and directories written whole or not at all, and the locks that keep two runs apart.

Every file a run leaves (reports, predictions, manifests, plots) goes through a temporary name
in the same folder and a rename, so a crash or a full disk never leaves half of one; a member or
an ensemble directory is built beside its final place and moved in the same way.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from glob import escape as glob_escape
from pathlib import Path
from typing import IO, Any

from .errors import EnsembleError

__all__ = ["atomic_write", "exclusive_lock", "replace_dir", "write_json"]


def atomic_write(path: Path, write: Callable[[IO], Any], binary: bool = False) -> None:
    """Call ``write(handle)`` on a temporary file beside `path`, then rename it to `path`.

    The data is synced before the rename; on any failure the temporary file is removed and
    `path` keeps what it held.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "note.txt"
        >>> atomic_write(target, lambda handle: handle.write("whole"))
        >>> target.read_text()
        'whole'
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Our own name with mode "x" rather than mkstemp: the file gets the usual umask permissions.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    text = {} if binary else {"encoding": "utf-8", "newline": ""}
    try:
        with open(temporary, "xb" if binary else "x", **text) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """`obj` as indented JSON at `path`, written whole (`atomic_write`).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "state.json"
        >>> write_json(target, {"rows": 3})
        >>> json.loads(target.read_text())
        {'rows': 3}
    """
    text = json.dumps(obj, indent=2)
    atomic_write(path, lambda handle: handle.write(text))


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished directory into place so a reader never sees a half-written one.

    Its files get the permissions the user's umask gives new files: safetensors writes weights as
    0600 (its temporary file's mode), which would keep colleagues from loading a shared member.
    Files hard-linked in from elsewhere (`Ensemble.save`, `vote`: a member's weights) keep theirs:
    a mode belongs to the inode, so changing it would change the user's own input file.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / ".new").mkdir(); _ = (root / ".new" / "config.json").write_text("{}")
        >>> replace_dir(root / ".new", root / "member")
        >>> sorted(p.name for p in root.iterdir())
        ['member']
    """
    umask = os.umask(0)
    os.umask(umask)
    for path in tmp.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_nlink == 1:
            os.chmod(path, 0o666 & ~umask)
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    moved = final.exists()
    if moved:
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if moved:
            os.replace(old, final)  # put the previous directory back rather than lose it
        raise
    shutil.rmtree(old, ignore_errors=True)


def exclusive_lock(path: Path, flags: int, busy: str) -> int:
    """Open `path` with `flags` and take an exclusive, non-blocking ``flock`` on it; the open
    descriptor holds the lock until closed. Held already: an `EnsembleError` saying `busy`.

    Example:
        >>> fd = exclusive_lock(Path("runs/demo"), os.O_RDONLY, "runs/demo is in use")  # doctest: +SKIP
    """
    import fcntl

    fd = os.open(path, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise EnsembleError(busy) from None
    return fd


def remove_stale_temps(out: Path) -> list[Path]:
    """Remove the ``.<out>.tmp-<pid>`` directories that killed runs writing `out` left beside it
    (a process still running keeps its own); the ones removed.

    Example:
        >>> remove_stale_temps(Path("runs/vote"))  # doctest: +SKIP
        [PosixPath('runs/.vote.tmp-4121')]
    """
    removed = []
    name = re.compile(re.escape(f".{out.name}.tmp-") + r"(\d+)")
    for tmp in out.parent.glob(f".{glob_escape(out.name)}.tmp-*"):
        pid = name.fullmatch(tmp.name)
        if pid is None or tmp.is_symlink() or not tmp.is_dir() or _running(int(pid.group(1))):
            continue  # not one of ours, or its process (on this machine) still runs
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
