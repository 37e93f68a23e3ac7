"""Checks before any training: every member's model can be found (local directory, hub cache or
the hub), its max_length fits its position embeddings, and its mixed precision and trackers can
run on this machine. `fit`, its workers and `distill` call `preflight` first.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

from .devices import check_mixed_precision, warn_emulated_bf16
from .errors import EnsembleError
from .integrity import first_line
from .members import positions, quiet_transformers
from .config import TrainConfig
from .recipe import ARCHES, MemberConfig, is_local
from .scratch import MAX_POSITIONS, SIZES

SCRATCH_HINT = "run with --scratch tiny to train tiny scratch models of the same architectures instead"


def preflight(members: Iterable[MemberConfig], offline_hint: str = SCRATCH_HINT, where: str = "",
              defaults: TrainConfig | None = None) -> None:
    """Fail fast, before any training, on a member whose model cannot be found (or whose mixed
    precision this machine cannot train in).

    Hub ids are looked up in the local cache first; when the hub cannot be reached the error
    ends with `offline_hint` (for `fit`: ``--scratch tiny``, which turns hub members into scratch
    models of the same arch). `where` (the recipe's file name) starts each error, as the
    recipe's own errors do; with the recipe's `defaults`, an error on a training field a member
    shares with ``[defaults]`` says so, since that is where it is set most often.

    Example:
        >>> preflight([MemberConfig("m", init="scratch", arch="bert")], where="demo.toml")  # scratch: nothing to find
    """
    try:
        _preflight(list(members), offline_hint)
    except EnsembleError as exc:
        message = _name_defaults(str(exc), list(members), defaults)
        if not where and message == str(exc):
            raise
        raise EnsembleError(f"{where}: {message}" if where else message) from None


def _name_defaults(message: str, members: list[MemberConfig], defaults: TrainConfig | None) -> str:
    """``members[bert].mixed_precision: ...`` as ``members[bert].mixed_precision (from
    [defaults]): ...`` where the member's value is one [defaults] set (not the built-in default)."""
    found = re.match(r"members\[([^\]]+)\]\.(\w+): ", message)
    member = next((m for m in members if found and m.name == found.group(1)), None)
    if defaults is None or member is None or not hasattr(defaults, found.group(2)):
        return message
    value = getattr(member.train, found.group(2))
    if value != getattr(defaults, found.group(2)) or value == getattr(TrainConfig(), found.group(2)):
        return message
    return f"{message[:found.end() - 2]} (from [defaults]){message[found.end() - 2:]}"


def _preflight(members: list[MemberConfig], offline_hint: str) -> None:
    quiet_transformers()
    from transformers import AutoConfig

    warn_emulated_bf16(members)
    for m in members:
        check_mixed_precision(m)
        check_trackers(m)
        if m.init == "scratch":
            _check_arch(m, m.arch)
            _check_fits(m, MAX_POSITIONS, SIZES[m.size].layers)
            continue
        path = Path(m.model).expanduser()
        if is_local(m.model):
            if not (path / "config.json").is_file():
                raise EnsembleError(f"members[{m.name}].model: '{m.model}' is not a model directory (no config.json)")
            try:
                config = AutoConfig.from_pretrained(path, trust_remote_code=False)
            except (OSError, ValueError):
                continue  # an unreadable config is reported, with its reason, when the member is built
            _check_config(m, config)
            continue
        try:
            config = AutoConfig.from_pretrained(m.model, local_files_only=True)
        except (OSError, ValueError):
            config = None
        if config is not None:
            _check_config(m, config)
            continue
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or not _hub_reachable():
            raise EnsembleError(
                f"members[{m.name}].model: '{m.model}' is not in the local cache and the Hugging Face hub cannot be "
                f"reached; {offline_hint}, or set the model to a local directory")
        try:
            config = AutoConfig.from_pretrained(m.model)
        except (OSError, ValueError) as exc:
            raise EnsembleError(f"members[{m.name}].model: cannot load '{m.model}' from the hub: {first_line(exc)}") from None
        _check_config(m, config)


def _check_config(m: MemberConfig, config) -> None:
    _check_arch(m, getattr(config, "model_type", None))
    depth = getattr(config, "num_hidden_layers", None)
    _check_fits(m, positions(config), depth if isinstance(depth, int) else None)


def _check_arch(m: MemberConfig, model_type: str | None) -> None:
    """A model type the members' loader accepts (checked before training, not after), and
    activation checkpointing only where transformers has it (not ALBERT)."""
    if model_type not in ARCHES:
        raise EnsembleError(f"members[{m.name}].model: '{m.model}' is a {model_type!r} model; supported: {', '.join(ARCHES)}")
    if m.train.gradient_checkpointing:
        import transformers
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as classes

        if not getattr(getattr(transformers, classes[model_type]), "supports_gradient_checkpointing", False):
            raise EnsembleError(f"members[{m.name}].gradient_checkpointing: transformers has no activation "
                                f"checkpointing for {model_type} models; set it to false for this member")


def _check_fits(m: MemberConfig, limit: int | None, depth: int | None) -> None:
    """The member's max_length within the model's positions, its trainable_layers within its depth."""
    if limit is not None and m.train.max_length > limit:
        raise EnsembleError(f"members[{m.name}].max_length: must be <= {limit}, the positions the model has; "
                            f"got {m.train.max_length}")
    layers = m.train.trainable_layers
    if depth is not None and layers is not None and layers > depth:
        raise EnsembleError(f"members[{m.name}].trainable_layers: the model has {depth} layers; got {layers} (which "
                            'would still freeze the embeddings): give at most that, or "all" to train everything')


# The package each Accelerate tracker imports (tensorboard: either of two).
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                    "comet_ml": ("comet_ml",), "aim": ("aim",), "clearml": ("clearml",), "dvclive": ("dvclive",),
                    "swanlab": ("swanlab",), "trackio": ("trackio",)}


def check_trackers(cfg: MemberConfig) -> None:
    """Refuse a `log_with` tracker whose package is not installed: Accelerate would drop it with
    a warning buried in the training output, and the run would log nowhere.

    Example:
        >>> check_trackers(MemberConfig("m", init="scratch", arch="bert"))  # no trackers: fine
    """
    for tracker in cfg.train.log_with:
        packages = TRACKER_PACKAGES.get(tracker, (tracker,))
        if not any(importlib.util.find_spec(p) for p in packages):
            raise EnsembleError(f"members[{cfg.name}].log_with: the '{tracker}' tracker needs the '{packages[0]}' "
                                f"package, which is not installed; pip install {packages[0]}, or drop '{tracker}'")


def _hub_reachable() -> bool:
    # One DNS lookup answers in milliseconds; the hub client would retry for half a minute.
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
