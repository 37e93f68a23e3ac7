"""Provenance: what a member was made from and with, as recorded beside it and compared by --resume.

- `learned_settings`: a member's settings without `BOOKKEEPING`, the ones that change nothing it
  learns; finished members and checkpoints are both compared on these.
- `base_fingerprint`: which starting checkpoint a pretrained member fine-tunes (a local
  directory's file contents, a hub model's cached snapshot commit), so that a base changed on
  disk is noticed and a moved but identical one is not.
- `environment`: library versions, device, processes, precision and times, for metrics.json
  (a record only: nothing compares it).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .config import MemberConfig

# Settings that do not change what a member learns: a finished member is kept, and a checkpoint
# resumed, when only they differ.
BOOKKEEPING = ("train.log_with", "train.checkpoint_every", "train.on_diverge")


def flat(tree, prefix: str = "") -> dict:
    """A nested dict as one level of dotted keys.

    Example:
        >>> flat({"name": "b", "train": {"lr": 0.001}})
        {'name': 'b', 'train.lr': 0.001}
    """
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree} if prefix else {}
    return {k: v for key, value in tree.items() for k, v in flat(value, f"{prefix}{key}.").items()}


def learned_settings(member: dict | None) -> dict:
    """A member's settings (as `recipe_dict` gives them, or its recipe.json records them), flat,
    without `BOOKKEEPING`.

    Example:
        >>> learned_settings({"name": "b", "train": {"lr": 0.001, "checkpoint_every": 5}})
        {'name': 'b', 'train.lr': 0.001}
    """
    return {k: v for k, v in flat(member).items() if k not in BOOKKEEPING}


def setting_changes(before: dict, now: dict, most: int = 3) -> str:
    """The settings that differ between two `learned_settings`, as "key: old -> new; ...", at most
    `most` of them named; "" when none differ.

    Example:
        >>> setting_changes({"train.lr": 0.0005}, {"train.lr": 0.0003})
        'train.lr: 0.0005 -> 0.0003'
    """
    diffs = [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
             if before.get(k) != now.get(k)]
    return "; ".join(diffs[:most]) + ("; ..." if len(diffs) > most else "")


def local_base(cfg: MemberConfig) -> Path | None:
    """The local directory a pretrained member starts from; None for a scratch member or a hub id.

    Example:
        >>> local_base(MemberConfig("b", init="scratch", arch="bert")) is None
        True
    """
    if cfg.init != "pretrained" or not cfg.model:
        return None
    path = Path(cfg.model).expanduser()
    return path if path.is_dir() else None


def base_fingerprint(cfg: MemberConfig) -> str | None:
    """What a pretrained member starts from: ``"sha256:..."`` over a local directory's config.json
    and weight files, ``"commit:..."`` for the snapshot of a hub id that the local Hugging Face
    cache resolves (offline); None for a scratch member, or when it cannot be told.

    Example:
        >>> base_fingerprint(MemberConfig("b", init="scratch", arch="bert")) is None
        True
    """
    local = local_base(cfg)
    if local is not None:
        return _directory_fingerprint(local)
    if cfg.init != "pretrained" or not cfg.model:
        return None
    return _cached_commit(cfg.model)


# The files a member's starting point is loaded from (`members.build_member`): the config, the
# safetensors weights and the tokenizer (a checkpoint holds no tokenizer: one changed under an
# interrupted member would otherwise tokenize the rest of its training otherwise).
BASE_FILES = ("config.json", "model*.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")


def _directory_fingerprint(directory: Path) -> str | None:
    digest = hashlib.sha256()
    files = sorted({p for pattern in BASE_FILES for p in directory.glob(pattern) if p.is_file()})
    try:
        for path in files:
            digest.update(path.name.encode() + b"\0" + _file_digest(path))
    except OSError:  # unreadable: loading it reports that, in its own words
        return None
    return "sha256:" + digest.hexdigest() if files else None


# sha256 of files already hashed in this process, by (path, size, modification time): --resume
# looks at each member's base several times (kept? why retrained? its checkpoint?).
_DIGESTS: dict[tuple[str, int, int], bytes] = {}


def _file_digest(path: Path) -> bytes:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        with path.open("rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, "sha256").digest()
    return _DIGESTS[key]


def _cached_commit(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a name the hub would refuse: then nothing is known about it
        return None
    # .../models--org--name/snapshots/<commit>/config.json
    return f"commit:{Path(found).parent.name}" if isinstance(found, str) else None


@dataclass
class Environment:
    """Where and with what a member was trained, for its metrics.json (`environment`)."""

    ensemble: str | None
    python: str
    torch: str | None
    transformers: str | None
    accelerate: str | None
    tokenizers: str | None
    device: str  # "cpu: <model name>" or "cuda: <device name>"
    processes: int
    mixed_precision: str
    started: str  # when training of the member began (UTC, ISO 8601), before any interruption
    wall_seconds: float  # spent training it, over every resumed run (work lost to a kill not counted)


def environment(device, processes: int, mixed_precision: str, started: str, wall_seconds: float) -> Environment:
    """The `Environment` of a member trained on `device` (a torch.device).

    Example:
        >>> import torch
        >>> environment(torch.device("cpu"), 1, "no", utc_now(), 12.5).device.startswith("cpu")
        True
    """
    return Environment(ensemble=_version("ensemble"), python=platform.python_version(), torch=_version("torch"),
                       transformers=_version("transformers"), accelerate=_version("accelerate"),
                       tokenizers=_version("tokenizers"), device=describe_device(device), processes=processes,
                       mixed_precision=mixed_precision, started=started, wall_seconds=round(wall_seconds, 3))


def utc_now() -> str:
    """The current time, UTC, ISO 8601 to the second (e.g. ``2025-01-31T12:00:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def describe_device(device) -> str:
    """ "cuda: NVIDIA H100 80GB HBM3", "cpu: AMD EPYC 7763 64-Core Processor", or the device type."""
    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        return f"cpu: {_cpu_model()}"
    return str(device.type)


def _cpu_model() -> str:
    try:  # Linux names the model here; platform.processor() only gives the architecture there
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # e.g. run from a source tree
        if package == "ensemble":
            from . import __version__

            return __version__
        return None
