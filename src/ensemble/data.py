"""Load labelled text tables (csv, tsv, jsonl, npz, parquet) and split them for training.

Every problem a user can fix (a missing column, a non-UTF-8 byte, an empty label) becomes a
one-line `EnsembleError` naming the recipe field, the file and the value, because the files
people bring are dirty: unnamed index columns, BOMs, float labels, stray quotes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from .config import BAD_ROWS, QUOTINGS
from .errors import EnsembleError, one_of
from .labels import normalize_label
from .readers import READERS, Row

_FLAGS = {"data.text": "--text", "data.text_pair": "--text-pair", "data.label": "--label",
          "data.keep_columns": "--keep-columns"}
FORMATS = (".csv", ".tsv", ".jsonl", ".npz", ".parquet")


@dataclass
class TextDataset:
    """Texts (and optional second texts and labels) of one table, row-aligned.

    A label of None marks a row without a gold label (a distillation transfer row, see
    `ensemble.distill.distill`); files never produce one.
    """

    texts: list[str]
    pairs: list[str] | None
    labels: list[str] | None
    path: str
    skipped: int = 0
    kept: dict[str, list[str]] | None = None  # columns copied through to the predictions (an id), by name

    def __post_init__(self) -> None:
        for name in ("pairs", "labels"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.texts):
                raise ValueError(f"TextDataset.{name} has {len(values)} items but texts has {len(self.texts)}")
        for name, values in (self.kept or {}).items():
            if len(values) != len(self.texts):
                raise ValueError(f"TextDataset.kept['{name}'] has {len(values)} items but texts has {len(self.texts)}")

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        """A hash of the rows in order (texts, second texts, labels): equal hashes, equal rows."""
        return hashlib.sha256(json.dumps([self.texts, self.pairs, self.labels]).encode()).hexdigest()

    def subset(self, indices: Sequence[int]) -> TextDataset:
        """Rows at `indices`, in that order; `skipped` is reset because it describes the file."""
        pick = [int(i) for i in indices]
        return TextDataset(
            texts=[self.texts[i] for i in pick],
            pairs=None if self.pairs is None else [self.pairs[i] for i in pick],
            labels=None if self.labels is None else [self.labels[i] for i in pick],
            path=self.path,
            kept=None if self.kept is None else {name: [v[i] for i in pick] for name, v in self.kept.items()},
        )



def load_table(
    path: str | Path,
    *,
    text: str = "text",
    text_pair: str | None = None,
    label: str | None = "label",
    field: str = "data",
    on_bad_rows: str = "error",
    require_label: bool = True,
    quoting: str = "none",
    keep: Sequence[str] = (),
) -> TextDataset:
    """Read a table of texts and labels, picking columns by name.

    The format comes from the extension (.csv, .tsv, .jsonl, .npz, .parquet); a .csv whose
    header holds a tab is read as TSV. Bad rows (empty text or label, missing fields) raise
    on the first one, or are dropped and counted with ``on_bad_rows="skip"``. With
    ``require_label=False`` a label column that is blank in every row means "unlabelled"
    (``labels`` is None). Texts must be strings: a number in a text column is refused (a whole
    npz or parquet column by its type, a jsonl value as a bad row). The `keep` columns (an id to
    join the predictions on) are read as they are written, into ``kept`` (a jsonl row without
    one gives an empty value). `iter_table` reads the same files in chunks, for files too big to hold.

    Example:
        >>> ds = load_table("ids-sst-train.csv", text="sentence", label="sentiment", field="data.train")  # doctest: +SKIP
        >>> ds.texts[0][:20], ds.labels[0]  # doctest: +SKIP
        ('The Rock is destined', '3')
    """
    _check_options(on_bad_rows, quoting)
    # One chunk holding every row: the shared streaming code with no chunk limit.
    (ds,) = _stream_table(
        path, chunk_rows=None, text=text, text_pair=text_pair, label=label,
        field=field, on_bad_rows=on_bad_rows, require_label=require_label, quoting=quoting, keep=keep,
    )
    return ds


def iter_table(
    path: str | Path,
    *,
    chunk_rows: int = 10_000,
    text: str = "text",
    text_pair: str | None = None,
    label: str | None = "label",
    field: str = "data",
    on_bad_rows: str = "error",
    require_label: bool = True,
    quoting: str = "none",
    keep: Sequence[str] = (),
) -> Iterator[TextDataset]:
    """`load_table` in consecutive chunks of at most `chunk_rows` rows, in file order.

    csv, tsv and jsonl files are read incrementally and parquet files in record batches, so
    memory is bounded by the chunk, not the file; npz files (zip archives of whole arrays) are
    loaded whole and then chunked. Rows are cleaned, checked and skipped exactly as in
    `load_table`, with the same messages and line numbers. A chunk spans the file from its first
    row to the next chunk's first row, and its ``skipped`` counts the bad rows
    skipped in that span (bad rows before the first good row count in the first chunk), so the
    chunks' ``skipped`` add up to `load_table`'s. Chunks are never empty; only the last one may
    hold fewer than `chunk_rows` rows.

    Parameter errors (`chunk_rows`, `on_bad_rows`) raise at once. Everything about the file is
    checked when the first chunk is asked for and before it is yielded: the path, an empty file,
    missing or duplicate columns, a header without rows. Problems further on (a bad row under
    ``on_bad_rows="error"``, a non-UTF-8 byte, broken quoting) raise when reading gets there,
    after the chunks before them were yielded.

    With ``require_label=False``, whether a blank label column means "unlabelled" is decided
    from the first `chunk_rows` data rows that have their texts (`load_table` looks at all rows;
    rows without a text are bad either way): if every label there is blank, every chunk has
    ``labels`` None and a later label is an error; otherwise the file is labelled and a later
    blank label is a bad row.

    Example:
        >>> for chunk in iter_table("big.csv", chunk_rows=10_000, require_label=False):
        ...     predict(chunk.texts)  # doctest: +SKIP
    """
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int | np.integer) or chunk_rows < 1:
        raise EnsembleError(f"the 'chunk_rows' parameter must be a positive integer; got {chunk_rows!r}")
    _check_options(on_bad_rows, quoting)
    return _stream_table(
        path, chunk_rows=int(chunk_rows), text=text, text_pair=text_pair, label=label,
        field=field, on_bad_rows=on_bad_rows, require_label=require_label, quoting=quoting, keep=keep,
    )


def _check_options(on_bad_rows: str, quoting: str = "none") -> None:
    if on_bad_rows not in BAD_ROWS:
        raise EnsembleError(f"the 'on_bad_rows' parameter must be one of {one_of(BAD_ROWS)}; got {on_bad_rows!r}")
    if quoting not in QUOTINGS:
        raise EnsembleError(f"the 'quoting' parameter must be one of {one_of(QUOTINGS)}; got {quoting!r}")


def _stream_table(
    path: str | Path,
    *,
    chunk_rows: int | None,
    text: str,
    text_pair: str | None,
    label: str | None,
    field: str,
    on_bad_rows: str,
    require_label: bool,
    quoting: str = "none",
    keep: Sequence[str] = (),
) -> Iterator[TextDataset]:
    """The one implementation behind `load_table` and `iter_table`; `chunk_rows=None` is one chunk."""
    p, shown = Path(path), str(path)
    if not p.exists():
        hint = "" if p.is_absolute() else " (relative paths start at the working directory)"
        raise EnsembleError(f"{field}: file not found: '{shown}'{hint}")
    if p.is_dir():
        raise EnsembleError(f"{field}: '{shown}' is a directory; give the path of a data file inside it")
    if not p.is_file():  # a named pipe would hang, or be used up by the first of the reads (predict checks first)
        raise EnsembleError(f"{field}: '{shown}' is not a regular file (a pipe or a device); data files are read "
                            "more than once: save the data to a file and give its path")
    if isinstance(keep, str):
        raise EnsembleError(f"the 'keep' parameter must be a list of column names; got the string {keep!r} "
                            f"(write [{keep!r}])")
    twice = sorted({name for name in keep if list(keep).count(name) > 1})
    if twice:
        flag = _FLAGS["data.keep_columns"] if field.startswith("--") else "data.keep_columns"
        raise EnsembleError(f"{flag}: names column '{twice[0]}' more than once; name each column once")
    reader = READERS.get(p.suffix.lower())
    if reader is None:
        conll = p.suffix.lower() in (".train", ".testa", ".testb", ".conll", ".iob", ".bio")
        raise EnsembleError(
            f"{field}: cannot read '{shown}': unknown extension {p.suffix!r}; use one of {', '.join(FORMATS)}"
            + (" (it looks like a CoNLL token-per-line file: ensemble classifies whole texts or text pairs; token "
               "classification (NER) is not supported)" if conll else "")
        )
    with reader(p, shown, field, quoting=quoting) as (columns, fetch):

        def find(name: str, key: str) -> str:
            if not name.strip():  # a header's unnamed first column (a row index) is never the one meant
                listed = ", ".join(c for c in columns if c) or "(none)"
                flag = _FLAGS[key] if field.startswith("--") else key
                raise EnsembleError(f"{flag}: is empty; give a column name of '{shown}': {listed}")
            if name not in columns:
                listed = ", ".join(c for c in columns if c) or "(none)"
                hint = f"set {key} to one of them"
                if field.startswith("--"):  # a command-line file: name the flag, not the recipe field
                    hint = f"set {_FLAGS[key]} to one of them"
                    if key == "data.text_pair":  # only asked for when the members were trained on pairs
                        hint += "; the members were trained on sentence pairs"
                separator = _other_separator(p, columns)
                if separator is not None:  # one column holding the whole header: a naming fix cannot help
                    hint = (
                        f"the header looks {separator!r}-separated; this reads comma-separated .csv "
                        "(or tab-separated .tsv): convert the file"
                    )
                elif _token_per_line(columns):
                    hint = ("it looks like a CoNLL file, one token and its tags per line; ensemble classifies whole "
                            "texts or text pairs: token classification (NER) is not supported")
                raise EnsembleError(
                    f"{field}: column '{name}' not found in '{shown}'; columns found: {listed} ({hint})"
                )
            if columns.count(name) > 1:
                raise EnsembleError(
                    f"{field}: column '{name}' appears {columns.count(name)} times in '{shown}'; rename the duplicates"
                )
            return name

        wanted = [find(text, "data.text")]
        if text_pair is not None:
            wanted.append(find(text_pair, "data.text_pair"))
        use_label = label is not None and (require_label or label in columns)
        if use_label:
            wanted.append(find(label, "data.label"))  # type: ignore[arg-type]  # not None when use_label
        keys = ["data.text", *["data.text_pair"] * (text_pair is not None), *["data.label"] * use_label]
        for i, name in enumerate(wanted):  # the label as a text would train on the answer
            if name in wanted[:i]:
                first, second = (_FLAGS[k] if field.startswith("--") else k for k in (keys[wanted.index(name)], keys[i]))
                raise EnsembleError(f"{field}: {first} and {second} both name column '{name}' of '{shown}'; "
                                    "each must name a different column")
        # the kept columns come last, after checking the others: a copy of the text (or label) may be kept
        label_at = len(wanted) - 1 if use_label else None
        n_texts = 1 if text_pair is None else 2
        # a jsonl row without a kept key gives an empty value, not a bad row: an id must not decide what trains
        rows = fetch(wanted + [find(name, "data.keep_columns") for name in keep], n_texts, len(wanted))
        # Look ahead only as far as the decision below needs: one row, or the first chunk's rows.
        decide = use_label and not require_label
        head = _first_with_texts(rows, chunk_rows, n_texts, on_bad_rows) if decide else list(islice(rows, 1))
        if not head:
            raise EnsembleError(f"{field}: '{shown}' has column names but no data rows; add rows or use another file")
        # Prediction files often carry a blank label column: that means "unlabelled", not "all rows bad".
        # Rows bad for another reason (no text) are judged as bad later, whatever the decision.
        judged = [r for r in head if _has_texts(r, n_texts)]
        # (no row with a text in the look-ahead: nothing says the labels are blank, so they are read)
        unlabelled = decide and bool(judged) and all(normalize_label(r.values[label_at]) is None for r in judged)
        if unlabelled:
            use_label = False
            # a label further down is an error
            rows = _no_labels_after(rows, len(judged), label, label_at, n_texts, shown, field)
        ahead = deque(head)
        del head
        yield from _clean_rows(
            chain(_drain(ahead), rows), shown=shown, field=field, chunk_rows=chunk_rows, text=text,
            text_pair=text_pair, label=label if use_label else None, on_bad_rows=on_bad_rows, keep=keep,
            first_kept=len(wanted),
        )


_LOOK_PAST = 100_000  # rows without a text looked past, at most, to find a chunk of rows with texts


def _first_with_texts(rows: Iterator[Row], chunk_rows: int | None, n_texts: int, on_bad_rows: str) -> list[Row]:
    """Rows from the start up to the `chunk_rows`-th one with its texts (all rows when None):
    what decides whether a file is labelled, so that rows without a text (skipped or refused
    later) do not make the decision depend on the chunk size. Under "error" the first row
    without its texts ends the look (it stops the run anyway); under "skip" at most
    `_LOOK_PAST` of them are looked past, so memory stays bounded."""
    if chunk_rows is None:
        return list(rows)
    head, usable = [], 0
    for row in rows:
        head.append(row)
        if _has_texts(row, n_texts):
            usable += 1
        elif on_bad_rows == "error" or len(head) - usable >= _LOOK_PAST:
            break
        if usable == chunk_rows:
            break
    return head


def _has_texts(row: Row, n_texts: int) -> bool:
    """Whether a row is whole and has every text (its label aside)."""
    return row.problem is None and all(_as_text(v) for v in row.values[:n_texts])


def _no_labels_after(rows: Iterator, looked: int, label: str, at: int, n_texts: int, shown: str,
                     field: str) -> Iterator:
    """`rows`, refusing one with a label: the first `looked` rows with texts had none, so the file
    was taken as unlabelled (a label further down would otherwise be dropped, or kept, by chunk
    size). A row without its texts is left to be judged as the bad row it is."""
    for row in rows:
        if normalize_label(row.values[at]) is not None and _has_texts(row, n_texts):
            raise EnsembleError(f"{field}: {row.where} of '{shown}' has a label in column '{label}', but the first "
                                f"{looked} rows with a text have none; fill the blank labels, or pass --label \"\" "
                                "to go without gold labels")
        yield row


def _other_separator(p: Path, columns: list[str]) -> str | None:
    """The separator (';' or '|') of a .csv/.tsv header that was read as one column, else None."""
    if p.suffix.lower() not in (".csv", ".tsv") or len(columns) != 1:
        return None
    return next((sep for sep in (";", "|") if sep in columns[0]), None)


def _token_per_line(columns: list[str]) -> bool:
    """A header that is one column of 2-4 space-separated words, the last a tag ("Melbourne NP B-LOC").

    Example:
        >>> _token_per_line(["Melbourne NP B-LOC"]), _token_per_line(["text"]), _token_per_line(["my text"])
        (True, False, False)
    """
    if len(columns) != 1:
        return False
    words = columns[0].split()
    return 2 <= len(words) <= 4 and (words[-1] == "O" or words[-1][:2] in ("B-", "I-", "E-", "S-"))


def _bad_row_fix(field: str) -> str:
    """What to do about a bad row: the recipe and the --data / --valid files of vote and predict can
    skip them; other command-line files (distill's --unlabeled) cannot.

    Example:
        >>> _bad_row_fix("data.train")
        'fix the row or set data.on_bad_rows = "skip"'
        >>> _bad_row_fix("--data")
        'fix the row or pass --on-bad-rows skip to leave it out'
        >>> _bad_row_fix("--unlabeled")
        'fix the row or remove it from the file'
    """
    if field in ("--data", "--valid"):
        return "fix the row or pass --on-bad-rows skip to leave it out"
    if field.startswith("--"):
        return "fix the row or remove it from the file"
    return 'fix the row or set data.on_bad_rows = "skip"'


def _drain(items: deque[Row]) -> Iterator[Row]:
    """Yield and forget the looked-ahead rows, so that they are freed as they are judged."""
    while items:
        yield items.popleft()


def _clean_rows(
    rows: Iterator[Row],
    *,
    shown: str,
    field: str,
    chunk_rows: int | None,
    text: str,
    text_pair: str | None,
    label: str | None,
    on_bad_rows: str,
    keep: Sequence[str] = (),
    first_kept: int = 0,
) -> Iterator[TextDataset]:
    """Judge each row (empty text, empty label, the reader's problem) and group the good ones in chunks.

    Under "skip" a full chunk is held back until the next good row arrives, so that it counts the
    bad rows up to the next chunk's first row (and those after the last good row) and no chunk is
    ever empty; under "error" nothing is skipped, and a full chunk is yielded at once.
    """
    texts: list[str] = []
    pairs: list[str] | None = [] if text_pair is not None else None
    labels: list[str] | None = [] if label is not None else None
    kept: dict[str, list[str]] = {name: [] for name in keep}
    at = 1 + (text_pair is not None)  # the label's place in a row's values; the kept columns from `first_kept`
    skipped, yielded = 0, False

    def take() -> TextDataset:
        """The rows gathered so far as a chunk, starting an empty one."""
        nonlocal texts, pairs, labels, kept, skipped, yielded
        done = TextDataset(texts=texts, pairs=pairs, labels=labels, path=shown, skipped=skipped,
                           kept=kept if keep else None)
        texts, skipped, yielded = [], 0, True
        pairs = [] if pairs is not None else None
        labels = [] if labels is not None else None
        kept = {name: [] for name in keep}
        return done

    hold = on_bad_rows == "skip"
    for row in rows:
        first = _as_text(row.values[0])
        second = _as_text(row.values[1]) if pairs is not None else ""
        if labels is not None and isinstance(row.values[at], list | tuple | dict | np.ndarray):
            raise EnsembleError(
                f"{field}: {row.where} of '{shown}' has a {type(row.values[at]).__name__} as its label in column "
                f"'{label}'; a label is one string or number (one class per row: multi-label data is not supported)"
            )
        name = normalize_label(row.values[at]) if labels is not None else None
        problem = row.problem
        if problem is None and not first:
            problem = f"has an empty text in column '{text}'"
        elif problem is None and pairs is not None and not second:
            problem = f"has an empty text in column '{text_pair}'"
        elif problem is None and labels is not None and name is None:
            blank = row.values[at] is None or not str(row.values[at]).strip()
            problem = f"has an empty label in column '{label}'" if blank else \
                f"has an empty label in column '{label}' ({str(row.values[at]).strip()!r}, read as a missing value)"
        if problem is not None:
            if on_bad_rows == "error":
                fix = _bad_row_fix(field)
                if field == "--data" and problem.startswith("has an empty label"):
                    fix = ('fix the row, pass --on-bad-rows skip to leave it out, or --label "" to go without '
                           "gold labels")
                raise EnsembleError(f"{field}: {row.where} of '{shown}' {problem}; {fix}")
            skipped += 1
            continue
        if hold and len(texts) == chunk_rows:  # this good row starts the next chunk
            yield take()
        texts.append(first)
        if pairs is not None:
            pairs.append(second)
        if labels is not None and name is not None:
            labels.append(name)
        if keep:
            for values, value in zip(kept.values(), row.values[first_kept:]):
                values.append(kept_value(value))
        if not hold and len(texts) == chunk_rows:
            yield take()
    if texts:
        yield take()
    elif not yielded:  # every row was bad and skipped (under "error" the first one raised)
        raise EnsembleError(
            f"{field}: all {skipped} rows of '{shown}' are bad and were skipped; check the column names and the file"
        )


def skipped_note(counts: dict[str, int], setting: str) -> str | None:
    """The note on the rows skipped as bad, per file (`counts`, keyed as the report's Data section
    keys them), or None when none was; `setting` is how the skipping was asked for.

    Example:
        >>> print(skipped_note({"train": 1200, "valid": 0, "test": 1}, 'data.on_bad_rows = "skip"'))
        note: skipped as bad (data.on_bad_rows = "skip"): 1,200 train rows, 1 test row; the report's Data section counts them
    """
    listed = [f"{n:,} {key} row{'s' if n != 1 else ''}" for key, n in counts.items() if n]
    return (f"note: skipped as bad ({setting}): {', '.join(listed)}; the report's Data section counts them"
            if listed else None)


def quoting_warning(ds: TextDataset, quoting: str, setting: str = "data.quoting") -> str | None:
    """The warning for a tab-separated file read without CSV quoting whose texts look CSV-quoted
    (``"..."`` around a text with doubled quotes inside: pandas' ``to_csv(sep="\t")``), or None.
    `setting` names the recipe key or flag that would read them right.

    Example:
        >>> ds = TextDataset(['"a ""classic"" film"', "plain"] * 10, None, ["x", "y"] * 10, "t.tsv")
        >>> print(quoting_warning(ds, "none")[:50])
        warning: 10 of 20 texts in 't.tsv' look CSV-quoted
        >>> quoting_warning(ds, "csv") is None
        True
    """
    if quoting != "none" or Path(ds.path).suffix.lower() not in (".tsv", ".csv", ".txt"):
        return None
    texts = ds.texts + (ds.pairs or [])
    quoted = sum(len(t) > 1 and t[0] == '"' and t[-1] == '"' and '""' in t for t in texts)
    if quoted < max(3, len(texts) // 100):  # a few such texts may be meant
        return None
    fix = f'{setting} = "csv"' if setting.startswith("data.") else f"{setting} csv"  # a recipe key, or a flag
    return (f"warning: {quoted} of {len(texts)} texts in '{ds.path}' look CSV-quoted (\"...\" around doubled quotes), "
            "and the file is read without CSV quoting, so they keep the escaping; if it was written with CSV "
            f"quoting (pandas' to_csv(sep=\"\\t\")), set {fix}")


# a text that is a code, not words: a number (17, 17.0, 2.5e3), an id with a short prefix (doc_0001,
# row17, ID-5), a hex hash with a digit (6+ characters), a UUID
_ID = re.compile(r"[-+]?\d+(\.\d+)?([eE][-+]?\d+)?|[A-Za-z]{1,8}[-_#.]?\d+|(?=[a-fA-F]*\d)[0-9a-fA-F]{6,}"
                 r"|[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
ID_SAMPLE = 10_000  # texts looked at: enough to tell, and cheap on big files


def id_warning(ds: TextDataset, column: str, setting: str = "data.text", total: int | None = None) -> str | None:
    """The warning for a text column that holds no words (all but a few of its first `ID_SAMPLE`
    texts numbers, short-prefixed ids, hashes or UUIDs: an id or score column named as the
    text), or None. `setting` names the recipe key or flag that chooses the text column; `total`
    is the file's row count when `ds` holds only its first rows.

    Example:
        >>> ds = TextDataset([f"doc_{i:04d}" for i in range(40)], None, ["x", "y"] * 20, "t.csv")
        >>> print(id_warning(ds, "id", "--text"))  # doctest: +NORMALIZE_WHITESPACE
        warning: the text column 'id' of 't.csv' holds no words: 40 of its 40 texts are numbers or ids
        (e.g. 'doc_0000'); name the text column with --text COLUMN
        >>> id_warning(TextDataset([f"film {i}" for i in range(40)], None, None, "t.csv"), "text") is None
        True
    """
    texts = ds.texts[:ID_SAMPLE]
    if len(texts) < 20:  # too few to tell
        return None
    codes = sum(_ID.fullmatch(t) is not None for t in texts)
    if codes < 0.95 * len(texts):
        return None
    first = "first " if (total if total is not None else len(ds.texts)) > len(texts) else ""
    return (f"warning: the text column '{column}' of '{ds.path}' holds no words: {codes:,} of its {first}"
            f"{len(texts):,} texts are numbers or ids (e.g. '{texts[0]}'); name the text column with "
            + (f"{setting} = \"...\"" if setting.startswith("data.") else f"{setting} COLUMN"))


def seen_in(ds: TextDataset, train: TextDataset) -> int:
    """How many rows of `ds` have the same text (and pair) as some row of `train`: duplicates
    there make scores on `ds` optimistic.

    Example:
        >>> train = TextDataset(["good", "bad"], None, ["p", "n"], "t.csv")
        >>> seen_in(TextDataset(["good", "fine", "good"], None, ["p", "p", "p"], "v.csv"), train)
        2
    """
    known = set(zip(train.texts, train.pairs or [None] * len(train.texts)))
    return sum(row in known for row in zip(ds.texts, ds.pairs or [None] * len(ds.texts)))


def stratified_split(ds: TextDataset, fraction: float, seed: int) -> tuple[TextDataset, TextDataset]:
    """Split off `fraction` of the rows as a validation part, keeping class proportions.

    Every label of the validation part also appears in the training part: the rows of a label
    that occurs once stay in training, the other rows are stratified when sklearn can (else a
    plain seeded shuffle), and a label whose rows all landed in validation swaps one of them with
    a training row of a label that has more. A fraction that leaves fewer training rows than
    labels is refused. Both parts keep the original row order; the same seed gives the same split.

    Example:
        >>> ds = TextDataset([f"review {i}" for i in range(20)], None, ["pos", "neg"] * 10, "reviews.csv")
        >>> train, valid = stratified_split(ds, 0.1, seed=0)
        >>> len(train), sorted(valid.labels)
        (18, ['neg', 'pos'])
        >>> rare = TextDataset(list("abcdef"), None, ["x", "y", "y", "z", "z", "z"], "rare.csv")
        >>> [stratified_split(rare, 0.5, seed=s)[0].labels.count("x") for s in range(5)]
        [1, 1, 1, 1, 1]
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise EnsembleError(f"the 'fraction' parameter (data.valid_fraction) must be > 0 and < 1; got {fraction!r}")
    n = len(ds)
    n_valid = math.ceil(fraction * n)
    n_train = n - n_valid
    where = f"'{ds.path}'" if ds.path else "the dataset"
    if n_valid < 1 or n_train < 1:
        raise EnsembleError(
            f"{where} has {n} rows, too few to split off a {fraction} validation part and keep rows to train on; "
            "add rows or give a separate validation file"
        )
    if ds.labels is None:
        train_idx, valid_idx = train_test_split(np.arange(n), test_size=n_valid, random_state=seed)
        return ds.subset(np.sort(train_idx).tolist()), ds.subset(np.sort(valid_idx).tolist())
    labels = ds.labels
    counts = Counter(labels)
    if n_train < len(counts):
        raise EnsembleError(
            f"{where} has {n} rows with {len(counts)} labels; a {fraction} validation part leaves {n_train} rows "
            "to train on, too few to keep every label in training; use a smaller validation fraction "
            "or give a separate validation file"
        )
    # A label with one row could only be in one part: in validation it would be unseen in training.
    single = [i for i, lab in enumerate(labels) if counts[lab] == 1]
    rest = np.array([i for i, lab in enumerate(labels) if counts[lab] > 1], dtype=int)
    kinds = len(counts) - len(single)  # labels of `rest`, each with at least two rows
    # n_train >= len(counts) leaves len(rest) - n_valid >= kinds >= 1 training rows in `rest`.
    # These are exactly the cases where sklearn can stratify (with no singletons, the split of old).
    stratify = [labels[i] for i in rest] if min(n_valid, len(rest) - n_valid) >= kinds else None
    train_idx, valid_idx = train_test_split(rest, test_size=n_valid, random_state=seed, stratify=stratify)
    train_idx, valid_idx = _keep_labels_in_training(labels, train_idx.tolist(), valid_idx.tolist(), seed)
    return ds.subset(sorted(train_idx + single)), ds.subset(sorted(valid_idx))


def _keep_labels_in_training(
    labels: list[str], train: list[int], valid: list[int], seed: int
) -> tuple[list[int], list[int]]:
    """Swap rows so that every label in `valid` has a row in `train`, keeping both sizes.

    For a label missing from `train`, one of its validation rows trades places with a training row
    of a label that has two or more there; one exists while `train` has at least as many rows as
    `valid` and `train` together have labels. Seeded, so the split stays deterministic.
    """
    in_train = Counter(labels[i] for i in train)
    missing = sorted({labels[i] for i in valid} - set(in_train))
    if not missing:
        return train, valid
    rng = np.random.default_rng(seed)
    train, valid = sorted(train), sorted(valid)
    for lab in missing:
        mine = [k for k, i in enumerate(valid) if labels[i] == lab]
        spare = [k for k, i in enumerate(train) if in_train[labels[i]] > 1]
        v, t = mine[int(rng.integers(len(mine)))], spare[int(rng.integers(len(spare)))]
        in_train[labels[train[t]]] -= 1
        in_train[lab] += 1
        train[t], valid[v] = valid[v], train[t]
    return train, valid


def kept_value(value: object) -> str:
    """A kept column's value as the predictions CSV writes it: as the file spells it where it is
    text, else as its type prints (float32 as float32, dates as dates, JSON's true and nested
    values as JSON), bytes decoded, a missing value (None, NaN) empty.

    Example:
        >>> [kept_value(v) for v in ("a-17", 17, np.int64(3), np.float32(0.1), float("nan"), None, True)]
        ['a-17', '17', '3', '0.1', '', '', 'true']
        >>> import datetime, decimal
        >>> [kept_value(v) for v in (datetime.date(2024, 1, 2), decimal.Decimal("1.50"), b"01", {"k": 1})]
        ['2024-01-02', '1.50', '01', '{"k": 1}']
    """
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)  # numbers (NumPy's shortest spelling for its own precision), dates, decimals


def _as_text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


