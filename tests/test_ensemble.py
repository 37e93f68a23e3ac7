"""The Ensemble class and the predict path: shared tokenization, input order, streaming, devices."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ensemble.ensemble as ensemble_mod
from ensemble import Ensemble
from ensemble.cli import main
from ensemble.errors import EnsembleError
from ensemble.members import load_member

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [line.rsplit(",", 1)[0].strip('"') for line in (ROOT / "recipes" / "demo" / "test.csv").read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A fitted two-member ensemble plus a third member sharing bert's tokenizer (another head)."""
    tmp = tmp_path_factory.mktemp("ens")
    lines = (ROOT / "recipes" / "demo" / "train.csv").read_text(encoding="utf-8").splitlines()
    (tmp / "train.csv").write_text("\n".join(lines[:301]) + "\n", encoding="utf-8")
    (tmp / "r.toml").write_text(
        '[data]\ntrain = "train.csv"\nvalid_fraction = 0.2\n[defaults]\nepochs = 1\nmax_length = 32\nlr = 5e-4\n'
        + "".join(f'[[members]]\nname = "{a}"\ninit = "scratch"\narch = "{a}"\n' for a in ("bert", "roberta")),
        encoding="utf-8")
    main(["fit", str(tmp / "r.toml"), "--out", str(tmp / "run"), "--quiet"])
    twin = tmp / "run" / "members" / "bert_twin"
    shutil.copytree(tmp / "run" / "members" / "bert", twin)
    from safetensors.torch import load_file, save_file

    weights = load_file(twin / "model.safetensors")
    for key in ("classifier.weight", "classifier.bias"):  # a different head, same tokenizer
        weights[key] = weights[key].flip(0).contiguous()
    save_file(weights, twin / "model.safetensors", metadata={"format": "pt"})
    return tmp


def three(run) -> Ensemble:
    members = run / "run" / "members"
    return Ensemble.from_dirs({n: members / n for n in ("bert", "roberta", "bert_twin")})


def test_members_sharing_a_tokenizer_are_tokenized_once(run, monkeypatch):
    ens = three(run)
    assert ens.members["bert"].tokenizer_key == ens.members["bert_twin"].tokenizer_key
    assert ens.members["bert"].tokenizer_key != ens.members["roberta"].tokenizer_key
    calls = []
    real = ensemble_mod.encode
    monkeypatch.setattr(ensemble_mod, "encode", lambda tok, *a, **k: calls.append(tok) or real(tok, *a, **k))
    shared = ens.member_logits(TEXTS[:50])
    assert len(calls) == 2  # bert's tokenizer once for bert and bert_twin, roberta's once
    # the same numbers as each member predicting alone
    for k, name in enumerate(ens.members):
        alone = Ensemble([ens.members[name]]).member_logits(TEXTS[:50])[0]
        np.testing.assert_allclose(shared[k], alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shared[2], shared[0][:, ::-1], rtol=1e-5, atol=1e-5)  # the flipped head


def test_results_come_back_in_input_order(run):
    ens = three(run)
    texts = TEXTS[:80]
    perm = np.random.default_rng(0).permutation(len(texts))
    logits = ens.member_logits(texts)
    shuffled = ens.member_logits([texts[i] for i in perm])
    np.testing.assert_allclose(shuffled, logits[:, perm], rtol=1e-5, atol=1e-6)
    one_by_one = np.concatenate([ens.member_logits([t]) for t in texts[:10]], axis=1)
    np.testing.assert_allclose(one_by_one, logits[:, :10], rtol=1e-4, atol=1e-5)  # padding does not leak


def test_predict_file_streams_in_chunks_and_matches_vote(run, tmp_path):
    ens = Ensemble.load(run / "run")
    data = tmp_path / "big.csv"
    rows = TEXTS * 2  # 1,200 rows
    with open(data, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        writer.writerows([t] for t in rows)
    out = tmp_path / "pred.csv"
    assert ensemble_mod.predict_file(ens, data, out, chunk_rows=128, progress=False) == len(rows)
    with open(out, newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    vote = ens.vote(rows)
    assert [r["ensemble_label"] for r in got] == [ens.labels[i] for i in vote.labels]
    np.testing.assert_allclose([float(r["agreement"]) for r in got], vote.agreement, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_predict_command(run, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:30]), encoding="utf-8")
    main(["predict", "--ensemble", str(run / "run"), "--data", str(data), "--out", str(tmp_path / "p.csv"), "--quiet"])
    assert "30 rows predicted" in capsys.readouterr().out
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header == "text,bert_label,bert_confidence,roberta_label,roberta_confidence,ensemble_label,ensemble_confidence,agreement"
    with pytest.raises(SystemExit) as code:
        main(["predict", "--ensemble", str(run / "run"), "--data", str(data), "--out", str(tmp_path / "q.csv"),
              "--device", "cuda:7"])
    assert code.value.code == 2 and "device" in capsys.readouterr().err
    assert not (tmp_path / "q.csv").exists()


@pytest.mark.parametrize("device", ["gpu", "cuda:99", "cpu:1"])
def test_bad_devices_are_refused(run, device):
    with pytest.raises(EnsembleError, match="device: must be"):
        Ensemble([load_member(run / "run" / "members" / "bert")]).to(device)


def test_hard_vote_predict_proba_refused_and_pairs_checked(run):
    ens = Ensemble([load_member(run / "run" / "members" / "bert")], method="hard")
    with pytest.raises(EnsembleError, match="soft voting"):
        ens.predict_proba(["a film"])
    with pytest.raises(EnsembleError, match="single texts, not pairs"):
        ens.predict([("a", "b")])
