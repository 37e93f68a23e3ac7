"""Distillation: the loss, a student that follows its teacher, and `ensemble distill` end to end."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ensemble import Ensemble
from ensemble.data import load_table
from ensemble.labels import sorted_labels
from ensemble.members import load_member
from ensemble.recipe import DataConfig, MemberConfig, TrainConfig
from ensemble.errors import EnsembleError
from ensemble.teacher import IGNORE, Teacher, distill_loss
from ensemble.train import Splits, train_member

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "demo"


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_distill_loss_matches_the_formula(t):
    torch.manual_seed(0)
    logits, teacher_logits = torch.randn(6, 3), torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    teacher = torch.softmax(teacher_logits, -1)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    p = torch.softmax(teacher_logits / t, -1)  # softening probabilities = softmax of logits / T
    q = torch.log_softmax(logits / t, -1)
    kl = (p * (p.log() - q)).sum(-1).mean()
    for hard_weight in (0.0, 0.3, 1.0):
        got = distill_loss(logits, labels, teacher, Teacher(np.zeros((1, 3)), t, hard_weight))
        assert got.item() == pytest.approx(hard_weight * ce.item() + (1 - hard_weight) * t * t * kl.item(), rel=1e-5)


def test_distill_loss_unlabelled_rows_count_in_the_soft_term_only():
    torch.manual_seed(1)
    logits, teacher = torch.randn(6, 3), torch.softmax(torch.randn(6, 3), -1)
    labels = torch.tensor([0, IGNORE, 2, IGNORE, 1, 2])
    known = labels != IGNORE
    spec = Teacher(np.zeros((1, 3)), 2.0, 0.4)
    soft_only = distill_loss(logits, labels, teacher, Teacher(np.zeros((1, 3)), 2.0, 0.0))
    ce = torch.nn.functional.cross_entropy(logits[known], labels[known])
    got = distill_loss(logits, labels, teacher, spec)
    assert got.item() == pytest.approx(0.4 * ce.item() + 0.6 * soft_only.item(), rel=1e-5)
    # a batch of unlabelled rows only: the soft term alone, not NaN
    none = torch.full((6,), IGNORE)
    assert distill_loss(logits, none, teacher, spec).item() == pytest.approx(0.6 * soft_only.item(), rel=1e-5)


def test_training_rows_without_labels_need_a_teacher(tmp_path):
    train = load_table(DEMO / "train.csv").subset(range(8))
    train.labels[3] = None
    cfg = MemberConfig("m", init="scratch", arch="bert", size="tiny", train=TrainConfig(epochs=1))
    with pytest.raises(EnsembleError, match=r"^members\[m\]: training rows without a label need a teacher"):
        train_member(cfg, Splits(train, train), sorted_labels(["negative", "neutral", "positive"]),
                     DataConfig(train=DEMO / "train.csv"), tmp_path / "m", progress=False)


@pytest.mark.slow
def test_a_student_learns_what_its_teacher_says_not_the_labels(tmp_path):
    train = load_table(DEMO / "train.csv").subset(range(192))
    valid = load_table(DEMO / "valid.csv").subset(range(48))
    labels = sorted_labels(train.labels)
    train.labels[96:] = [None] * 96  # half the rows are a transfer set: teacher only
    # a teacher that always says "neutral", whatever the gold label: with hard_weight 0 only it counts
    probs = np.tile(np.array([[0.02, 0.96, 0.02]], dtype=np.float32), (len(train), 1))
    cfg = MemberConfig("student", init="scratch", arch="bert", size="tiny",
                       train=TrainConfig(epochs=3, lr=1e-3, batch_size=16, max_length=32, seed=3))
    train_member(cfg, Splits(train, valid), labels, DataConfig(train=DEMO / "train.csv"), tmp_path / "s",
                 progress=False, teacher=Teacher(probs, temperature=1.0, hard_weight=0.0))
    from ensemble import Ensemble

    predicted = Ensemble([load_member(tmp_path / "s")]).predict(valid.texts)
    assert predicted.count("neutral") == len(predicted)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    from ensemble.cli import main

    tmp = tmp_path_factory.mktemp("distill")
    rows = (DEMO / "train.csv").read_text(encoding="utf-8").splitlines()[:401]
    (tmp / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp / "r.toml").write_text(
        '[data]\ntrain = "train.csv"\nvalid_fraction = 0.25\n[defaults]\nepochs = 2\nmax_length = 32\nlr = 5e-4\n'
        + "".join(f'[[members]]\nname = "{a}"\ninit = "scratch"\narch = "{a}"\n' for a in ("bert", "electra")),
        encoding="utf-8")
    main(["fit", str(tmp / "r.toml"), "--out", str(tmp / "run"), "--quiet"])
    return tmp


@pytest.mark.parametrize("change, message", [
    ({"student": "scratch:bert:tiny"}, "distill: 'student' must be a MemberConfig; got str ('scratch:bert:tiny'): make "
                                       "one with student_config(spec, name, ens, overrides)"),
    ({"out": 3}, "distill: 'out' must be a directory path; got 3"),
    ({"temperature": None}, "--temperature (distill's 'temperature'): must be a number; got None"),
    ({"hard_weight": "0.5"}, "--hard-weight (distill's 'hard_weight'): must be a number; got '0.5'"),
])
def test_distill_from_python_checks_its_arguments_before_any_work(fitted, tmp_path, change, message):
    from ensemble.distill import distill, student_config

    ens = Ensemble.load(fitted / "run")
    arguments = {"ens": ens, "student": student_config("scratch:bert:tiny", "student", ens, []),
                 "out": tmp_path / "student", **change}
    with pytest.raises(EnsembleError, match=f"^{re.escape(message)}$"):
        distill(**arguments)
    assert not (tmp_path / "student").exists()


def test_distill_from_python_guards_its_out_as_the_command_does(fitted, tmp_path):
    from ensemble.distill import distill, student_config

    run = tmp_path / "run"
    shutil.copytree(fitted / "run", run)
    ens = Ensemble.load(run)
    spec = student_config("scratch:bert:tiny", "student", ens, [])
    before = (run / "members" / "bert" / "model.safetensors").read_bytes()
    (tmp_path / "old").mkdir()
    for out, kwargs, message in (
            (run / "members" / "bert", {"overwrite": True}, f"--out: '{run / 'members' / 'bert'}' is the member 'bert' directory"),
            (run / "members" / "new", {}, "is inside the ensemble's members folder"),
            (tmp_path / "old", {}, f"--out: '{tmp_path / 'old'}' already exists; choose another directory, or pass --overwrite"),
            (tmp_path / "s", {"overwrite": True, "resume": True}, "--overwrite and --resume: give one")):
        with pytest.raises(EnsembleError, match=re.escape(message)):
            distill(ens, spec, out, **kwargs)
    assert (run / "members" / "bert" / "model.safetensors").read_bytes() == before
    assert not (tmp_path / "s").exists() and not (run / "members" / "new").exists()


@pytest.mark.slow
def test_distill_command_writes_an_ordinary_member_and_the_comparison(fitted, tmp_path, cli):
    code, out, err = cli(["distill", "--ensemble", str(fitted / "run"), "--student", "scratch:roberta:tiny",
                          "--out", str(tmp_path / "student"), "--set", "epochs=1", "--temperature", "3", "--quiet"])
    assert code == 0, err
    assert "student" in out and "rows/s" in out
    result = json.loads((tmp_path / "student" / "distill.json").read_text())
    assert result["split"] == "valid" and result["rows"] == 100
    assert set(result["members_accuracy"]) == {"bert", "electra"}
    assert 0 <= result["student_accuracy"] <= 1 and result["temperature"] == 3.0
    assert 0 <= result["student_agreement"] <= 1
    assert f"the student gives the ensemble's label on {result['student_agreement']:.1%} of the rows" in out
    assert result["student"] == "scratch:roberta:tiny"
    from ensemble.distill import DistillResult

    assert set(result) == set(DistillResult.__dataclass_fields__)  # what distill() returns, as JSON
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")  # plain transformers loads it
    assert model.config.model_type == "roberta"
    member = load_member(tmp_path / "student")
    assert member.labels == ["negative", "neutral", "positive"]
    again = ["distill", "--ensemble", str(fitted / "run"), "--student", "scratch:roberta:tiny", "--set", "epochs=1",
             "--quiet", "--resume"]
    code, out, err = cli(again + ["--out", str(tmp_path / "student"), "--temperature", "3"])
    assert code == 0 and "student: already distilled with these settings; kept" in out, err
    code, out, err = cli(again + ["--out", str(tmp_path / "student"), "--temperature", "2"])
    assert code == 0 and "student: its temperature (3.0 -> 2.0) changed; training it again" in out, err
    code, out, err = cli(again + ["--out", str(tmp_path / "fresh")])
    assert code == 0 and f"--resume: nothing to continue in '{tmp_path / 'fresh'}'; training from the start" in out, err


@pytest.mark.slow
def test_distill_command_learns_from_unlabelled_texts(fitted, tmp_path, cli):
    rows = (DEMO / "valid.csv").read_text(encoding="utf-8").splitlines()[1:61]
    unlabelled = tmp_path / "more.jsonl"  # another format, text column only
    unlabelled.write_text("".join(json.dumps({"text": row.rsplit(",", 1)[0].strip('"')}) + "\n" for row in rows),
                          encoding="utf-8")
    code, out, err = cli(["distill", "--ensemble", str(fitted / "run"), "--student", "scratch:bert:tiny",
                          "--out", str(tmp_path / "student"), "--set", "epochs=1", "--unlabeled", str(unlabelled),
                          "--hard-weight", "0.3", "--quiet"])
    assert code == 0, err
    assert "60 unlabelled rows" in out
    result = json.loads((tmp_path / "student" / "distill.json").read_text())
    assert result["unlabeled_rows"] == 60 and result["hard_weight"] == 0.3
    card = (tmp_path / "student" / "README.md").read_text(encoding="utf-8")
    # 300 labelled rows and the transfer set
    assert "- Data: 360 training rows (60 of them unlabelled, taught by the ensemble alone), 100 validation rows" in card
    assert "as a student distilled from a voted ensemble" in card
    assert "- Distilled from an ensemble: trained on its soft labels at temperature 2, with 0.3 of the loss" in card


@pytest.mark.parametrize("args, fragment", [
    (["--student", "scratch:gpt:tiny"], "--student: scratch students are scratch:ARCH[:SIZE]"),
    (["--student", "scratch:bert:huge"], "--student: scratch students are scratch:ARCH[:SIZE]"),
    (["--student", "scratch:bert", "--temperature", "0"], "--temperature: must be > 0"),
    # float32 softmaxes at such temperatures are flat to rounding: the KL term went negative
    (["--student", "scratch:bert", "--temperature", "1e5"], "--temperature: must be > 0 and <= 100; got 100000.0"),
    (["--student", "scratch:bert", "--set", "momentum=0.9"],
     "--set: momentum: only optimizer 'rmsprop' or 'sgd' reads it, and the student uses 'adamw'; remove it"),
    (["--student", "/nowhere/checkpoint"], "--student: '/nowhere/checkpoint' is not a directory"),
    (["--student", "scratch:bert", "--unlabeled", str(DEMO / "test.csv"), "--hard-weight", "1"],
     "--hard-weight: 1 leaves the soft labels no weight, and the --unlabeled rows have only those"),
    (["--student", "scratch:bert", "--hard-weight", "2"], "--hard-weight: must be >= 0 and <= 1"),
    (["--student", "scratch:bert", "--set", "lrr=1"], "--set: lrr: unknown key (did you mean 'lr'?)"),
    (["--student", "somewhere/unknown-model"], "--student: cannot tell the architecture"),
    (["--student", "scratch:bert", "--name", "a/b"], "--name: use letters, digits, '-', '_' or '.'"),
    (["--student", "scratch:bert", "--unlabeled", "nowhere.csv"], "--unlabeled: file not found: 'nowhere.csv'"),
    (["--student", "scratch:bert", "--unlabeled", str(DEMO / "train.csv"), "--text", "body"],
     "--unlabeled: column 'body' not found"),
    (["--student", "scratch:bert", "--text-pair", "s2"],
     "--text-pair: names a column of --unlabeled's file, and no --unlabeled was given"),
])
def test_distill_input_errors(fitted, tmp_path, cli, args, fragment):
    code, _, err = cli(["distill", "--ensemble", str(fitted / "run"), "--out", str(tmp_path / "s"), *args])
    assert code == 2 and fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()


def test_distill_never_writes_over_the_ensemble_it_reads(fitted, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(fitted / "run", run)
    unlabeled = tmp_path / "unlabeled.csv"
    unlabeled.write_text("text\na film\n", encoding="utf-8")
    for out, what in ((run, "is the --ensemble directory"), (run / "members" / "bert", "is inside the --ensemble directory"),
                      (run / "members" / "bert" / "x", "is inside the member 'bert' directory"),
                      (run / "members" / "student", "is inside the ensemble's members folder"),
                      (tmp_path, "holds the --ensemble directory")):
        code, _, err = cli(["distill", "--ensemble", str(run), "--student", "scratch:bert:tiny", "--out", str(out),
                            "--overwrite", "--quiet"])
        assert code == 2 and f"--out: '{out}' {what}" in err, err
    code, _, err = cli(["distill", "--ensemble", str(run), "--student", "scratch:bert:tiny", "--unlabeled", str(unlabeled),
                        "--out", str(unlabeled), "--overwrite", "--quiet"])
    assert code == 2 and f"--out: '{unlabeled}' is the --unlabeled file" in err, err
    assert unlabeled.read_text(encoding="utf-8") == "text\na film\n"
    assert Ensemble.load(run).predict(["a film"])  # still whole


def test_unlabeled_texts_may_not_be_the_rows_the_student_is_judged_on(fitted, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(fitted / "run", run)
    valid = tmp_path / "valid.csv"
    valid.write_text("\n".join((fitted / "train.csv").read_text(encoding="utf-8").splitlines()[:61]) + "\n", encoding="utf-8")
    for member in (run / "members").iterdir():  # as if the members had been trained with this data.valid
        recipe = json.loads((member / "recipe.json").read_text(encoding="utf-8"))
        recipe["data"]["valid"] = str(valid)
        (member / "recipe.json").write_text(json.dumps(recipe), encoding="utf-8")
    code, _, err = cli(["distill", "--ensemble", str(run), "--student", "scratch:bert:tiny", "--out", str(tmp_path / "s"),
                        "--unlabeled", str(valid), "--quiet"])
    assert code == 2 and f"--unlabeled: '{valid}' is the members' data.valid file" in err, err
    assert not (tmp_path / "s").exists()


def test_distill_never_writes_over_the_members_data_and_resumes_only_a_student(fitted, tmp_path, cli):
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(fitted / "run", run)
    data.mkdir()
    shutil.copy(fitted / "train.csv", data / "train.csv")
    for member in (run / "members").iterdir():  # as if the members had been trained on data/train.csv
        recipe = json.loads((member / "recipe.json").read_text(encoding="utf-8"))
        recipe["data"]["train"] = str(data / "train.csv")
        (member / "recipe.json").write_text(json.dumps(recipe), encoding="utf-8")
    args = ["distill", "--ensemble", str(run), "--student", "scratch:bert:tiny", "--quiet"]
    code, _, err = cli(args + ["--out", str(data), "--overwrite"])
    assert code == 2 and f"--out: '{data}' holds the data.train file" in err, err
    code, _, err = cli(args + ["--out", str(data / "train.csv"), "--overwrite"])
    assert code == 2 and f"--out: '{data / 'train.csv'}' is the data.train file" in err, err
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    code, _, err = cli(args + ["--out", str(tmp_path / "notes.txt"), "--overwrite"])
    assert code == 2 and "is a file; the student is a directory" in err, err
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.txt").write_text("mine", encoding="utf-8")
    code, _, err = cli(args + ["--out", str(other), "--resume"])
    assert code == 2 and "is not a student's directory (no config.json), so --resume has nothing there" in err, err
    assert (other / "chapter1.txt").read_text(encoding="utf-8") == "mine"
    assert (data / "train.csv").is_file() and sorted(p.name for p in data.iterdir()) == ["train.csv"]


def test_unlabeled_texts_are_checked_against_the_held_out_rows_by_content(fitted, tmp_path, cli):
    # the validation rows were split off the training file: that file as a transfer set holds them
    code, _, err = cli(["distill", "--ensemble", str(fitted / "run"), "--student", "scratch:bert:tiny", "--quiet",
                        "--out", str(tmp_path / "s"), "--unlabeled", str(fitted / "train.csv")])
    assert code == 2 and "--unlabeled: 100 of the members' valid rows have the same text as a row of" in err, err
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_distill_finds_the_members_data_where_it_moved(fitted, tmp_path, cli):
    shutil.copytree(fitted / "run", tmp_path / "run")
    for recipe_file in (tmp_path / "run" / "members").glob("*/recipe.json"):
        recipe = json.loads(recipe_file.read_text())
        recipe["data"]["train"] = str(tmp_path / "gone" / "train.csv")
        recipe_file.write_text(json.dumps(recipe))
    args = ["distill", "--ensemble", str(tmp_path / "run"), "--student", "scratch:bert:tiny", "--set", "epochs=1",
            "--quiet", "--out", str(tmp_path / "student")]
    code, _, err = cli(args)
    assert code == 2 and "which is gone; put it back, or give its new place with --train FILE" in err, err
    other = tmp_path / "other.csv"
    other.write_text("\n".join((fitted / "train.csv").read_text(encoding="utf-8").splitlines()[:301]) + "\n",
                     encoding="utf-8")
    code, _, err = cli(args + ["--train", str(other)])
    assert code == 2 and "--train: the train and valid rows read from it are not those the members were trained on" in err
    code, out, err = cli(args + ["--train", str(fitted / "train.csv")])
    assert code == 0, err
    assert json.loads((tmp_path / "student" / "distill.json").read_text())["rows"] == 100
