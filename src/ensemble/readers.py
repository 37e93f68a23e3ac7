"""Readers for the table formats: csv / tsv and jsonl streamed line by line, parquet in record batches, npz whole.

Each reader is a context manager giving the column names and a `fetch(columns, texts)` that
yields one `Row` per data row, so columns are checked by name before any row is judged. Messages name the
recipe field and the file, and tell the fix. Texts must be strings: a number where a text column
should be is refused (a whole npz or parquet column by its type, a jsonl value as a bad row), never
turned into text silently.
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
# any row is judged. `fetch(names, texts, required)`: the first `texts` of `names` are text
# columns, whose values must be strings (or missing); a jsonl object must have the first
# `required` keys (all when None), and gives None for the others it lacks (kept columns).
_Fetch = Callable[..., Iterator[Row]]
# Every reader takes the .tsv quoting as a keyword; the formats without quotes ignore it.
_Reader = Callable[..., AbstractContextManager[tuple[list[str], _Fetch]]]



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
    needs = "one JSON object per row" if p.suffix.lower() == ".jsonl" else "a header line and at least one row"
    raise EnsembleError(f"{field}: '{shown}' is empty; it needs {needs}")


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
        start = f.read(2)
        if start in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):  # Excel's "Unicode text": latin1 would garble it
            return EnsembleError(
                f"{field}: '{shown}' is UTF-16 (it starts with the byte-order mark {start.hex(' ')}); save it as "
                "UTF-8, e.g. iconv -f utf-16 -t utf-8 in.tsv > out.tsv"
            )
        f.seek(0)
        offset = len(codecs.BOM_UTF8) if f.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8 else 0
        f.seek(offset)
        line, carry = 1, b""
        while True:
            block = f.read(1 << 20)
            data = carry + block
            try:
                _, used = codecs.utf_8_decode(data, "strict", not block)
            except UnicodeDecodeError as e:
                line += _line_ends(data, e.start)
                return EnsembleError(
                    f"{field}: line {line} of '{shown}' is not valid UTF-8 "
                    f"(byte {data[e.start]:#04x} at offset {offset + e.start}); {how}"
                )
            if not block:  # the file changed under us: say what we know
                return EnsembleError(f"{field}: '{shown}' is not valid UTF-8; {how}")
            if data[:used].endswith(b"\r"):  # its LF may start the next block: count the pair there, once
                used -= 1
            line += _line_ends(data, used)
            offset += used
            carry = data[used:]


def _line_ends(data: bytes, end: int) -> int:
    """Line ends in ``data[:end]`` as the text reader counts them: LF, CRLF and a lone CR."""
    return data.count(b"\n", 0, end) + data.count(b"\r", 0, end) - data.count(b"\r\n", 0, end)


@contextmanager
def _read_delimited(p: Path, shown: str, field: str, quoting: str = "none") -> Iterator[tuple[list[str], _Fetch]]:
    limit = csv.field_size_limit(2**31 - 1)  # the default, 131,072 characters, refused one long document
    try:
        with _open_text(p, shown, field) as lines:
            yield from _delimited(lines, p, shown, field, quoting)
    finally:
        csv.field_size_limit(limit)  # the process's csv module as it was


def _delimited(lines: Iterator[str], p: Path, shown: str, field: str,
               quoting: str) -> Iterator[tuple[list[str], _Fetch]]:
    """`_read_delimited`'s work on the file's `lines`: its columns and the rows' fetcher."""
    header, blank = next(lines, ""), 0
    while header and not header.strip():  # blank lines above the header, as pandas skips them
        header, blank = next(lines, ""), blank + 1
    tabbed = p.suffix.lower() == ".tsv" or "\t" in header
    stream = chain([header], lines)
    # By default TSV fields are not quoted, so a quote character is literal text (GLUE's files
    # have stray ones: with normal quoting, one would swallow the following rows); quoting =
    # "csv" reads files written with CSV quoting, as pandas' to_csv(sep="\t") writes them.
    if tabbed and quoting == "csv":
        reader = csv.reader(stream, delimiter="\t", strict=True)
    elif tabbed:
        reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(stream, strict=True)
    columns = [c.strip() for c in _next_record(reader, shown, field, tabbed, quoting, blank) or []]

    def fetch(names: list[str], texts: int, required: int | None = None) -> Iterator[Row]:  # values are strings
        idx = [columns.index(n) for n in names]
        while True:
            start = blank + reader.line_num + 1  # a quoted record may span lines; report its first
            record = _next_record(reader, shown, field, tabbed, quoting, blank)
            if record is None:
                return
            # A blank line (or one of spaces) is not a row; in a one-column file a quoted "" is
            # an empty text, as csv.writer writes one: refused or counted, not lost without a word.
            if not record or (len(record) == 1 and not record[0].strip() and (record[0] or len(columns) > 1)):
                continue
            problem = None
            # Extra empty fields are harmless (trailing tabs); extra text means a shifted row.
            if len(record) < len(columns) or any(f.strip() for f in record[len(columns) :]):
                problem = f"has {len(record)} fields but the header has {len(columns)}"
                if tabbed and quoting == "none" and any(f.startswith('"') and not f.endswith('"') for f in record):
                    # pandas' to_csv(sep="\t") quotes fields holding a newline or a tab; read
                    # quote-free, such a field is split over rows (and "skip" would keep its tail)
                    problem += (" (a field opens a quote it does not close: tab-separated files are read "
                                "without CSV quoting unless quoting = \"csv\", so a quoted field spanning "
                                "lines or holding a tab breaks rows)")
            yield Row(f"line {start}", [record[i] if i < len(record) else None for i in idx], problem)

    yield columns, fetch


def _next_record(reader: Iterator[list[str]], shown: str, field: str, tabbed: bool = False, quoting: str = "none",
                 blank: int = 0) -> list[str] | None:
    """The next record of `reader`, or None at the end; a csv error as one line naming the line
    (`blank`: the blank lines above the header, which the reader did not see)."""
    try:
        return next(reader, None)
    except csv.Error as e:
        line = blank + getattr(reader, "line_num", 0)
        # A tab-separated file is only read with CSV quoting when asked to: reading it as plain text is the fix.
        setting = "--quoting none" if field.startswith("--") else 'data.quoting = "none"'
        fix = (f"read it without CSV quoting ({setting}; quotes are then text), or fix its quoting" if tabbed
               else "fix the quoting, or save it tab-separated")
        kind = "CSV-quoted TSV" if tabbed and quoting == "csv" else "TSV" if tabbed else "CSV"
        raise EnsembleError(f"{field}: line {line} of '{shown}' is not valid {kind} ({e}); {fix}") from None


@contextmanager
def _read_jsonl(p: Path, shown: str, field: str, quoting: str = "none") -> Iterator[tuple[list[str], _Fetch]]:
    # The columns are the keys of the first JSON object: there is no pre-scan of the whole file.
    # Non-object lines before it are remembered (line numbers and problems, equal ones shared) to be
    # judged in order.
    with _open_text(p, shown, field) as lines:
        numbered = enumerate(lines, start=1)
        before: list[int] = []
        before_problems: list[str] = []
        shared: dict[str, str] = {}
        first: tuple[int, dict[str, object]] | None = None
        for number, line in numbered:
            obj = _parse_json_line(line)
            if isinstance(obj, dict):
                first = (number, obj)
                break
            if obj is not _BLANK:
                before.append(number)
                problem = obj.problem if isinstance(obj, _Bad) else _not_object(obj)
                before_problems.append(shared.setdefault(problem, problem))
        if first is None and before:
            # No line is an object (a JSON array saved as .jsonl, a list of strings): there are no
            # columns to look for, so say what the first line is instead of "columns found: (none)".
            number = before[0]
            raise EnsembleError(f"{field}: line {number} of '{shown}' {before_problems[0]}")
        columns = list(first[1]) if first is not None else []

        def parsed() -> Iterator[tuple[int, object]]:
            yield from zip(before, (_Bad(problem) for problem in before_problems))
            if first is not None:
                yield first
            for number, line in numbered:
                obj = _parse_json_line(line)
                if obj is not _BLANK:
                    yield number, obj

        def fetch(names: list[str], texts: int, required: int | None = None) -> Iterator[Row]:
            needed = names if required is None else names[:required]
            for number, obj in parsed():
                if not isinstance(obj, dict):
                    problem = obj.problem if isinstance(obj, _Bad) else _not_object(obj)
                    yield Row(f"line {number}", [None] * len(names), problem)
                    continue
                values = [obj.get(n) for n in names]
                absent = [n for n in needed if n not in obj]
                problem = f"has no field '{absent[0]}'" if absent else None
                if problem is None:
                    problem = next(filter(None, (_not_text(n, v) for n, v in zip(names[:texts], values))), None)
                yield Row(f"line {number}", values, problem)

        yield columns, fetch


_BLANK = object()  # a blank jsonl line: not a row
_ONE_OBJECT = ".jsonl needs one {...} object per line"


@dataclass(slots=True)
class _Bad:
    """A jsonl line that is not JSON at all, with what is wrong with it."""

    problem: str


def _parse_json_line(line: str) -> object:
    """A JSON object with its keys stripped, `_BLANK` for a blank line, `_Bad` for invalid JSON, or
    any other JSON value (a bad row: see `_not_object`)."""
    if not line.strip():
        return _BLANK
    last: list = []  # the pairs of the object built last: the line's own (inner objects come first)

    def kept(pairs: list[tuple[str, object]]) -> dict[str, object]:
        last[:] = [pairs]
        return dict(pairs)

    try:  # without the line end, a column past the text is the end
        obj = json.loads(line.rstrip("\r\n"), object_pairs_hook=kept)
    except json.JSONDecodeError as e:
        hint = _ONE_OBJECT
        if line.lstrip().startswith("["):
            hint += "; the file looks like one JSON array: write its items one per line, e.g. jq -c '.[]' in.json"
        return _Bad(f"is not valid JSON ({e.msg} at column {e.colno}); {hint}")
    except RecursionError:  # deeply nested brackets
        return _Bad(f"is not valid JSON (nested too deeply); {_ONE_OBJECT}")
    if not isinstance(obj, dict):
        return obj
    columns: dict[str, object] = {}
    for key, value in last[0]:
        key = str(key).strip()
        if key in columns:  # plain json.loads keeps the last value silently
            return _Bad(f"has the key '{key}' twice (keys are compared without surrounding spaces); "
                        "give each column once")
        columns[key] = value
    return columns


def _json_kind(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _not_object(value: object) -> str:
    """The problem of a jsonl line holding valid JSON that is not an object."""
    return f"is not a JSON object (got {_json_kind(value)}); {_ONE_OBJECT}"


def _not_text(name: str, value: object) -> str | None:
    """The problem of a text value that is not a string (a missing value is judged as an empty text)."""
    if value is None or isinstance(value, str):
        return None
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"has a non-string text in column '{name}' (got {type(value).__name__} {shown}); texts must be strings"


@contextmanager
def _read_npz(p: Path, shown: str, field: str, quoting: str = "none") -> Iterator[tuple[list[str], _Fetch]]:
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

    def fetch(names: list[str], texts: int, required: int | None = None) -> Iterator[Row]:
        for number, name in enumerate(names):
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
            kind = arrays[name].dtype
            if number < texts and kind.kind != "U":
                holds = "bytes" if kind.kind == "S" else kind.name
                raise EnsembleError(
                    f"{field}: text column '{name}' in '{shown}' holds {holds} values; texts must be strings: "
                    "save them with np.array(texts, dtype=str)"
                )
        lengths = {name: len(arrays[name]) for name in names}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{k}={v}" for k, v in lengths.items())
            raise EnsembleError(f"{field}: arrays in '{shown}' have different lengths ({listed}); {how}")
        values = [_values(arrays[name]) for name in names]
        for i in range(lengths[names[0]]):
            yield Row(f"row {i + 1}", [v[i] for v in values])

    yield columns, fetch


PARQUET_BATCH_ROWS = 8192  # rows per record batch read from a parquet file


@contextmanager
def _read_parquet(p: Path, shown: str, field: str, quoting: str = "none") -> Iterator[tuple[list[str], _Fetch]]:
    try:
        import pyarrow.parquet as pq  # optional and heavy: imported only when a parquet file is read
    except ImportError:
        raise EnsembleError(
            f"{field}: reading '{shown}' needs pyarrow; pip install pyarrow (or ensemble[parquet]), "
            "or convert the file to .csv"
        ) from None
    try:
        parquet = pq.ParquetFile(p)
        schema = parquet.schema_arrow
    except Exception as e:  # pyarrow has its own error types for corrupt files
        raise EnsembleError(
            f"{field}: '{shown}' is not a readable parquet file ({e}); re-save it or convert it to .csv"
        ) from None
    columns = [str(c).strip() for c in schema.names]

    def fetch(names: list[str], texts: int, required: int | None = None) -> Iterator[Row]:
        for name in names[:texts]:
            kind = schema.field(columns.index(name)).type
            if not _is_text_type(kind):
                raise EnsembleError(
                    f"{field}: text column '{name}' in '{shown}' holds {kind} values; texts must be strings: "
                    "convert the column to string before saving"
                )
        # each column read once (a kept copy of the text asks for it twice; pyarrow would drop the repeat)
        unique = list(dict.fromkeys(names))
        wanted = [schema.names[columns.index(n)] for n in unique]
        at = [unique.index(n) for n in names]
        row = 0
        # record batches of the wanted columns only: memory is bounded by a batch, not the file
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
            read = [_arrow_values(batch.column(k)) for k in range(len(wanted))]
            cols = [read[k] for k in at]
            for values in zip(*cols):
                row += 1
                yield Row(f"row {row}", list(values))

    yield columns, fetch


def _values(array: np.ndarray) -> list:
    """A column's values as Python objects, but float32 / float16 as NumPy scalars: as Python
    floats 0.1f would be 0.10000000149011612, a label no CSV file spells (see `normalize_label`);
    dates and durations as NumPy spells them (``tolist`` gives nanosecond ones as bare integers)."""
    if array.dtype.kind == "M":  # to the unit each value needs: 2024-01-02, not 2024-01-02T00:00:00.000000000
        return [None if np.isnat(v) else str(np.datetime_as_string(v, unit="auto")) for v in array]
    if array.dtype.kind == "m":
        return [None if np.isnat(v) else str(v) for v in array]
    return list(array) if array.dtype.kind == "f" and array.dtype.itemsize < 8 else array.tolist()


def _arrow_values(column) -> list:
    """`_values` for a pyarrow column (nulls of a narrow float column become NaN: missing labels)."""
    import pyarrow as pa

    if pa.types.is_float32(column.type) or pa.types.is_float16(column.type):
        return list(column.to_numpy(zero_copy_only=False))
    return column.to_pylist()


def _is_text_type(kind: object) -> bool:
    """Whether a pyarrow column type gives Python strings (or only nulls, judged as empty texts)."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):  # pandas categoricals
        kind = kind.value_type
    return bool(
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
        or getattr(pa.types, "is_string_view", lambda _: False)(kind)
    )


READERS: dict[str, _Reader] = {
    ".csv": _read_delimited,
    ".tsv": _read_delimited,
    ".jsonl": _read_jsonl,
    ".npz": _read_npz,
    ".parquet": _read_parquet,
}

