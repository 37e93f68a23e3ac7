"""`ensemble fit`: a whole recipe, from data files to a voted, reported ensemble directory."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .data import TextDataset, check_known_labels, load_table, sorted_labels, stratified_split
from .ensemble import MANIFEST, Ensemble, write_json
from .errors import EnsembleError
from .evaluate import evaluate, gold
from .members import METRICS_FILE, RECIPE_FILE, bf16_tip, preflight
from .recipe import DataConfig, MemberConfig, Recipe, recipe_dict
from .train import Diverged, Splits, process_state, train_member


def load_splits(data: DataConfig) -> tuple[Splits, TextDataset | None, list[str]]:
    """Train, validation (a file, or a stratified split of train) and optional test data, and the labels."""
    columns = dict(text=data.text, text_pair=data.text_pair, label=data.label, on_bad_rows=data.on_bad_rows)
    train = load_table(data.train, field="data.train", **columns)
    if data.valid is not None:
        valid = load_table(data.valid, field="data.valid", **columns)
    else:
        skipped = train.skipped
        train, valid = stratified_split(train, data.valid_fraction, data.split_seed)
        train.skipped = skipped  # bad rows of the file, counted once, on the split they came from
    test = load_table(data.test, field="data.test", **columns) if data.test is not None else None
    labels = sorted_labels(train.labels)
    if len(labels) < 2:
        raise EnsembleError(f"data.train: every row has the label '{labels[0]}'; a classifier needs at least two labels")
    check_known_labels(valid, labels, "data.valid")
    if test is not None:
        check_known_labels(test, labels, "data.test")
    return Splits(train, valid), test, labels


def fit(recipe: Recipe, out: Path, overwrite: bool = False, resume: bool = False, progress: bool = True,
        only: Sequence[str] | None = None) -> dict:
    """Train every member of `recipe` into ``out/members``, vote, and write the report.

    The test split is reported when the recipe has one, else the validation split. With
    `resume`, members already finished with the same settings are kept and an interrupted member
    continues from its last checkpoint. Under ``accelerate launch`` every process trains; the
    main process votes and writes the report (the others return an empty dict). `only` trains
    just the named members and skips the vote (a worker of `fit_concurrent`).

    Example:
        >>> report = fit(load_recipe("recipes/demo.toml"), Path("runs/demo"))  # doctest: +SKIP
        >>> report["ensemble"]["accuracy"]  # doctest: +SKIP
        0.93
    """
    out = Path(out)
    state = process_state()
    if out.exists() and not out.is_dir():
        raise EnsembleError(f"--out: '{out}' exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (overwrite or resume):
        raise EnsembleError(f"--out: '{out}' already exists and is not empty; choose another --out, "
                            "pass --resume to continue it, or --overwrite to start again")
    splits, test, labels = load_splits(recipe.data)
    preflight(recipe.members)
    tip = bf16_tip(recipe.members) if progress and state.is_main_process else None
    if tip:
        print(tip)
    state.wait_for_everyone()
    if state.is_main_process:
        (out / MANIFEST).unlink(missing_ok=True)  # the run is incomplete until the manifest is back
        out.mkdir(parents=True, exist_ok=True)
        members_dir = out / "members"
        if members_dir.is_dir() and only is None:
            for old in members_dir.iterdir():
                if old.name not in {m.name for m in recipe.members} and not old.name.startswith("."):
                    shutil.rmtree(old, ignore_errors=True)
    state.wait_for_everyone()

    failed: dict[str, str] = {}  # members whose loss diverged, under on_diverge = "skip"
    unknown = sorted(set(only or ()) - {m.name for m in recipe.members})
    if unknown:
        raise EnsembleError(f"--only: no member named '{unknown[0]}'; members: {', '.join(m.name for m in recipe.members)}")
    for member in recipe.members:
        if only is not None and member.name not in only:
            continue
        target = out / "members" / member.name
        if resume and finished(target, member, labels):
            if state.is_main_process:
                print(f"{member.name}: already trained with these settings; kept")
            continue
        try:
            train_member(member, splits, labels, recipe.data, target, progress=progress, resume=resume)
        except Diverged as exc:
            if member.train.on_diverge == "stop":
                raise
            failed[member.name] = str(exc)
            if state.is_main_process:  # an older member of that name must not vote in its place
                shutil.rmtree(target, ignore_errors=True)
                print(f"{member.name}: {exc}; left out of the vote (on_diverge = \"skip\")", file=sys.stderr)

    if not state.is_main_process or only is not None:
        return {}
    voters = [m.name for m in recipe.members if m.name not in failed]
    if not voters:
        raise EnsembleError("every member diverged (NaN or infinite loss); lower the learning rates and run again")
    ens = Ensemble.from_dirs({name: out / "members" / name for name in voters}, recipe.vote.method,
                             {k: v for k, v in recipe.vote.weights.items() if k in voters})
    # everything the vote learns (temperatures, weights, the stacker) comes from validation rows only
    truncated: dict[str, int] = {}
    valid_logits = ens.member_logits(splits.valid.texts, splits.valid.pairs, truncated)
    fitted = ens.fit_vote(valid_logits, gold(ens, splits.valid, "data.valid"), recipe.vote)
    skipped = {"train": splits.train.skipped, "valid": splits.valid.skipped if recipe.data.valid else 0,
               "test": test.skipped if test is not None else 0}
    info = {"skipped_rows": skipped, "failed_members": failed}
    if test is not None:
        report = evaluate(ens, test, "test", out, fitted=fitted, data_info=info)
    else:  # no test file: the report is on valid, whose logits are at hand
        report = evaluate(ens, splits.valid, "valid", out, fitted=fitted, data_info=info,
                          logits=valid_logits, truncated=truncated)
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


def fit_concurrent(recipe: Recipe, argv: list[str], out: Path, workers: int, overwrite: bool = False,
                   resume: bool = False) -> dict:
    """Train members concurrently, one worker process per device (round robin), then vote.

    Each worker runs ``ensemble fit ... --only NAMES`` with one GPU visible (``CUDA_VISIBLE_DEVICES``)
    or, without GPUs, an equal share of the CPU cores; `argv` is the recipe path and its --set /
    --scratch options. The vote and report follow once every worker has finished.

    Example:
        >>> fit_concurrent(recipe, ["recipes/project1.toml"], Path("runs/p1"), workers=4)  # doctest: +SKIP
    """
    import os
    import subprocess
    import sys

    import torch

    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (overwrite or resume):
        raise EnsembleError(f"--out: '{out}' already exists and is not empty; choose another --out, "
                            "pass --resume to continue it, or --overwrite to start again")
    if overwrite:
        shutil.rmtree(out, ignore_errors=True)
    gpus = torch.cuda.device_count()
    names = [m.name for m in recipe.members]
    jobs = []
    for k in range(min(workers, len(names))):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(k % gpus)
        else:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
        mine = ",".join(names[k::workers])
        command = [sys.executable, "-m", "ensemble", "fit", *argv, "--out", str(out), "--only", mine, "--resume", "--quiet"]
        jobs.append((mine, subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)))
    for mine, job in jobs:
        _, err = job.communicate()
        if job.returncode:
            last = (err.strip().splitlines() or ["(no output)"])[-1]
            raise EnsembleError(f"--concurrent: the worker training {mine} failed: {last}")
    return fit(recipe, out, resume=True)
