"""What --resume compares a finished member or a checkpoint on: its base model's files (not the
path they sit at), its settings but the bookkeeping ones; and the environment metrics.json records.

No training here: member directories and checkpoints are written by hand, as `train` writes them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from ensemble import provenance
from ensemble.checkpoint import MadeWith, Progress, checkpoint_dir
from ensemble.fit import changed, finished
from ensemble.recipe import MemberConfig, TrainConfig, recipe_dict
from ensemble.train import checkpoint_mismatch, member_fingerprint

LABELS = ["neg", "pos"]
ROWS = {"train": "t", "valid": "v"}


def base_dir(path: Path, weights: bytes = b"weights-1") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    (path / "model.safetensors").write_bytes(weights)
    (path / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")
    return path


def trained(path: Path, cfg: MemberConfig, base: str | None) -> Path:
    """A finished member directory as `train._save_member` writes it (`base`: None, as before
    base fingerprints were recorded)."""
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"trained")
    (path / "metrics.json").write_text("{}", encoding="utf-8")
    record = {"member": recipe_dict(cfg), "data": {}, "labels": LABELS, "rows": ROWS}
    if base is not None:
        record["base_fingerprint"] = base
    (path / "recipe.json").write_text(json.dumps(record), encoding="utf-8")
    return path


def local(name: str, base: Path, **train) -> MemberConfig:
    return MemberConfig(name, model=str(base.resolve()), train=TrainConfig(**train))


def test_a_member_whose_local_base_changed_on_disk_is_trained_again(tmp_path):
    cfg = local("ft", base_dir(tmp_path / "base"))
    member = trained(tmp_path / "run" / "ft", cfg, provenance.base_fingerprint(cfg))
    assert finished(member, cfg, LABELS, ROWS) and changed(member, cfg, LABELS, ROWS) is None
    (tmp_path / "base" / "model.safetensors").write_bytes(b"weights-2, other weights")
    assert not finished(member, cfg, LABELS, ROWS)
    assert changed(member, cfg, LABELS, ROWS) == (
        f"its base model's files changed since it was trained (model '{cfg.model}')")
    (tmp_path / "base" / "model.safetensors").write_bytes(b"weights-1")
    (tmp_path / "base" / "config.json").write_text('{"model_type": "bert", "hidden_size": 64}', encoding="utf-8")
    assert not finished(member, cfg, LABELS, ROWS)  # the config is part of the start too


def test_a_moved_and_changed_local_base_is_named_as_changed_files(tmp_path):
    cfg = local("ft", base_dir(tmp_path / "base1"))
    member = trained(tmp_path / "run" / "ft", cfg, provenance.base_fingerprint(cfg))
    (tmp_path / "base1").rename(tmp_path / "base2")
    (tmp_path / "base2" / "model.safetensors").write_bytes(b"weights-2, other weights")
    moved = local("ft", tmp_path / "base2")
    assert changed(member, moved, LABELS, ROWS) == (f"its base model changed since it was trained: model "
                                                    f"'{moved.model}' (was '{cfg.model}') holds other files")


def test_a_moved_but_identical_local_base_is_the_same_model(tmp_path):
    before = local("ft", base_dir(tmp_path / "proj" / "base"))
    member = trained(tmp_path / "proj" / "run" / "ft", before, provenance.base_fingerprint(before))
    shutil.copytree(tmp_path / "proj", tmp_path / "proj2")
    moved = local("ft", tmp_path / "proj2" / "base")
    assert finished(tmp_path / "proj2" / "run" / "ft", moved, LABELS, ROWS)
    # another directory with other files: named, with the files as the reason
    other = local("ft", base_dir(tmp_path / "other", b"weights-2"))
    assert changed(member, other, LABELS, ROWS) == (
        f"its base model changed since it was trained: model '{other.model}' (was '{before.model}') holds other files")
    # ... and a moved base with another setting changed: only that setting is named
    assert changed(member, local("ft", tmp_path / "proj2" / "base", lr=1e-3), LABELS, ROWS) == (
        "its settings changed since it was trained (train.lr: 5e-05 -> 0.001)")


def test_members_trained_before_base_fingerprints_are_kept_for_lacking_one(tmp_path):
    cfg = local("ft", base_dir(tmp_path / "base"))
    member = trained(tmp_path / "run" / "ft", cfg, None)
    (tmp_path / "base" / "model.safetensors").write_bytes(b"weights-2")  # unknowable: it recorded nothing
    assert finished(member, cfg, LABELS, ROWS)


def test_hub_members_compare_the_cached_snapshot_commit(tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}", encoding="utf-8")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123", encoding="utf-8")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = MemberConfig("hub", model="org/tiny")
    assert provenance.base_fingerprint(cfg) == "commit:abc123"
    assert provenance.base_fingerprint(MemberConfig("gone", model="org/not-cached")) is None
    member = trained(tmp_path / "run" / "hub", cfg, "commit:abc123")
    assert finished(member, cfg, LABELS, ROWS)
    (snapshot.parents[1] / "refs" / "main").write_text("def456", encoding="utf-8")  # the cache moved on
    snapshot.rename(snapshot.parent / "def456")
    assert changed(member, cfg, LABELS, ROWS) == "its base model's files changed since it was trained (model 'org/tiny')"
    scratch = MemberConfig("s", init="scratch", arch="bert")
    assert provenance.base_fingerprint(scratch) is None
    assert finished(trained(tmp_path / "run" / "s", scratch, None), scratch, LABELS, ROWS)


def test_file_hashes_are_cached_until_the_file_changes(tmp_path, monkeypatch):
    cfg = local("ft", base_dir(tmp_path / "base"))
    first = provenance.base_fingerprint(cfg)
    reads = []
    real = provenance.hashlib.file_digest
    monkeypatch.setattr(provenance.hashlib, "file_digest", lambda f, name: reads.append(f.name) or real(f, name))
    assert provenance.base_fingerprint(cfg) == first and reads == []
    (tmp_path / "base" / "model.safetensors").write_bytes(b"weights-22")  # other size: hashed again
    assert provenance.base_fingerprint(cfg) != first and [Path(r).name for r in reads] == ["model.safetensors"]


@pytest.mark.parametrize("bookkeeping", [{"checkpoint_every": 5}, {"log_with": ("tensorboard",)}, {"on_diverge": "skip"}])
def test_a_checkpoint_is_resumed_whatever_its_bookkeeping_settings(bookkeeping):
    cfg = MemberConfig("b", init="scratch", arch="bert", train=TrainConfig(checkpoint_every=4))
    other = MemberConfig("b", init="scratch", arch="bert", train=TrainConfig(**{"checkpoint_every": 4, **bookkeeping}))
    assert member_fingerprint(cfg, LABELS, ROWS) == member_fingerprint(other, LABELS, ROWS)
    assert member_fingerprint(cfg, LABELS, ROWS) != member_fingerprint(
        MemberConfig("b", init="scratch", arch="bert", train=TrainConfig(lr=3e-4)), LABELS, ROWS)


def test_a_checkpoint_of_a_moved_local_base_is_resumed_and_one_of_changed_files_is_not(tmp_path):
    cfg = local("ft", base_dir(tmp_path / "proj" / "base"))
    shutil.copytree(tmp_path / "proj", tmp_path / "proj2")
    assert member_fingerprint(cfg, LABELS, ROWS) == member_fingerprint(local("ft", tmp_path / "proj2" / "base"), LABELS, ROWS)
    made = MadeWith.of(cfg, LABELS, ROWS)
    (tmp_path / "proj" / "base" / "model.safetensors").write_bytes(b"weights-2")
    now = MadeWith.of(cfg, LABELS, ROWS)
    assert now.fingerprint() != made.fingerprint()
    assert made.changes(now) == "other base model files"
    # a checkpoint holds no tokenizer: one changed under an interrupted member is a change too
    (tmp_path / "proj2" / "base" / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\n", encoding="utf-8")
    moved = local("ft", tmp_path / "proj2" / "base")
    assert MadeWith.of(moved, LABELS, ROWS).changes(made) == "other base model files"


def test_the_line_for_a_checkpoint_not_resumed_names_what_changed(tmp_path):
    cfg = MemberConfig("b", init="scratch", arch="bert", train=TrainConfig(lr=5e-4))
    made = MadeWith.of(cfg, LABELS, ROWS)
    progress = Progress(made.fingerprint(), 8, epoch=2, batches_done=8, made_with=made)
    now = MadeWith.of(MemberConfig("b", init="scratch", arch="bert", train=TrainConfig(lr=3e-4, checkpoint_every=5)),
                      LABELS, {"train": "t2", "valid": "v"})
    assert checkpoint_mismatch("b", progress, now) == (
        "b: its checkpoint (epoch 2, batch 8) was made with other settings (train.lr: 0.0005 -> 0.0003), "
        "other data (train rows); training it from the start")
    # a checkpoint of an earlier version recorded only its fingerprint
    progress.made_with = None
    assert checkpoint_mismatch("b", progress, now) == (
        "b: its checkpoint (epoch 2, batch 8) was made with other settings, data or number of processes; "
        "training it from the start")


def test_progress_json_keeps_what_the_checkpoint_was_made_with(tmp_path):
    from ensemble.checkpoint import PROGRESS, read_progress
    from ensemble.files import write_json

    made = MadeWith.of(MemberConfig("b", init="scratch", arch="bert"), LABELS, ROWS, 2, (1.0, 0.5, "h"))
    root = checkpoint_dir(tmp_path / "members" / "b")
    root.mkdir(parents=True)
    write_json(root / PROGRESS, asdict(Progress(made.fingerprint(), 8, made_with=made, started="2025-01-01T00:00:00+00:00")))
    back = read_progress(root)
    assert back.made_with == made and back.made_with.fingerprint() == made.fingerprint()
    older = {k: v for k, v in asdict(back).items() if k not in ("made_with", "started", "seconds")}
    write_json(root / PROGRESS, older)  # an earlier version's progress.json still reads
    assert read_progress(root).made_with is None and read_progress(root).fingerprint == made.fingerprint()


def test_environment_names_versions_device_and_times():
    import importlib.metadata

    import torch

    env = provenance.environment(torch.device("cpu"), 2, "bf16", "2025-01-31T12:00:00+00:00", 12.34567)
    assert env.ensemble and env.torch == importlib.metadata.version("torch")
    assert env.device.startswith("cpu: ") and len(env.device) > len("cpu: ")
    assert (env.processes, env.mixed_precision, env.wall_seconds) == (2, "bf16", 12.346)
    assert all(getattr(env, k) for k in ("python", "transformers", "accelerate", "tokenizers"))
