"""Voting math: hand-computed cases, every validation error, dtypes, chunking, and properties
checked against a plain Python-loop reference."""

from __future__ import annotations

import doctest
import importlib
import math
import os
import re
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ensemble.aggregate import Vote, aggregate
from ensemble.errors import EnsembleError

# The package re-exports the function `aggregate`, which shadows the submodule attribute, so
# `import ensemble.aggregate as m` would give the function; this always gives the module.
aggregate_module = importlib.import_module("ensemble.aggregate")


def from_probs(probs) -> np.ndarray:
    """Logits whose softmax is ``probs``, so expected scores can be written as probabilities."""
    return np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)


# 3 members (A, B, C) x 4 rows x 3 classes, written as each member's probabilities.
P = [
    [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.3, 0.5], [0.5, 0.3, 0.2]],  # A votes 0 1 2 0
    [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7]],  # B votes 0 2 1 2
    [[0.2, 0.5, 0.3], [0.3, 0.5, 0.2], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4]],  # C votes 1 1 2 2
]
LOGITS = from_probs(P)
T = 1 / 3
SOFT_MEAN = [  # column sums of P over members, divided by 3
    [1.5 * T, 1.0 * T, 0.5 * T],
    [0.6 * T, 1.3 * T, 1.1 * T],
    [0.4 * T, 1.4 * T, 1.2 * T],
    [0.9 * T, 0.8 * T, 1.3 * T],
]


@pytest.mark.parametrize(
    ("method", "weights", "labels", "scores", "agreement"),
    [
        # Mean probabilities; row 2 goes to 1 (B is very sure) although two members vote 2.
        ("soft", None, [0, 1, 1, 2], SOFT_MEAN, [2 * T, 2 * T, T, 2 * T]),
        # One vote each: row 2 now goes to 2.
        ("hard", None, [0, 1, 2, 2],
         [[2 * T, T, 0], [0, 2 * T, T], [0, T, 2 * T], [T, 0, 2 * T]], [2 * T] * 4),
        # Weights 1:2:1 -> 0.25, 0.5, 0.25. Rows 1 and 2 tie 0.5/0.5 between classes 1 and 2;
        # soft scores: row 1 class 1 = .25*.6 + .5*.2 + .25*.5 = .375 < class 2 = .425 -> 2,
        #              row 2 class 1 = .25*.3 + .5*.8 + .25*.3 = .55 > class 2 = .325 -> 1.
        ("hard", [1, 2, 1], [0, 2, 1, 2],
         [[0.75, 0.25, 0], [0, 0.5, 0.5], [0, 0.5, 0.5], [0.25, 0, 0.75]], [0.75, 0.5, 0.5, 0.75]),
        ("hard", [0.25, 0.5, 0.25], [0, 2, 1, 2],
         [[0.75, 0.25, 0], [0, 0.5, 0.5], [0, 0.5, 0.5], [0.25, 0, 0.75]], [0.75, 0.5, 0.5, 0.75]),
        ("soft", [1, 2, 1], [0, 2, 1, 2],
         [[0.525, 0.325, 0.15], [0.2, 0.375, 0.425], [0.125, 0.55, 0.325], [0.25, 0.25, 0.5]],
         [0.75, 0.5, 0.5, 0.75]),
        # Only C counts: its votes win, and zero-weight dissenters do not lower agreement.
        ("hard", [0, 0, 1], [1, 1, 2, 2],
         [[0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], [1.0] * 4),
        ("soft", [5, 0, 0], [0, 1, 2, 0], P[0], [1.0] * 4),
    ],
)
def test_hand_computed_vote(method, weights, labels, scores, agreement):
    vote = aggregate(LOGITS, method, weights=weights)
    assert vote.labels.tolist() == labels
    np.testing.assert_allclose(vote.scores, scores, atol=1e-6)
    np.testing.assert_allclose(vote.agreement, agreement, atol=1e-6)
    expected_confidence = [scores[r][label] for r, label in enumerate(labels)]
    np.testing.assert_allclose(vote.confidence, expected_confidence, atol=1e-6)


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_hand_computed_member_facts(method):
    vote = aggregate(LOGITS, method, weights=[3, 1, 2], temperatures=[1, 1, 1])
    assert vote.member_labels.tolist() == [[0, 1, 2, 0], [0, 2, 1, 2], [1, 1, 2, 2]]
    np.testing.assert_allclose(
        vote.member_confidence,
        [[0.7, 0.6, 0.5, 0.5], [0.6, 0.6, 0.8, 0.7], [0.5, 0.5, 0.6, 0.4]],
        atol=1e-6,
    )
    # A-B agree on row 0; A-C on rows 1 and 2; B-C on row 3.
    assert vote.equal_counts.tolist() == [[4, 1, 2], [1, 4, 1], [2, 1, 4]]


def test_output_types_and_shapes():
    vote = aggregate(torch.from_numpy(LOGITS), "hard")
    assert isinstance(vote, Vote)
    expected = {
        "labels": ((4,), np.int64),
        "scores": ((4, 3), np.float32),
        "confidence": ((4,), np.float32),
        "agreement": ((4,), np.float32),
        "member_labels": ((3, 4), np.int64),
        "member_confidence": ((3, 4), np.float32),
        "equal_counts": ((3, 3), np.int64),
    }
    for field, (shape, dtype) in expected.items():
        value = getattr(vote, field)
        assert isinstance(value, np.ndarray), field
        assert (value.shape, value.dtype) == (shape, dtype), field


def test_hard_tie_broken_by_soft_score():
    # Two members split 0.5 / 0.5 between classes 0 and 2 on both rows.
    logits = from_probs([
        [[0.5, 0.2, 0.3], [0.1, 0.4, 0.5]],  # votes 0, 2
        [[0.1, 0.3, 0.6], [0.8, 0.1, 0.1]],  # votes 2, 0
    ])
    vote = aggregate(logits, "hard")
    # Row 0 soft: class 0 = (.5+.1)/2 = .30 < class 2 = (.3+.6)/2 = .45 -> 2 (the higher index).
    # Row 1 soft: class 0 = (.1+.8)/2 = .45 > class 2 = (.5+.1)/2 = .30 -> 0.
    assert vote.labels.tolist() == [2, 0]
    np.testing.assert_allclose(vote.scores, [[0.5, 0, 0.5], [0.5, 0, 0.5]])
    np.testing.assert_allclose(vote.agreement, [0.5, 0.5])
    # Class 1 has the best soft score in neither row, and no votes: never a candidate.
    assert aggregate(logits, "soft").labels.tolist() == [2, 0]


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_tie_in_votes_and_soft_score_goes_to_lowest_index(method):
    # Mirror-image members, each certain (a logit gap of 30 gives probability 1.0 in float32),
    # so classes 1 and 2 tie exactly in votes (0.5 each) and in soft score (0.5 each).
    logits = np.array([
        [[0, 0, 30, 0], [0, 30, 0, 0]],
        [[0, 30, 0, 0], [0, 0, 30, 0]],
    ], dtype=np.float32)
    vote = aggregate(logits, method)
    assert vote.labels.tolist() == [1, 1]
    assert vote.scores[:, 1].tolist() == vote.scores[:, 2].tolist() == [0.5, 0.5]
    np.testing.assert_allclose(vote.agreement, [0.5, 0.5])


def test_tie_inside_a_member_goes_to_lowest_index():
    logits = np.array([[[1.0, 3.0, 3.0]], [[0.0, 0.0, 0.0]], [[2.0, 0.0, 2.0]]], dtype=np.float32)
    vote = aggregate(logits, "hard")
    assert vote.member_labels[:, 0].tolist() == [1, 0, 0]
    assert vote.labels.tolist() == [0]
    np.testing.assert_allclose(vote.scores, [[2 / 3, 1 / 3, 0]], atol=1e-6)
    np.testing.assert_allclose(vote.member_confidence[:, 0], [0.46831, 1 / 3, 0.46831], atol=1e-5)


def test_temperatures_change_a_soft_decision():
    # A is sure of class 0 (logit gap 2), B less sure of class 1 (gap 1). With two classes the
    # probability of the first is sigmoid(gap): sigmoid(2) = .880797, sigmoid(-1) = .268941.
    logits = np.array([[[2.0, 0.0]], [[0.0, 1.0]]], dtype=np.float32)
    plain = aggregate(logits, "soft")
    assert plain.labels.tolist() == [0]
    np.testing.assert_allclose(plain.scores, [[0.574869, 0.425131]], atol=1e-6)
    # Cooling A by T = 4 leaves gap 0.5: sigmoid(.5) = .622459, mean (.622459+.268941)/2 = .4457.
    cooled = aggregate(logits, "soft", temperatures=[4.0, 1.0])
    assert cooled.labels.tolist() == [1]
    np.testing.assert_allclose(cooled.scores, [[0.445700, 0.554300]], atol=1e-6)
    np.testing.assert_allclose(cooled.member_confidence[:, 0], [0.622459, 0.731059], atol=1e-6)
    assert cooled.member_labels.tolist() == plain.member_labels.tolist() == [[0], [1]]
    # A hard vote without ties ignores temperatures: the argmax does not move.
    np.testing.assert_array_equal(
        aggregate(LOGITS, "hard", temperatures=[0.1, 5, 2]).labels, aggregate(LOGITS, "hard").labels
    )


def test_no_rows():
    vote = aggregate(np.zeros((2, 0, 3), dtype=np.float32), "hard")
    assert vote.labels.shape == (0,) and vote.scores.shape == (0, 3)
    assert vote.member_labels.shape == (2, 0)
    assert vote.equal_counts.tolist() == [[0, 0], [0, 0]]


def test_single_member_single_class():
    vote = aggregate(np.array([[[0.3], [-2.0]]]), "soft")
    assert vote.labels.tolist() == [0, 0]
    np.testing.assert_array_equal(vote.scores, [[1.0], [1.0]])
    np.testing.assert_array_equal(vote.agreement, [1.0, 1.0])
    assert vote.equal_counts.tolist() == [[2]]


# ----------------------------------------------------------------------------- validation

GOOD = np.zeros((3, 2, 4), dtype=np.float32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "x"}, "the 'method' parameter must be one of {'hard', 'soft'}; got 'x'"),
        ({"method": "Soft"}, "the 'method' parameter must be one of {'hard', 'soft'}; got 'Soft'"),
        ({"logits": np.zeros((4, 3))},
         "the 'logits' parameter must have shape (members, rows, classes); got shape (4, 3)"),
        ({"logits": torch.zeros(1, 2, 3, 4)},
         "the 'logits' parameter must have shape (members, rows, classes); got shape (1, 2, 3, 4)"),
        ({"logits": np.zeros((0, 2, 3))},
         "the 'logits' parameter needs at least one member and one class; got shape (0, 2, 3)"),
        ({"logits": np.zeros((2, 2, 0))},
         "the 'logits' parameter needs at least one member and one class; got shape (2, 2, 0)"),
        ({"logits": np.array([[["a"]]])}, "the 'logits' parameter must hold real numbers; got <U1"),
        ({"logits": torch.zeros(1, 1, 2, dtype=torch.complex64)},
         "the 'logits' parameter must hold real numbers; got torch.complex64"),
        ({"weights": [1, 1]}, "the 'weights' parameter must have one entry per member (3); got 2 entries"),
        ({"weights": [[1, 1, 1]]},
         "the 'weights' parameter must have one entry per member (3); got shape (1, 3)"),
        ({"weights": 1.0}, "the 'weights' parameter must have one entry per member (3); got shape ()"),
        ({"weights": ["a", "b", "c"]},
         "the 'weights' parameter must be a sequence of numbers; got ['a', 'b', 'c']"),
        ({"weights": [1, -1, 1]}, "the 'weights' parameter must be non-negative; got [1.0, -1.0, 1.0]"),
        ({"weights": [0, 0, 0]}, "the 'weights' parameter must not be all zero; got [0.0, 0.0, 0.0]"),
        ({"weights": [1, float("nan"), 1]}, "the 'weights' parameter must be finite; got [1.0, nan, 1.0]"),
        ({"weights": [1, float("inf"), 1]}, "the 'weights' parameter must be finite; got [1.0, inf, 1.0]"),
        ({"temperatures": [1, 1, 1, 1]},
         "the 'temperatures' parameter must have one entry per member (3); got 4 entries"),
        ({"temperatures": [1, 0, 1]},
         "the 'temperatures' parameter must be positive and finite; got [1.0, 0.0, 1.0]"),
        ({"temperatures": [1, -2, 1]},
         "the 'temperatures' parameter must be positive and finite; got [1.0, -2.0, 1.0]"),
        ({"temperatures": [1, float("inf"), 1]},
         "the 'temperatures' parameter must be positive and finite; got [1.0, inf, 1.0]"),
        ({"temperatures": [1, float("nan"), 1]},
         "the 'temperatures' parameter must be positive and finite; got [1.0, nan, 1.0]"),
        ({"logits": {"a": GOOD[0], "b": GOOD[1]}}, "the 'logits' parameter must be a (members, rows, classes) array; got "
         "a dict: stack its arrays in member order, e.g. np.stack([logits[name] for name in names])"),
        ({"temperatures": [1e-39, 1, 1]},  # logits / T overflow float32: NaN votes (reference), 6e37 "probabilities"
         "the 'temperatures' parameter must be >= 1e-06 (smaller ones overflow float32 and vote like an argmax: "
         "use method 'hard'); got [1e-39, 1.0, 1.0]"),
    ],
)
def test_validation_errors(kwargs, message):
    arguments = {"logits": GOOD, "method": "soft", **kwargs}
    with pytest.raises(EnsembleError, match=f"^{re.escape(message)}$"):
        aggregate(**arguments)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits_name_member_and_row(monkeypatch, bad):
    # A tiny chunk, so the reported row is the global row, not the row within the chunk.
    monkeypatch.setattr(aggregate_module, "_CHUNK_ELEMENTS", 4)
    monkeypatch.setattr(aggregate_module, "_WHOLE_CHUNK_ELEMENTS", 4)  # the in-place kernel path too
    logits = np.zeros((3, 5, 4), dtype=np.float32)
    logits[1, 3, 2] = bad
    message = "the 'logits' parameter must be finite; got NaN or infinity at member 1, row 3"
    with pytest.raises(EnsembleError, match=f"^{re.escape(message)}$"):
        aggregate(torch.from_numpy(logits), "hard")


# ----------------------------------------------------------------------------- dtypes, inputs


def random_logits(seed: int, shape=(3, 40, 5), scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def assert_same_vote(a: Vote, b: Vote) -> None:
    for field in Vote.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_bf16_matches_fp32(method):
    x = torch.from_numpy(random_logits(0))
    x_bf16 = x.bfloat16()
    vote_bf16 = aggregate(x_bf16, method, weights=[1, 2, 3], temperatures=[0.5, 1, 2])
    # Computation is float32: bf16 input is exactly its float32 widening...
    widened = aggregate(x_bf16.float(), method, weights=[1, 2, 3], temperatures=[0.5, 1, 2])
    assert_same_vote(vote_bf16, widened)
    # ...and close to the unrounded fp32 logits (bf16 keeps ~3 significant digits).
    vote_fp32 = aggregate(x, method, weights=[1, 2, 3], temperatures=[0.5, 1, 2])
    np.testing.assert_allclose(vote_bf16.scores, vote_fp32.scores, atol=0.03)
    np.testing.assert_allclose(vote_bf16.member_confidence, vote_fp32.member_confidence, atol=0.03)
    if method == "soft":
        # Labels may only differ where the fp32 decision is a near-tie.
        top2 = np.sort(vote_fp32.scores, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 0.05
        np.testing.assert_array_equal(vote_bf16.labels[clear], vote_fp32.labels[clear])


@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x,
        lambda x: x.astype(np.float64),
        lambda x: x.astype(np.float16),
        lambda x: torch.from_numpy(x),
        lambda x: torch.from_numpy(x).half(),
        lambda x: torch.from_numpy(x).bfloat16(),
        lambda x: torch.from_numpy(x).double(),
        lambda x: x.tolist(),
        lambda x: np.asfortranarray(x),
        lambda x: np.flip(np.flip(x, 1).copy(), 1),
    ],
    ids=["np32", "np64", "np16", "t32", "t16", "bf16", "t64", "list", "fortran", "strided"],
)
def test_input_types_agree_on_exactly_representable_logits(method, convert):
    # Small multiples of 1/4 are exact in every float type, so every input gives the same vote.
    x = np.round(random_logits(1) * 4) / 4
    expected = aggregate(x, method, weights=[2, 1, 1])
    assert_same_vote(aggregate(convert(x), method, weights=[2, 1, 1]), expected)


@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize("chunk_elements", [1, 5 * 3, 5 * 3 * 7, 5 * 3 * 40, 1 << 24])
def test_chunking_gives_identical_results(monkeypatch, method, chunk_elements):
    x = torch.from_numpy(np.round(random_logits(2) * 2) / 2)  # coarse values -> many ties
    whole = aggregate(x, method, weights=[1, 1, 2], temperatures=[1, 2, 0.5])
    monkeypatch.setattr(aggregate_module, "_CHUNK_ELEMENTS", chunk_elements)
    monkeypatch.setattr(aggregate_module, "_WHOLE_CHUNK_ELEMENTS", chunk_elements)
    chunked = aggregate(x, method, weights=[1, 1, 2], temperatures=[1, 2, 0.5])
    assert_same_vote(chunked, whole)
    assert chunked.equal_counts.trace() == 3 * 40


def test_gradients_do_not_matter():
    x = torch.from_numpy(random_logits(3)).requires_grad_(True)
    assert_same_vote(aggregate(x, "soft"), aggregate(x.detach(), "soft"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["soft", "hard"])
def test_cuda_input_matches_cpu(method):
    x = torch.from_numpy(np.round(random_logits(4) * 4) / 4)
    on_gpu = aggregate(x.cuda(), method, weights=[1, 2, 1])
    on_cpu = aggregate(x, method, weights=[1, 2, 1])
    np.testing.assert_array_equal(on_gpu.member_labels, on_cpu.member_labels)
    np.testing.assert_array_equal(on_gpu.equal_counts, on_cpu.equal_counts)
    np.testing.assert_allclose(on_gpu.scores, on_cpu.scores, atol=1e-6)


def test_docstring_examples():
    assert doctest.testmod(aggregate_module).failed == 0


# ----------------------------------------------------------------------------- properties

SHARE_TOL = 1e-9  # the same tolerance for "equal weight share" that aggregate documents
SOFT_TOL = 1e-5  # float32 soft scores vs this float64 reference: closer than this is a near-tie


def reference_vote(x: np.ndarray, method: str, weights, temperatures) -> dict:
    """The voting rules written as plain loops over members, rows and classes, in float64.

    ``allowed[r]`` is the set of labels the rules permit for row r: one label, unless the
    deciding soft scores are within float32 noise of each other, in which case any of them.
    """
    members, rows, classes = x.shape
    w = [1.0] * members if weights is None else [float(v) for v in weights]
    w = [v / sum(w) for v in w]
    t = [1.0] * members if temperatures is None else [float(v) for v in temperatures]
    member_labels = [[0] * rows for _ in range(members)]
    probs = [[[0.0] * classes for _ in range(rows)] for _ in range(members)]
    for m in range(members):
        for r in range(rows):
            row = [float(v) for v in x[m, r]]
            best = 0
            for c in range(classes):
                if row[c] > row[best]:  # strictly greater: the first maximum wins
                    best = c
            member_labels[m][r] = best
            top = max(v / t[m] for v in row)
            exps = [math.exp(v / t[m] - top) for v in row]
            probs[m][r] = [e / sum(exps) for e in exps]
    soft = [[sum(w[m] * probs[m][r][c] for m in range(members)) for c in range(classes)]
            for r in range(rows)]
    shares = [[sum(w[m] for m in range(members) if member_labels[m][r] == c) for c in range(classes)]
              for r in range(rows)]
    allowed = []
    for r in range(rows):
        if method == "soft":
            candidates = list(range(classes))
        else:
            most = max(shares[r])
            candidates = [c for c in range(classes) if shares[r][c] >= most - SHARE_TOL]
        best_soft = max(soft[r][c] for c in candidates)
        allowed.append({c for c in candidates if soft[r][c] >= best_soft - SOFT_TOL})
    return {"member_labels": member_labels, "probs": probs, "soft": soft, "shares": shares,
            "weights": w, "allowed": allowed}


@st.composite
def vote_inputs(draw):
    members = draw(st.integers(1, 4))
    rows = draw(st.integers(0, 6))
    # few classes (the tile kernel), and the row-vector kernel's range (17-32 on logits) and past it
    classes = draw(st.one_of(st.integers(1, 5), st.sampled_from([9, 17, 20, 32, 33])))
    # Mostly a few coarse values, so ties inside members and between classes are common.
    value = st.one_of(
        st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0]),
        st.floats(-20, 20, allow_nan=False, width=32),
    )
    flat = draw(st.lists(value, min_size=members * rows * classes, max_size=members * rows * classes))
    x = np.array(flat, dtype=np.float32).reshape(members, rows, classes)
    weights = draw(st.one_of(
        st.none(),
        st.lists(st.integers(0, 3), min_size=members, max_size=members).filter(any),
        st.lists(st.floats(0.01, 10.0), min_size=members, max_size=members),
    ))
    temperatures = draw(st.one_of(
        st.none(), st.lists(st.floats(0.25, 4.0), min_size=members, max_size=members)
    ))
    dtype = draw(st.sampled_from(["fp32", "bf16", "np32", "np64"]))
    method = draw(st.sampled_from(["soft", "hard"]))
    chunk_elements = draw(st.sampled_from([1, 7, 1 << 24]))
    return x, weights, temperatures, dtype, method, chunk_elements


def as_input(x: np.ndarray, dtype: str):
    """The input as the given type, and the float32 values aggregate will actually see."""
    if dtype == "bf16":
        tensor = torch.from_numpy(x).bfloat16()
        return tensor, tensor.float().numpy()
    return {"fp32": torch.from_numpy(x), "np32": x, "np64": x.astype(np.float64)}[dtype], x


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vote_inputs())
def test_matches_loop_reference(case):
    x, weights, temperatures, dtype, method, chunk_elements = case
    logits, seen = as_input(x, dtype)
    with mock.patch.object(aggregate_module, "_CHUNK_ELEMENTS", chunk_elements), \
            mock.patch.object(aggregate_module, "_WHOLE_CHUNK_ELEMENTS", chunk_elements):
        vote = aggregate(logits, method, weights=weights, temperatures=temperatures)
    ref = reference_vote(seen, method, weights, temperatures)
    members, rows, classes = x.shape

    assert vote.member_labels.tolist() == ref["member_labels"]
    for r in range(rows):
        label = int(vote.labels[r])
        assert label in ref["allowed"][r]
        if len(ref["allowed"][r]) == 1:
            assert {label} == ref["allowed"][r]
        expected_scores = ref["soft"][r] if method == "soft" else ref["shares"][r]
        np.testing.assert_allclose(vote.scores[r], expected_scores, atol=1e-5)
        assert vote.confidence[r] == vote.scores[r, label]
        agreeing = sum(ref["weights"][m] for m in range(members) if ref["member_labels"][m][r] == label)
        assert vote.agreement[r] == pytest.approx(agreeing, abs=1e-6)
        for m in range(members):
            own = ref["member_labels"][m][r]
            assert vote.member_confidence[m, r] == pytest.approx(ref["probs"][m][r][own], abs=1e-5)
    if rows:
        np.testing.assert_allclose(vote.scores.sum(axis=1), 1.0, atol=1e-5)
    equal = [[sum(ref["member_labels"][i][r] == ref["member_labels"][j][r] for r in range(rows))
              for j in range(members)] for i in range(members)]
    assert vote.equal_counts.tolist() == equal


@settings(max_examples=60, deadline=None)
@given(vote_inputs(), st.data())
def test_duplicate_class_never_wins_over_its_lower_twin(case, data):
    """Classes i < j with identical logits in every member tie exactly; j must never win."""
    x, weights, temperatures, dtype, method, _ = case
    classes = x.shape[2]
    if classes < 2:
        return
    i = data.draw(st.integers(0, classes - 2))
    j = data.draw(st.integers(i + 1, classes - 1))
    x = x.copy()
    x[:, :, j] = x[:, :, i]
    logits, _ = as_input(x, dtype)
    vote = aggregate(logits, method, weights=weights, temperatures=temperatures)
    assert not (vote.labels == j).any()
    assert not (vote.member_labels == j).any()


@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize(
    ("members", "rows", "classes", "i", "j"), [(5, 4, 21, 0, 20), (5, 108, 34, 5, 32), (3, 50, 129, 7, 128)]
)
def test_duplicate_class_ties_exactly_with_many_classes(method, members, rows, classes, i, j):
    # Regression: a `.sum(dim=0)` over members rounded SIMD lanes and the scalar tail
    # differently, so with a few dozen classes identical columns could differ by one ulp.
    rng = np.random.default_rng(classes)
    x = (rng.standard_normal((members, rows, classes)) * 3).astype(np.float32)
    x[:, :, i] += 4  # make the twins the favourites, so the tie actually decides rows
    x[:, :, j] = x[:, :, i]
    weights, temperatures = rng.random(members) + 0.1, rng.random(members) + 0.5
    vote = aggregate(x, method, weights=weights, temperatures=temperatures)
    if method == "soft":
        np.testing.assert_array_equal(vote.scores[:, i], vote.scores[:, j])
    assert not (vote.member_labels == j).any()
    assert (vote.labels == i).any() and not (vote.labels == j).any()


@settings(max_examples=40, deadline=None)
@given(vote_inputs())
def test_scaling_weights_by_a_power_of_two_changes_nothing(case):
    x, weights, temperatures, dtype, method, _ = case
    if weights is None:
        return
    logits, _ = as_input(x, dtype)
    assert_same_vote(
        aggregate(logits, method, weights=weights, temperatures=temperatures),
        aggregate(logits, method, weights=[4 * w for w in weights], temperatures=temperatures),
    )


@settings(max_examples=40, deadline=None)
@given(vote_inputs())
def test_hard_agreement_is_confidence(case):
    x, weights, temperatures, dtype, _, _ = case
    logits, _ = as_input(x, dtype)
    vote = aggregate(logits, "hard", weights=weights, temperatures=temperatures)
    np.testing.assert_array_equal(vote.agreement, vote.confidence)


@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize("force_reference", [False, True])
def test_member_details_off_changes_nothing_else(monkeypatch, method, force_reference):
    module = importlib.import_module("ensemble.aggregate")
    monkeypatch.setattr(module, "_FORCE_REFERENCE", force_reference)
    logits = np.random.default_rng(3).standard_normal((4, 500, 6)).astype(np.float32)
    full = aggregate(logits, method, weights=[1, 2, 3, 4])
    lean = aggregate(logits, method, weights=[1, 2, 3, 4], member_details=False)
    assert lean.member_labels is None and lean.member_confidence is None
    for field in ("labels", "scores", "confidence", "agreement", "equal_counts"):
        np.testing.assert_array_equal(getattr(lean, field), getattr(full, field), err_msg=field)


# ----------------------------------------------------------------------------- the numba kernel


kernels_cpu = pytest.importorskip("ensemble.kernels_cpu")
simd = importlib.import_module("ensemble.simd")
needs_numba = pytest.mark.skipif(not kernels_cpu.available(), reason="numba is not installed")


@needs_numba
def test_kernel_exp_is_within_two_ulp():
    import numba

    @numba.njit
    def vexp(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = simd.exp(x[i])
        return out

    x = -np.concatenate([np.linspace(0, 87, 200_001), np.geomspace(1e-8, 87, 10_001), [0.0]]).astype(np.float32)
    got, want = vexp(x).astype(np.float64), np.exp(x.astype(np.float64))
    assert (np.abs(got - want) <= 2 * np.spacing(want.astype(np.float32)).astype(np.float64)).all()
    assert vexp(np.float32([-87.5, -100.0, -np.inf])).tolist() == [0.0, 0.0, 0.0]


@needs_numba
@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize("inputs", ["logits", "probs"])
@pytest.mark.parametrize(
    ("members", "rows", "classes"),
    # every class count the kernel compiles a constant-stride copy for (2-8), one either side;
    # binary votes with many members and tiles ending inside / on a 64-row word (the bit counts);
    # the row-vector kernel's range (9-32 on probabilities, 17-32 on logits) and one past it
    [(3, 5000, 2), (16, 4099, 2), (7, 1024, 2), (2, 1300, 1), (4, 1300, 3), (3, 1300, 4), (2, 1300, 5), (3, 1300, 6), (5, 3001, 7),
     (2, 1300, 8), (3, 1300, 9), (4, 1300, 16), (3, 1300, 17), (16, 1100, 20), (2, 1300, 32), (2, 1500, 33)],
)
def test_kernel_matches_reference_over_many_tiles(monkeypatch, method, inputs, members, rows, classes):
    # Many tiles and thread blocks, a ragged last tile, coarse values (many ties), a zero weight.
    rng = np.random.default_rng(rows + classes)
    x = np.round(rng.standard_normal((members, rows, classes)) * 2) / 2
    if inputs == "probs":
        x = np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)
    x = x.astype(np.float32)
    weights = [0.0] + [1.0 + i for i in range(members - 1)]
    temperatures = None if inputs == "probs" else [0.5 + i for i in range(members)]
    got = aggregate(x, method, weights=weights, temperatures=temperatures, inputs=inputs)
    monkeypatch.setattr(aggregate_module, "_FORCE_REFERENCE", True)
    want = aggregate(x, method, weights=weights, temperatures=temperatures, inputs=inputs)
    for field in ("labels", "member_labels", "equal_counts"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    # Logits go through the kernel's own exp (2 ulp) against torch's softmax. Probabilities are
    # weighted and summed as they are, in member order, on both sides: the soft scores and member
    # confidences are bit-identical; weight shares are float32 sums in the kernel, float64 in the
    # reference (members x half an ulp apart at most).
    atol = 2e-6 if inputs == "logits" else members * 2.0**-24
    for field in ("scores", "confidence", "agreement", "member_confidence"):
        exact = inputs == "probs" and (field == "member_confidence" or (method == "soft" and field != "agreement"))
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=0, atol=0 if exact else atol, err_msg=field)


@needs_numba
@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize("inputs", ["logits", "probs"])
@pytest.mark.parametrize("classes", range(2, 9))
def test_tile_kernel_row_groups_match_reference(monkeypatch, method, inputs, classes):
    """The tile kernel's 16-row groups (`simd.group_vote`, 2-8 classes) at every class count,
    whichever kernel this CPU would pick: against the reference, with rows that end inside a
    group (1,000 rows from row 77: tiles of 512, 512 and 53 rows on one thread block or more)."""
    monkeypatch.setattr(kernels_cpu, "row_lanes", lambda classes, probs_in: 0)
    rng = np.random.default_rng(classes)
    x = np.round(rng.standard_normal((5, 1077, classes)) * 2) / 2
    if inputs == "probs":
        x = np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)
    x = x.astype(np.float32)[:, 77:]
    weights, temperatures = [0.0, 1.0, 2.0, 0.5, 1.5], (None if inputs == "probs" else [0.5, 1, 2, 3, 1])
    got = aggregate(x, method, weights=weights, temperatures=temperatures, inputs=inputs)
    monkeypatch.setattr(aggregate_module, "_FORCE_REFERENCE", True)
    want = aggregate(x, method, weights=weights, temperatures=temperatures, inputs=inputs)
    for field in ("labels", "member_labels", "equal_counts"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    for field in ("scores", "confidence", "agreement", "member_confidence"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=0, atol=2e-6, err_msg=field)


@needs_numba
@pytest.mark.parametrize("classes", [4, 20])  # both kernels
@pytest.mark.parametrize("inputs", ["logits", "probs"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_kernel_finds_the_first_non_finite_row(monkeypatch, inputs, bad, classes):
    monkeypatch.setattr(aggregate_module, "_WHOLE_CHUNK_ELEMENTS", 3 * classes * 2000)  # whole-array path, 2 chunks
    x = np.full((3, 5000, classes), 1 / classes, dtype=np.float32)
    x[2, 4321, classes - 3] = bad
    x[1, 4500, 0] = bad
    message = "the 'logits' parameter must be finite; got NaN or infinity at member 2, row 4321"
    with pytest.raises(EnsembleError, match=f"^{re.escape(message)}$"):
        aggregate(x, "hard", inputs=inputs, weights=[0, 1, 1])


@needs_numba
@pytest.mark.parametrize("classes", [3, 20])  # both kernels
@pytest.mark.parametrize("inputs", ["logits", "probs"])
def test_kernel_huge_finite_values_are_not_reported_as_non_finite(inputs, classes):
    # Sums of such values overflow; the kernel's cheap check must then look again, exactly.
    x = np.full((4, 700, classes), 3e38, dtype=np.float32)
    x[:, :, 2:] = -3e38
    if inputs == "probs":  # not probabilities, which `aggregate` refuses: the kernel itself
        part = kernels_cpu.fused_vote(x, "soft", np.full(4, 0.25), np.ones(4), probs_in=True)
        assert part["bad_row"] == -1 and part["labels"].tolist() == [0] * 700
        return
    vote = aggregate(x, "soft", inputs=inputs)
    assert vote.labels.tolist() == [0] * 700


@needs_numba
def test_kernel_row_range_of_the_whole_array_equals_a_copied_chunk():
    x = np.random.default_rng(5).standard_normal((4, 3000, 6)).astype(np.float32)
    w, t = np.full(4, 0.25), np.array([1.0, 2.0, 0.5, 1.0])
    whole = kernels_cpu.fused_vote(x, "hard", w, t, start=1000, stop=2777)
    chunk = kernels_cpu.fused_vote(np.ascontiguousarray(x[:, 1000:2777]), "hard", w, t)
    strided = kernels_cpu.fused_vote(x[:, 1000:2777], "hard", w, t)
    for key in chunk:
        np.testing.assert_array_equal(whole[key], chunk[key], err_msg=key)
        np.testing.assert_array_equal(strided[key], chunk[key], err_msg=key)



@needs_numba
@pytest.mark.parametrize("classes", [5, 20])  # the tile kernel and (on AVX-512) the row kernel
def test_kernel_writes_member_columns_from_member_start(classes):
    """Member arrays passed whole get this call's rows from column `member_start`, nothing else
    touched: what `aggregate` does per chunk, so that numba sees contiguous arrays only."""
    x = np.random.default_rng(6).standard_normal((3, 900, classes)).astype(np.float32)
    w, t = np.full(3, 1 / 3), np.ones(3)
    want = kernels_cpu.fused_vote(x, "soft", w, t, start=200, stop=700)
    out = {"member_labels": np.full((3, 1000), -7, np.int64), "member_confidence": np.full((3, 1000), -7, np.float32)}
    got = kernels_cpu.fused_vote(x, "soft", w, t, start=200, stop=700, out=out, member_start=300)
    np.testing.assert_array_equal(out["member_labels"][:, 300:800], want["member_labels"])
    np.testing.assert_array_equal(out["member_confidence"][:, 300:800], want["member_confidence"])
    assert (out["member_labels"][:, :300] == -7).all() and (out["member_labels"][:, 800:] == -7).all()
    assert (out["member_confidence"][:, :300] == -7).all() and (out["member_confidence"][:, 800:] == -7).all()
    np.testing.assert_array_equal(got["labels"], want["labels"])
    with pytest.raises(ValueError, match="at least 1001 columns; got shape \\(3, 1000\\)"):
        kernels_cpu.fused_vote(x, "soft", w, t, start=200, stop=700, out=out, member_start=501)
    with pytest.raises(ValueError, match="C-contiguous 'member_labels'"):
        kernels_cpu.fused_vote(x, "soft", w, t, start=200, stop=700, member_start=0,
                               out={"member_labels": out["member_labels"][:, 300:800]})


ROW_CASES = [(classes, lanes) for classes in (2, 5, 8, 9, 12, 16, 20, 32) for lanes in (8, 16, 32) if classes <= lanes]


@needs_numba
@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize("inputs", ["logits", "probs"])
@pytest.mark.parametrize("classes, lanes", ROW_CASES)
def test_both_kernels_give_the_same_vote(monkeypatch, method, inputs, classes, lanes):
    """The row-vector kernel, at every vector width that holds the row, against the
    transposed-tile one: the same labels, member labels and counts, bit-identical scores from
    probabilities (the same sums in the same order), and from logits within the softmax's
    rounding (the row kernel sums a row's exponentials as a tree, the tile kernel in class
    order). Rows 1000-2777 of the whole array, many tiles and thread blocks."""
    rng = np.random.default_rng(classes)
    x = np.round(rng.standard_normal((5, 3000, classes)) * 2) / 2
    if inputs == "probs":
        x = np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)
    x = x.astype(np.float32)
    w, t = np.array([0.0, 0.1, 0.2, 0.3, 0.4]), np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    probs = inputs == "probs"
    votes = {}
    for width in (0, lanes):
        monkeypatch.setattr(kernels_cpu, "row_lanes", lambda classes, probs_in: width)
        votes[width] = kernels_cpu.fused_vote(x, method, w, t, probs, start=1000, stop=2777)
    tile, rows = votes[0], votes[lanes]
    for key in ("labels", "member_labels", "equal_counts", "bad_row"):
        np.testing.assert_array_equal(rows[key], tile[key], err_msg=key)
    for key in ("scores", "confidence", "agreement", "member_confidence"):
        np.testing.assert_allclose(rows[key], tile[key], rtol=0, atol=0 if probs else 1e-6, err_msg=key)


@needs_numba
@pytest.mark.parametrize("avx512, zen, probs_in, classes, lanes", [
    (True, False, True, 8, 0), (True, False, True, 9, 32), (True, False, False, 16, 0), (True, False, False, 17, 32),
    (True, False, True, 33, 0),
    (False, True, True, 5, 0), (False, True, True, 6, 8), (False, False, True, 9, 16), (False, False, True, 17, 32),
    (False, False, False, 11, 0), (False, False, False, 12, 16), (False, False, False, 20, 32), (False, False, False, 33, 0),
    # Zen 4: probabilities as on AVX2, logits as on other AVX-512 CPUs
    (True, True, True, 5, 0), (True, True, True, 6, 8), (True, True, True, 12, 16), (True, True, True, 20, 32),
    (True, True, False, 12, 0), (True, True, False, 16, 0), (True, True, False, 17, 32),
    # Zen 5: probabilities in the tiles up to 8 classes, then in the narrowest rows
    (True, 5, True, 8, 0), (True, 5, True, 9, 16), (True, 5, True, 20, 32), (True, 5, False, 16, 0),
    (True, 5, False, 17, 32),
])
def test_row_width_follows_the_class_count_and_the_cpu(monkeypatch, avx512, zen, probs_in, classes, lanes):
    monkeypatch.setattr(kernels_cpu, "_avx512", lambda: avx512)
    monkeypatch.setattr(kernels_cpu, "_zen", lambda: 4 if zen is True else int(zen))
    assert kernels_cpu.row_lanes(classes, probs_in) == lanes


MEMORY_SCRIPT = """
import importlib, json, resource, sys
import numpy as np, torch
from ensemble.aggregate import aggregate
members, rows, classes = 8, 2_000_000, 10
if sys.argv[1] == "bf16":  # filled in slices, so that making the input leaves no higher peak behind
    x = torch.empty((members, rows, classes), dtype=torch.bfloat16)
    for s in range(0, rows, 100_000):
        x[:, s:s + 100_000] = torch.randn(members, min(100_000, rows - s), classes)
    size = x.numel() * x.element_size()
else:
    x = np.empty((members, rows, classes), np.float32)
    for s in range(0, rows, 100_000):
        x[:, s:s + 100_000] = np.random.default_rng(s).standard_normal((members, min(100_000, rows - s), classes), dtype=np.float32)
    size = x.nbytes
aggregate(x[:, :1000], "soft")  # the kernel loaded, the allocator warm
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
before = peak()
vote = aggregate(x, "soft", member_details=False)
print(json.dumps({"growth": peak() - before, "input": size,
                  "outputs": sum(a.nbytes for a in (vote.labels, vote.scores, vote.confidence, vote.agreement)),
                  "chunk_fp32": importlib.import_module("ensemble.aggregate")._CHUNK_ELEMENTS * 4}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_a_big_input_is_never_copied_whole(dtype):
    """Peak memory while voting 2M rows x 8 members x 10 classes: the outputs plus at most two
    float32 chunks (bf16 is converted one chunk at a time), never a second copy of the input
    (+640 MB in float32); float32 input is read in place, with no chunk copy at all."""
    import json
    import subprocess

    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, dtype], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    m = json.loads(done.stdout.strip().splitlines()[-1])
    extra = 2 * m["chunk_fp32"] if dtype == "bf16" else 32 << 20
    assert m["growth"] <= m["outputs"] + extra, m
    assert m["outputs"] + extra < m["input"], m  # so a whole copy of the input could not pass


PORTABLE_SCRIPT = """
import importlib
import numpy as np
from ensemble.aggregate import aggregate
module = importlib.import_module("ensemble.aggregate")
assert importlib.import_module("ensemble.kernels_cpu").available()  # the kernel, not a fallback, is tested
rng = np.random.default_rng(0)
for members, rows, classes in [(16, 1100, 2), (5, 700, 5), (3, 130, 20)]:
    x = (np.round(rng.standard_normal((members, rows, classes)) * 2) / 2).astype(np.float32)
    w = np.linspace(0.5, 2, members)
    for method in ("soft", "hard"):
        module._FORCE_REFERENCE = False
        got = aggregate(x, method, weights=w)
        module._FORCE_REFERENCE = True
        want = aggregate(x, method, weights=w)
        for key in ("labels", "member_labels", "equal_counts"):
            assert np.array_equal(getattr(got, key), getattr(want, key)), (members, classes, method, key)
print("ok")
"""


@needs_numba
def test_kernel_is_right_without_avx512(tmp_path):
    """The kernel's 64-lane vector intrinsics are AVX-512 mask instructions here; compiled for an
    AVX2 laptop (haswell) or plain x86-64 (generic), LLVM lowers them otherwise: same answers.
    (The two compiles run side by side: each is one process on one core for most of a minute.)"""
    import os
    import subprocess

    runs = {}
    for cpu in ("haswell", "generic"):
        env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CACHE_DIR=str(tmp_path / cpu))
        runs[cpu] = subprocess.Popen([sys.executable, "-c", PORTABLE_SCRIPT], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
    try:
        for cpu, run in runs.items():
            stdout, stderr = run.communicate(timeout=600)
            assert run.returncode == 0, (cpu, stderr[-2000:])
            assert stdout.strip().endswith("ok"), cpu
    finally:
        for run in runs.values():
            run.kill()  # a no-op for a finished process; a timed-out one must not outlive the test


@pytest.mark.parametrize("x, message", [
    (np.array([[[0.5, -0.1, 0.6]]]), "inputs='probs': member 0, row 0 has a value of -0.1, below 0"),
    (np.array([[[0.2, 0.2, 0.2]], [[0.3, 0.3, 0.4]]]), "inputs='probs': member 0, row 0 has values summing to 0.6, not 1"),
])
def test_probabilities_that_are_not_are_refused(x, message):
    # logits or scores passed as probabilities gave negative scores and confidences above 1
    with pytest.raises(EnsembleError, match=re.escape(message) + r"; pass probabilities \(rows summing to 1\), or logits"):
        aggregate(x, inputs="probs")


def test_probabilities_rounded_in_bfloat16_are_accepted():
    probs = torch.softmax(torch.randn(3, 50, 7, generator=torch.Generator().manual_seed(0)), -1).to(torch.bfloat16)
    assert aggregate(probs, inputs="probs").scores.sum(axis=1) == pytest.approx(1.0, abs=2e-2)


def test_float64_logits_beyond_float32_are_named_as_such():
    with pytest.raises(EnsembleError, match=re.escape("must fit in float32, in which votes are computed; got 1e+300 at "
                                                      "member 1, row 2 (beyond +-3.4e38)")):
        x = np.zeros((2, 3, 2))
        x[1, 2, 1] = 1e300
        aggregate(x)


def test_weights_that_overflow_in_their_sum_vote_as_their_ratios():
    x = np.random.default_rng(0).normal(size=(3, 50, 4)).astype(np.float32)
    assert aggregate(x, weights=[1e308, 1e308, 1.0]).labels.tolist() == aggregate(x, weights=[1, 1, 0]).labels.tolist()


def test_many_classes_vote_without_a_scratch_per_class():
    # the fused kernel's scratch grows with the class count: above MAX_CLASSES the torch path votes
    x = np.random.default_rng(0).normal(size=(2, 3, kernels_cpu.MAX_CLASSES + 1)).astype(np.float32)
    vote = aggregate(x, member_details=False)
    assert vote.labels.tolist() == vote.scores.argmax(axis=1).tolist()
    np.testing.assert_allclose(vote.scores, torch.softmax(torch.from_numpy(x), -1).mean(0).numpy(), rtol=1e-5, atol=1e-9)


def test_member_details_must_be_a_bool():
    with pytest.raises(EnsembleError, match="the 'member_details' parameter must be True or False; got 'no'"):
        aggregate(np.zeros((1, 1, 2)), member_details="no")


@needs_numba
def test_the_first_cpu_vote_leaves_torchs_thread_count_alone():
    # numba's OpenMP layer set the process's thread count when it started: the next forward pass
    # then ran on other threads and rounded differently (1 ulp) than the one before the vote
    script = ("import numpy as np, torch\nfrom ensemble import aggregate\nbefore = torch.get_num_threads()\n"
              "aggregate(np.zeros((2, 3, 3), np.float32))\nprint(before, torch.get_num_threads())\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["1", "1"]


def test_a_ragged_nested_list_is_refused_by_name():
    with pytest.raises(EnsembleError, match=re.escape("the 'logits' parameter must be a (members, rows, classes) "
                                                      "array; got nested sequences of unequal lengths")):
        aggregate([[[1.0, 2.0]], [[1.0, 2.0, 3.0]]])
