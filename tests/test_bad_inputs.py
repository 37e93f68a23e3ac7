"""The bad-input matrix: every input a user can get wrong, through the command line, with its
expected exit code and message fragment. One line on stderr, no traceback, and no output
directory that looks complete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ensemble import Ensemble
from ensemble.cli import main
from ensemble.errors import EnsembleError

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ROWS = (ROOT / "recipes" / "demo" / "train.csv").read_text(encoding="utf-8").splitlines()[1:121]


@pytest.fixture(scope="module")
def member(tmp_path_factory) -> Path:
    """One tiny trained member (bert, demo labels) to vote with."""
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "train.csv").write_text("text,label\n" + "\n".join(TRAIN_ROWS) + "\n", encoding="utf-8")
    (tmp / "r.toml").write_text('[data]\ntrain = "train.csv"\nvalid_fraction = 0.25\n[defaults]\nepochs = 1\n'
                                'max_length = 32\n[[members]]\nname = "bert"\ninit = "scratch"\narch = "bert"\n',
                                encoding="utf-8")
    main(["fit", str(tmp / "r.toml"), "--out", str(tmp / "run"), "--quiet"])
    return tmp / "run" / "members" / "bert"


GOOD_RECIPE = '[data]\ntrain = "train.csv"\nvalid_fraction = 0.25\n[defaults]\nepochs = 1\n' \
              '[[members]]\nname = "bert"\ninit = "scratch"\narch = "bert"\n'


def recipe(text: str):
    def setup(tmp: Path, member: Path) -> list[str]:
        (tmp / "train.csv").write_text("text,label\n" + "\n".join(TRAIN_ROWS) + "\n", encoding="utf-8")
        (tmp / "r.toml").write_text(text, encoding="utf-8")
        return ["fit", str(tmp / "r.toml"), "--out", str(tmp / "out")]
    return setup


def override(*items: str):
    def setup(tmp: Path, member: Path) -> list[str]:
        args = recipe(GOOD_RECIPE)(tmp, member)
        return args + [a for item in items for a in ("--set", item)]
    return setup


def train_file(content: bytes | str, name: str = "train.csv", extra: str = ""):
    """A recipe whose training file holds `content` (fails before any training starts)."""
    def setup(tmp: Path, member: Path) -> list[str]:
        data = content.encode("utf-8") if isinstance(content, str) else content
        (tmp / name).write_bytes(data)
        (tmp / "r.toml").write_text(GOOD_RECIPE.replace("train.csv", name) + extra, encoding="utf-8")
        return ["fit", str(tmp / "r.toml"), "--out", str(tmp / "out")]
    return setup


def vote_file(content: str, name: str = "data.csv", *flags: str):
    """`ensemble vote` with the fixture member on a data file holding `content`."""
    def setup(tmp: Path, member: Path) -> list[str]:
        (tmp / name).write_text(content, encoding="utf-8")
        return ["vote", "--members", str(member), "--data", str(tmp / name), "--out", str(tmp / "out"), *flags]
    return setup


def damaged_member(damage):
    def setup(tmp: Path, member: Path) -> list[str]:
        copy = tmp / "m"
        shutil.copytree(member, copy)
        damage(copy)
        (tmp / "d.csv").write_text("text,label\na film,positive\n", encoding="utf-8")
        return ["vote", "--members", str(copy), "--data", str(tmp / "d.csv"), "--out", str(tmp / "out")]
    return setup


def _relabelled(member: Path, tmp: Path, old: str, new: str) -> Path:
    """A copy of `member` whose label `old` is named `new`."""
    copy = tmp / "relabelled"
    shutil.copytree(member, copy)
    config = json.loads((copy / "config.json").read_text())
    config["id2label"] = {i: new if name == old else name for i, name in config["id2label"].items()}
    config["label2id"] = {name: i for i, name in config["id2label"].items()}
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def relabel(path: Path) -> None:
    config = json.loads((path / "config.json").read_text())
    config["id2label"] = {"0": "bad", "1": "meh", "2": "good"}
    config["label2id"] = {"bad": 0, "meh": 1, "good": 2}
    (path / "config.json").write_text(json.dumps(config))


def two_members(tmp: Path, member: Path) -> list[str]:
    other = tmp / "other"
    shutil.copytree(member, other)
    relabel(other)
    (tmp / "d.csv").write_text("text,label\na film,positive\n", encoding="utf-8")
    return ["vote", "--members", str(member), str(other), "--data", str(tmp / "d.csv"), "--out", str(tmp / "out")]


def set_json(file: str, keys: tuple, value):
    """Set one (nested) key of a member's JSON file."""
    def damage(path: Path) -> None:
        data = json.loads((path / file).read_text())
        json_parent(data, keys)[keys[-1]] = value
        (path / file).write_text(json.dumps(data))
    return damage


def drop_json(file: str, keys: tuple):
    """Delete one (nested) key of a member's JSON file."""
    def damage(path: Path) -> None:
        data = json.loads((path / file).read_text())
        del json_parent(data, keys)[keys[-1]]
        (path / file).write_text(json.dumps(data))
    return damage


def json_parent(data: dict, keys: tuple) -> dict:
    for key in keys[:-1]:
        data = data[key]
    return data


def damaged_ensemble(edit):
    """`ensemble predict` on a copy of the fixture's ensemble whose ensemble.json went through `edit`."""
    def setup(tmp: Path, member: Path) -> list[str]:
        copy = tmp / "e"
        shutil.copytree(member.parent.parent, copy)
        manifest = json.loads((copy / "ensemble.json").read_text())
        (copy / "ensemble.json").write_text(json.dumps(edit(manifest)))
        (tmp / "d.csv").write_text("text\na film\n", encoding="utf-8")
        return ["predict", "--ensemble", str(copy), "--data", str(tmp / "d.csv"), "--out", str(tmp / "p.csv")]
    return setup


def set_config(key: str, value):
    def damage(path: Path) -> None:
        config = json.loads((path / "config.json").read_text())
        config[key] = value
        (path / "config.json").write_text(json.dumps(config))
    return damage


LONG = " ".join(["wonderful"] * 5000)
CASES = [
    # recipe
    ("toml syntax", recipe('[data]\ntrain = "train.csv\n'), 2, "TOML syntax error"),
    ("toml line and column", recipe('[data]\ntrain = "x"\n[[members]]\nname = "a" arch = "b"\n'), 2, "(at line 4, column"),
    ("unknown key", recipe(GOOD_RECIPE.replace("epochs", "epoch")), 2, "defaults.epoch: unknown key (did you mean 'epochs'?)"),
    ("a tracker that is not installed", override('defaults.log_with=["aim"]'), 2,
     "members[bert].log_with (from [defaults]): the 'aim' tracker needs the 'aim' package, which is not installed; pip install aim"),
    ("recipe is a directory", lambda tmp, m: ["fit", str(tmp)], 2, "' is a directory; give the recipe's TOML file"),
    ("fit --out is the training file", lambda tmp, m: recipe(GOOD_RECIPE)(tmp, m)[:2] + ["--out", str(tmp / "train.csv")],
     2, "train.csv' is the data.train file ("),
    ("fit --out below a file", lambda tmp, m: recipe(GOOD_RECIPE)(tmp, m)[:2] + ["--out", str(tmp / "r.toml" / "run")],
     2, "r.toml' is a file, not a directory; choose another --out"),
    ("wrong type", recipe(GOOD_RECIPE.replace("epochs = 1", 'epochs = "one"')), 2, "defaults.epochs: must be an integer; got 'one'"),
    ("out of range", recipe(GOOD_RECIPE.replace("epochs = 1", "epochs = 0")), 2, "defaults.epochs: must be >= 1"),
    ("missing member name", recipe('[data]\ntrain = "x.csv"\n[[members]]\nmodel = "m"\n'), 2, "members[0].name: every member needs a name"),
    ("missing member model", recipe('[data]\ntrain = "x.csv"\n[[members]]\nname = "a"\n'), 2, "members[a].model: give a hub id"),
    ("duplicate members", recipe(GOOD_RECIPE + '[[members]]\nname = "bert"\ninit = "scratch"\narch = "bert"\n'), 2, "duplicate name 'bert'"),
    ("weights for unknown member", recipe(GOOD_RECIPE + "[vote]\nweights = { bret = 1.0 }\n"), 2, "vote.weights.bret: no member named 'bret' (did you mean 'bert'?)"),
    ("--set bad path", override("members.bret.lr=1e-5"), 2, "--set members.bret.lr: no member named 'bret'"),
    ("--set bad value", override("defaults.lr=fast"), 2, "defaults.lr: must be a number; got 'fast'"),
    ("--set not key=value", override("defaults.lr"), 2, "--set: expected KEY=VALUE"),
    ("bad --scratch", lambda tmp, m: recipe(GOOD_RECIPE)(tmp, m) + ["--scratch", "huge"], 2, "--scratch: must be one of"),
    ("--only without names", lambda tmp, m: recipe(GOOD_RECIPE)(tmp, m) + ["--only", ","], 2,
     "--only: give member names separated by commas (e.g. --only bert,albert); got ','"),
    ("--resume with --overwrite", lambda tmp, m: recipe(GOOD_RECIPE)(tmp, m) + ["--resume", "--overwrite"], 2,
     "--resume and --overwrite: give one"),
    ("unknown flag", lambda tmp, m: ["fit", "--epochs", "3"], 2, "No such option: --epochs"),
    # data
    ("missing data file", recipe(GOOD_RECIPE.replace("train.csv", "nope.csv")), 2, "data.train: file not found"),
    ("empty file", train_file(""), 2, "is empty"),
    ("--set an empty data path", override('data.valid=""'), 2, "data.valid: is empty; give a file path, or leave data.valid out"),
    ("empty text column name", recipe(GOOD_RECIPE.replace("valid_fraction = 0.25", 'valid_fraction = 0.25\ntext = ""')), 2,
     "data.text: is empty; give a column name of"),
    ("a list as a label", train_file('{"text": "fine", "label": ["pos", "funny"]}\n{"text": "bad", "label": ["neg"]}\n',
                                     name="train.jsonl"), 2,
     "has a list as its label in column 'label'; a label is one string or number (one class per row"),
    ("a continuous target", train_file("text,label\n" + "\n".join(f"row {i},{i / 7:.3f}" for i in range(60)) + "\n"), 2,
     "(a continuous target, not classes); ensemble trains classifiers: bin the values"),
    ("a text column as labels", train_file("text,label\n" + "\n".join(f"{i},the sentence {i}" for i in range(60)) + "\n"), 2,
     "holds 60 distinct values in 60 rows (such as 'the sentence 0', 'the sentence 1'): text or ids, not class labels"),
    ("a UTF-16 file", train_file("text,label\nfine,pos\n".encode("utf-16")), 2,
     "is UTF-16 (it starts with the byte-order mark ff fe); save it as UTF-8, e.g. iconv -f utf-16"),
    ("a CSV-quoted field in a TSV", train_file('text\tlabel\n"first line\nsecond line"\t3\nok\t2\n', name="train.tsv"), 2,
     "has 1 fields but the header has 2 (a field opens a quote it does not close: tab-separated files are read without CSV quoting"),
    ("bad data.quoting", override('data.quoting="double"'), 2, "data.quoting: must be one of {'none', 'csv'}; got 'double'"),
    ("bad --quoting", vote_file("text\tlabel\nfine\tpositive\n", "d.tsv", "--quoting", "double"), 2,
     "--quoting: must be one of {'none', 'csv'}; got 'double'"),
    ("a CoNLL file by its extension", train_file("Melbourne NP B-LOC\n", name="esp.train"), 2,
     "unknown extension '.train'; use one of .csv, .tsv, .jsonl, .npz, .parquet (it looks like a CoNLL token-per-line file"),
    ("a CoNLL token-per-line file", train_file("Melbourne NP B-LOC\n( Fpa O\n\nEl DA O\n", name="esp.tsv"), 2,
     "it looks like a CoNLL file, one token and its tags per line; ensemble classifies whole texts"),
    ("header only", train_file("text,label\n"), 2, "has column names but no data rows"),
    ("missing column", train_file("sentence,label\na,b\n"), 2, "column 'text' not found"),
    ("empty text", train_file("text,label\n,positive\ngood,positive\n"), 2, "has an empty text in column 'text'"),
    ("NaN label", train_file("text,label\ngood,nan\nbad,negative\n"), 2, "has an empty label in column 'label'"),
    ("missing label", train_file("text,label\ngood,\nbad,negative\n"), 2, "set data.on_bad_rows = \"skip\""),
    ("single-class train", train_file("text,label\n" + "\n".join(f"film {i},positive" for i in range(20)) + "\n"), 2,
     "a classifier needs at least two labels"),
    ("label unseen in valid", train_file("text,label\n" + "\n".join(TRAIN_ROWS[:60]) + "\n", extra="",
                                         name="train.csv"), None, None),  # replaced below
    ("non-UTF-8 bytes", train_file(b"text,label\ncaf\xe9,positive\n"), 2, "is not valid UTF-8"),
    ("quote breaks comma CSV", train_file('text,label\n"unclosed,positive\n'), 2, "is not valid CSV"),
    ("quote breaks a TSV read with CSV quoting",
     lambda tmp, m: train_file('text\tlabel\n"x\t"y" z\tpositive\n', "train.tsv")(tmp, m) + ["--set", 'data.quoting="csv"'],
     2, "is not valid CSV-quoted TSV ('\t' expected after '\"'); read it without CSV quoting (data.quoting = \"none\""),
    ("the label column as the second text", override('data.text_pair="label"'), 2,
     "data.text_pair and data.label both name column 'label'; each must name a different column"),
    ("the text column twice", override('data.text_pair="text"'), 2, "data.text and data.text_pair both name column 'text'"),
    ("--text naming the label column", vote_file("text,label\na film,positive\n", "data.csv", "--text", "label"), 2,
     "--data: --text and --label both name column 'label' of '"),
    ("an empty jsonl file", vote_file("\n", "data.jsonl"), 2, "is empty; it needs one JSON object per row"),
    ("unbinned scores in valid", lambda tmp, m: _unbinned(tmp), 2,
     "never appears in the training labels ['0', '1', '2', '3', '4']; they look like unbinned scores while the "
     "training labels are whole numbers: bin them as the training labels were binned"),
    ("unknown extension", train_file("x", name="train.xlsx"), 2, "unknown extension '.xlsx'"),
    ("labels the members do not know", vote_file("text,label\na film,7\n"), 2, "--data: label '7' (1 row) is not among the labels the members know (negative, neutral, positive), first at data row 1 of '"),
    ("mixed numbers and strings", vote_file("text,label\na film,positive\nanother,3\nmore,1\nagain,3\n"), 2,
     "--data: labels '3' (2 rows), '1' (1 row) are not among the labels the members know (negative, neutral, positive), first at data row 2 of '"),
    # data that must work
    ("byte-order mark", vote_file("\ufefftext,label\na film,positive\n"), 0, "report:"),
    ("quotes inside TSV", vote_file('text\tlabel\nsay "hi\tpositive\n', "d.tsv"), 0, "report:"),
    ("text far longer than max_length", vote_file(f"text,label\n{LONG},positive\n"), 0, "report:"),
    ("unlabelled data", vote_file("text\na film\n"), 0, "report:"),
    # members
    ("label sets differ", two_members, 2, "must be trained on the same label names"),
    ("pairs member on single texts", lambda tmp, m: _pairs_member(tmp, "vote"), 2,
     "single.csv'; columns found: text, label (set --text-pair to one of them; the members were trained on sentence pairs)"),
    ("pairs member on single texts (predict)", lambda tmp, m: _pairs_member(tmp, "predict"), 2,
     "(set --text-pair to one of them; the members were trained on sentence pairs)"),
    ("pairs and single-text members together", lambda tmp, m: _pairs_member(tmp, "mixed", m), 2,
     "was trained on single texts but member 'bert' on sentence pairs; they cannot vote together"),
    ("missing weights", damaged_member(lambda p: (p / "model.safetensors").unlink()), 2, "no safetensors weights"),
    ("corrupt weights", damaged_member(lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 64)), 2, "model.safetensors is corrupt"),
    ("corrupt tokenizer", damaged_member(lambda p: (p / "tokenizer.json").write_text("{oops")), 2, "cannot load"),
    ("unsupported architecture", damaged_member(set_config("model_type", "gpt2")), 2, "model_type 'gpt2' is not supported"),
    ("not a member directory", damaged_member(lambda p: (p / "config.json").unlink()), 2, "not a member directory"),
    ("no label names", damaged_member(set_config("id2label", {})), 2, "no usable id2label"),
    ("member name with a slash", lambda tmp, m: vote_file("text\na\n")(tmp, m)[:2] + [f"a/b={m}"] + vote_file("text\na\n")(tmp, m)[3:],
     2, "member name: use letters, digits, '-', '_' or '.' (it names a directory); got 'a/b'"),
    ("member named ..", lambda tmp, m: vote_file("text\na\n")(tmp, m)[:2] + [f"..={m}"] + vote_file("text\na\n")(tmp, m)[3:],
     2, "got '..'"),
    ("config.json not an object", damaged_member(lambda p: (p / "config.json").write_text("[1]")), 2,
     "config.json must hold a JSON object; got list"),
    ("recipe.json not JSON", damaged_member(lambda p: (p / "recipe.json").write_text("{oops")), 2,
     "recipe.json is not valid JSON"),
    ("recipe.json member not an object", damaged_member(lambda p: (p / "recipe.json").write_text('{"member": []}')), 2,
     "recipe.json: member must be an object; got list"),
    ("recipe.json bad max_length", damaged_member(set_json("recipe.json", ("member", "train", "max_length"), "long")), 2,
     "recipe.json: member.train.max_length must be an integer >= 1; got 'long'"),
    ("tokenizer without a padding token", damaged_member(set_json("tokenizer_config.json", ("pad_token",), None)), 2,
     "its tokenizer has no padding token"),
    ("tokenizer without its unknown token", damaged_member(drop_json("tokenizer.json", ("model", "vocab", "[UNK]"))), 2,
     "its tokenizer cannot encode text"),
    ("tokenizer that panics", damaged_member(drop_json("tokenizer.json", ("post_processor", "special_tokens", "[CLS]"))),
     2, "its tokenizer cannot encode text (PanicException"),
    ("config of a far larger model", damaged_member(set_config("num_hidden_layers", 10**9)), 2,
     "config.json describes at least"),
    ("config size not a number", damaged_member(set_config("hidden_size", "big")), 2,
     "config.json: hidden_size must be an integer >= 1; got 'big'"),
    ("config with fewer layers than the weights", damaged_member(set_config("num_hidden_layers", 1)), 2,
     "model.safetensors does not match config.json (unexpected keys: "),
    ("config the forward pass rejects", damaged_member(set_config("num_attention_heads", -1)), 2,
     "the model fails on a short input"),
    ("manifest weights not a dict", damaged_ensemble(lambda e: {**e, "weights": 3}), 2,
     "the 'weights' parameter must be a dict of member name -> number, or None; got int"),
    ("bad --method", lambda tmp, m: vote_file("text\na\n")(tmp, m) + ["--method", "mean"], 2, "--method: must be one of {'hard', 'soft', 'weighted', 'selection', 'stacking'}; got 'mean'"),
    ("bad --weights", lambda tmp, m: vote_file("text\na\n")(tmp, m) + ["--weights", "bert=x"], 2, "--weights: expected NAME=NUMBER"),
    ("learned method without --valid", lambda tmp, m: vote_file("text\na\n")(tmp, m) + ["--method", "weighted"], 2,
     "--method weighted: learns on labelled validation data; give --valid FILE"),
    ("--abstain-coverage without --valid", lambda tmp, m: vote_file("text\na\n")(tmp, m) + ["--abstain-coverage", "0.9"],
     2, "--abstain-coverage: the threshold is chosen on labelled validation data; give --valid FILE"),
    ("--abstain-accuracy out of range", lambda tmp, m: vote_file("text\na\n")(tmp, m) + ["--abstain-accuracy", "0"],
     2, "--abstain-accuracy: must be > 0 and <= 1; got 0.0"),
    ("two abstain flags", lambda tmp, m: vote_file("text\na\n")(tmp, m) + ["--abstain-below", "0.5", "--abstain-coverage",
                                                                            "0.9", "--valid", str(tmp / "data.csv")],
     2, "--abstain-coverage: give at most one of --abstain-below, --abstain-coverage, --abstain-accuracy"),
    ("--valid is the --data file", lambda tmp, m: vote_file("text,label\na,positive\n")(tmp, m)
     + ["--method", "stacking", "--valid", str(tmp / "data.csv")], 2, "--valid: is the --data file"),
    ("bad --abstain-below", lambda tmp, m: vote_file("text\na\n")(tmp, m) + ["--abstain-below", "2"], 2,
     "--abstain-below: must be >= 0 and <= 1; got 2.0"),
    ("bad --abstain-on", lambda tmp, m: vote_file("text\na\n")(tmp, m) + ["--abstain-on", "mood"], 2,
     "--abstain-on: must be one of {'agreement', 'confidence'}; got 'mood'"),
    # combining and runtime settings in the recipe
    ("weights with a learned method", recipe(GOOD_RECIPE + '[vote]\nmethod = "weighted"\nweights = { bert = 2.0 }\n'), 2,
     "vote.weights: method 'weighted' learns its own weights"),
    ("abstain_below out of range", recipe(GOOD_RECIPE + "[vote]\nabstain_below = 1.5\n"), 2,
     "vote.abstain_below: must be >= 0 and <= 1; got 1.5"),
    ("two abstain targets", recipe(GOOD_RECIPE + "[vote]\nabstain_below = 0.5\nabstain_coverage = 0.9\n"), 2,
     "vote: set at most one of abstain_below, abstain_coverage, abstain_accuracy; got abstain_below and abstain_coverage"),
    ("abstain_coverage zero", recipe(GOOD_RECIPE + "[vote]\nabstain_coverage = 0\n"), 2,
     "vote.abstain_coverage: must be > 0 and <= 1; got 0"),
    ("bad abstain_on", recipe(GOOD_RECIPE + '[vote]\nabstain_on = "mood"\n'), 2,
     "vote.abstain_on: must be one of {'agreement', 'confidence'}; got 'mood'"),
    ("bad on_diverge", override("defaults.on_diverge=ignore"), 2, "defaults.on_diverge: must be one of {'skip', 'stop'}; got 'ignore'"),
    ("bad stacking_folds", recipe(GOOD_RECIPE + "[vote]\nstacking_folds = 1\n"), 2, "vote.stacking_folds: must be >= 2"),
    ("bad --device", lambda tmp, m: ["predict", "--ensemble", str(m.parent.parent), "--data", "x.csv", "--out", str(tmp / "p.csv"),
                                     "--device", "tpu"], 2, "error: --device: must be 'auto', 'cpu' or 'cuda[:N]'"),
    ("predict --out is a directory", lambda tmp, m: damaged_ensemble(lambda e: e)(tmp, m)[:-1] + [str(tmp)], 2,
     "is a directory; give the path of the CSV file to write"),
    ("valid is the train file", recipe(GOOD_RECIPE.replace("valid_fraction = 0.25", 'valid = "train.csv"')), 2,
     "train.csv'); scores on rows the members trained on would be optimistic: give a separate file, or leave data.valid out"),
    ("test is the train file", recipe(GOOD_RECIPE.replace("valid_fraction = 0.25", 'valid_fraction = 0.25\ntest = "train.csv"')),
     2, "data.test: is the data.train file"),
    ("an ensemble directory as a member", lambda tmp, m: vote_file("text\na\n")(tmp, m)[:2] + [str(m.parent.parent)]
     + vote_file("text\na\n")(tmp, m)[3:], 2, "an ensemble directory, not a member; pass its members ("),
    ("no tokenizer vocabulary", damaged_member(lambda p: [(p / f).unlink(missing_ok=True) for f in
                                                          ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model")]),
     2, "no tokenizer vocabulary (one of tokenizer.json, vocab.txt"),
    ("manifest labels not the members'", damaged_ensemble(lambda e: {**e, "labels": e["labels"] + ["extra"]}), 2,
     "are not the members' labels"),
    ("--weights for no member", lambda tmp, m: vote_file("text\na\n")(tmp, m) + ["--weights", "bret=2"], 2,
     "--weights: no member named 'bret'; members: bert"),
    ("negative --weights", lambda tmp, m: vote_file("text\na\n")(tmp, m) + ["--weights", "bert=-1"], 2,
     "--weights: bert's weight must be a finite number >= 0; got '-1'"),
    ("all-zero --weights", lambda tmp, m: vote_file("text\na\n")(tmp, m) + ["--weights", "bert=0"], 2,
     "--weights: at least one member needs a weight > 0"),
    ("ensemble dir without manifest", lambda tmp, m: ["predict", "--ensemble", str(tmp), "--data", "x.csv", "--out", str(tmp / "p.csv")],
     2, "no ensemble.json"),
    ("ensemble dir missing", lambda tmp, m: ["predict", "--ensemble", str(tmp / "nope"), "--data", "x.csv", "--out", str(tmp / "p.csv")],
     2, "nope': no such directory; pass the --out directory of a finished"),
    ("a member dir as --ensemble", lambda tmp, m: ["predict", "--ensemble", str(m), "--data", "x.csv", "--out", str(tmp / "p.csv")],
     2, "a member directory (a member or a distilled student), not an ensemble; predict with it through 'ensemble vote --members"),
]
ABSTAIN_ROWS = "text,label\n" + "\n".join(r.replace(",negative", ",abstain") for r in TRAIN_ROWS) + "\n"
CASES += [
    ("a label named abstain with abstention", train_file(ABSTAIN_ROWS, extra="[vote]\nabstain_coverage = 0.9\n"), 2,
     "r.toml: vote.abstain_coverage: 'abstain' is one of the labels, so abstaining rows could not be told apart; "
     "rename that label in the data or leave vote.abstain_coverage unset"),
    ("vote --abstain-below with a label named abstain",
     lambda tmp, m: vote_file("text\na\n")(tmp, _relabelled(m, tmp, "negative", "abstain")) + ["--abstain-below", "0.5"],
     2, "--abstain-below: 'abstain' is one of the labels"),
]
if not torch.cuda.is_available():
    CASES.append(("fp16 on a CPU", override('defaults.mixed_precision="fp16"'), 2,
                  'members[bert].mixed_precision (from [defaults]): fp16 needs a GPU; use "bf16" or "no" on CPU'))
    CASES.append(("fp16 for one member on a CPU", override('members.bert.mixed_precision="fp16"'), 2,
                  'members[bert].mixed_precision: fp16 needs a GPU; use "bf16" or "no" on CPU'))
# a label in valid never seen in train: train on two labels, validate on a third
CASES[[c[0] for c in CASES].index("label unseen in valid")] = (
    "label unseen in valid",
    lambda tmp, m: _unseen(tmp),
    2, "never appears in the training labels")


def _pairs_member(tmp: Path, command: str, single: Path | None = None) -> list[str]:
    """A member trained on (text, text2) pairs, asked to read a file of single texts."""
    rows = [f"{r.rsplit(',', 1)[0]},{r.rsplit(',', 1)[0]},{r.rsplit(',', 1)[1]}" for r in TRAIN_ROWS]
    (tmp / "pairs.csv").write_text("text,text2,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    (tmp / "p.toml").write_text(GOOD_RECIPE.replace('train = "train.csv"', 'train = "pairs.csv"\ntext_pair = "text2"'),
                                encoding="utf-8")
    main(["fit", str(tmp / "p.toml"), "--out", str(tmp / "pairs"), "--quiet"])
    (tmp / "single.csv").write_text("text,label\na film,positive\n", encoding="utf-8")
    if command == "predict":
        return ["predict", "--ensemble", str(tmp / "pairs"), "--data", str(tmp / "single.csv"), "--out", str(tmp / "p.csv")]
    members = [str(tmp / "pairs" / "members" / "bert")] + ([f"single={single}"] if single else [])
    return ["vote", "--members", *members, "--data", str(tmp / "single.csv"), "--out", str(tmp / "out")]


def _unbinned(tmp: Path) -> list[str]:
    """Similarity scores rounded to classes in train, left as scores in valid."""
    rows = [f"{r.rsplit(',', 1)[0]},{i % 5}" for i, r in enumerate(TRAIN_ROWS)]
    (tmp / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    (tmp / "valid.csv").write_text("text,label\nthe film runs two hours,2.2\na fine film,3\n", encoding="utf-8")
    (tmp / "r.toml").write_text(GOOD_RECIPE.replace('valid_fraction = 0.25', 'valid = "valid.csv"'), encoding="utf-8")
    return ["fit", str(tmp / "r.toml"), "--out", str(tmp / "out")]


def _unseen(tmp: Path) -> list[str]:
    rows = [r for r in TRAIN_ROWS if not r.endswith(",neutral")]
    (tmp / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    (tmp / "valid.csv").write_text("text,label\nthe film runs two hours,neutral\n", encoding="utf-8")
    (tmp / "r.toml").write_text(GOOD_RECIPE.replace('valid_fraction = 0.25', 'valid = "valid.csv"'), encoding="utf-8")
    return ["fit", str(tmp / "r.toml"), "--out", str(tmp / "out")]


@pytest.mark.parametrize("name, setup, code, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_matrix(name, setup, code, fragment, member, tmp_path, cli):
    args = setup(tmp_path, member)
    got, out, err = cli(args)
    assert got == code, err
    assert "Traceback" not in err
    if code:
        assert fragment in err
        assert err.count("\n") == 1  # one line
        # nothing that looks complete was written; a refused fit leaves no directory at all
        assert not (tmp_path / "out" / "ensemble.json").exists()
        assert not (tmp_path / "out" / "report.json").exists()
        if args[0] == "fit":
            assert not (tmp_path / "out").exists()
    else:
        assert fragment in out
        assert (tmp_path / "out" / "ensemble.json").is_file() and (tmp_path / "out" / "predictions.csv").is_file()


def test_a_panicking_tokenizer_is_one_line_on_the_terminal(member, tmp_path):
    """The Rust tokenizer prints its panic on file descriptor 2 itself; the user still sees one line."""
    setup = damaged_member(drop_json("tokenizer.json", ("post_processor", "special_tokens", "[CLS]")))
    done = subprocess.run([sys.executable, "-m", "ensemble", *setup(tmp_path, member)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "RUST_BACKTRACE": "1"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "its tokenizer cannot encode text (PanicException" in done.stderr, done.stderr


JUNK = st.sampled_from([None, 0, -1, 2.5, "", "x", [], {}, [1, 2], {"a": 1}, True, 10**30])
MEMBER_FILES = ["config.json", "recipe.json", "tokenizer_config.json", "tokenizer.json"]


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_member_files_give_only_the_librarys_error(member, data):
    """Random edits of a member's JSON files (a key deleted or set to junk, at any depth): loading
    and predicting either work or raise the library's one-line error, never anything else."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "m"
        shutil.copytree(member, copy)
        file = copy / data.draw(st.sampled_from(MEMBER_FILES))
        root = json.loads(file.read_text())
        node = root
        while isinstance(node, (dict, list)) and node:
            key = data.draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
            child = node[key]
            if not isinstance(child, (dict, list)) or not child or data.draw(st.booleans()):
                if data.draw(st.booleans()):
                    del node[key]
                else:
                    node[key] = data.draw(JUNK)
                break
            node = child
        file.write_text(json.dumps(root))
        try:
            Ensemble.from_dirs({"m": copy}).predict(["a fine film", "dull, 42 \u2211"])
        except EnsembleError as exc:
            assert "\n" not in str(exc)


def test_only_checks_just_the_members_it_trains_and_resume_says_why_it_retrains(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = recipe(GOOD_RECIPE + '[[members]]\nname = "hub"\nmodel = "some-org/not-cached-model-xyz"\n')(tmp_path, None)
    code, out, err = cli(args + ["--only", "bert", "--quiet"])
    assert code == 0, err  # the hub member, not trained here, is not looked up
    assert (tmp_path / "out" / "members" / "bert" / "model.safetensors").is_file()
    code, _, err = cli(args + ["--resume", "--quiet"])  # all members: now the hub member must be found
    assert code == 2 and "members[hub].model: 'some-org/not-cached-model-xyz' is not in the local cache" in err
    code, out, err = cli(args + ["--only", "bert", "--resume", "--quiet", "--set", "members.bert.lr=3e-4"])
    assert code == 0, err
    assert "bert: its settings changed since it was trained (train.lr: 5e-05 -> 0.0003); training it again" in out


def test_only_keeps_the_vote_unless_it_trains_and_then_drops_all_of_it(tmp_path, cli):
    """--only skips the vote: a run whose --only trains nothing keeps its vote; one that trains a member
    again loses the manifest and the report that described the old member (no stale report), says how
    to vote again, and --resume then votes without training."""
    args = recipe(GOOD_RECIPE)(tmp_path, None) + ["--quiet"]
    run = tmp_path / "out"
    assert cli(args)[0] == 0 and (run / "ensemble.json").is_file() and (run / "report.md").is_file()
    code, out, err = cli(args + ["--only", "bert", "--resume"])
    assert code == 0 and "bert: already trained with these settings; kept" in out, err
    assert (run / "ensemble.json").is_file() and (run / "report.md").is_file()
    code, out, err = cli(args + ["--only", "bert", "--resume", "--set", "members.bert.lr=3e-4"])
    assert code == 0 and "training it again" in out, err
    assert not [name for name in ("ensemble.json", "report.json", "report.md", "report.html", "predictions.csv", "plots")
                if (run / name).exists()]
    assert f"--only trained without voting, so '{run}' has no vote" in out
    # the command it suggests is this one's, overrides included: the member just trained is kept
    assert "--set members.bert.lr=3e-4 --out" in out and out.rstrip().endswith("--resume', which trains only what is "
                                                                                "missing, votes")
    code, out, err = cli(args + ["--resume", "--set", "members.bert.lr=3e-4"])
    assert code == 0 and "already trained with these settings; kept" in out, err
    assert Ensemble.load(run).predict(["a fine film"]) and (run / "report.md").is_file()
    # settings that change nothing a member learns (checkpoints, trackers) do not train it again
    code, out, err = cli(args + ["--resume", "--set", "members.bert.lr=3e-4", "--set", "defaults.checkpoint_every=7",
                                 "--set", 'defaults.on_diverge="skip"'])
    assert code == 0 and "already trained with these settings; kept" in out and "training it again" not in out, err


def test_member_files_are_readable_as_the_umask_says(member):
    for f in member.iterdir():
        if f.is_file():
            assert f.stat().st_mode & 0o777 == 0o666 & ~_umask(), f.name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_test_rows_that_are_validation_rows_are_a_warning(tmp_path, cli):
    # the vote is fitted on the validation rows: scores on the same texts in the test file are optimistic
    rows = TRAIN_ROWS[:40]
    (tmp_path / "valid.csv").write_text("text,label\n" + "\n".join(rows[:20]) + "\n", encoding="utf-8")
    (tmp_path / "test.csv").write_text("text,label\n" + "\n".join(rows[15:20] + TRAIN_ROWS[-10:]) + "\n",
                                       encoding="utf-8")
    text = GOOD_RECIPE.replace("valid_fraction = 0.25", 'valid = "valid.csv"\ntest = "test.csv"')
    args = recipe(text)(tmp_path, None) + ["--quiet"]
    (tmp_path / "train.csv").write_text("text,label\n" + "\n".join(TRAIN_ROWS[40:-10]) + "\n", encoding="utf-8")
    code, out, err = cli(args)
    assert code == 0, err
    assert "warning: 5 test rows have the same text as a validation row, on which the vote was fitted" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["data"]["seen_in_valid"] == {"test": 5}
    assert "Warning: 5 test rows have the same text as a validation row" in (tmp_path / "out" / "report.md").read_text()
