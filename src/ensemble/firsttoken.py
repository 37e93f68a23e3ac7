"""The last encoder layer computed for the first token only: the one position a classifier reads.

BERT's pooler and RoBERTa's and ELECTRA's classification heads read token 0 of the last layer
and nothing else, yet the layer computes every position. For that last layer only token 0's
query, attention output, feed-forward and layer norms are needed (every position's keys and
values still are): the same logits and gradients (up to float rounding: a matrix product over
one row rounds like one over many, not bit for bit), about 80% of one layer's work saved, i.e.
~13% of a MiniLM-L6 step and ~7% of a 12-layer one.

`first_token_only` switches it on for a model while `ensemble` runs it (training loop,
prediction) and restores the model's own forward afterwards, so a model handed to the user, or
to transformers' `Trainer` in the benchmarks, is the plain one. Only layers whose structure this
code knows (BERT, RoBERTa and ELECTRA encoders in transformers 5: `attention.self` with query /
key / value, `attention.output`, `feed_forward_chunk`) are switched, and only after a check on a
small input that the logits agree; anything else (ALBERT's shared layers, decoders, a future
layout) runs unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import types
import weakref
from collections.abc import Iterator

import torch

from .cpu import ATTENTION

_HEADS = {"BertForSequenceClassification", "RobertaForSequenceClassification", "ElectraForSequenceClassification"}
_AGREE = 1e-4  # logits of the check input, switched against plain (float32: ~1e-6 apart)
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # layer -> whether switched, it passed the check
# Threads predicting with one model share its last layer: the first to enter `first_token_only`
# switches it, the last to leave switches it back (a thread leaving early must not switch it
# under another's forward pass).
_inside: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # layer -> first_token_only blocks open on it
_inside_lock = threading.Lock()


def _last_layer(model) -> torch.nn.Module | None:
    if type(model).__name__ not in _HEADS:
        return None
    config = model.config
    if config.is_decoder or getattr(config, "add_cross_attention", False):
        return None
    if config._attn_implementation not in ("sdpa", "eager", ATTENTION):
        return None
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not layers:
        return None
    layer = layers[-1]
    attention = getattr(layer, "attention", None)
    parts = (getattr(attention, "self", None), getattr(attention, "output", None), getattr(layer, "feed_forward_chunk", None))
    if any(p is None for p in parts) or not all(hasattr(parts[0], a) for a in ("query", "key", "value", "scaling", "attention_head_size")):
        return None
    return layer


def _first_token_forward(self, hidden_states, attention_mask=None, *args, **kwargs):
    """The layer's forward for position 0 only: (batch, 1, hidden), where the original returns
    (batch, sequence, hidden). With gradient checkpointing on, checkpointed as transformers
    checkpoints the layer's own forward (which this one replaces, wrapper included)."""
    if getattr(self, "gradient_checkpointing", False) and self.training and torch.is_grad_enabled():
        return self._gradient_checkpointing_func(functools.partial(_first_token, self, **kwargs), hidden_states,
                                                 attention_mask, *args)
    return _first_token(self, hidden_states, attention_mask, *args, **kwargs)


def _first_token(self, hidden_states, attention_mask=None, *args, **kwargs):
    """`_first_token_forward`'s work. Mirrors `BertLayer.forward` without cross-attention and cache."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    kwargs.pop("cache", None)
    kwargs.pop("encoder_attention_mask", None)
    attention = self.attention.self
    batch, length = hidden_states.shape[:2]
    first = hidden_states[:, :1]
    heads = (batch, -1, attention.attention_head_size)
    query = attention.query(first).view(batch, 1, *heads[1:]).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, length, *heads[1:]).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, length, *heads[1:]).transpose(1, 2)
    if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 4 and attention_mask.shape[2] > 1:
        attention_mask = attention_mask[:, :, :1]  # the first query's row of the mask
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager_attention_forward)
    context, _ = interface(attention, query, key, value, attention_mask,
                           dropout=attention.dropout.p if attention.training else 0.0, scaling=attention.scaling, **kwargs)
    attended = self.attention.output(context.reshape(batch, 1, -1).contiguous(), first)
    return self.feed_forward_chunk(attended)


def _agrees(model, layer) -> bool:
    """Whether the switched layer gives the model's own logits on a small fixed input."""
    ids = (torch.arange(2 * 7).reshape(2, 7) % max(1, model.config.vocab_size - 1)) + 1
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # one padded row, so the mask's path is checked too
    device = next(model.parameters()).device
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    training = model.training
    model.eval()
    try:
        # float32 on both sides (a caller's autocast would round both to bfloat16)
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            plain = model(**inputs).logits.float()
            layer.forward = types.MethodType(_first_token_forward, layer)
            try:
                switched = model(**inputs).logits.float()
            finally:
                del layer.forward
        return bool(torch.allclose(switched, plain, rtol=0, atol=_AGREE))
    except Exception:  # noqa: BLE001 - any failure of the switched forward means: leave the layer as it is
        return False
    finally:
        model.train(training)


def switch(model) -> bool:
    """Make `model`'s last encoder layer compute token 0 only, for good; whether it now does.

    For a model `ensemble` owns (the training loop's); `first_token_only` switches back after.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> tiny = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16,
        ...     num_hidden_layers=2, num_attention_heads=2, intermediate_size=32))
        >>> switch(tiny), tiny(torch.tensor([[1, 2, 3]])).logits.shape
        (True, torch.Size([1, 2]))
    """
    layer = _last_layer(model)
    if layer is None:
        return False
    if "forward" in vars(layer):  # switched already
        return True
    if layer not in _checked:
        _checked[layer] = _agrees(model, layer)
    if _checked[layer]:
        layer.forward = types.MethodType(_first_token_forward, layer)
    return _checked[layer]


@contextlib.contextmanager
def first_token_only(model) -> Iterator[bool]:
    """While inside, `model`'s last encoder layer computes token 0 only; yields whether it does.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> tiny = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16,
        ...     num_hidden_layers=2, num_attention_heads=2, intermediate_size=32))
        >>> with first_token_only(tiny) as switched:
        ...     switched
        True
        >>> "forward" in vars(tiny.bert.encoder.layer[-1])  # its own forward again
        False
    """
    layer = _last_layer(model)
    if layer is None:
        yield False
        return
    with _inside_lock:
        opened = _inside.get(layer, 0)
        if not opened and "forward" in vars(layer):  # switched for good already (the training loop's)
            permanent = True
        else:
            permanent = False
            switched = switch(model) if not opened else "forward" in vars(layer)
            _inside[layer] = opened + 1
    if permanent:
        yield True
        return
    try:
        yield switched
    finally:
        with _inside_lock:
            _inside[layer] -= 1
            if not _inside[layer]:
                del _inside[layer]
                if "forward" in vars(layer):
                    del layer.forward
