"""Metrics, agreement statistics and report files, on small hand-computed cases."""

from __future__ import annotations

import csv
import doctest
import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from ensemble.aggregate import Vote, aggregate
from ensemble.errors import EnsembleError
from ensemble.files import atomic_write
from ensemble.report import (
    agreement_stats,
    build_report,
    classification_metrics,
    fleiss_kappa,
    per_label_scores,
    prediction_columns,
    write_predictions,
    write_report,
)

report_module = importlib.import_module("ensemble.report")
render = importlib.import_module("ensemble.render")

# --------------------------------------------------------------------------- metrics


def test_classification_metrics_hand_case():
    # Class 3 never occurs; it still counts (as 0) in the macro averages.
    #   class 0: TP 1, FP 1, FN 1 -> P .5,  R .5, F1 .5
    #   class 1: TP 2, FP 1, FN 0 -> P 2/3, R 1,  F1 .8
    #   class 2: TP 0, FP 0, FN 1 -> P 0 (zero_division), R 0, F1 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero_division=0 must keep sklearn quiet
        m = classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 4)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["macro_precision"] == pytest.approx((0.5 + 2 / 3) / 4)
    assert m["macro_recall"] == pytest.approx(1.5 / 4)
    assert m["macro_f1"] == pytest.approx(1.3 / 4)
    assert m["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert all(type(v) is float for k, v in m.items() if k != "confusion")
    assert all(type(n) is int for row in m["confusion"] for n in row)


# Wikipedia's Fleiss' kappa example: 10 subjects, 14 raters, 5 categories -> kappa = 0.210.
WIKIPEDIA_COUNTS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def labels_from_counts(counts: list[list[int]]) -> np.ndarray:
    """(raters, subjects) labels with the given per-subject category counts."""
    columns = [[c for c, n in enumerate(row) for _ in range(n)] for row in counts]
    return np.array(columns).T


def test_fleiss_kappa_wikipedia_example():
    ratings = labels_from_counts(WIKIPEDIA_COUNTS)
    assert ratings.shape == (14, 10)
    # P_bar = 0.378, P_e = 0.213 (rounded in the article) -> 0.210.
    assert fleiss_kappa(ratings, 5) == pytest.approx(0.2099, abs=5e-4)
    # Which rater said what within a subject does not matter.
    shuffled = np.random.default_rng(0).permuted(ratings, axis=0)
    assert fleiss_kappa(shuffled, 5) == pytest.approx(fleiss_kappa(ratings, 5))


@pytest.mark.parametrize(
    ("ratings", "n_classes", "expected"),
    [
        # Counts per row (class 0, class 1): [3,0] [0,3] [2,1] [0,3]. P_bar = (1+1+1/3+1)/4 = 10/12,
        # p = (5/12, 7/12), P_e = 74/144, kappa = (120-74)/(144-74) = 46/70.
        ([[0, 1, 0, 1], [0, 1, 1, 1], [0, 1, 0, 1]], 2, 46 / 70),
        ([[0, 1, 1], [0, 1, 0]], 2, 1 / 3),
        # Members always identical, classes varied: perfect agreement.
        ([[0, 2, 1], [0, 2, 1]], 3, 1.0),
        # Everyone always says class 2: P_e = 1, the 0/0 case, defined as 1.0.
        ([[2, 2, 2], [2, 2, 2], [2, 2, 2]], 3, 1.0),
        # Systematic disagreement on two classes: P_bar = 0, P_e = .5 -> -1.
        ([[0, 1], [1, 0]], 2, -1.0),
        # One member, or no rows: nothing to disagree on.
        ([[0, 1, 2]], 3, 1.0),
        (np.zeros((3, 0), dtype=np.int64), 3, 1.0),
    ],
)
def test_fleiss_kappa_hand_cases(ratings, n_classes, expected):
    assert fleiss_kappa(np.array(ratings), n_classes) == pytest.approx(expected)


def test_fleiss_kappa_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        fleiss_kappa(np.array([[0, 2]]), 2)


def test_agreement_stats_hand_case():
    ml = np.array([[0, 1, 0, 1], [0, 1, 1, 1], [0, 1, 0, 1]])
    stats = agreement_stats(["a", "b", "c"], ml, 3)
    assert stats["pairwise"] == {
        "a": {"a": 1.0, "b": 0.75, "c": 1.0},
        "b": {"a": 0.75, "b": 1.0, "c": 0.75},
        "c": {"a": 1.0, "b": 0.75, "c": 1.0},
    }
    # a vs b: p_o = 3/4; a is 50/50, b is 25/75 -> p_e = .5*.25 + .5*.75 = .5 -> kappa .5.
    kappa = stats["cohen_kappa"]
    assert kappa["a"]["b"] == kappa["b"]["a"] == pytest.approx(0.5)
    assert kappa["b"]["c"] == kappa["c"]["b"] == pytest.approx(0.5)
    assert kappa["a"]["c"] == pytest.approx(1.0)
    assert [kappa[n][n] for n in "abc"] == [1.0, 1.0, 1.0]
    assert stats["fleiss_kappa"] == pytest.approx(46 / 70)
    assert stats["unanimous"] == 0.75  # all rows but row 2


@pytest.mark.parametrize(
    ("a", "b", "kappa"),
    [
        ([2, 2, 2], [2, 2, 2], 1.0),  # undefined (0/0) for sklearn: both constant and equal
        ([0, 0, 0], [1, 1, 1], 0.0),  # both constant, different classes
        ([0, 1, 0, 1], [1, 0, 1, 0], -1.0),
    ],
)
def test_cohen_kappa_degenerate_cases(a, b, kappa):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = agreement_stats(["x", "y"], np.array([a, b]), 3)
    assert stats["cohen_kappa"]["x"]["y"] == stats["cohen_kappa"]["y"]["x"] == pytest.approx(kappa)


def test_agreement_stats_single_member_and_bad_names():
    stats = agreement_stats(["only"], np.array([[0, 1, 2]]), 3)
    assert stats == {"pairwise": {"only": {"only": 1.0}}, "cohen_kappa": {"only": {"only": 1.0}},
                     "fleiss_kappa": 1.0, "unanimous": 1.0}
    with pytest.raises(ValueError, match="distinct member names"):
        agreement_stats(["a", "a"], np.array([[0], [1]]), 2)
    with pytest.raises(ValueError, match="distinct member names"):
        agreement_stats(["a"], np.array([[0], [1]]), 2)


# --------------------------------------------------------------------------- build_report

NAMES = ["a", "b", "c"]
LABELS = ["neg", "neu", "pos"]
WEIGHTS = {"a": 0.5, "b": 0.25, "c": 0.25}
Y_TRUE = np.array([0, 1, 1, 0, 2])
TEXTS = [
    "plain", "has, comma", 'has "quotes"', "two\nlines | and a pipe", "ünïcödé " + "long " * 30,
]
PAIRS = ["p0", "p1", "p2", "p3", "p4"]


def hand_vote() -> Vote:
    """A vote written out by hand: weights a .5, b .25, c .25 (hard)."""
    member_labels = np.array([[0, 1, 2, 0, 1], [0, 2, 1, 2, 1], [0, 1, 2, 2, 0]])
    labels = np.array([0, 1, 2, 2, 1])
    # Weight agreeing with the ensemble: row 0 all; 1 a+c; 2 a+c; 3 b+c; 4 a+b.
    agreement = np.array([1.0, 0.75, 0.75, 0.5, 0.75], dtype=np.float32)
    scores = np.zeros((5, 3), dtype=np.float32)
    scores[np.arange(5), labels] = agreement
    return Vote(
        labels=labels,
        scores=scores,
        # Rows 1 and 4 tie on agreement and confidence: row order decides.
        confidence=np.array([0.9, 0.6, 0.7, 0.5, 0.6], dtype=np.float32),
        agreement=agreement,
        member_labels=member_labels,
        member_confidence=np.array(
            [[0.9, 0.8, 0.7, 0.6, 0.5], [2 / 3, 0.6, 0.6, 0.6, 0.6], [1.0, 0.5, 0.5, 0.5, 0.5]],
            dtype=np.float32,
        ),
        equal_counts=np.array([[5, 2, 3], [2, 5, 2], [3, 2, 5]]),
    )


def make_report(**overrides) -> dict:
    arguments = dict(names=NAMES, labels=LABELS, vote=hand_vote(), method="hard", weights=WEIGHTS,
                     y_true=Y_TRUE, texts=TEXTS, pairs=None, split="test", top_disputed=3)
    return build_report(**{**arguments, **overrides})


def test_build_report_with_gold():
    report = make_report()
    json.dumps(report, allow_nan=False)  # serialisable, no NaN
    assert report["split"] == "test" and report["rows"] == 5 and report["method"] == "hard"
    assert report["weights"] == WEIGHTS and report["labels"] == LABELS
    # a = [0,1,2,0,1], b = [0,2,1,2,1], c = [0,1,2,2,0], gold = [0,1,1,0,2].
    accuracy = {name: report["members"][name]["accuracy"] for name in NAMES}
    assert accuracy == pytest.approx({"a": 0.6, "b": 0.4, "c": 0.4})
    assert report["members"]["a"]["mean_confidence"] == pytest.approx(0.7)
    assert report["members"]["b"]["mean_confidence"] == pytest.approx((2 / 3 + 2.4) / 5)
    for entry in [*report["members"].values(), report["ensemble"]]:
        assert {"accuracy", "macro_f1", "macro_precision", "macro_recall", "confusion",
                "mean_confidence"} <= set(entry)
    ensemble = report["ensemble"]
    assert ensemble["accuracy"] == pytest.approx(0.4)
    assert ensemble["confusion"] == [[1, 0, 1], [0, 1, 1], [0, 1, 0]]
    assert ensemble["mean_confidence"] == pytest.approx(0.66)
    assert ensemble["mean_agreement"] == pytest.approx(0.75)
    # Row 4 (gold pos) is the only row no member gets right.
    assert report["oracle_accuracy"] == pytest.approx(0.8)
    agreement = report["agreement"]
    assert agreement["pairwise"]["a"] == {"a": 1.0, "b": 0.4, "c": 0.6}
    assert agreement["unanimous"] == pytest.approx(0.2)
    assert set(agreement) == {"pairwise", "cohen_kappa", "fleiss_kappa", "unanimous"}


def test_disputed_rows_order_and_content():
    report = make_report(top_disputed=3)
    # Lowest agreement first (row 3: .5); rows 1, 2, 4 tie at .75, so lower confidence first
    # (rows 1 and 4: .6, then row order), row 2 (.7) is cut off.
    assert [item["row"] for item in report["disputed"]] == [3, 1, 4]
    assert report["disputed"][0] == {
        "row": 3, "text": TEXTS[3], "gold": "neg", "ensemble": "pos", "confidence": 0.5,
        "agreement": 0.5, "members": {"a": "neg", "b": "pos", "c": "pos"},
    }
    # Row 0 is unanimous (neg, neg, neg): not disputed, however many rows are asked for.
    everything = make_report(top_disputed=10)["disputed"]
    assert [item["row"] for item in everything] == [3, 1, 4, 2]
    assert make_report(top_disputed=0)["disputed"] == []


def test_build_report_without_gold_and_with_pairs():
    report = make_report(y_true=None, pairs=PAIRS)
    json.dumps(report, allow_nan=False)
    for entry in [*report["members"].values(), report["ensemble"]]:
        assert "accuracy" not in entry and "confusion" not in entry and "macro_f1" not in entry
        assert "mean_confidence" in entry
    assert "oracle_accuracy" not in report
    item = report["disputed"][0]
    assert item["gold"] is None and item["text_pair"] == "p3"
    assert list(item) == [
        "row", "text", "text_pair", "gold", "ensemble", "confidence", "agreement", "members",
    ]
    assert "agreement" in report and report["agreement"]["unanimous"] == pytest.approx(0.2)


def test_build_report_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="texts"):
        make_report(texts=TEXTS[:4])
    with pytest.raises(ValueError, match="y_true"):
        make_report(y_true=Y_TRUE[:2])
    with pytest.raises(ValueError, match="names"):
        make_report(names=["a", "b"])
    with pytest.raises(ValueError, match="class indices"):
        make_report(y_true=np.array([0, 1, 1, 0, 3]))


def test_build_report_from_a_real_vote():
    logits = np.log(np.array([
        [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.3, 0.5]],
        [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1]],
    ]))
    vote = aggregate(logits, "soft")
    report = build_report(names=["x", "y"], labels=LABELS, vote=vote, method="soft",
                          weights={"x": 0.5, "y": 0.5}, y_true=np.array([0, 1, 1]),
                          texts=["t0", "t1", "t2"],
                          pairs=None, split="validation")
    # Soft labels: row 0 -> 0, row 1 -> (.15, .4, .45) -> 2, row 2 -> (.15, .55, .3) -> 1.
    assert report["ensemble"]["accuracy"] == pytest.approx(2 / 3)
    assert report["oracle_accuracy"] == 1.0
    json.dumps(report, allow_nan=False)


# --------------------------------------------------------------------------- files


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_predictions_csv_round_trip(tmp_path):
    path = tmp_path / "predictions.csv"
    write_predictions(path, names=NAMES, labels=LABELS, vote=hand_vote(), texts=TEXTS, pairs=PAIRS,
                      y_true=Y_TRUE)
    header, rows = read_csv(path)
    assert header == ["text", "text_pair", "label", "a_label", "a_confidence", "b_label", "b_confidence",
                      "c_label", "c_confidence", "ensemble_label", "ensemble_confidence", "agreement"]
    assert [row["text"] for row in rows] == TEXTS  # commas, quotes, newlines, unicode survive
    assert [row["text_pair"] for row in rows] == PAIRS
    assert [row["label"] for row in rows] == ["neg", "neu", "neu", "neg", "pos"]
    assert [row["b_label"] for row in rows] == ["neg", "pos", "neu", "pos", "neu"]
    assert [row["ensemble_label"] for row in rows] == ["neg", "neu", "pos", "pos", "neu"]
    assert rows[0]["b_confidence"] == "0.666667"  # 6 significant digits
    assert rows[0]["c_confidence"] == "1"
    assert [row["agreement"] for row in rows] == ["1", "0.75", "0.75", "0.5", "0.75"]
    assert [row["ensemble_confidence"] for row in rows] == ["0.9", "0.6", "0.7", "0.5", "0.6"]
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]  # no temporary left


def test_predictions_csv_without_pairs_or_gold(tmp_path):
    path = tmp_path / "sub" / "predictions.csv"
    write_predictions(path, names=NAMES, labels=LABELS, vote=hand_vote(), texts=TEXTS, pairs=None,
                      y_true=None)
    header, rows = read_csv(path)
    assert header[:3] == ["text", "a_label", "a_confidence"]
    assert "label" not in header and "text_pair" not in header
    assert len(rows) == 5


def test_predictions_csv_rejects_clashing_member_names(tmp_path):
    vote = aggregate(np.zeros((2, 1, 2)), "soft")
    with pytest.raises(EnsembleError, match="clash"):
        write_predictions(tmp_path / "p.csv", names=["a", "ensemble"], labels=["x", "y"], vote=vote,
                          texts=["t"], pairs=None, y_true=None)
    assert not (tmp_path / "p.csv").exists()


def test_predictions_csv_starts_with_the_kept_columns(tmp_path):
    path = tmp_path / "predictions.csv"
    kept = {"id": [f"r{i}" for i in range(5)], "note": ["a,b", 'say "hi"', "", "x\ny", "é"]}
    write_predictions(path, names=NAMES, labels=LABELS, vote=hand_vote(), texts=TEXTS, pairs=None, y_true=Y_TRUE,
                      kept=kept)
    header, rows = read_csv(path)
    assert header[:4] == ["id", "note", "text", "label"]
    assert [row["id"] for row in rows] == kept["id"] and [row["note"] for row in rows] == kept["note"]
    assert [row["text"] for row in rows] == TEXTS
    with pytest.raises(ValueError, match=r"got lengths \{\"kept\['id'\]\": 1\}"):
        write_predictions(path, names=NAMES, labels=LABELS, vote=hand_vote(), texts=TEXTS, pairs=None, y_true=None,
                          kept={"id": ["r0"]})


@pytest.mark.parametrize(
    ("kept", "pairs", "gold", "what"),
    [
        ("text", False, False, "the text"),
        ("text_pair", True, False, "the second text"),
        ("label", False, True, "the gold label"),
        ("a_confidence", False, False, "a member's"),
        ("ensemble_label", False, False, "the vote's"),
        ("agreement", False, False, "the vote's"),
    ],
)
def test_a_kept_column_named_like_a_predictions_column_is_refused(kept, pairs, gold, what):
    with pytest.raises(EnsembleError) as info:
        prediction_columns(["a"], pairs=pairs, gold=gold, kept=[kept], field="--keep-columns")
    assert str(info.value) == (f"--keep-columns: '{kept}' is a column the predictions have already ({what}); keep a "
                               "column of another name, or rename it in the file")


@pytest.mark.parametrize(("kept", "pairs", "gold"), [("label", False, False), ("text_pair", False, True),
                                                     ("b_label", False, False)])
def test_a_kept_column_is_free_when_the_predictions_have_no_such_column(kept, pairs, gold):
    assert prediction_columns(["a"], pairs=pairs, gold=gold, kept=[kept])[0] == kept


def test_write_report_with_gold(tmp_path):
    report = make_report(pairs=PAIRS, top_disputed=5)
    write_report(tmp_path / "out", report)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["plots", "report.html", "report.json", "report.md"]
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["agreement.png", "confusion.png"]
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == report
    assert (out / "report.json").read_text(encoding="utf-8").startswith('{\n  "split": "test"')
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# Ensemble report: test\n")
    assert "- Rows: 5" in md
    assert "| model | weight | accuracy | macro-F1 | macro precision | macro recall | mean confidence |" in md
    assert "| a | 0.5000 | 0.6000 |" in md
    assert "| **ensemble** |  | 0.4000 |" in md
    assert "Oracle accuracy (some member right): 0.8000" in md
    assert "## Pairwise agreement" in md and "| a | 1.0000 | 0.4000 | 0.6000 |" in md
    assert "## Cohen's kappa" in md
    assert "Fleiss' kappa (all members): " in md and "Unanimous rows: 0.2000" in md
    assert "| gold \\ predicted | neg | neu | pos |" in md
    assert "| neg | 1 | 0 | 1 |" in md and "| pos | 0 | 1 | 0 |" in md
    assert "## Disputed examples" in md
    assert "| 3 | two lines \\| and a pipe | p3 | neg | pos | 0.5000 | 0.5000 | neg | pos | pos |" in md
    long_text = TEXTS[4]
    assert long_text.strip() not in md and "ünïcödé long long" in md and "…" in md
    for line in md.splitlines():
        if line.startswith("| 4 |"):
            assert len(line.split(" | ")[1]) == 80  # shortened to 80 characters
    # Every table row has as many cells as its header.
    blocks = [b for b in md.split("\n\n") if b.startswith("|")]
    assert len(blocks) == 6  # metrics, per label, agreement, kappa, confusion, disputed
    for block in blocks:
        counts = {line.replace("\\|", "").count("|") for line in block.splitlines()}
        assert len(counts) == 1, block


def test_write_report_without_gold(tmp_path):
    write_report(tmp_path, make_report(y_true=None))
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| model | weight | mean confidence |" in md
    assert "| a | 0.5000 | 0.7000 |" in md
    assert "accuracy" not in md.lower() and "confusion" not in md.lower()
    assert "## Pairwise agreement" in md and "## Disputed examples" in md
    assert "| row | text | ensemble | confidence | agreement | a | b | c |" in md  # no gold column
    assert "| ---: | --- | --- | ---: | ---: | --- | --- | --- |" in md


def test_write_report_replaces_existing_files_and_refuses_nan(tmp_path):
    write_report(tmp_path, make_report())
    before = (tmp_path / "report.json").read_text(encoding="utf-8")
    broken = make_report()
    broken["ensemble"]["accuracy"] = float("nan")
    with pytest.raises(ValueError):
        write_report(tmp_path, broken)
    assert (tmp_path / "report.json").read_text(encoding="utf-8") == before
    write_report(tmp_path, make_report(split="dev"), plots=False)
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))["split"] == "dev"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plots", "report.html", "report.json", "report.md"]


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old", encoding="utf-8")

    def fail_halfway(handle):
        handle.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail_halfway)
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_docstring_examples():
    assert doctest.testmod(report_module).failed == 0


# --------------------------------------------------------------------------- evaluate's report


def hand_ensemble(tmp_path: Path, **options):
    """Members a, b, c without weights (the vote runs on given logits), equal soft vote."""
    from ensemble.ensemble import Ensemble
    from ensemble.members import Member

    members = [Member(name=n, path=tmp_path / n, model=None, tokenizer=None, labels=LABELS, max_length=64,
                      text_pair=False) for n in NAMES]
    return Ensemble(members, "soft", **options)


def hand_logits() -> np.ndarray:
    """Each member puts logit 2 on the labels of `hand_vote` (a [0,1,2,0,1], b [0,2,1,2,1], c [0,1,2,2,0]).

    Soft vote: [0, 1, 2, 2, 1], so 2 of 5 right against Y_TRUE; confidence e^2 / (e^2 + 2) = 0.787
    on row 0 (unanimous), (2 * 0.787 + 0.107) / 3 = 0.560 on the others.
    """
    logits = np.zeros((3, 5, 3))
    for m, row in enumerate(hand_vote().member_labels):
        logits[m, np.arange(5), row] = 2.0
    return logits


def run_evaluate(tmp_path: Path, split: str, *, gold: bool = True, fitted: dict | None = None,
                 data_info: dict | None = None, **options) -> tuple[dict, str, str]:
    from ensemble.data import TextDataset
    from ensemble.evaluate import evaluate

    labels = [LABELS[i] for i in Y_TRUE] if gold else None
    ds = TextDataset(texts=list(TEXTS), pairs=None, labels=labels, path="hand")
    out = tmp_path / "out"
    report = evaluate(hand_ensemble(tmp_path, **options), ds, split, out, fitted=fitted, data_info=data_info,
                      logits=hand_logits(), truncated={"a": 1, "b": 0, "c": 2})
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == report
    return report, (out / "report.md").read_text(encoding="utf-8"), (out / "report.html").read_text(encoding="utf-8")


FITTED = {"method": "soft", "fitted_on": "valid", "valid_rows": 5}
OPTIMISTIC = ("these scores are measured on the 'valid' split, the rows the vote was fitted on (and each "
              "member's best epoch chosen on), so they are optimistic; give the recipe a test file")


def test_evaluate_on_the_fitted_split_warns_at_the_top(tmp_path):
    report, md, page = run_evaluate(tmp_path, "valid", fitted=FITTED)
    assert report["warning"] == OPTIMISTIC and report["combining"]["warning"] == OPTIMISTIC
    assert list(report)[:3] == ["split", "warning", "rows"]  # read first in report.json too
    assert md.startswith(f"# Ensemble report: valid\n\n> **Warning:** {OPTIMISTIC}\n\n- Split: `valid`\n")
    warning = OPTIMISTIC.replace("'", "&#x27;")
    assert f'<h1>Ensemble report: valid</h1>\n<p class="warning"><strong>Warning:</strong> {warning}</p>' in page
    # Scored on a test split: nothing to warn about.
    report, md, page = run_evaluate(tmp_path, "test", fitted=FITTED)
    assert "warning" not in report and "warning" not in report["combining"]
    assert "Warning" not in md and 'class="warning"' not in page


def test_evaluate_when_every_row_abstains(tmp_path):
    report, md, page = run_evaluate(tmp_path, "test", abstain_below=0.9)  # the top confidence is 0.787
    assert {k: report["abstention"][k] for k in ("on", "threshold", "abstained", "coverage", "accuracy_answered")} == {
        "on": "confidence", "threshold": 0.9, "abstained": 5, "coverage": 0.0, "accuracy_answered": None}
    assert report["ensemble"]["accuracy"] == pytest.approx(0.4)  # every row, as voted
    assert "| **ensemble (all rows, before abstention)** |  | 0.4000 |" in md
    assert ("**Ensemble after abstention** (abstains when confidence is below 0.9000): answers 0 of 5 rows, "
            "coverage 0.0000; accuracy on the answered rows: undefined (no row answered).") in md
    assert "- Accuracy on answered rows: undefined (no row answered)" in md
    assert "<td><strong>ensemble (all rows, before abstention)</strong></td>" in page
    _, rows = read_csv(tmp_path / "out" / "predictions.csv")
    assert {row["ensemble_label"] for row in rows} == {"abstain"}


def test_evaluate_with_some_rows_abstaining(tmp_path):
    report, md, _ = run_evaluate(tmp_path, "test", abstain_below=0.7)  # only row 0 (0.787, right) answered
    assert report["abstention"]["abstained"] == 4 and report["abstention"]["coverage"] == pytest.approx(0.2)
    assert report["abstention"]["accuracy_answered"] == 1.0
    assert ("**Ensemble after abstention** (abstains when confidence is below 0.7000): answers 1 of 5 rows, "
            "coverage 0.2000; accuracy on the answered rows: 1.0000.") in md
    # Without gold labels: how much was answered, no accuracy.
    report, md, _ = run_evaluate(tmp_path, "test", gold=False, abstain_below=0.7)
    assert report["abstention"] == {"on": "confidence", "threshold": 0.7, "abstained": 4, "coverage": 0.2}
    assert ("**Ensemble after abstention** (abstains when confidence is below 0.7000): answers 1 of 5 rows, "
            "coverage 0.2000.") in md
    assert "accuracy" not in md.lower()
    # No threshold: no abstention section without gold, and the plain ensemble row with it.
    report, md, _ = run_evaluate(tmp_path, "test", gold=False)
    assert "abstention" not in report and "| **ensemble** |" in md
    report, md, _ = run_evaluate(tmp_path, "test")
    assert report["abstention"]["threshold"] is None and "| **ensemble** |  | 0.4000 |" in md
    assert "after abstention" not in md


def test_evaluate_data_section_names_the_split_and_skips_nothing_by_default(tmp_path):
    info = {"skipped_rows": {"train": 0, "valid": 0, "test": 0}, "failed_members": {}}  # on_bad_rows = "error"
    report, md, _ = run_evaluate(tmp_path, "test", data_info=info)
    assert report["data"]["truncated"] == {"a": {"eval": 1}, "b": {"eval": 0}, "c": {"eval": 2}}
    data = md.split("## Data\n\n")[1].split("\n## ")[0]
    assert data == ("Texts longer than the member's max_length (cut to fit), per split:\n\n"
                    "| model | max length | test |\n| --- | ---: | ---: |\n| a | 64 | 1 |\n| b | 64 | 0 |\n"
                    "| c | 64 | 2 |\n")
    # The disputed table has the rows where members disagree; row 0 is unanimous.
    assert [item["row"] for item in report["disputed"]] == [1, 2, 3, 4]


def test_disputed_rows_with_a_zero_weight_member_follow_the_members_split():
    from ensemble.aggregate import aggregate

    # c and d have weight 0: every row's weighted agreement is 1 (a and b agree everywhere)
    labels_by_member = np.array([[0, 1, 0, 1], [0, 1, 0, 1], [1, 0, 0, 0], [1, 1, 0, 0]])
    logits = np.where(labels_by_member[..., None] == np.arange(2), 3.0, 0.0).astype(np.float32)
    vote = aggregate(logits, "soft", weights=[1.0, 1.0, 0.0, 0.0])
    assert vote.agreement.tolist() == [1.0, 1.0, 1.0, 1.0]
    report = build_report(names=list("abcd"), labels=["neg", "pos"], vote=vote, method="weighted",
                          weights=dict(zip("abcd", [1.0, 1.0, 0.0, 0.0])), y_true=None, texts=list("wxyz"),
                          pairs=None, split="test")
    # rows 0 and 3: half the members agree with the ensemble; row 1: three of four; row 2 unanimous
    assert [item["row"] for item in report["disputed"]] == [0, 3, 1]


def test_disputed_rows_start_with_the_deepest_split_not_the_lowest_agreement():
    # row 0: two members against one, and the soft vote picks the class neither side chose
    # (agreement 0); row 1: every member a different class (agreement 1/3). Row 1 is disputed more.
    logits = np.array([[[1.0, 0.0, 0.9], [5.0, 0.0, 0.0]],
                       [[1.0, 0.0, 0.9], [0.0, 5.0, 0.0]],
                       [[0.0, 1.0, 0.95], [0.0, 0.0, 5.5]]], np.float32)
    vote = aggregate(logits, "soft")
    assert vote.labels.tolist() == [2, 2] and vote.agreement[0] == 0.0
    report = build_report(names=["a", "b", "c"], labels=["x", "y", "z"], vote=vote, method="soft",
                          weights={"a": 1.0, "b": 1.0, "c": 1.0}, y_true=None, texts=["t0", "t1"], pairs=None,
                          split="test")
    assert [item["row"] for item in report["disputed"]] == [1, 0]


def test_per_label_scores_hand_case_and_their_table():
    #   class 0: TP 1, FP 1, FN 1 -> P .5, R .5, F1 .5;  class 1: TP 2, FP 1 -> P 2/3, R 1, F1 .8
    #   class 2: TP 0 -> 0, 0, 0 (zero_division), one gold row;  class 3: no row at all
    s = per_label_scores(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 4)
    assert s["precision"] == pytest.approx([0.5, 2 / 3, 0.0, 0.0])
    assert s["recall"] == pytest.approx([0.5, 1.0, 0.0, 0.0])
    assert s["f1"] == pytest.approx([0.5, 0.8, 0.0, 0.0])
    assert s["support"] == [2, 2, 1, 0]
    report = make_report()
    md = render.markdown(report)
    block = md.split("Per label (a binary task's usual score is its positive label's F1):")[1]
    names = list(report["members"])
    assert block.split("\n\n")[1].splitlines()[0] == (
        "| label | gold rows | ensemble precision | ensemble recall | ensemble F1 | "
        + " | ".join(f"F1 {n}" for n in names) + " |")
    scores = report["ensemble"]["per_label"]
    assert f"| neg | {scores['support'][0]} | {scores['precision'][0]:.4f} | {scores['recall'][0]:.4f} | " in block


def test_predictions_csv_keeps_the_voted_of_abstained_rows(tmp_path):
    path = tmp_path / "predictions.csv"
    abstain = np.array([True, False, True, False, False])
    write_predictions(path, names=NAMES, labels=LABELS, vote=hand_vote(), texts=TEXTS, pairs=None, y_true=None,
                      abstain=abstain)
    header, rows = read_csv(path)
    assert header[-4:] == ["ensemble_label", "voted", "ensemble_confidence", "agreement"]
    assert [row["voted"] for row in rows] == ["neg", "neu", "pos", "pos", "neu"]  # as the vote gave them
    assert [row["ensemble_label"] for row in rows] == ["abstain", "neu", "abstain", "pos", "neu"]
    with pytest.raises(EnsembleError, match="'voted' is a column the predictions have already"):
        prediction_columns(NAMES, pairs=False, gold=False, kept=["voted"], abstaining=True)
    assert prediction_columns(NAMES, pairs=False, gold=False, kept=["voted"])[0] == "voted"
