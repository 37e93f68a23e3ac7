"""`ensemble fit`: a whole recipe, from data files to a voted, reported ensemble directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from .data import TextDataset, check_known_labels, load_table, sorted_labels, stratified_split
from .ensemble import MANIFEST, Ensemble, evaluate, write_json
from .errors import EnsembleError
from .members import preflight
from .recipe import DataConfig, Recipe
from .train import Splits, train_member


def load_splits(data: DataConfig) -> tuple[Splits, TextDataset | None, list[str]]:
    """Train, validation (a file, or a stratified split of train) and optional test data, and the labels."""
    columns = dict(text=data.text, text_pair=data.text_pair, label=data.label, on_bad_rows=data.on_bad_rows)
    train = load_table(data.train, field="data.train", **columns)
    if data.valid is not None:
        valid = load_table(data.valid, field="data.valid", **columns)
    else:
        train, valid = stratified_split(train, data.valid_fraction, data.split_seed)
    test = load_table(data.test, field="data.test", **columns) if data.test is not None else None
    labels = sorted_labels(train.labels)
    if len(labels) < 2:
        raise EnsembleError(f"data.train: every row has the label '{labels[0]}'; a classifier needs at least two labels")
    check_known_labels(valid, labels, "data.valid")
    if test is not None:
        check_known_labels(test, labels, "data.test")
    return Splits(train, valid), test, labels


def fit(recipe: Recipe, out: Path, overwrite: bool = False, progress: bool = True) -> dict:
    """Train every member of `recipe` into ``out/members``, vote, and write the report.

    The test split is reported when the recipe has one, else the validation split.

    Example:
        >>> report = fit(load_recipe("recipes/demo.toml"), Path("runs/demo"))  # doctest: +SKIP
        >>> report["ensemble"]["accuracy"]  # doctest: +SKIP
        0.93
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EnsembleError(f"--out: '{out}' exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise EnsembleError(f"--out: '{out}' already exists and is not empty; choose another --out or pass --overwrite")
        (out / MANIFEST).unlink(missing_ok=True)  # the run is incomplete until the manifest is back
    splits, test, labels = load_splits(recipe.data)
    preflight(recipe.members)
    out.mkdir(parents=True, exist_ok=True)
    stale = out / "members"
    if overwrite and stale.is_dir():
        for old in stale.iterdir():
            if old.name not in {m.name for m in recipe.members}:
                shutil.rmtree(old, ignore_errors=True)

    for member in recipe.members:
        train_member(member, splits, labels, recipe.data, out / "members" / member.name, progress=progress)

    ens = Ensemble.from_dirs({m.name: out / "members" / m.name for m in recipe.members},
                             recipe.vote.method, recipe.vote.weights)
    eval_data, split = (test, "test") if test is not None else (splits.valid, "valid")
    report = evaluate(ens, eval_data, split, out)
    write_json(out / MANIFEST, ens.manifest())
    return report
