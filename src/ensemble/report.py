"""Metrics, member agreement, and the report files (report.json/.md/.html, plots, predictions.csv).

`build_report` turns a `Vote` into one JSON-serialisable dict; `write_report` saves it and renders
it (`ensemble.render`, `ensemble.plots`), so the pages can always be regenerated from a saved
report.json. Without gold labels the metric keys are absent rather than null, so a consumer can
test ``"accuracy" in report["ensemble"]``.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix
from sklearn.metrics import precision_recall_fscore_support

from . import render
from .aggregate import Vote
from .errors import EnsembleError
from .files import atomic_write
from .plots import write_plots

__all__ = ["agreement_stats", "build_report", "classification_metrics", "fleiss_kappa", "per_label_scores",
           "prediction_columns", "write_predictions", "write_report"]


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """Accuracy, macro precision/recall/F1 and the confusion matrix over all ``n_classes``.

    Classes absent from both arrays still count in the macro averages (with 0 where undefined),
    so scores are comparable across members and splits.

    Example:
        >>> m = classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), 3)
        >>> round(m["accuracy"], 4), m["confusion"]
        (0.6667, [[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    """
    labels = list(range(n_classes))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "macro_f1": float(f1),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def per_label_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, list]:
    """Precision, recall and F1 of each class (lists in class order, 0 where undefined), and its
    gold rows (``support``): a binary task's usual score is the F1 of its positive class.

    Example:
        >>> s = per_label_scores(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 3)
        >>> [round(f, 4) for f in s["f1"]], s["support"]
        ([0.5, 0.8, 0.0], [2, 2, 1])
    """
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(n_classes)), average=None, zero_division=0
    )
    return {"precision": [float(v) for v in precision], "recall": [float(v) for v in recall],
            "f1": [float(v) for v in f1], "support": [int(v) for v in support]}


def fleiss_kappa(member_labels: np.ndarray, n_classes: int) -> float:
    """Fleiss' kappa of the members (raters) over the rows (subjects).

    kappa = (P_bar - P_e) / (1 - P_e), with P_bar the mean per-row agreement among rater pairs
    and P_e the chance agreement from the overall class shares. When every member always gives
    the same single class, P_e = 1 and the formula is 0/0; that is perfect agreement, so 1.0.
    Fewer than two members or no rows leave nothing to disagree on: also 1.0.

    Example:
        >>> round(fleiss_kappa(np.array([[0, 1, 1], [0, 1, 0]]), 2), 4)  # 2 members, 3 rows
        0.3333
    """
    ratings = _indices(member_labels, n_classes, 2)
    raters, subjects = ratings.shape
    if raters < 2 or subjects == 0:
        return 1.0
    # One flat bincount gives the (rows, classes) count table without a per-row loop.
    flat = (np.arange(subjects)[None, :] * n_classes + ratings).ravel()
    counts = np.bincount(flat, minlength=subjects * n_classes).reshape(subjects, n_classes)
    shares = counts.sum(axis=0) / (subjects * raters)
    per_row = ((counts.astype(np.float64) ** 2).sum(axis=1) - raters) / (raters * (raters - 1))
    p_bar = float(per_row.mean())
    p_e = float((shares**2).sum())
    if p_e >= 1.0 - 1e-12:
        return 1.0
    return (p_bar - p_e) / (1.0 - p_e)


def agreement_stats(names: list[str], member_labels: np.ndarray, n_classes: int) -> dict:
    """How much the members agree with each other: pairwise shares, Cohen's and Fleiss' kappa.

    Cohen's kappa is undefined (NaN) when both members predict one and the same class on every
    row; that is reported as 1.0 (they agree completely), any other undefined case as 0.0.

    Example:
        >>> s = agreement_stats(["a", "b"], np.array([[0, 1, 0, 1], [0, 1, 1, 1]]), 3)
        >>> s["pairwise"]["a"]["b"], s["cohen_kappa"]["a"]["b"], s["unanimous"]
        (0.75, 0.5, 0.75)
    """
    ratings = _indices(member_labels, n_classes, 2)
    members, rows = ratings.shape
    if len(names) != members or len(set(names)) != members:
        raise ValueError(f"need {members} distinct member names; got {names!r}")
    pairwise: dict[str, dict[str, float]] = {a: {} for a in names}
    kappa: dict[str, dict[str, float]] = {a: {} for a in names}
    for i, a in enumerate(names):
        pairwise[a][a] = kappa[a][a] = 1.0
        for j in range(i + 1, members):
            b = names[j]
            share = float((ratings[i] == ratings[j]).mean()) if rows else 1.0
            pairwise[a][b] = pairwise[b][a] = share
            kappa[a][b] = kappa[b][a] = _cohen_kappa(ratings[i], ratings[j], n_classes)
    unanimous = float((ratings == ratings[0]).all(axis=0).mean()) if rows else 1.0
    return {"pairwise": pairwise, "cohen_kappa": kappa,
            "fleiss_kappa": fleiss_kappa(ratings, n_classes), "unanimous": unanimous}


def build_report(*, names: list[str], labels: list[str], vote: Vote, method: str,
                 weights: dict[str, float], y_true: np.ndarray | None, texts: list[str],
                 pairs: list[str] | None, split: str, top_disputed: int = 10) -> dict:
    """Everything known about one voted split, as a JSON-serialisable dict.

    Keys: ``split``, ``rows``, ``method``, ``weights``, ``labels``, ``members`` (per member:
    metrics and ``mean_confidence``), ``ensemble`` (metrics, ``mean_confidence``,
    ``mean_agreement``), ``agreement`` (see `agreement_stats`), ``oracle_accuracy`` (share of
    rows some member gets right) and ``disputed``: up to ``top_disputed`` of the rows where the
    members do not all give the same label, fewest members behind any one label first (the
    deepest splits), then lowest agreement, ties going to the smaller share of members agreeing
    with the ensemble, then to the lower ensemble confidence, then to the earlier row (``row``
    counts from 0 in ``predictions.csv``); empty when every member agreed on every row.
    Without ``y_true`` the metric keys and ``oracle_accuracy`` are absent and ``gold`` is None.

    Example:
        >>> from ensemble.aggregate import aggregate
        >>> vote = aggregate(np.array([[[2.0, 0.0]], [[0.0, 1.0]]]), "soft")
        >>> r = build_report(names=["a", "b"], labels=["neg", "pos"], vote=vote, method="soft",
        ...     weights={"a": 0.5, "b": 0.5}, y_true=np.array([0]), texts=["fine"], pairs=None,
        ...     split="test")
        >>> r["ensemble"]["accuracy"], r["oracle_accuracy"], r["disputed"][0]["members"]
        (1.0, 1.0, {'a': 'neg', 'b': 'pos'})
    """
    n_classes = len(labels)
    member_labels, gold = _check_inputs(vote, names, n_classes, texts, pairs, y_true)
    rows = len(vote.labels)
    if rows == 0 or top_disputed < 0:
        raise ValueError(
            f"build_report: need rows (got {rows}) and top_disputed >= 0 (got {top_disputed})"
        )

    def scored(predicted: np.ndarray, confidence: np.ndarray) -> dict[str, Any]:
        entry = {} if gold is None else classification_metrics(gold, predicted, n_classes)
        if gold is not None:
            entry["per_label"] = per_label_scores(gold, predicted, n_classes)
        entry["mean_confidence"] = _f32(confidence.mean(dtype=np.float64))
        return entry

    report: dict[str, Any] = {
        "split": split, "rows": int(rows), "method": method,
        "weights": {str(k): float(v) for k, v in weights.items()}, "labels": list(labels),
        "members": {
            n: scored(member_labels[i], vote.member_confidence[i]) for i, n in enumerate(names)
        },
        "ensemble": scored(vote.labels, vote.confidence),
    }
    report["ensemble"]["mean_agreement"] = _f32(vote.agreement.mean(dtype=np.float64))
    report["agreement"] = agreement_stats(names, member_labels, n_classes)
    if gold is not None:
        report["oracle_accuracy"] = float((member_labels == gold[None, :]).any(axis=0).mean())

    # Agreement is a float32 sum of weights, so equal real sums can differ in the last bit;
    # rounding makes them tie, and the documented tie-breaks (confidence, row) then apply.
    agreement_key = np.round(vote.agreement.astype(np.float64), 6)
    # then the share of members (not of weight) that agree: with a zero-weight member every row's
    # weighted agreement can be 1, and the members' own split still orders the rows
    agreeing = (member_labels == vote.labels[None]).mean(axis=0)
    # first the rows where the members split most: the fewest members behind any one label (a
    # three-way split before two against one), whatever the ensemble chose
    plurality = np.zeros(rows, np.int64)
    for c in range(n_classes):
        np.maximum(plurality, (member_labels == c).sum(axis=0), out=plurality)
    order = np.lexsort((np.arange(rows), vote.confidence, agreeing, agreement_key, plurality))
    # Only rows where the members disagree are disputed; a unanimous row is not, whatever its rank.
    split_rows = ~(member_labels == member_labels[:1]).all(axis=0)
    order = order[split_rows[order]][:top_disputed]
    report["disputed"] = [
        {"row": row, "text": texts[row], **({"text_pair": pairs[row]} if pairs is not None else {}),
         "gold": None if gold is None else labels[gold[row]], "ensemble": labels[vote.labels[row]],
         "confidence": _f32(vote.confidence[row]), "agreement": _f32(vote.agreement[row]),
         "members": {name: labels[member_labels[i, row]] for i, name in enumerate(names)}}
        for row in order.tolist()
    ]
    return report


def write_predictions(path: str | os.PathLike, *, names: list[str], labels: list[str], vote: Vote,
                      texts: list[str], pairs: list[str] | None, y_true: np.ndarray | None,
                      abstain: np.ndarray | None = None, kept: dict[str, list[str]] | None = None) -> None:
    """Write one CSV row per input row: the text(s), the gold label, each member, the ensemble.

    Columns: the `kept` columns of the input (an id to join on), ``text``, ``text_pair`` (with
    pairs), ``label`` (with gold), ``<name>_label`` and ``<name>_confidence`` per member,
    ``ensemble_label``, ``ensemble_confidence``, ``agreement``. Labels are names, floats have 6
    significant digits. Rows marked in `abstain` get the ensemble label ``abstain`` (their
    confidence and agreement stay); with `abstain` a ``voted`` column after it holds the
    label the vote gave every row, the one the confidence and agreement are about. Written atomically.

    Example:
        >>> import tempfile
        >>> from ensemble.aggregate import aggregate
        >>> vote = aggregate(np.array([[[2.0, 0.0]], [[0.0, 1.0]]]), "soft")
        >>> out = Path(tempfile.mkdtemp()) / "predictions.csv"
        >>> write_predictions(out, names=["a", "b"], labels=["neg", "pos"], vote=vote,
        ...     texts=["fine"], pairs=None, y_true=None, kept={"id": ["r-1"]})
        >>> out.read_text().splitlines()
        ['id,text,a_label,a_confidence,b_label,b_confidence,ensemble_label,ensemble_confidence,agreement', 'r-1,fine,neg,0.880797,pos,0.731059,neg,0.574869,0.5']
    """
    atomic_write(Path(path), lambda handle: append_predictions(
        handle, names=names, labels=labels, vote=vote, texts=texts, pairs=pairs, y_true=y_true, header=True,
        abstain=abstain, kept=kept))


def prediction_columns(names: Sequence[str], *, pairs: bool, gold: bool, kept: Sequence[str] = (),
                       field: str = "kept columns", abstaining: bool = False) -> list[str]:
    """The columns of predictions.csv, refusing a kept column (`field` names the setting) or a
    member whose name gives a column twice.

    Example:
        >>> prediction_columns(["bert"], pairs=False, gold=True, kept=["id"])
        ['id', 'text', 'label', 'bert_label', 'bert_confidence', 'ensemble_label', 'ensemble_confidence', 'agreement']
        >>> prediction_columns(["bert"], pairs=False, gold=True, kept=["label"], field="--keep-columns")
        Traceback (most recent call last):
        ...
        ensemble.errors.EnsembleError: --keep-columns: 'label' is a column the predictions have already (the gold label); keep a column of another name, or rename it in the file
    """
    own = ["text"] + (["text_pair"] if pairs else []) + (["label"] if gold else [])
    for name in names:
        own += [f"{name}_label", f"{name}_confidence"]
    own += ["ensemble_label", *["voted"] * abstaining, "ensemble_confidence", "agreement"]
    clashes = sorted({c for c in own if own.count(c) > 1})
    if clashes:
        raise EnsembleError(f"member names {list(names)!r} clash with predictions.csv columns {clashes!r}; "
                            "rename the member")
    for column in kept:
        if column in own:
            what = {"text": "the text", "text_pair": "the second text", "label": "the gold label"}.get(column, "a member's")
            what = "the vote's" if column.startswith("ensemble_") or column in ("agreement", "voted") else what
            raise EnsembleError(f"{field}: '{column}' is a column the predictions have already ({what}); keep a "
                                "column of another name, or rename it in the file")
    return [*kept, *own]


def append_predictions(handle: IO[str], *, names: list[str], labels: list[str], vote: Vote, texts: list[str],
                       pairs: list[str] | None, y_true: np.ndarray | None, header: bool,
                       abstain: np.ndarray | None = None, kept: dict[str, list[str]] | None = None) -> None:
    """Write prediction rows (and the header line when `header`) to an open text file.

    The streaming form of `write_predictions`: ``ensemble predict`` appends one chunk at a time.
    """
    member_labels, gold = _check_inputs(vote, names, len(labels), texts, pairs, y_true, kept)
    columns = prediction_columns(names, pairs=pairs is not None, gold=gold is not None, kept=list(kept or {}),
                                 abstaining=abstain is not None)
    names_of = np.asarray(labels, dtype=object)  # index -> label name, vectorised
    member_names, voted = names_of[member_labels], names_of[vote.labels]
    ensemble_names = voted
    if abstain is not None:
        ensemble_names = np.where(np.asarray(abstain, dtype=bool), "abstain", voted)
    kept_values = list((kept or {}).values())
    writer = csv.writer(handle)
    if header:
        writer.writerow(columns)
    for row in range(len(texts)):
        line = [values[row] for values in kept_values] + [texts[row]] + ([pairs[row]] if pairs is not None else [])
        if gold is not None:
            line.append(labels[gold[row]])
        for m in range(len(names)):
            line += [member_names[m, row], _g6(vote.member_confidence[m, row])]
        line += [ensemble_names[row], *[voted[row]] * (abstain is not None), _g6(vote.confidence[row]),
                 _g6(vote.agreement[row])]
        writer.writerow(line)


def write_report(out_dir: str | os.PathLike, report: dict, plots: bool = True) -> None:
    """Write ``report.json``, the plots, ``report.md`` and ``report.html`` into ``out_dir``.

    Every file is written atomically, report.json first: the pages are rendered from the report
    dict alone (`ensemble.render`), so they can always be regenerated from a saved report.json.
    ``plots=False`` skips the PNGs (`ensemble.plots.write_plots`) and the pages link none.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> write_report(out, {"split": "test", "rows": 0, "method": "soft", "weights": {},
        ...     "labels": [], "members": {}, "ensemble": {}, "disputed": []})
        >>> sorted(p.name for p in out.iterdir())
        ['report.html', 'report.json', 'report.md']
    """
    out = Path(out_dir)
    # allow_nan=False: a NaN here is a bug upstream, and it would make the file invalid JSON.
    text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write(out / "report.json", lambda handle: handle.write(text))
    images = write_plots(report, out) if plots else {}
    for name, page in (("report.md", render.markdown(report, images)),
                       ("report.html", render.html(report, images))):
        atomic_write(out / name, lambda handle, page=page: handle.write(page))


# --------------------------------------------------------------------------- helpers


def _f32(value: float) -> float:
    """A float32-derived value for JSON: 7 significant digits, its real precision."""
    return float(f"{float(value):.7g}")


def _g6(value: float) -> str:
    return f"{float(value):.6g}"


def _cohen_kappa(a: np.ndarray, b: np.ndarray, n_classes: int) -> float:
    if a.size == 0:
        return 1.0
    with warnings.catch_warnings():
        # The 0/0 case warns; it is resolved just below.
        warnings.simplefilter("ignore")
        value = float(cohen_kappa_score(a, b, labels=list(range(n_classes))))
    if np.isfinite(value):
        return value
    both_same_constant = bool((a == a[0]).all() and (b == a[0]).all())
    return 1.0 if both_same_constant else 0.0


def _indices(values: Any, n_classes: int, ndim: int) -> np.ndarray:
    """Class indices as int64: shape (rows,) for ndim 1, (members, rows) for ndim 2."""
    array = np.asarray(values)
    if array.ndim != ndim:
        shape = "(rows,)" if ndim == 1 else "(members, rows)"
        raise ValueError(f"class indices must have shape {shape}; got {array.shape}")
    if array.size and (array.dtype.kind not in "iu" or array.min() < 0 or array.max() >= n_classes):
        raise ValueError(f"class indices must be integers in [0, {n_classes}); got {array.dtype} "
                         f"from {array.min()} to {array.max()}")
    return array.astype(np.int64, copy=False)


def _check_inputs(vote: Vote, names: Sequence[str], n_classes: int, texts: Sequence[str],
                  pairs: Sequence[str] | None, y_true: Any,
                  kept: dict[str, list[str]] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The member labels and gold labels as checked int64 arrays; ValueError on any mismatch."""
    member_labels = _indices(vote.member_labels, n_classes, 2)
    _indices(vote.labels, n_classes, 1)
    members, rows = member_labels.shape
    sizes = {"names": (len(names), members), "texts": (len(texts), rows)}
    if pairs is not None:
        sizes["pairs"] = (len(pairs), rows)
    if y_true is not None:
        sizes["y_true"] = (len(y_true), rows)
    for column, values in (kept or {}).items():
        sizes[f"kept[{column!r}]"] = (len(values), rows)
    wrong = {k: got for k, (got, want) in sizes.items() if got != want}
    if wrong:
        raise ValueError(f"the vote has {members} members and {rows} rows, but got lengths {wrong}")
    return member_labels, None if y_true is None else _indices(y_true, n_classes, 1)
