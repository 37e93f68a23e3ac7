"""Readers for the table formats: csv / tsv and jsonl streamed line by line, npz and parquet whole.

Each reader is a context manager giving the column names and a `fetch(columns)` that yields one
`Row` per data row, so columns are checked by name before any row is judged. Messages name the
recipe field and the file, and tell the fix.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from .errors import EnsembleError

@dataclass(slots=True)
class Row:
    where: str  # "line 17" (text formats) or "row 17" (array formats), for messages
    values: list[object]  # one per requested column, None where the row lacks it
    problem: str | None = None  # a structural fault the reader found (too few fields, bad JSON)


# A reader is a context manager (it may hold the file open) giving the column names and a
# function yielding rows for the columns asked for, so that columns are checked by name before
# any row is judged.
_Fetch = Callable[[list[str]], Iterator[Row]]
_Reader = Callable[[Path, str, str], AbstractContextManager[tuple[list[str], _Fetch]]]



def check_not_empty(p: Path, shown: str, field: str) -> None:
    """Raise if the file holds nothing but a BOM and whitespace; reads only until the first content."""
    with open(p, "rb") as f:
        block = f.read(1 << 16)
        if block.startswith(codecs.BOM_UTF8):
            block = block[len(codecs.BOM_UTF8) :]
        while block:
            if block.strip():
                return
            block = f.read(1 << 16)
    raise EnsembleError(f"{field}: '{shown}' is empty; it needs a header line and at least one row")


@contextmanager
def _open_text(p: Path, shown: str, field: str) -> Iterator[Iterator[str]]:
    """The file's lines, decoded as UTF-8 with any BOM dropped (utf-8-sig), read as they are asked for.

    Lines end at LF, CRLF or a lone CR and keep their endings (newline=""), as the csv module needs.
    A non-UTF-8 byte raises a one-line error naming its line, when reading gets near it.
    """
    check_not_empty(p, shown, field)
    with open(p, encoding="utf-8-sig", newline="") as f:

        def lines() -> Iterator[str]:
            try:
                yield from f
            except UnicodeDecodeError:
                raise _not_utf8(p, shown, field) from None

        yield lines()


def _not_utf8(p: Path, shown: str, field: str) -> EnsembleError:
    """The error for the first non-UTF-8 byte of `p`, found again by a block-wise scan.

    The text reader decodes ahead in blocks, so its error does not say which line is bad;
    this scan runs only on that error path and keeps memory bounded by the block size.
    """
    how = "save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 in.csv > out.csv"
    with open(p, "rb") as f:
        offset = len(codecs.BOM_UTF8) if f.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8 else 0
        f.seek(offset)
        line, carry = 1, b""
        while True:
            block = f.read(1 << 20)
            data = carry + block
            try:
                _, used = codecs.utf_8_decode(data, "strict", not block)
            except UnicodeDecodeError as e:
                line += data.count(b"\n", 0, e.start)
                return EnsembleError(
                    f"{field}: line {line} of '{shown}' is not valid UTF-8 "
                    f"(byte {data[e.start]:#04x} at offset {offset + e.start}); {how}"
                )
            if not block:  # the file changed under us: say what we know
                return EnsembleError(f"{field}: '{shown}' is not valid UTF-8; {how}")
            line += data.count(b"\n", 0, used)
            offset += used
            carry = data[used:]


@contextmanager
def _read_delimited(p: Path, shown: str, field: str) -> Iterator[tuple[list[str], _Fetch]]:
    with _open_text(p, shown, field) as lines:
        header = next(lines, "")
        tabbed = p.suffix.lower() == ".tsv" or "\t" in header
        stream = chain([header], lines)
        # TSV fields are never quoted, so a quote character is literal text (CFIMDB has stray ones);
        # with normal quoting, one stray quote would swallow the following rows.
        if tabbed:
            reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(stream, strict=True)
        columns = [c.strip() for c in _next_record(reader, shown, field) or []]

        def fetch(names: list[str]) -> Iterator[Row]:
            idx = [columns.index(n) for n in names]
            while True:
                start = reader.line_num + 1  # a quoted record may span lines; report its first
                record = _next_record(reader, shown, field)
                if record is None:
                    return
                if len(record) <= 1 and not "".join(record).strip():
                    continue  # a blank line is not a row
                problem = None
                # Extra empty fields are harmless (trailing tabs); extra text means a shifted row.
                if len(record) < len(columns) or any(f.strip() for f in record[len(columns) :]):
                    problem = f"has {len(record)} fields but the header has {len(columns)}"
                yield Row(f"line {start}", [record[i] if i < len(record) else None for i in idx], problem)

        yield columns, fetch


def _next_record(reader: Iterator[list[str]], shown: str, field: str) -> list[str] | None:
    try:
        return next(reader, None)
    except csv.Error as e:
        line = getattr(reader, "line_num", "?")
        raise EnsembleError(
            f"{field}: line {line} of '{shown}' is not valid CSV ({e}); fix the quoting, or save it tab-separated"
        ) from None


@contextmanager
def _read_jsonl(p: Path, shown: str, field: str) -> Iterator[tuple[list[str], _Fetch]]:
    # The columns are the keys of the first JSON object: there is no pre-scan of the whole file.
    # Non-object lines before it are remembered (line numbers only) to be judged in order.
    with _open_text(p, shown, field) as lines:
        numbered = enumerate(lines, start=1)
        before: list[int] = []
        first: tuple[int, dict[str, object]] | None = None
        for number, line in numbered:
            obj = _parse_json_line(line)
            if isinstance(obj, dict):
                first = (number, obj)
                break
            if obj is not _BLANK:
                before.append(number)
        columns = list(first[1]) if first is not None else []

        def parsed() -> Iterator[tuple[int, object]]:
            yield from ((number, None) for number in before)
            if first is not None:
                yield first
            for number, line in numbered:
                obj = _parse_json_line(line)
                if obj is not _BLANK:
                    yield number, obj

        def fetch(names: list[str]) -> Iterator[Row]:
            for number, obj in parsed():
                if not isinstance(obj, dict):
                    yield Row(f"line {number}", [None] * len(names), "is not a JSON object")
                    continue
                absent = [n for n in names if n not in obj]
                problem = f"has no field '{absent[0]}'" if absent else None
                yield Row(f"line {number}", [obj.get(n) for n in names], problem)

        yield columns, fetch


_BLANK = object()  # a blank jsonl line: not a row


def _parse_json_line(line: str) -> object:
    """A JSON object with its keys stripped, `_BLANK` for a blank line, or anything else (a bad row)."""
    if not line.strip():
        return _BLANK
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        return {str(k).strip(): v for k, v in obj.items()}
    return obj


@contextmanager
def _read_npz(p: Path, shown: str, field: str) -> Iterator[tuple[list[str], _Fetch]]:
    how = "save it with np.savez(path, text=np.array(texts, dtype=str), label=np.array(labels))"
    try:
        archive = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise EnsembleError(f"{field}: '{shown}' is not a valid .npz archive ({e}); {how}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise EnsembleError(f"{field}: '{shown}' holds a single array, not named columns; {how}")
    arrays: dict[str, np.ndarray] = {}
    refused: set[str] = set()
    with archive:
        columns = list(archive.files)
        if not columns:
            raise EnsembleError(f"{field}: '{shown}' is empty; it needs one named array per column")
        for name in columns:
            try:
                arrays[name] = archive[name]
            except ValueError as e:
                if "pickle" not in str(e):
                    raise EnsembleError(f"{field}: array '{name}' in '{shown}' cannot be read ({e}); {how}") from None
                refused.add(name)  # refuse only if asked for: an unused object column does no harm

    def fetch(names: list[str]) -> Iterator[Row]:
        for name in names:
            if name in refused:
                # Unpickling can run arbitrary code, so object arrays are refused rather than loaded.
                raise EnsembleError(
                    f"{field}: array '{name}' in '{shown}' is an object array, which needs pickle and is refused; "
                    "save string arrays instead, e.g. np.array(texts, dtype=str)"
                )
            if arrays[name].ndim != 1:
                raise EnsembleError(
                    f"{field}: array '{name}' in '{shown}' has shape {arrays[name].shape}; "
                    "save a 1-D array, one value per row"
                )
        lengths = {name: len(arrays[name]) for name in names}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{k}={v}" for k, v in lengths.items())
            raise EnsembleError(f"{field}: arrays in '{shown}' have different lengths ({listed}); {how}")
        values = [arrays[name].tolist() for name in names]
        for i in range(lengths[names[0]]):
            yield Row(f"row {i + 1}", [v[i] for v in values])

    yield columns, fetch


@contextmanager
def _read_parquet(p: Path, shown: str, field: str) -> Iterator[tuple[list[str], _Fetch]]:
    try:
        import pyarrow.parquet as pq  # optional and heavy: imported only when a parquet file is read
    except ImportError:
        raise EnsembleError(
            f"{field}: reading '{shown}' needs pyarrow; pip install pyarrow (or ensemble[parquet]), "
            "or convert the file to .csv"
        ) from None
    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow has its own error types for corrupt files
        raise EnsembleError(
            f"{field}: '{shown}' is not a readable parquet file ({e}); re-save it or convert it to .csv"
        ) from None
    data = table.to_pydict()
    columns = [str(c).strip() for c in table.column_names]

    def fetch(names: list[str]) -> Iterator[Row]:
        cols = [data[table.column_names[columns.index(n)]] for n in names]
        for i in range(table.num_rows):
            yield Row(f"row {i + 1}", [c[i] for c in cols])

    yield columns, fetch


READERS: dict[str, _Reader] = {
    ".csv": _read_delimited,
    ".tsv": _read_delimited,
    ".jsonl": _read_jsonl,
    ".npz": _read_npz,
    ".parquet": _read_parquet,
}

