"""`ensemble fit`: a whole recipe, from data files to a voted, reported ensemble directory."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .data import TextDataset, id_warning, load_table, quoting_warning, seen_in, skipped_note, stratified_split
from .devices import bf16_tip
from .ensemble import Ensemble
from .manifest import MANIFEST
from .errors import EnsembleError, rows_phrase
from .evaluate import evaluate, gold
from .labels import check_known_labels, check_label_column, label_warnings, sorted_labels
from .members import METRICS_FILE, saved_metrics, saved_recipe
from .checkpoint import checkpoint_dir
from .files import exclusive_lock, write_json
from .preflight import preflight
from .provenance import base_fingerprint, learned_settings, local_base, setting_changes
from .report import prediction_columns
from .recipe import DataConfig, MemberConfig, Recipe, abstention_key, check_distinct_files, recipe_dict
from .settings import check_abstain_label
from .train import Diverged, Splits, process_state, train_member
from .votefit import vote_warnings


def load_splits(data: DataConfig, where: str = "") -> tuple[Splits, TextDataset | None, list[str]]:
    """Train, validation (a file, or a stratified split of train) and optional test data, and the
    labels. `where` (the recipe's file name) starts the errors about its ``data.*`` settings, as it
    starts those of its keys."""
    try:
        return _load_splits(data)
    except EnsembleError as exc:
        if where and str(exc).startswith("data."):
            raise EnsembleError(f"{where}: {exc}") from exc  # --debug shows where it came from
        raise


def _load_splits(data: DataConfig) -> tuple[Splits, TextDataset | None, list[str]]:
    check_distinct_files(data)  # the recipe checked it too; a saved recipe (distill) may have been edited
    columns = dict(text=data.text, text_pair=data.text_pair, label=data.label, on_bad_rows=data.on_bad_rows,
                   quoting=data.quoting)
    # the kept columns come from the file the report (and predictions.csv) is about
    reported = "test" if data.test is not None else "valid" if data.valid is not None else "train"
    keep = {reported: data.keep_columns}
    train = load_table(data.train, field="data.train", **columns, keep=keep.get("train", ()))
    check_label_column(train, data.label)
    if data.valid is not None:
        valid = load_table(data.valid, field="data.valid", **columns, keep=keep.get("valid", ()))
    else:
        skipped = train.skipped
        train, valid = stratified_split(train, data.valid_fraction, data.split_seed)
        train.skipped = skipped  # bad rows of the file, counted once, on the split they came from
    test = load_table(data.test, field="data.test", **columns, keep=keep.get("test", ())) if data.test is not None else None
    labels = sorted_labels(train.labels)
    if data.labels is not None:  # the recipe's order; every class listed, every listed class trained
        check_known_labels(train, data.labels, "data.train", known_as="data.labels")
        untrained = [label for label in data.labels if label not in set(labels)]
        if untrained:
            raise EnsembleError(f"data.labels: '{untrained[0]}' has no row in data.train ('{data.train}'); a member "
                                "cannot learn a class it never sees: add rows of it or remove it from data.labels")
        labels = list(data.labels)
    if len(labels) < 2:
        raise EnsembleError(f"data.train: every row has the label '{labels[0]}'; a classifier needs at least two labels")
    check_known_labels(valid, labels, "data.valid")
    if test is not None:
        check_known_labels(test, labels, "data.test")
    return Splits(train, valid), test, labels


def checked_inputs(recipe: Recipe, members: Sequence[MemberConfig]) -> tuple[Splits, TextDataset | None, list[str]]:
    """The recipe's data, read and checked, after the checks that need it (abstention's labels)
    and those of the `members` to train (`preflight`): every input mistake before any training."""
    prediction_columns([m.name for m in recipe.members], pairs=recipe.data.text_pair is not None, gold=True,
                       kept=recipe.data.keep_columns, field=f"{recipe.where}: data.keep_columns",
                       abstaining=abstention_key(recipe.vote) is not None)
    splits, test, labels = load_splits(recipe.data, recipe.where)
    check_abstain_label(labels, abstention_key(recipe.vote), recipe.where)
    preflight(members, where=recipe.where, defaults=recipe.defaults)
    return splits, test, labels


def data_warnings(data: DataConfig, splits: Splits, test: TextDataset | None) -> list[str]:
    """What `fit` says about its data before training: rows skipped as bad, labels differing in
    case, and files read without the CSV quoting they seem written with (each file once)."""
    files = {"train": splits.train, **({"valid": splits.valid} if data.valid is not None else {}),
             **({"test": test} if test is not None else {})}
    skipped = skipped_note({key: ds.skipped for key, ds in files.items()}, 'data.on_bad_rows = "skip"')
    warnings = [skipped] if skipped else []
    warnings += label_warnings(splits.train.labels)
    warnings += [w for w in [id_warning(splits.train, data.text)] if w is not None]
    warnings += [w for ds in files.values() if (w := quoting_warning(ds, data.quoting)) is not None]
    return warnings


def fit(recipe: Recipe, out: Path, overwrite: bool = False, resume: bool = False, progress: bool = True,
        only: Sequence[str] | None = None, claim: bool = True) -> dict:
    """Train every member of `recipe` into ``out/members``, one after another, vote, and write the report.

    The test split is reported when the recipe has one, else the validation split. With
    `resume`, members already finished with the same settings are kept and an interrupted member
    continues from its last checkpoint. Under ``accelerate launch`` every process trains; the
    main process votes and writes the report (the others return an empty dict). `only` trains
    just the named members and skips the vote (what a worker of `ensemble.workers` runs). Another
    `fit` on the same `out` is refused while this one runs (`OutLock`; `claim=False`: a worker,
    whose parent holds it).

    Example:
        >>> report = fit(load_recipe("recipes/demo.toml"), Path("runs/demo"))  # doctest: +SKIP
        >>> report["ensemble"]["accuracy"]  # doctest: +SKIP
        0.93
    """
    lock = OutLock() if claim else None
    try:
        return _fit(recipe, Path(out), overwrite, resume, progress, only, lock)
    finally:
        if lock is not None:
            lock.release()


class OutLock:
    """An exclusive lock on a run directory (``flock`` on the directory itself, so nothing is written
    into it): two `ensemble fit` runs on one --out would train over each other's members.

    Example:
        >>> lock = OutLock(); lock.acquire(Path("runs/demo"))  # doctest: +SKIP
        >>> OutLock().acquire(Path("runs/demo"))  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        ensemble.errors.EnsembleError: --out: 'runs/demo' is in use by another 'ensemble fit'; wait for it to end, or choose another --out
    """

    def __init__(self):
        self.fd: int | None = None

    def acquire(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.fd = exclusive_lock(out, os.O_RDONLY, f"--out: '{out}' is in use by another 'ensemble fit'; wait for it "
                                 "to end, or choose another --out")

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the lock
            self.fd = None


def _fit(recipe: Recipe, out: Path, overwrite: bool, resume: bool, progress: bool, only: Sequence[str] | None,
         lock: OutLock | None) -> dict:
    state = process_state()
    note = check_out(out, overwrite, resume)
    unknown = sorted(set(only or ()) - {m.name for m in recipe.members})
    if unknown:
        raise EnsembleError(f"--only: no member named '{unknown[0]}'; members: {', '.join(m.name for m in recipe.members)}")
    chosen = [m for m in recipe.members if only is None or m.name in only]
    splits, test, labels = checked_inputs(recipe, chosen)  # only the members to train: --only b must not need a's model
    if state.is_main_process and lock is not None:  # not in workers: their parent said it
        for warning in data_warnings(recipe.data, splits, test):
            print(warning)
    tip = bf16_tip(chosen) if progress and state.is_main_process else None
    for line in (note, tip):
        if line:
            print(line)
    state.wait_for_everyone()
    if state.is_main_process:
        if lock is not None:
            lock.acquire(out)
        prepare_out(out, recipe, prune=only is None, keep_vote=only is not None, resume=resume)
    state.wait_for_everyone()

    failed: dict[str, str] = {}  # members whose loss diverged, under on_diverge = "skip"
    rows = splits.rows if resume else None
    for member in chosen:
        target = out / "members" / member.name
        if resume and finished(target, member, labels, rows):
            if state.is_main_process:
                keep_trained(target, member.name)
            continue
        if resume and state.is_main_process:
            retrain_why(target, member, labels, rows)
        if only is not None and state.is_main_process:
            drop_vote(out)  # it no longer describes these members
        try:
            train_member(member, splits, labels, recipe.data, target, progress=progress, resume=resume)
        except Diverged as exc:
            if member.train.on_diverge == "stop":
                raise
            failed[member.name] = str(exc)
            if state.is_main_process:  # an older member of that name must not vote in its place
                shutil.rmtree(target, ignore_errors=True)
                print(f"{member.name}: {exc}; left out of the vote (on_diverge = \"skip\")", file=sys.stderr)
                if only is not None:  # a worker: the process that votes learns of it from this file
                    diverged_file(out, member.name).write_text(str(exc), encoding="utf-8")
    if not state.is_main_process or only is not None:
        return {}
    return vote_and_report(recipe, out, splits, test, labels, failed, progress)


def check_out(out: Path, overwrite: bool, resume: bool) -> str | None:
    """Refuse an --out that is a file, a non-empty directory without --overwrite / --resume, or
    both flags at once. Returns the note to print, once the other inputs are checked too, when
    --resume finds nothing to continue (printed at once, it would come before their errors)."""
    if overwrite and resume:
        raise EnsembleError("--resume and --overwrite: give one; --resume continues the run in --out, "
                            "--overwrite trains it again from the start")
    if out.exists() and not out.is_dir():
        raise EnsembleError(f"--out: '{out}' exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (overwrite or resume):
        raise EnsembleError(f"--out: '{out}' already exists and is not empty; choose another --out, "
                            "pass --resume to continue it, or --overwrite to start again")
    if resume and not (out.is_dir() and any(out.iterdir())) and process_state().is_main_process:
        return f"--resume: nothing to continue in '{out}'; training from the start"
    return None


# What the vote writes into a run directory, the manifest last (`vote_and_report`).
VOTE_FILES = (MANIFEST, "report.json", "report.md", "report.html", "predictions.csv", "plots")


def prepare_out(out: Path, recipe: Recipe, prune: bool = True, keep_vote: bool = False, resume: bool = False) -> None:
    """Start (or reopen) the run directory; with `prune`, members no longer in the recipe go, except
    under `resume`, which never deletes a trained member: it says that one is left out of the vote.
    Unless `keep_vote` (``--only``, which may train nothing), the manifest goes: the run is
    incomplete until the vote writes it back."""
    if not keep_vote:
        (out / MANIFEST).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    members_dir = out / "members"
    # what a killed run left half-moved (`files.replace_dir`): under the lock no other run writes them,
    # and `prune` is false in a worker, whose sibling workers do
    for left in members_dir.glob(".*.*-*") if members_dir.is_dir() and prune else ():
        if re.fullmatch(r"\..+\.(tmp|old)-\d+", left.name):
            shutil.rmtree(left, ignore_errors=True)
    if members_dir.is_dir() and prune:
        for old in sorted(members_dir.iterdir()):
            if old.name in {m.name for m in recipe.members} or old.name.startswith("."):
                continue
            if resume:
                print(f"{old.name}: in '{members_dir}' but not in the recipe; kept there, left out of the vote "
                      "(delete it, or run with --overwrite instead of --resume)")
            else:
                shutil.rmtree(old, ignore_errors=True)


def drop_vote(out: Path) -> None:
    """Remove the run's vote (manifest first, so the directory never loads as complete with a
    stale vote), its report and predictions: a member is about to be trained again."""
    for name in VOTE_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def diverged_file(out: Path, name: str) -> Path:
    """Where a worker leaves the message of a member that diverged (and was skipped)."""
    return out / "members" / f".{name}.diverged"


def vote_and_report(recipe: Recipe, out: Path, splits: Splits, test: TextDataset | None, labels: list[str],
                    failed: dict[str, str], progress: bool = True) -> dict:
    """Vote the trained members (all but `failed`) and write the report and the manifest."""
    voters = [m.name for m in recipe.members if m.name not in failed]
    if not voters:
        raise EnsembleError("every member diverged (NaN or infinite loss); lower the learning rates and run again")
    dirs = {name: out / "members" / name for name in voters}
    weights = {k: v for k, v in recipe.vote.weights.items() if k in voters}
    # everything the vote learns (temperatures, weights, the stacker) comes from validation rows only
    # members are opened in full only when a forward pass is to run (a test split, or no recorded logits)
    ens = Ensemble.from_dirs(dirs, recipe.vote.method, weights, load_weights=test is not None)
    valid_logits = ens.recorded_logits(splits.valid)
    if valid_logits is None and test is None:
        ens = Ensemble.from_dirs(dirs, recipe.vote.method, weights)
    truncated: dict[str, int] = {}
    if valid_logits is None:
        valid_logits = ens.member_logits(splits.valid.texts, splits.valid.pairs, truncated,
                                         progress="valid" if progress else None)
    else:  # the members' own counts, from the same tokenization
        truncated = {name: _valid_truncated(out / "members" / name) for name in ens.members}
    fitted = ens.fit_vote(valid_logits, gold(ens, splits.valid, "data.valid"), recipe.vote)
    for warning in vote_warnings(fitted, "the validation split", "vote.abstain_accuracy"):
        print(warning)
    skipped = {"train": splits.train.skipped, "valid": splits.valid.skipped if recipe.data.valid else 0}
    if test is not None:  # only the splits there are
        skipped["test"] = test.skipped
    # rows of valid / test whose text is also a training text: the file's duplicates (or a leak)
    seen = {name: n for name, ds in (("valid", splits.valid), ("test", test)) if ds is not None
            and (n := seen_in(ds, splits.train))}
    # ... and test rows that are validation rows: the vote (its weights, temperatures, stacker) was fitted on them
    in_valid = seen_in(test, splits.valid) if test is not None else 0
    info = {"skipped_rows": skipped, "failed_members": failed, **({"seen_in_train": seen} if seen else {}),
            **({"seen_in_valid": {"test": in_valid}} if in_valid else {})}
    if seen:
        listed = " and ".join(f"{n} {split} row{'s' if n != 1 else ''}" for split, n in seen.items())
        verb = "has" if sum(seen.values()) == 1 else "have"
        print(f"warning: {listed} {verb} the same text as a training row (duplicates in the data): scores on them "
              "are optimistic (see the report's Data section)")
    if in_valid:
        print(f"warning: {rows_phrase(in_valid, 'test')} the same text as a validation row, on which the vote was "
              "fitted: the test scores are optimistic (see the report's Data section)")
    if test is not None:
        report = evaluate(ens, test, "test", out, fitted=fitted, data_info=info, progress=progress)
    else:  # no test file: the report is on valid, whose logits are at hand
        report = evaluate(ens, splits.valid, "valid", out, fitted=fitted, data_info=info,
                          logits=valid_logits, truncated=truncated)
    write_json(out / MANIFEST, ens.manifest())
    return report


def _valid_truncated(member_dir: Path) -> int:
    try:
        return int(saved_metrics(member_dir)["truncated"]["valid"])
    except (KeyError, TypeError, ValueError):
        return 0


def keep_trained(target: Path, name: str) -> None:
    """Say that a finished member is kept (--resume), and clear the checkpoint a kill may have left."""
    print(f"{name}: already trained with these settings; kept")
    shutil.rmtree(checkpoint_dir(target), ignore_errors=True)  # a kill may have cut its clean-up short


def retrain_why(target: Path, member: MemberConfig, labels: list[str], rows: dict | None) -> str | None:
    """Why a member in `target` is trained again from the start (--resume), said and returned; None
    when it can go on from where it was."""
    why = changed(target, member, labels, rows)
    if why:
        print(f"{member.name}: {why}; training it again")
    return why


def changed(path: Path, member: MemberConfig, labels: list[str], rows: dict | None = None) -> str | None:
    """How the member trained in `path` differs from `member` / `labels` (for --resume to say why it
    trains it again), or None when there is no trained member there or nothing differs.

    Example:
        >>> changed(Path("runs/none/members/bert"), MemberConfig("bert", init="scratch", arch="bert"), ["a", "b"])
    """
    saved = saved_recipe(path)
    if not saved:
        if path.is_dir() and any(path.glob("model*.safetensors")):  # trained, but its record is gone or damaged
            return "its recipe.json is missing or not valid JSON, so what it was trained with is unknown"
        return None
    if saved.get("labels") != labels:
        return f"the labels changed since it was trained ({saved.get('labels')} -> {labels})"
    moved = _rows_changed(saved, rows)
    if moved:
        return f"its {moved} rows changed since it was trained (other texts or labels)"
    before, now = learned_settings(saved.get("member")), learned_settings(recipe_dict(member))
    recorded, current = saved.get("base_fingerprint"), base_fingerprint(member)
    # members from before base fingerprints were recorded (or whose base cannot be told now) are
    # compared by their settings alone, `model` included
    if recorded is not None and current is not None:
        if recorded != current and before.get("model") == now.get("model"):
            return f"its base model's files changed since it was trained (model '{member.model}')"
        if recorded != current and local_base(member) is not None:
            # a local base is its files, wherever they are: a new path is named, but the files are why
            return (f"its base model changed since it was trained: model '{member.model}' (was "
                    f"'{before.get('model')}') holds other files")
        if recorded == current and local_base(member) is not None:
            before.pop("model", None)  # the same files elsewhere (a moved project): the same start
            now.pop("model", None)
    diffs = setting_changes(before, now)
    return f"its settings changed since it was trained ({diffs})" if diffs else None


def finished(path: Path, member: MemberConfig, labels: list[str], rows: dict | None = None) -> bool:
    """Whether `path` holds a complete member trained with exactly these settings, labels and base
    model files (and, given `rows` (`Splits.rows`), on the same training and validation rows)."""
    complete = (path / METRICS_FILE).is_file() and any(path.glob("model*.safetensors"))
    return complete and bool(saved_recipe(path)) and changed(path, member, labels, rows) is None


def _rows_changed(saved: dict, rows: dict | None) -> str | None:
    """Which split's rows differ from those `saved` (a member's recipe.json) records; members from
    before rows were recorded are taken as they are."""
    recorded = saved.get("rows")
    if rows is None or not isinstance(recorded, dict):
        return None
    return next((split for split in ("train", "valid") if recorded.get(split) != rows.get(split)), None)
