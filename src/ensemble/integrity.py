"""Does a member directory's content hold together? One-line errors for files that parse but
do not belong together or do not work, before they cost memory or fail mid-prediction.

`ensemble.members.load_member` calls these: `json_object` / `json_section` for the JSON files,
`check_size` before the model is built, `probe` once it is (a short input through the tokenizer
and the model). `ensemble.members.build_member` calls `adopt_head` and `probe` on a pretrained
checkpoint before training from it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from pathlib import Path

import torch
from torch import nn

from .errors import EnsembleError


def first_line(exc: BaseException) -> str:
    """The first line of an error message, or the error type when it has none."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def check_size(config: dict, path: Path, where: str) -> None:
    """Refuse a config.json that describes a larger model than model.safetensors holds, before
    building it: a damaged size field (say, a billion layers) would otherwise exhaust the memory
    first. The estimate counts only the embedding, attention and feed-forward matrices, which
    every supported architecture has, so it never exceeds a genuine member's parameter count.

    Example:
        >>> config = json_object(Path("runs/demo/members/bert/config.json"), "member 'bert'")  # doctest: +SKIP
        >>> check_size({**config, "num_hidden_layers": 10**9}, Path("runs/demo/members/bert"), "member 'bert'")  # doctest: +SKIP
        Traceback (most recent call last):
        ensemble.errors.EnsembleError: member 'bert': config.json describes at least 52,... parameters but ...
    """
    from safetensors import safe_open

    def size(key: str, default: int | None = None, low: int = 1) -> int:
        value = config.get(key, default)
        if not (type(value) is int and value >= low):
            raise EnsembleError(f"{where}: config.json: {key} must be an integer >= {low}; got {value!r}")
        return value

    hidden = size("hidden_size")
    width = size("embedding_size", hidden)  # ALBERT and ELECTRA may embed narrower than they compute
    # ALBERT shares weights among its layers: num_hidden_groups x inner_group_num distinct ones
    layers = (size("num_hidden_groups") * size("inner_group_num") if config.get("model_type") == "albert"
              else size("num_hidden_layers"))
    rows = size("vocab_size") + size("max_position_embeddings") + size("type_vocab_size", 0, low=0)
    implied = rows * width + layers * (4 * hidden * hidden + 2 * hidden * size("intermediate_size"))
    held = 0
    for file in sorted(path.glob("model*.safetensors")):
        with safe_open(str(file), "pt") as f:
            held += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    if implied > held:
        raise EnsembleError(f"{where}: config.json describes at least {implied:,} parameters but model.safetensors holds "
                            f"{held:,}; recopy or retrain the member")


def json_object(file: Path, where: str) -> dict:
    """A member file's JSON object, or a one-line error naming the file.

    Example:
        >>> json_object(Path("runs/demo/members/bert/config.json"), "member 'bert'")["model_type"]  # doctest: +SKIP
        'bert'
    """
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:  # invalid JSON or UTF-8
        raise EnsembleError(f"{where}: {file.name} is not valid JSON ({exc}); recopy or retrain the member") from None
    if not isinstance(value, dict):
        raise EnsembleError(f"{where}: {file.name} must hold a JSON object; got {type(value).__name__}")
    return value


def json_section(obj: dict, key: str, where: str, file: str, prefix: str = "") -> dict:
    """`obj[key]` of a member's JSON `file` as a dict ({} when absent), or a one-line error."""
    value = obj.get(key, {})
    if not isinstance(value, dict):
        raise EnsembleError(f"{where}: {file}: {prefix}{key} must be an object; got {type(value).__name__}")
    return value


# Text a damaged tokenizer.json may fail on: plain words, digits, characters outside any small
# vocabulary (the unknown-token path), the special-token syntax.
PROBE = "a film, 42 Zürich ∑ 🙂 [UNK] <unk>"


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 to /dev/null for the duration (what native code writes there, too)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def probe(tokenizer, model: nn.Module, classes: int, text_pair: bool, max_length: int, where: str,
          fix: str = "recopy or retrain the member") -> None:
    """Encode `PROBE` and run the model on it once at load time (milliseconds), so that a
    directory whose files parse but do not work fails here, named, not in the middle of a
    prediction: a tokenizer.json that cannot encode (the Rust library panics, e.g. on a
    vocabulary without its unknown token), a config.json the weights load under but the forward
    pass rejects (e.g. a negative head count), weights that give NaN. `fix` ends each message.

    Example:
        >>> m = load_member("runs/demo/members/bert")  # load_member probes; by hand:  # doctest: +SKIP
        >>> probe(m.tokenizer, m.model, len(m.labels), False, 16, "member 'bert'")  # doctest: +SKIP
    """
    try:
        with _stderr_silenced():  # a Rust panic prints its own lines first; the error below says it
            # two rows of different lengths: the padding token goes through the model too
            batch = tokenizer([PROBE, "a"], [PROBE, "a"] if text_pair else None, truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt")
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - tokenizers' PanicException derives from BaseException
        raise EnsembleError(f"{where}: its tokenizer cannot encode text ({type(exc).__name__}: {first_line(exc)}); "
                            f"tokenizer.json may be damaged: {fix}") from None
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise EnsembleError(f"{where}: its tokenizer has {len(tokenizer)} tokens but the model embeds {rows}; "
                            f"tokenizer files and weights do not belong together: {fix}")
    try:
        with torch.inference_mode():
            logits = model(**batch).logits
    except Exception as exc:  # noqa: BLE001 - any failure on a 16-token input is the directory's
        raise EnsembleError(f"{where}: the model fails on a short input ({type(exc).__name__}: {first_line(exc)}); "
                            f"config.json may not match the weights: {fix}") from None
    shape = tuple(logits.shape)
    if shape != (2, classes):
        raise EnsembleError(f"{where}: the model outputs {shape[-1]} scores per row but config.json names {classes} "
                            f"labels (id2label); {fix}")
    if not torch.isfinite(logits).all():
        raise EnsembleError(f"{where}: its weights give NaN or infinite scores (model.safetensors is damaged); {fix}")


def adopt_head(model: nn.Module, info: dict, own, labels: list[str], where: str) -> None:
    """Check what a pretrained checkpoint gave the model, and make its head answer for `labels`.

    Encoder weights the checkpoint lacks or holds in another shape would train from random values
    (transformers only logs it): refused. A head of the right size is kept when it was trained on
    the same label names, its rows put in `labels` order (a sentiment model's head for
    positive/negative keeps what it learned); for other names it is initialised afresh, as
    transformers does for a head of another size, rather than reused by position.

    Example:
        >>> model, info = AutoModelForSequenceClassification.from_pretrained(
        ...     path, config=config, ignore_mismatched_sizes=True, output_loading_info=True)  # doctest: +SKIP
        >>> adopt_head(model, info, AutoConfig.from_pretrained(path), ["neg", "pos"], "members[m]")  # doctest: +SKIP
    """
    prefix = f"{model.base_model_prefix}."

    def is_head(key: str) -> bool:
        return not key.startswith(prefix) or ".pooler." in key  # the pooler is trained with the head

    # what transformers initialised at random: keys missing from the file, or there in another shape
    # (a mismatched key comes as (name, shape in the file, shape the config gives))
    fresh = {*(info.get("missing_keys") or ()),
             *(entry[0] if isinstance(entry, (tuple, list)) else entry for entry in info.get("mismatched_keys") or ())}
    broken = sorted(key for key in fresh if not is_head(key))
    if broken:
        raise EnsembleError(f"{where}: its weights lack or mis-shape {len(broken)} encoder tensors "
                            f"({', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}), which would train from "
                            "random values; the weights do not match its config.json: fix or replace the checkpoint")
    head = {name: module for name, module in model.named_modules()
            if name and not name.startswith(prefix) and not list(module.children())}
    if any(any(key.startswith(f"{name}.") for key in fresh) for name in head):
        return  # transformers initialised the head afresh: the checkpoint had none of this size
    names = [own.id2label.get(i, own.id2label.get(str(i), "")) for i in range(own.num_labels)] if own.id2label else []
    if names == labels:
        return
    last = [module for module in head.values() if isinstance(module, nn.Linear) and module.out_features == len(labels)]
    with torch.no_grad():
        if sorted(names) == sorted(labels) and last:
            order = torch.tensor([names.index(label) for label in labels])
            last[-1].weight.copy_(last[-1].weight[order])
            if last[-1].bias is not None:
                last[-1].bias.copy_(last[-1].bias[order])
            return
        std = getattr(model.config, "initializer_range", 0.02)
        for module in head.values():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
