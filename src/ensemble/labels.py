"""Label names: clean strings from whatever a file holds, a stable order, checks against training.

A label is always a string: ``1``, ``1.0``, ``+1`` and ``"1"`` in a file are the same class, ``"1"``;
``"1.10"`` and ``"1.1"`` are two.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .errors import EnsembleError

if TYPE_CHECKING:
    from .data import TextDataset

# "1.0", "-2.00", "+1": an integer, written with a sign or as a float
_INTEGER = re.compile(r"([+-]?)(0|[1-9][0-9]*)(?:\.0+)?")
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"  # zero-width characters, stripped from the ends like spaces
_BOOLEAN = {"true": "true", "false": "false"}
MIN_CLASS_ROWS = 5  # numbered labels that each label this many rows are classes, not scores


def normalize_label(value: object) -> str | None:
    """A label as a clean string: an integer written as a float loses its ".0"; blanks and NaN are None.

    Only spellings that cannot mean two classes are merged: ``1``, ``1.0``, ``"+1"`` and
    ``"1.00"`` are the class ``"1"`` (Quora writes its labels as floats, a dev file may not; SVM
    files write ``+1``), ``-0`` is ``"0"``, while ``"01"``, ``"1.10"`` and ``"1e3"`` keep their own
    spelling, so that ``"1.10"`` and ``"1.1"`` stay two classes. Booleans are ``"true"`` /
    ``"false"`` in any format and spelling (JSON's ``true``, pandas' CSV ``True``). Text is
    Unicode-normalised (NFC: an accent typed as one character or as two is one class), bytes
    are read as UTF-8, and spaces and zero-width characters at either end are dropped.

    Example:
        >>> normalize_label("1.0"), normalize_label(4.0), normalize_label(" pos "), normalize_label("nan")
        ('1', '4', 'pos', None)
        >>> normalize_label("01"), normalize_label("1.10"), normalize_label(0.25), normalize_label(True)
        ('01', '1.10', '0.25', 'true')
        >>> normalize_label("+1"), normalize_label("-0.0"), normalize_label("True"), normalize_label(b"pos")
        ('1', '0', 'true', 'pos')
    """
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        if not isinstance(value, float) and not float(value).is_integer():
            return str(value)  # a float32 in its own shortest spelling: "0.1", not 0.10000000149011612
        return _number_text(float(value))
    if isinstance(value, bytes | bytearray | np.bytes_):
        value = bytes(value).decode("utf-8", errors="backslashreplace")
    s = unicodedata.normalize("NFC", str(value)).strip().strip(_INVISIBLE).strip()
    if not s or s.lower() == "nan":
        return None
    whole = _INTEGER.fullmatch(s)
    if whole:
        sign, digits = whole.groups()
        return f"-{digits}" if sign == "-" and digits != "0" else digits
    return _BOOLEAN.get(s.lower(), s)


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


def check_label_column(ds: TextDataset, column: str, field: str = "data.label") -> None:
    """Refuse a training label column that cannot be classes: a continuous target, or text / ids.

    More than 20 distinct numbers, some off the half-step grid, are a regression target (STS
    similarity scores), and so are more than 10 of which most are off that grid (a small sample of
    them); half-star ratings, 0.5 apart, stay classes, and so do numbers that each label at least
    `MIN_CLASS_ROWS` rows (decimal class codes, such as ICD-9's 401.9: a regression target's
    rarest scores stand alone). More than 50 distinct values, hardly any of them repeated (90% of
    the rows or more), are a text or id column chosen by mistake. Both would otherwise train a
    classifier with a class per value.

    Example:
        >>> from ensemble.data import TextDataset
        >>> scores = TextDataset(["a"] * 40, None, [str(k / 8) for k in range(40)], "sts.csv")
        >>> check_label_column(scores, "similarity")
        Traceback (most recent call last):
        ...
        ensemble.errors.EnsembleError: data.label: column 'similarity' of 'sts.csv' holds 40 distinct numbers such as '0.125', '0.25', '0.375' (a continuous target, not classes); ensemble trains classifiers: bin the values into classes (e.g. round them) in the file, or set data.label to a column of classes (numbered classes pass when each has at least 5 rows)
    """
    if ds.labels is None:
        return
    distinct = Counter(ds.labels)
    if _continuous(distinct):
        examples = ", ".join(f"'{v}'" for v in [v for v in distinct if not float(v).is_integer()][:3])
        raise EnsembleError(
            f"{field}: column '{column}' of '{ds.path}' holds {len(distinct)} distinct numbers such as {examples} "
            "(a continuous target, not classes); ensemble trains classifiers: bin the values into classes "
            "(e.g. round them) in the file, or set data.label to a column of classes (numbered classes pass "
            f"when each has at least {MIN_CLASS_ROWS} rows)"
        )
    if len(distinct) > 50 and 10 * len(distinct) >= 9 * len(ds.labels):
        examples = ", ".join(f"'{shorten(v)}'" for v in list(distinct)[:2])
        raise EnsembleError(
            f"{field}: column '{column}' of '{ds.path}' holds {len(distinct)} distinct values in {len(ds.labels)} "
            f"rows (such as {examples}): text or ids, not class labels; set data.label to the column of classes"
        )


def _continuous(distinct: Counter) -> bool:
    """Whether label values (with their row counts) look like scores of a regression target (see
    `check_label_column`).

    Example:
        >>> fifths, halves = Counter(str(k / 5) for k in range(12)), Counter(str(k / 2) for k in range(30))
        >>> _continuous(fifths), _continuous(halves), _continuous(Counter({v: MIN_CLASS_ROWS for v in fifths}))
        (True, False, False)
    """
    if not distinct or not all(_is_number(v) for v in distinct):
        return False
    if min(distinct.values()) >= MIN_CLASS_ROWS:
        return False
    values = [float(v) for v in distinct]
    off_grid = sum(not (2 * v).is_integer() for v in values)
    return (len(values) > 20 and off_grid > 0) or (len(values) > 10 and 2 * off_grid > len(values))


def case_variants(labels: Sequence[str]) -> str | None:
    """The warning for labels that differ only in letter case (two classes that may be meant as
    one), or None.

    Example:
        >>> case_variants(["Pos", "neg", "pos"])
        "warning: labels 'Pos' and 'pos' differ only in letter case and train as two classes; if they are one, write them alike in the data"
        >>> case_variants(["neg", "pos"]) is None
        True
    """
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(label.casefold(), []).append(label)
    alike = [group for group in groups.values() if len(group) > 1]
    if not alike:
        return None
    shown = "; ".join(" and ".join(f"'{shorten(v)}'" for v in group) for group in alike[:3])
    more = f" (and {len(alike) - 3} more groups)" if len(alike) > 3 else ""
    return (f"warning: labels {shown}{more} differ only in letter case and train as "
            f"{'two classes' if len(alike) == 1 and len(alike[0]) == 2 else 'separate classes'}; if they are one, "
            "write them alike in the data")


def label_warnings(labels: Sequence[str]) -> list[str]:
    """What `fit` says about the training labels before it trains: labels differing only in case
    (`case_variants`), and more than 20 numbered classes off the half-step grid, which the rule
    of `check_label_column` lets through because each has rows enough (a rounded score?).

    Example:
        >>> label_warnings([f"{k / 4:.2f}" for k in range(21)] * 5)[0][:61]
        'warning: 21 numbered classes such as 0.25, 0.75, 1.25 are off'
    """
    distinct = set(labels)
    said = [alike] if (alike := case_variants(sorted(distinct))) else []
    if len(distinct) > 20 and all(_is_number(v) for v in distinct):
        off_grid = [v for v in sorted_labels(distinct) if not (2 * float(v)).is_integer()]
        if off_grid:
            said.append(f"warning: {len(distinct)} numbered classes such as {', '.join(off_grid[:3])} are off the "
                        "half-step grid: if they are a score rounded (a regression target), each value trains as a "
                        "class of its own, unordered; bin them into fewer classes if that is not meant")
    return said


def counted(counts: Counter, most: int) -> str:
    """The `most` commonest labels of `counts` with their rows, for a message; "and N more" after.

    Example:
        >>> counted(Counter(["x", "y", "x", "z"]), 2)
        "'x' (2 rows), 'y' (1 row) and 1 more"
    """
    common = counts.most_common(most)
    listed = ", ".join(f"'{shorten(label)}' ({n} row{'s' if n != 1 else ''})" for label, n in common)
    return listed + (f" and {len(counts) - len(common)} more" if len(counts) > len(common) else "")


def shorten(label: str, limit: int = 40) -> str:
    """A label cut to `limit` characters for a message.

    Example:
        >>> shorten("a whole sentence that somebody chose as the label column by mistake", 20)
        'a whole sentence ...'
    """
    return label if len(label) <= limit else label[: limit - 4].rstrip() + " ..."


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def check_known_labels(ds: TextDataset, known: Sequence[str], field: str, known_as: str = "") -> None:
    """Raise if `ds` has labels outside `known`: a model cannot predict a class it never trained on.
    `known_as` names a list the user gave (``data.labels``) instead of the training labels.

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
    found = counted(unseen, 10)
    plural = len(unseen) > 1
    training = [shorten(lab) for lab in (known if known_as else sorted_labels(known))]
    training_text = str(training) if len(training) <= 20 else str(training[:20])[:-1] + ", ...]"
    fix = "fix those rows or add examples of them to the training data"
    if known_as:
        raise EnsembleError(f"{field}: label{'s' if plural else ''} {counted(unseen, 10)} in '{ds.path}' "
                            f"{'are' if plural else 'is'} not in {known_as} {training_text}; add "
                            f"{'them' if plural else 'it'} to {known_as} or fix those rows")
    if all(_is_number(v) for v in unseen) and any(not float(v).is_integer() for v in unseen) and all(
            _is_number(v) and float(v).is_integer() for v in known):
        fix = ("they look like unbinned scores while the training labels are whole numbers: bin them as the "
               "training labels were binned")
    raise EnsembleError(
        f"{field}: label{'s' if plural else ''} {found} in '{ds.path}' never appear{'' if plural else 's'} "
        f"in the training labels {training_text}; {fix}"
    )


def _number_text(f: float) -> str:
    return str(int(f)) if math.isfinite(f) and f.is_integer() else repr(f)  # int(-0.0) is 0: "0"
