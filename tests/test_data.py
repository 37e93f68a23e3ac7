"""Tests for ensemble.data: every format, every user error, splitting, and the real datasets' dirty spots."""

from __future__ import annotations

import json
import os
import sys
import tracemalloc
from time import time_ns
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ensemble.data import TextDataset, iter_table, load_table, stratified_split
from ensemble.labels import check_known_labels, normalize_label, sorted_labels
from ensemble.errors import EnsembleError

ROWS = [("good film", "a pair", "1"), ("bad film", "b pair", "0"), ("fine film", "c pair", "2")]


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def write_comma_csv(tmp: Path) -> Path:
    body = "".join(f'{t},"{p}",{lab}\n' for t, p, lab in ROWS)
    return write(tmp / "d.csv", "text,pair,label\n" + body)


def write_tsv(tmp: Path) -> Path:
    return write(tmp / "d.tsv", "text\tpair\tlabel\n" + "".join(f"{t}\t{p}\t{lab}\n" for t, p, lab in ROWS))


def write_tab_csv(tmp: Path) -> Path:
    # cs224n layout: named .csv, tab-separated, unnamed index column first.
    body = "".join(f"{i}\t{t}\t{p}\t{lab}\n" for i, (t, p, lab) in enumerate(ROWS))
    return write(tmp / "d.csv", "\ttext\tpair\tlabel\n" + body)


def write_jsonl(tmp: Path) -> Path:
    lines = [json.dumps({"text": t, "pair": p, "label": int(lab)}) for t, p, lab in ROWS]
    return write(tmp / "d.jsonl", "\n".join(lines) + "\n\n")


def write_npz(tmp: Path) -> Path:
    path = tmp / "d.npz"
    cols = list(zip(*ROWS))
    texts, pairs, labels = (np.array(c, dtype=str) for c in cols)
    np.savez(path, text=texts, pair=pairs, label=labels.astype(int))
    return path


@pytest.mark.parametrize("writer", [write_comma_csv, write_tsv, write_tab_csv, write_jsonl, write_npz])
def test_every_format_loads_the_same_rows(tmp_path: Path, writer: Callable[[Path], Path]) -> None:
    path = writer(tmp_path)
    ds = load_table(path, text="text", text_pair="pair", label="label")
    assert ds.texts == [r[0] for r in ROWS]
    assert ds.pairs == [r[1] for r in ROWS]
    assert ds.labels == [r[2] for r in ROWS]
    assert ds.path == str(path) and ds.skipped == 0 and len(ds) == 3


def test_comma_csv_quoted_field_spans_lines_and_later_line_numbers_stay_right(tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", 'text,label\n"one, with comma",a\n"two\nlines",b\n,c\n')
    with pytest.raises(EnsembleError, match=r"line 5 of .* has an empty text in column 'text'"):
        load_table(path)
    ds = load_table(path, on_bad_rows="skip")
    assert ds.texts == ["one, with comma", "two\nlines"] and ds.skipped == 1


def test_comma_csv_unclosed_quote_is_a_one_line_error(tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", 'text,label\nok,a\n"never closed,b\n')
    with pytest.raises(EnsembleError, match=r"^data: line \d+ of .*q\.csv' is not valid CSV"):
        load_table(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EnsembleError, match=r"^data\.train: file not found: '.*nope\.csv'"):
        load_table(tmp_path / "nope.csv", field="data.train")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(EnsembleError, match="is a directory"):
        load_table(tmp_path)


def test_unknown_extension_lists_allowed_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "d.xlsx", "text,label\na,1\n")
    allowed = r"unknown extension '\.xlsx'; use one of \.csv, \.tsv, \.jsonl, \.npz, \.parquet"
    with pytest.raises(EnsembleError, match=allowed):
        load_table(path)


@pytest.mark.parametrize("name", ["e.csv", "e.tsv", "e.jsonl"])
@pytest.mark.parametrize("content", [b"", b"\n \n", b"\xef\xbb\xbf"])
def test_empty_file(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(EnsembleError, match=r"data\.valid: '.*' is empty"):
        load_table(path, field="data.valid")


def test_header_only(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", "text,label\n")
    with pytest.raises(EnsembleError, match="has column names but no data rows"):
        load_table(path)


@pytest.mark.parametrize(
    ("kwargs", "missing", "key"),
    [
        ({"text": "text"}, "text", "data.text"),
        ({"text": "sentence", "text_pair": "second"}, "second", "data.text_pair"),
        ({"text": "sentence", "label": "label"}, "label", "data.label"),
    ],
)
def test_missing_column_lists_found_columns_and_recipe_key(
    tmp_path: Path, kwargs: dict, missing: str, key: str
) -> None:
    path = write(tmp_path / "x.csv", "\tid\tsentence\tsentiment\n0\ta\thello\t1\n")
    expected = (
        f"data.train: column '{missing}' not found in '{path}'; "
        f"columns found: id, sentence, sentiment (set {key} to one of them)"
    )
    with pytest.raises(EnsembleError) as info:
        load_table(path, field="data.train", **kwargs)
    assert str(info.value) == expected


CONVERT = "this reads comma-separated .csv (or tab-separated .tsv): convert the file"


@pytest.mark.parametrize(
    ("name", "content", "field", "expected"),
    [
        (
            "semi.csv", "text;label\ngood;1\n", "data.train",
            "data.train: column 'text' not found in '{p}'; columns found: text;label "
            f"(the header looks ';'-separated; {CONVERT})",
        ),
        (
            "pipe.csv", "id|text|label\n0|good|1\n", "--data",
            "--data: column 'text' not found in '{p}'; columns found: id|text|label "
            f"(the header looks '|'-separated; {CONVERT})",
        ),
        (
            "semi.tsv", "text;label\ngood;1\n", "data.valid",
            "data.valid: column 'text' not found in '{p}'; columns found: text;label "
            f"(the header looks ';'-separated; {CONVERT})",
        ),
        # Several columns, or one without such a separator: the usual hint.
        (
            "two.csv", "sentence;x,label\ngood,1\n", "data.train",
            "data.train: column 'text' not found in '{p}'; columns found: sentence;x, label "
            "(set data.text to one of them)",
        ),
        (
            "one.csv", "sentence\ngood\n", "data.train",
            "data.train: column 'text' not found in '{p}'; columns found: sentence (set data.text to one of them)",
        ),
    ],
)
def test_other_separator_gets_a_hint(tmp_path: Path, name: str, content: str, field: str, expected: str) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(EnsembleError) as info:
        load_table(path, field=field)
    assert str(info.value) == expected.format(p=path)


def test_duplicate_column_name_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "text,text,label\na,b,1\n")
    with pytest.raises(EnsembleError, match="column 'text' appears 2 times"):
        load_table(path)


def test_non_utf8_names_line_and_says_save_as_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"text,label\nfine,1\ncaf\xe9,0\n")
    expected = r"^data: line 3 of '.*latin\.csv' is not valid UTF-8 .*save the file as UTF-8"
    with pytest.raises(EnsembleError, match=expected):
        load_table(path)


def test_bom_is_stripped_from_first_header(tmp_path: Path) -> None:
    path = tmp_path / "bom.tsv"
    path.write_bytes(b"\xef\xbb\xbfQuality\t#1 String\t#2 String\n1\tfirst\tsecond\n")
    ds = load_table(path, text="#1 String", text_pair="#2 String", label="Quality")
    assert (ds.texts, ds.pairs, ds.labels) == (["first"], ["second"], ["1"])


def test_quotes_in_tsv_stay_literal_and_do_not_merge_rows(tmp_path: Path) -> None:
    rows = '0\ta\t" it opens a quote\t1\n1\tb\tsays "hi\t0\n2\tc\t""x""\t1\n'
    path = write(tmp_path / "q.csv", "\tid\tsentence\tsentiment\n" + rows)
    ds = load_table(path, text="sentence", label="sentiment")
    assert ds.texts == ['" it opens a quote', 'says "hi', '""x""']
    assert ds.labels == ["1", "0", "1"]


def test_texts_and_headers_are_stripped(tmp_path: Path) -> None:
    path = write(tmp_path / "s.tsv", " text \t label\n  leading space\t 1 \n")
    ds = load_table(path)
    assert ds.texts == ["leading space"] and ds.labels == ["1"]


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("text\tlabel\na\t1\n   \t0\nc\t1\n", {}, "line 3 of '{p}' has an empty text in column 'text'"),
        (
            "text\tpair\tlabel\na\tb\t1\nc\t\t0\n",
            {"text_pair": "pair"},
            "line 3 of '{p}' has an empty text in column 'pair'",
        ),
        ("text\tlabel\na\t1\nb\t\n", {}, "line 3 of '{p}' has an empty label in column 'label'"),
        ("text\tlabel\na\t1\nb\tnan\n", {}, "line 3 of '{p}' has an empty label in column 'label' ('nan', read as a missing value)"),
        ("text\tlabel\na\t1\nb\n", {}, "line 3 of '{p}' has 1 fields but the header has 2"),
        ("text\tlabel\na\t1\nb\t0\textra\n", {}, "line 3 of '{p}' has 3 fields but the header has 2"),
    ],
)
def test_bad_row_errors_on_first_and_skip_counts(tmp_path: Path, content: str, kwargs: dict, message: str) -> None:
    path = write(tmp_path / "bad.tsv", content)
    expected = f"data.train: {message.format(p=path)}; fix the row or set data.on_bad_rows = \"skip\""
    with pytest.raises(EnsembleError) as info:
        load_table(path, field="data.train", **kwargs)
    assert str(info.value) == expected
    ds = load_table(path, on_bad_rows="skip", **kwargs)
    assert ds.skipped == 1 and len(ds) == content.count("\n") - 2


@pytest.mark.parametrize(
    ("field", "fix"),
    [
        ("data.train", 'fix the row or set data.on_bad_rows = "skip"'),
        ("data.valid", 'fix the row or set data.on_bad_rows = "skip"'),
        ("data", 'fix the row or set data.on_bad_rows = "skip"'),
        # vote and predict have no recipe: their flag is named.
        # --data's gold labels are optional: going without them is the other way out
        ("--data", 'fix the row, pass --on-bad-rows skip to leave it out, or --label "" to go without gold labels'),
        ("--valid", "fix the row or pass --on-bad-rows skip to leave it out"),
        ("--unlabeled", "fix the row or remove it from the file"),
    ],
)
def test_bad_row_hint_depends_on_the_caller(tmp_path: Path, field: str, fix: str) -> None:
    path = write(tmp_path / "bad.csv", "text,label\na,1\nb,\n")
    expected = f"{field}: line 3 of '{path}' has an empty label in column 'label'; {fix}"
    with pytest.raises(EnsembleError) as info:
        load_table(path, field=field)
    assert str(info.value) == expected
    with pytest.raises(EnsembleError) as streamed:
        list(iter_table(path, chunk_rows=1, field=field))
    assert str(streamed.value) == expected


def test_blank_lines_and_trailing_empty_fields_are_not_bad_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "b.tsv", "text\tlabel\na\t1\t\n\nb\t0\n\n")
    ds = load_table(path)
    assert ds.texts == ["a", "b"] and ds.skipped == 0


def test_all_rows_bad_under_skip_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "b.tsv", "text\tlabel\na\t\nb\t\n")
    with pytest.raises(EnsembleError, match="all 2 rows .* are bad"):
        load_table(path, on_bad_rows="skip")


@pytest.mark.parametrize("mode", ["x", "ignore", ""])
def test_bad_on_bad_rows_value(tmp_path: Path, mode: str) -> None:
    path = write_tsv(tmp_path)
    with pytest.raises(EnsembleError) as info:
        load_table(path, on_bad_rows=mode)
    assert str(info.value) == f"the 'on_bad_rows' parameter must be one of {{'error', 'skip'}}; got {mode!r}"


def test_float_and_mixed_labels_become_strings(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", "text,label\na,1.0\nb,0.0\nc,positive\nd,2.5\ne,3\n")
    assert load_table(path).labels == ["1", "0", "positive", "2.5", "3"]


@pytest.mark.parametrize(
    ("kwargs", "content"),
    [
        ({"label": None}, "text,label\na,1\n"),
        ({"require_label": False}, "text,id\na,1\n"),
        ({"require_label": False}, "text,label\na,\nb,\n"),  # a blank label column means unlabelled
    ],
)
def test_unlabelled_data(tmp_path: Path, kwargs: dict, content: str) -> None:
    ds = load_table(write(tmp_path / "u.csv", content), **kwargs)
    assert ds.labels is None and ds.texts[0] == "a"


def test_optional_label_is_read_when_present(tmp_path: Path) -> None:
    ds = load_table(write(tmp_path / "u.csv", "text,label\na,1\n"), require_label=False)
    assert ds.labels == ["1"]


def test_required_label_column_must_exist(tmp_path: Path) -> None:
    with pytest.raises(EnsembleError, match=r"column 'label' not found .*\(set data\.label"):
        load_table(write(tmp_path / "u.csv", "text,id\na,1\n"))


def test_npz_float_labels(tmp_path: Path) -> None:
    path = tmp_path / "f.npz"
    np.savez(path, text=np.array(["10", "20"]), label=np.array([1.0, 0.0]))
    ds = load_table(path)
    assert ds.texts == ["10", "20"] and ds.labels == ["1", "0"]


@pytest.mark.parametrize(
    ("arrays", "kwargs", "message"),
    [
        ({"text": np.array([10, 20], dtype=np.int64)}, {}, "text column 'text' in '{p}' holds int64 values"),
        ({"text": np.array([1.5, 2.0])}, {}, "text column 'text' in '{p}' holds float64 values"),
        ({"text": np.array([True, False])}, {}, "text column 'text' in '{p}' holds bool values"),
        ({"text": np.array([b"a", b"b"])}, {}, "text column 'text' in '{p}' holds bytes values"),
        (
            {"text": np.array(["a", "b"]), "pair": np.array([1, 2], dtype=np.int32)},
            {"text_pair": "pair"},
            "text column 'pair' in '{p}' holds int32 values",
        ),
    ],
)
def test_npz_numeric_text_column_is_refused(tmp_path: Path, arrays: dict, kwargs: dict, message: str) -> None:
    path = tmp_path / "n.npz"
    np.savez(path, label=np.array([1, 0]), **arrays)
    expected = f"data.train: {message.format(p=path)}; texts must be strings: save them with np.array(texts, dtype=str)"
    for mode in ("error", "skip"):  # a whole column, not a bad row
        with pytest.raises(EnsembleError) as info:
            load_table(path, field="data.train", on_bad_rows=mode, **kwargs)
        assert str(info.value) == expected


def test_npz_object_array_is_refused_with_how_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "o.npz"
    np.savez(path, text=np.array(["a", None], dtype=object), label=np.array([1, 0]))
    with pytest.raises(EnsembleError, match=r"array 'text' .* object array.*np\.array\(texts, dtype=str\)"):
        load_table(path)


def test_npz_unused_object_array_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "o.npz"
    np.savez(path, text=np.array(["a"]), label=np.array([1]), meta=np.array([{"k": 1}], dtype=object))
    assert load_table(path).texts == ["a"]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"text": np.array([["a", "b"]]), "label": np.array([1])}, r"has shape \(1, 2\)"),
        ({"text": np.array(["a", "b"]), "label": np.array([1])}, r"different lengths \(text=2, label=1\)"),
    ],
)
def test_npz_shape_errors(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "s.npz"
    np.savez(path, **arrays)
    with pytest.raises(EnsembleError, match=message):
        load_table(path)


def test_npz_that_is_not_an_archive(tmp_path: Path) -> None:
    path = write(tmp_path / "x.npz", "text,label\na,1\n")
    with pytest.raises(EnsembleError, match=r"not a valid \.npz archive"):
        load_table(path)


def test_jsonl_bad_lines(tmp_path: Path) -> None:
    lines = ['{"text": "a", "label": 1}', "{not json", "[1, 2]", '{"text": "b"}', '{"text": "c", "label": "x"}']
    path = write(tmp_path / "j.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(EnsembleError, match=r"line 2 of .* is not valid JSON"):
        load_table(path)
    ds = load_table(path, on_bad_rows="skip")
    assert ds.texts == ["a", "c"] and ds.labels == ["1", "x"] and ds.skipped == 3
    missing = write(tmp_path / "k.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b"}\n')
    with pytest.raises(EnsembleError, match=r"line 3 of .* has no field 'label'"):
        load_table(missing)


ONE_OBJECT = ".jsonl needs one {...} object per line"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]\n', f"is not a JSON object (got a list); {ONE_OBJECT}"),
        ('"just a string"\n"another"\n', f"is not a JSON object (got a string); {ONE_OBJECT}"),
        ("\n5\n", f"is not a JSON object (got a number); {ONE_OBJECT}"),
        ("null\n", f"is not a JSON object (got null); {ONE_OBJECT}"),
        ("true\n", f"is not a JSON object (got true/false); {ONE_OBJECT}"),
        (
            '[\n  {"text": "a", "label": "x"},\n  {"text": "b", "label": "y"},\n]\n',
            f"is not valid JSON (Expecting value at column 2); {ONE_OBJECT}; the file looks like one JSON array: "
            "write its items one per line, e.g. jq -c '.[]' in.json",
        ),
    ],
)
def test_jsonl_without_any_object_says_what_the_first_line_is(tmp_path: Path, content: str, problem: str) -> None:
    path = write(tmp_path / "f.jsonl", content)
    line = 2 if content.startswith("\n") else 1
    for mode in ("error", "skip"):  # no object means no columns: nothing to skip to
        with pytest.raises(EnsembleError) as info:
            load_table(path, field="data.train", on_bad_rows=mode)
        assert str(info.value) == f"data.train: line {line} of '{path}' {problem}"


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("[1, 2]", f"is not a JSON object (got a list); {ONE_OBJECT}"),
        ('"text"', f"is not a JSON object (got a string); {ONE_OBJECT}"),
        ('{"text": "b", "label": 1', f"is not valid JSON (Expecting ',' delimiter at column 25); {ONE_OBJECT}"),
    ],
)
def test_jsonl_non_object_line_after_the_first_object(tmp_path: Path, bad: str, problem: str) -> None:
    path = write(tmp_path / "f.jsonl", '{"text": "a", "label": 1}\n' + bad + '\n{"text": "c", "label": 0}\n')
    with pytest.raises(EnsembleError) as info:
        load_table(path, field="data.train")
    assert str(info.value) == f'data.train: line 2 of \'{path}\' {problem}; fix the row or set data.on_bad_rows = "skip"'
    ds = load_table(path, on_bad_rows="skip")
    assert ds.texts == ["a", "c"] and ds.skipped == 1


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("5", "int 5"),
        ("2.5", "float 2.5"),
        ("true", "bool True"),
        ("[1, 2]", "list [1, 2]"),
        ('{"a": 1}', "dict {'a': 1}"),
        ("[" + ", ".join(["100"] * 20) + "]", "list [100, 100, 100, 100, 100, 100, 100, 1..."),
    ],
)
@pytest.mark.parametrize(("column", "kwargs"), [("text", {}), ("pair", {"text_pair": "pair"})])
def test_jsonl_text_that_is_not_a_string_is_a_bad_row(
    tmp_path: Path, value: str, got: str, column: str, kwargs: dict
) -> None:
    rows = [{"text": "a", "pair": "p", "label": 1}, {"text": "b", "pair": "q", "label": 0}, {"text": "c", "pair": "r", "label": 1}]
    lines = [json.dumps(r) for r in rows]
    lines[2] = lines[2].replace(f'"{column}": "{rows[2][column]}"', f'"{column}": {value}')
    path = write(tmp_path / "f.jsonl", "\n".join(lines) + "\n")
    problem = f"has a non-string text in column '{column}' (got {got}); texts must be strings"
    with pytest.raises(EnsembleError) as info:
        load_table(path, field="data.train", **kwargs)
    assert str(info.value) == f'data.train: line 3 of \'{path}\' {problem}; fix the row or set data.on_bad_rows = "skip"'
    with pytest.raises(EnsembleError) as cli:
        load_table(path, field="--data", **kwargs)
    assert str(cli.value) == f"--data: line 3 of '{path}' {problem}; fix the row or pass --on-bad-rows skip to leave it out"
    ds = load_table(path, on_bad_rows="skip", **kwargs)
    assert ds.texts == ["a", "b"] and ds.labels == ["1", "0"] and ds.skipped == 1


def test_jsonl_numeric_labels_and_unused_numeric_fields_are_fine(tmp_path: Path) -> None:
    path = write(tmp_path / "f.jsonl", '{"id": 7, "text": "a", "pair": 3, "label": 1}\n{"id": 8, "text": "b", "pair": 4, "label": 2.0}\n')
    ds = load_table(path)  # "pair" is not asked for, so its numbers do no harm
    assert ds.texts == ["a", "b"] and ds.labels == ["1", "2"]
    with pytest.raises(EnsembleError, match=r"^data: line 2 of .* has an empty text in column 'text'"):
        load_table(write(tmp_path / "n.jsonl", '{"text": "a", "label": 1}\n{"text": null, "label": 1}\n'))


def test_parquet_needs_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail even where installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = write(tmp_path / "d.parquet", "x")
    with pytest.raises(EnsembleError, match=r"needs pyarrow; pip install pyarrow.*convert the file to \.csv"):
        load_table(path)


def test_parquet_round_trip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": [" a", "b"], "label": [1.0, 0.0]}), path)
    ds = load_table(path)
    assert ds.texts == ["a", "b"] and ds.labels == ["1", "0"]


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ([1, 2], "text column 'text' in '{p}' holds int64 values"),
        ([1.5, 2.5], "text column 'text' in '{p}' holds double values"),
        ([True, False], "text column 'text' in '{p}' holds bool values"),
        ([b"a", b"b"], "text column 'text' in '{p}' holds binary values"),
    ],
)
def test_parquet_numeric_text_column_is_refused(tmp_path: Path, column: list, message: str) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"text": column, "label": [1, 0]}), path)
    with pytest.raises(EnsembleError) as info:
        load_table(path, field="data.train")
    expected = f"data.train: {message.format(p=path)}; texts must be strings: convert the column to string before saving"
    assert str(info.value) == expected


def test_parquet_string_kinds_and_numeric_labels_load(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "s.parquet"
    table = pa.table({
        "text": pa.array(["a", "b"]).dictionary_encode(),  # a pandas categorical
        "pair": pa.array(["x", "y"], pa.large_string()),
        "label": pa.array([1, 0], pa.int64()),
    })
    pq.write_table(table, path)
    ds = load_table(path, text_pair="pair")
    assert (ds.texts, ds.pairs, ds.labels) == (["a", "b"], ["x", "y"], ["1", "0"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.0", "1"), (4.0, "4"), (3, "3"), ("3", "3"), (np.int64(2), "2"), (np.float32(1.0), "1"),
        (" pos ", "pos"), ("2.5", "2.5"), ("-1", "-1"), ("+1.00", "1"), ("-2.0", "-2"),
            # spellings that could be two classes keep their own: "1.10" and "1.1" are section codes
            ("0.50", "0.50"), ("1.10", "1.10"), ("01", "01"), ("1e3", "1e3"), (True, "true"), (np.bool_(False), "false"),
        ("12345678901234567890", "12345678901234567890"),
        ("", None), ("  ", None), ("nan", None), ("NaN", None), (float("nan"), None), (None, None),
        # one integer however signed (SVM files write +1), one zero
        ("+1", "1"), ("-0", "0"), ("-0.0", "0"), ("+0", "0"), (-0.0, "0"), ("-12", "-12"),
        # booleans in any format and case; bytes as UTF-8; NFC and NFD accents one class
        ("True", "true"), ("FALSE", "false"), (np.bytes_(b"pos"), "pos"), (b"caf\xc3\xa9", "caf\u00e9"),
        ("cafe\u0301", "caf\u00e9"), ("pos\u200b", "pos"), ("\ufeffneg ", "neg"), (b"\xff", "\\xff"),
    ],
)
def test_normalize_label(value: object, expected: str | None) -> None:
    assert normalize_label(value) == expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["10", "2", "1", "2"], ["1", "2", "10"]),
        (["0.5", "-1", "3"], ["-1", "0.5", "3"]),
        (["pos", "neg", "neutral"], ["neg", "neutral", "pos"]),
        (["10", "2", "x"], ["10", "2", "x"]),  # mixed: plain text order
        ([], []),
    ],
)
def test_sorted_labels(labels: list[str], expected: list[str]) -> None:
    assert sorted_labels(labels) == expected


def make_ds(labels: list[str]) -> TextDataset:
    return TextDataset(texts=[f"t{i}" for i in range(len(labels))], pairs=None, labels=labels, path="mem.csv")


def test_stratified_split_keeps_proportions_order_and_is_reproducible() -> None:
    ds = make_ds(["a"] * 80 + ["b"] * 20)
    train, valid = stratified_split(ds, 0.2, seed=7)
    assert len(train) == 80 and len(valid) == 20
    assert Counter(valid.labels) == {"a": 16, "b": 4}
    for part in (train, valid):
        numbers = [int(t[1:]) for t in part.texts]
        assert numbers == sorted(numbers) and part.path == "mem.csv"
    assert sorted(train.texts + valid.texts) == sorted(ds.texts)
    again = stratified_split(ds, 0.2, seed=7)
    assert (again[0].texts, again[1].texts) == (train.texts, valid.texts)
    assert stratified_split(ds, 0.2, seed=8)[1].texts != valid.texts


@pytest.mark.parametrize(
    "labels",
    [["a"] * 9 + ["b"], ["a", "b", "c", "d"] * 2 + ["a", "b"]],  # singleton class; fewer valid rows than classes
)
def test_stratified_split_falls_back_to_plain_split(labels: list[str]) -> None:
    train, valid = stratified_split(make_ds(labels), 0.2, seed=0)
    assert len(train) + len(valid) == len(labels) and len(valid) == 2
    assert stratified_split(make_ds(labels), 0.2, seed=0)[1].texts == valid.texts


@pytest.mark.parametrize(
    ("labels", "fraction"),
    [
        (["0"] + ["1"] * 150 + ["2"] * 149, 0.1),  # the sst300 report: label '0' once, no data.valid
        (["1"] * 5 + ["0"] + ["2"] * 4, 0.3),
        (["a"] * 9 + ["b"], 0.2),
        (["x", "y", "y", "z", "z", "z"], 0.5),
        (["rare1", "rare2"] + ["c"] * 8, 0.5),
    ],
)
@pytest.mark.parametrize("seed", range(8))
def test_stratified_split_keeps_single_row_labels_in_training(labels: list[str], fraction: float, seed: int) -> None:
    ds = make_ds(labels)
    train, valid = stratified_split(ds, fraction, seed=seed)
    singles = {lab for lab, n in Counter(labels).items() if n == 1}
    assert all(lab not in valid.labels for lab in singles)
    assert set(valid.labels) <= set(train.labels) and set(train.labels) == set(labels)
    check_known_labels(valid, train.labels, "data.valid")  # the error the report was about
    assert len(valid) == -(-len(labels) * fraction // 1) and len(train) + len(valid) == len(labels)
    for part in (train, valid):
        numbers = [int(t[1:]) for t in part.texts]
        assert numbers == sorted(numbers)
    assert sorted(train.texts + valid.texts, key=lambda t: int(t[1:])) == ds.texts
    again = stratified_split(ds, fraction, seed=seed)
    assert (again[0].texts, again[1].texts) == (train.texts, valid.texts)


def test_stratified_split_stratifies_the_rows_beside_a_single_row_label() -> None:
    ds = make_ds(["0"] + ["a"] * 80 + ["b"] * 19)
    train, valid = stratified_split(ds, 0.2, seed=3)
    assert Counter(valid.labels) == {"a": 16, "b": 4}
    assert Counter(train.labels) == {"0": 1, "a": 64, "b": 15}


@pytest.mark.parametrize("seed", range(6))
def test_stratified_split_large_fraction_keeps_every_label_in_training(seed: int) -> None:
    # 2 training rows for 2 labels: proportional allocation alone would give both to 'b'.
    train, valid = stratified_split(make_ds(["a"] * 2 + ["b"] * 18), 0.9, seed=seed)
    assert sorted(train.labels) == ["a", "b"]
    assert Counter(valid.labels) == {"a": 1, "b": 17}


def test_stratified_split_without_single_row_labels_is_sklearns() -> None:
    # The common case is unchanged, so earlier runs split the same rows.
    from sklearn.model_selection import train_test_split

    labels = ["a"] * 13 + ["b"] * 7 + ["c"] * 5
    train, valid = stratified_split(make_ds(labels), 0.2, seed=11)
    expected = sorted(train_test_split(list(range(25)), test_size=5, random_state=11, stratify=labels)[1])
    assert valid.texts == [f"t{i}" for i in expected]


@pytest.mark.parametrize(
    ("labels", "fraction", "message"),
    [
        (["w", "x", "y", "z"], 0.25, "'mem.csv' has 4 rows with 4 labels; a 0.25 validation part leaves 3 rows"),
        (["a"] * 5 + ["b", "c", "d"], 0.75, "'mem.csv' has 8 rows with 4 labels; a 0.75 validation part leaves 2 rows"),
    ],
)
def test_stratified_split_refuses_too_few_training_rows_for_the_labels(
    labels: list[str], fraction: float, message: str
) -> None:
    with pytest.raises(EnsembleError) as info:
        stratified_split(make_ds(labels), fraction, seed=0)
    assert str(info.value) == (
        f"{message} to train on, too few to keep every label in training; use a smaller validation fraction "
        "or give a separate validation file"
    )


def test_stratified_split_unlabelled() -> None:
    ds = TextDataset(texts=list("abcdefghij"), pairs=list("ABCDEFGHIJ"), labels=None, path="")
    train, valid = stratified_split(ds, 0.3, seed=1)
    assert len(valid) == 3 and train.labels is None
    assert [ds.texts.index(t) for t in valid.texts] == [ds.pairs.index(p) for p in valid.pairs]


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, True])
def test_stratified_split_bad_fraction(fraction: float) -> None:
    with pytest.raises(EnsembleError, match=r"the 'fraction' parameter \(data.valid_fraction\) must be > 0 and < 1; got "):
        stratified_split(make_ds(["a", "b"] * 5), fraction, seed=0)


def test_stratified_split_too_small() -> None:
    with pytest.raises(EnsembleError, match="'mem.csv' has 1 rows, too few"):
        stratified_split(make_ds(["a"]), 0.5, seed=0)


def test_subset_keeps_path_and_resets_skipped() -> None:
    ds = TextDataset(texts=["a", "b", "c"], pairs=["x", "y", "z"], labels=["1", "0", "1"], path="p.csv", skipped=4)
    sub = ds.subset([2, 0])
    assert (sub.texts, sub.pairs, sub.labels, sub.path, sub.skipped) == (["c", "a"], ["z", "x"], ["1", "1"], "p.csv", 0)


def test_check_known_labels() -> None:
    check_known_labels(make_ds(["0", "1", "1"]), ["0", "1"], "data.valid")
    check_known_labels(TextDataset(["a"], None, None, ""), ["0"], "data.test")
    with pytest.raises(EnsembleError) as info:
        check_known_labels(make_ds(["0", "x", "x", "x", "1"]), ["1", "0"], "data.valid")
    message = str(info.value)
    assert message.startswith(
        "data.valid: label 'x' (3 rows) in 'mem.csv' never appears in the training labels ['0', '1']; "
    )
    with pytest.raises(EnsembleError, match=r"labels 'y' \(2 rows\), 'z' \(1 row\) .* never appear"):
        check_known_labels(make_ds(["y", "z", "y"]), ["0"], "data.test")


# Streaming: iter_table gives load_table's rows in chunks, with the same errors, in bounded memory.


def write_many(tmp: Path, kind: str, n: int = 23) -> Path:
    """`n` rows of text, pair and label in one format; the labels are varied (ints, text, floats)."""
    rows = [(f"text {i}", f"pair {i}", ["0", "1", "pos", "2.5"][i % 4]) for i in range(n)]
    if kind == "csv":
        body = "".join(f'"{t}, quoted",{p},{lab}\n' for t, p, lab in rows)
        return write(tmp / "m.csv", "text,pair,label\n" + body)
    if kind == "tsv":
        return write(tmp / "m.tsv", "text\tpair\tlabel\n" + "".join(f"{t}\t{p}\t{lab}\n\n" for t, p, lab in rows))
    if kind == "jsonl":
        lines = [json.dumps({"text": t, "pair": p, "label": lab}) for t, p, lab in rows]
        return write(tmp / "m.jsonl", "\n".join(lines) + "\n")
    path = tmp / "m.npz"
    texts, pairs, labels = (np.array(c, dtype=str) for c in zip(*rows))
    np.savez(path, text=texts, pair=pairs, label=labels)
    return path


def concat(chunks: list[TextDataset]) -> tuple[list, list | None, list | None, int]:
    def join(name: str) -> list | None:
        parts = [getattr(c, name) for c in chunks]
        return None if parts[0] is None else [v for part in parts for v in part]

    return join("texts"), join("pairs"), join("labels"), sum(c.skipped for c in chunks)


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "npz"])
@pytest.mark.parametrize(("chunk_rows", "sizes"), [(1, [1] * 23), (5, [5, 5, 5, 5, 3]), (23, [23]), (100, [23])])
def test_iter_table_chunks_concatenate_to_load_table(tmp_path: Path, kind: str, chunk_rows: int, sizes: list) -> None:
    path = write_many(tmp_path, kind)
    whole = load_table(path, text_pair="pair")
    chunks = list(iter_table(path, chunk_rows=chunk_rows, text_pair="pair"))
    assert [len(c) for c in chunks] == sizes
    assert all(c.path == str(path) for c in chunks)
    assert concat(chunks) == (whole.texts, whole.pairs, whole.labels, 0)
    assert whole.texts[0].startswith("text 0") and whole.labels[:4] == ["0", "1", "pos", "2.5"]


@pytest.mark.parametrize("writer", [write_comma_csv, write_tsv, write_tab_csv, write_jsonl, write_npz])
def test_iter_table_reads_every_small_format_like_load_table(tmp_path: Path, writer: Callable[[Path], Path]) -> None:
    path = writer(tmp_path)
    chunks = list(iter_table(path, chunk_rows=2, text_pair="pair"))
    whole = load_table(path, text_pair="pair")
    assert [len(c) for c in chunks] == [2, 1]
    assert concat(chunks) == (whole.texts, whole.pairs, whole.labels, 0)


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("\tid\tsentence\n0\ta\n", {}, "data.x: column 'text' not found in '{p}'; columns found: id, sentence"),
        ("text,text,label\na,b,1\n", {}, "data.x: column 'text' appears 2 times in '{p}'"),
        ("", {}, "data.x: '{p}' is empty"),
        ("\ufeff \n\n", {}, "data.x: '{p}' is empty"),
        ("text,label\n\n", {}, "data.x: '{p}' has column names but no data rows"),
        ("text,label\n", {"require_label": False}, "data.x: '{p}' has column names but no data rows"),
    ],
)
def test_iter_table_file_errors_come_before_the_first_chunk(
    tmp_path: Path, content: str, kwargs: dict, message: str
) -> None:
    path = write(tmp_path / "e.csv", content)
    chunks = iter_table(path, chunk_rows=1, field="data.x", **kwargs)
    with pytest.raises(EnsembleError) as info:
        next(chunks)
    assert str(info.value).startswith(message.format(p=path))
    with pytest.raises(EnsembleError) as again:
        load_table(path, field="data.x", **kwargs)
    assert str(again.value) == str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_rows": 0}, "the 'chunk_rows' parameter must be a positive integer; got 0"),
        ({"chunk_rows": -5}, "the 'chunk_rows' parameter must be a positive integer; got -5"),
        ({"chunk_rows": 2.5}, "the 'chunk_rows' parameter must be a positive integer; got 2.5"),
        ({"chunk_rows": True}, "the 'chunk_rows' parameter must be a positive integer; got True"),
        ({"on_bad_rows": "drop"}, "the 'on_bad_rows' parameter must be one of {'error', 'skip'}; got 'drop'"),
    ],
)
def test_iter_table_bad_parameters_raise_at_the_call(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(EnsembleError) as info:
        iter_table(tmp_path / "not-even-there.csv", **kwargs)  # raises before the file is looked at
    assert str(info.value) == message


def test_iter_table_non_utf8_deep_in_the_file_names_its_line(tmp_path: Path) -> None:
    lines = [b"text,label\n"] + [b"row %d,%d\n" % (i, i % 2) for i in range(2, 10_001)]
    lines[4999] = b"caf\xe9 on line 5000,1\n"
    path = tmp_path / "late.csv"
    path.write_bytes(b"".join(lines))
    offset = sum(len(line) for line in lines[:4999]) + 3
    expected = (
        f"data.x: line 5000 of '{path}' is not valid UTF-8 (byte 0xe9 at offset {offset}); "
        "save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 in.csv > out.csv"
    )
    got: list[TextDataset] = []
    with pytest.raises(EnsembleError) as info:
        for chunk in iter_table(path, chunk_rows=1000, field="data.x"):
            got.append(chunk)
    assert str(info.value) == expected
    # The rows before the bad byte were streamed out first: whole chunks, in order.
    assert 1 <= len(got) <= 4 and all(len(c) == 1000 for c in got)
    assert got[0].texts[0] == "row 2" and got[-1].texts[-1] == f"row {len(got) * 1000 + 1}"
    with pytest.raises(EnsembleError) as whole:
        load_table(path, field="data.x")
    assert str(whole.value) == expected
    # The same for jsonl, which reads lines itself.
    jsonl = tmp_path / "late.jsonl"
    jsonl.write_bytes(b"".join(b'{"text": "%d", "label": 1}\n' % i for i in range(6000)).replace(b'"4999"', b'"\xff"'))
    with pytest.raises(EnsembleError, match=r"^data: line 5000 of '.*late\.jsonl' is not valid UTF-8 \(byte 0xff"):
        list(iter_table(jsonl))


def test_iter_table_counts_skipped_rows_per_chunk(tmp_path: Path) -> None:
    # Rows 1..12; every third one has no label, and two bad rows trail the last good one.
    body = "".join(f"t{i}\t{'' if i % 3 == 0 else i % 2}\n" for i in range(1, 13)) + "t13\t\n\tx\n"
    path = write(tmp_path / "b.tsv", "text\tlabel\n" + body)
    chunks = list(iter_table(path, chunk_rows=3, on_bad_rows="skip"))
    assert [c.texts for c in chunks] == [["t1", "t2", "t4"], ["t5", "t7", "t8"], ["t10", "t11"]]
    # A skipped row counts in the last chunk that starts before it: t3 | t6, t9 | t12, t13, the empty text.
    assert [c.skipped for c in chunks] == [1, 2, 3]
    whole = load_table(path, on_bad_rows="skip")
    assert concat(chunks) == (whole.texts, None, whole.labels, whole.skipped) and whole.skipped == 6
    # Under "error" the chunks before the bad row come out, then the same error as load_table.
    stream = iter_table(path, chunk_rows=1)
    assert [next(stream).texts, next(stream).texts] == [["t1"], ["t2"]]
    expected = f"data: line 4 of '{path}' has an empty label in column 'label'"
    with pytest.raises(EnsembleError, match=f"^{expected}"):
        next(stream)


def test_iter_table_all_rows_bad_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "b.tsv", "text\tlabel\na\t\nb\t\nc\t\n")
    with pytest.raises(EnsembleError, match=r"all 3 rows .* are bad and were skipped"):
        list(iter_table(path, chunk_rows=1, on_bad_rows="skip"))


def test_iter_table_decides_unlabelled_from_the_first_chunk(tmp_path: Path) -> None:
    # Blank labels in the first 3 rows: taken as unlabelled, so a later label is an error (it used to be
    # dropped: whether labels were kept depended on the chunk size).
    path = write(tmp_path / "u.csv", "text,label\na,\nb,\nc, \nd,1\ne,\n")
    with pytest.raises(EnsembleError, match="line 5 of .* has a label in column 'label', but the first 3 rows with a text have none"):
        list(iter_table(path, chunk_rows=3, require_label=False))
    # load_table looks at every row: "d" has a label, so the file is labelled and "a" is a bad row.
    with pytest.raises(EnsembleError, match="line 2 of .* has an empty label"):
        load_table(path, require_label=False)
    # A chunk as big as the file decides as load_table does.
    with pytest.raises(EnsembleError, match="line 2 of .* has an empty label"):
        list(iter_table(path, chunk_rows=5, require_label=False))
    # A label in the first chunk makes the file labelled; a later blank label is a bad row.
    labelled = write(tmp_path / "l.csv", "text,label\na,1\nb,0\nc,\n")
    with pytest.raises(EnsembleError, match="line 4 of .* has an empty label"):
        list(iter_table(labelled, chunk_rows=2, require_label=False))
    kept = list(iter_table(labelled, chunk_rows=2, require_label=False, on_bad_rows="skip"))
    assert [c.labels for c in kept] == [["1", "0"]] and kept[0].skipped == 1
    # Entirely blank, or no label column at all: unlabelled.
    for content in ("text,label\na,\nb,\nc,\n", "text,id\na,1\nb,2\nc,3\n"):
        chunks = list(iter_table(write(tmp_path / "n.csv", content), chunk_rows=2, require_label=False))
        assert [c.texts for c in chunks] == [["a", "b"], ["c"]] and all(c.labels is None for c in chunks)


def test_jsonl_columns_are_the_keys_of_the_first_object(tmp_path: Path) -> None:
    # No pre-scan: a key that first appears after the first object is not a column.
    path = write(tmp_path / "j.jsonl", '{"text": "a"}\n{"text": "b", "label": 1}\n')
    with pytest.raises(EnsembleError, match=r"column 'label' not found in .*; columns found: text \(set data\.label"):
        load_table(path)
    assert load_table(path, require_label=False).labels is None
    # Lines before the first object are still rows, judged in file order.
    early = write(tmp_path / "e.jsonl", '\n{oops\n[1]\n{"text": "c", "label": 2}\n{"text": "d", "label": 3}\n')
    with pytest.raises(EnsembleError, match=r"line 2 of .* is not valid JSON"):
        next(iter_table(early))
    chunks = list(iter_table(early, chunk_rows=1, on_bad_rows="skip"))
    assert [(c.texts, c.labels, c.skipped) for c in chunks] == [(["c"], ["2"], 2), (["d"], ["3"], 0)]
    none = write(tmp_path / "n.jsonl", "[1]\n2\n")
    with pytest.raises(EnsembleError, match=r"line 1 of .* is not a JSON object \(got a list\)"):
        load_table(none)


@pytest.mark.parametrize(
    "content", [b"text,label\r\na,1\r\nb,0\r\n", b"text,label\ra,1\rb,0\r", b"text\tlabel\ra\t1\rb\t0"]
)
def test_crlf_and_lone_cr_line_endings(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "n.csv"
    path.write_bytes(content)
    assert load_table(path).texts == ["a", "b"]
    assert [c.labels for c in iter_table(path, chunk_rows=1)] == [["1"], ["0"]]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files through /proc")
def test_iter_table_closes_the_file_when_stopped_or_failing(tmp_path: Path) -> None:
    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    path = write_many(tmp_path, "csv")
    before = open_files()
    stream = iter_table(path, chunk_rows=2)
    next(stream)
    assert open_files() == before + 1  # held open while streaming
    stream.close()
    assert open_files() == before
    with pytest.raises(EnsembleError, match="not found"):
        next(iter_table(path, text="nope"))
    assert open_files() == before


def test_iter_table_memory_stays_bounded_by_the_chunk(tmp_path: Path) -> None:
    # ~20 MB, 200,000 rows. Streaming holds about two chunks of strings (the one the caller has and the
    # one being built), ~4.2 MB measured with require_label=False (which also looks a chunk ahead);
    # load_table holds every row (~41 MB measured), and a regression to reading the whole file would
    # trace at least the file's 20 MB.
    path = tmp_path / "big.csv"
    filler = "lorem ipsum dolor sit amet " * 3
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("id,text,label\n")
        f.writelines(f"{i},row {i} {filler},{i % 3}\n" for i in range(200_000))
    size = path.stat().st_size
    assert size > 19_000_000
    rows, last = 0, ""
    tracemalloc.start()
    try:
        for chunk in iter_table(path, chunk_rows=10_000, require_label=False):
            assert len(chunk) == 10_000 and chunk.labels is not None
            rows += len(chunk)
            last = chunk.texts[-1]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == 200_000 and last.startswith("row 199999 lorem")
    assert peak < 8_000_000, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"


# Real data: one test per dirty spot named in shared/data/README.md.


def test_real_sst_unnamed_index_leading_spaces(shared_data: Path) -> None:
    ds = load_table(shared_data / "cs224n/ids-sst-train.csv", text="sentence", label="sentiment")
    assert len(ds) == 8544 and ds.skipped == 0
    assert sorted_labels(ds.labels) == ["0", "1", "2", "3", "4"]
    assert ds.texts[0].startswith("The Rock is destined")
    assert not any(t != t.strip() for t in ds.texts)


def test_real_cfimdb_stray_quotes(shared_data: Path) -> None:
    ds = load_table(shared_data / "cs224n/ids-cfimdb-train.csv", text="sentence", label="sentiment")
    assert len(ds) == 1707 and sorted_labels(ds.labels) == ["0", "1"]
    # Line 3 is `1<TAB>id<TAB>" """""" I vaguely ...`: the quotes are kept as literal text.
    assert ds.texts[1].startswith('" """""" I vaguely remember Ben')


def test_real_quora_float_and_empty_labels(shared_data: Path) -> None:
    path = shared_data / "cs224n/quora-dev.csv"
    cols = {"text": "sentence1", "text_pair": "sentence2", "label": "is_duplicate"}
    expected = r"data\.train: line 2577 of .* has an empty label in column 'is_duplicate'"
    with pytest.raises(EnsembleError, match=expected):
        load_table(path, field="data.train", **cols)
    ds = load_table(path, on_bad_rows="skip", **cols)
    assert len(ds) == 20212 and ds.skipped == 2
    assert sorted_labels(ds.labels) == ["0", "1"] and all(ds.pairs)


def test_real_mrpc_bom(shared_data: Path) -> None:
    path = shared_data / "glue/MRPC/train.tsv"
    ds = load_table(path, text="#1 String", text_pair="#2 String", label="Quality")
    # Independent count: non-blank physical lines minus the header (MRPC fields never span lines).
    lines = [ln for ln in path.read_bytes().split(b"\n") if ln.strip()]
    assert len(ds) == len(lines) - 1 == 3667
    assert sorted_labels(ds.labels) == ["0", "1"]
    assert ds.texts[0].startswith("Amrozi accused his brother") and ds.pairs[0].startswith("Referring to him")


def test_real_rte_string_labels(shared_data: Path) -> None:
    ds = load_table(shared_data / "glue/RTE/train.tsv", text="sentence1", text_pair="sentence2", label="label")
    assert len(ds) == 2490
    assert sorted_labels(ds.labels) == ["entailment", "not_entailment"]


def test_a_tsv_written_with_csv_quoting_reads_whole_with_quoting_csv(tmp_path):
    import csv as csvlib

    rows = [("plain text", "a"), ('He said "wow" and left', "b"), ("first line\nsecond line", "a"), ("a\ttab", "b")]
    path = tmp_path / "pandas.tsv"
    with open(path, "w", newline="", encoding="utf-8") as f:  # what pandas' to_csv(sep="\t") writes
        writer = csvlib.writer(f, delimiter="\t")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    ds = load_table(path, quoting="csv")
    assert list(zip(ds.texts, ds.labels)) == rows
    with pytest.raises(EnsembleError, match="a field opens a quote it does not close"):
        load_table(path)  # quote-free by default: GLUE's stray quotes are text
    # the default keeps a stray quote as text, where CSV quoting would swallow rows
    stray = tmp_path / "glue.tsv"
    stray.write_text('text\tlabel\n"a stray quote\tx\nnext row\ty\n', encoding="utf-8")
    assert load_table(stray).texts == ['"a stray quote', "next row"]
    assert [c.texts for c in iter_table(path, chunk_rows=2, quoting="csv")] == [[r[0] for r in rows[:2]], [r[0] for r in rows[2:]]]
    with pytest.raises(EnsembleError, match=r"the 'quoting' parameter must be one of \{'none', 'csv'\}; got 'x'"):
        load_table(path, quoting="x")


@pytest.mark.parametrize("chunk_rows", [2, 10_000])
def test_a_label_after_an_unlabelled_first_chunk_is_an_error_at_any_chunk_size(tmp_path: Path, chunk_rows: int) -> None:
    # the first chunk decided "unlabelled", and later labels were dropped or kept by chunk size
    path = write(tmp_path / "x.csv", "text,label\n" + "".join(f"t{i},\n" for i in range(5)) + "t5,pos\n")
    message = (r"line 7 of '.*' has a label in column 'label', but the first 2 rows with a text have none; fill the blank labels"
               if chunk_rows == 2 else r"line 2 of '.*' has an empty label in column 'label'; fix the row")
    with pytest.raises(EnsembleError, match=message + r".*--label \"\" to go without gold labels"):
        list(iter_table(path, chunk_rows=chunk_rows, require_label=False, field="--data"))


def test_parquet_is_read_in_record_batches_in_order(tmp_path: Path, monkeypatch) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from ensemble import readers

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"idx": list(range(7)), "text": [f"t{i}" for i in range(7)], "label": ["a", "b"] * 3 + ["a"]}),
                   path)
    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 3)  # batches of 3 rows across chunks of 2
    chunks = list(iter_table(path, chunk_rows=2))
    assert [c.texts for c in chunks] == [["t0", "t1"], ["t2", "t3"], ["t4", "t5"], ["t6"]]
    assert sum((c.labels for c in chunks), []) == ["a", "b"] * 3 + ["a"]


def test_a_bytes_label_column_is_read_as_utf8_text(tmp_path: Path) -> None:
    path = tmp_path / "b.npz"
    np.savez(path, text=np.array(["a b", "c d"]), label=np.array(["posé".encode(), b"neg"]))
    assert load_table(path).labels == ["posé", "neg"]  # not the repr "b'pos\\xc3\\xa9'"


@pytest.mark.parametrize(("values", "rows_each", "refused"), [
    ([str(k / 2) for k in range(21)], 1, False),  # half-star ratings 0..10: classes
    (["401.9", "250.00", "427.31", "414.01", "428.0"] + [f"{k}.{k % 7 + 1}" for k in range(500, 520)], 5, False),  # codes
    (["401.9", "250.00", "427.31", "414.01", "428.0"] + [f"{k}.{k % 7 + 1}" for k in range(500, 520)], 1, True),
    ([f"{k / 10:.1f}" for k in range(51)], 1, True),  # scores in tenths
])
def test_numbered_classes_and_continuous_targets(tmp_path: Path, values: list[str], rows_each: int, refused: bool) -> None:
    from ensemble.labels import check_label_column

    rows = [f"row {k} {i},{v}" for i, v in enumerate(values) for k in range(rows_each)]
    ds = load_table(write(tmp_path / "t.csv", "text,label\n" + "\n".join(rows) + "\n"))
    if refused:
        with pytest.raises(EnsembleError, match="a continuous target, not classes"):
            check_label_column(ds, "label")
    else:
        check_label_column(ds, "label")


def test_a_named_pipe_is_refused_rather_than_read_twice_or_waited_on(tmp_path: Path) -> None:
    import os

    pipe = tmp_path / "rows.csv"
    os.mkfifo(pipe)
    with pytest.raises(EnsembleError, match=r"^--data: '.*rows.csv' is not a regular file \(a pipe or a device\); "
                                            "data files are read more than once: save the data to a file"):
        load_table(pipe, field="--data")


# ---------------------------------------------------------------- audit AA: rows and labels as written

def test_an_empty_text_in_a_one_column_file_is_a_row_not_a_blank_line(tmp_path):
    # csv.writer writes an empty one-column value as "": it used to vanish, uncounted
    path = tmp_path / "p.csv"
    path.write_text('text\nthe movie was great\n""\n   \n\nawful film\n  ', encoding="utf-8")
    with pytest.raises(EnsembleError, match=r"line 3 of '.*p.csv' has an empty text in column 'text'"):
        load_table(path, label=None)
    ds = load_table(path, label=None, on_bad_rows="skip")
    assert ds.texts == ["the movie was great", "awful film"] and ds.skipped == 1  # lines of spaces are blank lines


def test_the_csv_modules_field_limit_is_restored_after_reading(tmp_path):
    import csv

    path = tmp_path / "t.csv"
    path.write_text("text,label\na,x\nb,y\n", encoding="utf-8")
    before = csv.field_size_limit()
    load_table(path)
    assert csv.field_size_limit() == before


def test_a_text_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    import csv

    path = tmp_path / "long.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label"], ["x" * 200_000, "a"], ["y", "b"]])
    assert [len(t) for t in load_table(path).texts] == [200_000, 1]


def test_blank_lines_above_the_header_are_skipped_and_line_numbers_stay_true(tmp_path):
    path = tmp_path / "lead.tsv.csv"
    path.write_text("\n\ntext\tlabel\na\t1\n\t0\n", encoding="utf-8")  # tab-separated: still detected
    with pytest.raises(EnsembleError, match=r"line 5 of '.*' has an empty text in column 'text'"):
        load_table(path)
    assert load_table(path, on_bad_rows="skip").texts == ["a"]


def test_a_non_utf8_byte_is_placed_on_its_line_with_cr_line_ends(tmp_path):
    path = tmp_path / "cr.csv"
    path.write_bytes(b"text,label\ra,1\rb,0\rcaf\xe9,1\r")
    with pytest.raises(EnsembleError, match=r"line 4 of '.*cr.csv' is not valid UTF-8"):
        load_table(path)
    # a CRLF pair split by the scan's 1 MiB block boundary is one line end
    head = b"text,label\r\n" + b"x" * ((1 << 20) - 15) + b",1\r\n"
    assert head.index(b"\r\n", 20) == (1 << 20) - 1
    path.write_bytes(head + b"b,0\r\ncaf\xe9,1\r\n")
    with pytest.raises(EnsembleError, match=r"line 4 of '.*cr.csv' is not valid UTF-8"):
        load_table(path)


@pytest.mark.parametrize("value, label", [(np.float32(0.1), "0.1"), (np.float32(2.3), "2.3"), (np.float16(0.1), "0.1"),
                                          (np.float32(2.0), "2"), (np.float32(-0.0), "0"), (np.float32("nan"), None)])
def test_narrow_floats_are_spelled_as_written(value, label):
    assert normalize_label(value) == label


def test_float32_labels_of_npz_and_parquet_match_the_same_labels_read_from_csv(tmp_path):
    labels = np.array([2.3, 1.7, 2.3], dtype=np.float32)
    np.savez(tmp_path / "f.npz", text=np.array(["a", "b", "c"]), label=labels)
    assert load_table(tmp_path / "f.npz").labels == ["2.3", "1.7", "2.3"]  # was 2.299999952316284
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": pa.array([2.3, 1.7, None], type=pa.float32())}),
                   tmp_path / "f.parquet")
    ds = load_table(tmp_path / "f.parquet", on_bad_rows="skip")
    assert ds.labels == ["2.3", "1.7"] and ds.skipped == 1


def test_nested_json_objects_are_values_as_they_are(tmp_path):
    # keys repeated or spaced inside a value are the value's business; the row's columns are fine
    path = tmp_path / "n.jsonl"
    path.write_text('{"m": {"a": {"z": 1, "z": 2}, "a": 1, " k ": 3}, "text": "t", "label": "y"}\n'
                    '{"text": "u", "label": "x"}\n', encoding="utf-8")
    assert load_table(path).texts == ["t", "u"]


@pytest.mark.parametrize("line", ['{"text": "kept?", "text ": "other", "label": "x"}',
                                  '{"text": "a", "text": "b", "label": "y"}'])
def test_a_jsonl_key_given_twice_is_a_bad_row_not_the_last_value(tmp_path, line):
    path = tmp_path / "d.jsonl"
    path.write_text(line + '\n{"text": "fine", "label": "x"}\n', encoding="utf-8")
    with pytest.raises(EnsembleError, match=r"line 1 of '.*d.jsonl' has the key 'text' twice \(keys are compared "
                                            r"without surrounding spaces\); give each column once"):
        load_table(path)
    assert load_table(path, on_bad_rows="skip").texts == ["fine"]


@pytest.mark.parametrize("quoting, suffix, warned", [("none", ".tsv", True), ("csv", ".tsv", False),
                                                     ("none", ".jsonl", False)])
def test_a_tab_file_read_without_the_csv_quoting_it_was_written_with_is_warned_about(quoting, suffix, warned):
    from ensemble.data import quoting_warning

    texts = ['"a ""classic"" film"'] * 5 + ["plain"] * 95  # CFIMDB's escaping, kept by quoting = "none"
    warning = quoting_warning(TextDataset(texts, None, ["x"] * 100, f"train{suffix}"), quoting)
    assert (warning is not None) == warned
    if warned:
        assert warning.startswith("warning: 5 of 100 texts in 'train.tsv' look CSV-quoted") and warning.endswith(
            'set data.quoting = "csv"')
    few = ['"a ""classic"" film"'] * 2 + ["plain"] * 98  # a couple may be meant: no warning
    assert quoting_warning(TextDataset(few, None, ["x"] * 100, "t.tsv"), "none") is None


def test_cfimdb_read_without_csv_quoting_is_warned_about(shared_data):
    from ensemble.data import quoting_warning

    train = shared_data / "cs224n" / "ids-cfimdb-train.csv"
    ds = load_table(train, text="sentence", label="sentiment")
    assert quoting_warning(ds, "none").startswith("warning: 692 of 1707 texts")
    assert quoting_warning(load_table(train, text="sentence", label="sentiment", quoting="csv"), "csv") is None


# --------------------------------------------------------------------------- kept columns (an id to join on)


def _kept_files(tmp: Path) -> dict[str, Path]:
    """One file per format: id, text, label, group; row 2 has an empty text."""
    ids, texts, labels, groups = [7, 8, 9], ["good film", "", "fine film"], ["1", "0", "1"], ["a", "b", "c"]
    files = {
        "csv": write(tmp / "k.csv", "id,text,label,group\n" + "".join(
            f"{i},{t},{lab},{g}\n" for i, t, lab, g in zip(ids, texts, labels, groups))),
        "tsv": write(tmp / "k.tsv", "id\ttext\tlabel\tgroup\n" + "".join(
            f"{i}\t{t}\t{lab}\t{g}\n" for i, t, lab, g in zip(ids, texts, labels, groups))),
        "jsonl": write(tmp / "k.jsonl", "".join(json.dumps({"id": i, "text": t, "label": int(lab), "group": g}) + "\n"
                                                for i, t, lab, g in zip(ids, texts, labels, groups))),
    }
    np.savez(tmp / "k.npz", id=np.array(ids), text=np.array(texts), label=np.array(labels, dtype=int),
             group=np.array(groups))
    files["npz"] = tmp / "k.npz"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return files
    pq.write_table(pa.table({"id": ids, "text": texts, "label": [int(v) for v in labels], "group": groups}),
                   tmp / "k.parquet")
    files["parquet"] = tmp / "k.parquet"
    return files


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "npz", "parquet"])
def test_kept_columns_follow_their_rows_in_every_format(tmp_path: Path, kind: str) -> None:
    files = _kept_files(tmp_path)
    if kind not in files:
        pytest.skip("pyarrow is not installed")
    ds = load_table(files[kind], keep=["group", "id"], on_bad_rows="skip")
    # the bad row is skipped with its kept values; numbers are written as they are spelled
    assert ds.texts == ["good film", "fine film"] and ds.labels == ["1", "1"]
    assert ds.kept == {"group": ["a", "c"], "id": ["7", "9"]} and list(ds.kept) == ["group", "id"]
    chunks = list(iter_table(files[kind], chunk_rows=1, keep=["id"], on_bad_rows="skip"))
    assert [c.kept for c in chunks] == [{"id": ["7"]}, {"id": ["9"]}]
    assert load_table(files[kind], on_bad_rows="skip").kept is None  # nothing kept unless asked


def test_a_kept_column_may_be_the_text_or_label_column_and_survives_subsets(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(10)))
    ds = load_table(path, keep=["label", "text"])
    assert ds.kept == {"label": ds.labels, "text": ds.texts}
    train, valid = stratified_split(ds, 0.2, seed=0)
    assert valid.kept == {"label": valid.labels, "text": valid.texts} and train.kept["text"] == train.texts


def test_an_unlabelled_file_keeps_its_columns_after_the_blank_label_column(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "id,text,label\n1,a,\n2,b,\n")
    ds = load_table(path, keep=["id"], require_label=False)
    assert ds.labels is None and ds.kept == {"id": ["1", "2"]}


@pytest.mark.parametrize(
    ("field", "keep", "message"),
    [
        ("--data", ["ID"], "--data: column 'ID' not found in '{p}'; columns found: id, text, label (set --keep-columns "
                           "to one of them)"),
        ("data.test", ["ID"], "data.test: column 'ID' not found in '{p}'; columns found: id, text, label (set "
                              "data.keep_columns to one of them)"),
        ("--data", ["id", "id"], "--keep-columns: names column 'id' more than once; name each column once"),
        ("data.test", ["id", "id"], "data.keep_columns: names column 'id' more than once; name each column once"),
        ("--data", [" "], "--keep-columns: is empty; give a column name of '{p}': id, text, label"),
    ],
)
def test_kept_column_mistakes_name_the_setting(tmp_path: Path, field: str, keep: list, message: str) -> None:
    path = write(tmp_path / "d.csv", "id,text,label\n1,a,x\n")
    with pytest.raises(EnsembleError) as info:
        load_table(path, keep=keep, field=field)
    assert str(info.value) == message.format(p=path)


def test_a_jsonl_row_without_a_kept_field_keeps_an_empty_value(tmp_path: Path) -> None:
    # an id column must not decide which rows are read (fit trains on the rows of a file it keeps an id of)
    path = write(tmp_path / "d.jsonl", '{"id": 1, "text": "a", "label": 0}\n{"text": "b", "label": 1}\n')
    ds = load_table(path, keep=["id"], field="--data")
    assert ds.texts == ["a", "b"] and ds.kept == {"id": ["1", ""]}
    with pytest.raises(EnsembleError, match=r"line 2 of .* has no field 'label'"):  # the columns read still must be there
        load_table(write(tmp_path / "e.jsonl", '{"id": 1, "text": "a", "label": 0}\n{"id": 2, "text": "b"}\n'), keep=["id"])
    with pytest.raises(EnsembleError, match=r"the 'keep' parameter must be a list of column names; got the string 'id' "
                                            r"\(write \['id'\]\)"):
        load_table(path, keep="id")


def test_kept_values_are_not_misaligned_by_a_wrong_length() -> None:
    with pytest.raises(ValueError, match=r"TextDataset.kept\['id'\] has 1 items but texts has 2"):
        TextDataset(["a", "b"], None, None, "x.csv", kept={"id": ["1"]})


@pytest.mark.parametrize(
    ("texts", "warned"),
    [
        ([str(i) for i in range(100, 140)], True),
        ([f"{i:025x}" for i in range(40)], True),
        ([f"12345678-aaaa-bbbb-cccc-{i:012d}" for i in range(40)], True),
        ([f"doc_{i:04d}" for i in range(40)], True),
        ([f"row{i}" for i in range(40)], True),
        ([f"ID-{i}" for i in range(40)], True),
        ([f"{i}.0" for i in range(40)], True),
        ([f"{i:06x}a1" for i in range(40)], True),
        (["3"] * 40, True),  # one repeated number: a score column, no words either
        ([str(i) for i in range(19)], False),  # too few rows to tell
        ([str(i) for i in range(37)] + ["a film", "fine", "bad"], False),  # more than 5% words
        (["great", "awful", "fine", "meh"] * 10, False),
        (["decade", "facade", "accede", "efface"] * 10, False),  # hex letters only: words
        (["the film is 10/10"] * 40, False),
    ],
)
def test_a_text_column_of_ids_is_warned_about(texts: list[str], warned: bool) -> None:
    from ensemble.data import id_warning

    ds = TextDataset(texts, None, None, "d.csv")
    warning = id_warning(ds, "id", "--text")
    assert (warning is not None) == warned
    if warned:
        assert warning == (f"warning: the text column 'id' of 'd.csv' holds no words: 40 of its 40 texts are numbers "
                           f"or ids (e.g. '{texts[0]}'); name the text column with --text COLUMN")
        assert id_warning(ds, "id", "data.text").endswith('with data.text = "..."')
        assert "40 of its first 40 texts" in id_warning(ds, "id", total=41)


def test_no_text_column_of_the_real_data_is_taken_for_ids(shared_data: Path) -> None:
    from ensemble.data import id_warning

    for name, text, pair in [("cs224n/ids-sst-train.csv", "sentence", None), ("cs224n/ids-cfimdb-train.csv", "sentence", None),
                             ("cs224n/quora-dev.csv", "sentence1", "sentence2"), ("cs224n/sts-train.csv", "sentence1", "sentence2"),
                             ("glue/RTE/train.tsv", "sentence1", "sentence2"), ("glue/MRPC/train.tsv", "#1 String", "#2 String")]:
        path = shared_data / name
        for column in filter(None, (text, pair)):
            ds = load_table(path, text=column, label=None, on_bad_rows="skip")
            assert id_warning(ds, column) is None, name
        ds = load_table(path, text="id" if "cs224n" in name else "index" if "RTE" in name else "#1 ID", label=None,
                        on_bad_rows="skip")
        assert id_warning(ds, "id") is not None, name


@pytest.mark.parametrize("chunk_rows", [1, 2, 10_000])
def test_rows_without_a_text_do_not_decide_whether_a_file_is_labelled(tmp_path: Path, chunk_rows: int) -> None:
    # an empty first row (no text, no label) used to make chunk_rows=1 take the file as unlabelled
    path = write(tmp_path / "x.csv", "id,text,label\n0,,\n1,fine,positive\n2,dull,negative\n3,a film,\n4,,neutral\n")
    chunks = list(iter_table(path, chunk_rows=chunk_rows, require_label=False, on_bad_rows="skip", keep=["id"]))
    assert [t for c in chunks for t in c.texts] == ["fine", "dull"]
    assert [i for c in chunks for i in c.kept["id"]] == ["1", "2"]
    assert sum(c.skipped for c in chunks) == 3 and all(c.labels is not None for c in chunks)
    # unlabelled: a row without a text but with a label is a bad row (no text), not "a label further down"
    path = write(tmp_path / "y.csv", "text,label\n,\nfine,\ndull,\n,positive\ngood,\n")
    chunks = list(iter_table(path, chunk_rows=chunk_rows, require_label=False, on_bad_rows="skip"))
    assert [t for c in chunks for t in c.texts] == ["fine", "dull", "good"] and chunks[0].labels is None
    assert sum(c.skipped for c in chunks) == 2


def test_typed_kept_columns_are_written_as_stored(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", text=np.array(["a", "b"]), label=np.array([0, 1]),
             f32=np.array([0.1, 2.5], dtype=np.float32), when=np.array(["2024-01-02", "2024-03-04T05:06"], dtype="datetime64[ns]"),
             raw=np.array([b"01", b"x"]))
    ds = load_table(tmp_path / "t.npz", keep=["f32", "when", "raw"])
    assert ds.kept == {"f32": ["0.1", "2.5"], "when": ["2024-01-02", "2024-03-04T05:06"], "raw": ["01", "x"]}
    pa = pytest.importorskip("pyarrow")
    import datetime
    import decimal

    import pyarrow.parquet as pq

    table = pa.table({"text": ["a", "b"], "label": [0, 1],
                      "f32": pa.array([0.1, None], type=pa.float32()),
                      "ts": pa.array([datetime.datetime(2024, 1, 1, 12, 0, 1), None], type=pa.timestamp("s")),
                      "day": pa.array([datetime.date(2024, 1, 2), datetime.date(2024, 1, 3)]),
                      "dec": pa.array([decimal.Decimal("1.50"), decimal.Decimal("2.00")], type=pa.decimal128(5, 2)),
                      "raw": pa.array([b"01", b"\xff"])})
    pq.write_table(table, tmp_path / "t.parquet")
    # text and label kept too: each column is read once, and copied
    ds = load_table(tmp_path / "t.parquet", keep=["f32", "ts", "day", "dec", "raw", "text", "label"])
    assert ds.kept == {"f32": ["0.1", ""], "ts": ["2024-01-01 12:00:01", ""], "day": ["2024-01-02", "2024-01-03"],
                       "dec": ["1.50", "2.00"], "raw": ["01", "\\xff"], "text": ["a", "b"], "label": ["0", "1"]}


def test_deciding_whether_a_file_is_labelled_reads_a_bounded_look_ahead(tmp_path: Path, monkeypatch) -> None:
    import ensemble.data as data_module

    path = write(tmp_path / "x.csv", "text,label\n" + ",\n" * 5000 + "fine,pos\n")
    start = time_ns()
    with pytest.raises(EnsembleError, match="line 2 of .* has an empty text"):  # "error": the first bad row ends it
        next(iter_table(path, chunk_rows=10, require_label=False))
    assert time_ns() - start < 2e9
    monkeypatch.setattr(data_module, "_LOOK_PAST", 100)  # "skip": at most this many rows without a text looked past
    looked = []
    original = data_module._first_with_texts
    monkeypatch.setattr(data_module, "_first_with_texts", lambda *a: looked.append(original(*a)) or looked[-1])
    chunks = list(iter_table(path, chunk_rows=10, require_label=False, on_bad_rows="skip"))
    assert len(looked[0]) == 100 and [c.texts for c in chunks] == [["fine"]]
    assert chunks[0].labels == ["pos"] and chunks[0].skipped == 5000  # no row with a text looked at: labels are read
