"""Combining math: hand-computed scores, recovered temperatures, weights, Caruana traces, the
cross-fitted stacker and its JSON round trip, coverage curves, and a few properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ensemble.combine import (
    abstain_mask,
    abstain_threshold,
    caruana_selection,
    coverage_curve,
    ece,
    fit_temperatures,
    fit_weights,
    nll,
    soften,
    softmax,
)
from ensemble.errors import EnsembleError

# Two members x 3 rows x 2 classes; their mean is [[.8, .2], [.4, .6], [.3, .7]].
P0 = [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]
P1 = [[0.7, 0.3], [0.2, 0.8], [0.4, 0.6]]
MEAN = np.mean([P0, P1], axis=0)
Y3 = np.array([0, 0, 1])  # row 1 is predicted as class 1: wrong


def log_loss(p2d, y) -> float:
    return -float(np.mean(np.log(np.asarray(p2d)[np.arange(len(y)), y])))


def random_probs(rng, members, rows, classes, alpha=1.0):
    return rng.dirichlet(np.full(classes, alpha), size=(members, rows))


# ---------------------------------------------------------------- softmax, nll, ece


def test_softmax_hand_values_and_temperatures():
    logits = np.log(np.array([[[1.0, 3.0]], [[1.0, 9.0]]]))
    np.testing.assert_allclose(softmax(logits), [[[0.25, 0.75]], [[0.1, 0.9]]])
    # Member 1 at T=2 has logits (0, ln 3): back to 1:3.
    np.testing.assert_allclose(softmax(logits, [1.0, 2.0]), [[[0.25, 0.75]], [[0.25, 0.75]]])


def test_softmax_is_stable_for_huge_logits():
    out = softmax(np.array([[[1000.0, 0.0, -1000.0]]]))
    np.testing.assert_allclose(out, [[[1.0, 0.0, 0.0]]])
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize(
    "probs, y, expected",
    [
        (MEAN, Y3, -(math.log(0.8) + math.log(0.4) + math.log(0.7)) / 3),
        ([P0[0], P1[1]], [0, 1], -(math.log(0.9) + math.log(0.8)) / 2),
        ([[1.0, 0.0]], [1], -math.log(1e-12)),  # the floor keeps a confident miss finite
    ],
)
def test_nll_hand_computed(probs, y, expected):
    assert nll(probs, np.array(y)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "probs, y, bins, expected",
    [
        # bins=3: conf .8 and .7 (both right) share (2/3, 1]: |1 - .75| * 2/3; conf .6 (wrong)
        # is alone in (1/3, 2/3]: |0 - .6| * 1/3.
        (MEAN, Y3, 3, 0.25 * 2 / 3 + 0.6 / 3),
        # bins=5: (.8, 1]: .85 right, .9 wrong -> |.5 - .875| * 2/5; (.6, .8]: .65, .7 right ->
        # |1 - .675| * 2/5; (.4, .6]: .55 wrong -> .55 * 1/5.
        (
            [[0.85, 0.15], [0.1, 0.9], [0.65, 0.35], [0.3, 0.7], [0.55, 0.45]],
            [0, 0, 0, 1, 1],
            5,
            0.375 * 0.4 + 0.325 * 0.4 + 0.55 * 0.2,
        ),
        ([[1.0, 0.0], [0.0, 1.0]], [0, 1], 15, 0.0),  # confidence 1.0 lands in the last bin
        # Bins are (lo, hi]: 0.5 belongs to (0, .5] with bins=2, 0.75 to (.5, .75] with bins=4.
        ([[0.5, 0.5], [0.75, 0.25]], [1, 0], 2, (0.5 + 0.25) / 2),
        ([[0.5, 0.5], [0.75, 0.25], [0.8, 0.2]], [0, 1, 0], 4, (0.5 + 0.75 + 0.2) / 3),
    ],
)
def test_ece_hand_computed(probs, y, bins, expected):
    assert ece(probs, np.array(y), bins=bins) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- temperatures


def test_fit_temperatures_recovers_known_temperatures():
    rng = np.random.default_rng(0)
    true_t = np.array([0.5, 2.0, 1.0])
    z = rng.normal(0.0, 2.0, size=(4000, 4))
    probs = softmax(z[None])[0]
    y = np.array([rng.choice(4, p=row) for row in probs])
    logits = true_t[:, None, None] * z[None]  # softmax(logits[m] / T_m) == softmax(z)
    fitted = fit_temperatures(logits, y)
    np.testing.assert_allclose(fitted, true_t, rtol=0.05)
    assert np.array_equal(fitted, fit_temperatures(logits, y))  # deterministic
    assert nll(softmax(logits, fitted)[0], y) <= nll(softmax(logits)[0], y)


def test_fit_temperatures_hits_the_bound_for_a_perfect_member():
    logits = np.array([[[3.0, 0.0], [0.0, 3.0]]])
    assert fit_temperatures(logits, np.array([0, 1]))[0] == pytest.approx(0.05, rel=1e-3)


# ---------------------------------------------------------------- weights


def test_fit_weights_finds_the_perfect_member():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=200)
    perfect = np.eye(3)[y]
    noise = random_probs(rng, 1, 200, 3)[0]
    w = fit_weights(np.stack([noise, perfect]), y)
    assert w[1] > 0.95 and w[0] < w[1]
    assert w.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(6))
def test_fit_weights_never_worse_than_best_single_or_uniform(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=80)
    # Members of varying skill: a share of the mass on the truth, the rest random.
    skill = rng.uniform(0.0, 0.8, size=(4, 1, 1))
    probs = skill * np.eye(3)[y][None] + (1 - skill) * random_probs(rng, 4, 80, 3)
    w = fit_weights(probs, y)
    loss = log_loss(np.tensordot(w, probs, axes=1), y)
    assert loss <= min(log_loss(p, y) for p in probs) + 1e-12
    assert loss <= log_loss(probs.mean(axis=0), y) + 1e-12


# ---------------------------------------------------------------- Caruana

A = [[0.6, 0.4], [0.6, 0.4]]
B = [[0.4, 0.6], [0.4, 0.6]]


def test_caruana_hand_trace_with_ties():
    # y = [0, 1]. Round 1: A, B and A' all score -(ln .6 + ln .4)/2 -> tie -> lowest index 0.
    # Round 2: +B gives [.5, .5] (ln 2 = .693) beats +A (.714) -> 1. Round 3: +A and +B both
    # give (1.6, 1.4)/3 mirrored -> tie -> 0. Round 4: +B gives [.5, .5] again -> 1. The
    # duplicate A' (index 2) always ties with A and loses on index.
    w, picks = caruana_selection(np.array([A, B, A]), np.array([0, 1]), rounds=6)
    assert picks == [0, 1, 0, 1, 0, 1]
    np.testing.assert_allclose(w, [0.5, 0.5, 0.0])


# y = [0, 1, 1]. M0: right everywhere, unsure; M1: right everywhere, sure; M3: lower log-loss
# than M0 but wrong on row 2.
M0 = [[0.55, 0.45], [0.45, 0.55], [0.45, 0.55]]  # acc 1, ll .598
M1 = [[0.9, 0.1], [0.1, 0.9], [0.1, 0.9]]  # acc 1, ll .105
M3 = [[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]]  # acc 2/3, ll .375


@pytest.mark.parametrize(
    "members, metric, first_pick",
    [
        ([M0, M3], "log_loss", 1),
        ([M0, M3], "accuracy", 0),  # accuracy first, whatever the log-loss
        ([M0, M1], "accuracy", 1),  # equal accuracy -> lower log-loss, beating the lower index
        ([M1, M1], "accuracy", 0),  # equal everything -> lower index
    ],
)
def test_caruana_metric_and_tie_breaks(members, metric, first_pick):
    w, picks = caruana_selection(np.array(members), np.array([0, 1, 1]), rounds=3, metric=metric)
    assert picks[0] == first_pick
    assert len(picks) == 3 and w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w, np.bincount(picks, minlength=len(members)) / 3)


def test_caruana_rejects_bad_parameters():
    probs = np.array([A])
    with pytest.raises(EnsembleError, match=r"the 'metric' parameter must be one of \{'accuracy', 'log_loss'\}; got 'x'"):
        caruana_selection(probs, np.array([0, 1]), metric="x")
    with pytest.raises(EnsembleError, match="'rounds' parameter must be an int >= 1; got 0"):
        caruana_selection(probs, np.array([0, 1]), rounds=0)
    with pytest.raises(EnsembleError, match=r"'y' has shape \(3,\) but 'probs' has shape \(1, 2, 2\)"):
        caruana_selection(probs, np.array([0, 1, 1]))


# ---------------------------------------------------------------- abstention


def test_coverage_curve_hand_computed():
    values = [0.9, 0.6, 0.8, 0.6, 0.3]
    correct = np.array([True, False, True, True, False])
    assert coverage_curve(values, correct) == [
        {"threshold": 0.3, "coverage": 1.0, "accuracy": 0.6},
        {"threshold": 0.6, "coverage": 0.8, "accuracy": 0.75},
        {"threshold": 0.8, "coverage": 0.4, "accuracy": 1.0},
        {"threshold": 0.9, "coverage": 0.2, "accuracy": 1.0},
    ]
    # Explicit thresholds: "answer everything" is added, and coverage 0 has no accuracy.
    assert coverage_curve(values, correct, points=[0.85, 0.95]) == [
        {"threshold": 0.3, "coverage": 1.0, "accuracy": 0.6},
        {"threshold": 0.85, "coverage": 0.2, "accuracy": 1.0},
        {"threshold": 0.95, "coverage": 0.0, "accuracy": None},
    ]
    assert coverage_curve([], np.array([], dtype=bool)) == []


@pytest.mark.parametrize("points", [None, 5, 1])
def test_coverage_curve_quantiles_are_monotone(points):
    rng = np.random.default_rng(4)
    values = rng.uniform(size=500)
    correct = rng.uniform(size=500) < values
    rows = coverage_curve(values, correct, points=points)
    assert len(rows) <= (20 if points is None else points)
    assert rows[0]["coverage"] == 1.0 and rows[0]["threshold"] == values.min()
    cov = [r["coverage"] for r in rows]
    assert cov == sorted(cov, reverse=True)
    for r in rows:  # each row agrees with abstain_mask
        answered = ~abstain_mask(values, r["threshold"])
        assert r["coverage"] == answered.mean() and r["accuracy"] == correct[answered].mean()


def test_abstain_mask_and_errors():
    np.testing.assert_array_equal(abstain_mask([0.2, 0.5, 0.7], 0.5), [True, False, False])
    with pytest.raises(EnsembleError, match="'threshold' parameter must be a finite number"):
        abstain_mask([0.2], float("nan"))
    with pytest.raises(EnsembleError, match=r"'values' has shape \(2,\) and 'correct' has shape \(3,\)"):
        coverage_curve([0.1, 0.2], np.array([True, False, True]))
    with pytest.raises(EnsembleError, match="'correct' must be a bool array"):
        coverage_curve([0.1, 0.2], [1, 0])


# ---------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: nll([[0.5, 0.5]], np.array([2])), r"'y' must hold class indices in \[0, 2\); got 2"),
        (lambda: nll([[0.5, 0.5]], np.array([0.0])), "integer class indices"),
        (lambda: nll([0.5, 0.5], np.array([0])), r"non-empty \(rows, classes\) array; got shape \(2,\)"),
        (lambda: nll([[0.5, np.nan]], np.array([0])), "NaN or infinite"),
        (lambda: nll([[-0.5, 1.5]], np.array([0])), "must be >= 0"),
        (lambda: ece([[0.5, 0.5]], np.array([0]), bins=0), "'bins' parameter must be an int >= 1"),
        (lambda: softmax(np.zeros((2, 1, 2)), [1.0]), r"'temperatures' has shape \(1,\) but 'logits' has shape \(2, 1, 2\)"),
        (lambda: softmax(np.zeros((1, 1, 2)), [0.0]), "'temperatures' must be > 0"),
        (lambda: fit_temperatures(np.zeros((1, 2, 2)), np.array([], dtype=int)), r"'y' has shape \(0,\)"),
        (lambda: fit_weights(np.zeros((1, 0, 2)), np.array([], dtype=int)), "'y' is empty"),
    ],
)
def test_bad_inputs_raise_one_line(call, message):
    with pytest.raises(EnsembleError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- properties

prob_arrays = st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(2, 4), st.integers(0, 2**32 - 1))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prob_arrays)
def test_weights_are_on_the_simplex(shape):
    members, rows, classes, seed = shape
    rng = np.random.default_rng(seed)
    probs = random_probs(rng, members, rows, classes, alpha=0.3)
    w = fit_weights(probs, rng.integers(0, classes, size=rows))
    assert w.shape == (members,) and np.all(np.isfinite(w)) and np.all(w >= 0)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all((w == 0) | (w >= 1e-4 / 2))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prob_arrays, st.floats(0.01, 100.0))
def test_temperatures_positive_and_finite(shape, scale):
    members, rows, classes, seed = shape
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, scale, size=(members, rows, classes))
    t = fit_temperatures(logits, rng.integers(0, classes, size=rows))
    assert t.shape == (members,) and np.all(np.isfinite(t))
    assert np.all((t >= 0.05) & (t <= 20.0))


# Rows by value: 0.9 T, 0.8 T, 0.8 F, 0.7 T, 0.6 F -> answered above each cut: 1, 3, 4, 5 rows,
# accuracy 1, 2/3, 3/4, 3/5. Ties (the two 0.8s) are answered or refused together.
VALUES, CORRECT = [0.8, 0.6, 0.9, 0.7, 0.8], [True, False, True, True, False]


@pytest.mark.parametrize("target, expected", [
    ({"coverage": 0.2}, (0.9, 0.2, 1.0)),
    ({"coverage": 0.4}, (0.8, 0.6, 2 / 3)),  # 2 rows would do, but the tie brings in a third
    ({"coverage": 0.6}, (0.8, 0.6, 2 / 3)),
    ({"coverage": 0.61}, (0.7, 0.8, 0.75)),
    ({"coverage": 1.0}, (0.6, 1.0, 0.6)),
    ({"accuracy": 1.0}, (0.9, 0.2, 1.0)),
    ({"accuracy": 0.75}, (0.7, 0.8, 0.75)),  # 2/3 at 0.8 dips below, 3/4 at 0.7 is back up: most rows wins
    ({"accuracy": 0.7}, (0.7, 0.8, 0.75)),
    ({"accuracy": 0.6}, (0.6, 1.0, 0.6)),
])
def test_abstain_threshold_hand_computed(target, expected):
    got = abstain_threshold(VALUES, np.array(CORRECT), **target)
    assert (got["threshold"], got["coverage"]) == pytest.approx(expected[:2])
    assert got["accuracy"] == pytest.approx(expected[2])
    answered = ~abstain_mask(VALUES, got["threshold"])  # the same rule as predicting
    assert answered.mean() == pytest.approx(got["coverage"])


@given(st.lists(st.tuples(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), st.booleans()), min_size=1, max_size=40),
       st.floats(0.01, 1.0))
@settings(max_examples=200, deadline=None)
def test_abstain_threshold_coverage_is_the_highest_threshold_that_meets_it(rows, coverage):
    values, correct = np.array([v for v, _ in rows]), np.array([c for _, c in rows])
    got = abstain_threshold(values, correct, coverage=coverage)
    assert got["coverage"] >= coverage - 1e-9
    higher = values[values > got["threshold"]]
    assert higher.size == 0 or (values >= higher.min()).mean() < coverage - 1e-9


def test_abstain_threshold_errors():
    # 0.9 wrong, 0.5 right: accuracy 0 answering 1 row, 0.5 answering both
    with pytest.raises(EnsembleError, match=r"abstain_accuracy: no threshold reaches accuracy 0.99 on the 2 validation "
                                            r"rows \(the best is 0.5000, answering 2 rows\); lower it"):
        abstain_threshold([0.9, 0.5], np.array([False, True]), accuracy=0.99)
    with pytest.raises(EnsembleError, match="no threshold reaches accuracy 0.5 on the 2 validation rows"):
        abstain_threshold([0.5, 0.9], np.array([False, False]), accuracy=0.5)
    with pytest.raises(EnsembleError, match="give exactly one of 'coverage' and 'accuracy'"):
        abstain_threshold(VALUES, np.array(CORRECT), coverage=0.5, accuracy=0.5)
    with pytest.raises(EnsembleError, match="give exactly one"):
        abstain_threshold(VALUES, np.array(CORRECT))
    with pytest.raises(EnsembleError, match=r"the 'coverage' parameter must be a number in \(0, 1\]; got 0"):
        abstain_threshold(VALUES, np.array(CORRECT), coverage=0)
    with pytest.raises(EnsembleError, match="'correct' must be a bool array"):
        abstain_threshold(VALUES, [1, 0, 1, 1, 0], coverage=0.5)


@pytest.mark.parametrize("rows, answered, target, warned", [
    (300, 1, "accuracy", True),     # 1 answered row "reaches" any accuracy: noise
    (300, 29, "accuracy", True),
    (300, 30, "accuracy", False),
    (20, 20, "accuracy", False),    # a small split, most of it answered: nothing thin about it
    (20, 19, "accuracy", False),
    (20, 5, "accuracy", True),
    (300, 1, "coverage", False),    # a coverage target chose its share itself
])
def test_an_accuracy_target_met_on_a_handful_of_rows_is_warned_about(rows, answered, target, warned):
    from ensemble.votefit import thin_abstention_warning

    info = {"valid_rows": rows, "abstention": {"target": target, "value": 0.99, "valid_coverage": answered / rows}}
    warning = thin_abstention_warning(info, "vote.abstain_accuracy")
    assert (warning is not None) == warned
    if warned:
        assert warning.startswith(f"warning: vote.abstain_accuracy 0.99 is reached by answering {answered} of the "
                                  f"{rows} validation rows") and warning.endswith("or choose by vote.abstain_coverage")


def test_tiny_temperatures_give_the_argmax_not_nan():
    # logits / 1e-308 overflowed to inf, and inf - inf to NaN; shifted first, the limit is one-hot
    assert softmax(np.array([[[2.0, 0.0]]]), [1e-308]).tolist() == [[[1.0, 0.0]]]
    assert soften(np.array([[0.6, 0.4]]), 1e-320).tolist() == [[1.0, 0.0]]


def test_coverage_curve_leaves_out_points_on_a_handful_of_rows_and_keeps_the_chosen_one():
    values = np.linspace(0.0, 1.0, 200)
    correct = np.arange(200) % 3 > 0
    rows = coverage_curve(values, correct, min_answered=30, also=[0.995])
    answered = [round(r["coverage"] * 200) for r in rows]
    # every quantile point answers 30 rows or more; the chosen threshold is in even on one row
    assert min(answered[:-1]) >= 30 and answered[0] == 200 and len(rows) == 21
    assert rows[-1]["threshold"] == 0.995 and answered[-1] == 1
    assert [r["threshold"] for r in coverage_curve(values, correct, min_answered=300)] == [0.0]
