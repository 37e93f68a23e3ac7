"""Recipe loading: typed fields, defaults merged into members, overrides, and every bad-recipe class."""

from pathlib import Path

import pytest

from ensemble.errors import EnsembleError
from ensemble.recipe import TrainConfig, infer_arch, is_local, load_recipe

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
[data]
train = "train.csv"
valid_fraction = 0.2

[defaults]
lr = 2e-5
epochs = 2
batch_size = 32
grad_accum = 2

[[members]]
name = "bert"
init = "scratch"
arch = "bert"

[[members]]
name = "electra"
model = "google/electra-base-discriminator"
lr = 5e-5
scheduler = "cosine"
trainable_layers = 2

[vote]
method = "hard"
weights = { bert = 2.0 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_recipe_is_typed_and_merged(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD))
    assert recipe.data.train == tmp_path.resolve() / "train.csv"  # relative to the recipe file
    assert recipe.data.valid_fraction == 0.2
    bert, electra = recipe.members
    assert (bert.init, bert.arch, bert.size) == ("scratch", "bert", "tiny")
    assert bert.train.lr == 2e-5 and bert.train.epochs == 2  # from [defaults]
    assert electra.train.lr == 5e-5 and electra.train.scheduler == "cosine"  # member override
    assert electra.train.trainable_layers == 2
    assert electra.train.micro_batch_size == 16
    assert recipe.vote.method == "hard" and recipe.vote.weights == {"bert": 2.0}


def test_overrides_reach_data_defaults_members_and_vote(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD), [
        "members.bert.lr=3e-5", "defaults.epochs=5", "vote.method=soft", "data.train=other.csv",
        "members.electra.betas=[0.9, 0.98]", "vote.weights.electra=0.5"])
    assert recipe.member("bert").train.lr == 3e-5
    assert recipe.member("bert").train.epochs == 5 and recipe.member("electra").train.epochs == 5
    assert recipe.member("electra").train.betas == (0.9, 0.98)
    assert recipe.vote.method == "soft" and recipe.vote.weights == {"bert": 2.0, "electra": 0.5}
    assert recipe.data.train == Path("other.csv").resolve()  # --set paths: relative to the shell


def test_scratch_switch_replaces_hub_members_by_architecture(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD), scratch="tiny")
    electra = recipe.member("electra")
    assert (electra.init, electra.arch, electra.size, electra.model) == ("scratch", "electra", "tiny", None)
    assert electra.train.lr == 5e-5  # the schedule is kept


def test_scratch_switch_keeps_members_from_local_directories(tmp_path):
    local = tmp_path / "checkpoints" / "bert"
    local.mkdir(parents=True)
    (local / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    text = GOOD + f'[[members]]\nname = "mine"\nmodel = "{local}"\n'
    recipe = load_recipe(write(tmp_path, text), scratch="tiny")
    mine = recipe.member("mine")
    assert (mine.init, mine.model) == ("pretrained", str(local))  # kept: no network needed, someone's checkpoint
    assert recipe.member("electra").init == "scratch"


@pytest.mark.parametrize("model, local", [
    ("./ckpt", True), ("/abs/ckpt", True), ("~/ckpt", True), ("bert-base-uncased", False), ("org/model", False)])
def test_is_local(model, local):
    assert is_local(model) == local


@pytest.mark.parametrize("model, arch", [
    ("albert-base-v2", "albert"), ("google/electra-base-discriminator", "electra"), ("roberta-base", "roberta"),
    ("bert-base-uncased", "bert"), ("FacebookAI/xlm-roberta-large", "roberta"), ("gpt2", None)])
def test_infer_arch_from_hub_names(model, arch):
    assert infer_arch(model) == arch


def test_shipped_recipes_load():
    project1 = load_recipe(ROOT / "recipes" / "project1.toml")
    assert [m.name for m in project1.members] == ["albert", "electra", "roberta", "bert"]
    assert project1.member("albert").train.lr == 1e-5
    assert project1.defaults.batch_size == 256 and project1.defaults.eval_batch_size == 512
    assert project1.defaults.weight_decay == 1e-6 and project1.defaults.eps == 1e-2
    demo = load_recipe(ROOT / "recipes" / "demo.toml")
    assert {m.arch for m in demo.members} == {"albert", "electra", "roberta", "bert"}
    assert all(m.init == "scratch" for m in demo.members)
    offline = load_recipe(ROOT / "recipes" / "project1.toml", scratch="tiny")
    assert [m.arch for m in offline.members] == ["albert", "electra", "roberta", "bert"]


BAD = [
    # TOML syntax, with line and column
    ('[data]\ntrain = "x.csv\n', "TOML syntax error"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "a" arch = "bert"\n', "line 4"),
    # unknown keys, with a did-you-mean
    ('[data]\ntrain = "x.csv"\n[defaults]\nlearning_rate = 1e-5\n', "defaults.learning_rate: unknown key"),
    ('[data]\ntrain = "x.csv"\n[defaults]\nepoch = 3\n[[members]]\nname="a"\narch="bert"\ninit="scratch"\n', "did you mean 'epochs'"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "a"\narch = "bert"\ninit = "scratch"\nschedular = "step"\n', "members[a].schedular: unknown key (did you mean 'scheduler'?)"),
    ('[dta]\ntrain = "x.csv"\n', "dta: unknown key (did you mean 'data'?)"),
    # wrong types
    ('[data]\ntrain = "x.csv"\n[defaults]\nepochs = "three"\n', "defaults.epochs: must be an integer; got 'three'"),
    ('[data]\ntrain = "x.csv"\n[defaults]\nlr = true\n', "defaults.lr: must be a number; got True"),
    ('[data]\ntrain = 3\n', "data.train: must be a path"),
    ('[data]\ntrain = "x.csv"\n[defaults]\nbetas = 0.9\n', "defaults.betas: must be a list of 2 numbers"),
    # out-of-range values and unknown choices
    ('[data]\ntrain = "x.csv"\n[defaults]\nlr = -1\n', "defaults.lr: must be > 0"),
    ('[data]\ntrain = "x.csv"\n[defaults]\nwarmup_ratio = 1.5\n', "defaults.warmup_ratio: must be >= 0 and <= 1; got 1.5"),
    ('[data]\ntrain = "x.csv"\nvalid_fraction = 1.0\n', "data.valid_fraction: must be > 0"),
    ('[data]\ntrain = "x.csv"\n[defaults]\ndropout = 1.0\n', "defaults.dropout: must be >= 0 and < 1; got 1.0"),
    ('[data]\ntrain = "x.csv"\n[defaults]\nseed = 4294967296\n', "defaults.seed: must be >= 0 and <= 4294967295; got 4294967296"),
    ('[data]\ntrain = "x.csv"\n[defaults]\noptimizer = "adamm"\n', "defaults.optimizer: must be one of {'adam', 'adamax', 'adamw', 'rmsprop', 'sgd'}; got 'adamm' (did you mean 'adam'?)"),
    ('[data]\ntrain = "x.csv"\n[defaults]\nbatch_size = 30\ngrad_accum = 4\n', "batch_size (30) must be a multiple of grad_accum"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "a"\ninit = "scratch"\narch = "gpt2"\n', "members[a].arch: must be one of"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "a"\nmodel = "m"\n[vote]\nmethod = "average"\n', "vote.method: must be one of {'hard', 'soft', 'weighted', 'selection', 'stacking'}"),
    # members: missing fields, duplicates
    ('[data]\ntrain = "x.csv"\n', "no members"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nmodel = "bert-base-uncased"\n', "members[0].name: every member needs a name"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "a"\n', "members[a].model: give a hub id or a local directory"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "a"\ninit = "scratch"\n', "members[a].arch: a scratch member needs arch"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "a"\nmodel = "m"\n[[members]]\nname = "a"\nmodel = "n"\n', "duplicate name 'a'"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "a/b"\nmodel = "m"\n', "members[a/b].name: use letters"),
    # weights naming unknown members
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "bert"\nmodel = "m"\n[vote]\nweights = { bret = 1.0 }\n', "vote.weights.bret: no member named 'bret' (did you mean 'bert'?)"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "bert"\nmodel = "m"\n[vote]\nweights = { bert = -1.0 }\n', "vote.weights.bert: must be a finite number >= 0"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "bert"\nmodel = "m"\n[vote]\nweights = { bert = 0.0 }\n', "at least one member needs a weight > 0"),
    # missing data
    ('[[members]]\nname = "bert"\nmodel = "m"\n', "missing [data] table"),
    # member keys of the other kind of member (they were ignored)
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "s"\ninit = "scratch"\narch = "roberta"\nmodel = "bert-base-uncased"\n',
     "members[s].model: a scratch member is built from arch and size, not from a model"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "p"\nmodel = "bert-base-uncased"\nsize = "base"\n',
     "members[p].size: only a scratch member (init = \"scratch\") has an arch and a size"),
    # settings that the chosen optimizer, scheduler or vote method does not read
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "b"\nmodel = "m"\nmomentum = 0.9\n',
     "members[b].momentum: only optimizer 'rmsprop' or 'sgd' reads it, and this member uses 'adamw'; remove it"),
    ('[data]\ntrain = "x.csv"\n[defaults]\ngamma = 0.5\n[[members]]\nname = "b"\nmodel = "m"\n'
     '[[members]]\nname = "c"\nmodel = "m"\nscheduler = "cosine"\n',
     "defaults.gamma: only scheduler 'exponential' or 'step' reads it, and the members use 'cosine', 'linear'; remove it"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "b"\nmodel = "m"\noptimizer = "sgd"\nbetas = [0.5, 0.5]\n',
     "members[b].betas: only optimizer 'adam' or 'adamax' or 'adamw' reads it, and this member uses 'sgd'"),
    ('[data]\ntrain = "x.csv"\n[defaults]\nsize = "mini"\n', "defaults.size: a member's own key, not a training field; "
                                                          "set it in each [[members]] table"),
    ('[data]\ntrain = "x.csv"\n[[members]]\nname = "b"\nmodel = "m"\n[vote]\nselection_rounds = 5\n',
     "vote.selection_rounds: only method 'selection' reads it, and the vote uses 'soft'; remove it"),
    # data.labels: the classes' order
    ('[data]\ntrain = "x.csv"\nlabels = ["low", "high", "low"]\n[[members]]\nname = "b"\nmodel = "m"\n',
     "data.labels: 'low' is listed twice; list each class once"),
    ('[data]\ntrain = "x.csv"\nlabels = ["1", 1.0]\n[[members]]\nname = "b"\nmodel = "m"\n',
     "data.labels: '1' is listed twice"),
    ('[data]\ntrain = "x.csv"\nlabels = ["low", " "]\n[[members]]\nname = "b"\nmodel = "m"\n',
     "data.labels: holds an empty name"),
    ('[data]\ntrain = "x.csv"\nlabels = ["low"]\n[[members]]\nname = "b"\nmodel = "m"\n',
     "data.labels: a classifier needs at least two classes; got ['low']"),
    ('[data]\ntrain = "x.csv"\nlabels = "low"\n[[members]]\nname = "b"\nmodel = "m"\n',
     "data.labels: a classifier needs at least two classes; got ['low']"),
    ('[data]\ntrain = "x.csv"\nlabels = [{ a = 1 }, "b"]\n[[members]]\nname = "b"\nmodel = "m"\n',
     "data.labels[0]: must be a string"),
]


def test_data_labels_set_the_class_order_as_names(tmp_path):
    text = '[data]\ntrain = "x.csv"\nlabels = [3, "+1", "2.0", " low "]\n[[members]]\nname = "b"\nmodel = "m"\n'
    assert load_recipe(write(tmp_path, text)).data.labels == ("3", "1", "2", "low")  # as the files' labels are read
    text = '[data]\ntrain = "x.csv"\nlabels = [true, false]\n[[members]]\nname = "b"\nmodel = "m"\n'
    assert load_recipe(write(tmp_path, text)).data.labels == ("true", "false")


def test_a_member_sets_an_optional_field_back_to_its_default_by_word(tmp_path):
    text = ('[data]\ntrain = "x.csv"\n[defaults]\ntrainable_layers = 0\npatience = 2\ndropout = 0.2\n'
            '[[members]]\nname = "b"\nmodel = "m"\ntrainable_layers = "all"\npatience = "none"\ndropout = "model"\n'
            '[[members]]\nname = "c"\nmodel = "m"\n')
    b, c = load_recipe(write(tmp_path, text)).members
    assert (b.train.trainable_layers, b.train.patience, b.train.dropout) == (None, None, None)
    assert (c.train.trainable_layers, c.train.patience, c.train.dropout) == (0, 2, 0.2)
    with pytest.raises(EnsembleError, match=r"members\[b\].trainable_layers: must be an integer or \"all\"; got 'none'"):
        load_recipe(write(tmp_path, text.replace('trainable_layers = "all"', 'trainable_layers = "none"')))


def test_a_defaults_setting_some_member_reads_is_fine(tmp_path):
    text = ('[data]\ntrain = "x.csv"\n[defaults]\nmomentum = 0.9\n[[members]]\nname = "b"\nmodel = "m"\n'
            '[[members]]\nname = "c"\nmodel = "m"\noptimizer = "sgd"\n')
    assert [m.train.momentum for m in load_recipe(write(tmp_path, text)).members] == [0.9, 0.9]


@pytest.mark.parametrize("text, message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_recipes_fail_with_one_line_naming_the_field(tmp_path, text, message):
    with pytest.raises(EnsembleError) as info:
        load_recipe(write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value).strip() or "TOML syntax" in str(info.value)
    assert str(info.value).startswith("recipe.toml:")


@pytest.mark.parametrize("override, message", [
    ("members.bret.lr=1e-5", "no member named 'bret' (did you mean 'bert'?)"),
    ("members.bert=1", "members.NAME.FIELD"),
    ("defaults.lr", "expected KEY=VALUE"),
    ("defaults.lr=abc", "defaults.lr: must be a number; got 'abc'"),
    ("defaults.nope=1", "defaults.nope: unknown key"),
])
def test_bad_overrides(tmp_path, override, message):
    with pytest.raises(EnsembleError) as info:
        load_recipe(write(tmp_path, GOOD), [override])
    assert message in str(info.value)


def test_missing_recipe_and_bad_scratch_size(tmp_path):
    with pytest.raises(EnsembleError, match="file not found"):
        load_recipe(tmp_path / "nope.toml")
    with pytest.raises(EnsembleError, match="--scratch: must be one of"):
        load_recipe(write(tmp_path, GOOD), scratch="huge")


def test_train_config_defaults_are_sane():
    t = TrainConfig()
    assert t.best_metric == "valid_loss" and t.optimizer == "adamw" and t.micro_batch_size == t.batch_size


@pytest.mark.parametrize("make_valid", ["same", "dotted", "symlink", "hardlink"])
def test_a_valid_file_that_is_the_train_file_is_refused_with_the_recipe(tmp_path, make_valid):
    import os

    (tmp_path / "t.csv").write_text("text,label\na,x\n", encoding="utf-8")
    valid = {"same": "t.csv", "dotted": "./sub/../t.csv", "symlink": "link.csv", "hardlink": "hard.csv"}[make_valid]
    (tmp_path / "sub").mkdir()
    os.symlink(tmp_path / "t.csv", tmp_path / "link.csv")
    os.link(tmp_path / "t.csv", tmp_path / "hard.csv")
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[data]\ntrain = "t.csv"\nvalid = "{valid}"\n[[members]]\nname = "a"\ninit = "scratch"\n'
                      'arch = "bert"\n', encoding="utf-8")
    with pytest.raises(EnsembleError, match=r"^r.toml: data.valid: is the data.train file"):
        load_recipe(recipe)
    (tmp_path / "copy.csv").write_text("text,label\na,x\n", encoding="utf-8")  # equal content, another file: fine
    recipe.write_text(recipe.read_text().replace(f'valid = "{valid}"', 'valid = "copy.csv"'), encoding="utf-8")
    assert load_recipe(recipe).data.valid.name == "copy.csv"
