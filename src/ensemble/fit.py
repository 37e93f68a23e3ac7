"""`ensemble fit`: a whole recipe, from data files to a voted, reported ensemble directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .data import TextDataset, check_known_labels, load_table, sorted_labels, stratified_split
from .ensemble import MANIFEST, Ensemble, evaluate, write_json
from .errors import EnsembleError
from .members import METRICS_FILE, RECIPE_FILE, preflight
from .recipe import DataConfig, MemberConfig, Recipe, recipe_dict
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


def fit(recipe: Recipe, out: Path, overwrite: bool = False, resume: bool = False, progress: bool = True) -> dict:
    """Train every member of `recipe` into ``out/members``, vote, and write the report.

    The test split is reported when the recipe has one, else the validation split. With
    `resume`, members already finished with the same settings are kept and an interrupted member
    continues from its last checkpoint. Under ``accelerate launch`` every process trains; the
    main process votes and writes the report (the others return an empty dict).

    Example:
        >>> report = fit(load_recipe("recipes/demo.toml"), Path("runs/demo"))  # doctest: +SKIP
        >>> report["ensemble"]["accuracy"]  # doctest: +SKIP
        0.93
    """
    from accelerate import PartialState

    out = Path(out)
    state = PartialState()
    if out.exists() and not out.is_dir():
        raise EnsembleError(f"--out: '{out}' exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (overwrite or resume):
        raise EnsembleError(f"--out: '{out}' already exists and is not empty; choose another --out, "
                            "pass --resume to continue it, or --overwrite to start again")
    splits, test, labels = load_splits(recipe.data)
    preflight(recipe.members)
    state.wait_for_everyone()
    if state.is_main_process:
        (out / MANIFEST).unlink(missing_ok=True)  # the run is incomplete until the manifest is back
        out.mkdir(parents=True, exist_ok=True)
        members_dir = out / "members"
        if members_dir.is_dir():
            for old in members_dir.iterdir():
                if old.name not in {m.name for m in recipe.members} and not old.name.startswith("."):
                    shutil.rmtree(old, ignore_errors=True)
    state.wait_for_everyone()

    for member in recipe.members:
        target = out / "members" / member.name
        if resume and finished(target, member, labels):
            if state.is_main_process:
                print(f"{member.name}: already trained with these settings; kept")
            continue
        train_member(member, splits, labels, recipe.data, target, progress=progress, resume=resume)

    if not state.is_main_process:
        return {}
    ens = Ensemble.from_dirs({m.name: out / "members" / m.name for m in recipe.members},
                             recipe.vote.method, recipe.vote.weights)
    eval_data, split = (test, "test") if test is not None else (splits.valid, "valid")
    report = evaluate(ens, eval_data, split, out)
    write_json(out / MANIFEST, ens.manifest())
    return report


def finished(path: Path, member: MemberConfig, labels: list[str]) -> bool:
    """Whether `path` holds a complete member trained with exactly these settings and labels."""
    try:
        saved = json.loads((path / RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    complete = (path / METRICS_FILE).is_file() and any(path.glob("*.safetensors"))
    return complete and saved.get("member") == recipe_dict(member) and saved.get("labels") == labels
