"""Label names: clean strings from whatever a file holds, a stable order, checks against training.

A label is always a string: ``1``, ``1.0`` and ``"1"`` in a file are the same class, ``"1"``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .errors import EnsembleError

if TYPE_CHECKING:
    from .data import TextDataset


def normalize_label(value: object) -> str | None:
    """A label as a clean string: integer-valued numbers lose their ".0"; blanks and NaN are None.

    Example:
        >>> normalize_label("1.0"), normalize_label(4.0), normalize_label(" pos "), normalize_label("nan")
        ('1', '4', 'pos', None)
    """
    if value is None:
        return None
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else _number_text(float(value))
    s = str(value).strip()
    if not s or s.lower() == "nan":
        return None
    try:
        return str(int(s))  # exact, even for ints too large for a float
    except ValueError:
        pass
    try:
        return _number_text(float(s))
    except ValueError:
        return s


def sorted_labels(labels: Iterable[str]) -> list[str]:
    """Unique labels, numerically sorted when all are numbers ("2" before "10"), else as text.

    Example:
        >>> sorted_labels(["10", "2", "2"]), sorted_labels(["pos", "neg"])
        (['2', '10'], ['neg', 'pos'])
    """
    unique = set(labels)
    try:
        return sorted(unique, key=lambda s: (float(s), s))
    except ValueError:
        return sorted(unique)


def check_known_labels(ds: TextDataset, known: Sequence[str], field: str) -> None:
    """Raise if `ds` has labels outside `known`: a model cannot predict a class it never trained on.

    Example:
        >>> from ensemble.data import TextDataset
        >>> valid = TextDataset(["fine", "awful"], None, ["1", "2"], "valid.csv")
        >>> check_known_labels(valid, ["0", "1"], "data.valid")
        Traceback (most recent call last):
        ...
        ensemble.errors.EnsembleError: data.valid: label '2' (1 row) in 'valid.csv' never appears in the training labels ['0', '1']; fix those rows or add examples of them to the training data
    """
    if ds.labels is None:
        return
    known_set = set(known)
    unseen = Counter(lab for lab in ds.labels if lab not in known_set)
    if not unseen:
        return
    most = unseen.most_common(10)
    found = ", ".join(f"'{lab}' ({n} row{'s' if n != 1 else ''})" for lab, n in most)
    more = f" and {len(unseen) - len(most)} more" if len(unseen) > len(most) else ""
    plural = len(unseen) > 1
    training = sorted_labels(known)
    training_text = str(training) if len(training) <= 20 else str(training[:20])[:-1] + ", ...]"
    raise EnsembleError(
        f"{field}: label{'s' if plural else ''} {found}{more} in '{ds.path}' never appear{'' if plural else 's'} "
        f"in the training labels {training_text}; fix those rows or add examples of them to the training data"
    )


def _number_text(f: float) -> str:
    return str(int(f)) if math.isfinite(f) and f.is_integer() else repr(f)
