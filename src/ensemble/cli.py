"""The `ensemble` command: thin typer commands over `fit`, `Ensemble` and `evaluate`.

User mistakes print one line and exit 2; bugs print one line and exit 1; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import os
import shlex
import signal
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import List, Optional

import typer

from .errors import EnsembleError, machine_problem, one_of, rows_phrase
from .flags import (as_flags, check_bad_rows, check_precision, data_columns, expand_multi, given_value, named_dirs, not_over_inputs,
                    quoting_of, unknown_option, weights_by_name)

try:  # recent typer carries its own copy of click; older releases use click itself
    from typer._click.exceptions import ClickException
    from typer.exceptions import Abort
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import Abort, ClickException

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Fine-tune transformer text classifiers from a TOML recipe, vote them, report agreement.")


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"ensemble {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
    """Fine-tune transformer text classifiers from a TOML recipe, vote them, report agreement."""


PRECISION_HELP = ("auto (bf16 on GPUs, fp32 on CPUs), fp32, or bf16: on CPUs with AMX (Xeon Sapphire Rapids "
                  "and later) about 2x faster than fp32; labels may differ from fp32 on near-ties.")


@app.command()
def fit(
    recipe: Path = typer.Argument(..., metavar="RECIPE", help="The TOML recipe."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: runs/<recipe name>)."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe field: KEY=VALUE, e.g. members.bert.lr=3e-5."),
    scratch: Optional[str] = typer.Option(None, "--scratch", help="Replace every hub member by a scratch model of this size (tiny, mini, small, medium, base)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Reuse a non-empty --out directory, retraining every member."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out: keep finished members, resume the rest from their checkpoints."),
    concurrent: str = typer.Option("auto", "--concurrent", help="Worker processes training members side by side: auto (one per GPU, or per CPU core, as members and memory allow), or a number; 1 trains them one at a time in this process."),
    only: Optional[str] = typer.Option(None, "--only", help="Train only these members (comma-separated) and skip the vote."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    serve: bool = typer.Option(False, "--serve", hidden=True, help="Worker of --concurrent: train the members named on stdin."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Train every member of RECIPE, vote, and write the agreement report."""
    from .recipe import load_recipe

    spec = load_recipe(recipe, set_, scratch)  # before torch is imported: a typo is reported at once
    from .fit import MANIFEST, fit as run_fit
    from .slots import parse_workers
    from .workers import fit_concurrent, serve as serve_members

    workers = parse_workers(concurrent)
    out = out or Path("runs") / recipe.stem
    # the recipe as given, overrides included: for the workers, and for the command --only suggests
    argv = [str(recipe)] + [a for item in set_ for a in ("--set", item)] + (["--scratch", scratch] if scratch else [])
    data = spec.data
    reads = {"recipe file": recipe, "data.train file": data.train, "data.valid file": data.valid, "data.test file": data.test}
    # fit adds to its run directory and deletes only its own members there: holding the data is harmless
    not_over_inputs(out, {what: path for what, path in reads.items() if path is not None}, holds_ok=True)
    if serve:
        return serve_members(spec, out, resume)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a rank of torchrun / accelerate launch
        stop_when_orphaned()
    if only:
        if workers not in ("auto", 1):
            raise EnsembleError(f"--concurrent: {workers} workers cannot be combined with --only, which trains the "
                                "named members in this process; drop one of them")
        names = [n.strip() for n in only.split(",") if n.strip()]
        if not names:
            raise EnsembleError(f"--only: give member names separated by commas (e.g. --only bert,albert); got '{only}'")
        report = run_fit(spec, out, overwrite=overwrite, resume=resume, progress=not quiet, only=names)
        if not (out / MANIFEST).exists():
            again = shlex.join(["ensemble", "fit", *argv, "--out", str(out), "--resume"])
            typer.echo(f"--only trained without voting, so '{out}' has no vote (no {MANIFEST} or report) until "
                       f"'{again}', which trains only what is missing, votes")
    else:
        report = fit_concurrent(spec, argv, out, workers, overwrite=overwrite, resume=resume, progress=not quiet)
    if report:  # empty on the non-main processes of a distributed run
        _summary(report, out)


@app.command()
def vote(
    members: List[str] = typer.Option(..., "--members", help="Member directories, as DIR or NAME=DIR."),
    data: Path = typer.Option(..., "--data", help="Data file to predict (csv, tsv, jsonl, npz, parquet)."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    method: str = typer.Option("soft", "--method", help="soft, hard, or learned on --valid: weighted, selection, stacking."),
    weights: List[str] = typer.Option([], "--weights", help="Member weights as NAME=WEIGHT (default 1 each; soft and hard only)."),
    valid: Optional[Path] = typer.Option(None, "--valid", help="Labelled validation file the vote learns on (temperatures, weights); never --data itself."),
    calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate", help="Fit per-member temperatures on --valid before voting."),
    abstain_below: Optional[float] = typer.Option(None, "--abstain-below", help="Answer 'abstain' when --abstain-on is below this (0-1)."),
    abstain_on: str = typer.Option("confidence", "--abstain-on", help="confidence or agreement."),
    abstain_coverage: Optional[float] = typer.Option(None, "--abstain-coverage", help="Choose the threshold on --valid: answer at least this share of rows (0-1]."),
    abstain_accuracy: Optional[float] = typer.Option(None, "--abstain-accuracy", help="Choose the threshold on --valid: answer the most rows at this accuracy (0-1]."),
    text: Optional[str] = typer.Option(None, "--text", help="Text column (default: the members' recipe, else 'text')."),
    text_pair: Optional[str] = typer.Option(None, "--text-pair", help="Second text column for sentence pairs (default: the members' recipe)."),
    quoting: Optional[str] = typer.Option(None, "--quoting", help="A tab-separated file's quotes (.tsv, or tabs in a .csv): 'none' (text) or 'csv' (CSV-quoted fields, as pandas writes them); default: the members' recipe, else 'none'."),
    label: Optional[str] = typer.Option(None, "--label", help="Label column, if the data has labels (default: the members' recipe, else 'label'; \"\" reads none)."),
    keep_columns: List[str] = typer.Option([], "--keep-columns", help="Columns of --data copied into the predictions, first (an id to join on)."),
    on_bad_rows: str = typer.Option("error", "--on-bad-rows", help="A row of --data or --valid with an empty text or gold label: 'error' (stop, naming its line) or 'skip' (left out and counted)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out directory."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Rows per forward pass of a member (more: faster on a GPU, more memory)."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Combine trained members on a data file: predictions, agreement report, ensemble.json."""
    from .data import id_warning, load_table, quoting_warning, skipped_note
    from .ensemble import Ensemble
    from .evaluate import evaluate, gold
    from .report import prediction_columns
    from .votefit import vote_warnings
    from .recipe import ABSTAIN_ON, LEARNED_METHODS, VOTE_METHODS, VoteConfig
    from .settings import check_abstain_label
    from .files import remove_stale_temps, replace_dir

    if method not in VOTE_METHODS:
        raise EnsembleError(f"--method: must be one of {one_of(VOTE_METHODS)}; got '{method}'")
    check_precision(precision)
    check_bad_rows(on_bad_rows)
    if abstain_on not in ABSTAIN_ON:
        raise EnsembleError(f"--abstain-on: must be one of {one_of(ABSTAIN_ON)}; got '{abstain_on}'")
    if abstain_below is not None and not 0 <= abstain_below <= 1:
        raise EnsembleError(f"--abstain-below: must be >= 0 and <= 1; got {abstain_below}")
    for flag, value in (("--abstain-coverage", abstain_coverage), ("--abstain-accuracy", abstain_accuracy)):
        if value is not None and not 0 < value <= 1:
            raise EnsembleError(f"{flag}: must be > 0 and <= 1; got {value}")
        if value is not None and valid is None:
            raise EnsembleError(f"{flag}: the threshold is chosen on labelled validation data; give --valid FILE")
    given = [f for f, v in (("--abstain-below", abstain_below), ("--abstain-coverage", abstain_coverage),
                            ("--abstain-accuracy", abstain_accuracy)) if v is not None]
    if len(given) > 1:
        raise EnsembleError(f"{given[1]}: give at most one of --abstain-below, --abstain-coverage, --abstain-accuracy; "
                            f"got {' and '.join(given)}")
    if method in LEARNED_METHODS and valid is None:
        raise EnsembleError(f"--method {method}: learns on labelled validation data; give --valid FILE (not the --data file)")
    if weights and method in LEARNED_METHODS:
        raise EnsembleError(f"--weights: method '{method}' learns its own weights; drop --weights or use soft/hard")
    if valid is not None and data.resolve() == valid.resolve():
        raise EnsembleError("--valid: is the --data file; the vote must learn on other rows than it is scored on")
    dirs = named_dirs(members)
    reads = {f"--members {name} directory": path for name, path in dirs.items()}
    not_over_inputs(out, {**reads, "--data file": data, **({"--valid file": valid} if valid is not None else {})})
    ens = Ensemble.from_dirs(dirs, method if method not in LEARNED_METHODS else "soft", weights_by_name(weights, dirs),
                             precision=precision)
    ens.batch_size = batch_size
    check_abstain_label(ens.labels, given[0] if given else None)
    label_given = bool(label)  # a --label column must exist; the default one may be absent
    text, text_pair, label = data_columns(ens, text, text_pair, label)
    quoting = quoting_of(ens, quoting)
    if label is None and valid is not None:
        raise EnsembleError("--label: '' reads no gold labels, and --valid needs them to fit the vote; "
                            "name the label column, or drop --valid")
    columns = dict(text=text, text_pair=text_pair, label=label, quoting=quoting, on_bad_rows=on_bad_rows)
    ds = load_table(data, **columns, field="--data", require_label=label_given, keep=keep_columns)
    prediction_columns(list(ens.members), pairs=ds.pairs is not None, gold=ds.labels is not None, kept=keep_columns,
                       field="--keep-columns", abstaining=bool(given))
    for warning in (quoting_warning(ds, quoting, "--quoting"), id_warning(ds, text, "--text")):
        if warning is not None:
            typer.echo(warning, err=True)
    gold(ens, ds, "--data")  # a label the members do not know: said as a flag's error, before any member runs
    if out.exists() and not out.is_dir():
        raise EnsembleError(f"--out: '{out}' is a file; the vote writes a directory: choose a directory path")
    if out.exists() and not overwrite:
        raise EnsembleError(f"--out: '{out}' already exists; choose another directory or pass --overwrite")
    spec = VoteConfig(method=method, weights=weights_by_name(weights, dirs), calibrate=calibrate and valid is not None,
                      abstain_below=abstain_below, abstain_on=abstain_on, abstain_coverage=abstain_coverage,
                      abstain_accuracy=abstain_accuracy)
    fitted = None
    if valid is not None:
        fitted_on_it = _trained_on(ens, valid)
        if fitted_on_it:
            typer.echo(f"warning: --valid is the training file of {fitted_on_it}: the members fit those rows, "
                       "so what the vote learns there (temperatures, weights, the stacker) trusts them too much; "
                       "give their validation file", err=True)
        held = load_table(valid, **columns, field="--valid")
        held_logits = ens.recorded_logits(held)  # the members' own, when --valid is their validation file
        if held_logits is None:
            held_logits = ens.member_logits(held.texts, held.pairs, progress=None if quiet else "--valid")
        try:
            fitted = ens.fit_vote(held_logits, gold(ens, held, "--valid"), spec)
        except EnsembleError as exc:  # the library names the recipe's settings; here they are flags
            raise as_flags(exc, "abstain_accuracy", "abstain_coverage", "abstain_below") from None
        for warning in vote_warnings(fitted, "--valid", "--abstain-accuracy"):
            typer.echo(warning, err=True)
    else:
        ens.abstain_below, ens.abstain_on = abstain_below, abstain_on
    warning, info = _leaks(ens, ds, data, held if valid is not None else None, quoting)
    if on_bad_rows == "skip":  # the report's Data section counts them, as fit's does
        info["skipped_rows"] = {"--data": ds.skipped, **({"--valid": held.skipped} if valid is not None else {})}
        info["on_bad_rows"] = "skip"
        if (skipped := skipped_note(info["skipped_rows"], "--on-bad-rows skip")) is not None:
            typer.echo(skipped, err=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    remove_stale_temps(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        report = evaluate(ens, ds, data.name, tmp, fitted=fitted, data_info=info or None, caveat=warning,
                          progress=not quiet)
        ens.write_into(tmp)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _summary(report, out)


def _leaks(ens, ds, data: Path, held, quoting: str) -> tuple[str | None, dict]:
    """What makes `vote`'s scores on `ds` optimistic, said on stderr: the warning that opens the
    report (the file is the members' training or validation file) and the report's Data counts
    (rows shared with the members' training file, or with --valid's rows `held`)."""
    from .data import seen_in
    from .evaluate import seen_in_training

    warning, info = None, {}
    scored = ds.labels is not None  # without gold labels there are no scores, only predictions to trust less
    trained_on = _trained_on(ens, data, rows=ds)
    chosen_on = _trained_on(ens, data, "valid", ds) or (ens.recorded_logits(ds) is not None and "every member")
    if trained_on:
        warning = (f"--data is the training file of {trained_on}: " + (
            "these scores are measured on rows the members were fitted on, so they are optimistic" if scored else
            "the members were fitted on these rows, so their predictions say little of how they do on new text"))
    elif chosen_on:
        warning = (f"--data is the validation file of {chosen_on}: each member's best epoch was chosen on these rows, "
                   + ("so these scores are optimistic; score a file the members never saw" if scored else
                      "so predictions on them look better than on new text"))
    elif (seen := seen_in_training(ens, ds, quoting))[0]:  # some rows only: counted, as fit counts them
        info["seen_in_train"] = {data.name: seen[0]}
        typer.echo(f"warning: {rows_phrase(seen[0], '--data')} the same text as a training row of "
                   f"{', '.join(repr(n) for n in seen[1])}: "
                   + ("scores on them are optimistic" if scored else "the members were fitted on them")
                   + " (see the report's Data section)", err=True)
    gone = {n: path for n, path in ens.training_files().items() if not path.is_file()}
    if gone and not warning:  # a moved project: say the check could not be made, rather than nothing
        first = next(iter(gone))
        typer.echo(f"warning: the training file of {_named(list(gone))} ('{gone[first]}'"
                   f"{' and others' if len(set(gone.values())) > 1 else ''}) is gone (moved?), so --data was not "
                   "checked for rows the members trained on", err=True)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    if held is not None and (in_valid := seen_in(ds, held)):  # as fit checks its test split
        info["seen_in_valid"] = {data.name: in_valid}
        typer.echo(f"warning: {rows_phrase(in_valid, '--data')} the same text as a --valid row, on which the vote "
                   "was fitted: scores on them are optimistic (see the report's Data section)", err=True)
    return warning, info


def _trained_on(ens, file: Path, split: str = "train", rows=None) -> str:
    """The members (as "member 'a'" / "members 'a', 'b'") whose recorded training file (or validation
    file, `split` "valid") is `file`, or whose recorded rows of that split are `rows` (a moved
    copy of the file), or ""."""
    from .members import saved_recipe

    files = ens.training_files(split)
    fingerprint = rows.fingerprint() if rows is not None else None
    def recorded(member) -> str | None:
        rows_ = saved_recipe(member.path).get("rows")
        return rows_.get(split) if isinstance(rows_, dict) else None

    names = [n for n, m in ens.members.items() if (n in files and files[n].resolve() == file.resolve())
             or (fingerprint is not None and recorded(m) == fingerprint)]
    return _named(names)


def _named(names: list[str]) -> str:
    """``member 'a'`` / ``members 'a', 'b'``, or "" for none."""
    return (f"member '{names[0]}'" if len(names) == 1 else "members " + ", ".join(f"'{n}'" for n in names)) if names else ""


@app.command()
def predict(
    ensemble: Path = typer.Option(..., "--ensemble", help="An ensemble directory (from fit or vote)."),
    data: Path = typer.Option(..., "--data", help="Data file (csv, tsv, jsonl, parquet: streamed, any size; npz: read whole)."),
    out: Path = typer.Option(..., "--out", help="Output CSV: texts, member and ensemble labels, confidence, agreement."),
    text: Optional[str] = typer.Option(None, "--text", help="Text column (default: the members' recipe, else 'text')."),
    text_pair: Optional[str] = typer.Option(None, "--text-pair", help="Second text column for sentence pairs (default: the members' recipe)."),
    quoting: Optional[str] = typer.Option(None, "--quoting", help="A tab-separated file's quotes (.tsv, or tabs in a .csv): 'none' (text) or 'csv' (CSV-quoted fields, as pandas writes them); default: the members' recipe, else 'none'."),
    label: Optional[str] = typer.Option(None, "--label", help="Gold label column, copied through when present (\"\": none, even if the file has one)."),
    keep_columns: List[str] = typer.Option([], "--keep-columns", help="Columns of --data copied into the predictions, first (an id to join on)."),
    on_bad_rows: str = typer.Option("error", "--on-bad-rows", help="A row with an empty text or gold label: 'error' (stop, naming its line) or 'skip' (left out and counted)."),
    chunk_rows: int = typer.Option(10_000, "--chunk-rows", min=1, help="Rows per chunk (bounds the memory)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Rows per forward pass of a member (more: faster on a GPU, more memory)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run into the same --out, after its last finished chunk."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    device: str = typer.Option("auto", "--device", help="auto (all GPUs, else CPU), cpu, or cuda:N."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Predict a data file of any size with a saved ensemble, streaming it in chunks."""
    from .devices import check_devices
    from .ensemble import Ensemble
    from .evaluate import check_csv_name, check_predictions_out, predict_file

    check_precision(precision)
    check_bad_rows(on_bad_rows)
    check_devices(device, "--device")
    check_predictions_out(out, data, overwrite)  # before the members load (predict_file checks again)
    not_over_inputs(out, {"--ensemble directory": ensemble}, nested_ok=("--ensemble directory",))
    check_csv_name(out)
    ens = Ensemble.load(ensemble, device=device, precision=precision)
    ens.batch_size = batch_size
    not_over_inputs(out, {f"member '{n}' directory": m.path for n, m in ens.members.items()})
    label_given = bool(label)  # a --label column must exist; the default one is copied through if present
    text, text_pair, label = data_columns(ens, text, text_pair, label)
    rows = predict_file(ens, data, out, text=text, text_pair=text_pair, label=label, quoting=quoting_of(ens, quoting),
                        chunk_rows=chunk_rows, progress=not quiet, resume=resume, overwrite=overwrite,
                        require_label=label_given, keep=keep_columns, on_bad_rows=on_bad_rows)
    typer.echo(f"{rows} rows predicted: {out}")


@app.command()
def distill(
    ensemble: Path = typer.Option(..., "--ensemble", help="An ensemble directory from 'ensemble fit'."),
    student: str = typer.Option(..., "--student", help="Hub id or checkpoint directory, or scratch:ARCH[:SIZE] (e.g. scratch:bert:mini)."),
    out: Path = typer.Option(..., "--out", help="The student's member directory."),
    name: str = typer.Option("student", "--name", help="The student's member name."),
    temperature: float = typer.Option(2.0, "--temperature", help="Softens the ensemble's probabilities (and the student's)."),
    hard_weight: float = typer.Option(0.5, "--hard-weight", help="Share of the loss on the gold labels (0: soft labels only)."),
    unlabeled: Optional[Path] = typer.Option(None, "--unlabeled", help="Extra texts without labels (same text columns as the training data) that the ensemble labels for the student: a transfer set."),
    text: Optional[str] = typer.Option(None, "--text", help="--unlabeled's text column (default: the members' recipe, else 'text')."),
    text_pair: Optional[str] = typer.Option(None, "--text-pair", help="--unlabeled's second text column, for sentence pairs."),
    set_: List[str] = typer.Option([], "--set", help="Training field for the student: FIELD=VALUE, e.g. lr=1e-4 (default: the first member's)."),
    train: Optional[Path] = typer.Option(None, "--train", help="The members' training file where it is now, if it moved (its rows must be theirs)."),
    valid: Optional[Path] = typer.Option(None, "--valid", help="The members' validation file where it is now, if it moved."),
    test: Optional[Path] = typer.Option(None, "--test", help="The members' test file where it is now, if it moved."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted distillation from its checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Train one student member on the ensemble's soft labels; compare accuracy and predict speed."""
    from .distill import distill as run_distill
    from .distill import check_student_out, student_config, training_data
    from .ensemble import Ensemble

    if out.exists() and not (overwrite or resume):  # said before the ensemble loads (distill checks it again)
        raise EnsembleError(f"--out: '{out}' already exists; choose another directory, or pass --overwrite or --resume")
    for flag, value in (("--text", text), ("--text-pair", text_pair)):
        if value is not None and unlabeled is None:
            raise EnsembleError(f"{flag}: names a column of --unlabeled's file, and no --unlabeled was given; "
                                f"drop {flag}, or add --unlabeled FILE")
    reads = {"--ensemble directory": ensemble, **({"--unlabeled file": unlabeled} if unlabeled is not None else {})}
    not_over_inputs(out, reads, nested_ok=("--ensemble directory",))
    ens = Ensemble.load(ensemble)
    moved = {k: v for k, v in (("train", train), ("valid", valid), ("test", test)) if v is not None}
    # the members, their folder and data files: checked before the student's settings and the transfer set
    check_student_out(ens, out, training_data(ens, moved), overwrite=overwrite, resume=resume)
    spec = student_config(student, name, ens, set_)
    extra = None
    if unlabeled is not None:
        from .data import load_table

        text, text_pair, _ = data_columns(ens, text, text_pair, None)
        extra = load_table(unlabeled, text=text, text_pair=text_pair, label=None, field="--unlabeled", require_label=False,
                           quoting=quoting_of(ens, None))  # read as the members read their files
    result = run_distill(ens, spec, out, temperature=temperature, hard_weight=hard_weight, unlabeled=extra,
                         progress=not quiet, resume=resume, overwrite=overwrite, moved=moved)
    if extra is not None:
        typer.echo(f"\n{len(extra)} unlabelled rows from {unlabeled}, taught by the ensemble alone")
    typer.echo(f"\n{result.split} split, {result.rows} rows"
               + (" (no test file: the validation split also picked each model's epoch, so these scores are optimistic)"
                  if result.split == "valid" else ""))
    best = result.best_member
    first = max(22, len(best) + 14)  # wide enough for a long member name
    typer.echo(f"{'':<{first}} {'accuracy':>9} {'rows/s':>9}")
    typer.echo(f"{'ensemble':<{first}} {result.ensemble_accuracy:>9.4f} {result.ensemble_rows_per_s:>9.1f}")
    typer.echo(f"{'best member (' + best + ')':<{first}} {result.members_accuracy[best]:>9.4f}")
    typer.echo(f"{'student':<{first}} {result.student_accuracy:>9.4f} {result.student_rows_per_s:>9.1f}")
    typer.echo(f"the student gives the ensemble's label on {result.student_agreement:.1%} of the rows")
    kept = result.gain_kept
    typer.echo("gain over the best member kept: " + ("n/a (the ensemble does not beat it)" if kept is None else f"{kept:.0%}"))
    typer.echo(f"student: {out}")


def _summary(report: dict, out: Path) -> None:
    abstention = report.get("abstention") or {}
    abstains = abstention.get("threshold") is not None
    ensemble = "ENSEMBLE (all rows, before abstention)" if abstains else "ENSEMBLE"
    rows = [(name, m) for name, m in report["members"].items()] + [(ensemble, report["ensemble"])]
    width = max(12, *(len(name) for name, _ in rows))
    if "accuracy" in report["ensemble"]:
        typer.echo(f"\n{report['split']} split, {report['rows']} rows, {report['method']} vote")
        typer.echo(f"{'':<{width}} {'accuracy':>9} {'macro_f1':>9}")
        for name, m in rows:
            typer.echo(f"{name:<{width}} {m['accuracy']:>9.4f} {m['macro_f1']:>9.4f}")
        typer.echo(f"oracle accuracy {report['oracle_accuracy']:.4f}, unanimous {report['agreement']['unanimous']:.4f}, "
                   f"Fleiss kappa {report['agreement']['fleiss_kappa']:.4f}")
    if abstains:
        answered = abstention.get("accuracy_answered", "n/a")
        answered = "undefined (no row answered)" if answered is None else (
            f"{answered:.4f}" if isinstance(answered, float) else answered)
        typer.echo(f"abstention: {abstention['abstained']} of {report['rows']} rows abstained, coverage "
                   f"{abstention['coverage']:.4f}" + (f", accuracy on the answered rows {answered}"
                                                      if "accuracy_answered" in abstention else ""))
    if report.get("warning"):
        typer.echo(f"warning: {report['warning']}")
    typer.echo(f"report: {out / 'report.md'}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: exit 2 for user errors, 1 for bugs, one line each unless --debug."""
    try:
        args = expand_multi(list(sys.argv[1:] if argv is None else argv))
    except EnsembleError as exc:  # a list flag without its values
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    debug = "--debug" in args or os.environ.get("ENSEMBLE_DEBUG") == "1"
    command = typer.main.get_command(app)
    if "--serve" not in args:  # schedulers (SLURM, timeout, docker stop) send SIGTERM: end as on Ctrl-C
        signal.signal(signal.SIGTERM, _terminated)
    try:
        code = command.main(args, prog_name="ensemble", standalone_mode=False)
        if code == 130:  # typer's click turns Ctrl-C into this return code, silently
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `ensemble`: its help, not an error
            typer.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = unknown_option(exc, ctx) or exc.format_message() + given_value(exc, args)
        typer.echo(f"error: {message}{where}", err=True)
        sys.exit(exc.exit_code)
    except (Abort, KeyboardInterrupt) as exc:
        _end_bars()
        terminated = isinstance(exc, _Terminated) or _SIGTERM.is_set()  # click may have turned it into 130
        hints = {"fit": " (training state is saved after every epoch: rerun with --resume to continue)",
                 "predict": " (finished chunks, if any, are kept: rerun with --resume to continue)",
                 "distill": " (the student's training state is saved after every epoch: rerun with --resume to continue)"}
        hint = next((h for command, h in hints.items() if command in args), "")
        typer.echo(f"{'terminated' if terminated else 'interrupted'}{hint}", err=True)
        sys.exit(143 if terminated else 130)
    except EnsembleError as exc:
        _end_bars()
        if debug:  # the traceback, and still the exit code of a wrong input (scripts tell them apart by it)
            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - also native panics (tokenizers' PanicException), not Exceptions
        problem = machine_problem(exc)
        _end_bars()
        if problem is None or debug:
            _bug(exc, debug)
        typer.echo(f"error: {problem}", err=True)
        sys.exit(2)


def _end_bars() -> None:
    """End the progress bars an error cut short, so that its line starts a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # noqa: BLE001, S110 - a bar that cannot close must not hide the error
            pass


def stop_when_orphaned(grace: float = 10.0, parent: int | None = None,
                       cleanup: Callable[[], None] | None = None) -> threading.Thread:
    """Stop this process when its parent (`parent`, else the current one) dies: a launcher or a
    run killed with SIGKILL cannot stop its ranks or workers, which must not train on into a run
    resumed meanwhile. Then `cleanup`, SIGTERM to itself, which ends like Ctrl-C, and after `grace`
    seconds (a rank blocked in a collective whose peer is gone) an exit.

    Example:
        >>> stop_when_orphaned()  # doctest: +SKIP
    """
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.25)  # a getppid a quarter second: noticed well within the second promised
        if cleanup is not None:
            cleanup()
        os.kill(os.getpid(), signal.SIGTERM)  # checkpoints are written atomically: any moment is safe
        time.sleep(grace)
        os._exit(143)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it ends like an interrupt (its workers stopped)."""


_SIGTERM = threading.Event()


def _terminated(signum, frame) -> None:
    _SIGTERM.set()
    raise _Terminated


def _bug(exc: BaseException, debug: bool) -> None:
    """A bug in this library, not the user's input: one line and exit 1 (the traceback under --debug)."""
    if debug:
        raise exc
    line = (str(exc).strip().splitlines() or [""])[0]  # one line: some libraries' messages run to a dozen
    typer.echo(f"internal error: {type(exc).__name__}: {line} (rerun with --debug for the traceback)", err=True)
    sys.exit(1)
