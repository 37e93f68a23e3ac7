"""Token ids and batches: tokenize once, pad each batch only to its own longest row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import Dataset


@dataclass
class Encoded(Dataset):
    """Tokenized rows (unpadded) and optional label ids; a map-style torch dataset.

    Example:
        >>> enc = Encoded([[101, 7, 102]], None, [1])
        >>> enc[0]
        {'input_ids': [101, 7, 102], 'labels': 1}
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[int] | None
    truncated: int = 0  # rows longer than max_length, cut to fit (reported, never silent)
    teacher: Sequence[Sequence[float]] | None = None  # distillation: the teacher's probabilities per row

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        row = {"input_ids": self.input_ids[i]}
        if self.token_type_ids is not None:
            row["token_type_ids"] = self.token_type_ids[i]
        if self.labels is not None:
            row["labels"] = self.labels[i]
        if self.teacher is not None:
            row["teacher"] = self.teacher[i]
        return row

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def encode(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int,
           labels: Sequence[int] | None = None) -> Encoded:
    """Tokenize all rows in one fast-tokenizer call, truncated to `max_length`, not padded.

    ``truncated`` counts the rows that did not fit: a fast tokenizer keeps the cut-off tokens of
    each row as its "overflowing" pieces, so no second, untruncated pass is needed.
    """
    args = (list(texts), list(pairs)) if pairs is not None else (list(texts),)
    out = tokenizer(*args, truncation=True, max_length=max_length, padding=False)
    token_types = out.get("token_type_ids") if "token_type_ids" in tokenizer.model_input_names else None
    rows = out.encodings or []  # None for a slow (Python) tokenizer: nothing to count then
    truncated = sum(1 for row in rows if row.overflowing)
    return Encoded(out["input_ids"], token_types, list(labels) if labels is not None else None, truncated)


class Collator:
    """Pads a list of rows to the longest one in the batch (dynamic padding)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        types = torch.zeros((len(rows), width), dtype=torch.long) if "token_type_ids" in rows[0] else None
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            mask[i, :n] = 1
            if types is not None:
                types[i, :n] = torch.tensor(r["token_type_ids"])
        batch = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            batch["token_type_ids"] = types
        if "labels" in rows[0]:
            batch["labels"] = torch.tensor([r["labels"] for r in rows], dtype=torch.long)
        if "teacher" in rows[0]:
            batch["teacher"] = torch.tensor([list(r["teacher"]) for r in rows], dtype=torch.float32)
        if "row" in rows[0]:  # the row's index in its split, to put gathered outputs back in order
            batch["row"] = torch.tensor([r["row"] for r in rows], dtype=torch.long)
        return batch


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar length (longest first), for evaluation and prediction.

    Example:
        >>> length_sorted_batches([3, 9, 1, 8], 2)
        [[1, 3], [0, 2]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class EpochBatches:
    """Training batches in an order that depends only on (seed, epoch): a resumed run replays it.

    With `group_by_length` the rows are shuffled, cut into groups of 50 batches, sorted by length
    inside each group and cut into batches whose order is shuffled again (as Trainer's
    ``group_by_length``): batches hold rows of similar length, so dynamic padding wastes little.

    Example:
        >>> batches = EpochBatches([5, 1, 9, 3], batch_size=2, seed=0)
        >>> batches.start_epoch(1); sorted(sum(list(batches), []))
        [0, 1, 2, 3]
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, group_by_length: bool = True,
                 groups_of: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.groups_of = groups_of
        self.epoch = 1

    def start_epoch(self, epoch: int) -> None:
        """Use `epoch`'s order from now on. (Deliberately not named set_epoch: Accelerate's loaders
        call set_epoch with their own pass count, which restarts at 0 in a resumed run.)"""
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        if not self.group_by_length:
            yield from (order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size))
            return
        group = self.batch_size * self.groups_of
        batches = []
        for start in range(0, len(order), group):
            rows = sorted(order[start:start + group], key=lambda i: -self.lengths[i])
            batches += [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        for k in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[k]
