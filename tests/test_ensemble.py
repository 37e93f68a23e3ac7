"""The Ensemble class and the predict path: shared tokenization, input order, streaming, devices."""

import csv
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import pytest

import ensemble.evaluate as evaluate_mod
import ensemble.forward as forward
from ensemble import Ensemble
from ensemble.cli import main
from ensemble.errors import EnsembleError
from ensemble.members import load_member
from ensemble.recipe import VoteConfig

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


def test_save_never_deletes_what_is_there_unless_asked(run, tmp_path):
    """save() refuses a non-empty directory and a file; overwrite=True replaces the directory whole,
    also the one the ensemble was loaded from (its members are copied out before the swap)."""
    ens = three(run)
    busy = tmp_path / "busy"
    (busy / "members" / "bert").mkdir(parents=True)
    (busy / "members" / "bert" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(EnsembleError, match=r"Ensemble.save: '.*busy' is not empty; choose a new directory, or pass "
                                            r"overwrite=True"):
        ens.save(busy)
    assert (busy / "members" / "bert" / "notes.txt").read_text(encoding="utf-8") == "mine"
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(EnsembleError, match="is a file; give a directory path"):
        ens.save(tmp_path / "file")
    ens.save(busy, overwrite=True)
    assert not (busy / "members" / "bert" / "notes.txt").exists()
    assert sorted(p.name for p in (busy / "members").iterdir()) == ["bert", "bert_twin", "roberta"]
    again = Ensemble.load(busy)
    again.save(busy, overwrite=True)  # onto itself
    np.testing.assert_array_equal(Ensemble.load(busy).vote(TEXTS[:20]).labels, ens.vote(TEXTS[:20]).labels)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_members_sharing_a_tokenizer_are_tokenized_once(run, monkeypatch):
    ens = three(run)
    assert ens.members["bert"].tokenizer_key == ens.members["bert_twin"].tokenizer_key
    assert ens.members["bert"].tokenizer_key != ens.members["roberta"].tokenizer_key
    calls = []
    real = forward.encode
    monkeypatch.setattr(forward, "encode", lambda tok, *a, **k: calls.append(tok) or real(tok, *a, **k))
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


@pytest.mark.parametrize("every", [1, 3, 100])
def test_logits_read_back_in_groups_keep_their_rows(run, monkeypatch, every):
    """Logits queued for several batches (as on a GPU) are put back in input order, and the
    progress bar counts every row once."""
    from ensemble.batching import encode

    ens = three(run)
    member = ens.members["roberta"]
    enc = encode(member.tokenizer, TEXTS[:80], None, member.max_length)
    monkeypatch.setattr(forward, "READBACK_BATCHES", 1)
    want = forward.predict_logits(member, enc, 8)

    class Bar:
        seen = 0

        def update(self, n):
            self.seen += n

    bar = Bar()
    monkeypatch.setattr(forward, "READBACK_BATCHES", every)
    got = forward.predict_logits(member, enc, 8, bar=bar)
    np.testing.assert_array_equal(got, want)
    assert bar.seen == 80


def test_predict_file_streams_in_chunks_and_matches_vote(run, tmp_path):
    ens = Ensemble.load(run / "run")
    data = tmp_path / "big.csv"
    rows = TEXTS * 2  # 1,200 rows
    with open(data, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        writer.writerows([t] for t in rows)
    out = tmp_path / "pred.csv"
    assert evaluate_mod.predict_file(ens, data, out, chunk_rows=128, progress=False) == len(rows)
    with open(out, newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    vote = ens.vote(rows)
    assert [r["ensemble_label"] for r in got] == [ens.labels[i] for i in vote.labels]
    np.testing.assert_allclose([float(r["agreement"]) for r in got], vote.agreement, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_predict_command(run, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:30]), encoding="utf-8")
    out = tmp_path / "new" / "dirs" / "p.csv"  # made as needed, like vote's --out
    main(["predict", "--ensemble", str(run / "run"), "--data", str(data), "--out", str(out), "--quiet"])
    assert "30 rows predicted" in capsys.readouterr().out
    header = out.read_text().splitlines()[0]
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
    with pytest.raises(EnsembleError, match="a hard vote gives labels"):
        ens.predict_proba(["a film"])
    with pytest.raises(EnsembleError, match="single texts, not pairs"):
        ens.predict([("a", "b")])


@pytest.mark.parametrize("texts, message", [
    ("a single review", "texts: give a list of strings; got a single str (wrap it: [text])"),
    (["a film", None], "texts[1] must be a string; got NoneType (None): fill or drop the missing texts"),
    ([float("nan")], "texts[0] must be a string; got float (nan): fill or drop the missing texts"),
    ([b"bytes"], "texts[0] must be a string; got bytes (b'bytes')"),
    (["a film", 3], "texts[1] must be a string; got int (3)"),
    (["a film", ""], "texts[1] is empty (''): fill or drop the empty texts"),
    (["  \n"], "texts[0] is blank ('  \\n'): fill or drop the empty texts"),
    (7, "texts: give a list of strings; got int"),
    ({"a film": 1}, "texts: give a list of strings; got a dict (its keys would be the texts)"),
    ({"a film", "dull"}, "texts: give a list of strings; got a set (it has no order)"),
    (np.array([["a", "b", "c"]]), "texts: give a 1-D list of strings, or (N, 2) rows of (text, text_pair); got an "
                                  "array of shape (1, 3)"),
    (["fine", "cut \ud83d"], "texts[1] is not valid Unicode: lone surrogate '\\ud83d' at character 4; drop or replace "
                              "it (e.g. text.encode('utf-8', 'replace').decode())"),
    (["a film", ("a", "b")], "texts[1] must be a string; got tuple (('a', 'b')): give every row as a (text, text_pair) "
                             "tuple, or plain strings with pairs="),
    ([np.float32("nan")], "texts[0] must be a string; got float32 (np.float32(nan)): fill or drop the missing texts"),
    ([["a film"], ["dull"]], "texts[0] is a list (['a film']); these members were trained on single texts, not pairs: "
                             "pass plain strings"),
])
@pytest.mark.parametrize("call", ["predict", "predict_proba", "vote", "member_logits"])
def test_texts_that_are_not_a_list_of_strings_are_refused_by_name(run, texts, message, call):
    # A lone string used to be read as one text per character; None and NaN as the text "None" / "nan".
    ens = Ensemble([load_member(run / "run" / "members" / "bert")])
    with pytest.raises(EnsembleError, match=f"^{re.escape(message)}$"):
        getattr(ens, call)(texts)


class _Frame:
    """What matters of a pandas DataFrame here: it iterates over its column names."""

    columns, iloc = ["text"], None

    def __iter__(self):
        return iter(self.columns)


def test_a_dataframe_is_refused_with_how_to_pass_its_column(run):
    with pytest.raises(EnsembleError, match=re.escape("texts: got a DataFrame, which iterates over its column names; "
                                                      "pass its text column (df['text'])")):
        three(run).predict(_Frame())


def test_a_dicts_keys_are_texts_in_its_order(run):
    ens = three(run)
    assert ens.predict({"the story is gripping.": 1, "the plot is boring.": 0}.keys()) == ens.predict(
        ["the story is gripping.", "the plot is boring."])


def test_one_pair_not_in_a_list_is_told_to_go_in_one():
    with pytest.raises(EnsembleError, match=re.escape("give (text, text_pair) tuples or pairs=: one pair alone goes in "
                                                      "a list, [(text, text_pair)]")):
        forward.split_pairs(("A man plays.", "Someone plays."), None, text_pair=True)


def test_an_array_of_two_columns_is_read_as_pairs(run):
    ens = three(run)
    with pytest.raises(EnsembleError, match="trained on single texts, not pairs"):
        ens.predict(np.array([["a man plays", "someone plays"]]))


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "the 'batch_size' parameter must be an integer >= 1; got 0"),
    ({"batch_size": -1}, "the 'batch_size' parameter must be an integer >= 1; got -1"),
    ({"batch_size": 2.5}, "the 'batch_size' parameter must be an integer >= 1; got 2.5"),
])
def test_a_bad_batch_size_is_refused(run, kwargs, message):
    with pytest.raises(EnsembleError, match=f"^{re.escape(message)}$"):
        Ensemble([load_member(run / "run" / "members" / "bert")], **kwargs)


@pytest.mark.parametrize("setting, value, message", [
    ("batch_size", 0, "the 'batch_size' parameter must be an integer >= 1; got 0"),
    ("batch_size", "256", "the 'batch_size' parameter must be an integer >= 1; got '256'"),
    ("precision", "fp16", "the 'precision' parameter must be one of {'auto', 'fp32', 'bf16'}; got 'fp16'"),
    ("method", "average", "the 'method' parameter must be one of"),
    ("abstain_below", 1.5, "the 'abstain_below' parameter must be a number in [0, 1] or None; got 1.5"),
    ("abstain_on", "margin", "the 'abstain_on' parameter must be one of"),
    ("weights", {"bret": 2.0}, "weights: no member named 'bret'; members: "),
    ("weights", [1, 2], "the 'weights' parameter must be a dict of member name -> number, or None; got list"),
    ("temperatures", {"bert": 0.0}, "temperatures.bert: must be a finite number >= 1e-06; got 0.0"),
    ("temperatures", {"bert": 1e-39}, "temperatures.bert: must be a finite number >= 1e-06; got 1e-39"),
    ("ensemble_temperature", "x", "the 'ensemble_temperature' parameter must be a finite number > 0; got 'x'"),
    ("ensemble_temperature", -1, "the 'ensemble_temperature' parameter must be a finite number > 0; got -1"),
    ("labels", ["positive", "negative"], "labels: the class order is fixed when an ensemble is made"),
])
def test_a_setting_changed_after_loading_is_checked_on_assignment(run, setting, value, message):
    ens = Ensemble.load(run / "run")
    before = getattr(ens, setting)
    with pytest.raises(EnsembleError, match=f"^{re.escape(message)}"):
        setattr(ens, setting, value)
    assert getattr(ens, setting) == before  # a refused value leaves the old one


def test_a_setting_changed_after_loading_takes_effect(run):
    ens = Ensemble.load(run / "run")
    ens.batch_size, ens.abstain_below = np.int64(3), 1.0
    assert ens.batch_size == 3 and type(ens.batch_size) is int
    assert set(ens.predict(["the story is gripping.", "the plot is boring."])) == {"abstain"}
    ens.abstain_below = None
    assert "abstain" not in ens.predict(["the story is gripping."])
    ens.weights = {"bert": 3}  # the others get weight 1.0
    assert ens.weights["bert"] == 3.0 and set(ens.weights) == set(ens.members)
    ens.ensemble_temperature = 2
    assert ens.ensemble_temperature == 2.0


def test_weights_and_temperatures_change_only_by_assignment(run):
    import copy
    import pickle

    ens = Ensemble.load(run / "run")
    with pytest.raises(TypeError, match="assigning a whole dict"):  # in place, a -5 would skip the checks
        ens.weights["bert"] = -5.0
    with pytest.raises(TypeError):
        ens.temperatures.update(bert=0.0)
    weights = ens.weights  # still a dict: JSON, pickle and copies work
    assert json.loads(json.dumps(weights)) == pickle.loads(pickle.dumps(weights)) == copy.deepcopy(weights) == weights
    assert json.loads(json.dumps(ens.manifest()))["weights"] == weights
    ens.weights = {**ens.weights, "bert": 2.0}
    assert ens.weights["bert"] == 2.0


def test_an_ensemble_without_its_learned_weights_is_not_saved_as_if_it_had_them(run, tmp_path):
    ens = Ensemble.load(run / "run")
    ens.method = "weighted"
    with pytest.raises(EnsembleError, match="^Ensemble.save: method 'weighted' has no weights of its own yet"):
        ens.save(tmp_path / "w")
    ens.weights = {"bert": 2.0}
    ens.save(tmp_path / "w", overwrite=np.True_)
    assert Ensemble.load(tmp_path / "w").weights["bert"] == 2.0


def test_labels_and_classes_stay_in_step_with_the_probability_columns(run):
    ens = Ensemble.load(run / "run")
    ens.labels.reverse()  # a copy: the ensemble's order is not changed behind its back
    proba = ens.predict_proba(["the story is gripping."])
    assert list(ens.classes_) == ens.labels and ens.classes_[proba.argmax()] == ens.predict(["the story is gripping."])[0]


def test_weights_given_by_assignment_count_as_learned_and_switching_method_asks_again(run):
    members = run / "run" / "members"
    ens = Ensemble.from_dirs({n: members / n for n in ("bert", "roberta")}, method="weighted")
    with pytest.raises(EnsembleError, match="learns its weights on validation data first"):
        ens.predict(["a fine film"])
    ens.weights = {"bert": 1, "roberta": 3}
    assert len(ens.predict(["a fine film"])) == 1
    plain = Ensemble.from_dirs({n: members / n for n in ("bert", "roberta")})
    plain.method = "selection"  # the equal weights of a soft vote are not selection's picks
    with pytest.raises(EnsembleError, match=r"or give them: weights= or ens.weights = \{name: weight\}"):
        plain.predict(["a fine film"])
    plain.method = "soft"
    assert len(plain.predict(["a fine film"])) == 1


def test_settings_have_their_docs_in_help(run):
    assert "read-only copy" in Ensemble.weights.__doc__ and "forward pass" in Ensemble.batch_size.__doc__
    member = Ensemble.load(run / "run").members["bert"]
    assert repr(member).startswith("Member(name='bert', path=") and len(repr(member)) < 400


def test_save_refuses_an_overwrite_that_is_not_a_bool(run, tmp_path):
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "keep.txt").write_text("x")
    with pytest.raises(EnsembleError, match=r"^Ensemble.save: the 'overwrite' parameter must be True or False; got 'no'$"):
        Ensemble.load(run / "run").save(tmp_path / "saved", overwrite="no")
    assert (tmp_path / "saved" / "keep.txt").exists()


def test_a_path_may_start_with_a_tilde(run, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    Ensemble.load(run / "run").save("~/saved")
    assert (tmp_path / "saved" / "ensemble.json").is_file() and list(Ensemble.load("~/saved").members)


def test_numpy_numbers_are_numbers(run):
    members = [load_member(run / "run" / "members" / n) for n in ("bert", "roberta")]
    ens = Ensemble(members, weights={"bert": np.float32(2.0), "roberta": np.int64(1)},
                   temperatures={"bert": np.float32(1.5)}, abstain_below=np.float32(0.5), batch_size=np.int64(8))
    assert ens.weights == {"bert": 2.0, "roberta": 1.0} and ens.temperatures["bert"] == 1.5
    assert ens.abstain_below == 0.5 and ens.batch_size == 8
    with pytest.raises(EnsembleError, match=r"weights.bert: must be a finite number >= 0; got True"):
        Ensemble(members, weights={"bert": True})


def test_opening_the_manifest_or_a_list_of_dirs_says_what_to_pass(run):
    with pytest.raises(EnsembleError, match=r"ensemble '.*ensemble.json': the manifest itself; pass its directory '.*run'$"):
        Ensemble.load(run / "run" / "ensemble.json")
    with pytest.raises(EnsembleError, match=r"Ensemble.from_dirs: 'dirs' must be a dict of member name -> directory"):
        Ensemble.from_dirs([run / "run" / "members" / "bert"])


def test_save_refuses_to_write_over_a_directory_its_members_are_read_from(run, tmp_path):
    shutil.copytree(run / "run", tmp_path / "runs" / "a")
    (tmp_path / "runs" / "b").mkdir()
    (tmp_path / "runs" / "b" / "keep.txt").write_text("other run", encoding="utf-8")
    ens = Ensemble.load(tmp_path / "runs" / "a")
    for target, word in ((tmp_path / "runs" / "a" / "members" / "bert", "is inside member 'bert'"),
                         (tmp_path / "runs" / "a" / "members" / "bert" / "sub", "is inside member 'bert'"),
                         (tmp_path / "runs", "holds member"),
                         (tmp_path / "runs" / "a" / "members", "holds member")):
        with pytest.raises(EnsembleError, match=f"Ensemble.save: '.*' {word}.*save it to another directory"):
            ens.save(target, overwrite=True)
    assert (tmp_path / "runs" / "b" / "keep.txt").is_file()
    ens.save(tmp_path / "runs" / "a", overwrite=True)  # over its own directory: fine
    assert Ensemble.load(tmp_path / "runs" / "a").labels == ens.labels


def test_any_iterable_of_strings_is_accepted_and_no_texts_give_no_rows(run):
    ens = three(run)
    want = ens.predict(["a fine film", "dull"])
    assert ens.predict(("a fine film", "dull")) == want
    assert ens.predict(t for t in ["a fine film", "dull"]) == want
    assert ens.predict(np.array(["a fine film", "dull"])) == want
    assert ens.predict([]) == []
    assert ens.predict_proba([]).shape == (0, len(ens.labels))
    vote = ens.vote([])
    assert vote.labels.shape == (0,) and vote.equal_counts.tolist() == [[0] * 3] * 3
    ens.ensemble_temperature = 0.9  # the rescaled path has nothing to rescale either
    assert ens.predict_proba([]).shape == (0, len(ens.labels))


# ---------------------------------------------------------------- learned combining, saved and loaded

def valid_split(run):
    from ensemble.data import load_table

    rows = (ROOT / "recipes" / "demo" / "valid.csv").read_text(encoding="utf-8").splitlines()
    (run / "valid.csv").write_text("\n".join(rows[:201]) + "\n", encoding="utf-8")
    return load_table(run / "valid.csv")


@pytest.mark.parametrize("method", ["soft", "hard", "weighted", "selection", "stacking"])
def test_fit_vote_saves_and_loads_to_the_same_vote(run, tmp_path, method):
    from ensemble.evaluate import gold
    from ensemble.recipe import VoteConfig

    ens, valid = three(run), valid_split(run)
    info = ens.fit_vote(ens.member_logits(valid.texts), gold(ens, valid, "valid"), VoteConfig(method=method))
    assert info["fitted_on"] == "valid" and info["valid_rows"] == len(valid) == 200
    assert set(info["temperatures"]) == {"bert", "roberta", "bert_twin"}
    assert all(0.05 <= t <= 20 for t in ens.temperatures.values())
    assert (ens.stacker is not None) == (method == "stacking")
    if method in ("weighted", "selection"):
        assert sum(ens.weights.values()) == pytest.approx(1.0)
    ens.save(tmp_path / "e")
    again = Ensemble.load(tmp_path / "e")
    assert again.method == method and again.temperatures == ens.temperatures and again.weights == ens.weights
    assert again.ensemble_temperature == ens.ensemble_temperature
    assert (ens.ensemble_temperature != 1.0) == (method in ("soft", "weighted", "selection"))  # the vote's own
    a, b = ens.vote(TEXTS[:50]), again.vote(TEXTS[:50])
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a.scores.sum(axis=1), 1.0, atol=1e-5)
    # the same logits as a torch tensor, fp32 or bf16, vote the same way (stacking used to refuse a tensor)
    logits = ens.member_logits(TEXTS[:50])
    np.testing.assert_array_equal(ens.vote_logits(torch.from_numpy(logits)).labels, a.labels)
    rounded = ens.vote_logits(torch.from_numpy(logits).bfloat16())
    np.testing.assert_array_equal(rounded.labels, ens.vote_logits(torch.from_numpy(logits).bfloat16().float().numpy()).labels)


def test_weighted_and_selection_starve_a_member_that_is_always_wrong(run):
    from ensemble.evaluate import gold
    from ensemble.recipe import VoteConfig

    ens, valid = three(run), valid_split(run)
    logits, y = ens.member_logits(valid.texts), gold(ens, valid, "valid")
    worst = int(np.argmin([(logits[k].argmax(1) == y).mean() for k in range(3)]))
    for method in ("weighted", "selection"):
        ens.fit_vote(logits, y, VoteConfig(method=method))
        weights = list(ens.weights.values())
        assert weights[worst] <= min(weights) + 1e-9, (method, weights)


def test_fit_vote_takes_one_abstain_target(run):
    """As the recipe and the CLI do: a coverage and an accuracy target together are refused, not one
    of them silently dropped."""
    from ensemble.evaluate import gold

    ens, valid = three(run), valid_split(run)
    spec = VoteConfig(method="soft", abstain_coverage=0.9, abstain_accuracy=0.9)
    with pytest.raises(EnsembleError, match="set at most one of abstain_below, abstain_coverage, abstain_accuracy"):
        ens.fit_vote(ens.member_logits(valid.texts[:40]), gold(ens, valid.subset(range(40)), "valid"), spec)


def report_vote_labels(ens, ds) -> list[int]:
    return ens.vote(ds.texts).labels.tolist()


def test_abstain_below_marks_rows_in_predict_and_predictions_csv(run, tmp_path):
    from ensemble.data import load_table
    from ensemble.evaluate import evaluate

    ens = Ensemble.from_dirs({n: run / "run" / "members" / n for n in ("bert", "roberta")})
    confidence = ens.vote(TEXTS[:100]).confidence
    ens.abstain_below = float(np.median(confidence))
    predicted = ens.predict(TEXTS[:100])
    expected = confidence < ens.abstain_below
    assert [p == "abstain" for p in predicted] == expected.tolist() and 0 < expected.sum() < 100
    ds = load_table(ROOT / "recipes" / "demo" / "test.csv").subset(range(100))
    report = evaluate(ens, ds, "test", tmp_path)
    with open(tmp_path / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["ensemble_label"] == "abstain" for r in rows] == expected.tolist()
    # what the vote said, abstained or not: the label its confidence and agreement are about
    assert list(rows[0])[-4:] == ["ensemble_label", "voted", "ensemble_confidence", "agreement"]
    assert [r["voted"] for r in rows] == [ens.labels[i] for i in report_vote_labels(ens, ds)]
    assert all(r["ensemble_label"] in ("abstain", r["voted"]) for r in rows)
    assert report["abstention"]["abstained"] == int(expected.sum())
    assert report["abstention"]["coverage"] == pytest.approx(1 - expected.mean())
    curve = report["abstention"]["curve"]
    assert curve[0]["coverage"] == 1.0 and all(a["coverage"] >= b["coverage"] for a, b in zip(curve, curve[1:]))


@pytest.mark.parametrize("change, fragment", [
    (lambda m: m.update(stacker={"format": "ensemble.stacker", "version": 1}), "stacker dict"),
    (lambda m: m.update(temperatures={"bert": -1.0}), "temperatures.bert: must be a finite number >= 1e-06"),
    (lambda m: m.update(method="average"), "the 'method' parameter must be one of"),
    (lambda m: m.update(abstain_on="mood"), "the 'abstain_on' parameter must be one of"),
])
def test_a_tampered_manifest_is_refused_with_one_line(run, tmp_path, change, fragment):
    shutil.copytree(run / "run", tmp_path / "e")
    manifest = json.loads((tmp_path / "e" / "ensemble.json").read_text())
    change(manifest)
    (tmp_path / "e" / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(EnsembleError, match="ensemble.json: ") as error:
        Ensemble.load(tmp_path / "e")
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_vote_command_learns_on_valid_only(run, tmp_path, cli):
    members = [str(run / "run" / "members" / n) for n in ("bert", "roberta")]
    valid_split(run)
    test = str(ROOT / "recipes" / "demo" / "test.csv")
    code, out, err = cli(["vote", "--members", *members, "--data", test, "--valid", str(run / "valid.csv"),
                          "--method", "stacking", "--out", str(tmp_path / "v")])
    assert code == 0, err
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["method"] == "stacking" and report["combining"]["valid_rows"] == 200
    assert "warning" not in report["combining"]  # scored on --data, fitted on --valid
    assert report["calibration"]["fitted_on"] == "valid"
    assert Ensemble.load(tmp_path / "v").stacker is not None
    code, _, err = cli(["vote", "--members", *members, "--data", test, "--valid", test, "--method", "weighted",
                        "--out", str(tmp_path / "w")])
    assert code == 2 and "--valid: is the --data file" in err


def test_report_calibration_numbers_recomputed_from_the_logits(run, tmp_path):
    from ensemble.evaluate import evaluate, gold
    from ensemble.recipe import VoteConfig

    ens, valid = three(run), valid_split(run)
    logits, y = ens.member_logits(valid.texts), gold(ens, valid, "valid")
    fitted = ens.fit_vote(logits, y, VoteConfig(method="soft", calibrate=True))
    report = evaluate(ens, valid, "valid", tmp_path, fitted=fitted)
    assert "optimistic" in report["combining"]["warning"]  # scored on the rows it was fitted on
    for k, name in enumerate(ens.members):
        z = logits[k].astype(np.float64)
        for key, t in (("nll_before", 1.0), ("nll_after", ens.temperatures[name])):
            logp = z / t - np.log(np.exp(z / t).sum(axis=1, keepdims=True))
            assert report["calibration"]["members"][name][key] == pytest.approx(-logp[np.arange(len(y)), y].mean(), rel=1e-5)
        # fitted on these rows: the temperature can only lower each member's NLL here
        member = report["calibration"]["members"][name]
        assert member["nll_after"] <= member["nll_before"] + 1e-7
    assert report["ensemble"]["nll"] == pytest.approx(report["calibration"]["ensemble"]["nll_after"], rel=1e-5)
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv", newline="", encoding="utf-8")))
    assert len(rows) == len(valid)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["agreement.png", "confusion.png", "coverage.png",
                                                                     "training.png"]


@pytest.mark.parametrize("method, target", [("soft", {"abstain_coverage": 0.7}), ("stacking", {"abstain_coverage": 0.5}),
                                            ("weighted", {"abstain_accuracy": 0.5}),
                                            ("soft", {"abstain_coverage": 0.8, "abstain_on": "agreement"})])
def test_the_abstention_threshold_is_chosen_on_validation_for_a_target(run, tmp_path, method, target):
    from ensemble.data import load_table
    from ensemble.evaluate import evaluate, gold
    from ensemble.recipe import VoteConfig

    ens, valid = three(run), valid_split(run)
    logits, y = ens.member_logits(valid.texts), gold(ens, valid, "valid")
    info = ens.fit_vote(logits, y, VoteConfig(method=method, **target))
    chosen = info["abstention"]
    assert ens.abstain_below == chosen["threshold"]
    # chosen on the confidence of a vote fitted on these rows (calibrated by default; a stacker refitted on them)
    assert chosen["scored"] == "in-sample: the vote was fitted on these rows"
    if "abstain_coverage" in target:
        assert chosen["valid_coverage"] >= target["abstain_coverage"]
    else:
        assert chosen["valid_accuracy"] >= target["abstain_accuracy"]
    # the saved vote answers the share of the validation rows it says it does (the stacker too)
    vote = ens.vote_logits(logits)
    answered = ~ens.abstained(vote)
    assert answered.mean() == pytest.approx(chosen["valid_coverage"])
    assert (vote.labels == y)[answered].mean() == pytest.approx(chosen["valid_accuracy"])
    ens.save(tmp_path / "e")
    assert Ensemble.load(tmp_path / "e").abstain_below == chosen["threshold"]
    test = load_table(ROOT / "recipes" / "demo" / "test.csv").subset(range(100))
    report = evaluate(ens, test, "test", tmp_path / "r", fitted=info)
    assert report["abstention"]["chosen"] == chosen and report["abstention"]["threshold"] == chosen["threshold"]
    assert "(in-sample: the vote was fitted on these rows, so optimistic)" in (tmp_path / "r" / "report.md").read_text(
        encoding="utf-8")


def test_vote_cli_chooses_the_threshold_for_a_coverage(run, tmp_path):
    valid_split(run)
    members = [str(run / "run" / "members" / n) for n in ("bert", "roberta")]
    main(["vote", "--members", *members, "--data", str(ROOT / "recipes" / "demo" / "test.csv"),
          "--valid", str(run / "valid.csv"), "--abstain-coverage", "0.75", "--out", str(tmp_path / "v")])  # exits on error
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["abstention"]["chosen"]["valid_coverage"] >= 0.75
    assert json.loads((tmp_path / "v" / "ensemble.json").read_text())["abstain_below"] == \
        report["abstention"]["chosen"]["threshold"]


# ---------------------------------------------------------------- precision


def test_bf16_precision_runs_the_members_under_bf16_autocast(run):
    """precision="bf16" on a CPU: each member's logits are exactly those of its model called under
    torch.autocast(cpu, bf16) on the same padded batches; "fp32" and "auto" (on a CPU) are float32."""
    import torch

    from ensemble.batching import Collator, encode
    from ensemble.firsttoken import first_token_only

    members = run / "run" / "members"
    texts = TEXTS[:40]
    logits = {p: Ensemble.from_dirs({"bert": members / "bert"}, precision=p).member_logits(texts)[0]
              for p in ("auto", "fp32", "bf16")}
    member = load_member(members / "bert")
    enc = encode(member.tokenizer, texts, None, member.max_length)
    expected = {}
    for bf16 in (False, True):
        out = np.empty_like(logits["fp32"])
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), \
                first_token_only(member.model):  # as prediction runs it (tests/test_firsttoken.py)
            for rows in forward.length_sorted_batches(enc.lengths(), 64):
                batch = Collator(member.tokenizer.pad_token_id)([enc[i] for i in rows])
                out[rows] = member.model(**batch).logits.float().numpy()
        expected[bf16] = out
    order = [member.labels.index(label) for label in Ensemble([member]).labels]
    np.testing.assert_array_equal(logits["fp32"], expected[False][:, order])
    np.testing.assert_array_equal(logits["auto"], logits["fp32"])
    np.testing.assert_array_equal(logits["bf16"], expected[True][:, order])
    assert not np.array_equal(logits["bf16"], logits["fp32"])  # bf16 really ran: 8-bit mantissas differ
    np.testing.assert_allclose(logits["bf16"], logits["fp32"], atol=0.1)


def test_bad_precision_is_refused(run, tmp_path, capsys):
    with pytest.raises(EnsembleError, match=r"the 'precision' parameter must be one of \{'auto', 'fp32', 'bf16'\}; got 'fp16'"):
        Ensemble.load(run / "run", precision="fp16")
    data = tmp_path / "d.csv"
    data.write_text("text\n" + "\n".join(f'"{t}"' for t in TEXTS[:5]) + "\n", encoding="utf-8")
    for command in (["predict", "--ensemble", str(run / "run"), "--out", str(tmp_path / "p.csv")],
                    ["vote", "--members", str(run / "run" / "members" / "bert"), "--out", str(tmp_path / "v")]):
        with pytest.raises(SystemExit) as code:
            main(command + ["--data", str(data), "--precision", "half"])
        err = capsys.readouterr().err
        assert code.value.code == 2 and "--precision: must be one of {'auto', 'fp32', 'bf16'}; got 'half'" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "v").exists()


def test_bf16_on_a_cpu_without_native_bf16_warns(run, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("ensemble.devices.cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        Ensemble.load(run / "run", precision="bf16")
    monkeypatch.setattr("ensemble.devices.cpu_has_bf16", lambda: True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Ensemble.load(run / "run", precision="bf16")


def test_predict_resume_refuses_a_partial_written_at_another_precision(run, tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text\n" + "\n".join(f'"{t}"' for t in TEXTS[:30]) + "\n", encoding="utf-8")
    out = tmp_path / "p.csv"
    ens = Ensemble.load(run / "run")
    partial = out.with_name(f".{out.name}.partial")
    partial.write_bytes(b"")
    for precision, ok in (("auto", True), ("bf16", False)):
        identity = evaluate_mod._identity(Ensemble.load(run / "run", precision=precision), data, "text", None, None, 10,
                                          "none")
        (tmp_path / ".p.csv.partial.json").write_text(json.dumps({"identity": identity, "rows": 0, "bytes": 0}))
        if ok:
            evaluate_mod.predict_file(ens, data, out, label=None, chunk_rows=10, progress=False, resume=True)
            assert out.is_file()
            out.unlink()
            partial.write_bytes(b"")
        else:
            with pytest.raises(EnsembleError, match=r"was written with other settings: --precision 'bf16' \(now 'auto'\); "
                                                    r"run again with the same settings, or without --resume"):
                evaluate_mod.predict_file(ens, data, out, label=None, chunk_rows=10, progress=False, resume=True)
    identity = evaluate_mod._identity(ens, data, "text", None, None, 500, "none")
    (tmp_path / ".p.csv.partial.json").write_text(json.dumps({"identity": identity, "rows": 0, "bytes": 0}))
    with pytest.raises(EnsembleError, match=r"other settings: --chunk-rows 500 \(now 10\); "):
        evaluate_mod.predict_file(ens, data, out, label=None, chunk_rows=10, progress=False, resume=True)
    # how quotes are read changes the rows; a column left out shows as '' (what was typed), not None
    identity = evaluate_mod._identity(ens, data, "text", None, None, 10, "csv")
    (tmp_path / ".p.csv.partial.json").write_text(json.dumps({"identity": identity, "rows": 0, "bytes": 0}))
    with pytest.raises(EnsembleError, match=r"other settings: --quoting 'csv' \(now 'none'\); "):
        evaluate_mod.predict_file(ens, data, out, label=None, chunk_rows=10, progress=False, resume=True)
    identity = evaluate_mod._identity(ens, data, "text", None, "label", 10, "none")
    (tmp_path / ".p.csv.partial.json").write_text(json.dumps({"identity": identity, "rows": 0, "bytes": 0}))
    with pytest.raises(EnsembleError, match=r"other settings: --label 'label' \(now ''\); "):
        evaluate_mod.predict_file(ens, data, out, label=None, chunk_rows=10, progress=False, resume=True)


def test_a_moved_ensemble_continues_its_partial_predictions(run, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text\n" + "\n".join(f'"{t}"' for t in TEXTS[:30]) + "\n", encoding="utf-8")
    shutil.copytree(run / "run", tmp_path / "a")  # copytree keeps modification times, as mv does
    before = evaluate_mod._identity(Ensemble.load(tmp_path / "a"), data, "text", None, None, 10, "none")
    (tmp_path / "a").rename(tmp_path / "b")
    assert evaluate_mod._identity(Ensemble.load(tmp_path / "b"), data, "text", None, None, 10, "none") == before


def test_members_that_kept_labels_as_written_score_files_read_today(run, tmp_path):
    # members trained before labels were normalised know "+1" and "True"; a file's labels read "1", "true"
    from ensemble.data import TextDataset

    names = {"negative": "-1", "neutral": "0", "positive": "+1"}
    shutil.copytree(run / "run" / "members" / "bert", tmp_path / "bert")
    config = json.loads((tmp_path / "bert" / "config.json").read_text())
    config["id2label"] = {i: names[n] for i, n in config["id2label"].items()}
    config["label2id"] = {n: int(i) for i, n in config["id2label"].items()}
    (tmp_path / "bert" / "config.json").write_text(json.dumps(config))
    ens = Ensemble.from_dirs({"bert": tmp_path / "bert"}, load_weights=False)
    rows = TextDataset(["a", "b", "c", "d"], None, ["1", "-1", "0", "+1"], "t.csv")
    assert [ens.labels[i] for i in evaluate_mod.gold(ens, rows, "--data")] == ["+1", "-1", "0", "+1"]


def test_a_manifest_with_its_labels_reordered_is_refused(run, tmp_path):
    # its weights and stacker were fitted in the recorded order: another would relabel every row
    shutil.copytree(run / "run", tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "ensemble.json").read_text())
    manifest["labels"] = manifest["labels"][::-1]
    (tmp_path / "run" / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(EnsembleError, match=r"ensemble.json: labels \['positive', 'neutral', 'negative'\] are not the "
                                            r"members' labels .* in their order; it was edited"):
        Ensemble.load(tmp_path / "run")
    with pytest.raises(EnsembleError, match="labels: \\[-1, 1\\] are not the members' labels"):
        Ensemble([load_member(run / "run" / "members" / "bert")], labels=[-1, 1])


def _write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_predict_never_replaces_a_file_unasked_and_never_its_input(run, tmp_path, cli):
    data = _write_csv(tmp_path / "in.csv", ["text"], [[t] for t in TEXTS[:20]])
    before = data.read_bytes()
    base = ["predict", "--ensemble", str(run / "run"), "--data", str(data), "--quiet"]
    for overwrite in ([], ["--overwrite"]):
        code, _, err = cli(base + ["--out", str(data), *overwrite])
        assert code == 2 and err.strip() == f"error: --out: '{data}' is the --data file; write the predictions to another file"
    assert data.read_bytes() == before
    out = tmp_path / "p.csv"
    out.write_text("keep me\n", encoding="utf-8")
    code, _, err = cli(base + ["--out", str(out)])
    assert code == 2 and "already exists" in err and out.read_text() == "keep me\n"
    code, _, err = cli(base + ["--out", str(out), "--overwrite"])
    assert code == 0, err
    assert out.read_text().splitlines()[0].startswith("text,bert_label")


def test_predict_never_writes_over_the_ensemble_it_reads(run, tmp_path, cli):
    """An existing file of the --ensemble directory (its manifest, a member's weights) is refused even
    with --overwrite; a new file there is fine (predictions next to the run they came from)."""
    ens_dir = tmp_path / "run"
    shutil.copytree(run / "run", ens_dir)
    data = _write_csv(tmp_path / "in.csv", ["text"], [[t] for t in TEXTS[:10]])
    base = ["predict", "--ensemble", str(ens_dir), "--data", str(data), "--quiet", "--overwrite"]
    for out in (ens_dir / "ensemble.json", ens_dir / "members" / "bert" / "model.safetensors"):
        before = out.read_bytes()
        code, _, err = cli(base + ["--out", str(out)])
        assert code == 2 and f"--out: '{out}' is inside the --ensemble directory ('{ens_dir}')" in err, err
        assert out.read_bytes() == before
    code, _, err = cli(base + ["--out", str(ens_dir / "more-predictions.csv")])
    assert code == 0, err
    assert Ensemble.load(ens_dir).predict(["a film"])


def test_predict_failing_on_the_data_leaves_no_partial_file(run, tmp_path, cli):
    rows = [[t, "positive"] for t in TEXTS[:20]] + [["a film", "sideways"]]  # a label the members never saw
    data = _write_csv(tmp_path / "d.csv", ["text", "label"], rows)
    out = tmp_path / "p.csv"
    code, _, err = cli(["predict", "--ensemble", str(run / "run"), "--data", str(data), "--out", str(out), "--quiet"])
    assert code == 2 and "--data: label 'sideways' (1 row) is not among the labels the members know (negative, neutral, positive), first at data row 21 of " in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]  # neither p.csv nor .p.csv.partial(.json)
    code, _, err = cli(["predict", "--ensemble", str(run / "run"), "--data", str(data), "--out", str(out), "--quiet",
                        "--chunk-rows", "8"])  # in the third chunk: the row still counts from the file's start
    assert code == 2 and "--data: label 'sideways' (1 row) is not among the labels the members know (negative, neutral, positive), first at data row 21 of " in err


@pytest.mark.parametrize("command", ["vote", "predict"])
def test_a_label_column_that_is_not_there_is_an_error_when_named(run, tmp_path, cli, command):
    data = _write_csv(tmp_path / "d.csv", ["text", "label"], [[t, "positive"] for t in TEXTS[:20]])
    if command == "vote":
        args = ["vote", "--members", str(run / "run" / "members" / "bert"), "--out", str(tmp_path / "v")]
    else:
        args = ["predict", "--ensemble", str(run / "run"), "--out", str(tmp_path / "p.csv"), "--quiet"]
    code, _, err = cli(args + ["--data", str(data), "--label", "lable"])
    assert code == 2 and "'lable'" in err and "label" in err.split("'lable'", 1)[1]  # names the columns found
    assert not (tmp_path / "v").exists() and not (tmp_path / "p.csv").exists()
    unlabelled = _write_csv(tmp_path / "u.csv", ["text"], [[t] for t in TEXTS[:20]])
    code, _, err = cli(args + ["--data", str(unlabelled)])  # the default label column may be absent
    assert code == 0, err


@pytest.mark.parametrize("command", ["vote", "predict"])
def test_text_pair_on_single_text_members_names_the_flag(run, tmp_path, cli, command):
    data = _write_csv(tmp_path / "d.csv", ["text", "other"], [[t, t] for t in TEXTS[:5]])
    if command == "vote":
        args = ["vote", "--members", str(run / "run" / "members" / "bert"), "--out", str(tmp_path / "v")]
    else:
        args = ["predict", "--ensemble", str(run / "run"), "--out", str(tmp_path / "p.csv")]
    code, _, err = cli(args + ["--data", str(data), "--text-pair", "other"])
    assert code == 2
    assert err.strip() == "error: --text-pair: these members were trained on single texts, not pairs; drop --text-pair 'other'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


def test_predict_resume_with_nothing_to_resume_says_so(run, tmp_path, cli):
    data = _write_csv(tmp_path / "d.csv", ["text"], [[t] for t in TEXTS[:10]])
    code, _, err = cli(["predict", "--ensemble", str(run / "run"), "--data", str(data), "--out", str(tmp_path / "p.csv"),
                        "--quiet", "--resume"])
    assert code == 0 and "no finished chunk" in err and "predicting from the start" in err


def test_vote_never_writes_over_its_members(run, tmp_path, cli):
    members = tmp_path / "run" / "members"
    shutil.copytree(run / "run" / "members", members)
    data = _write_csv(tmp_path / "d.csv", ["text"], [[t] for t in TEXTS[:5]])
    args = ["vote", "--members", str(members / "bert"), str(members / "roberta"), "--data", str(data), "--overwrite"]
    for out, what in ((members / "bert", "is the --members bert directory"),
                      (tmp_path / "run", "holds the --members bert directory"),
                      (members / "bert" / "sub", "is inside the --members bert directory"),
                      (data, "is the --data file"), (tmp_path, "holds the --members bert directory")):
        code, _, err = cli(args + ["--out", str(out)])
        assert code == 2 and f"--out: '{out}' {what}" in err and err.count("\n") == 1, err
    (tmp_path / "elsewhere").mkdir()
    valid = _write_csv(tmp_path / "elsewhere" / "v.csv", ["text", "label"], [[t, "positive"] for t in TEXTS[:5]])
    for out, what in ((valid, "is the --valid file"), (valid.parent, "holds the --valid file")):
        code, _, err = cli(args + ["--valid", str(valid), "--method", "weighted", "--out", str(out)])
        assert code == 2 and f"--out: '{out}' {what}" in err, err
    code, _, err = cli(args + ["--out", str(data / "x")])
    assert code == 2 and f"--out: '{data / 'x'}' cannot be created: '{data}' is a file, not a directory" in err, err
    assert Ensemble.from_dirs({"bert": members / "bert"}).predict(["a film"])  # still whole
    assert data.read_text(encoding="utf-8").startswith("text") and valid.is_file()


def test_vote_on_the_members_training_rows_warns(run, tmp_path, cli):
    members = [str(run / "run" / "members" / n) for n in ("bert", "roberta")]
    code, out, err = cli(["vote", "--members", *members, "--data", str(run / "train.csv"), "--out", str(tmp_path / "v")])
    assert code == 0, err
    assert "warning: --data is the training file of members 'bert', 'roberta': these scores are measured on rows" in err
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert "optimistic" in report["warning"] and list(report)[1] == "warning"  # right after "split"
    assert "optimistic" in (tmp_path / "v" / "report.md").read_text()
    code, _, err = cli(["vote", "--members", *members, "--data", str(ROOT / "recipes" / "demo" / "test.csv"),
                        "--valid", str(run / "train.csv"), "--method", "weighted", "--out", str(tmp_path / "w")])
    assert code == 0 and "warning: --valid is the training file of members 'bert', 'roberta'" in err, err
    # some of the training rows in another file: counted, as fit counts them
    lines = (run / "train.csv").read_text(encoding="utf-8").splitlines()
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("\n".join([lines[0], *lines[1:8], *(f"{t},positive" for t in TEXTS[:5])]) + "\n", encoding="utf-8")
    code, _, err = cli(["vote", "--members", *members, "--data", str(mixed), "--out", str(tmp_path / "m")])
    assert code == 0 and ("warning: 7 --data rows have the same text as a training row of 'bert', 'roberta': "
                          "scores on them are optimistic") in err, err
    assert json.loads((tmp_path / "m" / "report.json").read_text())["data"]["seen_in_train"] == {"mixed.csv": 7}
    # without gold labels there are no scores to call optimistic: the warnings say what holds
    code, _, err = cli(["vote", "--members", *members, "--data", str(run / "train.csv"), "--label", "",
                        "--out", str(tmp_path / "u")])
    assert code == 0 and ("warning: --data is the training file of members 'bert', 'roberta': the members were "
                          "fitted on these rows, so their predictions say little of how they do on new text") in err, err
    code, _, err = cli(["vote", "--members", *members, "--data", str(mixed), "--label", "", "--out", str(tmp_path / "n")])
    assert code == 0 and ("warning: 7 --data rows have the same text as a training row of 'bert', 'roberta': the "
                          "members were fitted on them (see the report's Data section)") in err, err


def test_vote_knows_the_training_rows_after_the_project_moved(run, tmp_path, cli):
    from ensemble.data import load_table, stratified_split

    for name in ("bert", "roberta"):  # members whose recorded training file is gone
        shutil.copytree(run / "run" / "members" / name, tmp_path / name)
        recipe = json.loads((tmp_path / name / "recipe.json").read_text())
        recipe["data"]["train"] = str(tmp_path / "gone" / "train.csv")
        (tmp_path / name / "recipe.json").write_text(json.dumps(recipe))
    members = [str(tmp_path / n) for n in ("bert", "roberta")]
    trained, _ = stratified_split(load_table(run / "train.csv"), 0.2, seed=42)  # the rows they trained on, moved
    moved = _write_csv(tmp_path / "moved.csv", ["text", "label"], list(zip(trained.texts, trained.labels)))
    code, _, err = cli(["vote", "--members", *members, "--data", str(moved), "--out", str(tmp_path / "v")])
    assert code == 0 and "warning: --data is the training file of members 'bert', 'roberta'" in err, err
    other = _write_csv(tmp_path / "other.csv", ["text", "label"], [[t, "positive"] for t in TEXTS[:5]])
    code, _, err = cli(["vote", "--members", *members, "--data", str(other), "--out", str(tmp_path / "w")])
    assert code == 0 and (f"warning: the training file of members 'bert', 'roberta' ('{tmp_path / 'gone' / 'train.csv'}') "
                          "is gone (moved?), so --data was not checked for rows the members trained on") in err, err


def test_vote_on_the_members_validation_rows_or_on_rows_of_its_own_valid_file_warns(run, tmp_path, cli):
    from ensemble.data import load_table, stratified_split

    members = [str(run / "run" / "members" / n) for n in ("bert", "roberta")]
    # the very rows each member's best epoch was chosen on (split off train.csv by the recipe)
    _, held = stratified_split(load_table(run / "train.csv"), 0.2, seed=42)
    valid = _write_csv(tmp_path / "held.csv", ["text", "label"], list(zip(held.texts, held.labels)))
    code, _, err = cli(["vote", "--members", *members, "--data", str(valid), "--out", str(tmp_path / "v")])
    assert code == 0, err
    assert ("warning: --data is the validation file of members 'bert', 'roberta': each member's best epoch was chosen "
            "on these rows, so these scores are optimistic") in err, err
    assert "best epoch was chosen" in json.loads((tmp_path / "v" / "report.json").read_text())["warning"]
    # a recipe's validation file, by its recorded path
    copied = tmp_path / "members"
    shutil.copytree(run / "run" / "members" / "bert", copied / "bert")
    recipe = json.loads((copied / "bert" / "recipe.json").read_text())
    recipe["data"]["valid"] = str(tmp_path / "mine.csv")
    (copied / "bert" / "recipe.json").write_text(json.dumps(recipe))
    mine = _write_csv(tmp_path / "mine.csv", ["text", "label"], [[t, "positive"] for t in TEXTS[:6]])
    code, _, err = cli(["vote", "--members", str(copied / "bert"), "--data", str(mine), "--out", str(tmp_path / "b")])
    assert code == 0 and "warning: --data is the validation file of member 'bert'" in err, err
    # --data rows that are also --valid rows: the vote was fitted on them
    data = _write_csv(tmp_path / "d.csv", ["text", "label"], [[t, "positive"] for t in TEXTS[3:9]])
    code, _, err = cli(["vote", "--members", *members, "--data", str(data), "--valid", str(mine), "--method", "weighted",
                        "--out", str(tmp_path / "w")])
    assert code == 0 and ("warning: 3 --data rows have the same text as a --valid row, on which the vote was "
                          "fitted") in err, err
    assert json.loads((tmp_path / "w" / "report.json").read_text())["data"]["seen_in_valid"] == {"d.csv": 3}
    assert "Warning: 3 d.csv rows have the same text as a validation row" in (tmp_path / "w" / "report.md").read_text()


@pytest.mark.parametrize("vote, message", [
    (VoteConfig(method="mean"), "fit_vote: vote.method: must be one of"),
    (VoteConfig(abstain_on="x"), "fit_vote: vote.abstain_on: must be one of"),
    (VoteConfig(weights={"zz": 2.0}), "fit_vote: vote.weights.zz: no member named 'zz'"),
    (VoteConfig(weights=None), "fit_vote: vote.weights: must be a table of member name = number; got None"),
    (VoteConfig(calibrate="no"), "fit_vote: vote.calibrate: must be true or false; got 'no'"),
    (VoteConfig("weighted", weights={"bert": 2.0}), "vote.weights: method 'weighted' learns its own weights"),
    ("weighted", "fit_vote: the 'vote' parameter must be a VoteConfig, e.g. VoteConfig('weighted'); got str"),
])
def test_fit_vote_refuses_a_bad_config_before_changing_anything(run, vote, message):
    ens = three(run)
    before = ens.manifest()
    logits = np.zeros((3, 4, 3), np.float32)
    with pytest.raises(EnsembleError, match=re.escape(message)):
        ens.fit_vote(logits, np.array([0, 1, 2, 0]), vote)
    assert ens.manifest() == before


@pytest.mark.parametrize("vote, y, message", [
    (VoteConfig("weighted"), np.array(["a", "b", "c", "a"]), "^fit_vote: 'y' must hold integer class indices"),
    (VoteConfig("stacking"), np.array([0, 1, 7, 0]), "7"),
    (VoteConfig("selection", selection_rounds=0), np.array([0, 1, 2, 0]), "selection_rounds"),
])
def test_a_fit_vote_that_fails_midway_leaves_the_fitted_vote_as_it_was(run, vote, y, message):
    ens = three(run)
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 40, 3)).astype(np.float32)
    ens.fit_vote(logits, rng.integers(0, 3, 40), VoteConfig("selection", abstain_coverage=0.9))
    before = ens.manifest()
    with pytest.raises(EnsembleError, match=message):
        ens.fit_vote(logits[:, :4], y, vote)
    assert ens.manifest() == before
    assert ens.predict_proba(["good film"]).shape == (1, 3)


def test_member_logits_progress_counts_input_rows_once_every_member_ran_them(run, monkeypatch):
    seen = {}

    class Bar:
        def __init__(self, total, desc, disable, **kwargs):
            seen.update(total=total, desc=desc, disable=disable, done=0)

        def update(self, n):
            seen["done"] += n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(forward, "tqdm", Bar)
    three(run).member_logits(TEXTS[:70], progress="test")
    assert seen == {"total": 70, "desc": "test (3 members)", "disable": False, "done": 70}  # rows, not member-rows
    three(run).member_logits(TEXTS[:5])
    assert seen["disable"] is True


def test_a_hard_votes_validation_score_is_that_of_its_labels_with_their_tie_break(run):
    # three members, three classes, each member sure of another class: a three-way tie that the
    # documented rule gives to the highest mean probability (class 2 here), not to the first class
    ens = three(run)
    logits = np.array([[[4.0, 0.0, 0.0]], [[0.0, 4.0, 0.0]], [[0.0, 0.0, 5.0]]], np.float32)
    info = ens.fit_vote(logits, np.array([2]), VoteConfig(method="hard", calibrate=False))
    assert ens.vote_logits(logits).labels.tolist() == [2]
    assert info["valid"] == {"accuracy": 1.0}  # and no log-loss of vote shares, which are not probabilities
    soft = ens.fit_vote(logits, np.array([2]), VoteConfig(method="soft", calibrate=False))
    assert set(soft["valid"]) == {"accuracy", "nll"}


def test_predict_with_an_empty_label_flag_ignores_a_gold_column_that_has_holes(run, tmp_path, cli):
    data = tmp_path / "d.csv"
    rows = [f'"{t}",{"" if k % 3 == 0 else "positive"}' for k, t in enumerate(TEXTS[:12])]
    data.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    code, _, err = cli(["predict", "--ensemble", str(run / "run"), "--data", str(data), "--out", str(tmp_path / "p.csv")])
    assert code == 2 and "has an empty label in column 'label'" in err
    code, out, err = cli(["predict", "--ensemble", str(run / "run"), "--data", str(data), "--out", str(tmp_path / "p.csv"),
                          "--label", "", "--quiet"])
    assert code == 0 and "12 rows predicted" in out, err
    assert (tmp_path / "p.csv").read_text().splitlines()[0].startswith("text,bert_label,")  # no gold column
    code, _, err = cli(["predict", "--ensemble", str(run / "run"), "--data", str(data), "--out", str(tmp_path / "q.csv"),
                        "--text", " "])
    assert code == 2 and "--text: is empty" in err


def test_a_second_predict_on_the_same_out_is_refused(run, tmp_path):
    # both used to write into one partial file: NUL bytes and mixed rows, and one of them said it succeeded
    data = _write_csv(tmp_path / "d.csv", ["text"], [[t] for t in TEXTS[:5]])
    out = tmp_path / "p.csv"
    from ensemble.files import exclusive_lock

    held = exclusive_lock(tmp_path / ".p.csv.lock", os.O_RDWR | os.O_CREAT, "another predict holds it")  # as a run does
    try:
        with pytest.raises(EnsembleError, match=r"--out: '.*p.csv' is being written by another 'ensemble predict'"):
            evaluate_mod.predict_file(Ensemble.load(run / "run"), data, out, label=None, progress=False)
    finally:
        os.close(held)
    evaluate_mod.predict_file(Ensemble.load(run / "run"), data, out, label=None, progress=False)
    assert out.is_file() and not (tmp_path / ".p.csv.lock").exists()


def test_predict_resume_refuses_members_whose_weights_changed(run, tmp_path):
    ens_dir = tmp_path / "e"
    shutil.copytree(run / "run", ens_dir)
    data = _write_csv(tmp_path / "d.csv", ["text"], [[t] for t in TEXTS[:30]])
    out = tmp_path / "p.csv"
    identity = evaluate_mod._identity(Ensemble.load(ens_dir), data, "text", None, None, 10, "none")
    (tmp_path / ".p.csv.partial").write_bytes(b"")
    (tmp_path / ".p.csv.partial.json").write_text(json.dumps({"identity": identity, "rows": 0, "bytes": 0}))
    weights = ens_dir / "members" / "bert" / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # voted again, same names
    with pytest.raises(EnsembleError, match=r"other settings: another ensemble, or this one before it changed"):
        evaluate_mod.predict_file(Ensemble.load(ens_dir), data, out, label=None, chunk_rows=10, progress=False,
                                  resume=True)


def test_a_valid_file_without_some_class_is_a_warning(run, tmp_path, cli):
    members = [str(run / "run" / "members" / n) for n in ("bert", "roberta")]
    rows = [r.rsplit(",", 1) for r in (ROOT / "recipes" / "demo" / "valid.csv").read_text(encoding="utf-8").splitlines()[1:]]
    valid = _write_csv(tmp_path / "v.csv", ["text", "label"], [[t.strip('"'), y] for t, y in rows if y != "negative"][:60])
    code, _, err = cli(["vote", "--members", *members, "--data", str(ROOT / "recipes" / "demo" / "test.csv"), "--valid",
                        str(valid), "--method", "stacking", "--out", str(tmp_path / "v")])
    assert code == 0, err
    assert ("warning: --valid has no row labelled 'negative': the vote was fitted without that class (a stacker never "
            "predicts it)") in err


def test_save_leaves_the_modes_of_the_members_files_alone(run, tmp_path):
    """save() hard-links the members' weights when it can; it used to chmod every file it wrote to
    the umask's mode, which through the link made a user's private (0600) weights world-readable
    and read-only ones writable."""
    import os
    import stat

    members = tmp_path / "mine"
    for name in ("bert", "roberta"):
        shutil.copytree(run / "run" / "members" / name, members / name)
        for path in (members / name).iterdir():
            path.chmod(0o600 if name == "bert" else 0o444)
    Ensemble.from_dirs({n: members / n for n in ("bert", "roberta")}).save(tmp_path / "saved")
    modes = {path.relative_to(members): stat.S_IMODE(path.stat().st_mode) for path in members.rglob("*") if path.is_file()}
    assert set(modes.values()) == {0o600, 0o444}
    assert {str(p) for p, mode in modes.items() if mode == 0o600} == {str(p) for p in modes if p.parts[0] == "bert"}
    saved = tmp_path / "saved" / "members" / "bert" / "model.safetensors"
    if saved.stat().st_ino != (members / "bert" / "model.safetensors").stat().st_ino:  # copied, not linked
        assert stat.S_IMODE(saved.stat().st_mode) == 0o666 & ~_umask()
    for path in members.rglob("*"):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)  # let tmp_path's clean-up delete them


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("calibrate, scored", [(False, "nothing fitted"),
                                               (True, "in-sample: temperatures fitted on these rows")])
def test_the_validation_score_says_what_was_fitted_on_those_rows(run, calibrate, scored):
    ens = three(run)
    logits = ens.member_logits(TEXTS[:24])
    y = np.arange(24) % len(ens.labels)
    assert ens.fit_vote(logits, y, VoteConfig("soft", calibrate=calibrate))["valid_scored"] == scored


def test_vote_refuses_to_guess_columns_the_members_were_trained_on_differently(run, tmp_path, cli):
    copied = tmp_path / "members"
    for name in ("bert", "roberta"):
        shutil.copytree(run / "run" / "members" / name, copied / name)
    recipe = json.loads((copied / "roberta" / "recipe.json").read_text())
    recipe["data"]["text"] = "sentence"
    (copied / "roberta" / "recipe.json").write_text(json.dumps(recipe))
    data = _write_csv(tmp_path / "d.csv", ["text", "label"], [[t, "positive"] for t in TEXTS[:4]])
    args = ["vote", "--members", str(copied / "bert"), str(copied / "roberta"), "--data", str(data)]
    code, _, err = cli(args + ["--out", str(tmp_path / "a")])
    assert code == 2 and err.strip() == ("error: --text: the members were trained on different text columns (bert: 'text', "
                                         "roberta: 'sentence'); name the --data file's column with --text"), err
    code, _, err = cli(args + ["--out", str(tmp_path / "b"), "--text", "text"])
    assert code == 0, err


def test_an_empty_column_flag_is_refused(run, tmp_path, cli):
    data = _write_csv(tmp_path / "d.csv", ["text"], [[t] for t in TEXTS[:3]])
    code, _, err = cli(["predict", "--ensemble", str(run / "run"), "--data", str(data), "--out", str(tmp_path / "p.csv"),
                        "--text", " "])
    assert code == 2 and err.strip() == "error: --text: is empty; give the column's name, or leave --text out", err


def test_predict_says_how_many_rows_were_cut_to_max_length(run, tmp_path, cli):
    long = " ".join(TEXTS[:12])  # far past the members' max_length of 32 tokens
    data = _write_csv(tmp_path / "d.csv", ["text"], [[long], [TEXTS[0]]])
    code, _, err = cli(["predict", "--ensemble", str(run / "run"), "--data", str(data), "--out", str(tmp_path / "p.csv"),
                        "--quiet"])
    assert code == 0, err
    assert ("note: rows longer than a member's max_length were cut to fit: 1 for 'bert' (max_length 32), "
            "1 for 'roberta' (max_length 32)") in err, err


def test_threads_predicting_with_one_ensemble_share_its_models_safely(run, monkeypatch):
    """Each forward pass switches the last layer to token 0 and back: two threads must not switch it
    under each other (a layer switched back mid-pass, or deleted twice, raised AttributeError)."""
    import sys
    import threading
    import time

    import ensemble.firsttoken as firsttoken

    real_switch = firsttoken.switch

    def slow_switch(model):  # widens the window between "not switched yet" and switching
        time.sleep(0.002)
        return real_switch(model)

    monkeypatch.setattr(firsttoken, "switch", slow_switch)
    ens = three(run)
    texts = TEXTS[:3]
    expected = ens.predict_proba(texts)
    errors, results = [], []

    def work():
        try:
            for _ in range(30):
                results.append(ens.predict_proba(texts))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert len(results) == 120 and all(np.allclose(r, expected, atol=1e-6) for r in results)
    assert all("forward" not in vars(m.model.bert.encoder.layer[-1]) for m in ens.members.values()
               if hasattr(m.model, "bert"))  # every layer switched back


def test_logits_of_the_wrong_shape_or_kind_are_refused_by_name(run):
    ens = three(run)  # 3 members x 3 labels
    logits = ens.member_logits(TEXTS[:6])
    y = np.arange(6) % 3
    expected = ("expected (3, rows, 3): members ['bert', 'roberta', 'bert_twin'] x rows x labels ['negative', 'neutral', "
                "'positive']")
    for call in (lambda x: ens.vote_logits(x), lambda x: ens.fit_vote(x, y, VoteConfig("stacking"))):
        for bad, shape in ((logits[:, :, :2], (3, 6, 2)), (logits[:2], (2, 6, 3)), (logits[0], (6, 3))):
            with pytest.raises(EnsembleError, match=re.escape(f"logits have shape {shape}; {expected}")):
                call(bad)
    assert (ens.vote_logits(logits.tolist()).labels == ens.vote_logits(logits).labels).all()  # lists are arrays
    with pytest.raises(EnsembleError, match=re.escape("fit_vote: 'y' holds 5 labels for 6 rows of logits")):
        ens.fit_vote(logits, y[:5], VoteConfig("soft"))
    probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    with pytest.raises(EnsembleError, match=re.escape("fit_vote: these logits are probabilities (every row sums to 1)")):
        ens.fit_vote(probs, y, VoteConfig("soft"))
    as_bf16 = ens.fit_vote(torch.from_numpy(logits).bfloat16(), y, VoteConfig("soft"))  # any float tensor
    assert as_bf16["method"] == "soft"


def test_weights_that_are_learned_must_be_learned_before_voting(run):
    members = {n: run / "run" / "members" / n for n in ("bert", "roberta")}
    for method in ("weighted", "selection"):
        ens = Ensemble.from_dirs(members, method=method)
        with pytest.raises(EnsembleError, match=f"method '{method}' learns its weights on validation data first"):
            ens.predict(TEXTS[:2])
        ens.fit_vote(ens.member_logits(TEXTS[:9]), np.arange(9) % 3, VoteConfig(method))
        assert len(ens.predict(TEXTS[:2])) == 2
    given = Ensemble.from_dirs(members, method="weighted", weights={"bert": 0.7, "roberta": 0.3})  # as load passes them
    assert len(given.predict(TEXTS[:2])) == 2


@pytest.mark.parametrize("make, message", [
    (lambda run: Ensemble([str(run / "run" / "members" / "bert")]),
     "the 'members' parameter must hold members (load_member(dir)); got a str"),
    (lambda run: Ensemble.load(run / "run", device=[]), "device: must be 'auto', 'cpu', 'cuda[:N]' or a non-empty list"),
    (lambda run: Ensemble.load(run / "run", device=None), "device: must be 'auto', 'cpu', 'cuda[:N]' or a non-empty list"),
    (lambda run: three(run).save(5), "Ensemble.save: the 'path' parameter must be a directory path; got 5"),
])
def test_api_misuse_is_one_named_error(run, make, message):
    with pytest.raises(EnsembleError, match=re.escape(message)):
        make(run)


def test_a_torch_device_object_is_a_device(run):
    assert list(Ensemble.load(run / "run", device=torch.device("cpu")).members)


def test_rows_go_through_in_chunks_with_the_same_logits_and_counts(run, monkeypatch):
    ens = three(run)
    texts = TEXTS[:10] + [" ".join(TEXTS[:12])]  # the last one is cut to max_length
    whole_cut, chunked_cut = {}, {}
    whole = ens.member_logits(texts, truncated=whole_cut)
    monkeypatch.setattr(forward, "PREDICT_CHUNK", 4)
    chunked = ens.member_logits(texts, truncated=chunked_cut)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    assert chunked_cut == whole_cut == {"bert": 1, "roberta": 1, "bert_twin": 1}


def test_saving_an_ensemble_whose_member_directory_is_gone_names_it(run, tmp_path):
    copied = tmp_path / "bert"
    shutil.copytree(run / "run" / "members" / "bert", copied)
    ens = Ensemble.from_dirs({"bert": copied})
    shutil.rmtree(copied)
    with pytest.raises(EnsembleError, match=re.escape(f"Ensemble.save: member 'bert' was loaded from '{copied}', "
                                                      "which is gone")):
        ens.save(tmp_path / "saved")
    with pytest.raises(EnsembleError, match="member_logits: the 'truncated' parameter must be a dict"):
        three(run).member_logits(TEXTS[:2], truncated=[])


def test_from_dirs_takes_the_constructors_settings(run):
    members = run / "run" / "members"
    ens = Ensemble.from_dirs({n: members / n for n in ("bert", "roberta")}, batch_size=8, temperatures={"bert": 2.0},
                             abstain_below=0.5)
    assert (ens.batch_size, ens.temperatures["bert"], ens.abstain_below) == (8, 2.0, 0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'batch'"):
        Ensemble.from_dirs({n: members / n for n in ("bert",)}, batch=8)
