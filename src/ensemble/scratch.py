"""Scratch members: an architecture's config at a named size, and a tokenizer trained on the
training texts, so that a member can be trained with no hub and no pretrained checkpoint (tests,
the demo, `--scratch`). The vocabulary is plain BPE, so the same texts always give the same one.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple


class Shape(NamedTuple):
    """A scratch member's size: encoder layers, hidden width, attention heads, feed-forward width, vocabulary."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int


# tiny..medium follow Google's compact BERT family (BERT-Tiny L-2 H-128, Mini L-4 H-256, Small L-4
# H-512, Medium L-8 H-512); base is BERT-base.
SIZES: dict[str, Shape] = {
    "tiny": Shape(layers=2, hidden=128, heads=2, intermediate=512, vocab=8000),
    "mini": Shape(layers=4, hidden=256, heads=4, intermediate=1024, vocab=16000),
    "small": Shape(layers=4, hidden=512, heads=8, intermediate=2048, vocab=30000),
    "medium": Shape(layers=8, hidden=512, heads=8, intermediate=2048, vocab=30000),
    "base": Shape(layers=12, hidden=768, heads=12, intermediate=3072, vocab=30000),
}
MAX_POSITIONS = 512


def scratch_config(arch: str, size: str, tokenizer, **extra):
    """The transformers config of `arch` at `size`, sized to `tokenizer`'s vocabulary.

    Example:
        >>> tok = train_tokenizer("albert", ["a good film", "a bad film"] * 10, 200, 64)
        >>> config = scratch_config("albert", "tiny", tok)
        >>> config.num_hidden_layers, config.hidden_size, config.vocab_size == len(tok)
        (2, 128, True)
    """
    from transformers import AutoConfig

    shape = SIZES[size]
    kwargs = dict(vocab_size=len(tokenizer), hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                  num_attention_heads=shape.heads, intermediate_size=shape.intermediate,
                  pad_token_id=tokenizer.pad_token_id,
                  max_position_embeddings=MAX_POSITIONS)
    if arch == "roberta":
        # RoBERTa numbers positions from pad_token_id + 1, so it needs that many more slots.
        kwargs.update(max_position_embeddings=MAX_POSITIONS + tokenizer.pad_token_id + 1, type_vocab_size=1,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    elif arch == "albert":
        kwargs.update(embedding_size=min(128, shape.hidden))
    elif arch == "electra":
        kwargs.update(embedding_size=shape.hidden)
    return AutoConfig.for_model(arch, **kwargs, **extra)


def train_tokenizer(arch: str, texts: Iterable[str], vocab_size: int, max_length: int):
    """Train a reproducible BPE tokenizer on `texts`: byte-level for RoBERTa, BERT-style uncased otherwise.

    Example:
        >>> tok = train_tokenizer("bert", ["a good film", "a bad film"] * 10, 200, 64)
        >>> tok("a good film")["input_ids"][0] == tok.cls_token_id
        True
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if arch == "roberta":
        special = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "mask_token": "<mask>"}
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special.values()),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
        names = ["input_ids", "attention_mask"]
        special_kwargs = {**special, "cls_token": "<s>", "sep_token": "</s>"}
    else:
        special_kwargs = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
        # BERT's normalisation and word splitting with plain BPE subwords: the tokenizers library's
        # WordPiece trainer (and BPE with a "##" prefix) breaks count ties in hash order, so the
        # vocabulary would change from run to run; plain BPE is reproducible.
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_kwargs.values()),
                                      show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        names = ["input_ids", "token_type_ids", "attention_mask"]
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, model_input_names=names,
                                   **special_kwargs)
