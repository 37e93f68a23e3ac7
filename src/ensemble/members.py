"""Members: build one to train (hub, local directory or scratch) and load a trained one.

A trained member is a plain Hugging Face directory: `AutoModelForSequenceClassification` and
`AutoTokenizer` open it directly. Next to the weights it carries `recipe.json` (the resolved
recipe that made it), `metrics.json` and a model card. Loading reads safetensors and JSON only
and never runs code from the directory (`trust_remote_code=False`, `use_safetensors=True`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from .data import TextDataset
from .errors import EnsembleError
from .integrity import adopt_head, check_size, first_line, json_object, json_section, probe
from .recipe import ARCHES, MemberConfig
from .scratch import SIZES, scratch_config, train_tokenizer

RECIPE_FILE = "recipe.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "merges.txt", "vocab.json", "spiece.model")
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
METRICS_FILE = "metrics.json"
VALID_LOGITS = "valid_logits.safetensors"  # the best epoch's validation logits, reused by the vote


@dataclass
class Member:
    """A member ready to predict: model, tokenizer and its label names in model order."""

    name: str
    path: Path | None
    model: nn.Module | None  # None when opened without weights (load_member(..., weights=False))
    tokenizer: object | None
    labels: list[str]
    max_length: int
    text_pair: bool  # trained on sentence pairs
    tokenizer_key: str = ""  # equal keys: the same tokenizer files and max_length, so the same token ids

    def __repr__(self) -> str:  # the dataclass's would print the whole model, thousands of lines
        model = "not loaded" if self.model is None else type(self.model).__name__
        return (f"Member(name={self.name!r}, path={str(self.path) if self.path else None!r}, model={model}, "
                f"labels={self.labels}, max_length={self.max_length}{', pairs=True' if self.text_pair else ''})")


def quiet_transformers() -> None:
    # The library's own progress bars and load reports would drown ours.
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


# ---------------------------------------------------------------- building members to train

def build_member(cfg: MemberConfig, labels: list[str], texts: Iterable[str]) -> tuple[nn.Module, object]:
    """A fresh model and tokenizer for `cfg`, with a head for `labels`.

    Scratch members get a tokenizer trained on `texts` and a randomly initialised model of the
    architecture's config at `cfg.size`; pretrained members load from the hub or a directory.

    Example:
        >>> model, tok = build_member(MemberConfig("b", init="scratch", arch="bert"),
        ...                           ["neg", "pos"], ["good film", "bad film"])  # doctest: +SKIP
    """
    quiet_transformers()
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    id2label = dict(enumerate(labels))
    label2id = {name: i for i, name in id2label.items()}
    # What transformers' forward would otherwise write into the config on the first batch with
    # labels (the same choice): set up front, torch.compile's guard on it does not fail at step 2
    # and recompile the whole model.
    extra = {"problem_type": "single_label_classification"} if len(labels) > 1 else {}
    dropout = {}
    if cfg.train.dropout is not None:
        dropout = {"hidden_dropout_prob": cfg.train.dropout, "attention_probs_dropout_prob": cfg.train.dropout}
    if cfg.init == "scratch":
        tokenizer = train_tokenizer(cfg.arch, texts, SIZES[cfg.size].vocab, cfg.train.max_length)
        config = scratch_config(cfg.arch, cfg.size, tokenizer, num_labels=len(labels), id2label=id2label,
                                label2id=label2id, **extra, **dropout)
        _head_dropout(config, cfg.train.dropout)
        model = AutoModelForSequenceClassification.from_config(config)
        return model, tokenizer
    source = cfg.model
    where = f"members[{cfg.name}].model: '{source}'"
    local = Path(source).expanduser()
    if local.is_dir() and not any(local.glob("model*.safetensors")) and any(local.glob("pytorch_model*.bin")):
        raise EnsembleError(f"{where}: holds pickle weights only (pytorch_model.bin), and only safetensors are "
                            "loaded; convert it: AutoModel.from_pretrained(DIR).save_pretrained(DIR) writes model.safetensors")
    from safetensors import SafetensorError

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        own = AutoConfig.from_pretrained(source, trust_remote_code=False)  # the checkpoint's own labels
        config = AutoConfig.from_pretrained(source, num_labels=len(labels), id2label=id2label,
                                            label2id=label2id, trust_remote_code=False, **extra, **dropout)
        _head_dropout(config, cfg.train.dropout)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            source, config=config, ignore_mismatched_sizes=True, trust_remote_code=False, use_safetensors=True,
            output_loading_info=True)
    except SafetensorError as exc:
        raise EnsembleError(f"{where}: its safetensors weights are corrupt ({first_line(exc)}); download or copy them again") from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - any parser's failure on these files is the checkpoint's problem
        raise EnsembleError(f"{where}: cannot load: {first_line(exc)}") from None
    adopt_head(model, info, own, labels, where)
    if tokenizer.pad_token_id is None:
        raise EnsembleError(f"{where}: its tokenizer has no padding token (tokenizer_config.json: pad_token); "
                            "give the checkpoint one, e.g. tokenizer.pad_token = tokenizer.unk_token, then save_pretrained")
    probe(tokenizer, model, len(labels), False, min(16, cfg.train.max_length), where,
          fix="fix or replace the checkpoint")
    return model, tokenizer


def freeze(model: nn.Module, trainable_layers: int | None) -> None:
    """Freeze the encoder, leaving the top `trainable_layers` layers (and the head) trainable.

    None leaves everything trainable; 0 trains only the classification head (and pooler).
    ALBERT shares one layer's weights across depth, so for it k > 0 unfreezes the shared layer.
    """
    if trainable_layers is None:
        return
    base = model.base_model
    for p in base.parameters():
        p.requires_grad = False
    layers = _encoder_layers(base)
    top = list(layers)[-trainable_layers:] if trainable_layers else []
    for module in top + [m for n, m in base.named_children() if n == "pooler"]:
        for p in module.parameters():
            p.requires_grad = True


def checkpoint_activations(model: nn.Module) -> None:
    """Recompute each layer's activations in backward instead of keeping them (less memory, ~30% more time)."""
    kwargs = {"use_reentrant": False}  # the non-reentrant variant works with frozen inputs and restores the RNG
    if hasattr(model, "activation_checkpointing_enable"):  # its name from transformers 5.x on
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _encoder_layers(base: nn.Module) -> nn.ModuleList:
    encoder = getattr(base, "encoder", None)
    for attr in ("layer", "albert_layer_groups", "layers"):
        layers = getattr(encoder, attr, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise EnsembleError(f"trainable_layers: cannot find the encoder layers of a {type(base).__name__}; remove trainable_layers")


def _head_dropout(config, dropout: float | None) -> None:
    """The classifier head's dropout follows the recipe's too: ALBERT's head has its own
    (``classifier_dropout_prob``, 0.1 whatever the encoder's); the others' follows the encoder's
    when their ``classifier_dropout`` is unset, which a checkpoint may have set."""
    if dropout is None:
        return
    for key in ("classifier_dropout_prob", "classifier_dropout"):
        if hasattr(config, key):
            setattr(config, key, dropout)


# ---------------------------------------------------------------- loading trained members

def positions(config) -> int | None:
    """How many tokens the model's position embeddings hold (RoBERTa-style models number positions
    from pad_token_id + 1), or None when its config does not say.

    Example:
        >>> from transformers import RobertaConfig
        >>> positions(RobertaConfig(max_position_embeddings=514, pad_token_id=1))
        512
    """
    total = getattr(config, "max_position_embeddings", None)
    if not isinstance(total, int):
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        total -= (getattr(config, "pad_token_id", None) or 0) + 1
    return total


def load_member(path: str | Path, name: str | None = None, weights: bool = True) -> Member:
    """Open a trained member directory (safetensors and JSON only; no code from the directory).

    With ``weights=False`` only its description is read (labels, max_length, tokenizer key):
    ``model`` and ``tokenizer`` are None, for voting on logits the member recorded.

    Example:
        >>> member = load_member("runs/demo/members/bert")  # doctest: +SKIP
        >>> member.labels  # doctest: +SKIP
        ['negative', 'neutral', 'positive']
    """
    path = Path(path).expanduser()
    name = name or path.name
    where = f"member '{name}' ({path})"
    if not path.is_dir():
        raise EnsembleError(f"{where}: not a directory")
    config_file = path / "config.json"
    if not config_file.is_file() and (path / "ensemble.json").is_file():
        inside = sorted(p for p in (path / "members").glob("*") if (p / "config.json").is_file())
        raise EnsembleError(f"{where}: an ensemble directory, not a member; pass its members "
                            f"({' '.join(str(p) for p in inside) or f'{path}/members/NAME'}), "
                            f"or predict with 'ensemble predict --ensemble {path}'")
    if not config_file.is_file():
        raise EnsembleError(f"{where}: not a member directory (no config.json); pass a member directory, "
                            "e.g. RUN/members/NAME from 'ensemble fit'")
    if not any(path.glob("model*.safetensors")):
        raise EnsembleError(f"{where}: no safetensors weights (model.safetensors); only safetensors are loaded")
    if weights and not any((path / f).is_file() for f in VOCABULARY_FILES):
        raise EnsembleError(f"{where}: no tokenizer vocabulary (one of {', '.join(VOCABULARY_FILES)}); "
                            "recopy the member directory whole, or retrain it")
    config = json_object(config_file, where)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in ARCHES:
        raise EnsembleError(f"{where}: model_type {model_type!r} is not supported; supported: {', '.join(ARCHES)}")
    id2label = config.get("id2label") or {}
    id2label = id2label if isinstance(id2label, dict) else {}
    labels = [id2label.get(str(i), id2label.get(i, "")) for i in range(len(id2label))]
    if not labels or any(not isinstance(label, str) or not label for label in labels):
        raise EnsembleError(f"{where}: config.json has no usable id2label; the member must carry its label names")
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise EnsembleError(f"{where}: config.json's id2label names {', '.join(map(repr, twice))} more than once; "
                            "each output needs its own label name: fix id2label (and label2id)")
    recipe = json_object(path / RECIPE_FILE, where) if (path / RECIPE_FILE).is_file() else {}
    train = json_section(json_section(recipe, "member", where, RECIPE_FILE), "train", where, RECIPE_FILE, "member.")
    text_pair = bool(json_section(recipe, "data", where, RECIPE_FILE).get("text_pair"))
    recorded = train.get("max_length")
    if recorded is not None and not (type(recorded) is int and recorded >= 1):
        raise EnsembleError(f"{where}: {RECIPE_FILE}: member.train.max_length must be an integer >= 1; got {recorded!r}")
    if not weights:
        max_length = recorded or 512
        return Member(name=name, path=path, model=None, tokenizer=None, labels=labels, max_length=max_length,
                      text_pair=text_pair, tokenizer_key=tokenizer_key(path, max_length))
    quiet_transformers()
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        check_size(config, path, where)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, trust_remote_code=False, use_safetensors=True, output_loading_info=True,
            ignore_mismatched_sizes=True)  # reported below, by name, rather than as transformers' exception
    except SafetensorError as exc:
        raise EnsembleError(f"{where}: model.safetensors is corrupt ({first_line(exc)}); retrain or recopy the member") from None
    except EnsembleError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser's failure on these files is the directory's problem
        raise EnsembleError(f"{where}: cannot load: {type(exc).__name__}: {first_line(exc)}") from None
    # A trained member's weights and config.json match tensor for tensor; transformers would only warn.
    def described(entry) -> str:  # a mismatched key comes as (name, shape in the file, shape config.json gives)
        if isinstance(entry, (tuple, list)) and len(entry) == 3:
            return f"{entry[0]} of shape {list(entry[1])} in the file, {list(entry[2])} by config.json"
        return str(entry)

    odd = {kind: sorted(map(described, info.get(kind) or [])) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    odd = {kind: keys for kind, keys in odd.items() if keys}
    if odd:
        kind, keys = next(iter(odd.items()))
        raise EnsembleError(f"{where}: model.safetensors does not match config.json ({kind.replace('_', ' ')}: "
                            f"{'; '.join(keys[:3])}{'; ...' if len(keys) > 3 else ''}); recopy or retrain the member")
    model.eval()
    if tokenizer.pad_token_id is None:
        raise EnsembleError(f"{where}: its tokenizer has no padding token (tokenizer_config.json: pad_token); "
                            "recopy or retrain the member")
    limit = getattr(tokenizer, "model_max_length", 512)
    max_length = recorded or (min(limit, 512) if type(limit) is int and limit >= 1 else 512)
    # a longer recorded max_length (accepted by older versions) would overrun the position embeddings
    max_length = min(max_length, positions(model.config) or max_length)
    probe(tokenizer, model, len(labels), text_pair, min(16, max_length), where)
    return Member(name=name, path=path, model=model, tokenizer=tokenizer, labels=labels,
                  max_length=max_length, text_pair=text_pair, tokenizer_key=tokenizer_key(path, max_length))


def saved_recipe(member_dir: str | Path | None) -> dict:
    """A member directory's recipe.json as a dict: {} when it is missing, unreadable or not a JSON
    object (`load_member` is where a damaged one is reported).

    Example:
        >>> saved_recipe("runs/none/members/bert")
        {}
    """
    return _json_object(member_dir, RECIPE_FILE)


def saved_metrics(member_dir: str | Path | None) -> dict:
    """A member directory's metrics.json (history, best epoch, truncation counts) as a dict: {} when
    it is missing, unreadable or not a JSON object (members from elsewhere have none).

    Example:
        >>> saved_metrics("runs/none/members/bert")
        {}
    """
    return _json_object(member_dir, METRICS_FILE)


def _json_object(member_dir: str | Path | None, name: str) -> dict:
    try:
        value = json.loads((Path(member_dir) / name).read_text(encoding="utf-8"))
    except (OSError, TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def drop_remote_code(member_dir: Path) -> None:
    """Remove `auto_map` (custom code to import) that a base checkpoint's config.json or
    tokenizer_config.json carried into a trained member: the member is a plain architecture, its
    code files are not copied, and with trust_remote_code=True transformers would look for them."""
    for name in ("config.json", "tokenizer_config.json"):
        path = Path(member_dir) / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.pop("auto_map", None) is not None:
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_valid_logits(path: Path, logits: torch.Tensor, valid: TextDataset, labels: list[str], precision: str) -> None:
    """Write the best epoch's validation logits with what they are valid for (rows, labels, and
    the weights beside them: call it after those are saved)."""
    from safetensors.torch import save

    blob = save({"logits": logits.contiguous()}, metadata={
        "rows": valid.fingerprint(), "labels": json.dumps(labels), "mixed_precision": precision,
        "weights": weights_digest(path.parent)})
    path.write_bytes(_sorted_header(blob))


def _sorted_header(blob: bytes) -> bytes:
    """A safetensors file's bytes with its header's keys sorted: the writer orders metadata as a
    hash map, differently in every process, so two identical runs gave files of other checksums.

    Example:
        >>> import torch; from safetensors.torch import save
        >>> _sorted_header(save({"x": torch.zeros(1)}, metadata={"b": "2", "a": "1"}))[8:41]
        b'{"__metadata__":{"a":"1","b":"2"}'
    """
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + size])
    meta = header.pop("__metadata__", None)
    ordered = {**({"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}), **dict(sorted(header.items()))}
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > size:  # escaped otherwise than the writer did: keep its bytes
        return blob
    return blob[:8] + text + b" " * (size - len(text)) + blob[8 + size:]


def weights_digest(member_dir: Path) -> str:
    """sha256 over a member's safetensors weight files: recorded validation logits are reused only
    with the weights that made them (a later save_pretrained into the directory changes them).

    Example:
        >>> len(weights_digest(Path("runs/none")))
        64
    """
    digest = hashlib.sha256()
    for path in sorted(Path(member_dir).glob("model*.safetensors")):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def recorded_valid_logits(member_dir: Path, valid: TextDataset, labels: list[str],
                          rows: str | None = None) -> np.ndarray | None:
    """The validation logits a member recorded at its best epoch, columns in `labels` order, if
    they are for exactly these rows and the weights now in the directory; else None (then the
    vote runs the member). `rows` may pass
    ``valid.fingerprint()`` when checking several members against the same rows."""
    from safetensors import SafetensorError, safe_open

    path = Path(member_dir) / VALID_LOGITS
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("rows") != (rows or valid.fingerprint()) or meta.get("weights") != weights_digest(path.parent):
                return None
            saved = json.loads(meta.get("labels", "[]"))
            logits = f.get_tensor("logits").float().numpy()
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError):  # missing, unreadable, foreign
        return None
    if sorted(saved) != sorted(labels) or logits.shape != (len(valid), len(labels)):
        return None
    return logits[:, [saved.index(label) for label in labels]]


def tokenizer_key(path: Path, max_length: int) -> str:
    """A fingerprint of a member's tokenizer files: members fine-tuned from one checkpoint share it."""
    digest = hashlib.sha256(str(max_length).encode())
    for name in TOKENIZER_FILES:
        file = path / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def parameter_count(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def member_shape(cfg: MemberConfig) -> tuple[int, int, int, int]:
    """(layers, hidden, intermediate, vocabulary) of a member, read from its config without loading weights.

    A model whose config cannot be read locally counts as BERT-base; the shape only sizes and
    orders concurrent work (`ensemble.workers`).

    Example:
        >>> member_shape(MemberConfig("m", init="scratch", arch="bert", size="tiny"))
        (2, 128, 512, 8000)
    """
    if cfg.init == "scratch":
        shape = SIZES[cfg.size]
        return shape.layers, shape.hidden, shape.intermediate, shape.vocab
    quiet_transformers()
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(cfg.model, local_files_only=True)
    except (OSError, ValueError):
        shape = SIZES["base"]
        return shape.layers, shape.hidden, shape.intermediate, shape.vocab
    hidden = getattr(config, "hidden_size", 768)
    return (getattr(config, "num_hidden_layers", 12), hidden, getattr(config, "intermediate_size", 4 * hidden),
            getattr(config, "vocab_size", 30000))
