"""The stacker: it learns a permuted member, matches scikit-learn, is deterministic, and
round-trips exactly through plain JSON; malformed saved stackers are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ensemble.combine import nll
from ensemble.errors import EnsembleError
from ensemble.stacking import Stacker


def random_probs(rng, members, rows, classes, alpha=1.0):
    return rng.dirichlet(np.full(classes, alpha), size=(members, rows))


def permuted_case(seed=0, rows=300):
    """Three members on 3 classes; member 2 is sharp but names class (k + 1) % 3 for class k."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=rows)
    truth = np.eye(3)[y]
    good = [0.5 * truth + 0.5 * random_probs(rng, 1, rows, 3)[0] for _ in range(2)]
    swapped = 0.9 * np.roll(truth, 1, axis=1) + 0.1 * random_probs(rng, 1, rows, 3)[0]
    return np.stack([good[0], good[1], swapped]), y


def test_stacker_learns_a_permuted_member():
    probs, y = permuted_case()
    s = Stacker().fit(probs, y)
    np.testing.assert_allclose(s.oof_probs_.sum(axis=1), 1.0)
    assert s.oof_probs_.shape == (300, 3) and s.folds_ == 5
    assert nll(s.oof_probs_, y) <= nll(probs.mean(axis=0), y)
    assert (s.oof_probs_.argmax(axis=1) == y).mean() > 0.95  # member 2 un-permuted


def test_stacker_is_deterministic_and_seeded():
    probs, y = permuted_case(rows=60)
    a, b = Stacker().fit(probs, y, seed=3), Stacker().fit(probs, y, seed=3)
    assert np.array_equal(a.oof_probs_, b.oof_probs_) and np.array_equal(a.coef_, b.coef_)


def test_stacker_round_trip_is_exact_and_json():
    probs, y = permuted_case(rows=90)
    s = Stacker().fit(probs, y, folds=3, C=0.5)
    d = s.to_dict()
    again = Stacker.from_dict(json.loads(json.dumps(d)))
    assert np.array_equal(again.predict_proba(probs), s.predict_proba(probs))
    assert again.to_dict() == d


def sklearn_reference(x, y, C=1.0):
    """scikit-learn's own pipeline: standardized features, then the logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000)).fit(x, y)


def test_stacker_matches_sklearn():
    probs, y = permuted_case(rows=90)
    s = Stacker().fit(probs, y, C=0.5)
    x = np.log(probs).transpose(1, 0, 2).reshape(90, -1)
    ref = sklearn_reference(x, y, C=0.5).predict_proba(x)
    np.testing.assert_allclose(s.predict_proba(probs), ref, atol=1e-8)
    assert s.C_ == 0.5


def test_stacker_chooses_c_by_out_of_fold_log_loss():
    from ensemble.stacking import C_GRID

    probs, y = permuted_case(rows=120)
    chosen = Stacker().fit(probs, y, folds=3)
    losses = {c: nll(Stacker().fit(probs, y, folds=3, C=c).oof_probs_, y) for c in C_GRID}
    assert chosen.C_ == min(losses, key=losses.get)
    assert nll(chosen.oof_probs_, y) == pytest.approx(min(losses.values()))


@pytest.mark.parametrize("classes", [2, 4])
def test_stacker_binary_and_absent_classes(classes):
    # Labels only ever use classes 0 and 1: binary when classes=2, two absent columns when 4.
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=40)
    probs = 0.6 * np.eye(classes)[y][None] + 0.4 * random_probs(rng, 2, 40, classes)
    s = Stacker().fit(probs, y, folds=4, C=1.0)
    out = s.predict_proba(probs)
    assert out.shape == s.oof_probs_.shape == (40, classes)
    assert s.coef_.shape == (2, 2 * classes)  # binary: the 2-row form
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert np.all(out[:, 2:] == 0) and np.all(s.oof_probs_[:, 2:] == 0)
    x = np.log(probs).transpose(1, 0, 2).reshape(40, -1)
    ref = sklearn_reference(x, y).predict_proba(x)
    np.testing.assert_allclose(out[:, :2], ref, atol=1e-8)


def test_stacker_reduces_folds_for_rare_classes_and_single_class():
    probs = random_probs(np.random.default_rng(3), 2, 9, 3)
    s = Stacker().fit(probs, np.array([0, 0, 0, 0, 1, 1, 1, 2, 2]))
    assert s.folds_ == 2  # the rarest class has 2 rows
    s = Stacker().fit(probs, np.array([0, 0, 0, 0, 1, 1, 1, 1, 2]))
    assert s.folds_ == 2  # not below 2; the 1-row class gets 0 where its fold missed it
    np.testing.assert_allclose(s.oof_probs_.sum(axis=1), 1.0)
    s = Stacker().fit(probs, np.zeros(9, dtype=int))
    np.testing.assert_array_equal(s.predict_proba(probs), np.tile([1.0, 0.0, 0.0], (9, 1)))
    s = Stacker().fit(probs[:, :3], np.array([0, 1, 2]))  # no class has 2 rows: plain K-fold
    np.testing.assert_allclose(s.oof_probs_.sum(axis=1), 1.0)


def valid_dict():
    return {"format": "ensemble.stacker", "version": 1, "n_members": 1, "n_classes": 2,
            "folds": 5, "classes": [0, 1], "coef": [[0.0, 0.0], [1.0, -1.0]], "intercept": [0.0, 0.5]}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"coef": [[0.0, 0.0]]}, r"'coef' must be a list of numbers of shape \(2, 2\)"),
        ({"coef": [[0.0, "1"], [1.0, 2.0]]}, "'coef' must be a list of numbers"),
        ({"coef": [[0.0, 0.0], [1.0]]}, "'coef' must be a list of numbers"),
        ({"coef": "abc"}, "'coef' must be a list of numbers"),
        ({"intercept": [0.0, float("nan")]}, "'intercept' contains NaN"),
        ({"intercept": [True, 0.0]}, "'intercept' must be a list of numbers"),
        ({"classes": [1, 0]}, "'classes' must be a non-empty increasing list"),
        ({"classes": [0, 2]}, "'classes' must be a non-empty increasing list"),
        ({"n_members": "1"}, "'n_members' must be an int >= 1"),
        ({"folds": 1}, "'folds' must be an int >= 2"),
        ({"format": "pickle"}, "expected format 'ensemble.stacker' version 1"),
        ({"version": 2}, "expected format 'ensemble.stacker' version 1"),
    ],
)
def test_stacker_from_dict_rejects_malformed(change, message):
    d = valid_dict() | change
    with pytest.raises(EnsembleError, match=message) as info:
        Stacker.from_dict(d)
    assert "\n" not in str(info.value)


def test_stacker_from_dict_rejects_non_dicts_and_missing_keys():
    Stacker.from_dict(valid_dict())
    with pytest.raises(EnsembleError, match="expected a dict; got list"):
        Stacker.from_dict([])
    d = valid_dict()
    del d["coef"]
    with pytest.raises(EnsembleError, match=r"missing key\(s\) \['coef'\]"):
        Stacker.from_dict(d)


def test_stacker_parameter_and_shape_errors():
    probs, y = permuted_case(rows=30)
    with pytest.raises(EnsembleError, match="not fitted"):
        Stacker().predict_proba(probs)
    with pytest.raises(EnsembleError, match="'folds' parameter must be an int >= 2; got 1"):
        Stacker().fit(probs, y, folds=1)
    with pytest.raises(EnsembleError, match="'C' parameter must be a float > 0 or None; got 0"):
        Stacker().fit(probs, y, C=0)
    s = Stacker().fit(probs, y, folds=2)
    with pytest.raises(EnsembleError, match=r"'probs' has shape \(2, 30, 3\) but the stacker was fitted on shape \(3, rows, 3\)"):
        s.predict_proba(probs[:2])




def test_a_member_constant_up_to_rounding_gets_no_weight_not_a_huge_one():
    # member 1 always says [0.6, 0.4, 1e-13]: its features are constant, with a rounding-error spread
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 100)
    good = 0.6 * np.eye(3)[y] + 0.4 * random_probs(rng, 1, 100, 3)[0]
    constant = np.tile([0.6, 0.4, 1e-13], (100, 1))
    s = Stacker().fit(np.stack([good, constant]), y, C=1.0)
    assert np.abs(s.coef_).max() < 100 and np.all(s.coef_[:, 3:] == 0)
    moved = np.tile([0.61, 0.39, 1e-13], (100, 1))  # the constant member wavers: nothing changes
    np.testing.assert_allclose(s.predict_proba(np.stack([good, moved])), s.predict_proba(np.stack([good, constant])))
    x = np.log(np.stack([good, constant])).transpose(1, 0, 2).reshape(100, -1)
    ref = sklearn_reference(x[:, :3], y).predict_proba(x[:, :3])  # as if the constant member were not there
    np.testing.assert_allclose(s.predict_proba(np.stack([good, constant])), ref, atol=1e-8)
