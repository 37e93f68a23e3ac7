"""End to end on real data: fit four scratch members and the pretrained MiniLM on an SST-5 sample,
vote again from the member directories, reload, and check every report number against values
recomputed independently from predictions.csv."""

import csv
import json
import math
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score

from ensemble import Ensemble
from ensemble.cli import main

pytestmark = pytest.mark.slow
ARCHES = ("albert", "electra", "roberta", "bert")


def sst_sample(shared_data: Path, split: str, n: int, out: Path) -> Path:
    """n random rows (seeded) of an SST-5 file, in its own TSV layout (unnamed index column included)."""
    lines = (shared_data / "cs224n" / f"ids-sst-{split}.csv").read_text(encoding="utf-8").splitlines()
    rows = np.random.default_rng(0).choice(np.arange(1, len(lines)), size=n, replace=False)
    out.write_text("\n".join([lines[0]] + [lines[i] for i in sorted(rows)]) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def run(shared_data, minilm, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    sst_sample(shared_data, "train", 700, tmp / "train.csv")
    sst_sample(shared_data, "dev", 200, tmp / "test.csv")
    members = "\n".join(
        f'[[members]]\nname = "{a}"\ninit = "scratch"\narch = "{a}"\nsize = "tiny"\nlr = 5e-4\nseed = {i}\n'
        for i, a in enumerate(ARCHES))
    (tmp / "recipe.toml").write_text(f"""
[data]
train = "train.csv"
test = "test.csv"
valid_fraction = 0.15
text = "sentence"
label = "sentiment"

[defaults]
epochs = 2
batch_size = 16
eval_batch_size = 64
max_length = 64

{members}
[[members]]
name = "minilm"
model = "{minilm}"
lr = 1e-4

[vote]
method = "soft"
weights = {{ minilm = 2.0 }}
""", encoding="utf-8")
    main(["fit", str(tmp / "recipe.toml"), "--out", str(tmp / "run"), "--quiet"])  # exits only on error
    return tmp


def read_predictions(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def fleiss(table: np.ndarray) -> float:
    """Fleiss' kappa from a (rows, classes) table of rater counts, written out from the definition."""
    n = table.sum(axis=1)[0]
    p_j = table.sum(axis=0) / table.sum()
    p_i = ((table * table).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_e = p_i.mean(), (p_j * p_j).sum()
    return float((p_bar - p_e) / (1 - p_e))


def test_fit_writes_members_and_report_consistent_with_predictions(run):
    out = run / "run"
    names = list(ARCHES) + ["minilm"]
    for name in names:
        member = out / "members" / name
        for f in ("config.json", "model.safetensors", "tokenizer.json", "metrics.json", "recipe.json", "README.md"):
            assert (member / f).is_file(), f"{name}/{f}"
        assert json.loads((member / "config.json").read_text())["label2id"] == {str(i): i for i in range(5)}
    manifest = json.loads((out / "ensemble.json").read_text())
    assert list(manifest["members"]) == names and manifest["weights"]["minilm"] == 2.0

    report = json.loads((out / "report.json").read_text())
    rows = read_predictions(out / "predictions.csv")
    assert report["split"] == "test" and report["rows"] == len(rows) == 200
    gold = [r["label"] for r in rows]
    preds = {n: [r[f"{n}_label"] for r in rows] for n in names}
    ens = [r["ensemble_label"] for r in rows]
    for n in names:
        acc = np.mean([p == g for p, g in zip(preds[n], gold)])
        assert report["members"][n]["accuracy"] == pytest.approx(acc)
        f1 = f1_score(gold, preds[n], labels=[str(i) for i in range(5)], average="macro", zero_division=0)
        assert report["members"][n]["macro_f1"] == pytest.approx(f1)
    assert report["ensemble"]["accuracy"] == pytest.approx(np.mean([p == g for p, g in zip(ens, gold)]))
    assert report["oracle_accuracy"] == pytest.approx(np.mean([any(preds[n][i] == gold[i] for n in names) for i in range(200)]))
    assert report["agreement"]["unanimous"] == pytest.approx(np.mean([len({preds[n][i] for n in names}) == 1 for i in range(200)]))
    for a, b in combinations(names, 2):
        share = np.mean([x == y for x, y in zip(preds[a], preds[b])])
        assert report["agreement"]["pairwise"][a][b] == pytest.approx(share)
        with warnings.catch_warnings():  # two members that each predict one class: kappa is 0/0
            warnings.simplefilter("ignore")
            kappa = cohen_kappa_score(preds[a], preds[b])
        assert report["agreement"]["cohen_kappa"][a][b] == pytest.approx(kappa if not math.isnan(kappa) else 1.0)
    table = np.array([[sum(preds[n][i] == str(c) for n in names) for c in range(5)] for i in range(200)])
    assert report["agreement"]["fleiss_kappa"] == pytest.approx(fleiss(table))
    # agreement column: share of member weight (minilm counts twice) behind the ensemble label
    weights = {n: 1.0 for n in ARCHES} | {"minilm": 2.0}
    for i, r in enumerate(rows):
        share = sum(w for n, w in weights.items() if preds[n][i] == ens[i]) / sum(weights.values())
        assert float(r["agreement"]) == pytest.approx(share, abs=1e-5)
    assert len(report["disputed"]) == 10
    assert "Pairwise agreement" in (out / "report.md").read_text()
    # the members learned something: the pretrained member beats the 5-class chance level clearly
    assert report["members"]["minilm"]["accuracy"] > 0.3


def test_load_predict_matches_predictions_csv(run):
    out = run / "run"
    ens = Ensemble.load(out)
    rows = read_predictions(out / "predictions.csv")
    texts = [r["text"] for r in rows]
    assert ens.predict(texts) == [r["ensemble_label"] for r in rows]
    proba = ens.predict_proba(texts)
    assert proba.shape == (200, 5) and list(ens.classes_) == [str(i) for i in range(5)]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(proba.max(axis=1), [float(r["ensemble_confidence"]) for r in rows], rtol=1e-4)


def test_plain_transformers_predicts_the_same_member_labels(run):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = run / "run"
    rows = read_predictions(out / "predictions.csv")
    texts = [r["text"] for r in rows]
    for name in ("roberta", "minilm"):
        path = out / "members" / name
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        with torch.inference_mode():
            logits = model(**tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")).logits
        labels = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
        assert labels == [r[f"{name}_label"] for r in rows], name


def test_vote_command_reproduces_and_switches_method(run):
    out = run / "run"
    members = [str(out / "members" / n) for n in (*ARCHES, "minilm")]
    main(["vote", "--members", *members, "--data", str(run / "test.csv"), "--out", str(run / "hard"),
          "--method", "hard", "--weights", "minilm=2"])
    report = json.loads((run / "hard" / "report.json").read_text())
    assert report["method"] == "hard" and report["rows"] == 200
    soft = json.loads((out / "report.json").read_text())
    for n in ARCHES:  # member numbers do not depend on the vote
        assert report["members"][n]["accuracy"] == soft["members"][n]["accuracy"]
    ens = Ensemble.load(run / "hard")
    assert ens.method == "hard" and (run / "hard" / "members" / "minilm" / "model.safetensors").is_file()
    rows = read_predictions(run / "hard" / "predictions.csv")
    assert ens.predict([r["text"] for r in rows]) == [r["ensemble_label"] for r in rows]
    with pytest.raises(Exception, match="a hard vote gives labels"):
        ens.predict_proba(["a film"])
