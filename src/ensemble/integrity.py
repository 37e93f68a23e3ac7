"""Does a member directory's content hold together? One-line errors for files that parse but
do not belong together or do not work, before they cost memory or fail mid-prediction.

`ensemble.members.load_member` calls these: `json_object` / `json_section` for the JSON files,
`check_size` before the model is built, `probe` once it is (a short input through the tokenizer
and the model).
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


def probe(tokenizer, model: nn.Module, classes: int, text_pair: bool, max_length: int, where: str) -> None:
    """Encode `PROBE` and run the model on it once at load time (milliseconds), so that a
    directory whose files parse but do not work fails here, named, not in the middle of a
    prediction: a tokenizer.json that cannot encode (the Rust library panics, e.g. on a
    vocabulary without its unknown token), a config.json the weights load under but the forward
    pass rejects (e.g. a negative head count).

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
                            "tokenizer.json may be damaged: recopy or retrain the member") from None
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise EnsembleError(f"{where}: its tokenizer has {len(tokenizer)} tokens but the model embeds {rows}; "
                            "tokenizer files and weights do not belong together: recopy or retrain the member")
    try:
        with torch.inference_mode():
            shape = tuple(model(**batch).logits.shape)
    except Exception as exc:  # noqa: BLE001 - any failure on a 16-token input is the directory's
        raise EnsembleError(f"{where}: the model fails on a short input ({type(exc).__name__}: {first_line(exc)}); "
                            "config.json may not match the weights: recopy or retrain the member") from None
    if shape != (2, classes):
        raise EnsembleError(f"{where}: the model outputs {shape[-1]} scores per row but config.json names {classes} "
                            "labels (id2label); recopy or retrain the member")
