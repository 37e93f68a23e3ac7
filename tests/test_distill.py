"""Distillation: the loss, a student that follows its teacher, and `ensemble distill` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ensemble.data import load_table, sorted_labels
from ensemble.members import load_member
from ensemble.recipe import DataConfig, MemberConfig, TrainConfig
from ensemble.train import Splits, Teacher, distill_loss, train_member

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


@pytest.mark.slow
def test_a_student_learns_what_its_teacher_says_not_the_labels(tmp_path):
    train = load_table(DEMO / "train.csv").subset(range(192))
    valid = load_table(DEMO / "valid.csv").subset(range(48))
    labels = sorted_labels(train.labels)
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
    assert result["student"] == "scratch:roberta:tiny"
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")  # plain transformers loads it
    assert model.config.model_type == "roberta"
    member = load_member(tmp_path / "student")
    assert member.labels == ["negative", "neutral", "positive"]


@pytest.mark.parametrize("args, fragment", [
    (["--student", "scratch:gpt:tiny"], "--student: scratch students are scratch:ARCH[:SIZE]"),
    (["--student", "scratch:bert:huge"], "--student: scratch students are scratch:ARCH[:SIZE]"),
    (["--student", "scratch:bert", "--temperature", "0"], "--temperature: must be > 0"),
    (["--student", "scratch:bert", "--hard-weight", "2"], "--hard-weight: must be between 0 and 1"),
    (["--student", "scratch:bert", "--set", "lrr=1"], "unknown key (did you mean 'lr'?)"),
    (["--student", "somewhere/unknown-model"], "--student: cannot tell the architecture"),
])
def test_distill_input_errors(fitted, tmp_path, cli, args, fragment):
    code, _, err = cli(["distill", "--ensemble", str(fitted / "run"), "--out", str(tmp_path / "s"), *args])
    assert code == 2 and fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()
