"""`ensemble distill`: one student member learns the ensemble's soft labels.

The student is an ordinary member (a Hugging Face directory any tool loads) of any architecture
and size: a hub id or local checkpoint, or a scratch model. It trains on the ensemble's training
split with `teacher.distill_loss` — the ensemble's probabilities softened by a temperature plus the
gold labels — and is compared with the ensemble and its best member on the held-out split, in
accuracy and in predict speed (``distill.json`` next to the student's weights).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .aggregate import aggregate
from .data import TextDataset, seen_in
from .ensemble import Ensemble
from .errors import EnsembleError
from .evaluate import gold
from .files import write_json
from .members import RECIPE_FILE, load_member, saved_recipe
from .preflight import preflight
from .recipe import (ARCHES, SIZES, USED_BY, DataConfig, MemberConfig, infer_arch, is_local, name_problem,
                     train_config, unused_setting)
from .teacher import Teacher
from .train import Splits, train_member

REPORT = "distill.json"


@dataclass(frozen=True)
class DistillResult:
    """What `distill` measured on the held-out split, and how the student was taught (also
    written as ``distill.json``). `gain_kept`: the share of the ensemble's accuracy gain over its
    best member that the student keeps (None where the ensemble does not beat that member)."""

    split: str
    rows: int
    ensemble_accuracy: float
    student_accuracy: float
    student_agreement: float  # share of the held-out rows where the student gives the ensemble's label
    members_accuracy: dict[str, float]
    best_member: str
    gain_kept: float | None
    ensemble_rows_per_s: float
    student_rows_per_s: float
    temperature: float
    hard_weight: float
    unlabeled_rows: int
    unlabeled_texts: str | None
    ensemble: str
    student: str
MAX_TEMPERATURE = 100.0


def student_config(spec: str, name: str, ens: Ensemble, overrides: list[str]) -> MemberConfig:
    """The student from ``--student``: a hub id or directory, or ``scratch:ARCH[:SIZE]``.

    Training settings start from the ensemble's first member's and take ``--set`` overrides.

    Example:
        >>> student_config("scratch:bert:mini", "student", ens, ["epochs=2"]).size  # doctest: +SKIP
        'mini'
    """
    problem = name_problem(name)
    if problem:  # checked before training: the comparison's Ensemble would refuse it only afterwards
        raise EnsembleError(f"--name: {problem}")
    first = next(iter(ens.members.values()))
    saved = saved_recipe(first.path).get("member", {}).get("train", {})
    train = train_config({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}, overrides)
    for key in sorted({item.partition("=")[0].strip() for item in overrides} & USED_BY.keys()):
        chooser, readers = USED_BY[key]
        if chooser != "method" and getattr(train, chooser) not in readers:
            raise unused_setting("--set", key, key, f"the student uses '{getattr(train, chooser)}'")
    if spec.startswith("scratch:"):
        parts = spec.split(":")
        arch, size = parts[1], parts[2] if len(parts) > 2 else "tiny"
        if arch not in ARCHES or size not in SIZES or len(parts) > 3:
            raise EnsembleError(f"--student: scratch students are scratch:ARCH[:SIZE] with ARCH one of "
                                f"{', '.join(ARCHES)} and SIZE one of {', '.join(SIZES)}; got '{spec}'")
        return MemberConfig(name, init="scratch", arch=arch, size=size, train=train)
    model = str(Path(spec).resolve()) if Path(spec).is_dir() else spec
    if is_local(spec) and not Path(spec).is_dir():
        raise EnsembleError(f"--student: '{spec}' is not a directory; give a checkpoint directory, a hub id, or "
                            "scratch:ARCH[:SIZE]")
    if infer_arch(model) is None:
        raise EnsembleError(f"--student: cannot tell the architecture of '{spec}'; give a checkpoint of one of "
                            f"{', '.join(ARCHES)}, or scratch:ARCH[:SIZE]")
    return MemberConfig(name, model=model, train=train)


def training_data(ens: Ensemble, moved: dict[str, Path] | None = None) -> DataConfig:
    """The data the ensemble's members were trained on, from their saved recipe; `moved` gives
    a file's new place ({"train": Path("new/train.csv")}) where the recorded one is gone (`distill`
    checks that its rows are the members')."""
    first = next(iter(ens.members.values()))
    data = saved_recipe(first.path).get("data")
    if not isinstance(data, dict) or not data.get("train"):
        raise EnsembleError(f"--ensemble: member '{first.name}' has no {RECIPE_FILE} naming its training data; "
                            "distill an ensemble made by 'ensemble fit'")
    paths = {k: Path(data[k]) if data.get(k) else None for k in ("train", "valid", "test")}
    for key, path in (moved or {}).items():
        if paths[key] is None:
            raise EnsembleError(f"--{key}: the members were trained without a data.{key} file; drop --{key}")
        if not Path(path).is_file():
            raise EnsembleError(f"--{key}: '{path}' is not a file; give the members' data.{key} file where it is now")
        paths[key] = Path(path)
    for key, path in paths.items():
        if path is not None and not path.is_file():
            raise EnsembleError(f"--ensemble: the members were trained on data.{key} = '{path}', which is gone; "
                                f"put it back, or give its new place with --{key} FILE")
    known = ("valid_fraction", "split_seed", "text", "text_pair", "label", "on_bad_rows", "quoting")
    return DataConfig(**paths, **{k: data[k] for k in known if k in data})


def distill(ens: Ensemble, student: MemberConfig, out: Path, *, temperature: float = 2.0, hard_weight: float = 0.5,
            unlabeled: TextDataset | None = None, progress: bool = True, resume: bool = False,
            overwrite: bool = False, moved: dict[str, Path] | None = None) -> DistillResult:
    """Train `student` on `ens`'s soft labels into `out` (a member directory); return the comparison.

    `unlabeled` adds a transfer set: texts without gold labels that the ensemble labels and the
    student learns from the soft labels alone. The members fitted the training rows, so there
    their probabilities are overconfident echoes of the labels; on unseen text they carry what
    the ensemble knows beyond its best member. `moved`: the members' data files' new places
    (see `training_data`); their rows must be those the members trained on. An existing `out`
    is replaced only with `overwrite` (or continued with `resume`); an `out` that is or holds one
    of the ensemble's members or data files, or lies in its members' folder, is refused.

    Example:
        >>> ens = Ensemble.load("runs/demo")  # doctest: +SKIP
        >>> result = distill(ens, student_config("scratch:bert:mini", "student", ens, []), Path("runs/student"))  # doctest: +SKIP
        >>> result.gain_kept  # doctest: +SKIP
        0.93
    """
    from .fit import load_splits
    from .settings import is_number

    # checked before the teacher labels a row: a notebook's mistakes cost nothing
    if not isinstance(ens, Ensemble):
        raise EnsembleError(f"distill: 'ens' must be an Ensemble (Ensemble.load(dir)); got {type(ens).__name__}")
    if not isinstance(student, MemberConfig):
        raise EnsembleError(f"distill: 'student' must be a MemberConfig; got {type(student).__name__} "
                            f"({student!r:.40}): make one with student_config(spec, name, ens, overrides)")
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise EnsembleError(f"distill: 'out' must be a directory path; got {out!r}")
    out = Path(out).expanduser()
    if overwrite and resume:
        raise EnsembleError("--overwrite and --resume: give one; --overwrite trains a new student, --resume continues "
                            "the one there")
    for name, value in (("temperature", temperature), ("hard_weight", hard_weight)):
        if not is_number(value):
            raise EnsembleError(f"--{name.replace('_', '-')} (distill's '{name}'): must be a number; got {value!r}")
    if not 0 < temperature <= MAX_TEMPERATURE:  # beyond, float32 softmaxes are flat to rounding: the KL is noise
        raise EnsembleError(f"--temperature: must be > 0 and <= {MAX_TEMPERATURE:g}; got {temperature}")
    if not 0 <= hard_weight <= 1:
        raise EnsembleError(f"--hard-weight: must be >= 0 and <= 1; got {hard_weight}")
    if unlabeled is not None and hard_weight == 1:
        raise EnsembleError("--hard-weight: 1 leaves the soft labels no weight, and the --unlabeled rows have only "
                            "those: give a weight below 1, or drop --unlabeled")
    data = training_data(ens, moved)  # the members' data: the student learns and is compared on the same rows
    check_student_out(ens, out, data, overwrite=overwrite, resume=resume)
    splits, test, labels = load_splits(data)
    recorded = saved_recipe(next(iter(ens.members.values())).path).get("rows")
    if moved and isinstance(recorded, dict):
        differ = [k for k in ("train", "valid") if recorded.get(k) not in (None, splits.rows[k])]
        if differ:
            flags = " or ".join(f"--{k}" for k in moved)
            raise EnsembleError(f"{flags}: the {' and '.join(differ)} rows read from it are not those the members "
                                "were trained on; give the files they were trained on")
    if sorted(labels) != sorted(ens.labels):
        raise EnsembleError(f"--ensemble: its labels {ens.labels} differ from its training data's {labels}")
    preflight([student], offline_hint="use --student scratch:ARCH[:SIZE] (e.g. scratch:bert:tiny) instead")
    if unlabeled is not None:
        for key in ("valid", "test"):  # rows the student picks its epoch on or is scored on
            held_file = getattr(data, key)
            if held_file is not None and unlabeled.path and Path(unlabeled.path).resolve() == Path(held_file).resolve():
                raise EnsembleError(f"--unlabeled: '{unlabeled.path}' is the members' data.{key} file; the student "
                                    f"would learn the rows it is {'scored' if key == 'test' else 'validated'} on: "
                                    "give texts the comparison does not use")
        for key, held in (("valid", splits.valid), ("test", test)):  # copies of them too, by content
            overlap = seen_in(held, unlabeled) if held is not None else 0
            if overlap:
                raise EnsembleError(f"--unlabeled: {overlap} of the members' {key} rows have the same text as a row of "
                                    f"'{unlabeled.path}'; the student would learn rows it is "
                                    f"{'scored' if key == 'test' else 'validated'} on: remove them from the file")
        if (unlabeled.pairs is None) != (splits.train.pairs is None):
            need = "needs a second text column" if splits.train.pairs is not None else "must have one text column"
            raise EnsembleError(f"--unlabeled: '{unlabeled.path}' {need}, like the members' training data")
        train = splits.train
        splits = Splits(TextDataset(
            texts=train.texts + unlabeled.texts,
            pairs=None if train.pairs is None else train.pairs + unlabeled.pairs,
            labels=list(train.labels) + [None] * len(unlabeled), path=train.path), splits.valid)
    # what taught the student: a kept student must have been taught the same way, by the same ensemble
    teaching = {"temperature": temperature, "hard_weight": hard_weight,
                "unlabeled_rows": 0 if unlabeled is None else len(unlabeled),
                "unlabeled_texts": None if unlabeled is None else unlabeled.fingerprint(),
                "ensemble": _teacher_id(ens)}
    if not (resume and _kept(out, student, labels, teaching)):
        # the teacher's probabilities for every training row, in the student's label order
        order = [ens.labels.index(label) for label in labels]
        teach = "teacher labels" if progress else None
        probs = _soft_scores(ens, ens.member_logits(splits.train.texts, splits.train.pairs, progress=teach))[:, order]
        out.parent.mkdir(parents=True, exist_ok=True)  # only now: a refused run leaves no folder behind
        train_member(student, splits, labels, data, out, progress=progress, resume=resume,
                     teacher=Teacher(probs.astype(np.float32), temperature, hard_weight))

    held, split = (test, "test") if test is not None else (splits.valid, "valid")
    result = DistillResult(**compare(ens, load_member(out, student.name), held, split), **teaching,
                           student=student.model or f"scratch:{student.arch}:{student.size}")
    write_json(out / REPORT, asdict(result))
    return result


def check_student_out(ens: Ensemble, out: Path, data: DataConfig, *, overwrite: bool, resume: bool) -> None:
    """Refuse a student directory that exists (without `overwrite` or `resume`), is a file, or is,
    holds or lies inside what the ensemble is made of: a member directory, the members' folder
    (a student there would pass for a member), the members' data files.

    Example:
        >>> check_student_out(Ensemble.load("runs/demo"), Path("runs/demo/members/bert"), None,
        ...                   overwrite=True, resume=False)  # doctest: +SKIP
        Traceback (most recent call last):
        ensemble.errors.EnsembleError: --out: 'runs/demo/members/bert' is the member 'bert' directory ...
    """
    from .flags import not_over_inputs

    if out.exists() and not (overwrite or resume):
        raise EnsembleError(f"--out: '{out}' already exists; choose another directory, or pass --overwrite or --resume")
    members = {f"member '{n}' directory": m.path for n, m in ens.members.items() if m.path is not None}
    files = {f"data.{key} file": getattr(data, key) for key in ("train", "valid", "test") if getattr(data, key)}
    not_over_inputs(out, {**members, **files})
    for folder in {m.parent.resolve() for m in members.values() if m.parent.name == "members"}:
        if folder in out.resolve().parents:  # a student there would pass for one of the members
            raise EnsembleError(f"--out: '{out}' is inside the ensemble's members folder ('{folder}'), where the "
                                "student would pass for one of its members; choose another --out")
    if out.exists() and not out.is_dir():
        raise EnsembleError(f"--out: '{out}' is a file; the student is a directory: choose a directory path")
    if out.is_dir() and resume and any(out.iterdir()) and not (out / "config.json").is_file():
        raise EnsembleError(f"--out: '{out}' is not a student's directory (no config.json), so --resume has nothing "
                            "there to continue; choose another --out, or pass --overwrite to replace it")


def _kept(out: Path, student: MemberConfig, labels: list[str], teaching: dict) -> bool:
    """For --resume: whether `out` already holds this student, trained the same way (then it is
    kept); else say what there is to continue, or why it trains again."""
    from .checkpoint import checkpoint_dir
    from .fit import changed, finished

    try:
        before = json.loads((out / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = None
    taught = isinstance(before, dict) and all(before.get(k) == v for k, v in teaching.items())
    if finished(out, student, labels) and taught:
        print(f"{student.name}: already distilled with these settings; kept")
        return True
    why = changed(out, student, labels) or (
        f"its {_what_changed(before, teaching)} changed" if isinstance(before, dict) and not taught else None)
    if why:
        print(f"{student.name}: {why}; training it again")
    elif not checkpoint_dir(out).is_dir():
        print(f"--resume: nothing to continue in '{out}'; training from the start")
    return False


def _teacher_id(ens: Ensemble) -> str:
    """The ensemble that teaches: its vote (manifest) and its members' directories, hashed."""
    described = [ens.manifest(), {n: str(m.path.resolve()) if m.path else None for n, m in ens.members.items()}]
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def _what_changed(before: dict, teaching: dict) -> str:
    """Which of the teaching settings differ from the distill.json of the student there.

    Example:
        >>> _what_changed({"temperature": 2.0, "ensemble": "a"}, {"temperature": 4.0, "ensemble": "b"})
        'temperature (2.0 -> 4.0) and ensemble (another one)'
    """
    names = {"hard_weight": "hard weight", "unlabeled_rows": "unlabelled row count",
             "unlabeled_texts": "unlabelled texts", "ensemble": "ensemble"}
    changed = [f"{names.get(k, k)} ({before.get(k)} -> {v})" if k in ("temperature", "hard_weight", "unlabeled_rows")
               else f"{names[k]} (another one)" for k, v in teaching.items() if before.get(k) != v]
    return " and ".join(changed) or "teaching"


def compare(ens: Ensemble, student, held: TextDataset, split: str) -> dict:
    """Accuracy of the ensemble, its best member and the student on `held`, how often the student
    gives the ensemble's label, and the predict rows/s of each."""
    y = gold(ens, held, split)
    if y is None:
        raise EnsembleError(f"{split}: has no labels; the student is compared on labelled held-out rows")
    alone = Ensemble([student])
    start = time.perf_counter()
    logits = ens.member_logits(held.texts, held.pairs)  # timed: no progress bar
    ensemble_labels = ens.vote_logits(logits, member_details=False).labels
    ensemble_seconds = time.perf_counter() - start
    start = time.perf_counter()
    student_names = alone.labels  # `labels` is a copy: taken once, not per row
    student_labels = np.array([student_names.index(x) for x in alone.predict(list(zip(held.texts, held.pairs))
                                                                              if held.pairs else held.texts)])
    student_seconds = time.perf_counter() - start
    ensemble_names = ens.labels
    student_labels = np.array([ensemble_names.index(student_names[i]) for i in student_labels])
    members = {name: float((logits[k].argmax(1) == y).mean()) for k, name in enumerate(ens.members)}
    best = max(members, key=members.get)
    acc_ens, acc_student = float((ensemble_labels == y).mean()), float((student_labels == y).mean())
    gain = acc_ens - members[best]
    return {"split": split, "rows": int(len(y)), "ensemble_accuracy": acc_ens, "student_accuracy": acc_student,
            "student_agreement": float((student_labels == ensemble_labels).mean()),
            "members_accuracy": members, "best_member": best,
            "gain_kept": None if gain <= 0 else (acc_student - members[best]) / gain,
            "ensemble_rows_per_s": len(y) / ensemble_seconds, "student_rows_per_s": len(y) / student_seconds}


def _soft_scores(ens: Ensemble, logits: np.ndarray) -> np.ndarray:
    """The ensemble's probabilities; a hard vote's shares are too coarse to teach, so its soft vote."""
    if ens.method != "hard":
        return ens.vote_logits(logits, member_details=False).scores
    names = list(ens.members)
    return aggregate(logits, "soft", [ens.weights[n] for n in names], [ens.temperatures[n] for n in names],
                     member_details=False).scores
