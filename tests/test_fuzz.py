"""Fuzzing the loaders: random bytes and random TOML structures into the recipe loader, random
CSV / TSV / JSONL content into the data loader. Only the library's own error may come out.
FUZZ_EXAMPLES=N runs N examples per test instead of 150 (30,000 found nothing new, 4 min).
"""

import os
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ensemble.data import iter_table, load_table
from ensemble.errors import EnsembleError
from ensemble.recipe import load_recipe

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

keys = st.sampled_from(["data", "defaults", "members", "vote", "train", "valid", "test", "text", "label", "lr",
                        "epochs", "name", "model", "init", "arch", "size", "method", "weights", "batch_size",
                        "grad_accum", "optimizer", "scheduler", "betas", "log_with", "x"])
scalars = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(max_size=12), st.sampled_from(["bert", "scratch", "soft", "hard", "adamw", "x.csv"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
tables = st.dictionaries(keys, values, max_size=5)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(value, "nan" if value != value else repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


def expect_only_our_error(call) -> None:
    try:
        call()
    except EnsembleError as exc:
        assert str(exc) and "\n" not in str(exc).strip().split("\n")[0]


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_into_the_recipe_loader(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.toml"
        path.write_bytes(data)
        expect_only_our_error(lambda: load_recipe(path))


@FUZZ
@given(tables, st.lists(st.text(alphabet=string.ascii_letters + ".=[]0123456789-", max_size=20), max_size=3))
def test_random_toml_structures_and_overrides(table, overrides):
    text = "\n".join(f"{k} = {toml_value(v)}" for k, v in table.items())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.toml"
        path.write_text(text, encoding="utf-8")
        expect_only_our_error(lambda: load_recipe(path, overrides))


cells = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)


@FUZZ
@given(st.sampled_from([".csv", ".tsv", ".jsonl"]), st.one_of(
    st.binary(max_size=200),
    st.lists(st.lists(cells, max_size=4), max_size=6).map(
        lambda rows: "\n".join([",".join(["text", "label"])] + [",".join(r) for r in rows]).encode("utf-8"))),
    st.sampled_from(["error", "skip"]))
def test_random_table_content_into_the_data_loaders(suffix, data, on_bad_rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"d{suffix}"
        path.write_bytes(data)
        expect_only_our_error(lambda: load_table(path, on_bad_rows=on_bad_rows))
        expect_only_our_error(lambda: list(iter_table(path, chunk_rows=2, on_bad_rows=on_bad_rows, require_label=False)))


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
@FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes_into_the_binary_formats(suffix, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"d{suffix}"
        path.write_bytes(data)
        expect_only_our_error(lambda: load_table(path))


# ---------------------------------------------------------------- aggregate invariants

import numpy as np  # noqa: E402

from ensemble.aggregate import aggregate  # noqa: E402

shapes = st.tuples(st.integers(1, 5), st.integers(1, 40), st.integers(2, 6))


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(0, 2**31 - 1), st.sampled_from(["soft", "hard"]))
def test_aggregate_invariants(shape, seed, method):
    rng = np.random.default_rng(seed)
    members, rows, classes = shape
    logits = (rng.standard_normal(shape) * 3).astype(np.float32)
    weights = rng.uniform(0.1, 2.0, members)
    vote = aggregate(logits, method, weights)
    # scores are a distribution over the classes
    np.testing.assert_allclose(vote.scores.sum(axis=1), 1.0, rtol=1e-5)
    # member order does not change the result (away from near-ties, which float order may flip)
    perm = rng.permutation(members)
    permuted = aggregate(logits[perm], method, weights[perm])
    margin = np.sort(vote.scores, axis=1)[:, -1] - np.sort(vote.scores, axis=1)[:, -2] if classes > 1 else np.ones(rows)
    clear = margin > 1e-4
    assert (permuted.labels[clear] == vote.labels[clear]).all()
    np.testing.assert_array_equal(permuted.equal_counts, vote.equal_counts[np.ix_(perm, perm)])
    # scaling every weight changes nothing
    scaled = aggregate(logits, method, weights * 7.5)
    assert (scaled.labels[clear] == vote.labels[clear]).all()
    np.testing.assert_allclose(scaled.scores, vote.scores, rtol=1e-5, atol=1e-6)
    # one member holding all the weight is that member
    solo = np.zeros(members)
    solo[0] = 1.0
    alone = aggregate(logits, method, solo)
    assert (alone.labels == logits[0].argmax(axis=1)).all()
    if method == "soft":
        e = np.exp(logits[0] - logits[0].max(axis=1, keepdims=True))
        np.testing.assert_allclose(alone.scores, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
