"""The checked settings of an `Ensemble`: each rule once, for the constructor and for assignment.

A setting people change on a loaded ensemble (``ens.batch_size = 256``) is checked when it is
assigned, as in ``__init__``, so a wrong value fails there and not deep inside predict. The
module needs only NumPy, so the CLI and `fit`'s workers check a recipe with it cheaply.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import EnsembleError, one_of
from .recipe import ABSTAIN_ON, VOTE_METHODS

ABSTAIN = "abstain"  # the label of rows the ensemble is not sure enough to answer
# Below this a temperature votes like an argmax and turns ordinary logits into float32 overflows
# (logits / 1e-39 are infinite): said as an error rather than voted as NaN.
MIN_TEMPERATURE = 1e-6


class Checked:
    """A setting whose every assignment goes through `check(owner, value)`, which returns the
    value to keep or raises (the old value then stays). `doc` is what ``help()`` shows."""

    def __init__(self, check, doc: str = "") -> None:
        self.check, self.__doc__ = check, doc

    def __set_name__(self, owner, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj, owner=None):
        return self if obj is None else getattr(obj, self.slot)

    def __set__(self, obj, value) -> None:
        setattr(obj, self.slot, self.check(obj, value))


class ReadOnlyDict(dict):
    """A dict that refuses changes in place (a setting's value: assign a whole dict to change it,
    so that the change is checked); still a dict for JSON, pickle and copies."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a setting of the ensemble is changed by assigning a whole dict, e.g. "
                        "ens.weights = {**ens.weights, 'bert': 2.0}; not in place")

    __setitem__ = __delitem__ = __ior__ = update = pop = popitem = clear = setdefault = _refuse

    def __reduce__(self):
        return (type(self), (dict(self),))


def check_abstain_label(labels: Sequence[str], setting: str | None, where: str = "") -> None:
    """Refuse abstention (`setting`: the recipe key or flag that asks for it, or None) when a
    label is named ``"abstain"``: abstaining rows could not be told from that class. Called before
    any training or prediction, so the mistake costs nothing; `where` (a recipe's file name)
    starts the message.

    Example:
        >>> check_abstain_label(["abstain", "keep"], "vote.abstain_coverage")
        Traceback (most recent call last):
        ...
        ensemble.errors.EnsembleError: vote.abstain_coverage: 'abstain' is one of the labels, so abstaining rows could not be told apart; rename that label in the data or leave vote.abstain_coverage unset
    """
    if setting is not None and ABSTAIN in labels:
        raise EnsembleError(f"{where + ': ' if where else ''}{setting}: '{ABSTAIN}' is one of the labels, so abstaining "
                            f"rows could not be told apart; rename that label in the data or leave {setting} unset")


def per_member(label: str, given: Mapping[str, float] | None, names: list[str]) -> dict[str, float]:
    """Checked weights (finite, >= 0, one > 0) or temperatures (finite, >= `MIN_TEMPERATURE`)
    for every member in `names`, 1.0 for those `given` leaves out.

    Example:
        >>> per_member("weights", {"bert": 2}, ["albert", "bert"])
        {'albert': 1.0, 'bert': 2.0}
    """
    if given is not None and not isinstance(given, Mapping):
        raise EnsembleError(f"the '{label}' parameter must be a dict of member name -> number, or None; "
                            f"got {type(given).__name__}")
    given = dict(given or {})
    for name, w in given.items():
        if name not in names:
            raise EnsembleError(f"{label}: no member named '{name}'; members: {', '.join(names)}")
        ok = is_number(w) and np.isfinite(w) and (w >= 0 if label == "weights" else w >= MIN_TEMPERATURE)
        if not ok:
            rule = ">= 0" if label == "weights" else f">= {MIN_TEMPERATURE:g}"
            raise EnsembleError(f"{label}.{name}: must be a finite number {rule}; got {w!r}")
    full = {n: float(given.get(n, 1.0)) for n in names}
    if label == "weights" and not any(full.values()):
        raise EnsembleError("weights: at least one member needs a weight > 0")
    return full


def check_method(method: str) -> str:
    if method not in VOTE_METHODS:
        raise EnsembleError(f"the 'method' parameter must be one of {one_of(VOTE_METHODS)}; got {method!r}")
    return method


def check_abstain_on(abstain_on: str) -> str:
    if abstain_on not in ABSTAIN_ON:
        raise EnsembleError(f"the 'abstain_on' parameter must be one of {one_of(ABSTAIN_ON)}; got {abstain_on!r}")
    return abstain_on


def check_abstain_below(value: float | None, labels: Sequence[str] = ()) -> float | None:
    if value is not None and not (is_number(value) and 0 <= value <= 1):
        raise EnsembleError(f"the 'abstain_below' parameter must be a number in [0, 1] or None; got {value!r}")
    if value is not None and ABSTAIN in labels:
        raise EnsembleError(f"abstain_below: '{ABSTAIN}' is one of the labels, so abstaining rows could not be "
                            "told apart; rename that label or leave abstain_below unset")
    return None if value is None else float(value)


def check_batch_size(value: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) or value < 1:
        raise EnsembleError(f"the 'batch_size' parameter must be an integer >= 1; got {value!r}")
    return int(value)


def check_ensemble_temperature(value: float) -> float:
    if not (is_number(value) and np.isfinite(value) and value > 0):
        raise EnsembleError(f"the 'ensemble_temperature' parameter must be a finite number > 0; got {value!r}")
    return float(value)


def is_number(value) -> bool:
    """A real number, numpy's scalars included; not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
