"""Scoring an ensemble on a split (the report) and predicting files of any size (resumable).

`evaluate` votes on one split and writes predictions.csv and the report, with the sections a
person needs to trust the numbers: calibration before/after, what the vote learned and on which
rows, the accuracy-coverage curve, the members' training curves, and what the data lost (skipped
rows, truncated texts). `predict_file` streams a file through the ensemble in chunks and can pick
an interrupted run up where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import combine
from .data import ID_SAMPLE, TextDataset, id_warning, iter_table, load_table, quoting_warning, seen_in
from .ensemble import Ensemble
from .errors import DISK_FIX, EnsembleError, disk_problem, machine_problem
from .files import exclusive_lock, write_json
from .labels import counted, normalize_label
from .members import saved_metrics
from .report import append_predictions, build_report, prediction_columns, write_predictions, write_report
from .settings import ABSTAIN


def gold(ens: Ensemble, ds: TextDataset, split: str, offset: int = 0) -> np.ndarray | None:
    """Gold labels as indices into `ens.labels`; an error names a label the members do not know
    and its first data row (counted from 1; `ds` starts at data row `offset` + 1 of its file)."""
    if ds.labels is None:
        return None
    # A member's names as files spell them now: members trained when "True" and "+1" stayed as
    # written know those names, while a file's labels are read as "true" and "1" today.
    index = {normalize_label(label): i for i, label in enumerate(ens.labels)}
    index.update({label: i for i, label in enumerate(ens.labels)})
    known = set(index)
    unknown = Counter(label for label in ds.labels if label not in known)
    if unknown:
        first = next(i for i, label in enumerate(ds.labels) if label not in known)
        where = f" of '{ds.path}'" if ds.path else ""
        listed = counted(unknown, 5)
        flag = "--label \"\"" if split.startswith("--") else "no gold labels"
        raise EnsembleError(f"{split}: label{'s' if len(unknown) > 1 else ''} {listed} "
                            f"{'are' if len(unknown) > 1 else 'is'} not among the labels the members know "
                            f"({', '.join(ens.labels)}), first at data row {first + offset + 1}{where}; map the file's "
                            f"labels to those names, or predict without gold labels ({flag})")
    return np.array([index[y] for y in ds.labels])


def evaluate(ens: Ensemble, ds: TextDataset, split: str, out: Path, *, fitted: dict | None = None,
             data_info: dict | None = None, logits: np.ndarray | None = None,
             truncated: dict[str, int] | None = None, caveat: str | None = None, progress: bool = False) -> dict:
    """Vote on `ds`, write predictions.csv and the report into `out`; return the report dict.

    `fitted` is what `Ensemble.fit_vote` returned (it becomes the report's ``combining``);
    `data_info` adds to the report's ``data`` section (skipped rows, members that failed);
    `caveat` is a warning about the scores that opens the report; `progress` shows a bar while the
    members run.
    `logits` and `truncated` are `ds`'s member logits and truncation counts when the caller has
    them already (the vote was fitted on this very split): they are not computed again.

    Example:
        >>> report = evaluate(Ensemble.load("runs/demo"), load_table("test.csv"), "test", Path("out"))  # doctest: +SKIP
        >>> report["ensemble"]["accuracy"], report["calibration"]["ensemble"]["nll_after"]  # doctest: +SKIP
        (0.968, 0.11)
    """
    # a kept column named like one of the predictions' own: refused before the members run
    prediction_columns(list(ens.members), pairs=ds.pairs is not None, gold=ds.labels is not None, kept=list(ds.kept or {}),
                       abstaining=ens.abstain_below is not None)
    if logits is None:
        truncated = {}
        logits = ens.member_logits(ds.texts, ds.pairs, truncated, progress=split if progress else None)
    vote = ens.vote_logits(logits)
    y = gold(ens, ds, split)
    names = list(ens.members)
    report = build_report(names=names, labels=ens.labels, vote=vote, method=ens.method, weights=ens.weights,
                          y_true=y, texts=ds.texts, pairs=ds.pairs, split=split)
    abstain = ens.abstained(vote)
    if abstain is not None:  # as predictions.csv says them
        for item in report["disputed"]:
            item["abstained"] = bool(abstain[item["row"]])
    if y is not None:
        _probability_scores(report, ens, logits, vote, y)
    if y is not None or abstain is not None:  # without gold: what was abstained, no accuracy
        report["abstention"] = _abstention(ens, vote, y, abstain)
        if fitted is not None and "abstention" in fitted:  # the threshold was chosen on validation
            report["abstention"]["chosen"] = fitted["abstention"]
    if fitted is not None:
        report["combining"] = dict(fitted)
        if split == fitted.get("fitted_on"):
            warning = (f"these scores are measured on the '{split}' split, the rows the vote was fitted on (and "
                       "each member's best epoch chosen on), so they are optimistic; give the recipe a test file")
            report["combining"]["warning"] = warning
            report = _after_split(report, "warning", warning)  # top level, so every reader sees it first
    if caveat:  # the caller's (e.g. `vote` scoring the members' own training rows)
        report = _after_split(report, "warning", f"{report['warning']}; {caveat}" if report.get("warning") else caveat)
    report["training"] = _histories(ens)
    report["data"] = _data_section(ens, data_info or {}, truncated or {})
    write_predictions(out / "predictions.csv", names=names, labels=ens.labels, vote=vote, texts=ds.texts,
                      pairs=ds.pairs, y_true=y, abstain=abstain, kept=ds.kept)
    write_report(out, report)
    return report


def _probability_scores(report: dict, ens: Ensemble, logits: np.ndarray, vote, y: np.ndarray) -> None:
    """NLL and ECE of each member and of the ensemble, and soft voting before/after calibration."""
    names = list(ens.members)
    temps = np.array([ens.temperatures[n] for n in names])
    raw, calibrated = combine.softmax(logits), combine.softmax(logits, temps)
    members = {}
    for k, name in enumerate(names):
        after = {"nll": combine.nll(calibrated[k], y), "ece": combine.ece(calibrated[k], y)}
        report["members"][name].update(after)
        members[name] = {"nll_before": combine.nll(raw[k], y), "ece_before": combine.ece(raw[k], y),
                         "nll_after": after["nll"], "ece_after": after["ece"]}
    if ens.method != "hard":  # hard-vote scores are vote shares, not probabilities
        report["ensemble"].update(nll=combine.nll(vote.scores, y), ece=combine.ece(vote.scores, y))
    if all(t == 1.0 for t in temps) and ens.ensemble_temperature == 1.0:
        return  # never calibrated (e.g. `ensemble vote` without --valid): no before/after to show
    # Calibration is judged on the plain soft vote (the members' weights as used): the one place
    # where temperatures alone change the ensemble's probabilities.
    weights = np.array([ens.weights[n] for n in names], dtype=np.float64)
    weights = weights / weights.sum()
    before = np.einsum("m,mnc->nc", weights, raw)
    after = np.einsum("m,mnc->nc", weights, calibrated)
    if ens.ensemble_temperature != 1.0:
        after = combine.soften(after, ens.ensemble_temperature)
    report["calibration"] = {
        "fitted_on": "valid", "temperatures": dict(ens.temperatures),
        "ensemble_temperature": ens.ensemble_temperature, "members": members,
        "ensemble": {"nll_before": combine.nll(before, y), "ece_before": combine.ece(before, y),
                     "nll_after": combine.nll(after, y), "ece_after": combine.ece(after, y)},
    }


def _abstention(ens: Ensemble, vote, y: np.ndarray | None, abstain: np.ndarray | None) -> dict:
    """The accuracy-coverage curve on `abstain_on`, and the outcome at the chosen threshold.

    ``accuracy_answered`` is None when no row was answered; without gold labels (`y` None) it and
    the curve are absent: only how many rows were abstained.
    """
    values = vote.confidence if ens.abstain_on == "confidence" else vote.agreement
    answered = ~abstain if abstain is not None else np.ones(len(vote.labels), dtype=bool)
    section = {"on": ens.abstain_on, "threshold": ens.abstain_below, "abstained": int((~answered).sum()),
               "coverage": float(answered.mean())}
    if y is not None:
        correct = vote.labels == y
        section["accuracy_answered"] = float(correct[answered].mean()) if answered.any() else None
        # no point on a handful of rows (an accuracy of 1.0 on the single most confident row, say),
        # and the chosen threshold among the points
        section["curve"] = combine.coverage_curve(values, correct, min_answered=min(30, max(1, len(correct) // 10)),
                                                  also=[] if ens.abstain_below is None else [ens.abstain_below])
    return section


def _after_split(report: dict, key: str, value) -> dict:
    """`report` with `key` placed right after ``split`` (report.json is read top down)."""
    items = [(k, v) for k, v in report.items() if k != key]
    at = next((i + 1 for i, (k, _) in enumerate(items) if k == "split"), 0)
    return dict(items[:at] + [(key, value)] + items[at:])


def _histories(ens: Ensemble) -> dict:
    """Each member's per-epoch history from its metrics.json (members from elsewhere have none)."""
    histories = {}
    for name, member in ens.members.items():
        metrics = saved_metrics(member.path)
        history = metrics.get("history")
        if not isinstance(history, list):
            continue
        keep = ("epoch", "train_loss", "valid_loss", "accuracy", "macro_f1", "lr", "seconds", "samples_per_s")
        best = metrics.get("best_epoch")
        # "kept": the epoch whose weights the member holds (its best by best_metric), the one that votes
        histories[name] = [{**{k: row[k] for k in keep if k in row}, **({"kept": True} if row.get("epoch") == best else {})}
                           for row in history if isinstance(row, dict)]
    return histories


def _data_section(ens: Ensemble, data_info: dict, truncated: dict[str, int]) -> dict:
    """Rows skipped as bad, and per member the rows cut to its max_length in train, valid and "eval".

    "eval" is the split this report is about (the report's ``split``; the pages show that name).
    """
    counts = {}
    for name, member in ens.members.items():
        entry = {}
        saved = saved_metrics(member.path).get("truncated")
        try:
            entry.update({k: int(v) for k, v in saved.items() if k in ("train", "valid")})
        except (TypeError, ValueError, AttributeError):
            pass
        entry["eval"] = truncated.get(name, 0)  # the split this report is about
        counts[name] = entry
    return {**data_info, "truncated": counts, "max_length": {n: m.max_length for n, m in ens.members.items()}}


# --------------------------------------------------------------------------- files of any size


def predict_file(ens: Ensemble, data: str | Path, out: str | Path, *, text: str = "text", text_pair: str | None = None,
                 label: str | None = "label", chunk_rows: int = 10_000, progress: bool = True,
                 resume: bool = False, overwrite: bool = False, require_label: bool = False, quoting: str = "none",
                 keep: Sequence[str] = (), on_bad_rows: str = "error") -> int:
    """Stream `data` through the ensemble into the CSV `out`, `chunk_rows` rows at a time.

    Memory is bounded by the chunk, not the file. The columns are those of predictions.csv
    (the gold label only when the file has one), after the `keep` columns of `data` (an id to
    join on). A bad row (an empty text or gold label) stops the run before any prediction, or
    with ``on_bad_rows="skip"`` is left out and counted (its line is said). Rows go to a hidden ``.<out>.partial`` file,
    renamed to `out` at the end, so `out` never holds a partial result; an existing `out` is
    replaced only with `overwrite`, and never when it is `data` itself. After each chunk the
    partial file is synced and its progress recorded; with `resume`, an interrupted run (killed,
    Ctrl-C, a full disk) continues after its last finished chunk instead of starting again.
    With `require_label` the `label` column must exist (else it is copied through when present).
    Returns the number of rows written.

    Example:
        >>> predict_file(Ensemble.load("runs/demo"), "big.csv", "big-predictions.csv")  # doctest: +SKIP
        1000000
    """
    out, data = Path(out), Path(data)
    check_predictions_out(out, data, overwrite)
    check_csv_name(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # two runs on one --out would write into each other's partial file
    lock_file = out.with_name(f".{out.name}.lock")
    try:
        lock = exclusive_lock(lock_file, os.O_RDWR | os.O_CREAT, f"--out: '{out}' is being written by another "
                              "'ensemble predict'; wait for it to end, or choose another --out")
    except OSError as exc:
        if machine_problem(exc) is not None:
            raise
        raise EnsembleError(f"--out: cannot create files in '{out.parent}' ({exc.strerror}); choose an --out in a "
                            "directory you can write to") from None
    try:
        return _predict_file(ens, data, out, text=text, text_pair=text_pair, label=label, chunk_rows=chunk_rows,
                             progress=progress, resume=resume, require_label=require_label, quoting=quoting,
                             keep=tuple(keep), on_bad_rows=on_bad_rows)
    finally:
        lock_file.unlink(missing_ok=True)
        os.close(lock)


def _predict_file(ens: Ensemble, data: Path, out: Path, *, text: str, text_pair: str | None, label: str | None,
                  chunk_rows: int, progress: bool, resume: bool, require_label: bool, quoting: str,
                  keep: tuple[str, ...], on_bad_rows: str) -> int:
    """`predict_file`'s work, under its lock on `out`."""
    partial = out.with_name(f".{out.name}.partial")
    state_file = out.with_name(f".{out.name}.partial.json")
    identity = _identity(ens, data, text, text_pair, label, chunk_rows, quoting, keep, on_bad_rows)
    done_rows, done_bytes = 0, 0
    if resume:
        state = _read_state(state_file)
        if state is not None and isinstance(state.get("identity"), dict):
            state["identity"] = {**_OLDER_IDENTITY, **state["identity"]}
        if state is not None and state.get("identity") != identity:
            raise EnsembleError(f"--resume: '{partial}' was written with {_changes(state.get('identity'), identity)}; "
                                "run again with the same settings, or without --resume to start over")
        if state is not None and partial.is_file() and partial.stat().st_size >= state["bytes"]:
            done_rows, done_bytes = int(state["rows"]), int(state["bytes"])
        else:
            print(f"--resume: no finished chunk of '{out}' to continue from; predicting from the start", file=sys.stderr)
    names, rows = list(ens.members), done_rows
    truncated: dict[str, int] = {}  # rows cut to each member's max_length, in this run
    reading = dict(chunk_rows=chunk_rows, text=text, text_pair=text_pair, label=label, field="--data",
                   require_label=require_label, quoting=quoting, keep=keep, on_bad_rows=on_bad_rows)
    # Every row is read and checked before the first is predicted: a bad row at line 900,000 must
    # fail in seconds (reading costs ~4 s per million CSV rows), not after an hour of predicting.
    total, bad, columns = _checked_rows(ens, data, reading, progress)
    written = _header_of(partial) if done_bytes else columns
    if written != columns:  # written by a version that wrote other columns
        raise EnsembleError(f"--resume: '{partial}' has other columns than this version writes "
                            f"({', '.join(written or ['none'])}); run without --resume to start over")
    chunks = iter_table(data, **reading)
    first = next(chunks, None)
    bar = tqdm(desc="predict", unit="rows", initial=done_rows, total=total, disable=not progress,
               mininterval=0.5 if sys.stderr.isatty() else 30)
    if done_rows:
        bar.write(f"resuming after row {done_rows} of '{data}'")
    try:
        with open(partial, "r+b" if done_bytes else "wb") as raw:
            raw.truncate(done_bytes)  # drop whatever the interrupted chunk left after the last good one
            raw.seek(done_bytes)
            skipped = 0
            for chunk in itertools.chain([first] if first is not None else [], chunks):
                if skipped < done_rows:  # finished before the interruption: read, not predicted
                    skipped += len(chunk)
                    continue
                cut: dict[str, int] = {}
                vote = ens.vote_logits(ens.member_logits(chunk.texts, chunk.pairs, cut))
                for name, n in cut.items():
                    truncated[name] = truncated.get(name, 0) + n
                handle = _TextSink()
                append_predictions(handle, names=names, labels=ens.labels, vote=vote, texts=chunk.texts,
                                   pairs=chunk.pairs, y_true=gold(ens, chunk, "--data", offset=rows), header=rows == 0,
                                   abstain=ens.abstained(vote), kept=chunk.kept)
                raw.write(handle.getvalue())
                raw.flush()
                os.fsync(raw.fileno())
                rows += len(chunk)
                write_json(state_file, {"identity": identity, "rows": rows, "bytes": raw.tell()})
                bar.update(len(chunk))
        os.replace(partial, out)
        state_file.unlink(missing_ok=True)
    except EnsembleError:
        # a problem with the file or the options: what was written cannot be resumed once the file or
        # the options change, so nothing is kept (an interruption or a full disk keeps it for --resume)
        partial.unlink(missing_ok=True)
        state_file.unlink(missing_ok=True)
        raise
    except OSError as exc:
        problem = disk_problem(exc)
        if problem is None:
            raise
        if rows == 0:
            partial.unlink(missing_ok=True)
            raise EnsembleError(f"{problem} while writing '{partial}', before any row was finished; nothing was "
                                f"kept: {DISK_FIX.get(exc.errno, 'fix that and rerun')}") from None
        raise EnsembleError(f"{problem} while writing '{partial}' after {rows} finished rows, which are kept there; "
                            f"'{out}' was not written: {DISK_FIX.get(exc.errno, 'fix that')} and rerun with --resume "
                            f"to continue (or delete '{partial}')") from None
    except BaseException:  # an interruption: keep the finished chunks for --resume, if there are any
        if rows == 0:
            partial.unlink(missing_ok=True)
            state_file.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    if bad:
        print(f"note: {bad:,} bad row{'s' if bad != 1 else ''} of '{data}' skipped (--on-bad-rows skip): not in "
              f"'{out}'" + ("" if keep else "; --keep-columns ID copies an id column to join on"), file=sys.stderr)
    if any(truncated.values()):  # fit and vote report these; a file predicted should say so too
        listed = ", ".join(f"{n} for '{name}' (max_length {ens.members[name].max_length})"
                           for name, n in truncated.items() if n)
        print(f"note: rows longer than a member's max_length were cut to fit: {listed}"
              + (" (in this run, after the resumed rows)" if done_rows else ""), file=sys.stderr)
    return rows


def _header_of(partial: Path) -> list[str] | None:
    """The column names on the first line of a partial predictions file, or None."""
    try:
        with open(partial, encoding="utf-8", newline="") as handle:
            return next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _checked_rows(ens: Ensemble, data: Path, reading: dict, progress: bool) -> tuple[int, int, list[str]]:
    """Read all of `data` as `predict_file` will, checking every row and gold label: the rows to
    predict, the bad rows skipped, and the columns the predictions will have."""
    rows, bad, columns = 0, 0, []
    sample: list[str] = []  # the first texts (and pairs), for the warnings vote gives on its whole file
    pairs: list[str] = []
    with tqdm(desc="checking rows", unit="rows", disable=not progress, leave=False, delay=1,
              mininterval=0.5 if sys.stderr.isatty() else 30) as bar:
        for chunk in iter_table(data, **reading):
            if rows == 0:  # the columns, known from the first chunk (whether it has gold labels)
                columns = prediction_columns(list(ens.members), pairs=chunk.pairs is not None, gold=chunk.labels is not None,
                                   kept=reading["keep"], field="--keep-columns", abstaining=ens.abstain_below is not None)
            gold(ens, chunk, "--data", offset=rows)
            if chunk.pairs is not None:
                pairs += chunk.pairs[:ID_SAMPLE - len(sample)]
            sample += chunk.texts[:ID_SAMPLE - len(sample)]
            rows += len(chunk)
            bad += chunk.skipped
            bar.update(len(chunk))
    first = TextDataset(sample, pairs if reading["text_pair"] is not None else None, None, str(data))
    for warning in (quoting_warning(first, reading["quoting"], "--quoting"),
                    id_warning(first, reading["text"], "--text", total=rows)):
        if warning is not None:
            print(warning, file=sys.stderr)
    return rows, bad, columns


class _TextSink:
    """A text handle for csv.writer that collects UTF-8 bytes (the partial file is binary to seek by byte)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def getvalue(self) -> bytes:
        return "".join(self.parts).encode("utf-8")


def check_predictions_out(out: Path, data: Path, overwrite: bool) -> None:
    """Refuse a predictions file path that is a directory, the data file itself, or an existing
    file without `overwrite` (`predict_file` checks; the CLI too, before loading the members)."""
    if out.is_dir():
        raise EnsembleError(f"--out: '{out}' is a directory; give the path of the CSV file to write")
    if out.is_symlink() or (out.exists() and not out.is_file()):
        # the output is renamed into place: over /dev/null or a link it would replace the device or the link
        kind = "a link" if out.is_symlink() else "not a regular file (a device or a pipe)"
        raise EnsembleError(f"--out: '{out}' is {kind}; give the path of a CSV file to write (predictions are "
                            "written whole and renamed into place)")
    if data.exists() and out.exists() and out.resolve() == data.resolve():
        raise EnsembleError(f"--out: '{out}' is the --data file; write the predictions to another file")
    if out.exists() and not overwrite:
        raise EnsembleError(f"--out: '{out}' already exists; choose another file or pass --overwrite")


def check_csv_name(out: Path) -> None:
    """Refuse a predictions path whose extension says another format: they are written as CSV."""
    if out.suffix.lower() not in (".csv", ""):
        raise EnsembleError(f"--out: '{out}' ends in {out.suffix}, and predictions are written as CSV; name it "
                            f"'{out.with_suffix('.csv').name}'")


def seen_in_training(ens: Ensemble, ds: TextDataset, quoting: str = "none") -> tuple[int, list[str]]:
    """How many rows of `ds` have the same text as a row of some member's training file (as its
    recipe.json records it; files no longer there are passed over), and those members' names.

    Example:
        >>> seen_in_training(Ensemble.load("runs/demo"), load_table("recipes/demo/test.csv"))  # doctest: +SKIP
        (4, ['albert', 'bert', 'electra', 'roberta'])
    """
    seen, names, read = 0, [], {}
    for name, train in ens.training_files().items():
        key = str(train.resolve())
        if key not in read:
            try:
                rows = load_table(train, label=None, field="training file", on_bad_rows="skip", quoting=quoting,
                                  **_columns_of(ens, ds))
            except (EnsembleError, OSError):
                rows = None  # moved, or read with other columns: nothing to compare with
            read[key] = 0 if rows is None else seen_in(ds, rows)
        if read[key]:
            seen, names = max(seen, read[key]), names + [name]
    return seen, names


def _columns_of(ens: Ensemble, ds: TextDataset) -> dict:
    """The text columns the members were trained with (their recipe's), for reading their training files."""
    columns = ens.data_columns()
    return {"text": columns.get("text", "text"), "text_pair": columns.get("text_pair") if ds.pairs is not None else None}


def _identity(ens: Ensemble, data: Path, text: str, text_pair: str | None, label: str | None,
              chunk_rows: int, quoting: str, keep: tuple[str, ...] = (), on_bad_rows: str = "error") -> dict:
    """What a partial output depends on, by name: the data file (path, size, mtime), the ensemble
    (its manifest and its members' weights and config files' sizes and modification times,
    hashed), the columns read and kept, how quotes are read, which bad rows are skipped, the chunk
    size and the precision (bf16 may flip near-tied labels)."""
    stat = data.stat() if data.is_file() else None
    # the members' files too: an ensemble voted again from other members of the same names has
    # the same manifest and paths
    ensemble = [ens.manifest(), {n: _files_stamp(m.path) for n, m in ens.members.items()}]  # not the paths: a
    # moved ensemble directory (mv keeps sizes and modification times) continues its partial output
    return {"data file": [str(data.resolve()), stat and stat.st_size, stat and stat.st_mtime_ns],
            "ensemble": hashlib.sha256(json.dumps(ensemble, sort_keys=True, default=str).encode()).hexdigest(),
            "--text": text, "--text-pair": text_pair, "--label": label, "--quoting": quoting,
            "--chunk-rows": chunk_rows, "--precision": ens.precision, "--keep-columns": list(keep),
            "--on-bad-rows": on_bad_rows}


# options added after partial files were first written: a state without them was written with these
_OLDER_IDENTITY = {"--keep-columns": [], "--on-bad-rows": "error"}


def _files_stamp(path: Path | None) -> list:
    """Size and modification time of a member directory's weights and config."""
    if path is None:
        return []
    stamps = []
    for f in sorted(path.glob("model*.safetensors")) + [path / "config.json"]:
        stat = f.stat() if f.is_file() else None
        stamps.append([f.name, stat and stat.st_size, stat and stat.st_mtime_ns])
    return stamps


def _changes(before: object, now: dict) -> str:
    """What differs between a partial output's identity and this run's, for the --resume error.

    Example:
        >>> _changes({"ensemble": "a", "--chunk-rows": 500}, {"ensemble": "a", "--chunk-rows": 1000})
        'other settings: --chunk-rows 500 (now 1000)'
    """
    if not isinstance(before, dict):
        return "an older version of ensemble"
    changed = []
    for key, value in now.items():
        if before.get(key) == value:
            continue
        if key == "data file":
            old_path = (before.get(key) or ["?"])[0]
            changed.append("the data file as it was before it changed (size or modification time)"
                           if old_path == value[0] else f"another data file ({old_path})")
        elif key == "ensemble":
            changed.append("another ensemble, or this one before it changed")
        else:
            changed.append(f"{key} {_shown(before.get(key))} (now {_shown(value)})")
    return "other settings: " + ", ".join(changed)


def _shown(value: object) -> str:
    """An option's value as typed: None (a column not used) is ``--label ''``."""
    return "''" if value is None else repr(value)


def _read_state(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(state, dict) and isinstance(state.get("rows"), int) and isinstance(state.get("bytes"), int)
    return state if ok else None


__all__ = ["ABSTAIN", "evaluate", "gold", "predict_file"]
