"""Members: scratch builds per architecture, pretrained loading, freezing, loading trained dirs."""

import json
import shutil

import pytest
import torch

from ensemble.errors import EnsembleError
from ensemble.members import build_member, freeze, load_member, parameter_count
from ensemble.preflight import preflight
from ensemble.scratch import train_tokenizer
from ensemble.recipe import ARCHES, MemberConfig, TrainConfig

TEXTS = ["a wonderful film", "a dull film", "the plot is clever", "the acting is awful"] * 20
LABELS = ["neg", "pos"]


@pytest.mark.parametrize("arch", ARCHES)
def test_scratch_member_builds_encodes_pairs_and_round_trips(arch, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = MemberConfig("m", init="scratch", arch=arch, train=TrainConfig(max_length=32))
    model, tok = build_member(cfg, LABELS, TEXTS)
    assert model.config.model_type == arch and model.config.id2label == {0: "neg", 1: "pos"}
    enc = tok(["a wonderful film"], ["the plot"], return_tensors="pt")
    if arch != "roberta":
        assert enc["token_type_ids"][0].tolist().count(1) > 0  # the second text is typed as segment B
    assert enc["input_ids"][0, 0].item() == tok.cls_token_id
    logits = model(**enc).logits
    assert logits.shape == (1, 2)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    model.eval()
    torch.testing.assert_close(reloaded(**AutoTokenizer.from_pretrained(tmp_path)(["a dull film"], return_tensors="pt")).logits,
                               model(**tok(["a dull film"], return_tensors="pt")).logits)


@pytest.mark.parametrize("arch", ARCHES)
def test_a_forward_with_labels_leaves_the_config_as_built(arch):
    """transformers picks the loss on the first batch with labels and writes that choice into the
    config; torch.compile guards on it, so a config changed at step 1 recompiled the whole model
    at step 2. The member is built with the same choice already made."""
    cfg = MemberConfig("m", init="scratch", arch=arch, train=TrainConfig(max_length=32))
    model, tok = build_member(cfg, LABELS, TEXTS)
    before = model.config.to_dict()
    assert before["problem_type"] == "single_label_classification"
    model(**tok(["a dull film"], return_tensors="pt"), labels=torch.tensor([1]))
    assert model.config.to_dict() == before


def test_roberta_positions_cover_max_length():
    cfg = MemberConfig("r", init="scratch", arch="roberta", train=TrainConfig(max_length=512))
    model, tok = build_member(cfg, LABELS, TEXTS)
    ids = tok([" ".join(["film"] * 600)], truncation=True, max_length=512, return_tensors="pt")
    assert ids["input_ids"].shape[1] == 512
    assert model(**ids).logits.shape == (1, 2)  # no index error in the position embeddings


def test_tokenizer_is_trained_on_the_texts():
    tok = train_tokenizer("bert", ["zorblax quintessential"] * 50, 300, 32)
    assert "[UNK]" not in tok.convert_ids_to_tokens(tok("zorblax")["input_ids"])


def test_pretrained_minilm_gets_a_fresh_head_for_our_labels(minilm):
    cfg = MemberConfig("minilm", model=str(minilm))
    model, tok = build_member(cfg, ["a", "b", "c"], [])
    assert model.config.num_labels == 3 and model.config.label2id == {"a": 0, "b": 1, "c": 2}
    assert model.bert.encoder.layer[0].attention.self.query.weight.abs().sum() > 0
    assert tok("hello world")["input_ids"][0] == 101  # the checkpoint's own vocabulary


@pytest.mark.parametrize("k", [0, 1])
def test_freeze_leaves_only_the_top_layers_and_head_trainable(k):
    model, _ = build_member(MemberConfig("b", init="scratch", arch="bert"), LABELS, TEXTS)
    total, _ = parameter_count(model)
    freeze(model, k)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("classifier") for n in trainable)
    assert not any("embeddings" in n for n in trainable)
    layer_names = {n.split(".")[3] for n in trainable if ".encoder.layer." in n}
    assert layer_names == ({"1"} if k == 1 else set())


def test_freeze_albert_shared_layer():
    model, _ = build_member(MemberConfig("a", init="scratch", arch="albert"), LABELS, TEXTS)
    freeze(model, 0)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "encoder" in n)
    freeze(model, 1)
    assert any(p.requires_grad for n, p in model.named_parameters() if "albert_layer_groups" in n)


def test_preflight_offline_hub_id_names_the_scratch_switch(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EnsembleError, match="--scratch tiny"):
        preflight([MemberConfig("bert", model="some-org/not-cached-model-xyz")])


def test_preflight_local_dir_without_config(tmp_path):
    with pytest.raises(EnsembleError, match="not a model directory"):
        preflight([MemberConfig("x", model=str(tmp_path))])


@pytest.fixture(scope="module")
def member_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("member") / "bert"
    model, tok = build_member(MemberConfig("bert", init="scratch", arch="bert"), LABELS, TEXTS)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_load_member(member_dir):
    member = load_member(member_dir)
    assert member.name == "bert" and member.labels == LABELS and not member.text_pair


@pytest.mark.parametrize("damage, message", [
    ("missing", "not a directory"),
    ("no_config", "no config.json"),
    ("no_weights", "no safetensors weights"),
    ("bad_json", "config.json is not valid JSON"),
    ("gpt2", "model_type 'gpt2' is not supported"),
    ("no_labels", "no usable id2label"),
])
def test_load_member_refuses_broken_directories(member_dir, tmp_path, damage, message):
    path = tmp_path / "m"
    shutil.copytree(member_dir, path)
    config = path / "config.json"
    if damage == "missing":
        shutil.rmtree(path)
    elif damage == "no_config":
        config.unlink()
    elif damage == "no_weights":
        (path / "model.safetensors").unlink()
    elif damage == "bad_json":
        config.write_text("{not json")
    else:
        data = json.loads(config.read_text())
        if damage == "gpt2":
            data["model_type"] = "gpt2"
        else:
            data.pop("id2label")
            data.pop("label2id")
        config.write_text(json.dumps(data))
    with pytest.raises(EnsembleError) as info:
        load_member(path)
    assert message in str(info.value)


def test_a_planted_pickle_is_never_loaded(member_dir, tmp_path):
    """A member directory whose weights are a pickle that runs code when unpickled is refused,
    and the code never runs: only safetensors weights are read."""
    import pickle

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "m"
    shutil.copytree(member_dir, path)
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(EnsembleError, match="only safetensors are loaded"):
        load_member(path)
    assert not marker.exists()
    # with the safetensors back, the stray pickle next to it is still ignored
    shutil.copy2(member_dir / "model.safetensors", path / "model.safetensors")
    assert load_member(path).labels == LABELS and not marker.exists()


def test_load_member_without_weights_describes_it_only(tmp_path):
    from ensemble.ensemble import Ensemble
    from ensemble.errors import EnsembleError

    model, tok = build_member(MemberConfig("b", init="scratch", arch="bert", train=TrainConfig(max_length=48)), LABELS, TEXTS)
    model.save_pretrained(tmp_path / "b")
    tok.save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "recipe.json").write_text('{"member": {"train": {"max_length": 48}}, "data": {}}')
    light, full = load_member(tmp_path / "b", weights=False), load_member(tmp_path / "b")
    assert light.model is None and light.tokenizer is None
    assert (light.labels, light.max_length, light.text_pair, light.tokenizer_key) == \
        (full.labels, full.max_length, full.text_pair, full.tokenizer_key)
    ens = Ensemble.from_dirs({"b": tmp_path / "b"}, load_weights=False)
    with pytest.raises(EnsembleError, match="member 'b' was opened without its weights; open it with load_weights=True"):
        ens.member_logits(["a text"])


def test_preflight_refuses_a_max_length_beyond_the_models_positions(tmp_path):
    # a longer row would have crashed in the embeddings' forward, in training or later in predict
    too_long = TrainConfig(max_length=1000)
    with pytest.raises(EnsembleError, match=r"^r.toml: members\[s\].max_length: must be <= 512, the positions the model "
                                            r"has; got 1000$"):
        preflight([MemberConfig("s", init="scratch", arch="roberta", train=too_long)], where="r.toml")
    from transformers import BertConfig

    BertConfig(max_position_embeddings=128).save_pretrained(tmp_path)
    with pytest.raises(EnsembleError, match=r"members\[x\].max_length: must be <= 128"):
        preflight([MemberConfig("x", model=str(tmp_path), train=TrainConfig(max_length=256))])
    preflight([MemberConfig("x", model=str(tmp_path), train=TrainConfig(max_length=128))])


def test_preflight_says_when_the_value_came_from_defaults(tmp_path):
    from transformers import BertConfig

    BertConfig(max_position_embeddings=64).save_pretrained(tmp_path)
    shared = TrainConfig(max_length=100)
    member = MemberConfig("x", model=str(tmp_path), train=shared)
    with pytest.raises(EnsembleError, match=r"^r.toml: members\[x\].max_length \(from \[defaults\]\): must be <= 64"):
        preflight([member], where="r.toml", defaults=shared)
    # its own value, or the built-in default (128), is not the [defaults] one
    with pytest.raises(EnsembleError, match=r"^r.toml: members\[x\].max_length: must be <= 64"):
        preflight([MemberConfig("x", model=str(tmp_path), train=TrainConfig(max_length=90))], where="r.toml", defaults=shared)
    with pytest.raises(EnsembleError, match=r"^members\[x\].max_length: must be <= 64"):
        preflight([MemberConfig("x", model=str(tmp_path))], defaults=TrainConfig())


@pytest.mark.parametrize("arch", ARCHES)
def test_dropout_reaches_the_classifier_head(arch):
    # ALBERT's head has its own dropout (0.1 by default) that the encoder's does not set
    model, _ = build_member(MemberConfig("m", init="scratch", arch=arch, train=TrainConfig(dropout=0.0)), ["a", "b"],
                            ["a good film", "a bad film"] * 10)
    assert [(n, m.p) for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0] == []


def test_preflight_refuses_more_trainable_layers_than_the_model_has():
    # a larger number was taken as "all layers" yet still froze the embeddings
    with pytest.raises(EnsembleError, match=r"members\[s\].trainable_layers: the model has 2 layers; got 5 .*\"all\""):
        preflight([MemberConfig("s", init="scratch", arch="bert", train=TrainConfig(trainable_layers=5))])
    preflight([MemberConfig("s", init="scratch", arch="bert", train=TrainConfig(trainable_layers=2))])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A local pretrained checkpoint whose head was trained on labels pos, neg, mid (in that order)."""
    path = tmp_path_factory.mktemp("ckpt") / "bert"
    model, tok = build_member(MemberConfig("c", init="scratch", arch="bert"), ["pos", "neg", "mid"], TEXTS)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_a_checkpoints_head_follows_label_names_not_positions(checkpoint):
    """A head of the right size is reused only for the same label names, rows in the recipe's
    order; for other names it starts afresh (it used to be reused by position)."""
    from safetensors.torch import load_file

    head = load_file(checkpoint / "model.safetensors")["classifier.weight"]
    same, _ = build_member(MemberConfig("m", model=str(checkpoint)), ["mid", "neg", "pos"], [])
    assert torch.equal(same.classifier.weight, head[[2, 1, 0]])
    other, _ = build_member(MemberConfig("m", model=str(checkpoint)), ["a", "b", "c"], [])
    assert not any(torch.equal(other.classifier.weight[i], head[j]) for i in range(3) for j in range(3))
    assert other.classifier.bias.abs().sum() == 0  # initialised as transformers initialises a new head
    encoder = load_file(checkpoint / "model.safetensors")["bert.encoder.layer.0.attention.self.query.weight"]
    assert torch.equal(other.bert.encoder.layer[0].attention.self.query.weight, encoder)


@pytest.mark.parametrize("damage, message", [
    ("missing_tensor", r"its weights lack or mis-shape 1 encoder tensors \(bert.encoder.layer.1.output.dense.weight\)"),
    ("wrong_shape", r"its weights lack or mis-shape 1 encoder tensors \(bert.encoder.layer.0.attention.self.query.weight\)"),
    ("truncated", r"its safetensors weights are corrupt \(.*\); download or copy them again"),
    ("pickle_only", r"holds pickle weights only \(pytorch_model.bin\)"),
    ("no_pad", r"its tokenizer has no padding token"),
    ("big_vocab", r"its tokenizer has \d+ tokens but the model embeds 40"),
])
def test_a_broken_checkpoint_is_refused_before_training(checkpoint, tmp_path, damage, message):
    """Each of these used to train on random encoder weights or crash as an internal error."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "c"
    shutil.copytree(checkpoint, path)
    weights = load_file(path / "model.safetensors")
    if damage == "missing_tensor":
        del weights["bert.encoder.layer.1.output.dense.weight"]
    elif damage == "wrong_shape":
        weights["bert.encoder.layer.0.attention.self.query.weight"] = weights["bert.encoder.layer.0.attention.self.query.weight"][:8]
    if damage in ("missing_tensor", "wrong_shape"):
        save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    elif damage == "truncated":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "pickle_only":
        (path / "model.safetensors").unlink()
        (path / "pytorch_model.bin").write_bytes(b"not read")
    elif damage == "no_pad":
        config = json.loads((path / "tokenizer_config.json").read_text())
        config["pad_token"] = None
        (path / "tokenizer_config.json").write_text(json.dumps(config))
        tok = json.loads((path / "tokenizer.json").read_text())
        tok["padding"] = None
        (path / "tokenizer.json").write_text(json.dumps(tok))
    else:
        config = json.loads((path / "config.json").read_text())
        config["vocab_size"] = 40
        (path / "config.json").write_text(json.dumps(config))
        weights["bert.embeddings.word_embeddings.weight"] = weights["bert.embeddings.word_embeddings.weight"][:40]
        save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(EnsembleError, match=rf"^members\[m\].model: '{path}': {message}"):
        build_member(MemberConfig("m", model=str(path)), LABELS, [])


def test_load_member_refuses_a_label_named_twice(member_dir, tmp_path):
    # both columns mapped to the first, the other one's scores dropped, gold and predictions apart
    path = tmp_path / "m"
    shutil.copytree(member_dir, path)
    config = json.loads((path / "config.json").read_text())
    config["id2label"] = {"0": "neg", "1": "neg"}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EnsembleError, match=r"id2label names 'neg' more than once"):
        load_member(path)


def test_load_member_names_a_head_of_another_size(member_dir, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(member_dir, path)
    config = json.loads((path / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "a", "1": "b", "2": "c"}, {"a": 0, "b": 1, "c": 2}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EnsembleError, match=r"mismatched keys: classifier.bias of shape \[2\] in the file, \[3\] by "
                                            r"config.json"):
        load_member(path)


def test_load_member_refuses_weights_that_give_nan(member_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "m"
    shutil.copytree(member_dir, path)
    weights = load_file(path / "model.safetensors")
    weights["classifier.bias"] = torch.full_like(weights["classifier.bias"], float("nan"))
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(EnsembleError, match=r"its weights give NaN or infinite scores"):
        load_member(path)


@pytest.mark.parametrize("model_type, gradient_checkpointing, message", [
    ("distilbert", False, r"members\[m\].model: '.*' is a 'distilbert' model; supported: albert, bert, electra, roberta"),
    ("albert", True, r"members\[m\].gradient_checkpointing: transformers has no activation checkpointing for albert"),
    ("bert", True, None),
])
def test_preflight_refuses_what_would_fail_after_training(tmp_path, model_type, gradient_checkpointing, message):
    """These used to train for the whole run, then fail (an unsupported model type at the vote) or
    crash as an internal error at the first step (checkpointing ALBERT)."""
    from transformers import AutoConfig

    AutoConfig.for_model(model_type).save_pretrained(tmp_path)
    cfg = MemberConfig("m", model=str(tmp_path), train=TrainConfig(gradient_checkpointing=gradient_checkpointing))
    if message is None:
        preflight([cfg])
        return
    with pytest.raises(EnsembleError, match=message):
        preflight([cfg])
    if model_type == "albert":  # a scratch ALBERT too
        with pytest.raises(EnsembleError, match=message):
            preflight([MemberConfig("m", init="scratch", arch="albert", train=cfg.train)])


def test_a_trained_member_drops_the_base_checkpoints_custom_code_references(tmp_path):
    """A base checkpoint's auto_map named code files the trained member does not carry: with
    trust_remote_code=True transformers failed to open the member, looking for them."""
    from ensemble.members import drop_remote_code

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "auto_map": {"AutoConfig": "evil.Cfg"}}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["evil.Tok", None]},
                                                               "pad_token": "[PAD]"}))
    drop_remote_code(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == {"model_type": "bert"}
    assert json.loads((tmp_path / "tokenizer_config.json").read_text()) == {"pad_token": "[PAD]"}
