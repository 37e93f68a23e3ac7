"""The training loop: determinism, schedules, optimizers, best-epoch selection, early stopping,
gradient accumulation, freezing, precision, sentence pairs, atomic saving and divergence.

Training runs use tiny scratch BERTs on small slices of the generated demo data (recipes/demo),
max_length 32 and 1-3 epochs, so each takes about a second on two CPU cores.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import ensemble.ensemble as ens_mod
import ensemble.members as members_mod
import ensemble.train as train_mod
from ensemble.batching import Collator, encode, length_sorted_batches
from ensemble.data import load_table
from ensemble.ensemble import Ensemble
from ensemble.errors import EnsembleError
from ensemble.labels import sorted_labels
from ensemble.members import build_member, load_member
from ensemble.recipe import DataConfig, MemberConfig, TrainConfig
from ensemble.files import replace_dir
from ensemble.train import Splits, make_optimizer, make_scheduler, train_member

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo"
WEIGHTS = "model.safetensors"


# ---------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def demo_splits() -> Splits:
    """200 training rows and 60 validation rows of the 3-class demo data."""
    train = load_table(DEMO / "train.csv").subset(range(200))
    valid = load_table(DEMO / "valid.csv").subset(range(60))
    return Splits(train, valid)


@pytest.fixture(scope="module")
def small_splits() -> Splits:
    """64 / 32 rows: for runs whose metrics are scripted and only the loop's logic matters."""
    train = load_table(DEMO / "train.csv").subset(range(64))
    valid = load_table(DEMO / "valid.csv").subset(range(32))
    return Splits(train, valid)


def member(name: str = "bert", arch: str = "bert", **train) -> MemberConfig:
    base = dict(max_length=32, batch_size=16, eval_batch_size=32, epochs=2, lr=1e-3, seed=1)
    return MemberConfig(name, init="scratch", arch=arch, size="tiny", train=TrainConfig(**{**base, **train}))


def fit(cfg: MemberConfig, splits: Splits, out: Path, data: DataConfig | None = None) -> dict:
    labels = sorted_labels(splits.train.labels)
    return train_member(cfg, splits, labels, data or DataConfig(train=DEMO / "train.csv"), out, progress=False)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / WEIGHTS))


def member_valid_metrics(path: Path, valid, eval_batch_size: int) -> tuple[float, float]:
    """(valid loss, accuracy) of a saved member, batched exactly as the training loop evaluates."""
    m = load_member(path)
    label_id = {name: i for i, name in enumerate(m.labels)}
    enc = encode(m.tokenizer, valid.texts, valid.pairs, m.max_length, [label_id[y] for y in valid.labels])
    collate = Collator(m.tokenizer.pad_token_id)
    logits, targets = [], []
    with torch.inference_mode():
        for rows in length_sorted_batches(enc.lengths(), eval_batch_size):
            batch = collate([enc[i] for i in rows])
            targets.append(batch.pop("labels"))
            logits.append(m.model(**batch).logits.float())
    logits, targets = torch.cat(logits), torch.cat(targets)
    loss = torch.nn.functional.cross_entropy(logits, targets).item()
    accuracy = (logits.argmax(-1) == targets).sum().item() / len(targets)
    return loss, accuracy


def script_metrics(monkeypatch, key: str, values: list[float]) -> list[dict[str, torch.Tensor]]:
    """Make `validate` report `values[epoch - 1]` as `key`; returns the weights seen at each evaluation."""
    real = train_mod.validate
    snapshots: list[dict[str, torch.Tensor]] = []

    def scripted(model, loader, accelerator, n_classes):
        metrics, logits = real(model, loader, accelerator, n_classes)
        metrics[key] = values[len(snapshots)]
        state = accelerator.unwrap_model(model).state_dict()
        snapshots.append({k: v.detach().clone() for k, v in state.items()})
        return metrics, logits

    monkeypatch.setattr(train_mod, "validate", scripted)
    return snapshots


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() <= b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- make_scheduler

# steps_per_epoch=10; warmup = round(warmup_ratio * total) steps at (step + 1) / warmup.
SCHEDULES = [
    # linear, 3 epochs, 3 warmup steps, then 1 - (step - 3) / 27
    (dict(scheduler="linear", epochs=3, warmup_ratio=0.1),
     {0: 1 / 3, 1: 2 / 3, 2: 1.0, 3: 1.0, 12: 2 / 3, 21: 1 / 3, 29: 1 / 27, 30: 0.0}),
    # cosine: 0.5 * (1 + cos(pi * (step - 3) / 27))
    (dict(scheduler="cosine", epochs=3, warmup_ratio=0.1),
     {0: 1 / 3, 1: 2 / 3, 2: 1.0, 3: 1.0, 12: 0.75, 21: 0.25, 30: 0.0}),
    (dict(scheduler="constant", epochs=3, warmup_ratio=0.1),
     {0: 1 / 3, 1: 2 / 3, 2: 1.0, 3: 1.0, 15: 1.0, 29: 1.0}),
    # step: 5 epochs -> 5 warmup steps; gamma ** (epoch // 2): epochs 0-1 x1, 2-3 x0.5, 4 x0.25
    (dict(scheduler="step", epochs=5, warmup_ratio=0.1, step_size=2, gamma=0.5),
     {0: 0.2, 3: 0.8, 4: 1.0, 5: 1.0, 19: 1.0, 20: 0.5, 39: 0.5, 40: 0.25, 49: 0.25}),
    # exponential: gamma ** epoch, once per epoch
    (dict(scheduler="exponential", epochs=3, warmup_ratio=0.1, gamma=0.5),
     {0: 1 / 3, 2: 1.0, 9: 1.0, 10: 0.5, 19: 0.5, 20: 0.25, 29: 0.25}),
    # no warmup: the docstring's example
    (dict(scheduler="step", epochs=2, gamma=0.5), {0: 1.0, 9: 1.0, 10: 0.5, 19: 0.5}),
    (dict(scheduler="linear", epochs=2), {0: 1.0, 10: 0.5, 19: 0.05}),
]


SCHEDULE_IDS = [f"{f['scheduler']}-warmup{f.get('warmup_ratio', 0)}" for f, _ in SCHEDULES]


@pytest.mark.parametrize("fields, expected", SCHEDULES, ids=SCHEDULE_IDS)
def test_scheduler_multiplier_matches_hand_computed_values(fields, expected):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = make_scheduler(opt, TrainConfig(**fields), steps_per_epoch=10)
    factor = sched.lr_lambdas[0]
    for step, want in expected.items():
        assert factor(step) == pytest.approx(want, abs=1e-12), f"step {step}"
    # Stepping the real scheduler gives the same rates: lr after k steps is base * factor(k).
    seen = {0: opt.param_groups[0]["lr"]}
    for k in range(1, max(expected) + 1):
        opt.step()
        sched.step()
        seen[k] = opt.param_groups[0]["lr"]
    for step, want in expected.items():
        assert seen[step] == pytest.approx(2.0 * want, abs=1e-12), f"step {step}"


# ---------------------------------------------------------------- make_optimizer

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.lin = torch.nn.Linear(4, 3)
        self.norm = torch.nn.LayerNorm(3)
        self.frozen = torch.nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


OPTIMIZERS = [
    ("adamw", torch.optim.AdamW, {"betas": (0.8, 0.95), "eps": 1e-6}),
    ("adam", torch.optim.Adam, {"betas": (0.8, 0.95), "eps": 1e-6}),
    ("adamax", torch.optim.Adamax, {"betas": (0.8, 0.95), "eps": 1e-6}),
    ("rmsprop", torch.optim.RMSprop, {"eps": 1e-6, "momentum": 0.7}),
    ("sgd", torch.optim.SGD, {"momentum": 0.7}),
]


@pytest.mark.parametrize("name, cls, settings", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_optimizer_class_settings_and_decay_groups(name, cls, settings):
    model = Tiny()
    t = TrainConfig(optimizer=name, lr=0.003, betas=(0.8, 0.95), eps=1e-6, momentum=0.7, weight_decay=0.05)
    opt = make_optimizer(model, t)
    assert type(opt) is cls
    decay, no_decay = opt.param_groups
    for group in opt.param_groups:
        assert group["lr"] == 0.003
        for key, value in settings.items():
            assert group[key] == value, key
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == ids([model.emb.weight, model.lin.weight])
    assert ids(no_decay["params"]) == ids([model.lin.bias, model.norm.weight, model.norm.bias])
    # frozen parameters are left out of the optimizer altogether
    assert not ids(model.frozen.parameters()) & (ids(decay["params"]) | ids(no_decay["params"]))


def test_bert_biases_and_layernorms_are_exempt_from_weight_decay():
    cfg = member()
    model, _ = build_member(cfg, ["a", "b"], ["a good film", "a bad film"] * 20)
    decay, no_decay = make_optimizer(model, replace(cfg.train, weight_decay=0.01)).param_groups
    no_decay_ids = {id(p) for p in no_decay["params"]}
    names = dict(model.named_parameters())
    for n, p in names.items():
        exempt = n.endswith(".bias") or "LayerNorm" in n
        assert (id(p) in no_decay_ids) == exempt, n
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)
    assert id(names["bert.embeddings.word_embeddings.weight"]) not in no_decay_ids


# ---------------------------------------------------------------- determinism

@pytest.mark.slow
@pytest.mark.parametrize("arch", ["roberta", "bert"])
def test_same_seed_is_bit_identical_and_another_seed_is_not(arch, demo_splits, tmp_path):
    a = fit(member(arch=arch, seed=7), demo_splits, tmp_path / "a" / "m")
    b = fit(member(arch=arch, seed=7), demo_splits, tmp_path / "b" / "m")
    c = fit(member(arch=arch, seed=8), demo_splits, tmp_path / "c" / "m")
    hist = [json.loads((tmp_path / d / "m" / "metrics.json").read_text())["history"] for d in "ab"]
    assert len(hist[0]) == len(hist[1]) == 2
    for ra, rb in zip(*hist):
        for key in ("train_loss", "valid_loss", "accuracy", "macro_f1", "lr", "confusion"):
            assert ra[key] == rb[key], key
    assert a["best_epoch"] == b["best_epoch"]
    wa, wb, wc = (weights(tmp_path / d / "m") for d in "abc")
    assert wa.keys() == wb.keys() == wc.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    tokenizers = [(tmp_path / d / "m" / "tokenizer.json").read_bytes() for d in "ab"]
    assert tokenizers[0] == tokenizers[1]
    head = "classifier.out_proj.weight" if arch == "roberta" else "classifier.weight"
    assert not torch.equal(wa[head], wc[head])
    embeddings = f"{arch}.embeddings.word_embeddings.weight"
    assert not torch.equal(wa[embeddings], wc[embeddings])
    assert c["history"][0]["train_loss"] != a["history"][0]["train_loss"]


@pytest.mark.parametrize("arch", ["albert", "bert", "electra", "roberta"])
def test_scratch_tokenizer_is_reproducible(arch, demo_splits):
    # tokenizers' WordPiece trainer breaks count ties in hash order (huggingface/tokenizers#1794);
    # train_tokenizer uses plain BPE so the same texts always give the same vocabulary.
    from ensemble.scratch import train_tokenizer

    vocabs = [train_tokenizer(arch, demo_splits.train.texts, 8000, 32).get_vocab() for _ in range(5)]
    assert all(v == vocabs[0] for v in vocabs)


# ---------------------------------------------------------------- best epoch

@pytest.mark.slow
@pytest.mark.parametrize("metric", ["valid_loss", "accuracy"])
def test_best_epoch_is_the_best_of_history_and_its_weights_are_saved(metric, demo_splits, tmp_path):
    cfg = member(epochs=3, lr=3e-3, best_metric=metric)
    out = tmp_path / "m"
    result = fit(cfg, demo_splits, out)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["best_metric"] == metric and len(saved["history"]) == 3
    values = [r[metric] for r in saved["history"]]
    # first occurrence: a tie is not an improvement
    best = values.index(min(values) if metric == "valid_loss" else max(values)) + 1
    assert saved["best_epoch"] == result["best_epoch"] == best
    assert saved["best"] == saved["history"][best - 1]
    loss, accuracy = member_valid_metrics(out, demo_splits.valid, cfg.train.eval_batch_size)
    assert loss == pytest.approx(saved["history"][best - 1]["valid_loss"], rel=1e-5, abs=1e-6)
    assert accuracy == saved["history"][best - 1]["accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("metric, values, best", [
    ("valid_loss", [0.9, 0.5, 0.7], 2),
    ("valid_loss", [0.5, 0.5, 0.6], 1),  # a tie does not move the best epoch
    ("accuracy", [0.4, 0.8, 0.6], 2),
    ("macro_f1", [0.3, 0.3, 0.2], 1),
])
def test_saved_weights_are_the_best_epochs_not_the_last(metric, values, best, monkeypatch, small_splits, tmp_path):
    snapshots = script_metrics(monkeypatch, metric, values)
    out = tmp_path / "m"
    result = fit(member(epochs=3, lr=3e-3, best_metric=metric), small_splits, out)
    assert result["best_epoch"] == best
    assert [r[metric] for r in result["history"]] == values
    saved = weights(out)
    assert same_tensors(saved, snapshots[best - 1])
    assert not same_tensors(saved, snapshots[-1])  # training moved on after the best epoch


# ---------------------------------------------------------------- early stopping

LOSSES = [1.0, 0.8, 0.9, 0.85, 0.7]


@pytest.mark.slow
@pytest.mark.parametrize("metric, values, patience, epochs_run, best", [
    ("valid_loss", LOSSES, 1, 3, 2),
    ("valid_loss", LOSSES, 2, 4, 2),
    ("valid_loss", LOSSES, 3, 5, 5),  # epoch 5 improves just in time
    ("valid_loss", LOSSES, None, 5, 5),
    ("accuracy", [0.5, 0.7, 0.7, 0.6, 0.9], 2, 4, 2),  # equal accuracy counts as no improvement
])
def test_patience_stops_after_that_many_epochs_without_improvement(metric, values, patience, epochs_run, best,
                                                                  monkeypatch, small_splits, tmp_path):
    snapshots = script_metrics(monkeypatch, metric, values)
    out = tmp_path / "m"
    result = fit(member(epochs=5, patience=patience, best_metric=metric), small_splits, out)
    assert len(snapshots) == epochs_run
    assert [r["epoch"] for r in result["history"]] == list(range(1, epochs_run + 1))
    assert result["best_epoch"] == best
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == best
    assert same_tensors(weights(out), snapshots[best - 1])


# ---------------------------------------------------------------- gradient accumulation

@pytest.mark.slow
def test_gradient_accumulation_steps_once_per_group_and_matches_full_batches(monkeypatch, demo_splits, tmp_path):
    # 200 rows in micro-batches of 16 / 4 = 4: 50 micro-batches, ceil(50 / 4) = 13 optimizer steps per epoch
    # (the last group has only 2 micro-batches and still steps).
    real_make_optimizer = train_mod.make_optimizer
    steps: list[int] = []
    micro: list[int] = []

    def counting(model, t):
        opt = real_make_optimizer(model, t)
        opt.register_step_post_hook(lambda *_: steps.append(1))
        model.register_forward_pre_hook(
            lambda mod, args, kwargs: micro.append(kwargs["input_ids"].shape[0]) if mod.training else None,
            with_kwargs=True)
        return opt

    monkeypatch.setattr(train_mod, "make_optimizer", counting)
    # plain shuffling (no length grouping): both runs then see the same rows in the same order
    accum = fit(member(batch_size=16, grad_accum=4, dropout=0.0, group_by_length=False), demo_splits, tmp_path / "accum")
    assert micro == [4] * 100  # 2 epochs of 50 micro-batches of 4 rows
    assert len(steps) == 2 * 13
    # linear schedule over 2 * 13 steps; an epoch records the rate its last step used (steps 13 and 26)
    assert [r["lr"] for r in accum["history"]] == [pytest.approx(1e-3 * (1 - 12 / 26)), pytest.approx(1e-3 / 26)]

    steps.clear()
    micro.clear()
    full = fit(member(batch_size=16, grad_accum=1, dropout=0.0, group_by_length=False), demo_splits, tmp_path / "full")
    assert micro == [16] * 12 + [8] + [16] * 12 + [8] and len(steps) == 2 * 13
    # Same rows in the same order, each step's loss the mean over its rows (the last, partial group's
    # 8 rows too): equal up to float rounding (padding and summation order differ).
    a, f = weights(tmp_path / "accum"), weights(tmp_path / "full")
    assert max((a[k] - f[k]).abs().max().item() for k in a) < 1e-4
    for h_accum, h_full in zip(accum["history"], full["history"]):
        assert h_accum["valid_loss"] == pytest.approx(h_full["valid_loss"], abs=1e-4)
    # each step's log line: the mean loss over the step's rows, and the rate that step used
    logs = [[json.loads(x) for x in (tmp_path / d / "log.jsonl").read_text().splitlines()]
            for d in ("accum", "full")]
    accum_steps, full_steps = ([x for x in log if x["event"] == "step"] for log in logs)
    assert [x["lr"] for x in accum_steps] == [x["lr"] for x in full_steps]
    assert accum_steps[0]["lr"] == 1e-3 and accum_steps[-1]["lr"] == pytest.approx(1e-3 / 26)
    for x, y in zip(accum_steps, full_steps):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-4)


# ---------------------------------------------------------------- freezing

@pytest.mark.slow
@pytest.mark.parametrize("trainable_layers", [0, 1])
def test_frozen_layers_stay_at_their_seeded_initialisation(trainable_layers, monkeypatch,
                                                          demo_splits, tmp_path):
    from accelerate.utils import set_seed

    real_build = train_mod.build_member
    built: list[dict[str, torch.Tensor]] = []

    def recording(cfg, labels, texts):
        model, tokenizer = real_build(cfg, labels, texts)
        built.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model, tokenizer

    monkeypatch.setattr(train_mod, "build_member", recording)
    cfg = member(trainable_layers=trainable_layers, seed=3)
    fit(cfg, demo_splits, tmp_path / "m")
    saved, init = weights(tmp_path / "m"), built[0]
    # The initialisation is the seeded one: a fresh build after set_seed(seed) reproduces it.
    set_seed(cfg.train.seed)
    fresh, _ = build_member(cfg, sorted_labels(demo_splits.train.labels), demo_splits.train.texts)
    assert same_tensors(init, fresh.state_dict())
    assert saved.keys() <= init.keys()

    def unchanged(prefix: str) -> bool:
        keys = [k for k in saved if k.startswith(prefix)]
        assert keys, prefix
        return all(torch.equal(saved[k], init[k]) for k in keys)

    assert unchanged("bert.embeddings.")
    assert unchanged("bert.encoder.layer.0.")
    assert unchanged("bert.encoder.layer.1.") == (trainable_layers == 0)
    assert not torch.equal(saved["classifier.weight"], init["classifier.weight"])
    assert not torch.equal(saved["bert.pooler.dense.weight"], init["bert.pooler.dense.weight"])


# ---------------------------------------------------------------- precision

@pytest.mark.slow
def test_bf16_trains_on_cpu_and_saves_a_loadable_fp32_member(demo_splits, tmp_path):
    result = fit(member(mixed_precision="bf16", epochs=1), demo_splits, tmp_path / "m")
    assert math.isfinite(result["history"][0]["train_loss"]) and math.isfinite(result["history"][0]["valid_loss"])
    assert all(t.dtype == torch.float32 for t in weights(tmp_path / "m").values())
    loaded = load_member(tmp_path / "m")
    assert loaded.labels == ["negative", "neutral", "positive"] and loaded.max_length == 32
    assert Ensemble([loaded]).predict(["a charming film"])[0] in loaded.labels


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed where CUDA is available")
def test_fp16_on_cpu_is_refused_with_a_pointer_to_bf16(small_splits, tmp_path):
    with pytest.raises(EnsembleError, match=r"members\[half\]\.mixed_precision: fp16 needs a GPU.*bf16"):
        fit(member("half", mixed_precision="fp16"), small_splits, tmp_path / "m")
    assert not tmp_path.joinpath("m").exists()


# ---------------------------------------------------------------- sentence pairs

@pytest.mark.slow
def test_sentence_pair_member_records_and_requires_pairs(shared_data, tmp_path):
    rte = load_table(shared_data / "glue" / "RTE" / "train.tsv", text="sentence1", text_pair="sentence2")
    sample = rte.subset(range(300))
    splits = Splits(sample.subset(range(240)), sample.subset(range(240, 300)))
    data = DataConfig(train=tmp_path / "rte.tsv", text="sentence1", text_pair="sentence2")
    out = tmp_path / "rte"
    result = fit(member("rte", epochs=1), splits, out, data)
    assert len(result["history"]) == 1
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["data"]["text_pair"] == "sentence2" and recipe["labels"] == ["entailment", "not_entailment"]
    loaded = load_member(out)
    assert loaded.text_pair is True
    ens = Ensemble.from_dirs({"rte": out})
    with pytest.raises(EnsembleError, match="sentence pairs"):
        ens.predict(["A man is sleeping."])
    pairs = [("A man is sleeping.", "A person rests."), ("The cat sat.", "A dog barked loudly.")]
    got = ens.predict(pairs)
    assert len(got) == 2 and set(got) <= {"entailment", "not_entailment"}
    assert ens.predict([p[0] for p in pairs], pairs=[p[1] for p in pairs]) == got
    # no rows give no rows, in any form a pair task's rows come in
    for empty in ([], iter([]), np.empty((0, 2), dtype=str)):
        assert ens.predict(empty) == [] and ens.predict_proba(empty).shape == (0, 2)
    for rows, message in (([("a", "b", "c")], "texts[0] has 3 items"), ([("a", "b"), "c"], "texts[1] is a str ('c')"),
                          ([["a1", "a2", "a3"], ["b1", "b2", "b3"]], "texts look like [texts, text_pairs]")):
        with pytest.raises(EnsembleError, match=re.escape(message)):
            ens.predict(rows)
    with pytest.raises(EnsembleError, match=re.escape("give (text, text_pair) tuples or pairs=, not both")):
        ens.predict(pairs, pairs=["x", "y"])


# ---------------------------------------------------------------- atomic save

def crash_card(*args, **kwargs):
    raise OSError("disk full (simulated)")


@pytest.mark.slow
def test_crash_while_saving_leaves_nothing_behind(monkeypatch, small_splits, tmp_path):
    monkeypatch.setattr(train_mod, "write_model_card", crash_card)
    out = tmp_path / "members" / "m"
    with pytest.raises(OSError, match="simulated"):
        fit(member("m", epochs=1), small_splits, out)
    assert not out.exists()
    # no temporary directory with weights that load_member would open; only the hidden resumable
    # checkpoint stays (for --resume), and it is not a member directory
    ckpt = tmp_path / "members" / ".m.ckpt"
    assert [p for p in (tmp_path / "members").iterdir()] == [ckpt]
    with pytest.raises(EnsembleError, match="not a member directory"):
        load_member(ckpt)


@pytest.mark.slow
def test_crash_while_resaving_keeps_the_old_member_intact(monkeypatch, small_splits, tmp_path):
    out = tmp_path / "members" / "m"
    fit(member("m", epochs=1, seed=1), small_splits, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(train_mod, "write_model_card", crash_card)
    with pytest.raises(OSError, match="simulated"):
        fit(member("m", epochs=1, seed=2), small_splits, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "members").iterdir()) == [".m.ckpt", "m"]  # resumable state
    assert load_member(out).labels == ["negative", "neutral", "positive"]


def make_dir(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "file.txt").write_text(text)
    return path


@pytest.mark.parametrize("existing", [False, True])
def test_replace_dir_moves_the_new_directory_into_place(existing, tmp_path):
    final = tmp_path / "out" / "m"
    if existing:
        make_dir(final, "old")
    tmp = make_dir(tmp_path / "out" / ".m.tmp", "new")
    replace_dir(tmp, final)
    assert (final / "file.txt").read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m"]


def test_replace_dir_restores_the_old_directory_when_the_move_fails(monkeypatch, tmp_path):
    final = make_dir(tmp_path / "m", "old")
    tmp = make_dir(tmp_path / ".m.tmp", "new")
    real_replace = os.replace

    def failing(src, dst):
        if Path(src) == tmp:
            raise OSError("cross-device link (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="simulated"):
        replace_dir(tmp, final)
    monkeypatch.undo()
    assert (final / "file.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.tmp", "m"]  # the caller removes its tmp


# ---------------------------------------------------------------- divergence

@pytest.mark.slow
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_raises_naming_the_member(bad, monkeypatch, small_splits, tmp_path):
    real_build = train_mod.build_member

    def poisoned(cfg, labels, texts):
        model, tokenizer = real_build(cfg, labels, texts)

        def hook(module, args, output):
            if module.training:
                # the value becomes `bad`, the gradient stays the true one (weights stay finite)
                output.loss = output.loss - output.loss.detach() + bad
            return output

        model.register_forward_hook(hook)
        return model, tokenizer

    monkeypatch.setattr(train_mod, "build_member", poisoned)
    out = tmp_path / "m"
    with pytest.raises(EnsembleError, match=rf"members\[diverger\]: training loss became {bad} at epoch 1, batch 1; lower lr .* no checkpoint was saved"):
        fit(member("diverger", epochs=2), small_splits, out)
    # stopped at the first batch: no member, and nothing saved yet (not even a log line)
    assert [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.slow
def test_non_finite_loss_read_back_late_names_its_batch_and_saves_nothing_after_it(monkeypatch, demo_splits, tmp_path):
    # As on a GPU: losses read back every 4 batches (and before each checkpoint). Batch 6 (of 13)
    # goes NaN and is found when batches 6-9 are read back: the step checkpoint of batch 5 stays,
    # the one due after batch 10 is never written.
    monkeypatch.setattr(train_mod, "_sync_every", lambda device: 4)
    real_build = train_mod.build_member
    calls = []

    def poisoned(cfg, labels, texts):
        model, tokenizer = real_build(cfg, labels, texts)

        def hook(module, args, output):
            if module.training:
                calls.append(1)
                if len(calls) == 6:
                    output.loss = output.loss - output.loss.detach() + float("nan")
            return output

        model.register_forward_hook(hook)
        return model, tokenizer

    monkeypatch.setattr(train_mod, "build_member", poisoned)
    with pytest.raises(EnsembleError, match=r"members\[late\]: training loss became nan at epoch 1, batch 6; .* "
                                            r"the last good checkpoint is kept"):
        fit(member("late", epochs=1, checkpoint_every=5), demo_splits, tmp_path / "m")
    progress = json.loads((tmp_path / ".m.ckpt" / "progress.json").read_text())
    assert progress["batches_done"] == 5
    steps = [json.loads(x) for x in (tmp_path / ".m.ckpt" / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in steps if x["event"] == "step"] == [1, 2, 3, 4, 5]  # none from the NaN on


@pytest.mark.slow
def test_reading_losses_back_in_windows_changes_nothing(monkeypatch, demo_splits, tmp_path):
    every = fit(member("w", epochs=2, checkpoint_every=3), demo_splits, tmp_path / "every")
    monkeypatch.setattr(train_mod, "_sync_every", lambda device: 5)
    windows = fit(member("w", epochs=2, checkpoint_every=3), demo_splits, tmp_path / "windows")
    for a, b in zip(every["history"], windows["history"], strict=True):
        for key in ("train_loss", "valid_loss", "accuracy", "lr"):
            assert a[key] == b[key], key
    wa, wb = weights(tmp_path / "every"), weights(tmp_path / "windows")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    logs = [[{k: v for k, v in json.loads(x).items() if k not in ("samples_per_s", "seconds")}
             for x in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("every", "windows")]
    assert logs[0] == logs[1] and sum(x["event"] == "step" for x in logs[0]) == 2 * 13


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_word_embedding_rows_step_matches_the_dense_step(weight_decay, monkeypatch, demo_splits, tmp_path):
    attached = []

    def spy(model, optimizer):
        rows = attach(model, optimizer)
        attached.append(rows)
        return rows

    attach = train_mod.EmbeddingRows.attach
    monkeypatch.setattr(train_mod.EmbeddingRows, "attach", spy)
    sparse = fit(member("w", epochs=2, grad_accum=2, weight_decay=weight_decay, checkpoint_every=5), demo_splits,
                 tmp_path / "sparse")
    assert attached and attached[0] is not None and not attached[0].embedding.sparse  # used, then detached
    monkeypatch.setattr(train_mod.EmbeddingRows, "attach", lambda model, optimizer: None)
    dense = fit(member("w", epochs=2, grad_accum=2, weight_decay=weight_decay, checkpoint_every=5), demo_splits,
                tmp_path / "dense")
    for a, b in zip(sparse["history"], dense["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    wa, wb = weights(tmp_path / "sparse"), weights(tmp_path / "dense")
    for key in wa:
        if not key.endswith("key.bias"):  # softmax ignores it: its gradient is rounding noise
            torch.testing.assert_close(wa[key], wb[key], rtol=1e-3, atol=1e-4, msg=key)


# ---------------------------------------------------------------- out-of-memory backoff

@pytest.mark.slow
def test_out_of_memory_shrinks_the_micro_batch_and_keeps_the_effective_batch(monkeypatch, demo_splits, tmp_path, capsys):
    real = train_mod.build_member
    sizes: list[int] = []

    def small_memory(cfg, labels, texts):
        model, tokenizer = real(cfg, labels, texts)

        def pre(module, args, kwargs):
            if module.training:
                rows = kwargs["input_ids"].shape[0]
                sizes.append(rows)
                if rows > 8 and len(sizes) > 3:  # what the CPU allocator says when it runs out, at the 4th batch
                    raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

        model.register_forward_pre_hook(pre, with_kwargs=True)
        return model, tokenizer

    monkeypatch.setattr(train_mod, "build_member", small_memory)
    steps: list[int] = []
    real_opt = train_mod.make_optimizer

    def counting(model, t):
        opt = real_opt(model, t)
        opt.register_step_post_hook(lambda *_: steps.append(1))
        return opt

    monkeypatch.setattr(train_mod, "make_optimizer", counting)
    result = fit(member(batch_size=32, grad_accum=1, epochs=1, group_by_length=False, checkpoint_every=2), demo_splits,
                 tmp_path / "m")
    # 32 (3 steps, then out of memory) -> 16 -> 8: micro-batches of 8, four per optimizer step,
    # ceil(200 / 32) = 7 steps from the start
    assert sizes == [32] * 4 + [16] + [8] * 25 and len(steps) == 3 + 7
    assert result["history"][0]["lr"] == pytest.approx(1e-3 / 7)  # the rate of the last of the 7 linear steps
    # the aborted attempt's step lines are gone: one line per step of the attempt that finished
    lines = [json.loads(line) for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if line["event"] == "step"] == list(range(1, 8))
    out = capsys.readouterr().out
    assert "out of memory at micro-batch 32; training again from the start with micro-batch 16 x 2" in out
    assert "micro-batch 8 x 4 accumulation steps (the effective batch stays 32)" in out


@pytest.mark.slow
def test_compile_opt_in_trains_and_saves_a_loadable_member(small_splits, tmp_path):
    result = fit(member(epochs=1, compile=True, max_length=16), small_splits, tmp_path / "m")
    assert math.isfinite(result["history"][0]["train_loss"])
    saved = load_member(tmp_path / "m")  # compiled wrappers do not leak into the saved weights
    assert saved.labels == ["negative", "neutral", "positive"]
    assert not any(k.startswith("_orig_mod") for k in weights(tmp_path / "m"))


# ---------------------------------------------------------------- trackers

@pytest.mark.slow
def test_tensorboard_tracker_gets_every_step_and_epoch(small_splits, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = fit(member(epochs=2, log_with=("tensorboard",)), small_splits, tmp_path / "run" / "members" / "bert")
    events = EventAccumulator(str(tmp_path / "run" / "logs" / "bert"))
    events.Reload()
    steps = [s.step for s in events.Scalars("train/loss")]
    assert steps == list(range(1, 9))  # 64 rows / 16 per step x 2 epochs, one point per optimizer step
    logged = [s.value for s in events.Scalars("valid/accuracy")]
    assert logged == pytest.approx([h["accuracy"] for h in result["history"]])


def interrupt_at_step(monkeypatch, step: int) -> None:
    """The next member built raises KeyboardInterrupt at training batch `step` (a kill, mid-epoch)."""
    real, calls = train_mod.build_member, [0]

    def interrupted(cfg, labels, texts):
        model, tokenizer = real(cfg, labels, texts)

        def pre(module, args, kwargs):
            if module.training:
                calls[0] += 1
                if calls[0] == step:
                    raise KeyboardInterrupt

        model.register_forward_pre_hook(pre, with_kwargs=True)
        monkeypatch.setattr(train_mod, "build_member", real)  # the resumed run is not interrupted
        return model, tokenizer

    monkeypatch.setattr(train_mod, "build_member", interrupted)


@pytest.mark.slow
def test_tensorboard_shows_each_step_once_after_a_resume(monkeypatch, small_splits, tmp_path):
    """A run interrupted at step 7 (checkpoint at step 4) and resumed: the steps after the
    checkpoint are logged twice, and TensorBoard used to show both (`purge_step` hides the first)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    interrupt_at_step(monkeypatch, 7)
    cfg, out = member(epochs=2, log_with=("tensorboard",), checkpoint_every=4), tmp_path / "run" / "members" / "bert"
    labels = sorted_labels(small_splits.train.labels)
    with pytest.raises(KeyboardInterrupt):
        train_member(cfg, small_splits, labels, DataConfig(train=DEMO / "train.csv"), out, progress=False)
    result = train_member(cfg, small_splits, labels, DataConfig(train=DEMO / "train.csv"), out, progress=False, resume=True)
    events = EventAccumulator(str(tmp_path / "run" / "logs" / "bert"))
    events.Reload()
    assert [s.step for s in events.Scalars("train/loss")] == list(range(1, 9))
    assert [s.value for s in events.Scalars("valid/accuracy")] == pytest.approx([h["accuracy"] for h in result["history"]])


@pytest.mark.slow
def test_a_checkpoint_resumes_under_other_bookkeeping_and_says_which_setting_changed(monkeypatch, small_splits,
                                                                                     tmp_path, capsys):
    """checkpoint_every (log_with, on_diverge) change nothing the member learns: its checkpoint is
    resumed; a learning setting that changed is named in the line that says it starts over."""
    out, data = tmp_path / "run" / "members" / "bert", DataConfig(train=DEMO / "train.csv")
    labels = sorted_labels(small_splits.train.labels)
    interrupt_at_step(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        train_member(member(epochs=2, checkpoint_every=2), small_splits, labels, data, out)
    progress = json.loads((out.parent / ".bert.ckpt" / "progress.json").read_text())
    assert progress["made_with"]["settings"]["train.lr"] == 1e-3 and progress["seconds"] > 0
    capsys.readouterr()
    result = train_member(member(epochs=2, checkpoint_every=3), small_splits, labels, data, out, resume=True)
    said = capsys.readouterr()
    assert "resumed at epoch 2 batch 2" in said.out + said.err and "training it from the start" not in said.out
    # the environment: when training began (before the interruption), and the time over both runs
    env = json.loads((out / "metrics.json").read_text())["environment"]
    assert env == result["environment"] and env["started"] == progress["started"]
    assert env["wall_seconds"] > progress["seconds"] and env["processes"] == 1 and env["mixed_precision"] == "no"
    assert env["device"].startswith("cpu: ") and set(env) >= {"ensemble", "python", "torch", "transformers",
                                                              "accelerate", "tokenizers"}
    assert "environment" not in json.loads((out / "recipe.json").read_text())  # nothing --resume compares

    interrupt_at_step(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        train_member(member(epochs=2, checkpoint_every=2), small_splits, labels, data, out, resume=True)
    capsys.readouterr()
    train_member(member(epochs=2, checkpoint_every=2, lr=5e-4), small_splits, labels, data, out, resume=True)
    assert ("bert: its checkpoint (epoch 2, batch 2) was made with other settings (train.lr: 0.001 -> 0.0005); "
            "training it from the start") in capsys.readouterr().out


def test_a_checkpoint_of_an_older_version_is_resumed_when_its_fingerprint_matches(monkeypatch, small_splits, tmp_path,
                                                                                 capsys):
    """Checkpoints written before MadeWith carry only the old fingerprint (every setting, no base
    files): an upgrade must not throw them away, nor say the settings changed."""
    from ensemble.checkpoint import MadeWith

    out, data = tmp_path / "run" / "members" / "bert", DataConfig(train=DEMO / "train.csv")
    labels, cfg = sorted_labels(small_splits.train.labels), member(epochs=2, checkpoint_every=2)
    interrupt_at_step(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        train_member(cfg, small_splits, labels, data, out)
    progress_file = out.parent / ".bert.ckpt" / "progress.json"
    old = json.loads(progress_file.read_text())
    for key in ("made_with", "started", "seconds"):  # what the older version did not write
        del old[key]
    old["fingerprint"] = MadeWith.legacy(cfg, labels, small_splits.rows)
    progress_file.write_text(json.dumps(old))
    capsys.readouterr()
    train_member(cfg, small_splits, labels, data, out, resume=True)
    said = capsys.readouterr()
    assert "resumed at epoch 2 batch 2" in said.out + said.err and "training it from the start" not in said.out


# ---------------------------------------------------------------- recorded validation logits

def test_recorded_valid_logits_are_the_saved_members_predictions(demo_splits, tmp_path):
    out = tmp_path / "m"
    result = fit(member(epochs=2), demo_splits, out)
    labels = sorted_labels(demo_splits.train.labels)
    recorded = members_mod.recorded_valid_logits(out, demo_splits.valid, labels)
    assert recorded is not None and recorded.shape == (len(demo_splits.valid), len(labels))
    # what the saved (best-epoch) weights predict, rows in the split's order
    ens = Ensemble.from_dirs({"m": out})
    assert ens.labels == labels
    assert abs(recorded - ens.member_logits(demo_splits.valid.texts)[0]).max() < 1e-4
    best = result["best"]
    assert (recorded.argmax(1) == [labels.index(y) for y in demo_splits.valid.labels]).mean() == best["accuracy"]
    # columns follow the labels asked for
    flipped = list(reversed(labels))
    assert (members_mod.recorded_valid_logits(out, demo_splits.valid, flipped) == recorded[:, ::-1]).all()


def test_recorded_valid_logits_are_refused_for_other_rows(demo_splits, tmp_path):
    out = tmp_path / "m"
    fit(member(epochs=1), demo_splits, out)
    labels = sorted_labels(demo_splits.train.labels)
    valid = demo_splits.valid
    changed = replace(valid, texts=[valid.texts[0] + " !"] + valid.texts[1:])
    fewer = valid.subset(range(len(valid) - 1))
    relabelled = replace(valid, labels=list(reversed(valid.labels)))
    for other in (changed, fewer, relabelled):
        assert members_mod.recorded_valid_logits(out, other, labels) is None
    assert members_mod.recorded_valid_logits(out, valid, labels + ["other"]) is None
    assert members_mod.recorded_valid_logits(tmp_path / "nowhere", valid, labels) is None
    # new weights saved into the directory (a further save_pretrained) leave the logits behind: not theirs
    assert members_mod.recorded_valid_logits(out, valid, labels) is not None
    from safetensors.torch import load_file, save_file

    weights = load_file(out / "model.safetensors")
    weights["classifier.bias"] = weights["classifier.bias"] + 1.0
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    assert members_mod.recorded_valid_logits(out, valid, labels) is None
    (out / "valid_logits.safetensors").write_bytes(b"not safetensors")
    assert members_mod.recorded_valid_logits(out, valid, labels) is None


def test_fit_votes_on_the_recorded_logits_and_falls_back_to_running_members(monkeypatch, tmp_path):
    from ensemble import fit as fit_mod
    from ensemble.recipe import load_recipe

    rows = (DEMO / "train.csv").read_text(encoding="utf-8").splitlines()[:241]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    body = "".join(f'[[members]]\nname = "{a}"\ninit = "scratch"\narch = "{a}"\nseed = {i}\n'
                   for i, a in enumerate(("bert", "electra")))
    (tmp_path / "r.toml").write_text('[data]\ntrain = "train.csv"\nvalid_fraction = 0.25\n[defaults]\nepochs = 2\n'
                                     f'max_length = 32\nlr = 5e-4\n{body}', encoding="utf-8")
    recipe = load_recipe(tmp_path / "r.toml")
    calls, opened = [], []
    real = Ensemble.member_logits
    monkeypatch.setattr(Ensemble, "member_logits", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    real_load = ens_mod.load_member
    monkeypatch.setattr(ens_mod, "load_member", lambda *a, **k: opened.append(k.get("weights", True)) or real_load(*a, **k))
    report = fit_mod.fit(recipe, tmp_path / "run", progress=False)
    assert calls == []  # no forward pass over the validation rows: each member's own logits were used
    assert opened == [False, False]  # and no test split: no member had to be opened with its weights
    for name in ("bert", "electra"):
        best = json.loads((tmp_path / "run" / "members" / name / "metrics.json").read_text())["best"]
        assert report["members"][name]["accuracy"] == best["accuracy"]
    # without one member's recorded logits, the vote runs the members instead, to the same result
    (tmp_path / "run" / "members" / "electra" / "valid_logits.safetensors").unlink()
    splits, test, labels = fit_mod.load_splits(recipe.data)
    again = fit_mod.vote_and_report(recipe, tmp_path / "run", splits, test, labels, {})
    assert calls == [1]
    assert again["ensemble"]["accuracy"] == report["ensemble"]["accuracy"]
    assert {n: m["accuracy"] for n, m in again["members"].items()} == {n: m["accuracy"] for n, m in report["members"].items()}


def test_vote_command_fits_on_recorded_logits_when_valid_is_the_members_file(monkeypatch, demo_splits, tmp_path, cli):
    valid_file = tmp_path / "valid.csv"
    with open(valid_file, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *zip(demo_splits.valid.texts, demo_splits.valid.labels)])
    valid = load_table(valid_file)
    assert valid.fingerprint() == demo_splits.valid.fingerprint()
    for i, arch in enumerate(("bert", "roberta")):
        fit(member(arch, arch, epochs=1, seed=i), Splits(demo_splits.train, valid), tmp_path / arch)
    calls = []
    real = Ensemble.member_logits
    monkeypatch.setattr(Ensemble, "member_logits", lambda self, texts, *a, **k: calls.append(len(texts)) or real(self, texts, *a, **k))
    args = ["vote", "--members", str(tmp_path / "bert"), str(tmp_path / "roberta"), "--data", str(DEMO / "test.csv"),
            "--valid", str(valid_file), "--method", "weighted", "--out", str(tmp_path / "out")]
    code, _, err = cli(args)
    assert code == 0, err
    assert calls == [len(load_table(DEMO / "test.csv"))]  # only the --data rows were run through the members
    # the same vote with the members run over --valid (recorded logits gone) learns the same weights
    for arch in ("bert", "roberta"):
        (tmp_path / arch / "valid_logits.safetensors").unlink()
    code, _, err = cli(args[:-1] + [str(tmp_path / "again")])
    assert code == 0, err
    first, again = (json.loads((tmp_path / d / "ensemble.json").read_text()) for d in ("out", "again"))
    assert first["weights"] == pytest.approx(again["weights"], abs=1e-4)


# ---------------------------------------------------------------- checkpoints of several processes

def test_a_checkpoint_of_several_processes_holds_the_epochs_loss_over_all_their_rows(tmp_path):
    """Each process keeps the running loss of its own rows; the checkpoint holds their sum, and on
    a resume only the main process takes it back. (progress.json used to hold the main process's
    share, which every process took back: the resumed epoch's train_loss counted the main
    process's rows twice and the others' not at all.)"""
    from ensemble.checkpoint import Checkpoint, Progress, read_progress

    class TwoProcesses:  # the main process of two, whose partner has the same running sums
        num_processes, is_main_process, device = 2, True, "cpu"

        def reduce(self, tensor, op):
            assert op == "sum"
            return tensor * 2

        def wait_for_everyone(self):
            pass

        def save_state(self, path):
            Path(path).mkdir(parents=True)

    ckpt = Checkpoint(tmp_path / ".m.ckpt", "fp")
    progress = Progress(fingerprint="fp", micro_batch_size=8, batches_done=3, loss_sum=3.5, seen=24)
    ckpt.save(TwoProcesses(), progress, None)
    assert (progress.loss_sum, progress.seen, progress.slot) == (3.5, 24, 0)  # this process goes on with its own
    assert (read_progress(ckpt.root).loss_sum, read_progress(ckpt.root).seen) == (7.0, 48)
    assert (ckpt.load().loss_sum, ckpt.load().seen) == (7.0, 48)
    assert (ckpt.load(main=False).loss_sum, ckpt.load(main=False).seen, ckpt.load(main=False).batches_done) == (0.0, 0, 3)


def test_data_labels_order_the_classes_everywhere(tmp_path):
    """A recipe's data.labels (ordinal classes) is the order of id2label, the manifest, the
    probabilities' columns and the report; a label it lacks, or one without rows, is refused."""
    from ensemble import fit as fit_mod
    from ensemble.recipe import load_recipe

    rows = (DEMO / "train.csv").read_text(encoding="utf-8").splitlines()[:161]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    order = ["positive", "neutral", "negative"]
    text = ('[data]\ntrain = "train.csv"\nvalid_fraction = 0.25\nlabels = LABELS\n[defaults]\nepochs = 1\nmax_length = 32\n'
            + "".join(f'[[members]]\nname = "{a}"\ninit = "scratch"\narch = "{a}"\n' for a in ("bert", "roberta")))
    (tmp_path / "r.toml").write_text(text.replace("LABELS", json.dumps(order)), encoding="utf-8")
    report = fit_mod.fit(load_recipe(tmp_path / "r.toml"), tmp_path / "run", progress=False)
    assert report["labels"] == order
    config = json.loads((tmp_path / "run" / "members" / "bert" / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(3)] == order
    assert json.loads((tmp_path / "run" / "ensemble.json").read_text())["labels"] == order
    ens = Ensemble.load(tmp_path / "run")
    assert ens.labels == order and list(ens.classes_) == order
    probs = ens.predict_proba(["the story is gripping and the acting superb."])
    assert ens.predict(["the story is gripping and the acting superb."]) == [order[int(probs.argmax())]]
    for labels, message in ((["positive", "negative"], r"data.train: label 'neutral' \(.* rows\) in '.*' is not in data.labels "
                                                        r"\['positive', 'negative'\]; add it to data.labels"),
                            (order + ["mixed"], "data.labels: 'mixed' has no row in data.train")):
        (tmp_path / "r.toml").write_text(text.replace("LABELS", json.dumps(labels)), encoding="utf-8")
        with pytest.raises(EnsembleError, match=message):
            fit_mod.load_splits(load_recipe(tmp_path / "r.toml").data)


def test_an_ensemble_orders_its_classes_by_its_members_not_by_who_comes_first(tmp_path, demo_splits):
    train_member(member("a", epochs=1), demo_splits, ["negative", "neutral", "positive"], DataConfig(train=DEMO / "train.csv"),
                 tmp_path / "a", progress=False)
    train_member(member("b", "roberta", epochs=1), demo_splits, ["positive", "negative", "neutral"],
                 DataConfig(train=DEMO / "train.csv"), tmp_path / "b", progress=False)
    for names in (("a", "b"), ("b", "a")):  # members that disagree on the order: sorted, whoever is first
        ens = Ensemble.from_dirs({n: tmp_path / n for n in names}, load_weights=False)
        assert ens.labels == ["negative", "neutral", "positive"]
    only_b = Ensemble.from_dirs({"b": tmp_path / "b"}, load_weights=False)
    assert only_b.labels == ["positive", "negative", "neutral"]  # one order shared: kept
    with pytest.raises(EnsembleError, match="labels: \\['x', 'y', 'z'\\] are not the members' labels"):
        Ensemble([load_member(tmp_path / "a")], labels=["x", "y", "z"])
