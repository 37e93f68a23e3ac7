"""An ensemble directory on disk: ``ensemble.json`` read and checked, members linked, written whole.

The manifest is JSON (labels, vote method, weights, temperatures, the stacker's coefficients,
abstention, member paths); members are Hugging Face directories under ``members/<name>/``. It is
written last, so a directory that has it is complete; nothing in it is executed on loading.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import EnsembleError
from .files import replace_dir, write_json
from .labels import sorted_labels
from .members import Member, load_member

if TYPE_CHECKING:
    from .ensemble import Ensemble

MANIFEST = "ensemble.json"
FORMAT = "ensemble/1"


def read(path: str | os.PathLike) -> tuple[dict, list[Member]]:
    """The checked manifest of ensemble directory `path` and its members, loaded.

    Example:
        >>> manifest, members = read("runs/demo")  # doctest: +SKIP
        >>> manifest["method"], [m.name for m in members]  # doctest: +SKIP
        ('soft', ['albert', 'electra', 'roberta', 'bert'])
    """
    if not isinstance(path, str | os.PathLike):
        raise EnsembleError(f"Ensemble.load: path must be a str or Path; got {type(path).__name__} {path!r}")
    path = Path(path).expanduser()
    manifest_file = path / MANIFEST
    if path.name == MANIFEST and path.is_file():
        raise EnsembleError(f"ensemble '{path}': the manifest itself; pass its directory '{path.parent}'")
    if not manifest_file.is_file():
        if (path / "config.json").is_file():
            raise EnsembleError(f"ensemble '{path}': a member directory (a member or a distilled student), not an "
                                f"ensemble; predict with it through 'ensemble vote --members {path} --data FILE --out "
                                f"DIR' (then 'ensemble predict --ensemble DIR'), or Ensemble.from_dirs({{'{path.name}': "
                                f"'{path}'}})")
        missing = "no such directory" if not path.exists() else f"no {MANIFEST}"
        raise EnsembleError(f"ensemble '{path}': {missing}; pass the --out directory of a finished "
                            "'ensemble fit' or 'ensemble vote'")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EnsembleError(f"ensemble '{path}': {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("members"), dict):
        raise EnsembleError(f"ensemble '{path}': {MANIFEST} is not an ensemble manifest (format '{FORMAT}')")
    root = path.resolve()
    members = []
    for name, rel in manifest["members"].items():
        member_dir = (root / str(rel)).resolve()
        if root not in member_dir.parents:
            raise EnsembleError(f"ensemble '{path}': member '{name}' path '{rel}' points outside the ensemble directory")
        members.append(load_member(member_dir, name))
    # the manifest's class order is the one its weights and stacker were fitted in; it must be
    # an order this library writes (the members' shared one or sorted; before, the first
    # member's): any other is an edit that would relabel every prediction
    recorded = manifest.get("labels")
    if members and recorded is not None and recorded not in (list(members[0].labels), sorted_labels(members[0].labels)):
        raise EnsembleError(f"ensemble '{path}': {MANIFEST}: labels {recorded!r} are not the members' labels "
                            f"{members[0].labels!r} in their order; it was edited or belongs to other members: "
                            "vote them again ('ensemble vote')")
    return manifest, members


def save(ens: Ensemble, path: str | os.PathLike, overwrite: bool = False) -> None:
    """`Ensemble.save`: `ens` built as a directory next to `path` and renamed into place."""
    if not isinstance(path, (str, os.PathLike)):
        raise EnsembleError(f"Ensemble.save: the 'path' parameter must be a directory path; got {path!r}")
    if not ens.weights_learned and ens.method in ("weighted", "selection"):  # loaded, they would count as learned
        raise EnsembleError(f"Ensemble.save: method '{ens.method}' has no weights of its own yet: call fit_vote, or "
                            "assign ens.weights, before saving")
    if not isinstance(overwrite, (bool, np.bool_)):  # "no" would be truthy, and replace a directory
        raise EnsembleError(f"Ensemble.save: the 'overwrite' parameter must be True or False; got {overwrite!r}")
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise EnsembleError(f"Ensemble.save: '{path}' is a file; give a directory path")
    _check_not_over_members(ens, path)
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise EnsembleError(f"Ensemble.save: '{path}' is not empty; choose a new directory, or pass "
                            "overwrite=True to replace it (its other files go with it)")
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_into(ens, tmp)
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_into(ens: Ensemble, path: Path) -> None:
    """The manifest and the members (hard links where possible) written into the existing
    directory `path`, next to what it holds (the CLI's run directory, being built)."""
    path = Path(path)
    for name, member in ens.members.items():
        target = path / "members" / name
        if member.path is not None and member.path.resolve() != target.resolve():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(member.path, target, copy_function=_link_or_copy)
    write_json(path / MANIFEST, ens.manifest())


def _check_not_over_members(ens: Ensemble, path: Path) -> None:
    """Refuse a save that would delete or replace what a member is read from: `path` inside a
    member's directory, or holding one anywhere but where this save writes it
    (``path/members/NAME``, which is saving an ensemble over its own directory)."""
    target = path.resolve()
    for name, member in ens.members.items():
        if member.path is None:
            continue
        if not member.path.is_dir():  # its files are copied (linked) from there
            raise EnsembleError(f"Ensemble.save: member '{name}' was loaded from '{member.path}', which is gone; "
                                "put it back, or save an ensemble without it")
        source = member.path.resolve()
        if source == target or source in target.parents:
            raise EnsembleError(f"Ensemble.save: '{path}' is inside member '{name}' ('{member.path}'), which this "
                                "ensemble reads; save it to another directory")
        if target in source.parents and source != target / "members" / name:
            raise EnsembleError(f"Ensemble.save: '{path}' holds member '{name}' ('{member.path}'), which replacing "
                                "it would delete; save it to another directory")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
